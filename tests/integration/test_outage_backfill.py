"""Holes are filled: a daemon stopped for 90 simulated minutes and restarted ends with
no missing minute, hour, day or second point inside Emporia's retention.

Real pyemvue over HTTP to the simulator, real InfluxDB 1.x, virtual time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from harness import oracle
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.sinks.factory import build_sinks
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 21
T0 = datetime(2026, 11, 20, 14, 0, 20, tzinfo=UTC)  # first run starts
RUN_A = timedelta(minutes=30)
DOWN = timedelta(minutes=90)
RUN_B = timedelta(minutes=15)
SECOND_CHANNELS = ["Kitchen", "Main Panel"]


def make_config(server, database, sim_url, tmp_path):
    return parse_config(
        {
            "influxDb": {"host": server.host, "port": server.port, "database": database},
            "accounts": [
                {
                    "name": "Home",
                    "email": "me@example.com",
                    "password": "pw",
                    "simulatorUrl": sim_url,
                    "devices": [{"name": "Main Panel", "channels": ["Kitchen"]}],
                }
            ],
            "timezone": "America/New_York",
            "detailedDataEnabled": True,
            "detailedDataChannels": SECOND_CHANNELS,
        },
        tmp_path / "vuegraf.json",
    )


def run_daemon(config, clock, stats=None):
    accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
    daemon = Daemon(config, accounts, build_sinks(config), clock, stats=stats)
    daemon.run()
    return daemon


def stored(client, detailed, since, until):
    result = client.query(
        f"SELECT usage FROM energy_usage WHERE detailed = '{detailed}' "
        f"AND time >= {int(since.timestamp())}s AND time < {int(until.timestamp())}s "
        "GROUP BY device_name",
        epoch="s",
    )
    got = {}
    for (_m, tags), rows in result.items():
        for row in rows:
            key = (tags["device_name"], row["time"])
            assert key not in got
            got[key] = row["usage"]
    return got


def expected(scale, since, until, channels=None):
    """Every non-null simulator bucket of every chart channel in [since, until), named as
    the config's `devices` entry says (Main Panel circuit 1 is "Kitchen")."""
    model = UsageModel(Scenario.default(), seed=SEED)
    return oracle.served(
        oracle.KITCHEN_NAMES, model, scale, since, until, oracle.NEW_YORK, only=channels
    )


def assert_same(got, want, what):
    missing = sorted(set(want) - set(got))
    assert not missing, f"{what}: {len(missing)} missing, first {missing[:5]}"
    for key, watts in want.items():
        assert got[key] == pytest.approx(watts, rel=1e-9, abs=1e-9), (what, key)


def test_outage_of_90_minutes_leaves_no_hole(influxdb_v1_db, tmp_path):
    server, database = influxdb_v1_db
    client = server.client(database)
    clock_a = FakeClock(T0, stop_after=T0 + RUN_A)
    restart = T0 + RUN_A + DOWN
    clock_b = FakeClock(restart, stop_after=restart + RUN_B)
    shared_now = {"clock": clock_a}
    stats_b = Stats()
    with SimulatorServer(seed=SEED, now=lambda: shared_now["clock"].now()) as sim:
        config = make_config(server, database, sim.url, tmp_path)
        run_daemon(config, clock_a)
        shared_now["clock"] = clock_b
        sim.reset_stats()
        run_daemon(config, clock_b, stats_b)
        requests_b = sim.stats()["requests"]

    end = clock_b.now()
    # Minutes: the whole 7-day retention, through the outage, up to the last live minute.
    minute_since = T0 - timedelta(days=7) + timedelta(minutes=15)
    minute_until = end.replace(second=0) - timedelta(minutes=1)
    assert_same(
        stored(client, "False", minute_since, minute_until),
        expected("1MIN", minute_since, minute_until),
        "minutes",
    )
    # Hours: 7 days back from the first start, through the outage, to the last complete hour.
    hour_since = T0 - timedelta(days=7) + timedelta(hours=1)
    hour_until = end.replace(minute=0, second=0)
    assert_same(
        stored(client, "Hour", hour_since, hour_until),
        expected("1H", hour_since, hour_until),
        "hours",
    )
    # Days: the last 7 complete local days (New York midnights), each stamped 23:59:59 local.
    today = oracle.local_date(end, oracle.NEW_YORK)
    day_since = oracle.midnight(today - timedelta(days=7), oracle.NEW_YORK)
    day_until = oracle.midnight(today, oracle.NEW_YORK)
    want_days = expected("1D", day_since, day_until)
    assert len({t for _name, t in want_days}) == 7
    assert_same(
        stored(client, "Day", day_since, day_until + timedelta(days=1)),
        want_days,
        "days",
    )
    # Seconds, for the chosen channels only: from 3 h before the first start until the
    # restart's fill (which stops a settle time short of "now").
    second_since = T0 - timedelta(hours=3) + timedelta(minutes=3)
    second_until = restart - timedelta(minutes=3)
    got_seconds = stored(client, "True", T0 - timedelta(hours=4), end)
    assert_same(
        {k: v for k, v in got_seconds.items()
         if second_since.timestamp() <= k[1] < second_until.timestamp()},
        expected("1S", second_since, second_until, SECOND_CHANNELS),
        "seconds",
    )
    assert {name for name, _ in got_seconds} == set(SECOND_CHANNELS)
    # The restart read the store once per scale, then asked only for what was missing:
    # the 90-minute hole is one minute-chart request per channel, not one per minute.
    minute_charts = requests_b["getChartUsage"].get("1MIN", 0)
    assert minute_charts <= 28 + 10, requests_b
    # Balance and the grid split have no chart data: each minute of the hole (14:30 to
    # 15:58, 89 of them) came back with one usage request for its instant, beside the 16
    # live minutes.
    assert requests_b["getDeviceListUsages"]["1MIN"] == 16 + 89
    live_only = [oracle.KITCHEN_NAMES[k] for k in oracle.LIVE_ONLY]
    model = UsageModel(Scenario.default(), seed=SEED)
    assert_same(
        {k: v for k, v in stored(client, "False", T0 - timedelta(minutes=1),
                                 minute_until).items()
         if k[0] in live_only},
        oracle.served(oracle.KITCHEN_NAMES, model, "1MIN", T0 - timedelta(minutes=1),
                      minute_until, oracle.NEW_YORK, live_only_too=True, only=live_only),
        "minutes of the channels without chart data",
    )


def test_channel_without_chart_data_is_not_asked_every_cycle(influxdb_v1_db, tmp_path):
    """The plug's null minutes cost one chart request each at most; MainsFromGrid none."""
    server, database = influxdb_v1_db
    start = datetime(2026, 11, 21, 3, 0, 10, tzinfo=UTC)
    clock = FakeClock(start, stop_after=start + timedelta(hours=3))
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        config = make_config(server, database, sim.url, tmp_path)
        config = parse_config(
            {
                "influxDb": {"host": server.host, "port": server.port, "database": database},
                "accounts": [{"name": "Home", "email": "e", "password": "p",
                              "simulatorUrl": sim.url}],
            },
            tmp_path / "vuegraf.json",
        )
        run_daemon(config, clock)
        # After the start-up fill (7 days x 28 channels x 2 windows of 12 h, and the
        # hour/day fills), steady running adds few chart requests: one per null minute
        # of the gappy plug (~3 %), none for MainsFromGrid/MainsToGrid/Balance.
        charts = sim.stats()["requests"]["getChartUsage"]
    startup = 28 * 15 + 28 * 2
    steady_minutes = 180
    assert charts.get("1MIN", 0) + charts.get("1H", 0) + charts.get("1D", 0) <= (
        startup + 0.10 * steady_minutes + 10
    ), charts
