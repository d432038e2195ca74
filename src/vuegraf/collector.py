"""One account's collection: live values each tick, hour and day rollovers, second
data, and filling every hole the trackers know of.

Requests per tick in steady state: one getDeviceListUsages for the minute, one
more after each UTC hour and each local midnight, two more (AmpHours, Voltage) after
each bucket of an account's `ampsVolts` scale, plus second-data chart
requests every `detailedIntervalSecs`. Chart requests for holes are made only
when a tracker says a series is behind, and are capped per tick so a long
backfill never makes live collection late (the rest continues next tick).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Protocol

from vuegraf import backoff
from vuegraf.backfill import NO_VALUE, RETENTION_LOST, SHED, FillRequest, Holes, SeriesKey, Tracker
from vuegraf.budget import BudgetGuard, Level, Plan, fill_allowance
from vuegraf.computed import ComputedHoles
from vuegraf.emporia import EmporiaAccount, EmporiaError, EmporiaRateLimited, EmporiaStopped
from vuegraf.emporia.limits import (
    DEFAULT_LOOKBACK,
    ScaleSwitches,
    enabled_scales,
    second_data_enabled,
)
from vuegraf.marks import MarksFile, SavedHoles
from vuegraf.model import Point, Scale, Unit
from vuegraf.naming import NO_CHART_CHANNELS
from vuegraf.schedule import (
    bucket_start,
    daily_request_estimate,
    last_complete_bucket,
    point_time,
)
from vuegraf.sinks.base import ReadsBack, SinkError
from vuegraf.statelog import StateLog

logger = logging.getLogger(__name__)
# One line per chart request made for a hole: dozens a cycle while a start-up fill runs, so
# they have a logger of their own that only -d (not -v) shows.
request_logger = logging.getLogger(f"{__name__}.requests")

# Chart requests for holes per tick and account; the rest waits for the next tick.
MAX_FILL_REQUESTS_PER_TICK = 60
# A live bucket Emporia answered with another bucket's values (a day total for up to an hour
# after midnight) is asked for again this much later: soon enough to write its computed
# channels, which have no chart data, within minutes of the answer coming right; seldom
# enough to cost a dozen requests in that hour, not one a tick.
MISDATED_RETRY = timedelta(minutes=5)
# Spare requests beyond the chart reserve that computed channels' fills leave unspent, so the
# guard's rounding (each kind of the day's need rounded up) never finds the live minute short.
CHART_RESERVE_MARGIN = 10

Emit = Callable[[Sequence[Point], bool], None]  # (points, live)


class CollectorSettings(ScaleSwitches, Protocol):
    """The settings an account's collection reads (a `Config` has them all)."""

    @property
    def zone(self) -> tzinfo: ...
    @property
    def update_interval_secs(self) -> int: ...
    @property
    def lag_secs(self) -> int: ...
    @property
    def add_station_field(self) -> bool: ...
    @property
    def detailed_interval_secs(self) -> int: ...
    @property
    def detailed_data_channels(self) -> tuple[str, ...] | None: ...
    @property
    def max_history_days(self) -> int: ...
    @property
    def device_refresh_secs(self) -> int: ...
    @property
    def daily_request_budget(self) -> int: ...
    @property
    def state_dir(self) -> Path | None: ...


@dataclass
class TickResult:
    points: int = 0
    errors: list[str] = field(default_factory=list)  # live values or start-up failed
    fill_errors: list[str] = field(default_factory=list)  # chart requests for holes failed
    fill_requests: int = 0  # chart requests made for holes (failed ones included)
    fill_points: int = 0  # points those requests brought (also counted in `points`)
    not_before: datetime | None = None  # Emporia answered 429: ask nothing before this
    stopped: bool = False  # a stop cut the tick short: neither an outage nor a recovery
    fill_due: bool = False  # live values worked: holes may be filled (`AccountCollector.fill`)
    failure: EmporiaError | None = None  # the first live or start-up failure: whose side
    fill_failure: EmporiaError | None = None  # the first failed chart request's: whose side

    def live_failed(self, what: str, err: EmporiaError) -> None:
        """Live values (or the start-up) failed: the tick's outcome, and whose side it was
        on (the first failure's class), for the account's state."""
        self.errors.append(f"{what}: {err}")
        self.failure = self.failure or err
        self.rate_limited(err)

    def fill_failed(self, what: str, err: EmporiaError) -> None:
        """A request for a hole failed: whose side, for the account's state (a 429 vuegraf
        held back itself, not sent, is no failure), and a 429's Retry-After."""
        self.rate_limited(err)
        if isinstance(err, EmporiaRateLimited) and not err.sent:
            return
        self.fill_errors.append(f"{what}: {err}")
        self.fill_failure = self.fill_failure or err

    def rate_limited(self, err: EmporiaError) -> None:
        """Keep a 429's Retry-After, so the loop does not ask before it."""
        if isinstance(err, EmporiaRateLimited):
            self.not_before = max(self.not_before or err.not_before, err.not_before)

    @property
    def ok(self) -> bool:
        """Live collection worked; a failed hole fill is retried next tick, not an outage."""
        return not self.errors


@dataclass
class FillRun:
    """A hole fill that takes more than one tick (a first start fills 7 days of minutes):
    what it has done so far, for one progress line a tick."""

    started: datetime
    requests: int = 0
    points: int = 0


class AccountCollector:
    def __init__(
        self,
        account: EmporiaAccount,
        config: CollectorSettings,
        emit: Emit,
        store: ReadsBack | None,
        settle_secs: float = 120.0,
        max_fill_requests: int = MAX_FILL_REQUESTS_PER_TICK,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.account = account
        self.config = config
        self.emit = emit
        self.store = store
        self.settle_secs = settle_secs
        self.max_fill_requests = max_fill_requests
        self.should_stop = should_stop  # SIGTERM: finish the request in hand, start no more
        self.scales = enabled_scales(config)
        self.seconds_enabled = second_data_enabled(config)
        tracked = self.scales + ([Scale.SECOND] if self.seconds_enabled else [])
        self.trackers = {s: Tracker(s, config.zone, settle_secs) for s in tracked}
        # Balance and the other channels without chart data: filled by usage requests for
        # past buckets (vuegraf.computed), learned from the usage answers.
        self.computed = ComputedHoles(self.scales, config.zone, settle_secs)
        # The store's newest time of every series it holds, by name, as read at start-up:
        # where a computed series learned later is followed from.
        self._stored_names: dict[Scale, dict[tuple[str, str], datetime]] = {}
        self._learned = False  # a computed series was first seen: its holes to be saved
        self._lost_log = StateLog(logger, f"Account {account.name}, values lost", logging.WARNING)
        self._live_done: dict[Scale, datetime] = {}
        # Per scale: the live bucket Emporia answered for another, and when to ask again.
        self._misdated: dict[Scale, tuple[datetime, datetime]] = {}
        self.marks = MarksFile(config.state_dir, account.name)
        self._saved_marks: SavedHoles = {}
        self.started_at: datetime | None = None  # first tick: the store is read up to here
        self._seconds_due: datetime | None = None
        self._started = False  # devices read
        self._seeded = False  # every series has a mark: holes made from then on are filled
        self._store_read = False  # the store said where its series end, or never can
        self._read_failures = 0  # retryable read-back failures so far
        self._read_skip = 0  # ticks to let pass before asking the store again
        self._fill_run: FillRun | None = None  # a fill that outlasts one tick
        self._fill_until: Callable[[], bool] | None = None  # set while `fill` runs
        # The daily request budget as a guard (vuegraf.budget): this tick's plan, made by `live`.
        self.guard = BudgetGuard(
            account.name, config.daily_request_budget, config.update_interval_secs, account.stats
        )
        self._plan: Plan | None = None
        # Amps and volts (optional): the live bucket only, one attempt each (no hole fill).
        self.amps_volts = account.account.amps_volts
        self._amps_volts_done: datetime | None = None
        self._amps_volts_state = StateLog(
            logger, f"Account {account.name}, amps and volts", logging.WARNING
        )

    @property
    def name(self) -> str:
        return self.account.name

    # -- start-up ------------------------------------------------------------------

    def start(self) -> None:
        """First tick: read the account's devices and say what a day will cost.

        Raises EmporiaError (tried again next tick)."""
        self.account.refresh_devices_if_due()
        self._saved_marks = self.marks.load()
        self._started = True
        self._log_budget()

    def seed(self, now: datetime) -> bool:
        """Seed the trackers from the store's newest time of every series (one query per
        scale), then fill holes. False while that read waits for a retry.

        A store that cannot answer costs the backfill at most, never the live collection:
        - a retryable failure (down, 5xx, 401/403) is logged once and asked again on later
          ticks (backing off, `backoff.STORE_READ`). Meanwhile holes made from now on (an
          Emporia outage) are tracked and filled: each series starts from the mark the
          previous run saved, or else from this process's first live bucket (no 7-day
          refetch because the store came up late). Once it answers, marks move back to
          where the store's series end, so holes from before the start are filled too. The
          read stops before this process's first live point (`_first_live`), so a late
          answer is as right as an early one;
        - a non-retryable one (no read API, see sinks/readback.py) turns backfill from the
          store off: the marks the previous run saved in the state dir are used instead,
          the lookback for series without one.
        """
        if self.store is None:
            # No store to compare with (--dryrun): collect from now on, fill nothing old.
            for scale, tracker in self.trackers.items():
                tracker.seed(self._series_for(scale), {}, now, timedelta(0))
            self._seeded = self._store_read = True
            return True
        if self._read_skip > 0:
            self._read_skip -= 1
            return False
        try:
            stored = self._read_store(now)
        except SinkError as err:
            if err.retryable:
                self._read_failed(err, now)
                return False
            logger.warning(
                "Account %s: %s cannot answer the read back (%s); backfill from the store is "
                "off, holes are filled from %s",
                self.name,
                self.store.name,
                err,
                f"the marks the last run saved in {self.marks.path}"
                if self._saved_marks
                else "the lookback (no marks saved by a last run)",
            )
            self._seed_trackers(now, None)
            return True
        if self._read_failures:
            logger.info(
                "Account %s: read back from %s after %d failed attempts; filling holes",
                self.name,
                self.store.name,
                self._read_failures,
            )
        self._seed_trackers(now, stored)
        return True

    def _read_failed(self, err: SinkError, now: datetime) -> None:
        assert self.store is not None
        self._read_failures += 1
        self._read_skip = backoff.STORE_READ.skipped(self._read_failures)
        if self._read_failures == 1:
            logger.warning(
                "Account %s: cannot read back from %s (%s); collecting live values meanwhile, "
                "holes from before this start are filled once it answers",
                self.name,
                self.store.name,
                err,
            )
            self._seed_meanwhile(now)
        else:
            logger.debug(
                "Account %s: read back from %s still failing (%d attempts): %s",
                self.name,
                self.store.name,
                self._read_failures,
                err,
            )

    def _seed_meanwhile(self, now: datetime) -> None:
        """The store cannot say yet where its series end: track every series from vuegraf's
        own record, the mark the previous run saved, or else from this process's first live
        bucket, so holes made from now on are filled while the read is asked again."""
        saved_for = 0
        total = 0
        for scale, tracker in self.trackers.items():
            keys = self._series_for(scale)
            saved = self._saved_marks.get(scale, {})
            first = self._first_live_bucket(scale, now)
            marks: dict[SeriesKey, Holes | datetime] = {key: saved.get(key, first) for key in keys}
            tracker.seed_from_marks(
                keys, marks, now, self._lookback(scale), self._stored_lookback(scale)
            )
            saved_for += len([k for k in keys if k in saved])
            total += len(keys)
        self._seeded = True
        logger.info(
            "Account %s: until the store answers, holes are tracked from the marks the last "
            "run saved (%d of %d series) and from this start (the rest)",
            self.name,
            saved_for,
            total,
        )

    def _seed_trackers(
        self, now: datetime, stored: dict[Scale, dict[SeriesKey, datetime]] | None
    ) -> None:
        """`stored`: the store's answer; None when it cannot answer (marks only). When the
        trackers were seeded meanwhile (`_seed_meanwhile`), marks only move back."""
        if self._seeded:
            self._lower_marks(now, stored)
            return
        for scale, tracker in self.trackers.items():
            keys = self._series_for(scale)
            saved = self._saved_marks.get(scale, {})
            if stored is None:
                tracker.seed_from_marks(
                    keys, saved, now, self._lookback(scale), self._stored_lookback(scale)
                )
                logger.info(
                    "Account %s: %s marks saved for %d of %d series",
                    self.name,
                    scale.name.lower(),
                    len([k for k in keys if k in saved]),
                    len(keys),
                )
                continue
            last = stored.get(scale, {})
            tracker.seed(
                keys, last, now, self._lookback(scale), saved, self._stored_lookback(scale)
            )
            logger.info(
                "Account %s: %s data stored for %d of %d series",
                self.name,
                scale.name.lower(),
                len(last),
                len(keys),
            )
        self._seeded = self._store_read = True
        # Saved at once: a kill -9 inside this first tick must not leave only the store's
        # newest point (the live minute written next) to go by at the next start.
        self.save_marks()

    def _lower_marks(
        self, now: datetime, stored: dict[Scale, dict[SeriesKey, datetime]] | None
    ) -> None:
        """The late answer: each series' mark goes back to the bucket after its newest stored
        point (bounded by the lookback). None (the store can never answer): series without
        a saved mark go back to the lookback, as at a start without marks."""
        for scale, tracker in self.trackers.items():
            saved = self._saved_marks.get(scale, {})
            keys = list(tracker.series)
            last = stored.get(scale, {}) if stored is not None else {}
            if stored is None:
                keys = [k for k in keys if k not in saved]
            moved = tracker.lower_to_stored(
                keys, last, now, self._lookback(scale), self._stored_lookback(scale)
            )
            if stored is not None and scale in self.computed.trackers:
                by_name = self._names_to_keys(list(self.computed.trackers[scale].series))
                names = self._stored_names.get(scale, {})
                moved += self.computed.lower_to_stored(
                    scale, {by_name[n]: t for n, t in names.items() if n in by_name}, now
                )
            if stored is not None:
                logger.info(
                    "Account %s: %s data stored for %d of %d series; %d filled from further back",
                    self.name,
                    scale.name.lower(),
                    len(last),
                    len(tracker.series),
                    moved,
                )
            else:
                logger.info(
                    "Account %s: %s: %d series without a saved mark filled from the lookback",
                    self.name,
                    scale.name.lower(),
                    moved,
                )
        self._store_read = True
        self.save_marks()

    def _per_day(self) -> dict[str, int]:
        """Requests a steady day costs this account, by kind."""
        seconds = len(self._series_for(Scale.SECOND)) if self.seconds_enabled else 0
        return daily_request_estimate(
            self.config.update_interval_secs,
            Scale.HOUR in self.scales,
            Scale.DAY in self.scales,
            seconds,
            self.config.detailed_interval_secs,
            self.config.device_refresh_secs,
            self.amps_volts.scale if self.amps_volts is not None else None,
        )

    def _log_budget(self) -> None:
        estimate = self._per_day()
        total = sum(estimate.values())
        parts = ", ".join(f"{k} {v}" for k, v in estimate.items())
        budget = self.config.daily_request_budget
        if total > budget:
            # The advice names what pushed the account over: the larger of second data and
            # device reads where either is more than the hourly device read of the
            # defaults, else the minute interval.
            advice = {
                "second": "restrict second data with detailedDataChannels or raise "
                "detailedIntervalSecs",
                "devices": "raise deviceRefreshSecs",
                "minute": "raise updateIntervalSecs",
            }
            extra = max(("second", "devices"), key=lambda k: estimate.get(k, 0))
            biggest = extra if estimate.get(extra, 0) > 24 else "minute"
            logger.warning(
                "Account %s: about %d Emporia requests a day (%s), over the %d Emporia asks "
                "clients to stay under; %s",
                self.name,
                total,
                parts,
                budget,
                advice[biggest],
            )
        else:
            logger.info(
                "Account %s: about %d Emporia requests a day (%s) of a %d budget, plus filling "
                "holes",
                self.name,
                total,
                parts,
                budget,
            )

    def save_marks(self) -> None:
        """Persist the trackers' holes so a restart still knows the ones the store cannot show
        (nothing to keep before the trackers are seeded, nor without a store)."""
        if self.store is None or not self._seeded:
            return
        holes = {scale: tracker.holes() for scale, tracker in self.trackers.items()}
        for scale, computed in self.computed.holes().items():
            # A computed series is followed once a live answer has it: until then (Emporia
            # down at the start), the holes the last run saved for it are kept as they were.
            waiting = {
                key: saved
                for key, saved in self._saved_marks.get(scale, {}).items()
                if key[1] in NO_CHART_CHANNELS and key not in computed
                and key not in self.computed.trackers[scale].retired
            }
            holes[scale] = {**holes.get(scale, {}), **waiting, **computed}
        self.marks.save(holes)

    def _read_store(self, now: datetime) -> dict[Scale, dict[SeriesKey, datetime]]:
        assert self.store is not None
        result: dict[Scale, dict[SeriesKey, datetime]] = {}
        for scale, tracker in self.trackers.items():
            keys = self._series_for(scale)
            since = tracker.earliest(now, self._stored_lookback(scale))
            stored = self.store.last_times(self.name, scale, since, self._first_live(scale, now))
            if scale is not Scale.SECOND:
                self._stored_names[scale] = stored
            by_name = self._names_to_keys(keys)
            result[scale] = {by_name[k]: t for k, t in stored.items() if k in by_name}
        return result

    def _first_live(self, scale: Scale, now: datetime) -> datetime:
        """Stamp of the first live point this process writes for `scale`: the store is read
        only before it, so values this process wrote (or queued and replayed) while the store
        could not be read yet never hide the hole behind them."""
        started = self.started_at or now
        if scale is Scale.SECOND:
            return started - timedelta(seconds=self.config.lag_secs + 1)
        first = self._first_live_bucket(scale, now)
        return point_time(scale, first, self.config.zone)

    def _first_live_bucket(self, scale: Scale, now: datetime) -> datetime:
        """Start of the first bucket this process collects for `scale`."""
        return self._newest_bucket(scale, self.started_at or now)

    def _newest_bucket(self, scale: Scale, at: datetime) -> datetime:
        """Start of the newest bucket of `scale` complete at `at` (seconds: the newest second
        a fetch at `at` asks for)."""
        if scale is Scale.SECOND:
            newest = at - timedelta(seconds=self.config.lag_secs + 1)
            return newest.replace(microsecond=0)
        return last_complete_bucket(scale, at, self.config.lag_secs, self.config.zone)

    def _stored_lookback(self, scale: Scale) -> timedelta:
        """How far back a series with stored points is followed: hours and days as far as
        maxHistoryDays (Emporia keeps them for years), seconds and minutes their retention."""
        if scale in (Scale.HOUR, Scale.DAY):
            return timedelta(days=self.config.max_history_days)
        return DEFAULT_LOOKBACK[scale]

    def _lookback(self, scale: Scale) -> timedelta:
        if scale in (Scale.HOUR, Scale.DAY):
            return min(DEFAULT_LOOKBACK[scale], timedelta(days=self.config.max_history_days))
        return DEFAULT_LOOKBACK[scale]

    def _series_for(self, scale: Scale) -> list[SeriesKey]:
        keys = self.account.chart_channels()
        if scale is Scale.SECOND and self.config.detailed_data_channels:
            wanted = set(self.config.detailed_data_channels)
            keys = [k for k in keys if self.account.series_name(*k)[1] in wanted]
        return keys

    def _names_to_keys(self, keys: list[SeriesKey]) -> dict[tuple[str, str], SeriesKey]:
        result = {}
        for key in keys:
            device, channel = self.account.series_name(*key)
            result[(device if self.config.add_station_field else "", channel)] = key
        return result

    # -- each tick -----------------------------------------------------------------

    def live(self, now: datetime) -> TickResult:
        """The first half of a tick: start-up, the store's read back, live values. Its
        result says whether `fill` may follow (`fill_due`): the daemon runs every account's
        live half before any account's holes, so a long fill never makes a minute late."""
        result = TickResult()
        if self.started_at is None:
            self.started_at = now
        if not self._started:
            try:
                self.start()
            except EmporiaStopped:
                result.stopped = True  # not Emporia's fault: nothing to report
                return result
            except EmporiaError as err:
                result.live_failed("start-up", err)
                return result
        if not self._store_read:
            self.seed(now)  # a store that cannot answer yet delays old holes, not collection
        plan = self._plan = self._budget_plan(now)
        for scale in self.scales:
            if scale is Scale.MINUTE and not plan.minute:
                continue  # the budget spaces the live minute out: a hole, filled tomorrow
            if not self.should_stop() and not result.stopped:
                self._live(scale, now, result)
        # Amps and volts are extras: the budget sheds them with second data, first.
        if (
            self.amps_volts is not None
            and plan.seconds
            and not result.errors
            and result.not_before is None
        ):
            if not self.should_stop() and not result.stopped:
                self._live_amps_volts(self.amps_volts.scale, now, result)
        if result.errors or result.stopped or not self._seeded:
            # Live collection failed (Emporia is likely down) or a stop cut it short: holes
            # wait for a tick that can fill them.
            self.save_marks()
            return result
        if self._learned:
            # A computed series first seen: its hole behind this live bucket is saved now, so
            # a kill -9 during this tick's fill does not forget it.
            self._learned = False
            self.save_marks()
        result.fill_due = True
        return result

    def _budget_plan(self, now: datetime) -> Plan:
        """This tick's plan from the budget guard. The holes' backlog is counted only while
        it can still change the level (below `fills`, or a new UTC day). It is the chart
        requests only: the computed channels' buckets (a usage request each) take what the
        day has to spare and never make the guard shed second data or spread chart fills."""
        backlog = 0
        if self._seeded and self.guard.counts_backlog(now):
            backlog = self._backlog(now, computed=False)
        used = self.account.stats.requests_today(self.name, now)
        minutes = self.trackers.get(Scale.MINUTE)
        allowance = fill_allowance(len(minutes.series)) if minutes is not None else 0
        return self.guard.plan(now, used, self._per_day(), backlog, allowance)

    def fill(
        self, now: datetime, result: TickResult, until: Callable[[], bool] | None = None
    ) -> None:
        """The second half of a tick: chart requests for holes, at most `max_fill_requests`
        and what the budget guard allows, and none once `until()` says the time for them is
        over (the next tick is near)."""
        self._fill_until = until
        plan = self._plan
        try:
            if self.seconds_enabled and (self._seconds_due is None or now >= self._seconds_due):
                self._seconds_due = now + timedelta(seconds=self.config.detailed_interval_secs)
                if plan is None or plan.seconds:
                    self._fill(Scale.SECOND, now, result, budget=None)
                else:
                    self._shed_seconds(now)
            budget = self.max_fill_requests
            before: datetime | None = None
            if plan is not None:
                budget = min(budget, plan.fills)
                if plan.old_holes_only:
                    # The allowance of a day that spaces its minute out: earlier days' holes
                    # (yesterday's skipped minutes), in whole windows; today's wait.
                    before = now.astimezone(UTC).replace(hour=0, minute=0, second=0,
                                                         microsecond=0)
            # The computed channels' buckets (a usage request each) never spend the day's
            # last spare requests: those stay for chart holes (one brings 720 minutes of a
            # channel), so Balance's holes never make the guard space the live minute out.
            computed = budget
            if plan is not None:
                computed = max(0, min(budget, plan.fills - self._chart_reserve()))
            # Unless the budget is short, the computed channels' missing buckets first, up to
            # half of the tick's requests (one usage request brings every chart channel's
            # bucket too: a short outage costs a request per minute, not one per channel),
            # then chart requests, then computed buckets again with whatever is left.
            if plan is None or plan.level < Level.FILLS:
                made = self._fill_computed(
                    now, result, min(computed, max(0, budget) // 2 or budget), before
                )
                budget -= made
                computed -= made
            for scale in self.scales:
                budget -= self._fill(scale, now, result, budget=budget, before=before)
            self._fill_computed(now, result, min(budget, computed), before)
        finally:
            self._fill_until = None
        self.save_marks()
        self._report_fill(now, result)
        self._report_lost(now)

    def _shed_seconds(self, now: datetime) -> None:
        """The budget sheds second data: the seconds of this run are given up, not left as
        a hole (Emporia keeps them 3 hours: asking for them when the budget allows again
        would be a burst of requests for data about to go)."""
        tracker = self.trackers[Scale.SECOND]
        newest = self._newest_bucket(Scale.SECOND, now)
        for _ in range(10):  # one window per series and round; 3 hours are 3 windows
            requests = tracker.due(now, newest)
            if not requests:
                break
            for request in requests:
                tracker.give_up(request, SHED)

    def _backlog(self, now: datetime, computed: bool = True) -> int:
        """Requests still needed to fill every hole: chart windows, and (with `computed`)
        one usage request per bucket the computed channels lack."""
        newest = {scale: self._newest_bucket(scale, now) for scale in self.scales}
        charts = sum(self.trackers[scale].backlog(now, newest[scale]) for scale in self.scales)
        return charts + (self.computed.backlog(now, newest) if computed else 0)

    def _report_fill(self, now: datetime, result: TickResult) -> None:
        """One INFO line a tick while a fill takes several ticks: requests made of those
        needed, points so far and the time left at this tick's pace; one more when it is
        done. A fill that one tick finishes (a short outage) is a DEBUG line."""
        if not result.fill_requests:
            return
        # Second data is fetched every detailedIntervalSecs, not worked through tick by
        # tick: it would always look a little behind. Its requests count as done, not left.
        left = self._backlog(now)
        run = self._fill_run or FillRun(started=now)
        run.requests += result.fill_requests
        run.points += result.fill_points
        if left:
            self._fill_run = run
            ticks_left = -(-left // max(1, self.max_fill_requests))
            logger.info(
                "Account %s: filling holes: %d of %d chart requests done (%d%%), %d points so "
                "far, about %s left",
                self.name,
                run.requests,
                run.requests + left,
                100 * run.requests // (run.requests + left),
                run.points,
                _duration(ticks_left * self.config.update_interval_secs),
            )
        elif self._fill_run is not None:
            self._fill_run = None
            logger.info(
                "Account %s: holes filled: %d chart requests, %d points in %s",
                self.name,
                run.requests,
                run.points,
                _duration((now - run.started).total_seconds()),
            )
        else:
            logger.debug(
                "Account %s: holes filled: %d chart requests, %d points",
                self.name,
                run.requests,
                run.points,
            )

    def _live(self, scale: Scale, now: datetime, result: TickResult) -> None:
        """getDeviceListUsages for the newest complete bucket, once per bucket (again every
        `MISDATED_RETRY` while Emporia answers it with another bucket's values)."""
        newest = last_complete_bucket(scale, now, self.config.lag_secs, self.config.zone)
        if self._live_done.get(scale) == newest:
            return
        misdated = self._misdated.get(scale)
        if misdated is not None and misdated[0] == newest and now < misdated[1]:
            return
        stamp = point_time(scale, newest, self.config.zone)
        # A day bucket is asked for by its middle, robust to Emporia's own day boundaries.
        instant = newest + timedelta(hours=12) if scale is Scale.DAY else newest
        try:
            points = self.account.bucket_points(scale, instant, stamp)
        except EmporiaStopped:
            result.stopped = True  # asked again by the next start, like any missed bucket
            return
        except EmporiaError as err:
            result.live_failed(scale.value, err)
            return
        if points is None:
            # Answered for another bucket (the catalogue said so): nothing written, and the
            # bucket is not done. The hole filler brings its chart channels meanwhile; only
            # a right answer brings the computed ones (Balance, TotalUsage, Mains*Grid).
            self._misdated[scale] = (newest, now + MISDATED_RETRY)
            return
        self._misdated.pop(scale, None)
        self._live_done[scale] = newest
        self.emit(points, True)
        result.points += len(points)
        self._mark_stored(scale, newest, points, now, learn=True)
        if self._seeded:
            self._adopt_new_series(now)

    def _mark_stored(
        self, scale: Scale, bucket: datetime, points: Sequence[Point], now: datetime, learn: bool
    ) -> set[SeriesKey]:
        """A usage answer's points for `bucket` were written: each series' holes know it.
        With `learn` (a live answer), a computed series seen for the first time is followed
        from here on (`_follow_computed`). Returns the computed series that had a value."""
        tracker = self.trackers[scale]
        known = self._names_to_keys(list(tracker.series))
        station = self.config.add_station_field
        computed: set[SeriesKey] = set()
        for p in points:
            name = (p.device if station else "", p.channel)
            key = known.get(name)
            if key is not None:
                tracker.stored(key, bucket)
                continue
            if p.channel_num not in NO_CHART_CHANNELS or p.device_gid is None:
                continue
            ckey = (p.device_gid, p.channel_num)
            if not self.computed.knows(scale, ckey):
                if not learn:
                    continue
                self._learned = True
                self.computed.follow(
                    scale,
                    ckey,
                    bucket,
                    now,
                    stored=self._stored_names.get(scale, {}).get(name),
                    saved=self._saved_marks.get(scale, {}).get(ckey),
                )
            self.computed.stored(scale, ckey, bucket)
            computed.add(ckey)
        return computed

    def _live_amps_volts(self, scale: Scale, now: datetime, result: TickResult) -> None:
        """Amps and volts of the newest complete bucket of `scale`, once per bucket: two
        getDeviceListUsages (AmpHours, then Voltage). A failure loses the values of that
        bucket not answered yet (they are not filled later; amps already answered are
        written) but is no outage of the account: usage goes on as before."""
        newest = last_complete_bucket(scale, now, self.config.lag_secs, self.config.zone)
        if self._amps_volts_done == newest:
            return
        stamp = point_time(scale, newest, self.config.zone)
        points: list[Point] = []
        for unit in (Unit.AMPS, Unit.VOLTS):
            try:
                points += self.account.electrical_points(scale, newest, stamp, unit)
            except EmporiaStopped:
                result.stopped = True
                self._emit_amps_volts(points, result)
                return
            except EmporiaError as err:
                self._amps_volts_done = newest  # one attempt a bucket: a retry costs the budget
                result.rate_limited(err)
                self._amps_volts_state.failed(
                    "Account %s: amps and volts for %s%s not collected (%s); %susage is not "
                    "affected",
                    self.name,
                    stamp.isoformat(),
                    "" if unit is Unit.AMPS else ": volts",
                    err,
                    "" if unit is Unit.AMPS else "amps written, ",
                    kind=unit.value,
                )
                self._emit_amps_volts(points, result)
                return
        self._amps_volts_done = newest
        self._amps_volts_state.recovered(
            "Account %s: amps and volts collected again after %d failed buckets",
            self.name,
            self._amps_volts_state.failures,
        )
        self._emit_amps_volts(points, result)

    def _emit_amps_volts(self, points: list[Point], result: TickResult) -> None:
        """The amps and volts answered, written in one batch (a Home Assistant state holds
        both)."""
        if points:
            self.emit(points, True)
            result.points += len(points)

    def _adopt_new_series(self, now: datetime) -> None:
        """Channels that appeared after a device refresh get trackers of their own (filled
        from the lookback); those gone from the account are no longer asked for."""
        added: set[SeriesKey] = set()
        gone: set[SeriesKey] = set()
        for scale, tracker in self.trackers.items():
            current = self._series_for(scale)
            for key in current:
                if key not in tracker.series and key[1] not in NO_CHART_CHANNELS:
                    tracker.add_series(key, now)
                    added.add(key)
            for key in set(tracker.series) - set(current):
                tracker.retire(key)
                gone.add(key)
        devices = self.account.devices
        self.computed.retire(
            {
                gid
                for tracker in self.computed.trackers.values()
                for gid, _num in tracker.series
                if gid not in devices
            }
        )
        for gid, num in sorted(added):
            logger.info(
                "Account %s: new channel %s of device %s: collecting it and filling its past",
                self.name, num, gid,
            )
        for gid, num in sorted(gone):
            logger.info(
                "Account %s: channel %s of device %s is gone; no more requests for it",
                self.name, num, gid,
            )

    def _fill(
        self,
        scale: Scale,
        now: datetime,
        result: TickResult,
        budget: int | None,
        before: datetime | None = None,
    ) -> int:
        """Chart requests for the holes of one scale (with `before`, only of its buckets
        that begin before it); returns how many were made."""
        tracker = self.trackers[scale]
        newest = self._newest_bucket(scale, now)
        if before is not None:
            newest = min(newest, bucket_start(scale, before - timedelta(seconds=1),
                                              self.config.zone))
        made = 0
        failed: set[SeriesKey] = set()
        # Several windows per series may be needed (a 7-day hole is 14 minute windows).
        while (budget is None or made < budget) and not self._stopping(result):
            requests = [r for r in tracker.due(now, newest) if r.series not in failed]
            if budget is not None:
                requests = requests[: budget - made]
            if not requests:
                break
            progressed = False
            for request in requests:
                if self._stopping(result):
                    break
                if self._fill_one(request, now, result):
                    progressed = True
                elif self._stopping(result):
                    break  # cut short by a stop or a 429: nothing to back off from
                else:
                    failed.add(request.series)
                made += 1
                result.fill_requests += 1
            if not progressed:
                break
        return made

    def _chart_reserve(self) -> int:
        """Spare requests the computed channels leave for the rest of the day's chart holes:
        two windows per chart series, and a few for the budget's rounding."""
        return CHART_RESERVE_MARGIN + 2 * len(self._series_for(Scale.MINUTE))

    def _fill_computed(
        self, now: datetime, result: TickResult, budget: int, before: datetime | None
    ) -> int:
        """Usage requests for past buckets that computed channels lack (days, then hours,
        then minutes: the coarse ones are few and fill the long views), newest first, at
        most `budget`; returns how many were made. A scale whose request fails waits for
        the next tick."""
        made = 0
        for scale in reversed(self.scales):
            newest = self._newest_bucket(scale, now)
            if self._live_done.get(scale) != newest:
                # The live path still asks for it (a failed or misdated answer): not twice.
                newest = self.computed.trackers[scale].previous(newest)
            if before is not None:
                newest = min(newest, bucket_start(scale, before - timedelta(seconds=1),
                                                  self.config.zone))
            for bucket in self.computed.due(scale, now, newest):
                if made >= budget or self._stopping(result):
                    return made
                made += 1
                result.fill_requests += 1
                if not self._fill_bucket(scale, bucket, now, result):
                    break
        return made

    def _fill_bucket(
        self, scale: Scale, bucket: datetime, now: datetime, result: TickResult
    ) -> bool:
        """One getDeviceListUsages for a past bucket: every channel's value written as the
        live path would have written it (MQTT aside: a filled hole is not news), each
        series' holes told. False when Emporia failed or answered another bucket."""
        stamp = point_time(scale, bucket, self.config.zone)
        instant = bucket + timedelta(hours=12) if scale is Scale.DAY else bucket
        try:
            points = self.account.bucket_points(scale, instant, stamp, live=False)
        except EmporiaStopped:
            result.stopped = True
            return False
        except EmporiaRateLimited as err:
            result.fill_failed(f"{scale.value} usage at {stamp.isoformat()}", err)
            return False
        except EmporiaError as err:
            result.fill_failed(f"{scale.value} usage at {stamp.isoformat()}", err)
            self.computed.failed(scale, bucket, now)
            return False
        if points is None:
            self.computed.failed(scale, bucket, now)
            return False
        if points:
            self.emit(points, False)
        result.points += len(points)
        result.fill_points += len(points)
        values = self._mark_stored(scale, bucket, points, now, learn=False)
        self.computed.answered(scale, bucket, values, now)
        request_logger.debug(
            "Account %s: filled %s at %s from a usage request: %d points",
            self.name,
            scale.value,
            stamp.isoformat(),
            len(points),
        )
        return True

    def _report_lost(self, now: datetime) -> None:
        """What can no longer be filled: counted per series in `Stats` (the metric
        `vuegraf_lost_points_total`), and one WARNING line when values start being lost
        (an outage that outlived Emporia's retention, nulls that never came right), the
        rest at DEBUG until a tick loses nothing."""
        for tracker in self.trackers.values():
            tracker.expire(now)
        self.computed.expire(now)
        told = 0
        reasons: dict[str, int] = {}
        series: set[tuple[Scale, SeriesKey]] = set()
        spans: list[tuple[datetime, datetime]] = []
        scales: set[str] = set()
        for tracker in [*self.trackers.values(), *self.computed.trackers.values()]:
            lost, span = tracker.take_lost()
            for (key, reason), count in lost.items():
                _device, channel = self.account.series_name(*key)
                self.account.stats.count_lost(
                    self.name, tracker.scale.value, channel, reason, count
                )
                if reason == SHED:
                    continue  # the budget guard says it once a day
                told += count
                series.add((tracker.scale, key))
                reasons[reason] = reasons.get(reason, 0) + count
                scales.add(tracker.scale.name.lower())
            if span is not None and any(r != SHED for _k, r in lost):
                spans.append(span)
        if not told:
            self._lost_log.reset()
            return
        why = {RETENTION_LOST: "older than Emporia keeps them", NO_VALUE: "Emporia has no value"}
        # Nulls Emporia never fills (a plug unplugged) are its news, said at INFO; values
        # that outlived Emporia's retention before vuegraf could fill them are a WARNING.
        self._lost_log.failed(
            "Account %s: %d %s values of %d series can no longer be filled (%s), between %s "
            "and %s; counted in vuegraf_lost_points_total",
            self.name,
            told,
            "/".join(sorted(scales)),
            len(series),
            ", ".join(f"{n} {why.get(r, r)}" for r, n in sorted(reasons.items())),
            min(s for s, _ in spans).astimezone(self.config.zone).isoformat(),
            max(e for _, e in spans).astimezone(self.config.zone).isoformat(),
            level=logging.WARNING if RETENTION_LOST in reasons else logging.INFO,
        )

    def _stopping(self, result: TickResult) -> bool:
        """A stop, a 429 that holds every request of this account until `not_before`, or
        the end of the time this tick has for holes."""
        return (
            result.stopped
            or result.not_before is not None
            or self.should_stop()
            or (self._fill_until is not None and self._fill_until())
        )

    def _fill_one(self, request: FillRequest, now: datetime, result: TickResult) -> bool:
        gid, num = request.series
        try:
            values = self.account.chart(gid, num, request.scale, request.first, request.last)
        except EmporiaStopped:
            result.stopped = True  # the hole stays as it was, for the next start
            return False
        except EmporiaRateLimited as err:
            # The whole account waits for Emporia's time: no more fills this tick, and a
            # request vuegraf held back itself is no failure of this series.
            result.fill_failed(f"{request.scale.value} chart {gid}/{num}", err)
            return False
        except EmporiaError as err:
            result.fill_failed(f"{request.scale.value} chart {gid}/{num}", err)
            self.trackers[request.scale].failed(request, now)
            return False
        written: list[Point] = []

        def emit(points: list[Point]) -> None:
            self.emit(points, False)  # filled holes: stored, but not news for MQTT
            written.extend(points)

        _missing, progressed = store_answer(
            self.account, self.trackers[request.scale], request, values, now, emit
        )
        result.points += len(written)
        result.fill_points += len(written)
        points = written
        if len(points) or progressed:
            request_logger.debug(
                "Account %s: filled %s of device %s channel %s, %s..%s: %d points",
                self.name,
                request.scale.value,
                gid,
                num,
                request.first.isoformat(),
                request.last.isoformat(),
                len(points),
            )
        return progressed


class ChartSource(Protocol):
    """What filling holes needs of an account (an `EmporiaAccount` in production)."""

    @property
    def name(self) -> str: ...

    def refresh_devices_if_due(self) -> None: ...

    def chart_channels(self) -> list[SeriesKey]: ...

    def chart(
        self, device_gid: int, channel_num: str, scale: Scale, first: datetime, last: datetime
    ) -> list[tuple[datetime, float | None]]: ...

    def chart_values_to_points(
        self,
        device_gid: int,
        channel_num: str,
        scale: Scale,
        values: Iterable[tuple[datetime, float | None]],
    ) -> list[Point]: ...


def store_answer(
    source: ChartSource,
    tracker: Tracker,
    request: FillRequest,
    values: Sequence[tuple[datetime, float | None]],
    now: datetime,
    emit: Callable[[list[Point]], object],
) -> tuple[int, bool]:
    """A chart answer for a hole: its points (those inside the window asked for) to `emit`,
    then the tracker told what it settled. Live filling and the history drain both come
    through here. Returns how many buckets of the window Emporia had no value for, and
    whether the tracker moved on (False: asking the same window again would tell nothing
    new)."""
    gid, num = request.series
    inside = [(start, kwh) for start, kwh in values if request.first <= start <= request.last]
    points = source.chart_values_to_points(gid, num, request.scale, inside)
    if points:
        emit(points)
    moved = tracker.answered(request, values, now)
    return sum(1 for _start, kwh in inside if kwh is None), moved


def _duration(seconds: float) -> str:
    """`45 s`, `12 min`, `3 h 20 min`: a time left or taken, to the unit that matters."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
