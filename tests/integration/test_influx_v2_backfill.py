"""The InfluxDB v2 sink fills holes after an outage, reading back from a real server.

vuegraf runs 20 minutes, is stopped for 90, and runs 15 more (virtual time, FakeClock; the
Emporia simulator answers as of that time). Before the second run the marks file is deleted,
so only the store can say where the first run ended: were it not read, the second run would
refill all 7 days (28 channels x 14 minute-chart requests) instead of one request per channel.
Afterwards every minute and hour of the simulator's model is in the store with its value.

Two real servers behind the same `version: 2` config:
- InfluxDB 1.x behind tests/harness/influx2_proxy.py, which maps `/api/v2/write` to 1.x
  `/write` and passes `/query` through: the sink writes with its token and reads back with
  InfluxQL over `/query`, as it would from InfluxDB 2's compatibility API or InfluxDB 3;
- VictoriaMetrics, written directly through its `/api/v2/write`; it answers `/query` with a
  canned reply, so the sink reads back through its Prometheus API (MetricsQL).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from harness import oracle
from harness.completeness import (
    Stored,
    compare,
    earlier_run_points,
    seed_store,
    stored_points,
    victoria_points,
)
from harness.influx2_proxy import Influx2Proxy
from harness.inprocess import run_daemon, simulator_config
from vuegraf.clock import FakeClock
from vuegraf.config import Config
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel

pytestmark = pytest.mark.integration

SEED = 61
TOKEN = "v2-backfill-token"
T0 = datetime(2026, 11, 20, 14, 0, 20, tzinfo=UTC)  # 09:00 in New York, the scenario's zone
RUN_A = timedelta(minutes=20)
DOWN = timedelta(minutes=90)
RUN_B = timedelta(minutes=15)
# Minutes younger than this at the end may still be settling (a null from the gappy plug).
SETTLE = timedelta(minutes=5)
# The newest points stored before the first start (so its own fill is short): the minute
# two before T0, the hour before T0's, the local day before T0's.
SEEDED_MINUTE = datetime(2026, 11, 20, 13, 58, tzinfo=UTC)
SEEDED_HOUR = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)
SEEDED_DAY = date(2026, 11, 19)
NAMES = oracle.DEFAULT_NAMES  # no `devices` in the config
ZONE = oracle.NEW_YORK  # the config's timezone


@dataclass
class Target:
    url: str
    bucket: str
    account: str
    reader: str  # the read API the sink should settle on
    stored: Callable[[str, datetime, datetime], Stored]  # (scale tag, since, until)
    settle: Callable[[], None]


@pytest.fixture(params=["InfluxDB 1.x behind the v2 write API", "VictoriaMetrics"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "VictoriaMetrics":
        vm = request.getfixturevalue("victoria_metrics")
        account = f"Home-{uuid.uuid4().hex[:8]}"  # the server is shared by the session
        yield Target(
            vm.url,
            "energy",  # VictoriaMetrics ignores it
            account,
            "Prometheus API /api/v1/query",
            lambda tag, since, until: victoria_points(vm, account, tag, since, until),
            vm.force_flush,
        )
        return
    server, database = request.getfixturevalue("influxdb_v1_db")
    client = server.client(database)
    with Influx2Proxy(server.url, TOKEN) as proxy:
        yield Target(
            proxy.url,
            database,  # the proxy writes bucket B into database B
            "Home",
            "InfluxQL /query",
            lambda tag, since, until: stored_points(client, "Home", tag, since, until),
            lambda: None,
        )
        assert ("GET", "/query") in proxy.requests
    client.close()


def make_config(target: Target, sim_url: str, tmp_path: Path) -> Config:
    influx = {
        "version": 2,
        "url": target.url,
        "org": "home",
        "bucket": target.bucket,
        "token": TOKEN,
    }
    return simulator_config(tmp_path, sim_url, {"influxDb": influx}, account=target.account)


def test_outage_then_restart_fills_every_hole_from_what_the_store_says(
    target: Target, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = UsageModel(Scenario.default(), seed=SEED)
    clock_a = FakeClock(T0, stop_after=T0 + RUN_A)
    restart = T0 + RUN_A + DOWN
    clock_b = FakeClock(restart, stop_after=restart + RUN_B)
    now = {"clock": clock_a}
    with SimulatorServer(seed=SEED, now=lambda: now["clock"].now()) as sim:
        config = make_config(target, sim.url, tmp_path)
        # The newest minute, hour and day before T0, as an earlier run would have left them.
        seed_store(
            config,
            earlier_run_points(model, target.account, SEEDED_MINUTE, SEEDED_HOUR, SEEDED_DAY),
        )
        target.settle()
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            run_daemon(config, clock_a)
            target.settle()  # in real life the 90 minutes of outage
            marks = list((tmp_path / "state").glob("marks-*.json"))
            assert marks, "the first run saved no marks"
            for path in marks:
                path.unlink()  # only the store can tell where the first run ended
            now["clock"] = clock_b
            sim.reset_stats()
            run_daemon(config, clock_b)
        requests_b = sim.stats()["requests"]

    end = clock_b.now()
    settled = end.replace(second=0) - SETTLE
    minutes = compare(
        "minute points",
        target.stored("False", SEEDED_MINUTE, settled),
        oracle.served(NAMES, model, "1MIN", SEEDED_MINUTE, settled, ZONE),
    )
    assert minutes.expected > 28 * 100
    hour_end = end.replace(minute=0, second=0)
    hours = compare(
        "hour points",
        target.stored("Hour", SEEDED_HOUR, hour_end),
        oracle.served(NAMES, model, "1H", SEEDED_HOUR, hour_end, ZONE),
    )
    days = compare(
        "day points",
        target.stored("Day", datetime(2026, 11, 19, tzinfo=UTC), end),
        oracle.served(
            NAMES,
            model,
            "1D",
            oracle.midnight(SEEDED_DAY, ZONE),
            oracle.midnight(SEEDED_DAY + timedelta(days=1), ZONE),
            ZONE,
        ),
    )
    for result in (minutes, hours, days):
        assert result.ok and result.expected > 0, str(result)

    # The second run read where the first had ended: the 90-minute hole cost one minute-chart
    # request per channel (a few more for the gappy plug's nulls), not seven days' worth.
    assert requests_b["getChartUsage"].get("1MIN", 0) <= 28 + 10, requests_b
    # Read through the API this server has, and never a warning about reading.
    assert f"influxdb-v2: reading back through {target.reader}" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "read" in w], warnings
