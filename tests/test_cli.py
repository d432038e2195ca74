"""The `vuegraf` command as users run it: flags, exit codes, one-line errors, dry run, demo."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from harness import oracle
from harness.completeness import compare, expected_points, sqlite_points
from vuegraf import __version__
from vuegraf.config import parse_config
from vuegraf.model import Scale
from vuegraf.simulator import SimulatorServer

SECRET = "hunter2-very-secret"
ZONE = "America/New_York"  # the simulated household's zone, so days agree with Emporia's


def scale_length(scale: Scale) -> timedelta:
    return timedelta(seconds=oracle.FIXED_SECONDS[scale.value])


def model_points(
    cfg: Path, sim: SimulatorServer, scale: Scale, since: datetime, until: datetime,
    live_only_too: bool = False,
) -> dict[tuple[str, int], float]:
    """The simulator's values for buckets starting in [since, until), keyed as stored."""
    config = parse_config(json.loads(cfg.read_text()), cfg)
    return expected_points(config, sim.model, scale, since, until, live_only_too=live_only_too)


def whole_local_days(since: datetime, until: datetime, zone: ZoneInfo) -> list[datetime]:
    """Local midnights (as UTC) of the days that start at or after `since` and end by `until`."""
    return [
        start
        for start in oracle.bucket_starts(oracle.DAY, since, until, zone)
        if oracle.bucket_after(oracle.DAY, start, zone) <= until
    ]


def run_cli(*args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "vuegraf", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_config(tmp_path, data):
    path = tmp_path / "vuegraf.json"
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def account(url="http://127.0.0.1:9", **extra):
    return {"name": "Home", "email": "me@example.com", "password": SECRET,
            "simulatorUrl": url, **extra}


def test_version():
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"vuegraf {__version__}"


def test_help_lists_upstream_flags():
    out = run_cli("--help")
    assert out.returncode == 0
    for flag in ("-v", "--verbose", "-d", "--debug", "--historydays", "--resetdatabase",
                 "--dryrun", "--version"):
        assert flag in out.stdout


@pytest.mark.parametrize(
    ("data", "key_path"),
    [
        ({"accounts": [{"name": "Home", "email": "me@example.com"}]}, "accounts[0].password"),
        ({"accounts": [account()], "influxDb": {"version": 2, "url": "http://x:1", "org": "o",
                                                "bucket": "b"}}, "influxDb.token"),
        ({"accounts": [account()], "influxDb": {"host": "h", "database": "d", "user": "u"}},
         "influxDb.pass"),
        ({"accounts": [account()], "timezone": "Nowhere/Town"}, "timezone"),
    ],
)
def test_bad_config_one_line_naming_the_key_exit_2(tmp_path, data, key_path):
    out = run_cli(write_config(tmp_path, data))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(key_path + ": ")
    assert "Traceback" not in out.stderr
    assert SECRET not in out.stderr


@pytest.mark.parametrize(
    ("data", "line"),
    [
        # Would have written everything into the embedded SQLite file instead of InfluxDB.
        ({"accounts": [account()], "influxdb": {"host": "influx.local", "database": "vue"}},
         'influxdb: unknown key; did you mean "influxDb"?'),
        ({"accounts": [account()], "mqtt_host": "broker.local"},
         'mqtt_host: unknown key; did you mean "mqtt": {"host": ...}?'),
        ({"accounts": [account()], "update_interval_secs": 10},
         'update_interval_secs: unknown key; did you mean "updateIntervalSecs"?'),
        ({"accounts": [account()], "infuxDb": {"host": "influx.local", "database": "vue"}},
         'infuxDb: unknown key; did you mean "influxDb"?'),
        ({"accounts": [account(devices=[{"name": "Main Panel", "chanels": ["Oven"]}])]},
         'accounts[0].devices[0].chanels: unknown key; did you mean "channels"?'),
    ],
)
def test_a_slip_of_a_known_key_is_one_line_exit_2(tmp_path, data, line):
    out = run_cli(write_config(tmp_path, data))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [line]
    assert not (tmp_path / "vuegraf.sqlite").exists()  # nothing started, nothing written


def test_unrelated_unknown_keys_are_one_warning_and_vuegraf_runs(tmp_path):
    data = {"comment": "my config", "accounts": [account(notes="the house")], "_notes": [1, 2]}
    code, _lines, err = _run_until(
        [sys.executable, "-m", "vuegraf", str(write_config(tmp_path, data))],
        lambda _lines, err: "Collecting every" in err,
        timeout=60,
    )
    assert code == 0, err
    warnings = [line.split(" | ", 3)[3] for line in err.splitlines() if " | WARNING | " in line]
    assert warnings == ["ignoring unknown config keys: comment, _notes, accounts[0].notes"]
    assert "Collecting every" in err


def test_missing_config_file_exit_2(tmp_path):
    out = run_cli(tmp_path / "nope.json")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "nope.json" in out.stderr


def test_historydays_imports_then_keeps_collecting(tmp_path, test_time):
    with SimulatorServer(now=test_time.now) as sim:
        cfg = write_config(
            tmp_path, {"accounts": [account(sim.url)], "stateDir": "state", "timezone": ZONE}
        )
        started = test_time.now()
        code, _lines, err = _run_until(
            test_time.vuegraf(str(cfg), "--historydays", "3"),
            lambda _lines, err: "Collecting every" in err and "Cycle at" in err,
            timeout=300,
        )
        ended = test_time.now()
    assert code == 0, err
    assert "History of 3 days done" in err
    db = tmp_path / "vuegraf.sqlite"
    # What the import must hold, wherever in the day it ran: the 3 x 24 hours and minutes
    # before the start, less a margin at both ends, and the local days wholly inside them
    # that ended a while before the start. Buckets the model leaves empty must be absent.
    first = started - timedelta(hours=71)
    settled = started - timedelta(minutes=10)
    for scale, tag in ((Scale.MINUTE, "False"), (Scale.HOUR, "Hour")):
        required = model_points(cfg, sim, scale, first, settled - scale_length(scale))
        window = (started - timedelta(days=8), ended)
        want = model_points(cfg, sim, scale, *window, True)
        result = compare(f"{tag} points", sqlite_points(db, "Home", tag), want,
                         required=required, window=window)
        print(result)
        assert result.ok, str(result)
        assert result.expected > 0.9 * 71 * 3600 / scale_length(scale).total_seconds() * 28
    days = whole_local_days(first, settled, ZoneInfo(ZONE))
    assert days, "the window always holds a whole local day"
    required = model_points(cfg, sim, Scale.DAY, days[0], days[-1] + timedelta(hours=1))
    want = model_points(cfg, sim, Scale.DAY, started - timedelta(days=8), ended, True)
    result = compare("Day points", sqlite_points(db, "Home", "Day"), want, required=required,
                     window=(started - timedelta(days=8), ended + timedelta(days=1)))
    print(result)
    assert result.ok, str(result)
    health = json.loads((tmp_path / "state" / "health.json").read_text())
    assert health["status"] == "healthy"


def test_reset_refused_with_dryrun(tmp_path):
    db = tmp_path / "vuegraf.sqlite"
    out = run_cli(write_config(tmp_path, {"accounts": [account()]}), "--resetdatabase", "--dryrun")
    assert out.returncode == 2
    assert "refused together with --dryrun" in out.stderr
    assert not db.exists()


def _run_until(cmd, predicate, timeout=30):
    """Start `cmd`, wait until predicate(stdout lines so far) holds, then SIGTERM."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None
    out_lines: list[str] = []
    reader = threading.Thread(
        target=lambda: out_lines.extend(line.rstrip("\n") for line in stdout), daemon=True
    )
    err_chunks: list[str] = []
    err_reader = threading.Thread(target=lambda: err_chunks.extend(stderr), daemon=True)
    reader.start()
    err_reader.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not predicate(list(out_lines), "".join(err_chunks)):
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    err_reader.join(5)
    return proc.returncode, out_lines, "".join(err_chunks)


def test_dryrun_prints_line_protocol_and_writes_nothing(tmp_path, test_time):
    with SimulatorServer(now=test_time.now) as sim:
        cfg = write_config(tmp_path, {"accounts": [account(sim.url)], "timezone": ZONE})
        started = test_time.now()
        code, lines, err = _run_until(
            test_time.vuegraf(str(cfg), "--dryrun", "-d"),
            lambda lines, err: "Cycle at" in err,
            timeout=120,
        )
        ended = test_time.now()
    assert code == 0, err
    by_tag: dict[str, dict[tuple[str, int], float]] = {"False": {}, "Hour": {}, "Day": {}}
    line_re = re.compile(
        r"energy_usage,account_name=Home,detailed=(False|Hour|Day),device_name=((?:\\.|[^ \\])+) "
        r"usage=([-0-9.e+]+) (\d+)$"
    )
    for line in lines:
        match = line_re.match(line)
        assert match, line
        tag, name, value, stamp = match.groups()
        by_tag[tag][(re.sub(r"\\(.)", r"\1", name), int(stamp))] = float(value)
    # A dry run fills no holes: the first cycle prints the newest complete minute, hour and
    # day of every channel that has a value there, and each is the model's value.
    since = started - timedelta(days=2)
    window = (since, ended + timedelta(days=1))
    for scale, tag in ((Scale.MINUTE, "False"), (Scale.HOUR, "Hour"), (Scale.DAY, "Day")):
        want = model_points(cfg, sim, scale, since, ended, True)
        result = compare(f"{tag} lines", by_tag[tag], want, required=(), window=window)
        assert result.ok, str(result)
        assert result.judged == len(by_tag[tag]) > 0, by_tag[tag]
    assert not (tmp_path / "vuegraf.sqlite").exists()
    assert SECRET not in err and SECRET not in "\n".join(lines)


def test_no_influx_section_writes_the_embedded_sqlite_store(tmp_path, test_time):
    with SimulatorServer(now=test_time.now) as sim:
        data = {"accounts": [account(sim.url)], "sqlitePath": "data.db", "timezone": ZONE}
        cfg = write_config(tmp_path, data)
        db_path = tmp_path / "data.db"
        started = test_time.now()
        code, _lines, err = _run_until(
            test_time.vuegraf(str(cfg), "-v"), lambda _lines, err: "Cycle at" in err, timeout=120
        )
        ended = test_time.now()
    assert code == 0, err
    assert "Received SIGTERM; stopping" in err
    assert SECRET not in err
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT DISTINCT detailed, account_name FROM energy_usage ORDER BY detailed"
        ).fetchall()
    # The first cycle writes the newest complete minute, hour and day (and starts filling).
    assert rows == [("Day", "Home"), ("False", "Home"), ("Hour", "Home")]
    window = (started - timedelta(days=8), ended + timedelta(days=1))
    for scale, tag in ((Scale.MINUTE, "False"), (Scale.HOUR, "Hour"), (Scale.DAY, "Day")):
        want = model_points(cfg, sim, scale, started - timedelta(days=8), ended, True)
        result = compare(f"{tag} rows", sqlite_points(db_path, "Home", tag), want, required=(),
                         window=window)
        assert result.ok, str(result)
        assert result.judged > 0


def test_demo_shows_watts_per_circuit(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "vuegraf.demo", "--dir", str(tmp_path / "demo"), "--minutes", "1",
         "--seconds", "240"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "=== minute" in out.stdout
    assert "Kitchen" in out.stdout  # mapped by the demo config
    assert " W" in out.stdout
    assert (tmp_path / "demo" / "vuegraf.sqlite").exists()
