"""`make demo`: the bundled simulator in, the embedded SQLite store out, graphs and watts.

Needs no Emporia account and no database server. It starts the simulator,
writes a config under ./demo/, runs the real `vuegraf` daemon on it as a child
process (its log goes to demo/vuegraf.log) with a few days of history imported
first, prints the address of the graphs page it serves once the page answers,
and then each minute's watts per circuit as they land in demo/vuegraf.sqlite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from vuegraf.simulator import SimulatorServer

# Circuits named in the config, as users do; the rest take Emporia's own names
# (useEmporiaChannelNames), so the demo shows both ways.
DEMO_CHANNELS = {
    "Main Panel": {"1": "Kitchen", "2": "Furnace", "3": "Fridge", "4": "Dryer"},
}


# Days of history imported before the daemon starts: the week view is mostly full at once.
DEMO_HISTORY_DAYS = 3
DEMO_WEB_PORT = 8765


def web_port(preferred: int = DEMO_WEB_PORT) -> int:
    """The page's port: `preferred` when it is free on loopback, else any free one."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def page_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/layout", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def write_config(directory: Path, simulator_url: str, port: int = DEMO_WEB_PORT) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "accounts": [
            {
                "name": "Demo Home",
                "email": "demo@example.com",
                "password": "not-a-real-password",
                "simulatorUrl": simulator_url,
                "devices": [{"name": n, "channels": c} for n, c in DEMO_CHANNELS.items()],
            }
        ],
        "addStationField": True,
        "useEmporiaChannelNames": True,
        "sqlitePath": "vuegraf.sqlite",
        "web": {"port": port},
    }
    path = directory / "vuegraf.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


def newest_minute(db_path: Path, after: int) -> tuple[int, list[tuple[str, str, float]]] | None:
    """The newest minute stored after `after`, with its (device, channel, watts) rows."""
    if not db_path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            row = db.execute(
                "SELECT MAX(time) FROM energy_usage WHERE detailed = 'False'"
            ).fetchone()
            if row is None or row[0] is None or row[0] <= after:
                return None
            rows = db.execute(
                "SELECT station_name, device_name, usage FROM energy_usage "
                "WHERE detailed = 'False' AND time = ? "
                "ORDER BY station_name, device_name != station_name, device_name",
                (row[0],),
            ).fetchall()
            return row[0], rows
    except sqlite3.Error:
        return None  # the daemon is creating the file; try again next poll


def render(minute: int, rows: list[tuple[str, str, float]]) -> str:
    when = datetime.fromtimestamp(minute, UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"\n=== minute {when}: {len(rows)} channels ==="]
    for device, channel, watts in rows:
        label = channel if channel == device else f"  {channel}"
        lines.append(f"  {device:<14} {label:<28} {watts:>9.1f} W")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vuegraf-demo", description=__doc__)
    parser.add_argument("--dir", default="demo", help="where the config, log and SQLite go")
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("VUEGRAF_DEMO_SECONDS", "0") or 0),
        help="stop after this long (default: $VUEGRAF_DEMO_SECONDS, else until Ctrl-C)",
    )
    parser.add_argument(
        "--minutes",
        type=int,
        default=int(os.environ.get("VUEGRAF_DEMO_MINUTES", "0") or 0),
        help="stop once this many minutes were shown (default: $VUEGRAF_DEMO_MINUTES, else "
        "until Ctrl-C or --seconds)",
    )
    args = parser.parse_args(argv)
    directory = Path(args.dir).resolve()

    stop = {"now": False}

    def on_signal(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    with SimulatorServer() as sim:
        port = web_port()
        config_path = write_config(directory, sim.url, port)
        log_path = directory / "vuegraf.log"
        page = f"http://127.0.0.1:{port}"
        print(f"Emporia simulator at {sim.url}")
        days = DEMO_HISTORY_DAYS
        print(f"Running: vuegraf {config_path} --historydays {days}  (log: {log_path})")
        print(f"Importing {DEMO_HISTORY_DAYS} days of history into {directory / 'vuegraf.sqlite'}")
        print("Press Ctrl-C to stop.", flush=True)
        with open(log_path, "a") as log:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vuegraf",
                    str(config_path),
                    "-v",
                    "--historydays",
                    str(DEMO_HISTORY_DAYS),
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + args.seconds if args.seconds else None
        shown = 0
        minutes = 0
        announced = False
        try:
            while not stop["now"] and (deadline is None or time.monotonic() < deadline):
                if not announced and page_answers(page):
                    announced = True
                    print(f"\nGraphs: open {page}/ in a browser (day, week, month, year)")
                    print("A new minute appears every 60 s.", flush=True)
                # Minutes are shown once the import is done (the page starts then), not the
                # history's as it lands.
                found = newest_minute(directory / "vuegraf.sqlite", shown) if announced else None
                if found:
                    shown, rows = found
                    minutes += 1
                    print(render(shown, rows), flush=True)
                    if args.minutes and minutes >= args.minutes:
                        break
                if child.poll() is not None:
                    print(f"vuegraf exited with {child.returncode}; see {log_path}")
                    return 1
                time.sleep(0.5)
        finally:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
    print(f"\nStopped. The data stays in {directory / 'vuegraf.sqlite'} (table energy_usage).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
