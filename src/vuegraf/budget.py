"""The daily request budget as a guard: what an account leaves out so that its UTC day stays
under `dailyRequestBudget`.

Each tick the guard compares the requests Emporia saw today (every HTTP request, pyemvue's
retries included) with what steady running still needs until the next UTC midnight, and
sheds load in a fixed order, each level keeping the one before it:

1. `second`: second data. The most costly kind (a request per channel per run) and the one
   users can do without: the live minute and the holes are what the store is read for.
2. `fills`: hole fills are spread over the ticks left in the day (the spare divided over
   them), not made at once; what is left waits for the next UTC day (minutes are kept 7 days
   by Emporia, hours and days for years).
3. `minute`: the live minute is asked only on some ticks, spaced evenly over the rest of the
   day; the minutes skipped become holes, filled from chart data once the day rolls over. A
   small chart allowance stays for that (`fill_allowance`: three windows of 720 minutes per
   channel a day, at most half of what the live minute could have), spent only on holes of
   earlier UTC days: a budget below the steady need spaces the minute out every day, and
   without it the minutes skipped would leave Emporia's 7 days unfilled.

Never shed: the live hour and day (25 requests a day) and the device refresh. One usage
request brings every channel's hour at once, where filling a missed hour later costs a chart
request per channel, so skipping them would cost more than it saves; they are reserved first.

A level reached stays until the UTC day ends, so what is shed does not come and go as holes
open and close (and the log has one line per change); a reload's new guard goes on from it
(kept in `Stats` with its UTC day); each new UTC day starts again from nothing shed.
Pure decisions (`decide`, `spread`) plus one small stateful `BudgetGuard` per account that
remembers the day's level and says when it changes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum

from vuegraf.stats import Stats

logger = logging.getLogger(__name__)

DAY_SECS = 86400
# The kinds of `schedule.daily_request_estimate` that are never shed.
FIXED_KINDS = ("hour", "day", "devices")
# Chart requests a day kept at level `minute` per chart channel: a day's minutes are two
# windows of 720, and a third for where the first hole falls.
ALLOWANCE_WINDOWS = 3


def fill_allowance(channels: int) -> int:
    """Chart requests a day the level `minute` keeps for the holes of earlier days."""
    return ALLOWANCE_WINDOWS * channels


class Level(IntEnum):
    """What is shed: each level keeps everything the levels below it shed."""

    NONE = 0
    SECOND = 1
    FILLS = 2
    MINUTE = 3

    @property
    def label(self) -> str:
        """The name `Stats.set_shedding` and `/metrics` use ("" for nothing shed)."""
        return "" if self is Level.NONE else self.name.lower()


# What the levels shed, in the order they shed it (the labels of `Level`).
SHED_ORDER = tuple(level.label for level in Level if level is not Level.NONE)


@dataclass(frozen=True)
class Needs:
    """Requests steady running still needs from this tick (included) to the next UTC midnight."""

    minute: int  # one live minute request per tick
    fixed: int  # hours, the day, device refreshes: never shed
    second: int  # second data runs, and amps and volts (optional extras, shed with them)
    allowance: int = 0  # chart requests kept at level `minute` (`fill_allowance`)

    @property
    def live(self) -> int:
        return self.minute + self.fixed


@dataclass(frozen=True)
class DayPosition:
    """Where a tick lies in its UTC day."""

    ticks_left: int  # ticks from this one (included) to midnight
    seconds_left: int


@dataclass(frozen=True)
class Plan:
    """One tick's decisions."""

    level: Level
    seconds: bool  # second data may be fetched
    minute: bool  # the live minute may be asked
    fills: int  # chart requests for holes this tick may make (before the per-tick cap)
    credit: float = 0.0  # what `spread` carries to the next tick
    fill_credit: float = 0.0  # the same for the allowance's fills (level `minute`)
    old_holes_only: bool = False  # `fills` are for holes of earlier UTC days only


def position(now: datetime, interval_secs: int) -> DayPosition:
    """`now`'s tick in its UTC day."""
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    left = math.ceil((midnight + timedelta(days=1) - now).total_seconds())
    return DayPosition(ticks_left=max(1, -(-left // interval_secs)), seconds_left=left)


def needs(per_day: Mapping[str, int], at: DayPosition, allowance: int = 0) -> Needs:
    """What is left of a day's steady cost (`schedule.daily_request_estimate`'s figures, by
    kind) at `at`, each kind rounded up: the live minute one per tick left, the rest (and the
    day's chart `allowance`) in proportion to the time left."""

    def part(kind: str) -> int:
        return share(per_day.get(kind, 0))

    def share(per_day_count: int) -> int:
        return -(-per_day_count * at.seconds_left // DAY_SECS)

    return Needs(
        minute=at.ticks_left if "minute" in per_day else 0,
        fixed=sum(part(kind) for kind in FIXED_KINDS),
        second=part("second") + part("amps_volts"),
        allowance=share(allowance),
    )


def spread(allowance: int, ticks_left: int, credit: float) -> tuple[int, float]:
    """Requests this tick may make so that `allowance` lasts `ticks_left` ticks, and the
    credit to carry to the next tick: allowance / ticks_left is added to `credit` and its
    whole part asked (one request in three ticks is asked every third tick, not three in one
    tick). Never more than `allowance`, so ticks asked again with what is left never make more
    than the first allowance in all."""
    if allowance <= 0 or ticks_left <= 0:
        return 0, 0.0
    credit += allowance / ticks_left
    asks = min(allowance, math.floor(credit))
    return asks, credit - asks


def decide(
    used: int,
    budget: int,
    need: Needs,
    backlog: int,
    ticks_left: int,
    floor: Level = Level.NONE,
    credit: float = 0.0,
    fill_credit: float = 0.0,
) -> Plan:
    """The shedding level and this tick's decisions, from the requests `used` today, the
    day's `budget`, what steady running still `need`s until midnight (`ticks_left` ticks,
    this one included) and the chart requests the holes still need (`backlog`). The level
    is at least `floor` (the day's level so far); `credit` is what the last tick's plan at
    this level carried (`Plan.credit`, and `Plan.fill_credit` for the allowance)."""
    remaining = budget - used
    if remaining >= need.live + backlog + need.second:
        level = Level.NONE
    elif remaining >= need.live + backlog:
        level = Level.SECOND
    elif remaining >= need.live:
        level = Level.FILLS
    else:
        level = Level.MINUTE
    level = max(level, floor)
    spare = remaining - need.live
    minute = True
    if level is Level.NONE:
        fills = spare - need.second  # never eat second data's share either
    elif level is Level.SECOND:
        fills = spare
    elif level is Level.FILLS:
        fills, credit = spread(spare, ticks_left, credit)
    else:
        # The allowance for earlier days' holes, never more than half of what the live
        # minute could have: the minute is shed last.
        keep = min(need.allowance, max(0, remaining - need.fixed) // 2)
        fills, fill_credit = spread(keep, ticks_left, fill_credit)
        asks, credit = spread(remaining - need.fixed - keep, ticks_left, credit)
        minute = asks > 0
        return Plan(level, False, minute, fills, credit, fill_credit, old_holes_only=True)
    return Plan(level, level is Level.NONE, minute, max(0, fills), credit)


class BudgetGuard:
    """One account's budget guard: `plan` each tick. The level reached stays until the UTC
    day ends; each change is logged once and given to `stats` (`Stats.set_shedding`)."""

    def __init__(
        self, account: str, budget: int, interval_secs: int, stats: Stats | None = None
    ) -> None:
        self.account = account
        self.budget = budget
        self.interval_secs = interval_secs
        self.stats = stats
        self.level = Level.NONE
        self._day: date | None = None
        self._credit = 0.0
        self._fill_credit = 0.0
        self._allowance = 0  # the last plan's chart allowance a day (for the log line)
        if stats is not None:
            # A reload builds a new guard: the level the account reached today stays (until
            # 00:00 UTC, as always), and is not announced again.
            label, day = stats.shedding_of(account)
            if day is not None:
                self.level = Level[label.upper()] if label else Level.NONE
                self._day = day
            else:
                stats.set_shedding(account, Level.NONE.label)

    def counts_backlog(self, now: datetime) -> bool:
        """Whether the holes' backlog can change this tick's level: below `fills`, or on the
        first tick of a new UTC day (which starts again from nothing shed)."""
        return self.level < Level.FILLS or now.astimezone(UTC).date() != self._day

    def plan(
        self,
        now: datetime,
        used: int,
        per_day: Mapping[str, int],
        backlog: int,
        allowance: int = 0,
    ) -> Plan:
        """This tick's decisions. `used`: requests counted today; `per_day`: the steady
        day's cost by kind; `backlog`: chart requests the holes still need; `allowance`:
        chart requests a day kept for earlier days' holes at level `minute`."""
        self._allowance = allowance
        day = now.astimezone(UTC).date()
        floor = self.level
        new_day = day != self._day
        if new_day:
            self._day = day
            floor = Level.NONE  # a new UTC day: a new budget, nothing shed to begin with
            self._credit = 0.0
            self._fill_credit = 0.0
        at = position(now, self.interval_secs)
        result = decide(
            used, self.budget, needs(per_day, at, allowance), backlog, at.ticks_left, floor,
            self._credit, self._fill_credit,
        )
        self._credit = result.credit
        self._fill_credit = result.fill_credit
        if result.level != self.level:
            self.level = result.level
            self._credit = 0.0  # a credit of fills is none of the live minute's
            self._fill_credit = 0.0
            self._changed(result.level, used)
        elif new_day and self.stats is not None and self.level is not Level.NONE:
            # The same level again on a new day: it is today's now (for a reload's guard).
            self.stats.set_shedding(self.account, self.level.label, day)
        return result

    def _changed(self, level: Level, used: int) -> None:
        if self.stats is not None:
            self.stats.set_shedding(self.account, level.label, self._day)
        if level is Level.NONE:
            logger.info(
                "Account %s: a new UTC day: nothing is left out for the request budget any more",
                self.account,
            )
            return
        minute = (
            "second data is not fetched, no hole is filled and the live minute is asked only "
            "on some ticks; the minutes skipped are filled after 00:00 UTC"
        )
        if self._allowance:
            minute = (
                f"except for {self._allowance} chart requests a day for holes of earlier days, "
                + minute
            )
        what = {
            Level.SECOND: "second data is not fetched",
            Level.FILLS: "second data is not fetched and holes are filled a few requests a "
            "tick, the rest after 00:00 UTC",
            Level.MINUTE: minute,
        }[level]
        logger.warning(
            "Account %s: %d Emporia requests today; to stay under the %d a day budget until "
            "00:00 UTC, %s",
            self.account,
            used,
            self.budget,
            what,
        )
