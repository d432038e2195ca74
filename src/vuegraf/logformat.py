"""Log lines as text (the default), logfmt or JSON: `--log-format` / `$VUEGRAF_LOG_FORMAT`.

Log collectors (Loki, Vector, a Docker logging driver) parse logfmt and JSON without a
regular expression per program. Both write one line per record whatever the message holds (a
newline, a quote, a traceback), so a collector never splits or glues records; text stays as
it always was, for people (a traceback on the lines after its record).

Formatting is all these classes do: secrets are masked earlier, by the `RedactingFilter` on the
handler (`vuegraf.redact`), which rewrites the record before any formatter sees it. The mask is
therefore applied to the raw text and the escaping below comes after it, so a secret holding a
quote, a backslash or a newline is masked whole and never reaches the output escaped.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType

LOG_FORMATS = ("text", "logfmt", "json")
LOG_FORMAT_ENV = "VUEGRAF_LOG_FORMAT"
DEFAULT_LOG_FORMAT = "text"

logger = logging.getLogger("vuegraf")


def utc_stamp(record: logging.LogRecord) -> str:
    """`2026-12-01T08:00:00.123Z`: the record's time in UTC, as the text format's is."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-12-01 08:00:00,123 | INFO  | vuegraf.daemon | message`, in UTC."""

    converter = staticmethod(time.gmtime)

    def __init__(self, fmt: str = "%(asctime)s | %(levelname)-5s | %(name)s | %(message)s"):
        super().__init__(fmt)


class _FieldsFormatter(logging.Formatter):
    """The fields both structured formats carry, in their order: time, level, logger, msg,
    then exc (exception and traceback) and stack when the record has them."""

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        out = {
            "time": utc_stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # The redacting filter already made exc_text (and masked it); this is for a handler
        # without one, as logging.Formatter.format does it.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return out


# Characters a line-based reader could take for the end of a line besides \n and \r
# (str.splitlines does), and lone surrogates, which are not text: escaped as \uXXXX.
_JSON_UNSAFE = re.compile("[\x85\u2028\u2029\ud800-\udfff]")


class JsonFormatter(_FieldsFormatter):
    """One JSON object per line: `{"time": ..., "level": ..., "logger": ..., "msg": ...}`."""

    def format(self, record: logging.LogRecord) -> str:
        text = json.dumps(self.fields(record), ensure_ascii=False)
        return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_LOGFMT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _logfmt_char(char: str) -> str:
    escaped = _LOGFMT_ESCAPES.get(char)
    if escaped is not None:
        return escaped
    if char == " " or char.isprintable():
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def logfmt_value(value: str) -> str:
    """`value` bare when it is one plain word, else in double quotes with `\\`, `"`, `\\n`,
    `\\r`, `\\t` and every other unprintable character (`\\uXXXX`) escaped."""
    if value and all(c.isprintable() and c not in ' ="\\' for c in value):
        return value
    return '"' + "".join(map(_logfmt_char, value)) + '"'


def logfmt_line(fields: Mapping[str, str]) -> str:
    return " ".join(f"{key}={logfmt_value(value)}" for key, value in fields.items())


class LogfmtFormatter(_FieldsFormatter):
    """`time=2026-12-01T08:00:00.123Z level=info logger=vuegraf.daemon msg="Cycle at ..."`."""

    def format(self, record: logging.LogRecord) -> str:
        return logfmt_line(self.fields(record))


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of `--log-format` (one of LOG_FORMATS)."""
    if log_format == "logfmt":
        return LogfmtFormatter()
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"log format {log_format!r}: choose from {', '.join(LOG_FORMATS)}")


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    """`--log-format`, the same in every command that logs."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help=f"how log lines on stderr look: text (the default), logfmt or json (one line "
        f"per record); secrets are masked in each (default: ${LOG_FORMAT_ENV}, else text)",
    )


def chosen_log_format(
    parser: argparse.ArgumentParser, flag: str | None, environ: Mapping[str, str]
) -> str:
    """`resolve_log_format`, with argparse's usage error (exit 2) for a bad variable, as a
    bad flag value gets."""
    log_format = resolve_log_format(flag, environ)
    if log_format is None:
        parser.error(f"${LOG_FORMAT_ENV}: invalid log format {environ[LOG_FORMAT_ENV]!r} "
                     f"(choose from {', '.join(LOG_FORMATS)})")
    return log_format


def say_error(log_format: str, message: str) -> None:
    """A one-line refusal (bad config, bad argument): a plain line on stderr in the text
    format, as always; an ERROR record in logfmt and json, so that a log collector parsing
    those reads every line a command writes."""
    if log_format == "text":
        print(message, file=sys.stderr)
    else:
        logger.error("%s", message)


def resolve_log_format(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """The flag when given, else `$VUEGRAF_LOG_FORMAT` when set and not empty, else text;
    None when the variable holds no known format (the flag's values argparse checks)."""
    if flag is not None:
        return flag
    value = environ.get(LOG_FORMAT_ENV, "").strip().lower()
    if not value:
        return DEFAULT_LOG_FORMAT
    return value if value in LOG_FORMATS else None


def log_uncaught() -> None:
    """Send an exception nothing caught (in the main thread or any other) through logging,
    so that it is formatted like every other line and its secrets are masked, instead of
    Python printing a bare traceback on stderr."""

    def main_thread(
        kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, tb)
            return
        logger.critical("Uncaught exception", exc_info=(kind, error, tb))

    def other_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:  # threading's own hook is silent about these too
            return
        name = args.thread.name if args.thread is not None else "?"
        logger.critical("Uncaught exception in thread %s", name, exc_info=args.exc_value)

    sys.excepthook = main_thread
    threading.excepthook = other_thread
