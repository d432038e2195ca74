"""A store that cannot answer the read back costs the backfill at most: never the collection,
the hour and day points, or the health.

Virtual time (FakeClock, the Emporia simulator answering as of it), the production sinks
(`build_sinks`: the store behind the durable queue in the state directory), the health file
as `vuegraf.cli.run` wires it, and real InfluxDB 1.x storage:

- A `version: 2` config against a stand-in InfluxDB 2 (tests/harness/influx2_proxy.py) that
  takes writes into a real InfluxDB 1.x and answers every other request `501 Not
  Implemented`, as a store without a read API may. Every cycle collects, hour and day points
  arrive at their rollovers, the health file stays healthy, one WARNING says why holes are
  filled without the store. A restart after an outage fills the outage from the marks the
  first run saved.
- A v1 config whose user may write but not read (403 on the read back) until, after the
  first cycle, the admin grants reading too: the read is asked again at the next tick, and the hole
  between the previous run and this start, which only the store knows of, is filled.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from harness import oracle
from harness.completeness import compare, earlier_run_points, seed_store, stored_points
from harness.influx2_proxy import Influx2Proxy
from harness.inprocess import run_daemon, simulator_config
from servers import InfluxV1Server
from vuegraf.clock import FakeClock
from vuegraf.config import Config
from vuegraf.health import HealthFile
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 33
TOKEN = "no-reads-token"
# 23:50 in New York: the UTC hour and the local day both roll over at 05:00 UTC, inside the run.
T0 = datetime(2026, 11, 23, 4, 50, 20, tzinfo=UTC)
SETTLE = timedelta(minutes=5)
NAMES = oracle.DEFAULT_NAMES  # no `devices` in the config
ZONE = oracle.NEW_YORK  # the config's timezone


class Cycles:
    """After-cycle hook: the health file's verdict and the cycle count, every cycle."""

    def __init__(self, health: HealthFile) -> None:
        self.health = health
        self.statuses: list[str] = []

    def __call__(self, finished: datetime) -> None:
        self.health.update(finished)
        self.statuses.append(json.loads(self.health.path.read_text())["status"])


def run_with_health(
    config: Config,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    on_cycle: Sequence[Callable[[datetime], None]] = (),
) -> Cycles:
    """One vuegraf process with its health file; returns what each of its cycles did."""
    stats = Stats()
    assert config.state_dir is not None
    cycles = Cycles(HealthFile(config.state_dir, stats, 3, config.update_interval_secs))
    with caplog.at_level(logging.INFO, logger="vuegraf"):
        run_daemon(config, clock, stats, [cycles, *on_cycle])
    return cycles


def cycle_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Cycle at ")]


def assert_every_cycle_collected(cycles: Cycles, caplog: pytest.LogCaptureFixture, n: int) -> None:
    lines = cycle_lines(caplog)
    assert len(lines) == len(cycles.statuses) >= n
    assert all(re.search(r" points from 1 account\(s\) ", line) for line in lines), lines
    assert set(cycles.statuses) == {"healthy"}, cycles.statuses


# -- no read API at all ------------------------------------------------------------------------


def test_v2_store_answering_501_to_reads_still_collects_everything(
    influxdb_v1_db: tuple[InfluxV1Server, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, database = influxdb_v1_db
    client = server.client(database)
    model = UsageModel(Scenario.default(), seed=SEED)
    end_a = T0 + timedelta(minutes=25)
    restart = end_a + timedelta(minutes=60)
    end_b = restart + timedelta(minutes=12)
    clock = {"now": FakeClock(T0, stop_after=end_a)}
    with (
        Influx2Proxy(server.url, TOKEN, reads="501") as proxy,
        SimulatorServer(seed=SEED, now=lambda: clock["now"].now()) as sim,
    ):
        influx = {
            "version": 2,
            "url": proxy.url,
            "org": "home",
            "bucket": database,
            "token": TOKEN,
        }
        config = simulator_config(tmp_path, sim.url, {"influxDb": influx})
        # 1. A first start with an empty state directory: nothing to go by but the lookback.
        cycles = run_with_health(config, clock["now"], caplog)
        assert_every_cycle_collected(cycles, caplog, 25)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        message = warnings[0].getMessage()
        assert message.startswith("Account Home: influxdb-v2 cannot answer the read back")
        assert "no read API answered: InfluxQL /query: HTTP 501" in message
        assert "Prometheus API /api/v1/query: HTTP 501" in message
        assert "backfill from the store is off" in message
        assert "the lookback (no marks saved by a last run)" in message
        # Each read API was tried once; the answer was remembered for the other scales.
        assert proxy.paths().count("/query") == 1
        assert proxy.paths().count("/api/v1/query") == 1

        # Live minutes every cycle, and what the 7-day lookback filled before them.
        settled_a = end_a.replace(second=0) - SETTLE
        since = T0.replace(minute=0, second=0) - timedelta(hours=12)
        minutes = compare(
            "minute points",
            stored_points(client, "Home", "False", since, settled_a),
            oracle.served(NAMES, model, "1MIN", since, settled_a, ZONE),
        )
        assert minutes.ok and minutes.expected > 28 * 12 * 60, str(minutes)
        # The hour that ended at 05:00 UTC (live) and the day before (filled).
        hours_until = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
        hours_since = hours_until - timedelta(hours=24)
        hours = compare(
            "hour points",
            stored_points(client, "Home", "Hour", hours_since, hours_until),
            oracle.served(NAMES, model, "1H", hours_since, hours_until, ZONE),
        )
        assert hours.ok and hours.expected > 0, str(hours)
        # The local day that ended at 00:00 New York time (05:00 UTC), live, and the five
        # days before it, filled from the lookback.
        days = compare(
            "day points",
            stored_points(
                client, "Home", "Day", datetime(2026, 11, 16, tzinfo=UTC), end_a + timedelta(days=1)
            ),
            oracle.served(
                NAMES,
                model,
                "1D",
                oracle.midnight(date(2026, 11, 17), ZONE),
                oracle.midnight(date(2026, 11, 23), ZONE),
                ZONE,
            ),
        )
        assert days.ok and days.expected > 0, str(days)

        # 2. An hour later vuegraf starts again. The store still cannot say where the first
        #    run ended; the marks that run saved can.
        caplog.clear()
        clock["now"] = FakeClock(restart, stop_after=end_b)
        sim.reset_stats()
        cycles = run_with_health(config, clock["now"], caplog)
        requests_b = sim.stats()["requests"]
    assert_every_cycle_collected(cycles, caplog, 12)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "the marks the last run saved in" in said[0], said
    # The outage hour is filled, one minute-chart request per channel (plus the gappy plug's
    # nulls), not the 7 days a restart without marks would refill.
    settled_b = end_b.replace(second=0) - SETTLE
    minutes = compare(
        "minute points after the restart",
        stored_points(client, "Home", "False", settled_a, settled_b),
        oracle.served(NAMES, model, "1MIN", settled_a, settled_b, ZONE),
    )
    assert minutes.ok and minutes.expected > 0, str(minutes)
    assert requests_b["getChartUsage"].get("1MIN", 0) <= 28 + 10, requests_b
    client.close()


# -- a read refused at first ---------------------------------------------------------------


# The previous run ended an hour before this one starts: its newest points.
PREVIOUS_MINUTE = datetime(2026, 11, 23, 3, 49, tzinfo=UTC)
PREVIOUS_HOUR = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
PREVIOUS_DAY = date(2026, 11, 21)


def test_read_refused_at_first_is_asked_again_and_fills_the_hole_before_the_start(
    influxdb_v1_auth: InfluxV1Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = influxdb_v1_auth
    server.admin("CREATE DATABASE vue")
    server.admin("CREATE USER writer WITH PASSWORD 'writer-pw'")
    server.admin("GRANT WRITE ON vue TO writer")
    model = UsageModel(Scenario.default(), seed=SEED)
    end = T0 + timedelta(minutes=20)
    clock = FakeClock(T0, stop_after=end)
    granted: list[datetime] = []

    def grant_read_after_the_first_cycle(finished: datetime) -> None:
        if not granted:
            server.admin("GRANT ALL ON vue TO writer")  # READ and WRITE (a grant replaces)
            granted.append(finished)

    def influx(user: str | None, password: str | None) -> dict[str, object]:
        return {
            "host": server.host,
            "port": server.port,
            "database": "vue",
            "user": user,
            "pass": password,
        }

    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        # What the previous run left: its newest minute, hour and day of every channel. The
        # state directory stays empty: no marks, only the store knows the previous run.
        seed_store(
            simulator_config(
                tmp_path, sim.url, {"influxDb": influx(server.username, server.password)}
            ),
            earlier_run_points(model, "Home", PREVIOUS_MINUTE, PREVIOUS_HOUR, PREVIOUS_DAY),
        )
        config = simulator_config(tmp_path, sim.url, {"influxDb": influx("writer", "writer-pw")})
        cycles = run_with_health(config, clock, caplog, [grant_read_after_the_first_cycle])
        minute_charts = sim.stats()["requests"]["getChartUsage"].get("1MIN", 0)

    assert granted
    assert_every_cycle_collected(cycles, caplog, 20)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    read_warnings = [w for w in warnings if "read back" in w]
    assert len(read_warnings) == 1, warnings
    assert read_warnings[0].startswith(
        "Account Home: cannot read back from influxdb-v1 (InfluxQL /query: HTTP 403: "
        "error authorizing query"
    )
    assert "rejected the write" not in caplog.text
    recovered = [m for m in (r.getMessage() for r in caplog.records) if "read back from" in m
                 and "after" in m]
    assert recovered == ["Account Home: read back from influxdb-v1 after 1 failed attempts; "
                         "filling holes"]

    # The hour between the previous run and this start is filled: the store's answer came a
    # tick late, after this process had written its first live minute, and still placed the
    # hole (the read stops before that minute). One chart request per channel did it; the
    # 7-day lookback (no marks to go by) would have taken 14.
    client = server.client("vue")
    settled = end.replace(second=0) - SETTLE
    minutes = compare(
        "minute points",
        stored_points(client, "Home", "False", PREVIOUS_MINUTE, settled),
        oracle.served(NAMES, model, "1MIN", PREVIOUS_MINUTE, settled, ZONE),
    )
    hours_until = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    hours = compare(
        "hour points",
        stored_points(client, "Home", "Hour", PREVIOUS_HOUR, hours_until),
        oracle.served(NAMES, model, "1H", PREVIOUS_HOUR, hours_until, ZONE),
    )
    client.close()
    assert minutes.ok and minutes.expected > 0, str(minutes)
    assert hours.ok and hours.expected > 0, str(hours)
    assert minute_charts <= 28 + 10
