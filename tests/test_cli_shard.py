"""`vuegraf --shard I/N` and `VUEGRAF_SHARD` as users run them: which accounts a replica reads
from Emporia (the simulator's per-account request counts) and writes (dry-run output), the
one-line refusals, and a replica that owns nothing.

Owners are literals worked out from the README's rule (see tests/test_shard.py): of
home-000 .. home-005, replica 0 of 3 owns 000, 001 and 003, replica 1 owns 005, replica 2
owns 002 and 004; "Home" belongs to replica 0.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.testtime import TestTime
from vuegraf.simulator import SimulatorServer

OWNED_BY_2 = {"home-002", "home-004"}


def write_config(tmp_path: Path, accounts: list[dict[str, str]]) -> Path:
    path = tmp_path / "vuegraf.json"
    path.write_text(
        json.dumps({"accounts": accounts, "stateDir": "state", "timezone": "America/New_York"})
    )
    path.chmod(0o600)
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vuegraf", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def run_until(
    cmd: list[str], done: Callable[[str], bool], env: dict[str, str], timeout: float = 300
) -> tuple[int, list[str], str]:
    """Start `cmd`, SIGTERM it once `done(stderr so far)` holds (or it ends, or `timeout`)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
    )
    assert proc.stdout is not None and proc.stderr is not None
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True),
        threading.Thread(target=lambda: err.extend(proc.stderr or []), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done("".join(err)) and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for reader in readers:
        reader.join(5)
    return proc.returncode, [line.rstrip("\n") for line in out], "".join(err)


@pytest.mark.parametrize("value", ["3/3", "x", "-1/2", "0/0"])
def test_a_bad_shard_is_one_line_naming_where_it_came_from_exit_2(
    tmp_path: Path, value: str
) -> None:
    config = write_config(tmp_path, [{"name": "Home", "email": "a@b.c", "password": "pw"}])
    flag = run_cli(str(config), "--shard", value)
    assert flag.returncode == 2
    assert flag.stderr.count("\n") == 1 and flag.stderr.startswith("--shard: "), flag.stderr
    env = run_cli(str(config), env={"VUEGRAF_SHARD": value})
    assert env.returncode == 2
    assert env.stderr.count("\n") == 1 and env.stderr.startswith("VUEGRAF_SHARD: "), env.stderr


def test_reset_refused_for_one_replica_of_several(tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "Home", "email": "a@b.c", "password": "pw"}])
    out = run_cli(str(config), "--resetdatabase", env={"VUEGRAF_SHARD": "1/3"})
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "--resetdatabase: refused with VUEGRAF_SHARD 1/3" in out.stderr
    assert not (tmp_path / "vuegraf.sqlite").exists()


def test_a_replica_reads_and_writes_only_its_own_accounts(
    tmp_path: Path, test_time: TestTime
) -> None:
    with SimulatorServer(seed=4, now=test_time.now, accounts=6) as sim:
        accounts = [
            {"name": f"home-{n:03d}", "email": f"h{n}@example.com", "password": "pw",
             "simulatorUrl": sim.account_url(n)}
            for n in range(6)
        ]
        config = write_config(tmp_path, accounts)
        code, lines, err = run_until(
            test_time.vuegraf(str(config), "--dryrun", "--historydays", "1", "--shard", "2/3"),
            lambda err: "Cycle at" in err,
            env={"VUEGRAF_SHARD": "0/3"},  # the flag wins
        )
        asked = {n: sim.account(n).stats()["total"] for n in range(6)}
    assert code == 0, err
    assert "Shard 2/3: this replica collects 2 of the config's 6 accounts" in err
    written = {
        m.group(1)
        for line in lines
        if (m := re.match(r"energy_usage,account_name=([^,]+),", line)) is not None
    }
    assert written == OWNED_BY_2
    assert {n for n, total in asked.items() if total} == {2, 4}, asked
    assert all(asked[n] > 3 for n in (2, 4)), asked  # login, devices, history, live minute


def test_a_replica_that_owns_none_warns_and_keeps_running(
    tmp_path: Path, test_time: TestTime
) -> None:
    with SimulatorServer(now=test_time.now) as sim:
        config = write_config(
            tmp_path,
            [{"name": "Home", "email": "a@b.c", "password": "pw", "simulatorUrl": sim.url}],
        )
        code, _lines, err = run_until(
            test_time.vuegraf(str(config), "--historydays", "1"),
            lambda err: err.count("Cycle at") >= 1,
            env={"VUEGRAF_SHARD": "1/3"},
        )
        asked = sim.stats()["total"]
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "| WARN" in line]
    assert len(warnings) == 1, err
    assert "Shard 1/3: none of the config's 1 accounts is this replica's" in warnings[0]
    assert "Cycle at" in err and asked == 0
    state = tmp_path / "state"
    health = json.loads((state / "health-shard-1-of-3.json").read_text())
    assert health["status"] == "healthy"
    assert not (state / "health.json").exists()
