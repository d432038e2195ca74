"""`--log-format text|logfmt|json`: every line parses back to the record it came from, one
line per record whatever the message holds, and no secret survives in any format.

The logfmt lines are read by a small parser written here from the format's description
(key=value pairs, a value bare or in double quotes with backslash escapes), not by the code
under test; the JSON lines by `json.loads`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from graphs import svgcheck as sc
from harness.completeness import seed_minute
from harness.testtime import TestTime
from servers import free_ports
from vuegraf.config import parse_config
from vuegraf.history import make_progress
from vuegraf.logformat import (
    LOG_FORMAT_ENV,
    JsonFormatter,
    LogfmtFormatter,
    TextFormatter,
    resolve_log_format,
)
from vuegraf.redact import MASK, install_redaction
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel

# A secret holding what each format escapes: a quote, a backslash, an `=`, a space.
QUOTED_SECRET = 'pa"ss\\w=rd 7'
NEWLINE_SECRET = "line1\nline2-secret"
UNICODE_SECRET = "pässwörd-ünïcode"
SECRETS = (QUOTED_SECRET, NEWLINE_SECRET, UNICODE_SECRET)
# 2026-12-01T08:00:00.123Z, from independent arithmetic: the epoch second of that instant.
CREATED = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC).timestamp() + 0.123
KEYS = ("time", "level", "logger", "msg")
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# --- an independent logfmt reader --------------------------------------------------------

_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}


def parse_logfmt(line: str) -> dict[str, str]:
    """`key=value key="quoted \\"value\\""` into a dict; fails on anything malformed."""
    fields: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        equals = line.index("=", i)
        key = line[i:equals]
        assert key and " " not in key and '"' not in key, f"bad key {key!r} in {line!r}"
        i = equals + 1
        if i < n and line[i] == '"':
            i += 1
            value: list[str] = []
            while line[i] != '"':
                if line[i] == "\\":
                    code = line[i + 1]
                    if code in _UNESCAPE:
                        value.append(_UNESCAPE[code])
                        i += 2
                    elif code == "u":
                        value.append(chr(int(line[i + 2:i + 6], 16)))
                        i += 6
                    elif code == "U":
                        value.append(chr(int(line[i + 2:i + 10], 16)))
                        i += 10
                    else:
                        raise AssertionError(f"unknown escape \\{code} in {line!r}")
                else:
                    value.append(line[i])
                    i += 1
            i += 1
            assert key not in fields, f"key {key} twice in {line!r}"
            fields[key] = "".join(value)
        else:
            end = line.find(" ", i)
            end = n if end < 0 else end
            bare = line[i:end]
            assert bare and '"' not in bare and "=" not in bare, f"bad value in {line!r}"
            assert key not in fields, f"key {key} twice in {line!r}"
            fields[key] = bare
            i = end
        if i < n:
            assert line[i] == " ", f"no space after {key} in {line!r}"
            i += 1
    return fields


def test_the_reader_reads_what_the_description_says() -> None:
    line = 'a=1 b="x y" c="q\\"b\\\\n\\nz" d="" e=\\u'
    assert parse_logfmt(line) == {"a": "1", "b": "x y", "c": 'q"b\\n\nz', "d": "", "e": "\\u"}


# --- formatters, record by record --------------------------------------------------------

PARSERS: dict[str, tuple[logging.Formatter, Callable[[str], dict[str, str]]]] = {
    "logfmt": (LogfmtFormatter(), parse_logfmt),
    "json": (JsonFormatter(), json.loads),
}


def record(msg: str, args: tuple[object, ...] = (), level: int = logging.INFO,
           name: str = "vuegraf.daemon") -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    rec.created, rec.msecs = CREATED, 123.0
    return rec


def one_line(text: str) -> str:
    """`text`, which must be one line for every reader (str.splitlines breaks at more than
    \\n: \\r, \\x0b, \\x0c, \\x1c-\\x1e, \\x85, \\u2028, \\u2029)."""
    assert len(text.splitlines()) == 1, repr(text)
    return text


def test_text_format_is_unchanged() -> None:
    formatter = TextFormatter()
    assert formatter.format(record("Cycle at %s", ("08:00",))) == (
        "2026-12-01 08:00:00,123 | INFO  | vuegraf.daemon | Cycle at 08:00"
    )


@pytest.mark.parametrize("fmt", PARSERS)
def test_an_ordinary_line(fmt: str) -> None:
    formatter, parse = PARSERS[fmt]
    line = one_line(formatter.format(record("Cycle at %s: %d points", ("08:00", 28))))
    assert parse(line) == {
        "time": "2026-12-01T08:00:00.123Z",
        "level": "info",
        "logger": "vuegraf.daemon",
        "msg": "Cycle at 08:00: 28 points",
    }
    assert list(parse(line)) == list(KEYS)


def test_logfmt_leaves_plain_words_bare() -> None:
    line = LogfmtFormatter().format(record("ok", level=logging.WARNING, name="vuegraf.sinks"))
    assert line == "time=2026-12-01T08:00:00.123Z level=warning logger=vuegraf.sinks msg=ok"


AWKWARD = [
    'he said "stop" at C:\\temp\\',
    "two\nlines\r\nand\ta tab",
    "key=value a=b = ==",
    "",
    " leading and trailing ",
    "unicode: été ☀ 🔌 北京",
    "separators: \x85 \u2028 \u2029 \x0b \x0c \x1c \x00 \x7f \x1b[31m",
    "not text: \udcff (a lone surrogate), \U000e0001 (a tag), \ufeff (a BOM)",
    "\\u0041 is not A, \\n is not a newline",
]


@pytest.mark.parametrize("fmt", PARSERS)
@pytest.mark.parametrize("text", AWKWARD)
def test_awkward_messages_round_trip_on_one_line(fmt: str, text: str) -> None:
    formatter, parse = PARSERS[fmt]
    line = one_line(formatter.format(record("%s", (text,), level=logging.ERROR)))
    fields = parse(line)
    assert fields["msg"] == text
    assert fields["level"] == "error"


def raise_nested() -> None:
    empty: dict[str, int] = {}
    try:
        empty["missing"]
    except KeyError as err:
        raise ValueError('bad "value"\nsecond line \\ backslash') from err


@pytest.mark.parametrize("fmt", PARSERS)
def test_an_exception_and_its_traceback_in_exc(fmt: str) -> None:
    formatter, parse = PARSERS[fmt]
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"vuegraf.test_logformat.{fmt}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise_nested()
        except ValueError:
            logger.exception("write failed: %s", "influx")
        logger.warning("here", stack_info=True)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    lines = out.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 3, out.getvalue()  # two records, two lines
    failed, here = (parse(one_line(line)) for line in lines[:2])
    assert failed["msg"] == "write failed: influx" and failed["level"] == "error"
    exc = failed["exc"]
    assert exc.startswith("Traceback (most recent call last):\n")
    assert "KeyError: 'missing'" in exc
    assert "The above exception was the direct cause of the following exception:" in exc
    assert 'in raise_nested\n    raise ValueError(' in exc
    assert exc.endswith('ValueError: bad "value"\nsecond line \\ backslash')
    assert list(failed) == [*KEYS, "exc"]
    assert here["stack"].startswith("Stack (most recent call last):\n")
    assert "test_an_exception_and_its_traceback_in_exc" in here["stack"]
    assert "exc" not in here


# --- redaction, in every format ----------------------------------------------------------


def escaped_forms(secret: str) -> set[str]:
    """Every way the secret could reach a line: as is, as each format escapes it, as Python's
    repr shows it, URL-encoded; long enough pieces of it for the multi-line one."""
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        secret.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"),
        repr(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        *(part for part in secret.split("\n") if len(part) > 5),
    }


def leaks(text: str) -> list[str]:
    return [form for secret in SECRETS for form in escaped_forms(secret) if form in text]


MakeLogger = Callable[[logging.Formatter], tuple[logging.Logger, io.StringIO]]


@pytest.fixture
def redacted() -> Iterator[MakeLogger]:
    """A logger writing through a handler with the formatter and the redacting filter, as
    cli.main wires the root logger's."""
    made: list[tuple[logging.Logger, logging.Handler]] = []

    def make(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(formatter)
        install_redaction(SECRETS, handlers=[handler])
        logger = logging.getLogger("vuegraf.test_logformat.redacted")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        made.append((logger, handler))
        return logger, out

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)
        logger.propagate = True


def log_every_secret_everywhere(logger: logging.Logger) -> int:
    """Each secret in the message, the arguments, a dict's repr, an exception's text and
    its traceback; returns the number of records."""
    for secret in SECRETS:
        logger.info(f"login with {secret} failed")  # noqa: G004 - on purpose: already formatted
        logger.warning("password %s refused", secret)
        logger.error("request %s", {"auth": secret, "user": "me"})
        try:
            raise ConnectionError(f"could not connect with {secret!r} and {secret}")
        except ConnectionError:
            logger.exception("write failed")
    return 4 * len(SECRETS)


@pytest.mark.parametrize("fmt", [*PARSERS, "text"])
def test_no_secret_in_any_format(fmt: str, redacted: MakeLogger) -> None:
    formatter = TextFormatter() if fmt == "text" else PARSERS[fmt][0]
    logger, out = redacted(formatter)
    count = log_every_secret_everywhere(logger)
    text = out.getvalue()
    assert not leaks(text), leaks(text)
    assert text.count(MASK) >= 5 * len(SECRETS)
    if fmt == "text":
        assert f"login with {MASK} failed" in text
        return
    parse = PARSERS[fmt][1]
    records = [parse(one_line(line)) for line in text.splitlines()]
    assert len(records) == count
    assert [r["msg"] for r in records[:4]] == [
        f"login with {MASK} failed",
        f"password {MASK} refused",
        f"request {{'auth': '{MASK}', 'user': 'me'}}",
        "write failed",
    ]
    excs = [r["exc"] for r in records if "exc" in r]
    assert len(excs) == len(SECRETS)
    for exc in excs:
        assert exc.startswith("Traceback (most recent call last):\n")
        assert exc.endswith(f"ConnectionError: could not connect with '{MASK}' and {MASK}")
    for parsed in records:  # and not in the values once unescaped either
        assert not leaks(" ".join(parsed.values()))


# --- choosing the format -----------------------------------------------------------------


def test_the_flag_wins_then_the_environment_then_text() -> None:
    assert resolve_log_format("logfmt", {LOG_FORMAT_ENV: "json"}) == "logfmt"
    assert resolve_log_format(None, {LOG_FORMAT_ENV: "json"}) == "json"
    assert resolve_log_format(None, {LOG_FORMAT_ENV: " JSON "}) == "json"
    assert resolve_log_format(None, {LOG_FORMAT_ENV: ""}) == "text"
    assert resolve_log_format(None, {}) == "text"
    assert resolve_log_format(None, {LOG_FORMAT_ENV: "yaml"}) is None


def run_vuegraf(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != LOG_FORMAT_ENV}
    return subprocess.run(
        [sys.executable, "-m", "vuegraf", *args],
        capture_output=True, text=True, timeout=60, env={**environ, **(env or {})},
    )


def test_a_bad_flag_value_is_a_usage_error(tmp_path: Path) -> None:
    out = run_vuegraf(str(tmp_path / "vuegraf.json"), "--log-format", "yaml")
    assert out.returncode == 2
    assert out.stderr.startswith("usage: vuegraf ")
    assert "argument --log-format: invalid choice: 'yaml'" in out.stderr


def test_a_bad_environment_value_is_a_usage_error(tmp_path: Path) -> None:
    out = run_vuegraf(str(tmp_path / "vuegraf.json"), env={LOG_FORMAT_ENV: "yaml"})
    assert out.returncode == 2
    assert out.stderr.startswith("usage: vuegraf ")
    assert f"${LOG_FORMAT_ENV}: invalid log format 'yaml'" in out.stderr


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_config_error_is_one_record_in_json(tmp_path: Path, how: str) -> None:
    cfg = tmp_path / "vuegraf.json"
    cfg.write_text(json.dumps({"accounts": [{"name": "Home", "email": "me@example.com"}]}))
    cfg.chmod(0o600)
    if how == "flag":
        out = run_vuegraf(str(cfg), "--log-format", "json")
    else:
        out = run_vuegraf(str(cfg), env={LOG_FORMAT_ENV: "json"})
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    fields = json.loads(line)
    assert fields["level"] == "error" and fields["logger"] == "vuegraf"
    assert fields["msg"].startswith("accounts[0].password: ")


def test_text_config_error_stays_a_plain_line(tmp_path: Path) -> None:
    cfg = tmp_path / "vuegraf.json"
    cfg.write_text(json.dumps({"accounts": [{"name": "Home", "email": "me@example.com"}]}))
    cfg.chmod(0o600)
    out = run_vuegraf(str(cfg), "--log-format", "text")
    assert out.returncode == 2
    assert out.stderr.splitlines()[0].startswith("accounts[0].password: ")


UNCAUGHT = """
import threading, warnings
from vuegraf.cli import setup_logging
from vuegraf.redact import install_redaction
setup_logging(False, False, {fmt!r})
install_redaction([{secret!r}])
def boom():
    raise RuntimeError("thread died holding " + {secret!r})
thread = threading.Thread(target=boom, name="worker-7")
thread.start()
thread.join()
warnings.warn("a library's warning", UserWarning)
raise ValueError("main died holding " + {secret!r})
"""


@pytest.mark.parametrize("fmt", PARSERS)
def test_uncaught_exceptions_and_warnings_are_records_too(fmt: str) -> None:
    code = UNCAUGHT.format(fmt=fmt, secret=QUOTED_SECRET)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    parse = PARSERS[fmt][1]
    thread, warning, main = (parse(line) for line in out.stderr.splitlines())
    assert thread["level"] == "critical"
    assert thread["msg"] == "Uncaught exception in thread worker-7"
    assert thread["exc"].endswith(f"RuntimeError: thread died holding {MASK}")
    assert warning["logger"] == "py.warnings" and "a library's warning" in warning["msg"]
    assert main["msg"] == "Uncaught exception"
    assert main["exc"].endswith(f"ValueError: main died holding {MASK}")
    assert not leaks(out.stderr)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_progress_bar_in_structured_formats(caplog: pytest.LogCaptureFixture) -> None:
    terminal = FakeTerminal()
    caplog.set_level(logging.INFO, logger="vuegraf.history")
    progress = make_progress(terminal, bar=False)
    progress(1, 2, 10)
    progress(2, 2, 20)
    progress.finish()
    assert terminal.getvalue() == ""
    assert [r.getMessage() for r in caplog.records] == [
        "History: 1/2 windows (50%), 10 points, ETA 0:00",
        "History: 2/2 windows (100%), 20 points, ETA 0:00",
    ]
    bar = FakeTerminal()
    with_bar = make_progress(bar)
    with_bar(2, 2, 20)
    assert bar.getvalue().startswith("\r[")


# --- the real process against the simulator ----------------------------------------------


class Running:
    """`python -m vuegraf ...` with its stderr read into a list as it comes."""

    def __init__(self, test_time: TestTime, *args: str) -> None:
        environ = {k: v for k, v in os.environ.items() if k != LOG_FORMAT_ENV}
        self.proc = subprocess.Popen(
            test_time.vuegraf(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env=environ,
        )
        self.err: list[str] = []
        self.reader = threading.Thread(target=self.err.extend, args=(self.proc.stderr,),
                                       daemon=True)
        self.reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"exited before {what}:\n{self.stderr[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{self.stderr[-3000:]}"
            time.sleep(0.05)

    def cycles(self) -> int:
        return self.stderr.count("Cycle at ")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(10)
        return code


@pytest.mark.parametrize("fmt", PARSERS)
def test_the_real_process_writes_only_records(
    fmt: str, tmp_path: Path, test_time: TestTime
) -> None:
    """`vuegraf CONFIG --log-format FMT -d` against the simulator, with a second account at a
    dead address (an error each cycle) and a SIGHUP with a broken config that holds the
    secrets: every line on stderr is one record of the format, and none holds a secret."""
    dead_port, dead_broker = free_ports(2)
    with SimulatorServer(now=test_time.now) as sim:
        data = {
            "accounts": [
                {"name": "Home", "email": "me@example.com", "password": QUOTED_SECRET,
                 "simulatorUrl": sim.url},
                {"name": "Dead", "email": "dead@example.com", "password": NEWLINE_SECRET,
                 "simulatorUrl": f"http://127.0.0.1:{dead_port}"},
            ],
            "stateDir": "state",
            "updateIntervalSecs": 2,
            "maxHistoryDays": 1,
            "timezone": "UTC",
            # Nothing listens there: an MQTT error to log, and a third secret to mask.
            "mqtt": {"host": "127.0.0.1", "port": dead_broker, "username": "vue",
                     "password": UNICODE_SECRET},
        }
        cfg = tmp_path / "vuegraf.json"
        cfg.write_text(json.dumps(data))
        cfg.chmod(0o600)
        # A stored minute a few minutes back: the start-up fill is minutes long, not days.
        config = parse_config(data, cfg)
        model = UsageModel(Scenario.default())
        seed_minute(config, model, test_time.now().replace(second=0, microsecond=0)
                    - timedelta(minutes=3))

        started = datetime.now(UTC).replace(microsecond=0)
        run = Running(test_time, str(cfg), "--log-format", fmt, "-d")
        try:
            run.wait_for(lambda: run.cycles() >= 2 and "Account Dead" in run.stderr, 120,
                         "two cycles and the dead account's error")
            # A broken config that holds a secret: rejected, and the rejection logged.
            cfg.write_text(json.dumps({**data, "web": {"port": QUOTED_SECRET}}))
            cycles = run.cycles()
            run.proc.send_signal(signal.SIGHUP)
            run.wait_for(lambda: run.cycles() > cycles, 60, "a cycle after the reload")
        finally:
            code = run.stop()
        ended = datetime.now(UTC)
    assert code == 0, run.stderr[-3000:]
    text = run.stderr
    assert text.endswith("\n")
    parse = PARSERS[fmt][1]
    records = []
    for number, line in enumerate(text[:-1].split("\n"), 1):
        try:
            fields = parse(line)
        except (ValueError, AssertionError, IndexError) as err:
            raise AssertionError(f"line {number} is no {fmt} record: {line!r}") from err
        assert list(fields)[:4] == list(KEYS), line
        assert set(fields) <= {*KEYS, "exc", "stack"}, line
        assert TIME_RE.fullmatch(fields["time"]), line
        records.append(fields)
    assert not leaks(text), leaks(text)
    messages = [r["msg"] for r in records]
    assert any(m.startswith("vuegraf ") and " starting with " in m for m in messages)
    assert sum(m.startswith("Cycle at ") for m in messages) >= 3
    assert any(m.startswith("New config rejected") for m in messages)
    assert any(r["level"] in ("warning", "error") and "Dead" in r["msg"] for r in records)
    assert "Received SIGTERM; stopping" in messages
    # Stamped in UTC, whatever the machine's zone: every record inside the run's wall time.
    stamps = [datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
              for r in records]
    assert started <= min(stamps) <= max(stamps) <= ended, (min(stamps), max(stamps))


# --- vuegraf-graph -----------------------------------------------------------------------


def run_graph(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in (LOG_FORMAT_ENV, "VUEGRAF_STATE_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "vuegraf.graphs.cli", *args],
        capture_output=True, text=True, timeout=120, env={**environ, **(env or {})},
    )


def test_vuegraf_graph_logs_in_the_chosen_format(tmp_path: Path) -> None:
    """A corrupt layout file (a warning) and a refusal, as JSON records; the bad value of the
    variable as argparse's usage error; the text format as before."""
    sc.fill_store(tmp_path / "vuegraf.sqlite")
    cfg = tmp_path / "vuegraf.json"
    cfg.write_text(json.dumps({
        "accounts": [{"name": sc.ACCOUNT, "email": "me@example.com", "password": QUOTED_SECRET}],
        "timezone": "America/New_York", "stateDir": "state",
    }))
    cfg.chmod(0o600)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "layout.json").write_text('{"password": "' + "x" * 3)

    out = run_graph(str(cfg), "--svg", str(tmp_path / "svg"), env={LOG_FORMAT_ENV: "json"})
    assert out.returncode == 0, out.stderr
    (warning,) = (json.loads(line) for line in out.stderr.splitlines())
    assert warning["level"] == "warning" and warning["logger"] == "vuegraf.graphs.layout"
    assert warning["msg"].startswith("Ignoring ") and "layout.json" in warning["msg"]
    assert out.stdout.startswith("wrote ")

    out = run_graph(str(cfg), "--svg", str(tmp_path / "svg"), "--views", "decade",
                    "--log-format", "json")
    assert out.returncode == 2
    (refusal,) = (json.loads(line) for line in out.stderr.splitlines())
    assert (refusal["level"], refusal["msg"]) == ("error",
                                                  "--views: choose from day, week, month, year")

    out = run_graph(str(cfg), "--svg", str(tmp_path / "svg"), env={LOG_FORMAT_ENV: "xml"})
    assert out.returncode == 2 and out.stderr.startswith("usage: vuegraf-graph ")

    out = run_graph(str(cfg), "--svg", str(tmp_path / "svg"))
    assert out.returncode == 0
    assert out.stderr.startswith("WARNING vuegraf.graphs.layout: Ignoring "), out.stderr
