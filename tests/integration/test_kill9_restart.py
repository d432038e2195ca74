"""kill -9 at random moments loses nothing: vuegraf (as a child process, in virtual time)
is SIGKILLed five times and restarted each time; after a last clean run every minute, hour
and day point inside Emporia's retention is in InfluxDB exactly once, with the simulator's
value.

The child is tests/harness/virtual_vuegraf.py: the production wiring (`vuegraf.cli.run`: the
InfluxDB store behind the durable retry queue, marks in the state dir, the health file) with
a clock whose minutes pass in 30 ms of real time and which it shares with this process
through a file: the Emporia simulator here answers as of that virtual time. The kill moments
are random real-time delays from a seeded generator, so a failure reproduces.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness import oracle
from harness.completeness import compare, stored_points
from vuegraf.simulator import SimulatorServer, UsageModel

pytestmark = pytest.mark.integration

HARNESS = Path(__file__).resolve().parents[1] / "harness" / "virtual_vuegraf.py"
SIM_SEED = 44
KILL_SEED = 20261124
# 23:35 in New York: local midnight (a day point) and hour rollovers fall inside the runs.
T0 = datetime(2026, 11, 24, 4, 35, 20, tzinfo=UTC)
MS_PER_MINUTE = 30
KILLS = 5
# The last run is long enough (in virtual minutes) for every hole's settle time and the
# 60-requests-per-tick cap on filling, even if all seven days are still to do.
FINAL_RUN_MINUTES = 40
# Minutes younger than this at the end may still be settling (a null from the gappy plug).
SETTLE_MARGIN = timedelta(minutes=5)
# Emporia keeps minutes 7 days; vuegraf stays 10 minutes inside that edge.
RETENTION_MARGIN = timedelta(minutes=15)


class VirtualTime:
    """This process's side of the shared clock file."""

    def __init__(self, path: Path, start: datetime) -> None:
        self.path = path
        self.set(start)

    def now(self) -> datetime:
        return datetime.fromtimestamp(float(self.path.read_text()), UTC)

    def set(self, t: datetime) -> None:
        tmp = self.path.with_suffix(".parent.tmp")
        tmp.write_text(repr(t.timestamp()))
        tmp.replace(self.path)

    def advance(self, minutes: float) -> None:
        self.set(self.now() + timedelta(minutes=minutes))


def write_config(tmp_path: Path, server, database: str, sim_url: str) -> Path:
    path = tmp_path / "vuegraf.json"
    path.write_text(
        json.dumps(
            {
                "influxDb": {"host": server.host, "port": server.port, "database": database},
                "accounts": [
                    {
                        "name": "Home",
                        "email": "me@example.com",
                        "password": "pw",
                        "simulatorUrl": sim_url,
                    }
                ],
                "timezone": "America/New_York",
                "stateDir": "state",
            }
        )
    )
    path.chmod(0o600)
    return path


def start_child(config: Path, clock: Path, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            str(HARNESS),
            str(config),
            str(clock),
            "--ms-per-minute",
            str(MS_PER_MINUTE),
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def clean_run(config: Path, clock: Path, log: Path, minutes: int = FINAL_RUN_MINUTES) -> None:
    """A run that ends by itself after `minutes` virtual minutes, exit code 0."""
    proc = start_child(config, clock, log, "--stop-after-minutes", str(minutes))
    try:
        code = proc.wait(timeout=300)  # generous: a loaded machine only makes it slower
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, tail(log)


def queue_depth(state_dir: Path) -> int:
    total = 0
    for path in state_dir.glob("queue-*.sqlite"):
        with sqlite3.connect(path) as db:
            total += db.execute("SELECT COUNT(*) FROM points").fetchone()[0]
    return total


def check_complete(client, end: datetime, model: UsageModel) -> list:
    """Compare minutes, hours and days inside the lookback that ends at `end` with what the
    simulator's `model` serves (the model of the run's simulator: it keeps the values it
    served, so the week of minutes is not worked out a second time)."""
    zone = oracle.NEW_YORK
    names = oracle.DEFAULT_NAMES
    settled = end - SETTLE_MARGIN
    minute_since = end - timedelta(days=7) + RETENTION_MARGIN
    # Whole hours after the one holding the lookback's start, up to the one holding `settled`.
    hour_since = oracle.floor_to(end - timedelta(days=7), 3600) + timedelta(hours=1)
    hour_until = oracle.floor_to(settled, 3600)
    # Whole local days after the one holding the lookback's start, up to the one holding
    # `settled`.
    day_since = oracle.midnight(
        oracle.local_date(end - timedelta(days=7), zone) + timedelta(days=1), zone
    )
    day_until = oracle.day_start(settled, zone)
    results = []
    for scale, tag, since, until in (
        ("1MIN", "False", minute_since, settled),
        ("1H", "Hour", hour_since, hour_until),
        ("1D", "Day", day_since, day_until),
    ):
        want = oracle.served(names, model, scale, since, until, zone)
        # Day points are stamped 23:59:59 local: read a day further to see them all.
        got = stored_points(client, "Home", tag, since, until + timedelta(days=1))
        results.append(compare(f"{scale} points", got, want))
        results.append(compare(f"{scale} points of Balance and the grid channels", got,
                               computed_since_first(got, model, scale, since, until)))
    return results


def computed_since_first(
    got, model: UsageModel, scale: str, since: datetime, until: datetime
) -> dict[tuple[str, int], float]:
    """What the simulator served for each channel without chart data (Balance, the grid
    channels), from its first stored point on: vuegraf follows them from the first value it
    read, and every bucket it missed after that (a kill, a restart) is filled from usage
    requests for past buckets."""
    live_only = [oracle.DEFAULT_NAMES[k] for k in oracle.LIVE_ONLY]
    served = oracle.served(
        oracle.DEFAULT_NAMES, model, scale, since, until, oracle.NEW_YORK, True, live_only
    )
    first: dict[str, int] = {}
    for name, t in got.points:
        if name in live_only:
            first[name] = min(t, first.get(name, t))
    assert set(first) == set(live_only), f"{scale}: no point of {set(live_only) - set(first)}"
    return {(name, t): w for (name, t), w in served.items() if t >= first[name]}


def minute_count(client, names: list[str], since: datetime, until: datetime) -> int:
    pattern = "|".join(n.replace("/", r"\/") for n in names)
    result = client.query(
        f"SELECT count(usage) FROM energy_usage WHERE account_name = 'Home' "
        f"AND detailed = 'False' AND device_name =~ /^({pattern})$/ "
        f"AND time >= {int(since.timestamp())}s AND time < {int(until.timestamp())}s"
    )
    return sum(int(row["count"]) for row in result.get_points())


def test_five_kill9_at_random_moments_then_nothing_missing(influxdb_v1_db, tmp_path):
    server, database = influxdb_v1_db
    client = server.client(database)
    rng = random.Random(KILL_SEED)
    virtual = VirtualTime(tmp_path / "clock", T0)
    kills = []  # (real seconds alive, virtual time reached, gap after, minute points stored)
    with SimulatorServer(seed=SIM_SEED, now=virtual.now) as sim:
        config = write_config(tmp_path, server, database, sim.url)
        names = [name for _g, _n, name in oracle.channels(oracle.DEFAULT_NAMES)]
        for run in range(1, KILLS + 1):
            log = tmp_path / f"run{run}.log"
            delay = rng.uniform(0.5, 4.0)
            started = time.monotonic()
            proc = start_child(config, virtual.path, log)
            try:
                while time.monotonic() - started < delay:
                    assert proc.poll() is None, f"run {run} ended on its own:\n{tail(log)}"
                    time.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode == -signal.SIGKILL
            reached = virtual.now()
            gap = rng.choice([0, rng.randint(2, 90)])  # virtual minutes spent down
            stored = minute_count(
                client,
                names,
                reached - timedelta(days=7) + RETENTION_MARGIN,
                reached - SETTLE_MARGIN,
            )
            kills.append((delay, reached, gap, stored))
            virtual.advance(gap)
        clean_run(config, virtual.path, tmp_path / "final.log")
        end = virtual.now()
        results = check_complete(client, end, sim.model)
        # What each killed run had left behind, against what was due by then.
        model = sim.model
        report = []
        for run, (delay, reached, gap, stored) in enumerate(kills, 1):
            since = reached - timedelta(days=7) + RETENTION_MARGIN
            due = len(
                oracle.served(
                    oracle.DEFAULT_NAMES,
                    model,
                    "1MIN",
                    since,
                    reached - SETTLE_MARGIN,
                    oracle.NEW_YORK,
                )
            )
            report.append(
                f"kill {run} after {delay:.2f} s real, virtual {reached:%H:%M}, "
                f"down {gap} min: {stored} minute points stored of {due} due"
            )
        report += [str(r) for r in results]
    client.close()
    print("\n".join(report))
    assert queue_depth(tmp_path / "state") == 0
    for result in results:
        assert result.ok, "\n".join(report)
        assert result.expected > 0, "\n".join(report)


def test_kill9_inside_the_first_startup_fill_then_restart_fills_everything(
    influxdb_v1_db, tmp_path
):
    """SIGKILL while the very first tick is filling the empty store's 7 days (before the
    first marks were saved): the restart must still know the hole is there."""
    server, database = influxdb_v1_db
    client = server.client(database)
    virtual = VirtualTime(tmp_path / "clock", T0)
    # 30 ms per chart request: the first tick's 60 requests take about 2 s to kill into.
    with SimulatorServer(seed=SIM_SEED, now=virtual.now, latency_s=0.03) as sim:
        config = write_config(tmp_path, server, database, sim.url)
        log = tmp_path / "run1.log"
        proc = start_child(config, virtual.path, log)
        deadline = time.monotonic() + 120
        try:
            old = (T0 - timedelta(days=6)).timestamp()
            while True:  # until the fill of the oldest day has reached InfluxDB
                assert proc.poll() is None, tail(log)
                assert time.monotonic() < deadline, tail(log)
                rows = client.query(
                    "SELECT count(usage) FROM energy_usage WHERE detailed = 'False' "
                    f"AND time < {int(old)}s"
                )
                if any(row["count"] for row in rows.get_points()):
                    break
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "Cycle at" not in log.read_text(), "killed too late: the first tick had ended"
        sim.latency_s = 0.0
        clean_run(config, virtual.path, tmp_path / "final.log", minutes=20)
        results = check_complete(client, virtual.now(), sim.model)
    client.close()
    print("\n".join(map(str, results)))
    for result in results:
        assert result.ok and result.expected > 0, str(result)


def test_first_start_on_a_server_without_the_database_fills_seven_days(influxdb_v1, tmp_path):
    """A fresh InfluxDB 1.x where vuegraf creates the database itself (on its first write):
    the start-up fill must still cover the whole lookback."""
    database = f"fresh_{uuid.uuid4().hex[:12]}"
    client = influxdb_v1.client(database)
    virtual = VirtualTime(tmp_path / "clock", T0)
    try:
        with SimulatorServer(seed=SIM_SEED, now=virtual.now) as sim:
            config = write_config(tmp_path, influxdb_v1, database, sim.url)
            clean_run(config, virtual.path, tmp_path / "run.log", minutes=20)
            results = check_complete(client, virtual.now(), sim.model)
    finally:
        client.drop_database(database)
        client.close()
    print("\n".join(map(str, results)))
    for result in results:
        assert result.ok and result.expected > 0, str(result)
