"""Emporia misbehaving for an hour of simulated time: 30 % of requests answer 500 and
10 % time out. No crash, no busy loop, and once it behaves again no hole is left.

Real pyemvue over HTTP to the simulator, real InfluxDB 1.x, virtual time (the only
real waiting is pyemvue's read timeout, set short here).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from harness import oracle
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.model import Point, Scale
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.sinks.factory import build_sinks
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 33
T0 = datetime(2026, 11, 22, 9, 0, 20, tzinfo=UTC)


def test_an_hour_of_500s_and_timeouts_then_no_hole(influxdb_v1_db, tmp_path, caplog):
    server, database = influxdb_v1_db
    model = UsageModel(Scenario.default(), seed=SEED)
    holder = {"clock": FakeClock(T0, stop_after=T0 + timedelta(hours=1))}
    with SimulatorServer(seed=SEED, now=lambda: holder["clock"].now(), error_rate=0.3,
                         timeout_rate=0.1, timeout_s=1.0) as sim:
        config = parse_config(
            {
                "influxDb": {"host": server.host, "port": server.port, "database": database},
                "accounts": [{"name": "Home", "email": "e", "password": "p",
                              "simulatorUrl": sim.url}],
            },
            tmp_path / "vuegraf.json",
        )
        oracle.check_household(model)
        chart = oracle.channels(oracle.DEFAULT_NAMES)  # no `devices` in the config
        # Minutes stored up to just before T0, so the test is about this hour.
        (sink,) = build_sinks(config)
        sink.open()
        sink.write([Point("Home", "", name, Scale.MINUTE, T0.replace(second=0) - timedelta(
            minutes=2), 1.0) for _g, _n, name in chart])
        sink.close()

        stats = Stats()

        def run(clock):
            accounts = [EmporiaAccount(a, config, clock, stats, timeouts=(1.0, 0.3))
                        for a in config.accounts]
            Daemon(config, accounts, build_sinks(config), clock, stats=stats).run()

        with caplog.at_level("INFO", logger="vuegraf"):
            run(holder["clock"])
            faulty = sim.stats()
            sim.error_rate = sim.timeout_rate = 0.0
            end = T0 + timedelta(hours=1, minutes=20)
            holder["clock"] = FakeClock(T0 + timedelta(hours=1), stop_after=end)
            run(holder["clock"])

    # The faults really happened, and the request count stayed bounded (no busy loop):
    # at most the live request per tick plus one chart request per channel and scale
    # per tick while recovering, far below what a retry storm would make.
    assert faulty["errors"] > 20 and faulty["timeouts"] > 5, faulty
    assert faulty["total"] < 61 * 3 + 28 * 20, faulty
    # The outage was logged once at ERROR, not every cycle.
    # Logged on state change: one ERROR per outage episode and one INFO when it ends, not a
    # line per failed cycle.
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "Account Home:" in r.message]
    recoveries = [r for r in caplog.records
                  if r.message.startswith("Account Home: recovered after")]
    assert errors and len(errors) - len(recoveries) in (0, 1)
    assert len(errors) < stats.snapshot().failed_cycles
    # Every minute of the faulty hour is there, equal to what the simulator serves.
    client = server.client(database)
    first = T0.replace(second=0) - timedelta(minutes=1)
    last = end.replace(second=0) - timedelta(minutes=4)
    rows = client.query(
        f"SELECT usage FROM energy_usage WHERE detailed = 'False' AND time >= "
        f"{int(first.timestamp())}s AND time <= {int(last.timestamp())}s GROUP BY device_name",
        epoch="s",
    )
    got = {(tags["device_name"], row["time"]): row["usage"]
           for (_m, tags), pts in rows.items() for row in pts}
    missing = []
    t = first
    while t <= last:
        for gid, num, name in chart:
            kwh = model.kwh(gid, num, "1MIN", t)
            if kwh is None:
                continue
            key = (name, int(t.timestamp()))
            if key not in got:
                missing.append(key)
            else:
                assert got[key] == pytest.approx(kwh * 60_000, rel=1e-9, abs=1e-9)
        t += timedelta(minutes=1)
    assert not missing, f"{len(missing)} missing minutes, first {missing[:5]}"
