"""The health file and `vuegraf-health`, the Docker HEALTHCHECK command."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

from vuegraf.health import HEALTH_FILE, HealthFile, check
from vuegraf.stats import Stats

T = datetime(2026, 11, 23, 20, 0, 5, tzinfo=UTC)


def test_unhealthy_after_threshold_failed_cycles_then_recovers(tmp_path):
    stats = Stats()
    health = HealthFile(tmp_path, stats, threshold=3, interval_secs=60)
    path = tmp_path / HEALTH_FILE
    for i in range(2):
        stats.count_cycle(False, 1.0, T + timedelta(minutes=i))
        health.update(T + timedelta(minutes=i))
        assert check(path, (T + timedelta(minutes=i)).timestamp()) == (True, "healthy")
    stats.count_cycle(False, 1.0, T + timedelta(minutes=2))
    health.update(T + timedelta(minutes=2))
    ok, reason = check(path, (T + timedelta(minutes=2)).timestamp())
    assert not ok and "3 failed cycles" in reason
    stats.count_cycle(True, 1.0, T + timedelta(minutes=3))
    health.update(T + timedelta(minutes=3))
    assert check(path, (T + timedelta(minutes=3)).timestamp())[0]


def test_stale_or_missing_file_is_unhealthy(tmp_path):
    stats = Stats()
    health = HealthFile(tmp_path, stats, threshold=3, interval_secs=60)
    stats.count_cycle(True, 1.0, T)
    health.update(T)
    assert check(tmp_path / HEALTH_FILE, (T + timedelta(seconds=299)).timestamp())[0]
    ok, reason = check(tmp_path / HEALTH_FILE, (T + timedelta(seconds=301)).timestamp())
    assert not ok and reason.startswith("stale")
    assert check(tmp_path / "nope" / HEALTH_FILE, T.timestamp())[0] is False


def test_vuegraf_health_command_exit_codes(tmp_path):
    cmd = [sys.executable, "-m", "vuegraf.health", str(tmp_path)]
    assert subprocess.run(cmd, capture_output=True).returncode == 1  # no file yet
    stats = Stats()
    stats.count_cycle(True, 0.5, datetime.now(UTC))
    HealthFile(tmp_path, stats, 3, 60).update(datetime.now(UTC))
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "healthy"
    env_out = subprocess.run(
        [sys.executable, "-m", "vuegraf.health"],
        capture_output=True,
        env={"VUEGRAF_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert env_out.returncode == 0


def test_vuegraf_health_says_whose_side_and_a_refused_login_is_unhealthy_at_once(tmp_path):
    stats = Stats()
    stats.count_cycle(True, 0.5, datetime.now(UTC))  # the threshold is far: 0 failed cycles
    refused = "Emporia refused the login (check email and password in vuegraf.json)"
    stats.set_account_state("Home", "auth_failed", refused)
    stats.set_account_state("Cabin", "emporia_down", "Emporia is failing (HTTP 503)")
    HealthFile(tmp_path, stats, 3, 60).update(datetime.now(UTC))
    out = subprocess.run([sys.executable, "-m", "vuegraf.health", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stdout.strip() == f"unhealthy: account Home: {refused}"
    stats.set_account_state("Home", "ok", "")
    HealthFile(tmp_path, stats, 3, 60).update(datetime.now(UTC))
    out = subprocess.run([sys.executable, "-m", "vuegraf.health", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == "healthy (account Cabin: Emporia is failing (HTTP 503))"


def test_vuegraf_health_does_not_load_pyemvue():
    """Docker runs it every 30 s: it reads a file, and must not import boto3 to do so."""
    code = "import sys, vuegraf.health; print(sorted(m for m in ('pyemvue', 'botocore') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
