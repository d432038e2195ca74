"""`--historydays N`: the engine's drain over trackers seeded N days back, and its progress.

The import is a mode of the same engine as live collection (see drain.py): each account's
trackers are seeded N days back as if the store held nothing, then drained through the same
tracker logic, conversion to points, sink fan-out and request pool, paced by a token bucket
(`historyRequestsPerSecond`, `historyConcurrency` workers). What is left here is what only
an import has: which days it covers, its result, its log lines and its progress display.

Each window's points are written as soon as they arrive, and written again identically by
any later run (sinks replace equal points), so a stopped or failed import is simply run
again. An HTTP 429 ends the import of that account at once (the others go on); one line
says how many windows were left and that `--historydays` can be run again.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from typing import Protocol, TextIO

from vuegraf import backoff
from vuegraf.backfill import Tracker
from vuegraf.clock import Clock, SystemClock
from vuegraf.collector import ChartSource
from vuegraf.drain import Drain, DrainAccount, DrainTally, Window, seed_history
from vuegraf.emporia import EmporiaError, EmporiaRateLimited
from vuegraf.emporia.limits import KEPT, ScaleSwitches, history_scales
from vuegraf.model import Scale
from vuegraf.pool import RateLimiter, RequestPool
from vuegraf.schedule import bucket_start, last_complete_bucket, local_day_start, next_bucket
from vuegraf.sinks.base import Sink
from vuegraf.sinks.outputs import Outputs
from vuegraf.stats import Stats

logger = logging.getLogger(__name__)

# Minute windows start this much later than Emporia's minute retention (KEPT), so the
# oldest one is still wholly inside retention when its turn comes after the hour/day part.
MINUTE_RETENTION_MARGIN = timedelta(hours=1)

Progress = Callable[[int, int, int], None]
ChartAccount = ChartSource  # what an import needs of an account


class HistorySettings(ScaleSwitches, Protocol):
    """The settings an import reads (a `Config` has them all)."""

    @property
    def zone(self) -> tzinfo: ...
    @property
    def lag_secs(self) -> int: ...
    @property
    def max_history_days(self) -> int: ...
    @property
    def history_concurrency(self) -> int: ...
    @property
    def history_requests_per_sec(self) -> float: ...


@dataclass(frozen=True)
class HistoryJob:
    """One getChartUsage request: buckets `first`..`last` (both starts, inclusive)."""

    account: ChartAccount
    gid: int
    channel_num: str
    scale: Scale
    first: datetime
    last: datetime

    @classmethod
    def of(cls, window: Window) -> HistoryJob:
        gid, num = window.request.series
        request = window.request
        return cls(window.account.source, gid, num, request.scale, request.first, request.last)


@dataclass
class HistoryResult:
    """What an import did; `seconds_by_scale` is when that scale's last window finished."""

    days: int = 0
    jobs: int = 0
    done: int = 0
    requests: Counter[Scale] = field(default_factory=Counter)
    points: Counter[Scale] = field(default_factory=Counter)
    missing: Counter[Scale] = field(default_factory=Counter)  # buckets Emporia had no value for
    failed: list[HistoryJob] = field(default_factory=list)  # Emporia failed every try
    failed_writes: int = 0  # windows some sink did not store
    failed_accounts: list[str] = field(default_factory=list)
    # Accounts whose import ended on an HTTP 429 -> windows not fetched (None: the 429 came
    # before the account's windows were planned).
    rate_limited: dict[str, int | None] = field(default_factory=dict)
    stopped: bool = False
    seconds: float = 0.0
    seconds_by_scale: dict[Scale, float] = field(default_factory=dict)

    @property
    def failed_windows(self) -> int:
        return len(self.failed)

    @property
    def left_windows(self) -> int:
        """Windows not fetched because Emporia answered 429 (for planned accounts)."""
        return sum(n or 0 for n in self.rate_limited.values())

    @property
    def ok(self) -> bool:
        return not (
            self.failed
            or self.failed_writes
            or self.failed_accounts
            or self.rate_limited
            or self.stopped
        )


# --- what an import covers ---------------------------------------------------------------


def capped_days(days: int, config: HistorySettings) -> int:
    """N limited by maxHistoryDays (as upstream), logged so a user sees why less came in."""
    if days > config.max_history_days:
        logger.warning(
            "--historydays %d is more than maxHistoryDays; importing %d days",
            days,
            config.max_history_days,
        )
        return config.max_history_days
    return max(days, 0)


def history_start(
    scale: Scale, days: int, now: datetime, lag_secs: float, zone: tzinfo
) -> datetime:
    """The oldest bucket an import of `days` days asks for: `days` local days up to the last
    complete one; `days` × 24 hours up to the last complete hour; minutes the same, but
    never further back than Emporia's minute retention less a margin."""
    last = last_complete_bucket(scale, now, lag_secs, zone)
    if scale is Scale.DAY:
        first_date = last.astimezone(zone).date() - timedelta(days=days - 1)
        # Noon always exists, so DST at midnight cannot shift the date.
        return local_day_start(datetime.combine(first_date, time(12), tzinfo=zone), zone)
    start = next_bucket(scale, last, zone) - timedelta(days=days)
    if scale is Scale.MINUTE:
        oldest = now - KEPT[Scale.MINUTE] + MINUTE_RETENTION_MARGIN
        aligned = bucket_start(scale, oldest, zone)
        if aligned < oldest:
            aligned = next_bucket(scale, aligned, zone)
        start = max(start, aligned)
    return start


def _seeded(
    account: ChartAccount,
    days: int,
    now: datetime,
    config: HistorySettings,
    scales: Collection[Scale] | None,
) -> DrainAccount:
    """`account`'s trackers for an import of `days` days, as if the store held nothing."""
    zone = config.zone
    wanted = [s for s in history_scales(config) if scales is None or s in scales]
    newest = {s: last_complete_bucket(s, now, config.lag_secs, zone) for s in wanted}
    lookbacks = {s: now - history_start(s, days, now, config.lag_secs, zone) for s in wanted}
    return seed_history(
        account, wanted, lookbacks, now, newest, lambda scale: Tracker(scale, zone)
    )


def plan_history(
    accounts: Sequence[ChartAccount],
    days: int,
    now: datetime,
    config: HistorySettings,
    scales: Collection[Scale] | None = None,
) -> list[HistoryJob]:
    """Every chart request an import of `days` days makes if each one is answered in full:
    per scale (days, hours, minutes), each series' windows oldest first. `scales` narrows
    the enabled scales (tests, benchmarks)."""
    days = capped_days(days, config)
    if days <= 0:
        return []
    jobs: list[HistoryJob] = []
    seeded = [_seeded(account, days, now, config, scales) for account in accounts]
    for scale in history_scales(config):
        for drain in seeded:
            tracker = drain.trackers.get(scale)
            while tracker is not None:
                requests = tracker.due(now, drain.newest[scale])
                if not requests:
                    break
                for request in requests:
                    jobs.append(HistoryJob.of(Window(drain, request)))
                    tracker.give_up(request)  # as if answered: the next window comes next
    return jobs


# --- running -----------------------------------------------------------------------------


def run_history(
    accounts: Sequence[ChartAccount],
    sinks: Sequence[Sink],
    days: int,
    config: HistorySettings,
    clock: Clock,
    stats: Stats | None = None,
    progress: Progress | None = None,
    *,
    scales: Collection[Scale] | None = None,
    retry_delays: Sequence[float] = backoff.HISTORY_RETRY_DELAYS_S,
) -> HistoryResult:
    """Import `days` days of history from every account into already-open `sinks`.

    The caller owns the sinks' lifecycle (open before, close after). A window that
    fails every try is reported, not fatal; an HTTP 429 ends that account's import
    (`HistoryResult.rate_limited`); `clock.stop()` ends the import promptly (requests in
    flight finish and are written). Run it again to fill what is missing.
    """
    started = clock.now()
    result = HistoryResult()
    result.days = capped_days(days, config)
    ready = []
    for account in accounts:
        try:
            account.refresh_devices_if_due()  # single-threaded: logs in and reads devices
        except EmporiaRateLimited as err:
            logger.warning(
                "History: Emporia answered HTTP 429 (too many requests) for account %s before "
                "its import began; run --historydays %d again later (live collection starts "
                "now and asks Emporia again after %s UTC)",
                account.name,
                result.days,
                err.not_before.strftime("%Y-%m-%d %H:%M:%S"),
            )
            result.rate_limited[account.name] = None
            continue
        except EmporiaError as err:
            logger.error("History: account %s skipped: %s", account.name, err)
            result.failed_accounts.append(account.name)
            continue
        ready.append(account)
    seeded = (
        [_seeded(account, result.days, started, config, scales) for account in ready]
        if result.days > 0
        else []
    )
    by_scale: Counter[Scale] = Counter()
    for drain_account in seeded:
        for scale, tracker in drain_account.trackers.items():
            by_scale[scale] += tracker.backlog(started, drain_account.newest[scale])
    logger.info(
        "History: %d days from %d account(s): %s",
        result.days,
        len(ready),
        ", ".join(f"{n} {s.value} windows" for s, n in by_scale.items() if n) or "nothing to do",
    )
    pool = RequestPool(config.history_concurrency, "vuegraf-history")
    limiter = RateLimiter(
        config.history_requests_per_sec, clock, burst=config.history_concurrency
    )
    drain = Drain(Outputs(sinks, stats), clock, pool, limiter, retry_delays)
    tally = DrainTally()
    show = progress or _no_progress
    try:
        drain.run(
            seeded,
            tally,
            lambda t: show(t.done, t.windows, sum(t.points.values())),
            lambda t, name: _say_limited(t, name, result.days),
        )
    finally:
        pool.shutdown()
    result.jobs = tally.windows
    result.done = tally.done
    result.requests = tally.requests
    result.points = tally.points
    result.missing = tally.missing
    result.failed = [HistoryJob.of(w) for w in tally.failed]
    result.failed_writes = tally.failed_writes
    result.rate_limited.update(
        {name: tally.planned[name] - tally.finished[name] for name in tally.limited}
    )
    result.stopped = tally.stopped
    result.seconds_by_scale = tally.seconds_by_scale
    result.seconds = (clock.now() - started).total_seconds()
    _log_result(result)
    return result


def _say_limited(tally: DrainTally, name: str, days: int) -> None:
    planned = tally.planned[name]
    logger.warning(
        "History: Emporia answered HTTP 429 (too many requests) for account %s, so its "
        "import stopped with %d of %d windows not fetched; run --historydays %d again "
        "later for them (live collection starts now and asks Emporia again after "
        "%s UTC)",
        name,
        planned - tally.finished[name],
        planned,
        days,
        tally.limited[name].strftime("%Y-%m-%d %H:%M:%S"),
    )


def _no_progress(_done: int, _total: int, _points: int) -> None:
    return None


def _log_result(result: HistoryResult) -> None:
    parts = ", ".join(
        f"{scale.value}: {result.points[scale]} points from {result.requests[scale]} requests"
        for scale in (Scale.DAY, Scale.HOUR, Scale.MINUTE)
        if result.requests[scale]
    )
    how = "stopped after" if result.stopped else "finished in"
    logger.info(
        "History %s %.1f s: %d of %d windows (%s)",
        how,
        result.seconds,
        result.done,
        result.jobs,
        parts or "no requests",
    )
    if result.failed or result.failed_writes:
        logger.warning(
            "History: %d windows failed at Emporia and %d were not stored everywhere; "
            "run --historydays again to fill them",
            len(result.failed),
            result.failed_writes,
        )


# --- progress ----------------------------------------------------------------------------


class ProgressDisplay:
    """A one-line bar with ETA on a terminal; otherwise an INFO line every `interval_s`."""

    def __init__(
        self,
        stream: TextIO,
        clock: Clock | None = None,
        interval_s: float = 10.0,
        width: int = 30,
        bar: bool = True,
    ) -> None:
        self.stream = stream
        self.clock = clock if clock is not None else SystemClock()
        self.interval_s = interval_s
        self.width = width
        self.tty = bar and bool(getattr(stream, "isatty", lambda: False)())
        self._started: datetime | None = None
        self._logged: datetime | None = None
        self._finished = False

    def __call__(self, done: int, total: int, points: int) -> None:
        now = self.clock.now()
        if self._started is None:
            self._started = now
        final = done >= total
        elapsed = (now - self._started).total_seconds()
        eta = elapsed / done * (total - done) if done else None
        if self.tty:
            self._draw(done, total, points, eta, final)
        elif (
            final
            or self._logged is None
            or ((now - self._logged).total_seconds() >= self.interval_s)
        ):
            self._logged = now
            logger.info(
                "History: %d/%d windows (%.0f%%), %d points, ETA %s",
                done,
                total,
                _percent(done, total),
                points,
                _duration(eta),
            )
        if final:
            self._finished = True

    def _draw(self, done: int, total: int, points: int, eta: float | None, final: bool) -> None:
        pct = _percent(done, total)
        filled = int(self.width * pct / 100)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {pct:5.1f}% {done}/{total} windows, {points} points, ETA {_duration(eta)}"
        self.stream.write("\r" + line + ("\n" if final else ""))
        self.stream.flush()

    def finish(self) -> None:
        """End the bar's line after an import that stopped before 100 %."""
        if self.tty and self._started is not None and not self._finished:
            self.stream.write("\n")
            self.stream.flush()
        self._finished = True


def make_progress(
    stream: TextIO, clock: Clock | None = None, bar: bool = True
) -> ProgressDisplay:
    """Progress for `run_history`: a bar on a terminal (unless `bar` is False: logfmt and
    json logs), periodic log lines elsewhere."""
    return ProgressDisplay(stream, clock, bar=bar)


def _percent(done: int, total: int) -> float:
    return 100.0 if total <= 0 else 100.0 * done / total


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = math.ceil(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
