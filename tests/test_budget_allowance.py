"""A budget below the steady need (every UTC day at level `minute`) still fills holes: a small
chart allowance, spread over the day, for holes of earlier days (the minutes skipped
yesterday), so nothing is lost to Emporia's 7-day retention of minutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vuegraf.budget import BudgetGuard, Level, Needs, decide, fill_allowance

PER_DAY = {"minute": 1440, "hour": 24, "day": 1, "devices": 24}  # 1 489 a day
START = datetime(2026, 12, 1, 0, 0, 20, tzinfo=UTC)


def test_a_day_at_level_minute_keeps_a_chart_allowance_for_earlier_days() -> None:
    """A budget of 1 000 at 60 s for 28 chart channels: 84 chart requests a day (3 windows
    of 720 minutes per channel) are kept, spread over the day, for earlier days' holes; the
    live minute gets the rest, and the day stays under the budget."""
    assert fill_allowance(28) == 84
    guard = BudgetGuard("Home", 1000, 60, None)
    used = fills = minutes = 0
    for tick in range(1440):
        plan = guard.plan(START + timedelta(minutes=tick), used, PER_DAY, backlog=0,
                          allowance=84)
        assert plan.level is Level.MINUTE and not plan.seconds
        assert plan.old_holes_only
        assert plan.fills <= 1  # spread, not at once
        fills += plan.fills
        minutes += plan.minute
        used += plan.fills + plan.minute + 2 * (tick % 60 == 0) + (tick == 0)
    assert used <= 1000
    # About 84: what is left of it is reserved rounded up at each tick, a few more in all.
    assert 80 <= fills <= 90
    # The rest of the 1 000 less the 49 never shed went to the live minute (up to 3 of those
    # reserved rounded up may be left unused).
    assert 1000 - 49 - fills - 3 <= minutes <= 1000 - 49 - fills


def test_the_allowance_never_takes_more_than_half_of_the_live_minutes_share() -> None:
    # 100 left at the last tick, 25 of them for hours, the day and device reads: 75 for the
    # minute and the allowance; the allowance (42) is cut to 37, the minute keeps 38.
    last = Needs(minute=1, fixed=25, second=0, allowance=42)
    plan = decide(1900, 2000, last, 0, ticks_left=1, floor=Level.MINUTE)
    assert (plan.level, plan.fills, plan.minute) == (Level.MINUTE, 37, True)


def test_without_channels_nothing_is_kept() -> None:
    plan = decide(1600, 2000, Needs(minute=720, fixed=25, second=0), 0, ticks_left=720)
    assert (plan.level, plan.fills) == (Level.MINUTE, 0)
