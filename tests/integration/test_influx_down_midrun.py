"""InfluxDB SIGKILLed for nine simulated minutes while the daemon runs: every minute point of
the outage arrives once it is back (none twice), the retry queue ends empty, and the log
says so once at ERROR and once at INFO with the replayed count.

The daemon runs in this process in virtual time (FakeClock) with the production sinks
(`build_sinks`: the InfluxDB store behind the durable queue), real pyemvue over HTTP to the
simulator, which shares the clock. The InfluxDB is this test's own, since it is killed.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from harness import oracle
from harness.completeness import compare, earlier_run_points, seed_store, stored_points
from harness.inprocess import run_daemon, simulator_config
from servers import InfluxV1Server, require_binary
from vuegraf.clock import FakeClock
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.sinks.queue import QueuedSink
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 52
T0 = datetime(2026, 11, 25, 10, 44, 20, tzinfo=UTC)
END = T0 + timedelta(minutes=40)
DOWN_AT = T0 + timedelta(minutes=12)  # the cycle ending at or after this kills InfluxDB
UP_AT = DOWN_AT + timedelta(minutes=9)  # ... and this one starts it again
DATABASE = "vue"
ZONE = oracle.NEW_YORK  # the config's timezone
NAMES = oracle.DEFAULT_NAMES  # no `devices` in the config


@pytest.fixture
def influx() -> Iterator[InfluxV1Server]:
    with InfluxV1Server(require_binary("influxd")) as server:
        yield server


def make_config(server, sim_url, tmp_path):
    influx = {"host": server.host, "port": server.port, "database": DATABASE, "timeout": 3000}
    return simulator_config(tmp_path, sim_url, {"influxDb": influx})


def seed(config, model):
    """The newest minute, hour and day before T0 of every chart channel are already stored,
    so the start-up fill is a few minutes, not seven days: this test is about the outage."""
    seed_store(
        config,
        earlier_run_points(
            model,
            "Home",
            oracle.floor_to(T0, 60) - timedelta(minutes=2),
            oracle.floor_to(T0, 3600) - timedelta(hours=1),
            oracle.local_date(T0, ZONE) - timedelta(days=1),
        ),
    )


def test_influxdb_killed_mid_run_loses_and_duplicates_nothing(influx, tmp_path, caplog):
    model = UsageModel(Scenario.default(), seed=SEED)
    clock = FakeClock(T0, stop_after=END)
    stats = Stats()
    outage = {}

    def take_influx_away(finished: datetime) -> None:
        if "down" not in outage and finished >= DOWN_AT:
            influx.kill()
            outage["down"] = finished
        elif "down" in outage and "up" not in outage and finished >= UP_AT:
            influx.start()
            outage["up"] = finished

    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        config = make_config(influx, sim.url, tmp_path)
        seed(config, model)
        with caplog.at_level(logging.INFO):
            sinks = run_daemon(config, clock, stats, [take_influx_away])

    assert set(outage) == {"down", "up"}
    client = influx.client(DATABASE)
    # Every point of every channel (Balance and the grid channels too: they were live
    # points, queued like the others) from the first live minute to the end, once each.
    first = T0.replace(second=0) - timedelta(minutes=1)
    last = END.replace(second=0) - timedelta(minutes=1)
    want = oracle.served(
        NAMES, model, "1MIN", first, last + timedelta(minutes=1), ZONE, live_only_too=True
    )
    got = stored_points(client, "Home", "False", first, last + timedelta(minutes=1))
    minutes = compare("minute points", got, want)
    # The outage itself: the minutes written while InfluxDB was down (a cycle writes the
    # minute before it; the first is the cycle after the kill, the last the one that
    # restarted it).
    down_first = outage["down"].replace(second=0)
    down_last = outage["up"].replace(second=0) - timedelta(minutes=1)
    in_outage = {
        k: v for k, v in want.items() if down_first.timestamp() <= k[1] <= down_last.timestamp()
    }
    outage_minutes = compare("minute points due during the outage", got, in_outage)
    # The hour that ended while it was down (10:00-11:00 UTC) was queued too.
    hour_want = oracle.served(
        NAMES,
        model,
        "1H",
        oracle.floor_to(T0, 3600),
        oracle.floor_to(END, 3600),
        ZONE,
        live_only_too=True,
    )
    hours = compare(
        "hour points",
        stored_points(client, "Home", "Hour", T0.replace(minute=0, second=0), END),
        hour_want,
    )
    client.close()
    print(minutes, outage_minutes, hours, sep="\n")

    assert minutes.ok, str(minutes)
    assert outage_minutes.ok and outage_minutes.expected >= 8 * 30, str(outage_minutes)
    assert hours.ok and hours.expected >= 30, str(hours)

    # The queue is empty, in memory and on disk.
    (store,) = sinks
    assert isinstance(store, QueuedSink)
    assert store.backlog == 0
    snapshot = stats.snapshot()
    assert snapshot.queue_depth == {"influxdb-v1": 0}
    with sqlite3.connect(tmp_path / "state" / "queue-influxdb-v1.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM points").fetchone()[0] == 0
    queued = snapshot.sink_points[("influxdb-v1", "queued")]
    assert snapshot.sink_points[("influxdb-v1", "replayed")] == queued
    assert ("influxdb-v1", "dropped") not in snapshot.sink_points
    assert ("influxdb-v1", "rejected") not in snapshot.sink_points
    # Exactly what was due in the outage went through the queue: its live minutes and the
    # hour that ended in it.
    assert queued == outage_minutes.expected + hours.expected

    # One ERROR when the outage began; one INFO when it ended, with the replayed count.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [errors[0].getMessage()]
    assert "influxdb-v1" in errors[0].getMessage()
    assert "queuing points until it is back" in errors[0].getMessage()
    recoveries = [r for r in caplog.records if "recovered after" in r.getMessage()]
    assert len(recoveries) == 1, [r.getMessage() for r in recoveries]
    assert recoveries[0].levelno == logging.INFO
    match = re.search(
        r"^influxdb-v1: recovered after \d+ failed writes \(.+\); "
        r"replayed (\d+) queued points$",
        recoveries[0].getMessage(),
    )
    assert match, recoveries[0].getMessage()
    assert int(match.group(1)) == queued


def test_influxdb_not_up_yet_at_start_then_the_whole_lookback_arrives(influx, tmp_path, caplog):
    """The docker-compose case: vuegraf starts while InfluxDB is still down (the database
    exists, empty). Live values and the start-up fill are queued meanwhile; once InfluxDB is
    up, the store is read and the fill completes: no hole anywhere in the 7 days."""
    model = UsageModel(Scenario.default(), seed=SEED)
    start = T0
    end = start + timedelta(minutes=30)
    up_at = start + timedelta(minutes=5)
    clock = FakeClock(start, stop_after=end)
    client = influx.client(DATABASE)
    client.create_database(DATABASE)
    client.close()
    influx.kill()

    def bring_influx_up(finished: datetime) -> None:
        if not influx.is_running() and finished >= up_at:
            influx.start()

    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        config = make_config(influx, sim.url, tmp_path)
        with caplog.at_level(logging.INFO):
            sinks = run_daemon(config, clock, Stats(), [bring_influx_up])

    assert influx.is_running()
    settled = end - timedelta(minutes=5)
    client = influx.client(DATABASE)
    results = []
    for scale, tag, since, until in (
        ("1MIN", "False", end - timedelta(days=7, minutes=-15), settled),
        (
            "1H",
            "Hour",
            oracle.floor_to(end - timedelta(days=7), 3600) + timedelta(hours=1),
            oracle.floor_to(settled, 3600),
        ),
        (
            "1D",
            "Day",
            oracle.midnight(oracle.local_date(end - timedelta(days=7), ZONE) + timedelta(days=1),
                            ZONE),
            oracle.day_start(settled, ZONE),
        ),
    ):
        want = oracle.served(NAMES, model, scale, since, until, ZONE)
        results.append(
            compare(
                f"{scale} points",
                # Day points are stamped 23:59:59 local: read a day further to see them all.
                stored_points(client, "Home", tag, since, until + timedelta(days=1)),
                want,
            )
        )
    client.close()
    print(*results, sep="\n")
    (store,) = sinks
    assert isinstance(store, QueuedSink)
    assert store.backlog == 0
    for result in results:
        assert result.ok and result.expected > 0, str(result)
