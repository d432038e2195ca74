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

import pytest

from vuegraf import __version__
from vuegraf.simulator import SimulatorServer

SECRET = "hunter2-very-secret"


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


def test_missing_config_file_exit_2(tmp_path):
    out = run_cli(tmp_path / "nope.json")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "nope.json" in out.stderr


def test_historydays_imports_then_keeps_collecting(tmp_path):
    with SimulatorServer() as sim:
        cfg = write_config(tmp_path, {"accounts": [account(sim.url)], "stateDir": "state"})
        code, _lines, err = _run_until(
            [sys.executable, "-m", "vuegraf", str(cfg), "--historydays", "3"],
            lambda _lines, err: "Collecting every" in err and "Cycle at" in err,
            timeout=120,
        )
    assert code == 0, err
    assert "History of 3 days done" in err
    with sqlite3.connect(tmp_path / "vuegraf.sqlite") as db:
        hours = db.execute(
            "SELECT device_name, COUNT(*) FROM energy_usage WHERE detailed = 'Hour' "
            "GROUP BY device_name"
        ).fetchall()
        days = db.execute(
            "SELECT COUNT(DISTINCT time) FROM energy_usage WHERE detailed = 'Day'"
        ).fetchone()[0]
    # 28 channels have chart history (3 x 24 hours; the gappy plug may miss one);
    # Balance and the grid channels only get the live hour.
    full = [n for n in dict(hours).values() if n >= 3 * 24 - 2]
    assert len(full) == 28
    assert days >= 3
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
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    err_reader.join(5)
    return proc.returncode, out_lines, "".join(err_chunks)


def test_dryrun_prints_line_protocol_and_writes_nothing(tmp_path):
    with SimulatorServer() as sim:
        cfg = write_config(tmp_path, {"accounts": [account(sim.url)]})
        started = time.monotonic()
        code, lines, err = _run_until(
            [sys.executable, "-m", "vuegraf", str(cfg), "--dryrun", "-d"],
            lambda lines, _err: len(lines) >= 20,
        )
    assert code == 0, err
    assert time.monotonic() - started < 30
    assert len(lines) >= 20
    for line in lines:
        prefix = r"energy_usage,account_name=Home,detailed=(False|Hour|Day),device_name="
        assert re.match(prefix, line)
        value, stamp = line.rsplit(" ", 2)[1:]
        assert value.startswith("usage=") and "i" not in value
        assert int(stamp) % 60 == 0 or ",detailed=Day," in line  # days end 23:59:59 local
    assert not (tmp_path / "vuegraf.sqlite").exists()
    assert SECRET not in err and SECRET not in "\n".join(lines)


def test_no_influx_section_writes_the_embedded_sqlite_store(tmp_path):
    with SimulatorServer() as sim:
        cfg = write_config(tmp_path, {"accounts": [account(sim.url)], "sqlitePath": "data.db"})
        db_path = tmp_path / "data.db"

        def stored(_lines, _err):
            if not db_path.exists():
                return False
            try:
                with sqlite3.connect(db_path) as db:
                    return db.execute("SELECT COUNT(*) FROM energy_usage").fetchone()[0] > 20
            except sqlite3.Error:
                return False

        code, _lines, err = _run_until([sys.executable, "-m", "vuegraf", str(cfg), "-v"], stored)
    assert code == 0, err
    with sqlite3.connect(db_path) as db:
        rows = db.execute(
            "SELECT DISTINCT detailed, account_name FROM energy_usage ORDER BY detailed"
        ).fetchall()
    assert rows == [("Day", "Home"), ("False", "Home"), ("Hour", "Home")]
    assert "Received SIGTERM; stopping" in err
    assert SECRET not in err


def test_demo_shows_watts_per_circuit(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "vuegraf.demo", "--dir", str(tmp_path / "demo"), "--seconds", "6"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "=== minute" in out.stdout
    assert "Kitchen" in out.stdout  # mapped by the demo config
    assert " W" in out.stdout
    assert (tmp_path / "demo" / "vuegraf.sqlite").exists()
