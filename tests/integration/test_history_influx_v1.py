"""--historydays end to end: simulator → real pyemvue → history import → real InfluxDB 1.x.

The import runs in virtual time (FakeClock at a fixed "now", shared with the simulator), so
30 days of hour and day history for 28 channels takes about a second of real time.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from harness import oracle
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.emporia import EmporiaAccount
from vuegraf.history import run_history
from vuegraf.model import Scale
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.sinks.factory import build_sinks

pytestmark = pytest.mark.integration

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 20, 17, 31, tzinfo=UTC)  # 30 days back crosses 1 Nov (DST ends)
DAYS = 30
SEED = 7
ZONE_NAME = Scenario.default().timezone
ZONE = ZoneInfo(ZONE_NAME)
HOUR_DAY = {Scale.HOUR, Scale.DAY}


class Simulated:
    """The simulator whose "now" is the current run's FakeClock (each run gets a fresh clock)."""

    def __init__(self) -> None:
        self.clock = FakeClock(NOW)
        self.server = SimulatorServer(seed=SEED, now=lambda: self.clock.now())

    def __enter__(self) -> Simulated:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def config(self, tmp_path, influx=None):
        """The account on this simulator; InfluxDB 1.x `(server, database)` when given."""
        data = (
            {}
            if influx is None
            else {
                "influxDb": {"host": influx[0].host, "port": influx[0].port, "database": influx[1]}
            }
        )
        return parse_config(
            {
                **data,
                "timezone": ZONE_NAME,
                "accounts": [
                    {
                        "name": "Primary Residence",
                        "email": "me@example.com",
                        "password": "secret-pw",
                        "simulatorUrl": self.server.url,
                        "devices": [{"name": "Main Panel", "channels": ["Kitchen A", "Furnace B"]}],
                    }
                ],
            },
            tmp_path / "vuegraf.json",
        )

    def run(self, config, sink_wrapper=None, scales=HOUR_DAY, sinks=None):
        """One import with a fresh clock at NOW and fresh accounts, as a new process would."""
        self.clock = FakeClock(NOW)
        accounts = [EmporiaAccount(a, config, self.clock) for a in config.accounts]
        if sinks is None:
            sinks = build_sinks(config)
        if sink_wrapper is not None:
            sinks = [sink_wrapper(s, self.clock) for s in sinks]
        for sink in sinks:
            sink.open()
        try:
            return run_history(accounts, sinks, DAYS, config, self.clock, scales=scales)
        finally:
            for sink in sinks:
                sink.close()


def expected_points():
    """(device_name, detailed, epoch s, watts) the simulator serves, per README.md "What is
    written", named as the config maps them (Main Panel circuits 1 and 2 are "Kitchen A" and
    "Furnace B")."""
    model = UsageModel(Scenario.default(), seed=SEED)
    last_hour = datetime(2026, 11, 23, 19, tzinfo=UTC)  # newest complete hour at NOW
    hours = [last_hour - timedelta(hours=i) for i in range(DAYS * 24)]
    yesterday = date(2026, 11, 22)
    days = [yesterday - timedelta(days=i) for i in range(DAYS)]
    assert date(2026, 11, 1) in days
    expected = set()
    oracle.check_household(model)
    for gid, num, name in oracle.channels(oracle.KITCHEN_A_FURNACE_B_NAMES):
        for start in hours:
            kwh = model.kwh(gid, num, "1H", start)
            if kwh is not None:
                expected.add((name, "Hour", int(start.timestamp()), float(kwh) * 1000.0))
        for day in days:
            start = datetime.combine(day, time(0), tzinfo=ZONE).astimezone(UTC)
            stamp = datetime.combine(day, time(23, 59, 59), tzinfo=ZONE)
            kwh = model.kwh(gid, num, "1D", start)
            if kwh is not None:
                expected.add((name, "Day", int(stamp.timestamp()), float(kwh) * 1000.0))
    return expected


def stored(server, database):
    """Every hour and day point in InfluxDB, and how many rows that was."""
    result = server.client(database).query(
        "SELECT usage FROM energy_usage WHERE detailed = 'Hour' OR detailed = 'Day' GROUP BY *",
        epoch="s",
    )
    got = set()
    rows = 0
    for (_measurement, tags), points in result.items():
        assert tags["account_name"] == "Primary Residence"
        for row in points:
            rows += 1
            got.add((tags["device_name"], tags["detailed"], row["time"], row["usage"]))
    return got, rows


def test_thirty_days_of_hours_and_days_equal_the_simulator_and_rerun_changes_nothing(
    influxdb_v1_db, tmp_path
):
    server, database = influxdb_v1_db
    with Simulated() as sim:
        config = sim.config(tmp_path, (server, database))
        first = sim.run(config)
        after_first, rows_first = stored(server, database)
        second = sim.run(config)
        after_second, rows_second = stored(server, database)
        requests = sim.server.stats()["requests"]["getChartUsage"]

    expected = expected_points()
    assert first.ok and second.ok
    assert after_first == expected
    assert rows_first == len(expected)
    assert after_second == after_first and rows_second == rows_first
    # 28 chart channels × (2 hour windows + 1 day window), the same again on the re-run.
    assert first.requests == {Scale.HOUR: 56, Scale.DAY: 28}
    assert requests == {"1H": 2 * 56, "1D": 2 * 28}
    assert first.points == second.points
    assert sum(first.points.values()) == len(expected)
    # Day points sit at 23:59:59 local, including the 25-hour day of 1 November.
    day_stamps = {t for _, tag, t, _ in expected if tag == "Day"}
    nov1 = datetime(2026, 11, 1, 23, 59, 59, tzinfo=ZONE)
    assert int(nov1.timestamp()) in day_stamps
    assert len(day_stamps) == DAYS


class StopAfter:
    """Wraps a sink; stops the clock after `limit` writes, as SIGTERM would mid-import."""

    def __init__(self, sink, clock, limit):
        self.sink = sink
        self.name = sink.name
        self.clock = clock
        self.limit = limit
        self.writes = 0

    def open(self):
        self.sink.open()

    def write(self, points):
        self.sink.write(points)
        self.writes += 1
        if self.writes == self.limit:
            self.clock.stop()

    def close(self):
        self.sink.close()


def test_an_import_stopped_half_way_and_run_again_ends_with_the_full_set(influxdb_v1_db, tmp_path):
    server, database = influxdb_v1_db
    with Simulated() as sim:
        config = sim.config(tmp_path, (server, database))
        stopped = sim.run(config, sink_wrapper=lambda s, clock: StopAfter(s, clock, 40))
        partial, _ = stored(server, database)
        again = sim.run(config)
        final, rows = stored(server, database)

    expected = expected_points()
    assert stopped.stopped and not stopped.ok
    assert 40 <= stopped.done < stopped.jobs == 84
    assert partial and partial < expected
    assert again.ok
    assert final == expected and rows == len(expected)


class CountingSink:
    name = "counting"

    def __init__(self, keep):
        self.keep = keep
        self.points = 0
        self.kept = set()

    def open(self):
        return None

    def write(self, points):
        self.points += len(points)
        for p in points:
            if p.time < self.keep:
                self.kept.add((p.channel, p.time, p.watts))

    def close(self):
        return None


def test_minute_windows_are_accepted_and_whole_at_the_retention_edge(tmp_path):
    """Every minute window fits Emporia's limits and its oldest one is still retained."""
    with Simulated() as sim:
        config = sim.config(tmp_path)
        oldest_edge = NOW - timedelta(days=7) + timedelta(hours=2)
        sink = CountingSink(keep=oldest_edge)
        result = sim.run(config, sinks=[sink], scales={Scale.MINUTE})

    assert result.ok and not result.failed
    assert result.requests == {Scale.MINUTE: 28 * 14}
    assert sink.points == result.points[Scale.MINUTE]
    first_minute = min(t for _, t, _ in sink.kept)
    retention_start = NOW - timedelta(days=7)
    assert retention_start <= first_minute <= retention_start + timedelta(hours=1, minutes=1)
    # The oldest hour imported equals the model, value for value: nothing fell out of retention.
    model = UsageModel(Scenario.default(), seed=SEED)
    expected = set()
    for gid, num, name in oracle.channels(oracle.KITCHEN_A_FURNACE_B_NAMES):
        t = first_minute
        while t < oldest_edge:
            kwh = model.kwh(gid, num, "1MIN", t)
            if kwh is not None:
                expected.add((name, t, float(kwh) * 60_000.0))
            t += timedelta(minutes=1)
    assert sink.kept == expected
