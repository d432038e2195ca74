"""The simulator's scales add up as Emporia's do: for every channel, the minutes of a UTC hour
to the hour, a quarter hour's minutes to the 15MIN bucket, and the minutes (and the whole
hours) of a local day to the day, within the nine significant digits served. On DST days (23
and 25 hours) and in zones whose midnight falls inside a UTC hour (+05:30, +05:45), where a
1H bucket takes its parts from two local days.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from vuegraf.simulator.model import Scenario, UsageModel, local_midnight


def close(total: float, whole: float, parts: int) -> bool:
    """Served values have 9 significant digits: a sum of n of them is off from the whole by
    at most n + 1 half-units of the 9th digit (of the larger)."""
    return abs(total - whole) <= (parts + 1) * 5e-10 * max(abs(whole), abs(total)) + 1e-15


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario.default()


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("America/New_York", date(2026, 6, 17), 24),
        ("Asia/Kolkata", date(2026, 5, 5), 24),
        ("Asia/Kathmandu", date(2026, 5, 5), 24),
    ],
)
def test_minutes_add_up_to_hours_and_days_for_every_channel(scenario, zone, day, hours):
    model = UsageModel(replace(scenario, timezone=zone), seed=7)
    first, end = local_midnight(day, model.tz), local_midnight(day + timedelta(days=1), model.tz)
    assert (end - first) == timedelta(hours=hours)
    minute_starts = [first + timedelta(minutes=m) for m in range(hours * 60)]
    # The UTC hours that lie wholly inside the day (all of them in a whole-hour zone).
    hour_starts = [t for t in minute_starts if t.minute == 0 and t + timedelta(hours=1) <= end]
    assert len(hour_starts) == (hours if first.minute == 0 else hours - 1)
    checked = 0
    for gid, num, *_ in model.channels():
        by_minute = {t: model.kwh(gid, num, "1MIN", t) for t in minute_starts}
        if any(v is None for v in by_minute.values()):
            continue  # the plug's gaps: nothing to add up
        values = [v for v in by_minute.values() if v is not None]
        day_kwh = model.kwh(gid, num, "1D", first)
        assert day_kwh is not None
        assert close(sum(values), day_kwh, len(values)), (gid, num)
        for h in hour_starts:
            hour = model.kwh(gid, num, "1H", h)
            inside = [by_minute[h + timedelta(minutes=m)] for m in range(60)]
            assert hour is not None and close(sum(v or 0.0 for v in inside), hour, 60), (
                gid, num, h
            )
            quarter = model.kwh(gid, num, "15MIN", h + timedelta(minutes=15))
            assert quarter is not None
            assert close(sum(v or 0.0 for v in inside[15:30]), quarter, 15), (gid, num, h)
        if first.minute == 0:
            by_hour = [model.kwh(gid, num, "1H", h) for h in hour_starts]
            assert close(sum(v or 0.0 for v in by_hour), day_kwh, hours), (gid, num)
        checked += 1
    assert checked >= 28  # every channel but the gappy plug's


def test_an_hour_across_a_half_hour_midnight_takes_both_days_parts(scenario):
    """In Kolkata, 18:00-19:00 UTC holds 23:30-24:00 of one day and 00:00-00:30 of the next."""
    model = UsageModel(replace(scenario, timezone="Asia/Kolkata"), seed=3)
    h = datetime(2026, 5, 4, 18, tzinfo=UTC)
    for gid, num in ((1001, "1"), (1001, "1,2,3"), (1002, "MainsToGrid")):
        minutes = [model.kwh(gid, num, "1MIN", h + timedelta(minutes=m)) for m in range(60)]
        hour = model.kwh(gid, num, "1H", h)
        assert hour is not None and None not in minutes
        assert close(sum(v or 0.0 for v in minutes), hour, 60), (gid, num)


def test_grid_split_adds_up_and_keeps_its_signs(scenario):
    model = UsageModel(scenario, seed=11)
    h = datetime(2026, 6, 17, 16, tzinfo=UTC)  # around local noon: the solar panel feeds
    for num in ("MainsFromGrid", "MainsToGrid"):
        minutes = [model.kwh(1002, num, "1MIN", h + timedelta(minutes=m)) for m in range(60)]
        hour = model.kwh(1002, num, "1H", h)
        assert hour is not None and None not in minutes
        assert close(sum(v or 0.0 for v in minutes), hour, 60), num
    drawn, fed = model.kwh(1002, "MainsFromGrid", "1H", h), model.kwh(1002, "MainsToGrid", "1H", h)
    assert drawn is not None and fed is not None and drawn > 0 > fed
