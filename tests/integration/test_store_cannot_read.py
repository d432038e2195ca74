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
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from harness.influx2_proxy import Influx2Proxy
from harness.model_points import (
    chart_channels,
    day_points,
    hour_points,
    influx_points,
    minute_points,
    missing_or_wrong,
)
from servers import InfluxV1Server, require_binary
from vuegraf.clock import FakeClock
from vuegraf.config import Config, parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.health import HealthFile
from vuegraf.model import Point, Scale
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.sinks.factory import build_sinks, build_store
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 33
TOKEN = "no-reads-token"
# 23:50 in New York: the UTC hour and the local day both roll over at 05:00 UTC, inside the run.
T0 = datetime(2026, 11, 23, 4, 50, 20, tzinfo=UTC)
SETTLE = timedelta(minutes=5)


class Cycles:
    """After-cycle hook: the health file's verdict and the cycle count, every cycle."""

    def __init__(self, health: HealthFile) -> None:
        self.health = health
        self.statuses: list[str] = []

    def __call__(self, finished: datetime) -> None:
        self.health.update(finished)
        self.statuses.append(json.loads(self.health.path.read_text())["status"])


def run_daemon(config: Config, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> Cycles:
    """One vuegraf process; returns what each of its cycles did."""
    stats = Stats()
    assert config.state_dir is not None
    cycles = Cycles(HealthFile(config.state_dir, stats, 3, config.update_interval_secs))
    accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
    sinks = build_sinks(config, stats=stats, clock=clock)
    daemon = Daemon(config, accounts, sinks, clock, stats=stats, on_cycle=[cycles])
    with caplog.at_level(logging.INFO, logger="vuegraf"):
        daemon.run()
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
        config = parse_config(
            {
                "influxDb": {
                    "version": 2,
                    "url": proxy.url,
                    "org": "home",
                    "bucket": database,
                    "token": TOKEN,
                },
                "accounts": [
                    {
                        "name": "Home",
                        "email": "me@example.com",
                        "password": "pw",
                        "simulatorUrl": sim.url,
                    }
                ],
                "timezone": "America/New_York",
                "stateDir": "state",
            },
            tmp_path / "vuegraf.json",
        )
        # 1. A first start with an empty state directory: nothing to go by but the lookback.
        cycles = run_daemon(config, clock["now"], caplog)
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
        want = minute_points(model, since, settled_a)
        assert len(want) > 28 * 12 * 60
        got = influx_points(client, "Home", "False", since, settled_a)
        assert missing_or_wrong(got, want) == []
        # The hour that ended at 05:00 UTC (live) and the day before (filled).
        hours_until = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
        hours_since = hours_until - timedelta(hours=24)
        assert missing_or_wrong(
            influx_points(client, "Home", "Hour", hours_since, hours_until),
            hour_points(model, hours_since, hours_until),
        ) == []
        # The local day that ended at 00:00 New York time (05:00 UTC), live, and the days
        # before it, filled from the lookback.
        days = [date(2026, 11, 22) - timedelta(days=n) for n in range(6)]
        assert missing_or_wrong(
            influx_points(
                client, "Home", "Day", datetime(2026, 11, 16, tzinfo=UTC), end_a + timedelta(days=1)
            ),
            day_points(model, days),
        ) == []

        # 2. An hour later vuegraf starts again. The store still cannot say where the first
        #    run ended; the marks that run saved can.
        caplog.clear()
        clock["now"] = FakeClock(restart, stop_after=end_b)
        sim.reset_stats()
        cycles = run_daemon(config, clock["now"], caplog)
        requests_b = sim.stats()["requests"]
    assert_every_cycle_collected(cycles, caplog, 12)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "the marks the last run saved in" in said[0], said
    # The outage hour is filled, one minute-chart request per channel (plus the gappy plug's
    # nulls), not the 7 days a restart without marks would refill.
    settled_b = end_b.replace(second=0) - SETTLE
    want = minute_points(model, settled_a, settled_b)
    got = influx_points(client, "Home", "False", settled_a, settled_b)
    assert missing_or_wrong(got, want) == []
    assert requests_b["getChartUsage"].get("1MIN", 0) <= 28 + 10, requests_b
    client.close()


# -- a read refused at first ---------------------------------------------------------------


@pytest.fixture
def influx_auth() -> Iterator[InfluxV1Server]:
    with InfluxV1Server(require_binary("influxd"), auth=True) as server:
        yield server


def admin(server: InfluxV1Server, statement: str) -> None:
    assert server.username is not None and server.password is not None
    response = requests.post(
        f"{server.url}/query",
        params={"q": statement},
        auth=(server.username, server.password),
        timeout=30,
    )
    assert response.status_code == 200 and '"error"' not in response.text, response.text


# The previous run ended an hour before this one starts: its newest points.
PREVIOUS_MINUTE = datetime(2026, 11, 23, 3, 49, tzinfo=UTC)
PREVIOUS_HOUR = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def test_read_refused_at_first_is_asked_again_and_fills_the_hole_before_the_start(
    influx_auth: InfluxV1Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = influx_auth
    admin(server, "CREATE DATABASE vue")
    admin(server, "CREATE USER writer WITH PASSWORD 'writer-pw'")
    admin(server, "GRANT WRITE ON vue TO writer")
    model = UsageModel(Scenario.default(), seed=SEED)
    end = T0 + timedelta(minutes=20)
    clock = FakeClock(T0, stop_after=end)
    granted: list[datetime] = []

    def grant_read_after_the_first_cycle(finished: datetime) -> None:
        if not granted:
            admin(server, "GRANT ALL ON vue TO writer")  # READ and WRITE (a grant replaces)
            granted.append(finished)

    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        data: dict[str, Any] = {
            "influxDb": {
                "host": server.host,
                "port": server.port,
                "database": "vue",
                "user": server.username,
                "pass": server.password,
            },
            "accounts": [
                {"name": "Home", "email": "me@example.com", "password": "pw",
                 "simulatorUrl": sim.url}
            ],
            "timezone": "America/New_York",
            "stateDir": "state",  # empty: no marks, only the store knows the previous run
        }
        # What the previous run left: its newest minute, hour and day of every channel.
        store = build_store(parse_config(data, tmp_path / "admin.json"))
        store.open()
        store.write(
            [
                Point("Home", device, name, scale, stamp, watts)
                for gid, num, name in chart_channels(model)
                for device in [next(d for g, _n, d, _e, _c in model.channels() if g == gid)]
                for scale, start, stamp, factor in (
                    (Scale.MINUTE, PREVIOUS_MINUTE, PREVIOUS_MINUTE, 60_000.0),
                    (Scale.HOUR, PREVIOUS_HOUR, PREVIOUS_HOUR, 1_000.0),
                    # Local day 2026-11-21: midnight 05:00 UTC, stamped 23:59:59 local.
                    (
                        Scale.DAY,
                        datetime(2026, 11, 21, 5, 0, tzinfo=UTC),
                        datetime(2026, 11, 22, 4, 59, 59, tzinfo=UTC),
                        1_000.0,
                    ),
                )
                for kwh in [model.kwh(gid, num, scale.value, start)]
                if kwh is not None
                for watts in [kwh * factor]
            ]
        )
        store.close()

        data["influxDb"] = {**data["influxDb"], "user": "writer", "pass": "writer-pw"}
        config = parse_config(data, tmp_path / "vuegraf.json")
        stats = Stats()
        assert config.state_dir is not None
        cycles = Cycles(HealthFile(config.state_dir, stats, 3, config.update_interval_secs))
        accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
        sinks = build_sinks(config, stats=stats, clock=clock)
        daemon = Daemon(
            config,
            accounts,
            sinks,
            clock,
            stats=stats,
            on_cycle=[cycles, grant_read_after_the_first_cycle],
        )
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            daemon.run()
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
    since = PREVIOUS_MINUTE
    settled = end.replace(second=0) - SETTLE
    want = minute_points(model, since, settled)
    assert missing_or_wrong(influx_points(client, "Home", "False", since, settled), want) == []
    hours_until = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    assert missing_or_wrong(
        influx_points(client, "Home", "Hour", PREVIOUS_HOUR, hours_until),
        hour_points(model, PREVIOUS_HOUR, hours_until),
    ) == []
    client.close()
    assert minute_charts <= 28 + 10
