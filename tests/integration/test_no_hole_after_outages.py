"""No hole in any series after three outages in a row, Balance and the grid channels included.

Emporia's usage endpoint answers 502 for two minutes (over an hour and a local day
rollover), then vuegraf is SIGKILLed while it fills that outage's holes and restarted 90 s
later, then InfluxDB refuses connections for two minutes. Within 3 cycles of the last
recovery every minute, hour and day of every channel from the seeded one on is in InfluxDB
once, with the value the live path writes (tests/harness/oracle.py: the simulator's model),
and `vuegraf_lost_points_total` counts nothing. Balance, MainsFromGrid and MainsToGrid
have no chart history: their missed buckets can only come back from usage requests for past
instants.

The second case plants a Balance hole older than Emporia keeps (in the marks file a run
left): it is counted once as `retention` and said in one log line.

vuegraf runs as a child (tests/harness/virtual_vuegraf.py: the production wiring, the store
behind the durable queue, marks in the state dir, /metrics) following a clock file this test
moves (tests/harness/lockstep.py), so no tick is ever late and the outcome does not depend
on the machine (vuegraf's back-off after the Emporia outage is stretched at random: the
kill lands a tick apart, the verdict is the same). InfluxDB's refusal is a TCP proxy in
front of it that closes its port.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import oracle
from harness.completeness import (
    Comparison,
    compare,
    earlier_run_points,
    seed_store,
    stored_points,
)
from harness.inprocess import run_daemon, simulator_config, write_simulator_config
from harness.lockstep import Lockstep
from harness.tcpproxy import TcpProxy
from servers import free_ports
from vuegraf.clock import FakeClock
from vuegraf.marks import MarksFile
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

HARNESS = Path(__file__).resolve().parents[1] / "harness" / "virtual_vuegraf.py"
SEED = 61
ZONE = oracle.NEW_YORK
NAMES = oracle.DEFAULT_NAMES
# 23:52 in New York: the hour and the local day end at 05:00 UTC, inside Emporia's outage.
T0 = datetime(2026, 11, 24, 4, 52, 20, tzinfo=UTC)
# An earlier run's newest points: each just before the bucket the first tick reads live.
SEEDED_MINUTE = datetime(2026, 11, 24, 4, 50, tzinfo=UTC)
SEEDED_HOUR = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
SEEDED_DAY = oracle.local_date(T0, ZONE) - timedelta(days=2)
# 1. getDeviceListUsages answers 502: the ticks of 04:59:05 and 05:00:05 fail.
EMPORIA_DOWN = (datetime(2026, 11, 24, 4, 58, 30, tzinfo=UTC),
                datetime(2026, 11, 24, 5, 0, 30, tzinfo=UTC))
# 2. SIGKILL with the outage's holes half filled: at the sixth usage request after Emporia
#    is back. The first tick that asks again reads the minute, hour and day live and the
#    settled past minutes (one request each); vuegraf's back-off after the outage varies
#    by a tick at random, so the sixth is a past minute's request or the next tick's live
#    one, with the outage's last minute still to fill either way. The restart comes 90 s
#    later.
KILL_AT_REQUEST = 6
DOWN = timedelta(seconds=90)
# 3. InfluxDB refuses connections: the ticks of 05:09:05 and 05:10:05 cannot write.
INFLUX_DOWN = (datetime(2026, 11, 24, 5, 8, 30, tzinfo=UTC),
               datetime(2026, 11, 24, 5, 10, 30, tzinfo=UTC))
LAST_RECOVERY = max(EMPORIA_DOWN[1], INFLUX_DOWN[1])
CYCLES = 3  # ticks after the last recovery by which everything must be stored
# Every minute from the one after the seeded minute to the one the last recovery falls in.
MINUTES = (SEEDED_MINUTE + timedelta(minutes=1), oracle.floor_to(LAST_RECOVERY, 60))
LOST = "vuegraf_lost_points_total"


def seed(config_path: Path, model: UsageModel) -> None:
    """What an earlier run left: its newest minute, hour and day of every channel, Balance
    and the grid channels included (it wrote those live), so the first start fills minutes,
    not 7 days."""
    config = simulator_config(config_path.parent, "http://unused", _settings(config_path))
    seed_store(
        config,
        earlier_run_points(
            model, "Home", SEEDED_MINUTE, SEEDED_HOUR, SEEDED_DAY, ZONE, live_only_too=True
        ),
    )


def _settings(config_path: Path) -> dict[str, object]:
    return {k: v for k, v in json.loads(config_path.read_text()).items()
            if k in ("influxDb", "prometheus")}


class Child:
    """The vuegraf child of one run, following the lockstep clock."""

    def __init__(self, tmp_path: Path, config: Path, lockstep: Lockstep) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.lockstep = lockstep
        self.run = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.tmp_path / f"run{self.run}.log"

    def start(self) -> None:
        self.run += 1
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HARNESS), str(self.config), str(self.lockstep.clock),
                 "--follow", "v"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )
        self.lockstep.adopt("v", self.proc)

    def describe(self, _name: str = "v") -> str:
        lines = self.log.read_text(errors="replace").splitlines()[-25:]
        return f"\n--- run {self.run}:\n" + "\n".join(lines)

    def run_until(self, t: datetime) -> None:
        """Time moves to `t`; returns once the child waits for a later time."""
        self.lockstep.run_until(t, describe=self.describe)
        self.lockstep.wait_parked(describe=self.describe)

    def kill9_at_usage_request(self, sim: SimulatorServer, count: int) -> datetime:
        """Time moves on tick by tick until the child sends its `count`th getDeviceListUsages
        request from now on, which SIGKILLs it before it is answered; returns the time of
        the tick it died in."""
        killed = threading.Event()
        seen = 0

        def kill(endpoint: str) -> None:
            nonlocal seen
            if endpoint != "getDeviceListUsages" or killed.is_set():
                return
            seen += 1
            if seen == count:
                assert self.proc is not None
                os.kill(self.proc.pid, signal.SIGKILL)
                killed.set()

        sim.on_request = kill
        self.lockstep.expect_exit("v")
        try:
            while not killed.is_set():
                parked = self.lockstep.wait_parked(describe=self.describe)
                if not killed.is_set():
                    self.lockstep.set(min(parked.values()))
        finally:
            sim.on_request = None
        assert self.proc is not None
        assert self.proc.wait(timeout=60) == -signal.SIGKILL, self.describe()
        self.lockstep.procs.pop("v", None)
        self.lockstep.doomed.discard("v")
        return self.lockstep.now()

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=120) == 0, self.describe()
        self.lockstep.drop("v")

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def lost_points(port: int) -> dict[tuple[str, ...], float]:
    """`vuegraf_lost_points_total` as the child's /metrics says it, by label values; the
    family must be there (an empty one is "nothing lost")."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    family = families.get(LOST.removesuffix("_total"))
    assert family is not None, f"no {LOST} in /metrics"
    return {
        tuple(s.labels[k] for k in ("account", "scale", "channel", "reason")): s.value
        for s in family.samples
        if s.name == LOST
    }


def check_all(client: object, model: UsageModel) -> list[Comparison]:
    """Minutes, the hour and the local day of every channel (computed ones included) from
    the seeded ones on, against the simulator's model."""
    day = SEEDED_DAY + timedelta(days=1)
    day_window = (oracle.midnight(day, ZONE), oracle.midnight(day + timedelta(days=2), ZONE))
    hour_window = (SEEDED_HOUR + timedelta(hours=1), SEEDED_HOUR + timedelta(hours=3))
    minute_window = (MINUTES[0], MINUTES[1] + timedelta(minutes=1))
    live_only = [NAMES[k] for k in oracle.LIVE_ONLY]
    results = []
    for scale, tag, (since, until) in (
        ("1MIN", "False", minute_window),
        ("1H", "Hour", hour_window),
        ("1D", "Day", day_window),
    ):
        want = oracle.served(NAMES, model, scale, since, until, ZONE, live_only_too=True)
        # Day points are stamped 23:59:59 local: read on to the end of the day after.
        got = stored_points(client, "Home", tag, since, until + timedelta(days=1))
        results.append(compare(f"{scale} points", got, want))
        computed = oracle.served(NAMES, model, scale, since, until, ZONE, True, live_only)
        results.append(compare(f"{scale} points of {', '.join(live_only)}", got, computed))
    return results


@pytest.fixture
def proxy(influxdb_v1_db) -> Iterator[TcpProxy]:
    server, _database = influxdb_v1_db
    with TcpProxy(server.port) as p:
        yield p


def test_usage_502_then_kill9_then_influx_refused_leaves_no_hole_balance_included(
    influxdb_v1_db, proxy: TcpProxy, tmp_path: Path
) -> None:
    server, database = influxdb_v1_db
    model = UsageModel(Scenario.default(), seed=SEED)
    (metrics_port,) = free_ports(1)
    lockstep = Lockstep(tmp_path / "clock", T0)
    with SimulatorServer(seed=SEED, now=lockstep.now) as sim:
        config = write_simulator_config(
            tmp_path,
            sim.url,
            {
                "influxDb": {"host": "127.0.0.1", "port": proxy.port, "database": database,
                             "timeout": 3000},
                "prometheus": {"port": metrics_port},
            },
        )
        seed(config, model)
        sim.log_requests = True
        sim.add_fault_window(502, *EMPORIA_DOWN, endpoints=["getDeviceListUsages"])
        child = Child(tmp_path, config, lockstep)
        client = server.client(database)
        cycles = []  # (tick time, verdicts) after the last recovery
        try:
            child.start()
            child.run_until(EMPORIA_DOWN[1])
            lost_first_run = lost_points(metrics_port)
            killed_at = child.kill9_at_usage_request(sim, KILL_AT_REQUEST)
            lockstep.set(killed_at + DOWN)
            child.start()
            child.run_until(INFLUX_DOWN[0])
            proxy.cut()
            child.run_until(INFLUX_DOWN[1])
            proxy.forward()
            tick = oracle.floor_to(LAST_RECOVERY, 60) + timedelta(seconds=5)
            for _ in range(CYCLES):
                tick += timedelta(minutes=1)
                child.run_until(tick + timedelta(seconds=1))
                results = check_all(client, model)
                cycles.append((tick, results))
                if all(r.ok for r in results):
                    break
            lost_second_run = lost_points(metrics_port)
            child.stop()
        finally:
            child.kill_if_running()
            client.close()
    report = [f"after the tick of {t:%H:%M:%S}: " + "; ".join(map(str, rs)) for t, rs in cycles]
    print("\n".join(report))
    _t, final = cycles[-1]
    for result in final:
        assert result.ok, "\n".join(report)
    minutes, computed_minutes, hours, computed_hours, days, computed_days = final
    # 20 minutes of 32 channels, two hours and two days of each (the gappy plug aside); the
    # four computed channels in each.
    assert minutes.expected >= 20 * 31 and hours.expected >= 62 and days.expected >= 62
    assert computed_minutes.expected == 20 * 4, str(computed_minutes)
    assert computed_hours.expected == 8 and computed_days.expected == 8
    assert lost_first_run == {}, lost_first_run
    assert lost_second_run == {}, lost_second_run
    # The outages happened as planned: Emporia answered 502, InfluxDB was refused.
    refused = [r for r in sim.requests_seen() if r.status == 502]
    assert refused and {r.endpoint for r in refused} == {"getDeviceListUsages"}
    assert "queuing points until it is back" in (tmp_path / "run2.log").read_text()


# -- a hole older than Emporia keeps ---------------------------------------------------------

BALANCE = (1001, "Balance")
T1 = datetime(2026, 11, 24, 14, 0, 20, tzinfo=UTC)
# A Balance hole a run left 8 days ago: 45 minutes that Emporia no longer serves.
OLD_HOLE = (datetime(2026, 11, 16, 9, 0, tzinfo=UTC), datetime(2026, 11, 16, 9, 45, tzinfo=UTC))
OLD_HOLE_MINUTES = 45


def test_a_balance_hole_older_than_retention_is_counted_once_and_logged_once(
    influxdb_v1_db, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server, database = influxdb_v1_db
    model = UsageModel(Scenario.default(), seed=SEED)
    seeded = oracle.floor_to(T1, 60) - timedelta(minutes=2)
    end = T1 + timedelta(minutes=6)
    clock = FakeClock(T1, stop_after=end)
    stats = Stats()
    counts = []

    def note_lost(_finished: datetime) -> None:
        counts.append(dict(stats.snapshot().lost))

    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        config = simulator_config(
            tmp_path,
            sim.url,
            {"influxDb": {"host": server.host, "port": server.port, "database": database}},
        )
        seed_store(
            config,
            earlier_run_points(
                model, "Home", seeded, oracle.floor_to(T1, 3600) - timedelta(hours=2),
                oracle.local_date(T1, ZONE) - timedelta(days=2), ZONE, live_only_too=True,
            ),
        )
        plant_marks(tmp_path / "state", seeded + timedelta(minutes=1))
        with caplog.at_level(logging.INFO):
            run_daemon(config, clock, stats, [note_lost])

    # (The gappy plug's nulls are counted too, as `no_value`: Emporia's news, not this.)
    want = {("Home", "1MIN", "Main Panel-Balance", "retention"): OLD_HOLE_MINUTES}
    assert len(counts) == 7, counts
    for after_cycle in counts:
        assert {k: n for k, n in after_cycle.items() if k[3] == "retention"} == want, counts
    said = [r for r in caplog.records
            if r.levelno >= logging.INFO and "older than Emporia keeps" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING
    message = said[0].getMessage()
    assert f"{OLD_HOLE_MINUTES} minute values of 1 series" in message, message
    assert "older than Emporia keeps them" in message, message
    # Its time range, in the config's zone: 04:00 to 04:45 in New York on November 16.
    assert "2026-11-16T04:00:00-05:00" in message and "2026-11-16T04:45:00-05:00" in message


def plant_marks(state_dir: Path, open_from: datetime) -> None:
    """The marks file an earlier run left: Main Panel's Balance lacked OLD_HOLE (and nothing
    else up to its newest stored minute), in the file's documented format."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = MarksFile(state_dir, "Home").path
    assert path is not None
    key = f"{BALANCE[0]}|{BALANCE[1]}"
    start, stop = (t.timestamp() for t in OLD_HOLE)
    path.write_text(json.dumps({
        "account": "Home",
        "marks": {"1MIN": {key: start}},
        "holes": {"1MIN": {key: {"closed": [[start, stop]], "open_from": open_from.timestamp()}}},
    }))


# -- a kill inside the first tick ---------------------------------------------------------------

T2 = datetime(2026, 11, 24, 4, 35, 20, tzinfo=UTC)
SEEDED_2 = datetime(2026, 11, 24, 2, 33, tzinfo=UTC)  # two hours before the first live minute


def test_kill9_inside_the_first_tick_keeps_the_balance_hole_behind_its_live_minute(
    influxdb_v1_db, tmp_path: Path
) -> None:
    """Every channel's newest stored minute is two hours old. The first tick writes the live
    minute (Balance's too) and starts filling the two hours; SIGKILL at its fifth usage
    request. The restart must still fill Balance's two hours, although the store's newest
    Balance point is now the live minute written in front of the hole."""
    server, database = influxdb_v1_db
    model = UsageModel(Scenario.default(), seed=SEED)
    lockstep = Lockstep(tmp_path / "clock", T2)
    with SimulatorServer(seed=SEED, now=lockstep.now) as sim:
        config = write_simulator_config(
            tmp_path, sim.url,
            {"influxDb": {"host": server.host, "port": server.port, "database": database}},
        )
        seed_store(
            simulator_config(tmp_path, sim.url, _settings(config)),
            earlier_run_points(
                model, "Home", SEEDED_2, oracle.floor_to(T2, 3600) - timedelta(hours=2),
                oracle.local_date(T2, ZONE) - timedelta(days=2), ZONE, live_only_too=True,
            ),
        )
        child = Child(tmp_path, config, lockstep)
        usage_requests = 0

        def kill_at_the_fifth(endpoint: str) -> None:
            nonlocal usage_requests
            if endpoint == "getDeviceListUsages":
                usage_requests += 1
                if usage_requests == 5:
                    assert child.proc is not None
                    os.kill(child.proc.pid, signal.SIGKILL)

        try:
            sim.on_request = kill_at_the_fifth
            child.start()
            assert child.proc is not None
            assert child.proc.wait(timeout=120) == -signal.SIGKILL, child.describe()
            lockstep.drop("v")
            sim.on_request = None
            lockstep.set(T2 + timedelta(minutes=10))
            child.start()
            child.run_until(T2 + timedelta(minutes=20))
            child.stop()
        finally:
            child.kill_if_running()
    client = server.client(database)
    since, until = SEEDED_2 + timedelta(minutes=1), oracle.floor_to(T2, 60)
    got = stored_points(client, "Home", "False", since, until)
    client.close()
    live_only = [NAMES[k] for k in oracle.LIVE_ONLY]
    charts = compare("minutes of the chart channels", got,
                     oracle.served(NAMES, model, "1MIN", since, until, ZONE))
    computed = compare("minutes of Balance and the grid channels", got,
                       oracle.served(NAMES, model, "1MIN", since, until, ZONE, True, live_only))
    print(charts, computed, sep="\n")
    assert charts.ok and charts.expected >= 121 * 27, str(charts)
    assert computed.ok and computed.expected == 121 * 4, str(computed)
