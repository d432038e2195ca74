"""`vuegraf-graph CONFIG --svg DIR`: the day, week, month and year graphs of every device as
SVG files, read from the store CONFIG names, plus an index.html that shows them all.

It needs no Emporia login and no running daemon: devices are grouped as the daemon last saw
them (`<stateDir>/layout.json`), else by the store's series. Run it from cron and serve DIR:
    */10 * * * *  vuegraf-graph /etc/vuegraf/vuegraf.json --svg /var/www/vuegraf
    nginx:  location /vuegraf/ { alias /var/www/vuegraf/; }
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import re
import sys
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from vuegraf.clock import Clock, SystemClock
from vuegraf.config import ConfigError, load_config
from vuegraf.graphs import layout as layouts
from vuegraf.graphs.data import read_graph
from vuegraf.graphs.layout import Layout
from vuegraf.graphs.read import GraphReader, ListsSeries
from vuegraf.graphs.store import reader_for
from vuegraf.graphs.svg import render
from vuegraf.graphs.views import VIEWS
from vuegraf.logformat import add_log_format_option, chosen_log_format, make_formatter, say_error
from vuegraf.redact import install_redaction
from vuegraf.sinks.base import StoreReadError

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vuegraf-graph",
        description="Write the day, week, month and year graphs of every device as SVG files.",
    )
    parser.add_argument("config", metavar="CONFIG", help="JSON config file (vuegraf.json)")
    parser.add_argument(
        "--svg", required=True, metavar="DIR", type=Path, help="folder to write the files to"
    )
    parser.add_argument(
        "--views",
        default=",".join(VIEWS),
        metavar="LIST",
        help=f"comma-separated views to draw (default: {','.join(VIEWS)})",
    )
    parser.add_argument("--account", metavar="NAME", help="only this account")
    add_log_format_option(parser)
    # The instant the graphs end at, for tests: ISO 8601 with an offset.
    parser.add_argument("--now", help=argparse.SUPPRESS)
    return parser


def file_name(name: str) -> str:
    """`name` as a file name on any file system: letters, digits, `.`, `-`, `_` kept."""
    safe = re.sub(r"[^\w.-]+", "_", name).strip("._")
    return safe or "_"


def _views(text: str) -> list[str] | None:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names or any(v not in VIEWS for v in names):
        return None
    return list(dict.fromkeys(names))


def _now(text: str | None, clock: Clock) -> datetime | None:
    if text is None:
        return clock.now()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo is not None else None


def read_layout(state_dir: Path | None, reader: GraphReader, account: str | None) -> Layout:
    """The daemon's device list, else one guessed from the store's series."""
    found = None if state_dir is None else layouts.load(state_dir)
    if found is None:
        if not isinstance(reader, ListsSeries):
            return ()
        found = layouts.from_series(reader.series(account))
    return tuple(a for a in found if account is None or a.name == account)


def _write(path: Path, text: str) -> None:
    """Whole files only: a web server may be serving the folder while it is rewritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _index(entries: list[tuple[str, str, list[tuple[str, str]]]], now: datetime) -> str:
    """A plain page of every file: (account, device, [(view, relative path)])."""
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>vuegraf graphs</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:1em;color:#111827}"
        "img{max-width:100%;height:auto;display:block;margin:0 0 1em}</style>",
        "</head><body>",
        f"<h1>vuegraf graphs</h1><p>Drawn {html.escape(now.isoformat())}</p>",
    ]
    account_shown = None
    for account, device, files in entries:
        if account != account_shown:
            lines.append(f"<h2>{html.escape(account)}</h2>")
            account_shown = account
        lines.append(f"<h3>{html.escape(device)}</h3>")
        for view, rel in files:
            alt = html.escape(f"{device}: {view}")
            lines.append(f'<img src="{html.escape(urllib.parse.quote(rel))}" alt="{alt}">')
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, clock: Clock | None = None) -> int:
    """`vuegraf-graph CONFIG --svg DIR`; `clock` (or the hidden `--now`) sets the instant the
    graphs end at, so tests draw the same files on any date."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    log_format = chosen_log_format(parser, args.log_format, os.environ)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(name)s: %(message)s")
        if log_format == "text"
        else make_formatter(log_format)
    )
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    views = _views(args.views)
    if views is None:
        say_error(log_format, f"--views: choose from {', '.join(VIEWS)}")
        return EXIT_USAGE
    now = _now(args.now, clock or SystemClock())
    if now is None:
        say_error(log_format,
                  "--now: an ISO 8601 time with an offset, e.g. 2027-06-01T12:00:00+00:00")
        return EXIT_USAGE
    try:
        config = load_config(args.config)
    except ConfigError as err:
        say_error(log_format, str(err))
        return EXIT_USAGE
    install_redaction(config.secrets())
    out_dir: Path = args.svg
    try:
        reader = reader_for(config)
    except StoreReadError as err:
        say_error(log_format, f"cannot read the store: {err}")
        return EXIT_FATAL
    entries: list[tuple[str, str, list[tuple[str, str]]]] = []
    try:
        layout = read_layout(config.state_dir, reader, args.account)
        if args.account is not None and not layout:
            say_error(log_format,
                      f"--account: no account {args.account!r} in the layout or the store")
            return EXIT_USAGE
        count = 0
        folders: set[str] = set()
        for i, account in enumerate(layout):
            folder = file_name(account.name)
            if folder in folders:  # "Home 1" and "Home_1": the second gets its place number
                folder = f"{folder}-{i + 1}"
            folders.add(folder)
            taken: set[str] = set()
            for device in account.devices:
                base = file_name(device.name)
                if base in taken:  # two devices of one name: the id tells them apart
                    base = f"{base}-{file_name(device.id)}"
                taken.add(base)
                files = []
                for name in views:
                    graph = read_graph(reader, account.name, device, VIEWS[name], now)
                    title = f"{device.name} · {name}"
                    if len(layout) > 1:
                        title = f"{account.name} · {title}"
                    rel = f"{folder}/{base}-{name}.svg"
                    _write(out_dir / rel, render(graph, config.zone, title))
                    files.append((name, rel))
                    count += 1
                entries.append((account.name, device.name, files))
        _write(out_dir / "index.html", _index(entries, now))
    except StoreReadError as err:
        say_error(log_format, f"cannot read the store: {err}")
        return EXIT_FATAL
    except OSError as err:
        say_error(log_format, f"cannot write to {out_dir}: {err.strerror or err}")
        return EXIT_FATAL
    finally:
        reader.close()
    devices = sum(len(e[2]) > 0 for e in entries)
    print(f"wrote {count} SVG files for {devices} devices and index.html to {out_dir}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
