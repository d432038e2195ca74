"""The engine's drain: every hole the trackers know, filled as fast as Emporia allows.

`--historydays N` is this mode of the engine: the trackers of each account are seeded N days
back (`seed_history`) and drained here through the same `Tracker` (which window comes next,
what an answer settles), the same conversion of answers to points (`collector.store_answer`),
the same fan-out (`Outputs`) and the same bounded pool as live collection, with a token
bucket over Emporia requests. Many series are asked at once (one request per series in hand,
at most 2 × workers in flight), so memory does not grow with N, and each window is written
as soon as it arrives.

Retries and limits:
- a request that fails is tried `backoff.HISTORY_ATTEMPTS` times; a window that fails every
  try is given up (counted, and filled by a later import or the daemon's own backfill);
- an HTTP 429 ends the drain of that account at once (the others go on): waiting out
  Emporia's Retry-After window by window would hold live collection back for hours;
- a sink that keeps failing is skipped, and the drain stops when none is left.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from vuegraf import backoff
from vuegraf.backfill import FillRequest, Tracker
from vuegraf.clock import Clock
from vuegraf.collector import ChartSource, store_answer
from vuegraf.emporia import EmporiaError, EmporiaRateLimited, EmporiaStopped
from vuegraf.model import Point, Scale
from vuegraf.pool import RateLimiter, RequestPool
from vuegraf.sinks.base import SinkError
from vuegraf.sinks.outputs import Outputs

logger = logging.getLogger(__name__)

Values = list[tuple[datetime, float | None]]


@dataclass
class DrainAccount:
    """One account to drain: where its answers come from and its trackers, seeded."""

    source: ChartSource
    trackers: dict[Scale, Tracker]  # in the order their windows are asked for
    newest: dict[Scale, datetime]  # the newest bucket of each scale the drain fills

    @property
    def name(self) -> str:
        return self.source.name

    def windows(self, now: datetime) -> int:
        """Chart requests still needed, at the largest window a request may cover."""
        return sum(t.backlog(now, self.newest[s]) for s, t in self.trackers.items())


@dataclass(frozen=True)
class Window:
    """One chart request of a drain: a tracker's request, for one account."""

    account: DrainAccount
    request: FillRequest

    @property
    def scale(self) -> Scale:
        return self.request.scale

    def describe(self) -> str:
        gid, num = self.request.series
        return (
            f"{self.account.name} {gid}/{num} {self.scale.value} "
            f"{self.request.first:%Y-%m-%d %H:%M}..{self.request.last:%Y-%m-%d %H:%M}Z"
        )


@dataclass(frozen=True)
class Fetched:
    """What one request left behind on its worker; the answer is applied on the loop."""

    window: Window
    requests: int = 0
    values: Values | None = None  # None: no answer (failed, stopped or rate limited)
    failed: bool = False
    stopped: bool = False
    rate_limited: EmporiaRateLimited | None = None


@dataclass
class DrainTally:
    """What a drain did, by scale and account."""

    windows: int = 0  # planned at the start
    done: int = 0  # answered or given up
    requests: Counter[Scale] = field(default_factory=Counter)
    points: Counter[Scale] = field(default_factory=Counter)
    missing: Counter[Scale] = field(default_factory=Counter)  # buckets Emporia had no value for
    failed: list[Window] = field(default_factory=list)  # Emporia failed every try
    failed_writes: int = 0  # windows some sink did not store
    planned: Counter[str] = field(default_factory=Counter)  # account -> windows at the start
    finished: Counter[str] = field(default_factory=Counter)  # account -> windows done
    limited: dict[str, datetime] = field(default_factory=dict)  # account -> Emporia's 429 time
    stopped: bool = False
    seconds_by_scale: dict[Scale, float] = field(default_factory=dict)


Progress = Callable[[DrainTally], None]
OnLimited = Callable[[DrainTally, str], None]


class Drain:
    """Drains seeded trackers on a pool; one instance per import."""

    def __init__(
        self,
        outputs: Outputs,
        clock: Clock,
        pool: RequestPool,
        limiter: RateLimiter,
        retry_delays: Sequence[float] = backoff.HISTORY_RETRY_DELAYS_S,
        attempts: int = backoff.HISTORY_ATTEMPTS,
    ) -> None:
        self.outputs = outputs
        self.clock = clock
        self.pool = pool
        self.limiter = limiter
        self.retry_delays = tuple(retry_delays)
        self.attempts = attempts
        self._limit_lock = threading.Lock()
        self._limited: dict[str, datetime] = {}  # account -> Emporia's 429: no request before
        self._broken: set[str] = set()  # sinks that failed every try: skipped from then on
        self._abort = threading.Event()  # every sink broken: fetching more is pointless

    def stopping(self) -> bool:
        return self.clock.stopped or self._abort.is_set()

    def run(
        self,
        accounts: Sequence[DrainAccount],
        tally: DrainTally,
        progress: Progress,
        on_limited: OnLimited,
    ) -> None:
        """Ask every due window, at most 2 × workers in flight, until none is left.

        `on_limited(tally, account)` is called once for each account a 429 ended, once none
        of its requests is in flight any more."""
        started = self.clock.now()
        for account in accounts:
            planned = account.windows(started)
            tally.planned[account.name] += planned
            tally.windows += planned
        limit = 2 * self.pool.workers
        in_flight: dict[Future[Fetched], Window] = {}
        busy: set[tuple[str, Scale, tuple[int, str]]] = set()
        said: set[str] = set()
        progress(tally)
        try:
            while True:
                if not self.stopping():
                    self._submit(accounts, started, in_flight, busy, limit)
                else:
                    for future in in_flight:
                        future.cancel()
                self._say_limited(tally, in_flight, said, on_limited)
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    window = in_flight.pop(future)
                    busy.discard(_key(window))
                    if not future.cancelled():
                        self._apply(future.result(), tally, started)
                        progress(tally)
        finally:
            for future in in_flight:
                future.cancel()
        self._say_limited(tally, in_flight, said, on_limited)
        left = sum(tally.planned[name] - tally.finished[name] for name in tally.limited)
        tally.stopped = tally.done + left < tally.windows or self.stopping()

    def _submit(
        self,
        accounts: Sequence[DrainAccount],
        now: datetime,
        in_flight: dict[Future[Fetched], Window],
        busy: set[tuple[str, Scale, tuple[int, str]]],
        limit: int,
    ) -> None:
        """Hand out the next window of every series not already asked, oldest scale first."""
        for account in accounts:
            if self._limited_at(account.name) is not None:
                continue
            for scale, tracker in account.trackers.items():
                for request in tracker.due(now, account.newest[scale]):
                    if len(in_flight) >= limit:
                        return
                    window = Window(account, request)
                    if _key(window) in busy:
                        continue
                    busy.add(_key(window))
                    in_flight[self.pool.submit(partial(self._fetch, window))] = window

    def _limited_at(self, account: str) -> datetime | None:
        with self._limit_lock:
            return self._limited.get(account)

    def _delay(self, attempt: int) -> float:
        if not self.retry_delays:
            return 0.0
        return self.retry_delays[min(attempt, len(self.retry_delays) - 1)]

    def _fetch(self, window: Window) -> Fetched:
        """One window from Emporia (worker thread), tried `attempts` times. A 429 (or a
        request held back by an earlier one) ends it without a try counted; so does a stop."""
        requests = 0
        error: EmporiaError | None = None
        tries = 0
        gid, num = window.request.series
        request = window.request
        while tries < self.attempts:
            if self._limited_at(window.account.name) is not None:
                return Fetched(window, requests, rate_limited=None, stopped=True)
            if self.stopping() or not self.limiter.acquire():
                return Fetched(window, requests, stopped=True)
            try:
                values = window.account.source.chart(
                    gid, num, request.scale, request.first, request.last
                )
            except EmporiaRateLimited as err:
                logger.debug("History %s: %s", window.describe(), err)
                with self._limit_lock:
                    self._limited.setdefault(window.account.name, err.not_before)
                return Fetched(window, requests + int(err.sent), rate_limited=err)
            except EmporiaStopped:
                return Fetched(window, requests, stopped=True)
            except EmporiaError as err:
                requests += 1
                tries += 1
                error = err
                logger.debug("History %s try %d failed: %s", window.describe(), tries, err)
                if tries < self.attempts and self.clock.wait(self._delay(tries - 1)):
                    return Fetched(window, requests, stopped=True)
                continue
            return Fetched(window, requests + 1, values=values)
        logger.warning(
            "History window %s failed %d times: %s", window.describe(), self.attempts, error
        )
        return Fetched(window, requests, failed=True)

    def _apply(self, fetched: Fetched, tally: DrainTally, started: datetime) -> None:
        """An answer on the loop's thread: stored, counted, and the tracker moved on."""
        window = fetched.window
        scale = window.scale
        tally.requests[scale] += fetched.requests
        if fetched.stopped or fetched.rate_limited is not None:
            return
        tracker = window.account.trackers[scale]
        if fetched.failed:
            tracker.give_up(window.request)  # the next window of the series is asked now
            tally.failed.append(window)
        else:
            assert fetched.values is not None
            written: list[Point] = []
            missing, moved = store_answer(
                window.account.source,
                tracker,
                window.request,
                fetched.values,
                self.clock.now(),
                written.extend,
            )
            if not moved:
                tracker.give_up(window.request)  # the same window again would not help
            tally.points[scale] += len(written)
            tally.missing[scale] += missing
            if not self._write(written):
                tally.failed_writes += 1
        tally.done += 1
        tally.finished[window.account.name] += 1
        tally.seconds_by_scale[scale] = (self.clock.now() - started).total_seconds()

    def _write(self, points: list[Point]) -> bool:
        """Every sink gets the window; True when all stored it.

        A sink that failed is tried again (`retry_delays`) right away, on purpose: other
        windows would fail the same way. One that keeps failing is skipped from then on,
        and the drain stops once no sink is left."""
        if not points:
            return True
        for name in self._broken:
            self.outputs.count(name, "dropped", len(points))
        skip = set(self._broken)
        ok = not skip
        for attempt in range(self.attempts):
            failed = self.outputs.write(points, live=False, skip=skip)
            skip |= {name for name in self.outputs.running_names if name not in failed}
            for name, err in failed.items():
                if not err.retryable:
                    logger.error("History: %s rejected %d points: %s", name, len(points), err)
                    self.outputs.count(name, "rejected", len(points))
                    skip.add(name)
                    ok = False
            retry = {n: e for n, e in failed.items() if e.retryable}
            if not retry:
                return ok
            if attempt + 1 < self.attempts and not self.clock.wait(self._delay(attempt)):
                continue
            for name, err in retry.items():
                self._sink_broken(name, err)
                self.outputs.count(name, "dropped", len(points))
            return False
        return False

    def _sink_broken(self, name: str, err: SinkError) -> None:
        if self.clock.stopped:
            return
        self._broken.add(name)
        logger.error("History: %s keeps failing, skipping it from now on: %s", name, err)
        if self._broken >= set(self.outputs.running_names):
            logger.error("History: no sink can store points; stopping the import")
            self._abort.set()

    def _say_limited(
        self,
        tally: DrainTally,
        in_flight: dict[Future[Fetched], Window],
        said: set[str],
        on_limited: OnLimited,
    ) -> None:
        """Once none of a rate-limited account's requests is in flight, say so, once."""
        with self._limit_lock:
            limited = dict(self._limited)
        running = {w.account.name for w in in_flight.values()}
        for name, not_before in limited.items():
            if name in said or name in running:
                continue
            said.add(name)
            tally.limited[name] = not_before
            on_limited(tally, name)


def _key(window: Window) -> tuple[str, Scale, tuple[int, str]]:
    return (window.account.name, window.scale, window.request.series)


def seed_history(
    source: ChartSource,
    scales: Sequence[Scale],
    lookbacks: dict[Scale, timedelta],
    now: datetime,
    newest: dict[Scale, datetime],
    tracker_for: Callable[[Scale], Tracker],
) -> DrainAccount:
    """An account's trackers seeded `lookbacks` back as if the store held nothing: an import
    writes every window again, identically, whatever the store has."""
    keys = source.chart_channels()
    trackers = {}
    for scale in scales:
        tracker = tracker_for(scale)
        tracker.seed(keys, {}, now, lookbacks[scale])
        trackers[scale] = tracker
    return DrainAccount(source, trackers, {s: newest[s] for s in scales})
