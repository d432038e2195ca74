"""`--historydays N`: plans chart windows, fetches them concurrently, streams them to the sinks.

Planning is a pure function of the accounts' channels, N, the time and the config.
Running is bounded in every direction: a fixed number of worker threads, a token
bucket over Emporia requests, and a small window of jobs in flight, so memory does
not grow with N. Each window's points are written as soon as they arrive, and
written again identically by any later run (sinks replace equal points), so a
stopped or failed import is simply run again.

An HTTP 429 ends the import of that account at once (the others go on): waiting out
Emporia's Retry-After window by window would hold live collection back for hours, and
the daemon that starts next honours the wait anyway. One line says how many windows
were left and that `--historydays` can be run again.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from typing import Protocol, TextIO

from vuegraf.clock import Clock, SystemClock
from vuegraf.config import Config
from vuegraf.emporia import EmporiaError, EmporiaRateLimited, EmporiaStopped
from vuegraf.emporia.limits import KEPT, MAX_BUCKETS, history_scales
from vuegraf.model import Point, Scale
from vuegraf.schedule import (
    bucket_start,
    last_complete_bucket,
    local_day_start,
    next_bucket,
    windows,
)
from vuegraf.sinks.base import Sink, SinkError
from vuegraf.stats import Stats

logger = logging.getLogger(__name__)

# Minute windows start this much later than Emporia's minute retention (KEPT), so the
# oldest one is still wholly inside retention when its turn comes after the hour/day part.
MINUTE_RETENTION_MARGIN = timedelta(hours=1)
# Tries per window (Emporia request or sink write) and the waits between them. Only
# requests Emporia answered count as tries: one vuegraf held back (stopping, 429) is none.
ATTEMPTS = 3
RETRY_DELAYS_S = (2.0, 8.0)

Progress = Callable[[int, int, int], None]


class ChartAccount(Protocol):
    """What history needs of an account (an `EmporiaAccount` in production)."""

    @property
    def name(self) -> str: ...

    def refresh_devices_if_due(self) -> None: ...

    def chart_channels(self) -> list[tuple[int, str]]: ...

    def chart_points(
        self, device_gid: int, channel_num: str, scale: Scale, first: datetime, last: datetime
    ) -> tuple[list[Point], list[datetime]]: ...


@dataclass(frozen=True)
class HistoryJob:
    """One getChartUsage request: buckets `first`..`last` (both starts, inclusive)."""

    account: ChartAccount
    gid: int
    channel_num: str
    scale: Scale
    first: datetime
    last: datetime


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


# --- planning ----------------------------------------------------------------------------


def capped_days(days: int, config: Config) -> int:
    """N limited by maxHistoryDays (as upstream), logged so a user sees why less came in."""
    if days > config.max_history_days:
        logger.warning(
            "--historydays %d is more than maxHistoryDays; importing %d days",
            days,
            config.max_history_days,
        )
        return config.max_history_days
    return max(days, 0)


def history_windows(
    scale: Scale, days: int, now: datetime, lag_secs: float, zone: tzinfo
) -> list[tuple[datetime, datetime]]:
    """Chart windows of `scale` covering `days` days up to the newest complete bucket.

    Days are `days` local days; hours are `days` × 24 hours; minutes are clipped to
    Emporia's minute retention less a margin. Oldest window first.
    """
    if days <= 0:
        return []
    last = last_complete_bucket(scale, now, lag_secs, zone)
    end = next_bucket(scale, last, zone)
    if scale is Scale.DAY:
        first_date = last.astimezone(zone).date() - timedelta(days=days - 1)
        # Noon always exists, so DST at midnight cannot shift the date.
        start = local_day_start(datetime.combine(first_date, time(12), tzinfo=zone), zone)
    else:
        start = end - timedelta(days=days)
    if scale is Scale.MINUTE:
        oldest = now - KEPT[Scale.MINUTE] + MINUTE_RETENTION_MARGIN
        aligned = bucket_start(scale, oldest, zone)
        if aligned < oldest:
            aligned = next_bucket(scale, aligned, zone)
        start = max(start, aligned)
    return windows(scale, start, end, MAX_BUCKETS[scale], zone)


def plan_history(
    accounts: Sequence[ChartAccount],
    days: int,
    now: datetime,
    config: Config,
    scales: Collection[Scale] | None = None,
) -> list[HistoryJob]:
    """Every chart request an import of `days` days makes, in the order to run them.

    Days, then hours, newest window first: a stopped import keeps the recent past
    whole. Then minutes, oldest first: those are the next to leave retention.
    `scales` narrows the enabled scales (tests, benchmarks).
    """
    days = capped_days(days, config)
    zone = config.zone
    channels = [(acct, gid, num) for acct in accounts for gid, num in acct.chart_channels()]
    jobs: list[HistoryJob] = []
    for scale in history_scales(config):
        if scales is not None and scale not in scales:
            continue
        spans = history_windows(scale, days, now, config.lag_secs, zone)
        if scale is not Scale.MINUTE:
            spans.reverse()
        for first, last in spans:
            jobs.extend(
                HistoryJob(account, gid, num, scale, first, last) for account, gid, num in channels
            )
    return jobs


# --- rate limit --------------------------------------------------------------------------


class RateLimiter:
    """Token bucket shared by the workers: `rate` requests a second, bursts of `burst`.

    Each caller reserves the next free slot under a lock and waits for it outside
    the lock via the clock, so a stop request ends the wait and FakeClock tests run
    in virtual time.
    """

    def __init__(self, rate: float, clock: Clock, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.clock = clock
        self._interval = 1.0 / rate
        self._tolerance = (max(burst, 1) - 1) * self._interval
        self._next: float | None = None  # when the bucket is next full, Unix seconds
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Wait for a token; False if a stop was requested instead."""
        with self._lock:
            now = self.clock.now().timestamp()
            slot = now if self._next is None or self._next < now else self._next
            self._next = slot + self._interval
            delay = slot - now - self._tolerance
        if delay > 0:
            return not self.clock.wait(delay)
        return not self.clock.stopped


# --- running -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """What one job left behind: counts only, so finished jobs hold no points."""

    job: HistoryJob
    requests: int = 0
    points: int = 0
    missing: int = 0
    failed: bool = False
    write_failed: bool = False
    stopped: bool = False
    rate_limited: bool = False  # not fetched: Emporia answered 429 for its account


class _Importer:
    """Runs planned jobs on a bounded pool; one instance per import."""

    def __init__(
        self,
        sinks: Sequence[Sink],
        config: Config,
        clock: Clock,
        stats: Stats | None,
        retry_delays: Sequence[float],
    ) -> None:
        self.sinks = list(sinks)
        self.clock = clock
        self.stats = stats
        self.retry_delays = tuple(retry_delays)
        self.limiter = RateLimiter(
            config.history_requests_per_sec, clock, burst=config.history_concurrency
        )
        self._write_lock = threading.Lock()
        self._broken: set[str] = set()  # sinks that failed every try: skipped from then on
        self._abort = threading.Event()  # every sink broken: fetching more is pointless
        self._limit_lock = threading.Lock()
        self._limited: dict[str, datetime] = {}  # account -> Emporia's 429: no request before

    def limited(self, account: str) -> datetime | None:
        """When Emporia answered 429 for `account`: the time it gave (its import is over)."""
        with self._limit_lock:
            return self._limited.get(account)

    def _rate_limited(self, account: str, err: EmporiaRateLimited) -> None:
        with self._limit_lock:
            self._limited.setdefault(account, err.not_before)

    def stopping(self) -> bool:
        return self.clock.stopped or self._abort.is_set()

    def _delay(self, attempt: int) -> float:
        if not self.retry_delays:
            return 0.0
        return self.retry_delays[min(attempt, len(self.retry_delays) - 1)]

    def run_job(self, job: HistoryJob) -> _Outcome:
        """Fetch one window (retrying), then write it to every sink before returning.

        A 429 (or a request held back by an earlier one) ends the job, and the import of
        its account, without a try counted; so does a stop."""
        requests = 0
        error: EmporiaError | None = None
        tries = 0
        while tries < ATTEMPTS:
            if self.limited(job.account.name) is not None:
                return _Outcome(job, requests, rate_limited=True)
            if self.stopping() or not self.limiter.acquire():
                return _Outcome(job, requests, stopped=True)
            try:
                points, missing = job.account.chart_points(
                    job.gid, job.channel_num, job.scale, job.first, job.last
                )
            except EmporiaRateLimited as err:
                if err.sent:
                    requests += 1
                logger.debug("History %s: %s", _describe(job), err)
                self._rate_limited(job.account.name, err)
                return _Outcome(job, requests, rate_limited=True)
            except EmporiaStopped:
                return _Outcome(job, requests, stopped=True)
            except EmporiaError as err:
                requests += 1
                tries += 1
                error = err
                logger.debug("History %s try %d failed: %s", _describe(job), tries, err)
                if tries < ATTEMPTS and self.clock.wait(self._delay(tries - 1)):
                    return _Outcome(job, requests, stopped=True)
                continue
            requests += 1
            written = self._write(points)
            return _Outcome(job, requests, len(points), len(missing), write_failed=not written)
        logger.warning("History window %s failed %d times: %s", _describe(job), ATTEMPTS, error)
        return _Outcome(job, requests, failed=True)

    def _write(self, points: list[Point]) -> bool:
        """Every sink gets the window, one writer at a time; True when all stored it."""
        if not points:
            return True
        ok = True
        with self._write_lock:
            for sink in self.sinks:
                if sink.name in self._broken:
                    ok = False
                    self._count(sink.name, "dropped", len(points))
                    continue
                ok = self._write_sink(sink, points) and ok
        return ok

    def _write_sink(self, sink: Sink, points: list[Point]) -> bool:
        # Backoff waits hold the write lock on purpose: other windows would fail the same way.
        for attempt in range(ATTEMPTS):
            try:
                sink.write(points)
            except SinkError as err:
                if not err.retryable:
                    logger.error("History: %s rejected %d points: %s", sink.name, len(points), err)
                    self._count(sink.name, "rejected", len(points))
                    return False
                if attempt + 1 < ATTEMPTS and not self.clock.wait(self._delay(attempt)):
                    continue
                self._sink_broken(sink, err)
                self._count(sink.name, "dropped", len(points))
                return False
            self._count(sink.name, "written", len(points))
            return True
        return False

    def _sink_broken(self, sink: Sink, err: SinkError) -> None:
        if self.clock.stopped:
            return
        self._broken.add(sink.name)
        logger.error("History: %s keeps failing, skipping it from now on: %s", sink.name, err)
        if all(s.name in self._broken for s in self.sinks):
            logger.error("History: no sink can store points; stopping the import")
            self._abort.set()

    def _count(self, sink: str, outcome: str, n: int) -> None:
        if self.stats is not None:
            self.stats.count_points(sink, outcome, n)

    def run(
        self,
        jobs: Sequence[HistoryJob],
        workers: int,
        result: HistoryResult,
        progress: Progress,
    ) -> None:
        """Submit jobs lazily, at most 2 × workers in flight, tallying each as it ends.

        Jobs of an account Emporia answered 429 for are not submitted any more; once none
        of its jobs is in flight, the windows it has left are counted and said, once."""
        started = self.clock.now()
        limit = 2 * workers
        pending = iter(jobs)
        in_flight: dict[Future[_Outcome], str] = {}  # -> the account of the job
        planned = Counter(job.account.name for job in jobs)
        finished: Counter[str] = Counter()  # account -> windows fetched or failed
        progress(0, len(jobs), 0)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vuegraf-history") as pool:
            try:
                while True:
                    while len(in_flight) < limit and not self.stopping():
                        job = next(pending, None)
                        if job is None:
                            break
                        name = job.account.name
                        if self.limited(name) is None:
                            in_flight[pool.submit(self.run_job, job)] = name
                    if self.stopping():
                        for future in in_flight:
                            future.cancel()
                    self._say_limited(result, planned, finished, set(in_flight.values()))
                    if not in_flight:
                        break
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        name = in_flight.pop(future)
                        if future.cancelled():
                            continue
                        outcome = future.result()
                        if not (outcome.stopped or outcome.rate_limited):
                            finished[name] += 1
                        self._tally(outcome, result, started)
                        progress(result.done, len(jobs), sum(result.points.values()))
            finally:
                for future in in_flight:
                    future.cancel()
        self._say_limited(result, planned, finished, set(in_flight.values()))
        result.stopped = result.done + result.left_windows < len(jobs)

    def _say_limited(
        self,
        result: HistoryResult,
        planned: Counter[str],
        finished: Counter[str],
        running: set[str],
    ) -> None:
        """One line for each account whose import a 429 ended, once none of its jobs runs."""
        with self._limit_lock:
            limited = dict(self._limited)
        for name, not_before in limited.items():
            if name in result.rate_limited or name in running:
                continue
            left = planned[name] - finished[name]
            result.rate_limited[name] = left
            logger.warning(
                "History: Emporia answered HTTP 429 (too many requests) for account %s, so its "
                "import stopped with %d of %d windows not fetched; run --historydays %d again "
                "later for them (live collection starts now and asks Emporia again after "
                "%s UTC)",
                name,
                left,
                planned[name],
                result.days,
                not_before.strftime("%Y-%m-%d %H:%M:%S"),
            )

    def _tally(self, outcome: _Outcome, result: HistoryResult, started: datetime) -> None:
        scale = outcome.job.scale
        result.requests[scale] += outcome.requests
        if outcome.stopped or outcome.rate_limited:
            return
        result.done += 1
        result.points[scale] += outcome.points
        result.missing[scale] += outcome.missing
        if outcome.failed:
            result.failed.append(outcome.job)
        if outcome.write_failed:
            result.failed_writes += 1
        result.seconds_by_scale[scale] = (self.clock.now() - started).total_seconds()


def run_history(
    accounts: Sequence[ChartAccount],
    sinks: Sequence[Sink],
    days: int,
    config: Config,
    clock: Clock,
    stats: Stats | None = None,
    progress: Progress | None = None,
    *,
    scales: Collection[Scale] | None = None,
    retry_delays: Sequence[float] = RETRY_DELAYS_S,
) -> HistoryResult:
    """Import `days` days of history from every account into already-open `sinks`.

    The caller owns the sinks' lifecycle (open before, close after). A window that
    fails every try is reported, not fatal; an HTTP 429 ends that account's import
    (`HistoryResult.rate_limited`); `clock.stop()` ends the import promptly (requests in
    flight finish and are written). Run it again to fill what is missing.
    """
    started = clock.now()
    result = HistoryResult()
    ready = []
    result.days = capped_days(days, config)
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
    jobs = plan_history(ready, result.days, started, config, scales)
    result.jobs = len(jobs)
    logger.info(
        "History: %d days from %d account(s): %s",
        result.days,
        len(ready),
        ", ".join(f"{n} {s.value} windows" for s, n in _by_scale(jobs).items()) or "nothing to do",
    )
    importer = _Importer(sinks, config, clock, stats, retry_delays)
    importer.run(jobs, config.history_concurrency, result, progress or _no_progress)
    del jobs
    result.seconds = (clock.now() - started).total_seconds()
    _log_result(result)
    return result


def _by_scale(jobs: Iterable[HistoryJob]) -> Counter[Scale]:
    return Counter(job.scale for job in jobs)


def _no_progress(_done: int, _total: int, _points: int) -> None:
    return None


def _describe(job: HistoryJob) -> str:
    return (
        f"{job.account.name} {job.gid}/{job.channel_num} {job.scale.value} "
        f"{job.first:%Y-%m-%d %H:%M}..{job.last:%Y-%m-%d %H:%M}Z"
    )


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
        self, stream: TextIO, clock: Clock | None = None, interval_s: float = 10.0, width: int = 30
    ) -> None:
        self.stream = stream
        self.clock = clock if clock is not None else SystemClock()
        self.interval_s = interval_s
        self.width = width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
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


def make_progress(stream: TextIO, clock: Clock | None = None) -> ProgressDisplay:
    """Progress for `run_history`: a bar on a terminal, periodic log lines elsewhere."""
    return ProgressDisplay(stream, clock)


def _percent(done: int, total: int) -> float:
    return 100.0 if total <= 0 else 100.0 * done / total


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = math.ceil(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
