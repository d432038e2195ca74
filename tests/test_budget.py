"""The budget guard's decisions (vuegraf.budget) with literal numbers: where a tick lies in its
UTC day, what steady running still needs until midnight, which level sheds what, how an
allowance is spread over the ticks left, and the guard's one line per change of level."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vuegraf.budget import BudgetGuard, DayPosition, Level, Needs, decide, needs, position, spread
from vuegraf.clock import FakeClock
from vuegraf.config import PrometheusConfig
from vuegraf.exporter import ExporterServer, LatestValues, VuegrafCollector
from vuegraf.stats import Stats

# The default config's steady day: a minute a tick (60 s), 24 hours, a day, 24 device reads,
# and second data for 28 channels hourly (24 x 28 = 672).
PER_DAY = {"minute": 1440, "hour": 24, "day": 1, "second": 672, "devices": 24}


def test_where_a_tick_lies_in_its_utc_day() -> None:
    first = datetime(2026, 12, 1, 0, 0, 20, tzinfo=UTC)
    assert position(first, 60) == DayPosition(ticks_left=1440, seconds_left=86380)
    noon = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert position(noon, 60) == DayPosition(ticks_left=720, seconds_left=43200)
    last = datetime(2026, 12, 1, 23, 59, 20, tzinfo=UTC)
    assert position(last, 60) == DayPosition(ticks_left=1, seconds_left=40)
    # A local time is placed in its UTC day: 19:00 in New York (UTC-5) is 00:00 UTC, the
    # first of 288 five-minute ticks.
    evening = datetime(2026, 12, 1, 19, 0, 0, tzinfo=ZoneInfo("America/New_York"))
    assert position(evening, 300) == DayPosition(ticks_left=288, seconds_left=86400)


def test_what_is_left_of_a_day_at_noon() -> None:
    at = DayPosition(ticks_left=720, seconds_left=43200)
    # 720 minutes; 12 hours + the day + 12 device reads; half of 672.
    assert needs(PER_DAY, at) == Needs(minute=720, fixed=25, second=336)
    # Kinds a config turns off are not in the estimate, so nothing is reserved for them.
    assert needs({"minute": 1440, "devices": 24}, at) == Needs(minute=720, fixed=12, second=0)


def test_a_last_tick_still_reserves_every_kind_it_may_make() -> None:
    at = DayPosition(ticks_left=1, seconds_left=40)
    assert needs(PER_DAY, at) == Needs(minute=1, fixed=3, second=1)


NOON = Needs(minute=720, fixed=25, second=336)  # live: 745


@pytest.mark.parametrize(
    "used, backlog, level, seconds, fills",
    [
        # 1 500 left: 745 live + 336 second data + 0 holes fit, 419 spare for holes.
        (500, 0, Level.NONE, True, 419),
        # 500 chart requests of holes: 745 + 500 fit, + 336 not: second data goes first;
        # holes may use everything beyond the live share (755).
        (500, 500, Level.SECOND, False, 755),
        # 900 of holes do not fit beside the live share: spread, 755 over 720 ticks is 1.
        (500, 900, Level.FILLS, False, 1),
        # 400 left of a 2 000 budget, but 745 live requests to come: no fill at all.
        (1600, 0, Level.MINUTE, False, 0),
    ],
)
def test_the_levels_in_their_order(
    used: int, backlog: int, level: Level, seconds: bool, fills: int
) -> None:
    plan = decide(used, 2000, NOON, backlog, ticks_left=720)
    assert (plan.level, plan.seconds, plan.fills) == (level, seconds, fills)


def test_the_live_minute_is_spaced_only_at_the_last_level() -> None:
    # 1 600 used: 400 left, 25 of them for hours, the day and device reads: 375 minutes for
    # 720 ticks, about one tick in two.
    asked: list[int] = []
    credit = 0.0
    for tick in range(10):
        plan = decide(1600 + sum(asked), 2000, NOON, 0, ticks_left=720 - tick, credit=credit)
        credit = plan.credit
        asked.append(1 if plan.minute else 0)
    assert asked == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    for used in (500, 1254):  # 1 254 used: 746 left, one more than the live share
        assert decide(used, 2000, NOON, 0, ticks_left=720).minute


def test_the_level_reached_today_stays() -> None:
    plan = decide(0, 2000, NOON, 0, ticks_left=720, floor=Level.FILLS)
    assert plan.level is Level.FILLS
    assert not plan.seconds
    # The spare (1 255) spread over 720 ticks: 1, the rest carried.
    assert plan.fills == 1
    assert plan.credit == pytest.approx(1255 / 720 - 1)


@pytest.mark.parametrize(
    "allowance, ticks, asked_at",
    [
        (3, 10, [2, 5, 8]),
        (1, 4, [2]),  # 1/4 + 1/3 + 1/2: a whole request at the third tick
        (4, 4, [0, 1, 2, 3]),
        (0, 5, []),
    ],
)
def test_an_allowance_is_spread_evenly(allowance: int, ticks: int, asked_at: list[int]) -> None:
    got = []
    left, credit = allowance, 0.0
    for tick in range(ticks):
        asks, credit = spread(left, ticks - tick, credit)
        left -= asks
        got += [tick] * asks
    assert got == asked_at


@pytest.mark.parametrize("allowance, ticks", [(700, 1440), (2000, 1440), (50, 1440), (675, 720)])
def test_a_spread_allowance_is_used_up_and_never_passed(allowance: int, ticks: int) -> None:
    left, credit, gaps, last = allowance, 0.0, [], None
    for tick in range(ticks):
        asks, credit = spread(left, ticks - tick, credit)
        assert asks <= left
        left -= asks
        if asks:
            if last is not None:
                gaps.append(tick - last)
            last = tick
    assert left == 0
    # Evenly: the gaps between requests differ by two ticks at most.
    assert max(gaps) - min(gaps) <= 2


def test_the_guard_says_each_change_once_and_a_new_day_restores(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A budget of 1 000 against a steady 1 489 (no second data): the live minute is spaced
    from the first tick; the day's requests stay within the budget; the next UTC day, with
    a budget of 2 000, restores everything in one line."""
    stats = Stats()
    guard = BudgetGuard("Home", 1000, 60, stats)
    per_day = {"minute": 1440, "hour": 24, "day": 1, "devices": 24}
    start = datetime(2026, 12, 1, 0, 0, 20, tzinfo=UTC)
    used = 0
    minutes = 0
    with caplog.at_level(logging.INFO, logger="vuegraf.budget"):
        for tick in range(1440):
            now = start + timedelta(minutes=tick)
            plan = guard.plan(now, used, per_day, backlog=0)
            assert plan.fills == 0 and not plan.seconds
            minutes += plan.minute
            # What the tick asks: the minute if allowed, the hour at each hour's first tick,
            # the day at the first, a device read each hour.
            used += plan.minute + 2 * (tick % 60 == 0) + (tick == 0)
        assert used <= 1000
        # 1 000 less the 49 never shed; each of those three kinds is rounded up when
        # reserved, so up to 3 may be left unused.
        assert 1000 - 49 - 3 <= minutes <= 1000 - 49
        assert stats.snapshot().shedding == {"Home": "minute"}
        guard.budget = 2000
        plan = guard.plan(start + timedelta(days=1), 0, per_day, backlog=0)
    assert plan == decide(0, 2000, Needs(1440, 49, 0), 0, 1440)
    assert plan.level is Level.NONE
    assert stats.snapshot().shedding == {"Home": ""}
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("WARNING", "Account Home: 0 Emporia requests today; to stay under the 1000 a day budget "
         "until 00:00 UTC, second data is not fetched, no hole is filled and the live minute is "
         "asked only on some ticks; the minutes skipped are filled after 00:00 UTC"),
        ("INFO", "Account Home: a new UTC day: nothing is left out for the request budget any "
         "more"),
    ]


def test_metrics_say_what_each_account_sheds() -> None:
    """`vuegraf_budget_shedding{account,what}`: 1 for each kind the account's level leaves
    out (a level keeps what the levels below it shed), 0 for the rest."""
    stats = Stats()
    BudgetGuard("Cabin", 2000, 60, stats)  # a guard starts with nothing shed
    stats.set_shedding("Home", "fills")
    server = ExporterServer(PrometheusConfig(port=0), VuegrafCollector(LatestValues(FakeClock(
        datetime(2026, 12, 1, tzinfo=UTC))), stats), health=lambda: True, runtime_metrics=False)
    (family,) = [f for f in text_string_to_metric_families(server.metrics_text().decode())
                 if f.name == "vuegraf_budget_shedding"]
    assert family.type == "gauge"
    assert {(s.labels["account"], s.labels["what"]): s.value for s in family.samples} == {
        ("Cabin", "second"): 0.0, ("Cabin", "fills"): 0.0, ("Cabin", "minute"): 0.0,
        ("Home", "second"): 1.0, ("Home", "fills"): 1.0, ("Home", "minute"): 0.0,
    }


def test_a_new_utc_day_counts_from_zero_before_its_first_request() -> None:
    """The guard's first plan of a day comes before that day's first request: yesterday's
    count must not be taken for today's."""
    stats = Stats()
    evening = datetime(2026, 12, 1, 23, 59, 30, tzinfo=UTC)
    for _ in range(3):
        stats.count_request("Home", "getDeviceListUsages", "ok", evening)
    assert stats.requests_today("Home", evening) == 3
    assert stats.requests_today("Home", evening + timedelta(minutes=1)) == 0
    assert stats.requests_today("Home") == 3  # without a time: the day last counted
