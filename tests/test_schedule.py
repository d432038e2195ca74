"""The scheduler in virtual time: minute alignment and no drift over 1 000 cycles."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from vuegraf.clock import FakeClock
from vuegraf.collector import TickResult
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.model import Point, Scale
from vuegraf.schedule import daily_request_estimate, floor_time, last_complete_minute, next_tick

T0 = datetime(2026, 11, 23, 20, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (T0, T0 + timedelta(seconds=5)),
        (T0 + timedelta(seconds=4.999), T0 + timedelta(seconds=5)),
        (T0 + timedelta(seconds=5), T0 + timedelta(seconds=65)),
        (T0 + timedelta(seconds=59), T0 + timedelta(seconds=65)),
        (T0 - timedelta(microseconds=1), T0 + timedelta(seconds=5)),
    ],
)
def test_next_tick_is_minute_plus_lag_strictly_after_now(now, expected):
    assert next_tick(now, 60, 5) == expected


def test_next_tick_other_intervals_align_to_epoch_multiples():
    assert next_tick(T0 + timedelta(seconds=1), 300, 0) == T0 + timedelta(minutes=5)
    assert next_tick(T0 + timedelta(seconds=10), 15, 2) == T0 + timedelta(seconds=17)


def test_last_complete_minute():
    assert last_complete_minute(T0 + timedelta(seconds=5), 5) == T0 - timedelta(minutes=1)
    assert last_complete_minute(T0 + timedelta(seconds=4), 5) == T0 - timedelta(minutes=2)
    assert last_complete_minute(T0 + timedelta(seconds=59), 5) == T0 - timedelta(minutes=1)


def test_floor_time_before_epoch_multiple():
    assert floor_time(T0 + timedelta(seconds=61.5), 60) == T0 + timedelta(minutes=1)


class SlowCollector:
    """Stands in for an account's collector: each tick takes a random amount of virtual time."""

    name = "Home"

    def __init__(self, clock: FakeClock, rng: random.Random, emit) -> None:
        self.clock = clock
        self.rng = rng
        self.emit = emit
        self.calls: list[tuple[datetime, datetime]] = []

    def fill(self, now: datetime, result: TickResult, until: object = None) -> None:
        return None

    def live(self, now: datetime) -> TickResult:
        bucket = last_complete_minute(now, 5)
        self.calls.append((now, bucket))
        self.clock.advance(self.rng.uniform(0.05, 20.0))
        self.emit([Point("Home", "Panel", "Panel", Scale.MINUTE, bucket, 100.0)])
        return TickResult(points=1)


class RecordingSink:
    name = "recording"

    def __init__(self) -> None:
        self.batches: list[list[Point]] = []

    def open(self) -> None: ...

    def write(self, points):
        self.batches.append(list(points))

    def close(self) -> None: ...


def _config(tmp_path, **extra):
    data = {"accounts": [{"name": "Home", "email": "a@b.c", "password": "pw"}], **extra}
    return parse_config(data, tmp_path / "vuegraf.json")


def test_no_drift_over_1000_cycles_in_virtual_time(tmp_path):
    start = T0 + timedelta(seconds=17.25)
    clock = FakeClock(start)
    sink = RecordingSink()
    account = SlowCollector(clock, random.Random(7), sink.write)
    daemon = Daemon(_config(tmp_path), [], [sink], clock, collectors=[account])
    daemon.run(max_cycles=1001)

    # First call is the immediate start-up cycle, then one per tick.
    calls = account.calls
    assert len(calls) == 1001
    ticks = [t for t, _ in calls[1:]]
    for i, tick in enumerate(ticks):
        assert tick == T0 + timedelta(minutes=i + 1, seconds=5), f"cycle {i} at {tick}"
        assert tick.second == 5 and tick.microsecond == 0
    buckets = [b for _, b in calls]
    assert buckets == [T0 - timedelta(minutes=1) + timedelta(minutes=i) for i in range(1001)]
    assert len(sink.batches) == 1001
    assert all(b[0].time == bucket for b, bucket in zip(sink.batches, buckets, strict=True))


def test_overrun_skips_missed_ticks_instead_of_bursting(tmp_path, caplog):
    clock = FakeClock(T0 + timedelta(seconds=30))

    class VerySlow(SlowCollector):
        def live(self, now):
            self.calls.append((now, last_complete_minute(now, 5)))
            self.clock.advance(150)  # two and a half intervals
            return TickResult()

    account = VerySlow(clock, random.Random(1), RecordingSink().write)
    daemon = Daemon(_config(tmp_path), [], [], clock, collectors=[account])
    with caplog.at_level("WARNING"):
        daemon.run(max_cycles=4)
    ticks = [t for t, _ in account.calls]
    # start 20:00:30 (+150 s) -> next tick 20:03:05 (+150) -> 20:06:05 ...
    assert ticks[1:] == [
        T0 + timedelta(minutes=3, seconds=5),
        T0 + timedelta(minutes=6, seconds=5),
        T0 + timedelta(minutes=9, seconds=5),
    ]
    assert any("longer than the 60 s interval" in r.message for r in caplog.records)


def test_stop_ends_the_wait_immediately(tmp_path):
    clock = FakeClock(T0, stop_after=T0 + timedelta(minutes=3))
    account = SlowCollector(clock, random.Random(3), RecordingSink().write)
    Daemon(_config(tmp_path), [], [], clock, collectors=[account]).run()
    # start-up cycle plus ticks at 20:00:05+ until the clock stops at 20:03
    assert clock.stopped
    assert all(t < T0 + timedelta(minutes=3, seconds=30) for t, _ in account.calls)


def test_daily_request_estimate():
    assert daily_request_estimate(60, True, True, 0, 3600, 3600) == {
        "minute": 1440,
        "hour": 24,
        "day": 1,
        "devices": 24,
    }
    # Second data for 28 channels every hour: 672 more, over Emporia's ~2000 with the rest.
    est = daily_request_estimate(60, True, True, 28, 3600, 3600)
    assert est["second"] == 672 and sum(est.values()) == 2161
    # A 3-hour interval needs three 1-hour windows per channel per run.
    assert daily_request_estimate(60, False, False, 2, 10800, 86400)["second"] == 8 * 3 * 2


def test_daily_request_estimate_counts_amps_and_volts_two_a_bucket():
    base = {"minute": 1440, "hour": 24, "day": 1, "devices": 24}
    assert daily_request_estimate(60, True, True, 0, 3600, 3600, Scale.QUARTER) == {
        **base, "amps_volts": 192,
    }
    assert daily_request_estimate(60, True, True, 0, 3600, 3600, Scale.HOUR) == {
        **base, "amps_volts": 48,
    }
