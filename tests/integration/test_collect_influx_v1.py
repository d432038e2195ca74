"""End to end on real parts: simulator → real pyemvue over HTTP → daemon → real InfluxDB 1.x.

The daemon runs in virtual time (FakeClock) and the simulator is given the same
clock, so N simulated minutes take a second or two of real time.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from harness import oracle
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.sinks.factory import build_sinks

pytestmark = pytest.mark.integration

UTC = timezone.utc
START = datetime(2026, 11, 23, 19, 59, 47, tzinfo=UTC)
MINUTES = 12
SEED = 11


def expected_minute_points(buckets):
    """What the simulator served, named (the config maps Main Panel circuits 1 and 2 to
    "Kitchen A" and "Furnace B") and converted (kWh x 60 000) as README.md "What is written"
    says."""
    model = UsageModel(Scenario.default(), seed=SEED)
    oracle.check_household(model)
    expected = {}
    for (gid, num), name in oracle.KITCHEN_A_FURNACE_B_NAMES.items():
        for bucket in buckets:
            kwh = model.kwh(gid, num, "1MIN", bucket)
            if kwh is not None:
                expected[(name, bucket)] = kwh * 60_000
    return expected


def test_minutes_into_influxdb_v1_equal_what_the_simulator_served(influxdb_v1_db, tmp_path):
    server, database = influxdb_v1_db
    clock = FakeClock(START, stop_after=START + timedelta(minutes=MINUTES))
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        config = parse_config(
            {
                "influxDb": {"host": server.host, "port": server.port, "database": database},
                "accounts": [
                    {
                        "name": "Primary Residence",
                        "email": "me@example.com",
                        "password": "secret-pw",
                        "simulatorUrl": sim.url,
                        "devices": [{"name": "Main Panel", "channels": ["Kitchen A", "Furnace B"]}],
                    }
                ],
            },
            tmp_path / "vuegraf.json",
        )
        accounts = [EmporiaAccount(a, config, clock) for a in config.accounts]
        daemon = Daemon(config, accounts, build_sinks(config), clock)
        daemon.run()
        stats = sim.stats()

    # Start-up cycle collects 19:58, then one tick per minute up to the stop.
    first = datetime(2026, 11, 23, 19, 58, tzinfo=UTC)
    buckets = [first + timedelta(minutes=i) for i in range(MINUTES + 1)]
    expected = expected_minute_points(buckets)

    # Minutes before 19:58 come from the start-up backfill (an empty store counts as
    # 7 days missing); tests/integration/test_backfill.py checks those.
    result = server.client(database).query(
        "SELECT usage FROM energy_usage WHERE detailed = 'False' AND time >= '2026-11-23T19:58:00Z'"
        " GROUP BY *",
        epoch="s",
    )
    got = {}
    for (_measurement, tags), rows in result.items():
        assert tags["account_name"] == "Primary Residence"
        assert tags["detailed"] == "False"
        assert "station_name" not in tags
        for row in rows:
            key = (tags["device_name"], datetime.fromtimestamp(row["time"], UTC))
            assert key not in got, f"duplicate point {key}"
            got[key] = row["usage"]

    assert set(got) == set(expected)
    for key, watts in expected.items():
        assert got[key] == pytest.approx(watts, rel=1e-9, abs=1e-9), key
    # Every timestamp is on the minute, every channel has one point per minute it had data.
    assert all(t.second == 0 for _, t in got)
    names = {name for name, _ in got}
    assert {"Main Panel", "Kitchen A", "Furnace B", "Main Panel-Balance", "Office Plug"} <= names
    assert "Garage Panel-MainsFromGrid" in names
    # The always-zero circuit is written (as a float zero), not skipped.
    zero_series = [k for k, v in got.items() if v == 0.0]
    assert zero_series, "expected the simulator's always-zero circuit"
    # One usage request per minute per account; device metadata read once, not per minute.
    assert stats["requests"]["getDeviceListUsages"]["1MIN"] == MINUTES + 1
    assert sum(stats["requests"]["devices"].values()) == 1


def test_one_account_failing_never_stops_another(influxdb_v1_db, tmp_path, caplog):
    server, database = influxdb_v1_db
    start = datetime(2026, 11, 23, 6, 0, 30, tzinfo=UTC)
    clock = FakeClock(start, stop_after=start + timedelta(minutes=3))
    with SimulatorServer(seed=3, now=clock.now) as good:
        dead = SimulatorServer(seed=4, now=clock.now).start()
        dead_url = dead.url
        dead.stop()  # nothing listens there any more: connection refused
        config = parse_config(
            {
                "influxDb": {"host": server.host, "port": server.port, "database": database},
                "accounts": [
                    {"name": "Broken", "email": "b@example.com", "password": "pw-b",
                     "simulatorUrl": dead_url},
                    {"name": "Works", "email": "w@example.com", "password": "pw-w",
                     "simulatorUrl": good.url},
                ],
            },
            tmp_path / "vuegraf.json",
        )
        accounts = [EmporiaAccount(a, config, clock) for a in config.accounts]
        with caplog.at_level("DEBUG", logger="vuegraf"):
            Daemon(config, accounts, build_sinks(config), clock).run()

    result = server.client(database).query(
        "SELECT count(usage) FROM energy_usage"
        " WHERE time >= '2026-11-23T05:59:00Z' AND time < '2026-11-23T06:03:00Z'"
        " GROUP BY account_name, time(1m)"
    )
    per_account = {tags["account_name"] for (_m, tags) in result.keys()}
    assert per_account == {"Works"}
    minutes = [row for row in result.get_points(tags={"account_name": "Works"}) if row["count"]]
    assert len(minutes) == 4  # start-up minute 05:59 plus ticks for 06:00, 06:01, 06:02
    # The outage of "Broken" is logged once at ERROR, not once per cycle.
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "Broken" in r.message]
    assert len(errors) == 1
    assert "pw-b" not in caplog.text and "pw-w" not in caplog.text
