"""The budget guard across a reload (SIGHUP): the level an account reached today stays with
the guard built for the new config (no second WARNING, nothing shed comes back mid-day), and
an account the reload removed no longer shows anything shed in `/metrics`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vuegraf.budget import BudgetGuard, Level
from vuegraf.clock import FakeClock
from vuegraf.collector import TickResult
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.stats import Stats

PER_DAY = {"minute": 1440, "hour": 24, "day": 1, "devices": 24}  # 1 489 a day
NOON = datetime(2026, 12, 1, 12, 0, 20, tzinfo=UTC)


class Quiet:
    """An account whose ticks work and ask nothing (the daemon's seam)."""

    name = "Home"

    def live(self, now: datetime) -> TickResult:
        return TickResult()

    def fill(self, now: datetime, result: TickResult, until: object = None) -> None:
        raise AssertionError("no fill is due")


def test_a_reload_forgets_the_shedding_of_an_account_it_removed(tmp_path: Path) -> None:
    config = parse_config({"accounts": [{"name": "Home", "email": "a@b.c", "password": "pw"}]},
                          tmp_path / "vuegraf.json")
    stats = Stats()
    stats.set_shedding("Old name", Level.MINUTE.label)
    stats.set_shedding("Home", Level.NONE.label)
    clock = FakeClock(NOON, stop_after=NOON + timedelta(minutes=2))
    Daemon(config, [], [], clock, stats=stats, collectors=[Quiet()]).run()
    assert stats.snapshot().shedding == {"Home": ""}


def test_the_days_level_outlives_a_reload_and_ends_at_midnight(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At noon with 900 of a 1 000 budget used the live minute is spaced out. A reload then
    raises the budget to 2 000: the level reached stays until 00:00 UTC (as the README says),
    without a second WARNING; the next UTC day restores everything in one INFO line."""
    stats = Stats()
    with caplog.at_level(logging.INFO, logger="vuegraf.budget"):
        before = BudgetGuard("Home", 1000, 60, stats)
        assert before.plan(NOON, 900, PER_DAY, backlog=0).level is Level.MINUTE
        after = BudgetGuard("Home", 2000, 60, stats)  # the reload's new guard
        assert stats.snapshot().shedding == {"Home": "minute"}
        plan = after.plan(NOON + timedelta(minutes=1), 905, PER_DAY, backlog=0)
        assert plan.level is Level.MINUTE
        assert stats.snapshot().shedding == {"Home": "minute"}
        tomorrow = after.plan(datetime(2026, 12, 2, 0, 0, 20, tzinfo=UTC), 0, PER_DAY, 0)
        assert tomorrow.level is Level.NONE
    assert stats.snapshot().shedding == {"Home": ""}
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert "a new UTC day" in caplog.records[1].getMessage()


def test_a_level_from_an_earlier_day_is_not_handed_on() -> None:
    """A guard rebuilt after midnight (a reload at 00:00:30) starts the new day with nothing
    shed, whatever yesterday's level was."""
    stats = Stats()
    evening = datetime(2026, 12, 1, 23, 0, 20, tzinfo=UTC)
    BudgetGuard("Home", 1000, 60, stats).plan(evening, 990, PER_DAY, backlog=0)
    assert stats.snapshot().shedding == {"Home": "minute"}
    guard = BudgetGuard("Home", 2000, 60, stats)
    plan = guard.plan(datetime(2026, 12, 2, 0, 0, 30, tzinfo=UTC), 0, PER_DAY, backlog=0)
    assert plan.level is Level.NONE
    assert stats.snapshot().shedding == {"Home": ""}


def test_a_level_reached_again_the_next_day_is_handed_on_as_todays(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Yesterday and today both at `minute`: a reload today keeps today's level silently
    (it is not a new UTC day for the new guard)."""
    stats = Stats()
    guard = BudgetGuard("Home", 1000, 60, stats)
    guard.plan(datetime(2026, 12, 1, 23, 0, 20, tzinfo=UTC), 990, PER_DAY, backlog=0)
    guard.plan(datetime(2026, 12, 2, 0, 0, 20, tzinfo=UTC), 0, PER_DAY, backlog=0)
    assert guard.level is Level.MINUTE
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vuegraf.budget"):
        after = BudgetGuard("Home", 2000, 60, stats)
        plan = after.plan(datetime(2026, 12, 2, 6, 0, 20, tzinfo=UTC), 400, PER_DAY, 0)
    assert plan.level is Level.MINUTE
    assert not caplog.records
