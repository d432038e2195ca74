"""Day and hour points on DST days in two zones, for two accounts, into real InfluxDB 1.x.

Each case runs the daemon across the local midnight that ends a DST-change day
(23 h in spring, 25 h in autumn) with the simulator's day buckets in the same
zone, then checks the live day point (stamped 23:59:59 local, converted to UTC)
and the days and hours filled around it.
"""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest

from harness import oracle
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.model import Point, Scale
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.sinks.factory import build_sinks

pytestmark = pytest.mark.integration

SEED = 8
CASES = [
    ("America/New_York", date(2026, 3, 8), 23),
    ("America/New_York", date(2026, 11, 1), 25),
    ("Europe/Berlin", date(2026, 3, 29), 23),
    ("Europe/Berlin", date(2026, 10, 25), 25),
]


@pytest.mark.parametrize(("zone_name", "dst_day", "hours"), CASES)
def test_dst_day_points_for_two_accounts(influxdb_v1_db, tmp_path, zone_name, dst_day, hours):
    server, database = influxdb_v1_db
    zone = ZoneInfo(zone_name)
    day_start = oracle.midnight(dst_day, zone)
    day_end = oracle.midnight(dst_day + timedelta(days=1), zone)
    assert (day_end - day_start) == timedelta(hours=hours)
    start = day_end - timedelta(minutes=12) + timedelta(seconds=20)
    clock = FakeClock(start, stop_after=day_end + timedelta(minutes=15))
    scenario = dataclasses.replace(Scenario.default(), timezone=zone_name)
    model = UsageModel(scenario, seed=SEED)
    names = oracle.DEFAULT_NAMES  # no `devices` in the config
    oracle.check_household(model)

    with SimulatorServer(scenario=scenario, seed=SEED, now=clock.now) as sim:
        config = parse_config(
            {
                "influxDb": {"host": server.host, "port": server.port, "database": database},
                "accounts": [
                    {"name": name, "email": f"{name}@example.com", "password": "pw",
                     "simulatorUrl": sim.url}
                    for name in ("North", "South")
                ],
                "timezone": zone_name,
                "addStationField": True,
            },
            tmp_path / "vuegraf.json",
        )
        sinks = build_sinks(config)
        # Minutes already stored up to just before the start, so this test is about
        # hours and days rather than a 7-day minute backfill.
        seeded = [
            Point(acct.name, oracle.DEVICE_NAMES[gid], name, Scale.MINUTE,
                  start.replace(second=0) - timedelta(minutes=2), 1.0)
            for acct in config.accounts
            for gid, _num, name in oracle.channels(names)
        ]
        sinks[0].open()
        sinks[0].write(seeded)
        sinks[0].close()
        accounts = [EmporiaAccount(a, config, clock) for a in config.accounts]
        Daemon(config, accounts, sinks, clock).run()

    client = server.client(database)
    stamp = oracle.day_stamp(dst_day, zone)
    for account in ("North", "South"):
        rows = client.query(
            "SELECT usage FROM energy_usage WHERE detailed = 'Day' AND account_name = "
            f"'{account}' AND time >= '{(day_start - timedelta(days=8)).isoformat()}' "
            "GROUP BY device_name, station_name",
            epoch="s",
        )
        day_points = {
            (tags["station_name"], tags["device_name"], row["time"]): row["usage"]
            for (_m, tags), pts in rows.items()
            for row in pts
        }
        # The DST day itself: one point per channel at 23:59:59 local, equal to the day bucket.
        checked = 0
        for (gid, num), name in names.items():
            kwh = model.kwh(gid, num, "1D", day_start)
            key = (oracle.DEVICE_NAMES[gid], name, int(stamp.timestamp()))
            if kwh is None:
                continue
            if (gid, num) not in oracle.LIVE_ONLY or num == "Balance":
                assert day_points[key] == pytest.approx(kwh * 1000, rel=1e-9, abs=1e-9), key
                checked += 1
        assert checked >= 28
        # The seven days before were filled, each once, each at its own local 23:59:59.
        stamps = sorted({t for (_s, _d, t) in day_points})
        expected_stamps = [
            int(oracle.day_stamp(dst_day - timedelta(days=i), zone).timestamp()) for i in range(7)
        ]
        assert set(expected_stamps) <= set(stamps)
        assert all(t % 60 == 59 for t in stamps)
        # Hours of the DST day: 23 or 25 hour points per chart channel, none doubled.
        hour_rows = client.query(
            "SELECT count(usage) FROM energy_usage WHERE detailed = 'Hour' AND account_name = "
            f"'{account}' AND time >= '{day_start.isoformat()}' AND time < '{day_end.isoformat()}'"
            " GROUP BY device_name, station_name",
        )
        counts = {tags["device_name"]: next(pts)["count"] for (_m, tags), pts in hour_rows.items()}
        assert counts["Main Panel"] == hours
        assert counts["Main Panel-1"] == hours
