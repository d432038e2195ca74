"""The consistency check (vuegraf.consistency) on hand-made points with literal numbers:
buckets that agree, disagree, stay incomplete, are written twice, and DST and half-hour days.

A minute point is watts (kWh x 60 000), an hour point watts (kWh x 1 000, its Wh), a day point
Wh: so 60 minutes of 600 W make an hour of 600 W, and 24 hours of 100 W a day of 2 400 Wh.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import oracle
from vuegraf.clock import FakeClock
from vuegraf.config import PrometheusConfig
from vuegraf.consistency import IDLE_SECONDS, ConsistencyCheck, ConsistencySink
from vuegraf.exporter import ExporterServer, LatestValues, VuegrafCollector
from vuegraf.model import Point, Scale, Unit
from vuegraf.sinks.outputs import Outputs
from vuegraf.stats import Stats

HOUR = datetime(2026, 5, 5, 10, tzinfo=UTC)
NOW = datetime(2026, 5, 6, 12, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


def minute(t: datetime, watts: float, channel: str = "Fridge") -> Point:
    return Point("Home", "Panel", channel, Scale.MINUTE, t, watts)


def hour_point(t: datetime, watts: float, channel: str = "Fridge") -> Point:
    return Point("Home", "Panel", channel, Scale.HOUR, t, watts)


def day_point(start: datetime, wh: float, zone: ZoneInfo, channel: str = "Fridge") -> Point:
    stamp = oracle.day_stamp(oracle.local_date(start, zone), zone)
    return Point("Home", "Panel", channel, Scale.DAY, stamp, wh)


def minutes(start: datetime, watts: list[float], channel: str = "Fridge") -> list[Point]:
    return [minute(start + timedelta(minutes=i), w, channel) for i, w in enumerate(watts)]


def hours(start: datetime, watts: list[float]) -> list[Point]:
    return [hour_point(start + timedelta(hours=i), w) for i, w in enumerate(watts)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def stats() -> Stats:
    return Stats()


def check_in(zone: ZoneInfo | None, stats: Stats, clock: FakeClock) -> ConsistencyCheck:
    return ConsistencyCheck(zone or ZoneInfo("UTC"), stats, clock)


def test_an_hour_that_its_minutes_add_up_to_agrees(stats, clock):
    check = check_in(None, stats, clock)
    # 30 minutes at 500 W and 30 at 700 W: the hour's mean is 600 W.
    check.add([*minutes(HOUR, [500.0] * 30 + [700.0] * 30), hour_point(HOUR, 600.0)])
    snap = stats.snapshot()
    assert snap.checked == {("Home", "1H"): 1}
    assert snap.disagreements == {}
    assert check.disagreements == []
    assert check.open_buckets == 1  # the day, waiting for its other hours and its point


def test_an_hour_its_minutes_do_not_add_up_to_is_counted_and_logged_once_a_day(
    stats, clock, caplog
):
    check = check_in(None, stats, clock)
    caplog.set_level(logging.DEBUG, logger="vuegraf.consistency")
    check.add([*minutes(HOUR, [600.0] * 60), hour_point(HOUR, 660.0)])
    later = HOUR + timedelta(hours=1)
    check.add([hour_point(later, 1.0), *minutes(later, [600.0] * 60)])
    snap = stats.snapshot()
    assert snap.checked == {("Home", "1H"): 2}
    assert snap.disagreements == {("Home", "1H"): 2}
    found = check.disagreements[0]
    assert (found.channel, found.scale, found.start) == ("Fridge", Scale.HOUR, HOUR)
    assert found.parts_sum == pytest.approx(600.0) and found.whole == 660.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "2026-05-05T10:00:00+00:00" in text and "Home/Panel/Fridge" in text
    assert "600 W" in text and "660 W" in text
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and "add up" in r.msg]
    assert len(debug) == 1 and "2026-05-05T11:00:00+00:00" in debug[0].getMessage()
    # The next local day, the first disagreement is a warning again.
    clock.advance(86_400)
    fifth = HOUR + timedelta(hours=5)
    check.add([*minutes(fifth, [1.0] * 60), hour_point(fifth, 2.0)])
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_a_difference_within_emporias_rounding_agrees(stats, clock):
    check = check_in(None, stats, clock)
    # Nine significant digits of each minute: 123.456789 W; the hour carries its own rounding.
    check.add([*minutes(HOUR, [123.456789] * 60), hour_point(HOUR, 123.4567891)])
    assert stats.snapshot().disagreements == {}
    assert stats.snapshot().checked == {("Home", "1H"): 1}


def test_an_incomplete_hour_is_not_judged_and_is_dropped_when_idle(stats, clock):
    check = check_in(None, stats, clock)
    check.add([*minutes(HOUR, [600.0] * 59), hour_point(HOUR, 600.0)])  # minute 59 missing
    check.add(minutes(HOUR + timedelta(hours=1), [600.0] * 60))  # no hour point yet
    assert stats.snapshot().checked == {}
    assert check.open_buckets == 3  # the two hours and the day of the hour point
    clock.advance(IDLE_SECONDS + 3_600)
    check.add([minute(HOUR + timedelta(days=3), 5.0)])  # any batch sweeps
    assert check.open_buckets == 1  # only the new one
    # Their missing parts now come too late to be judged against a forgotten bucket.
    check.add([minute(HOUR + timedelta(minutes=59), 600.0)])
    assert stats.snapshot().checked == {}


def test_a_refill_replaces_a_value_before_judging_and_is_not_counted_twice(stats, clock):
    check = check_in(None, stats, clock)
    first = minutes(HOUR, [600.0] * 60)
    first[7] = minute(HOUR + timedelta(minutes=7), 0.0)  # a live value Emporia then revised
    check.add(first)
    check.add([minute(HOUR + timedelta(minutes=3), math.nan)])  # not a value: ignored
    check.add([minute(HOUR + timedelta(minutes=7), 600.0), hour_point(HOUR, 600.0)])
    assert stats.snapshot().checked == {("Home", "1H"): 1}
    assert stats.snapshot().disagreements == {}
    # The same hour written again (a fill, an import run twice): judged once only.
    check.add([*minutes(HOUR, [600.0] * 60), hour_point(HOUR, 600.0)])
    check.add([*minutes(HOUR, [1.0] * 60), hour_point(HOUR, 600.0)])
    assert stats.snapshot().checked == {("Home", "1H"): 1}
    assert stats.snapshot().disagreements == {}
    assert check.open_buckets == 1  # the day


def test_series_are_kept_apart_and_amps_volts_and_seconds_are_left_out(stats, clock):
    check = check_in(None, stats, clock)
    amps = [
        Point("Home", "Panel", "Fridge", Scale.MINUTE, HOUR + timedelta(minutes=i), 9.0,
              unit=Unit.AMPS)
        for i in range(60)
    ]
    seconds = [Point("Home", "Panel", "Fridge", Scale.SECOND, HOUR, 5.0)]
    check.add([*amps, *seconds, *minutes(HOUR, [100.0] * 60, "Oven")])
    check.add([hour_point(HOUR, 100.0, "Oven"), hour_point(HOUR, 100.0, "Fridge")])
    assert stats.snapshot().checked == {("Home", "1H"): 1}  # the oven's; the fridge has none
    assert stats.snapshot().disagreements == {}


def test_a_whole_day_of_hours_against_its_day_point(stats, clock):
    check = check_in(NEW_YORK, stats, clock)
    start = datetime(2026, 5, 5, 4, tzinfo=UTC)  # local midnight, EDT
    check.add([*hours(start, [100.0] * 24), day_point(start, 2400.0, NEW_YORK)])
    nxt = start + timedelta(days=1)
    check.add([*hours(nxt, [100.0] * 24), day_point(nxt, 2500.0, NEW_YORK)])
    assert stats.snapshot().checked == {("Home", "1D"): 2}
    assert stats.snapshot().disagreements == {("Home", "1D"): 1}
    found = check.disagreements[0]
    assert (found.scale, found.start, found.parts_sum, found.whole) == (
        Scale.DAY, nxt, 2400.0, 2500.0
    )


@pytest.mark.parametrize(
    ("midnight", "length"),
    [
        (datetime(2026, 3, 8, 5, tzinfo=UTC), 23),  # spring forward: 23 hours
        (datetime(2026, 11, 1, 4, tzinfo=UTC), 25),  # fall back: 25 hours
    ],
)
def test_a_dst_day_has_its_own_number_of_hours(stats, clock, midnight, length):
    check = check_in(NEW_YORK, stats, clock)
    check.add(hours(midnight, [100.0] * (length - 1)))
    check.add([day_point(midnight, 100.0 * length, NEW_YORK)])
    assert stats.snapshot().checked == {}  # one hour still missing
    check.add([hour_point(midnight + timedelta(hours=length - 1), 100.0)])
    assert stats.snapshot().checked == {("Home", "1D"): 1}
    assert stats.snapshot().disagreements == {}


def test_a_day_whose_midnight_is_not_on_a_utc_hour_is_not_judged(stats, clock):
    check = check_in(KOLKATA, stats, clock)
    midnight = datetime(2026, 5, 4, 18, 30, tzinfo=UTC)  # 00:00 in Kolkata (+05:30)
    first_hour = datetime(2026, 5, 4, 18, tzinfo=UTC)
    check.add([*hours(first_hour, [100.0] * 25), day_point(midnight, 2400.0, KOLKATA)])
    check.add([*minutes(first_hour, [100.0] * 60), hour_point(first_hour, 100.0)])
    assert stats.snapshot().checked == {("Home", "1H"): 1}  # its hours still are
    assert check.open_buckets == 24  # hours waiting for their minutes; no day bucket


def test_fed_through_the_fan_out_and_exported(stats, clock):
    check = check_in(None, stats, clock)
    outputs = Outputs([ConsistencySink(check)], stats)
    outputs.open()
    outputs.write([*minutes(HOUR, [600.0] * 60), hour_point(HOUR, 600.0)], live=False)
    outputs.write([*minutes(HOUR + timedelta(hours=1), [0.0] * 60),
                   hour_point(HOUR + timedelta(hours=1), 10.0)])
    outputs.close(flush_seconds=None)
    assert stats.snapshot().sink_points == {}  # it counts buckets, not points written
    collector = VuegrafCollector(LatestValues(clock), stats, health=lambda: True)
    server = ExporterServer(PrometheusConfig(port=0), collector, health=lambda: True,
                            runtime_metrics=False)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(server.metrics_text().decode())
        for s in family.samples
        if family.name.startswith("vuegraf_consistency")
    }
    labels = (("account", "Home"), ("scale", "1H"))
    assert samples == {
        ("vuegraf_consistency_checked_total", labels): 2.0,
        ("vuegraf_consistency_disagreements_total", labels): 1.0,
    }


def test_hours_older_than_emporias_minutes_open_no_bucket(stats, clock):
    check = check_in(None, stats, clock)
    old = NOW - timedelta(days=30)  # an imported hour: no minute of it will ever come
    check.add([hour_point(old - timedelta(hours=1) * i, 100.0) for i in range(1, 11)])
    assert check.open_buckets == 1  # only their day, which its hours and its point complete
