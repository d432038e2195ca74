"""The collection loop: tick → every account's collector → every sink.

Ticks come from schedule.next_tick (aligned, drift-free); all waiting goes
through the injected clock, so a stop request (SIGTERM) ends a wait at once and
tests run thousands of cycles in virtual time. One account failing never stops
another, and a sink failure never stops collection.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from queue import Empty, SimpleQueue
from typing import Protocol

from vuegraf import backoff
from vuegraf.clock import Clock
from vuegraf.collector import AccountCollector, CollectorSettings, TickResult
from vuegraf.emporia import (
    EmporiaAccount,
    EmporiaAuthFailed,
    EmporiaError,
    EmporiaSessionExpired,
    plainly,
    reason,
)
from vuegraf.emporia.errors import API_CHANGED, AUTH_FAILED, OK, RATE_LIMITED
from vuegraf.model import Point
from vuegraf.pool import RequestPool
from vuegraf.schedule import next_tick
from vuegraf.sinks.base import Sink
from vuegraf.sinks.outputs import Outputs
from vuegraf.statelog import StateLog
from vuegraf.stats import Stats

logger = logging.getLogger(__name__)



@dataclass
class CycleResult:
    """What one cycle did; returned for tests and the health state."""

    started: datetime
    points: int = 0
    failed_accounts: list[str] = field(default_factory=list)
    failed_sinks: list[str] = field(default_factory=list)
    busy_accounts: list[str] = field(default_factory=list)  # last tick still at work

    @property
    def ok(self) -> bool:
        return not self.failed_accounts and not self.failed_sinks


class Collector(Protocol):
    """A source: one account's collection, in two halves per tick (see AccountCollector)."""

    @property
    def name(self) -> str: ...

    def live(self, now: datetime) -> TickResult: ...

    def fill(
        self, now: datetime, result: TickResult, until: Callable[[], bool] | None = None
    ) -> None: ...


def _ended(
    queue: SimpleQueue[Future[TickResult]], timeout: float
) -> list[Future[TickResult]]:
    """The futures that ended: waits up to `timeout` for the first, takes the rest as is."""
    try:
        done = [queue.get(timeout=timeout)]
    except Empty:
        return []
    while True:
        try:
            done.append(queue.get_nowait())
        except Empty:
            return done


def _summary(errors: list[str]) -> str:
    """One readable line for a cycle's failures: the first, and how many more."""
    for err in errors[1:]:
        logger.debug("also failed: %s", err)
    more = f" (and {len(errors) - 1} more failed requests)" if len(errors) > 1 else ""
    return errors[0] + more


class DaemonSettings(CollectorSettings, Protocol):
    """The settings the loop reads, besides those its collectors read."""

    @property
    def account_concurrency(self) -> int: ...


@dataclass
class _Account:
    """The loop's view of one account: its outage logs, its back-off, its tick in hand."""

    collector: Collector
    state: StateLog
    fill_state: StateLog
    retry_at: datetime | None = None  # backing off (or Emporia's 429): no tick before this
    refusals: int = 0  # refused logins since the last good tick: AUTH_REFUSED's doubling
    fill_failure: EmporiaError | None = None  # its holes' failure, until a fill works again
    running: Future[TickResult] | None = None  # its tick, still at work in the pool
    filling: bool = False  # `running` is the tick's second half (its holes)


class Daemon:
    def __init__(
        self,
        config: DaemonSettings,
        accounts: Sequence[EmporiaAccount],
        sinks: Sequence[Sink],
        clock: Clock,
        dump_points: bool = False,
        stats: Stats | None = None,
        backfill: bool = True,
        collectors: Sequence[Collector] | None = None,
        on_cycle: Sequence[Callable[[datetime], None]] = (),
        concurrency: int | None = None,
    ) -> None:
        """`backfill=False` fills no hole from before the start (the store is not read).

        `collectors` replaces the per-account collectors (tests drive the loop with fakes).
        `concurrency`: accounts collected at once (threads; one account alone runs inline),
        `accountConcurrency` unless given.
        """
        self.config = config
        self.clock = clock
        self.stats = stats if stats is not None else Stats()
        self.outputs = Outputs(sinks, self.stats, dump_points)
        self.cycles = 0
        self.store = self.outputs.store if backfill else None
        self.collectors: list[Collector] = (
            list(collectors)
            if collectors is not None
            else [
                AccountCollector(
                    a, config, self._emit, self.store, should_stop=lambda: clock.stopped
                )
                for a in accounts
            ]
        )
        # An account Emporia answered 429 before this loop began (the history import, or
        # the run before a reload): its first tick waits for the time Emporia gave.
        not_before = {a.name: a.not_before for a in accounts}
        self._accounts = [
            _Account(
                c,
                StateLog(logger, f"Account {c.name}"),
                StateLog(logger, f"Account {c.name}, filling holes", logging.WARNING),
                retry_at=not_before.get(c.name),
            )
            for c in self.collectors
        ]
        # A reload's accounts: states of accounts no longer configured are forgotten; one
        # failing before the reload is still failing here (silently), so its first success
        # says it recovered, and a failure that goes on is said again (the reload may have
        # been the user's fix that did not work).
        self.stats.keep_account_states([c.name for c in self.collectors])
        states = self.stats.snapshot().account_states
        for account in self._accounts:
            state, why = states.get(account.collector.name, (OK, ""))
            if state != OK:
                account.state.failed("%s: %s (before the reload)", account.state.what, why,
                                     kind="before the reload", level=logging.DEBUG)
        self._rng = random.Random()
        self.on_cycle = list(on_cycle)
        if concurrency is None:
            concurrency = config.account_concurrency
        workers = min(max(1, concurrency), len(self.collectors))
        # One account alone is collected on the loop's own thread, as it always was.
        self._pool = RequestPool(workers, "vuegraf-account") if workers > 1 else None
        self._next_due: datetime | None = None  # the tick after the last cycle's start

    @property
    def sinks(self) -> list[Sink]:
        return self.outputs.sinks

    def run(self, max_cycles: int | None = None) -> None:
        """Collect now, then at every aligned tick until the clock is stopped."""
        self.outputs.open()
        try:
            logger.info(
                "Collecting every %d s (lag %d s) for %d account(s)",
                self.config.update_interval_secs,
                self.config.lag_secs,
                len(self.collectors),
            )
            now = self.clock.now()
            for account in self._accounts:
                if account.retry_at is not None and account.retry_at > now:
                    logger.info(
                        "Account %s: Emporia asked (HTTP 429) for no request before %s UTC; "
                        "collecting from then on",
                        account.collector.name,
                        account.retry_at.strftime("%Y-%m-%d %H:%M:%S"),
                    )
            self.run_cycle()
            while not self.clock.stopped and (max_cycles is None or self.cycles < max_cycles):
                now = self.clock.now()
                tick = self._next_tick(now)
                if self.clock.wait((tick - now).total_seconds()):
                    break
                self.run_cycle(tick)
        finally:
            try:
                if self._pool is not None:
                    # Ticks in hand end at their next request (the clock is stopped): no
                    # sink is closed while one of them may still write.
                    self._pool.shutdown()
                    self._harvest(CycleResult(started=self.clock.now()))
            finally:
                self.outputs.close()
                logger.info("Stopped after %d cycles", self.cycles)

    def _next_tick(self, now: datetime) -> datetime:
        """The tick after the last cycle's start, even if that cycle ended a little after it
        (a pooled cycle stops waiting only when that tick is due); a whole interval late, the
        next one from now: missed ticks are skipped, not caught up."""
        interval = self.config.update_interval_secs
        due = self._next_due
        if due is not None and now < due + timedelta(seconds=interval):
            return due
        return next_tick(now, interval, self.config.lag_secs)

    def run_cycle(self, tick: datetime | None = None) -> CycleResult:
        """One tick for every account: live values due now, then holes to fill.

        With several accounts, every account's live half goes to the pool first and each
        one's holes follow its live half, so fills queue behind every live value. The cycle
        waits for them until the next tick is due; an account still at work then (a slow
        Emporia answer) carries on, is skipped by the next cycle, and is counted when done:
        one slow account never holds another's minute back.
        """
        started = self.clock.now()
        result = CycleResult(started=started)
        self.cycles += 1
        self._harvest(result)
        next_due = next_tick(started, self.config.update_interval_secs, self.config.lag_secs)
        self._next_due = next_due
        due = []
        for account in self._accounts:
            if account.running is not None:
                # Still at work (a slow Emporia, a long fill): no failure, but not asked twice.
                result.busy_accounts.append(account.collector.name)
                logger.debug("Account %s: last tick still at work", account.collector.name)
            elif account.retry_at is not None and self.clock.now() < account.retry_at:
                result.failed_accounts.append(account.collector.name)  # still backing off
            else:
                due.append(account)
        if self._pool is None:
            for account in due:
                if self.clock.stopped:
                    break
                self._done(account, self._tick(account), result)
        else:
            # Holes stop a little before the tick, so the workers are free for the minutes.
            margin = timedelta(seconds=min(5.0, self.config.update_interval_secs / 4))
            self._run_pooled(due, next_due, next_due - margin, result)
        if not self.clock.stopped:
            self.outputs.flush()  # replay a backlog even when this cycle wrote nothing
        tally = self.outputs.take_tally()
        result.points = tally.points
        result.failed_sinks = tally.failed_sinks
        finished = self.clock.now()
        self.stats.count_cycle(result.ok, (finished - started).total_seconds(), finished)
        for hook in self.on_cycle:
            try:
                hook(finished)
            except Exception:
                logger.exception("after-cycle hook failed")
        logger.info(
            "Cycle at %s: %d points from %d account(s) to %s",
            started.strftime("%Y-%m-%d %H:%M:%S"),
            result.points,
            len(self.collectors) - len(result.failed_accounts) - len(result.busy_accounts),
            self.outputs.status(result.failed_sinks),
        )
        if tick is not None:
            late = (finished - tick).total_seconds()
            if late > self.config.update_interval_secs:
                logger.warning(
                    "Cycle took %.0f s, longer than the %d s interval; missed ticks are skipped",
                    late,
                    self.config.update_interval_secs,
                )
        return result

    def _tick(self, account: _Account) -> TickResult:
        """One account's whole tick on the loop's thread: live values, then its holes."""
        outcome = account.collector.live(self.clock.now())
        if outcome.fill_due:  # even when stopping: it asks nothing then, but saves the marks
            account.collector.fill(self.clock.now(), outcome)
        return outcome

    def _run_pooled(
        self, due: list[_Account], until: datetime, fill_until: datetime, result: CycleResult
    ) -> None:
        """Every account's live half first; each one's fill is queued when its live half
        ends, so it waits behind every live half not yet begun (the pool is first in, first
        out): a long fill never makes another account's minute late.

        Each piece of work reports its own end on a queue: `concurrent.futures.wait` over
        every account's future would lock and unlock all of them at each end, which for a
        thousand accounts took half of the process's CPU."""
        pool = self._pool
        assert pool is not None
        ended: SimpleQueue[Future[TickResult]] = SimpleQueue()

        def submit(account: _Account, work: Callable[[], TickResult]) -> Future[TickResult]:
            future = pool.submit(work)
            account.running = future
            waiting[future] = account
            future.add_done_callback(ended.put)
            return future

        waiting: dict[Future[TickResult], _Account] = {}
        lives: dict[Future[TickResult], TickResult] = {}  # a fill's future -> its live half
        for account in due:
            account.filling = False
            submit(account, partial(account.collector.live, self.clock.now()))
        stop = partial(self._past, fill_until)
        while waiting:
            for future in _ended(ended, timeout=0.2):
                account = waiting.pop(future)
                account.running = None
                outcome = future.result()
                if not account.filling and outcome.fill_due:
                    account.filling = True
                    fill = partial(self._fill, account.collector, outcome, stop)
                    lives[submit(account, fill)] = outcome
                    continue
                account.running = None
                self._done(account, outcome, result)
            if waiting and self.clock.now() >= until and not self.clock.stopped:
                for future, account in list(waiting.items()):
                    # A fill not begun yet would stop before its first request (its time is
                    # over): dropped, so its account is due at the next tick, not skipped as
                    # still at work behind a queue of such fills.
                    if account.filling and future.cancel():
                        del waiting[future]
                        account.running = None
                        self._done(account, lives[future], result)
                break  # the next tick is due: these carry on and are counted when done

    def _fill(
        self, collector: Collector, outcome: TickResult, until: Callable[[], bool]
    ) -> TickResult:
        collector.fill(self.clock.now(), outcome, until)
        return outcome

    def _past(self, until: datetime) -> bool:
        return self.clock.now() >= until

    def _harvest(self, result: CycleResult) -> None:
        """Count the ticks an earlier cycle left at work that have ended since."""
        for account in self._accounts:
            future = account.running
            if future is not None and future.done():
                account.running = None
                if not future.cancelled():
                    self._done(account, future.result(), result)

    def _done(self, account: _Account, outcome: TickResult, result: CycleResult) -> None:
        """An account's tick has ended: log its state changes and set its back-off."""
        name = account.collector.name
        if outcome.fill_errors:
            summary = _summary(outcome.fill_errors)
            failed = outcome.fill_failure
            if failed is not None:
                account.fill_failure = failed
                summary = f"{summary}; {plainly(failed)}"
            account.fill_state.failed("%s: %s", account.fill_state.what, summary,
                                      kind=failed.state if failed is not None else "")
        elif outcome.ok and outcome.fill_requests and not outcome.stopped:
            # Only fills that were tried and worked end a fill outage: a tick whose holes are
            # all waiting out a back-off proves nothing.
            self._recovered(account.fill_state)
            account.fill_failure = None
        if outcome.stopped and outcome.ok:
            # A stop (SIGTERM, SIGHUP) cut the tick short: neither an outage nor a recovery,
            # and nothing to back off from.
            return
        if outcome.ok:
            self._recovered(account.state)
            account.retry_at = None
            account.refusals = 0
            if outcome.not_before is not None and outcome.not_before > self.clock.now():
                # Live values worked, a fill was answered 429: the account waits all the same.
                until = outcome.not_before.strftime("%Y-%m-%d %H:%M:%S")
                self.stats.set_account_state(
                    name, RATE_LIMITED, f"Emporia asks for fewer requests (HTTP 429, until "
                    f"{until} UTC)")
            elif (account.fill_failure is not None
                  and account.fill_failure.state in (API_CHANGED, AUTH_FAILED)):
                # Live values work but no hole can be filled (a chart endpoint withdrawn):
                # the user must act, so the state says so until a fill works again.
                failed = account.fill_failure
                self.stats.set_account_state(name, failed.state,
                                             f"filling holes: {reason(failed)}")
            else:
                self.stats.set_account_state(name, OK, "")
        else:
            # The first failure's class says whose side it is on; one line when that changes.
            failure = outcome.failure or EmporiaError(_summary(outcome.errors))
            if isinstance(failure, EmporiaAuthFailed):
                account.refusals += 1
            words = self._worded(account, failure, outcome)
            expired = isinstance(failure, EmporiaSessionExpired)
            # A session no longer accepted is routine (tokens expire): logged in again at
            # the next tick, so a WARNING, and its own kind.
            account.state.failed("%s: %s", account.state.what, words,
                                 kind="session_expired" if expired else failure.state,
                                 level=logging.WARNING if expired else None)
            self.stats.set_account_state(name, failure.state, reason(failure))
            result.failed_accounts.append(name)
            account.retry_at = self.clock.now() + self._backoff(account, failure)
        if outcome.not_before is not None:
            # Emporia answered 429: its Retry-After wins over the usual back-off.
            retry_at = account.retry_at or outcome.not_before
            account.retry_at = max(retry_at, outcome.not_before)

    @staticmethod
    def _recovered(state: StateLog) -> None:
        state.recovered("%s: recovered after %d failed cycles", state.what, state.failures)

    def _worded(self, account: _Account, failure: EmporiaError, outcome: TickResult) -> str:
        """The account's failure for its one log line: what failed, then whose side it is
        on and what vuegraf does now."""
        said = plainly(failure)
        if isinstance(failure, EmporiaAuthFailed):
            wait = backoff.AUTH_REFUSED.after(account.refusals)
            said += f"; asking again in {wait.total_seconds() / 60:.0f} min"
        return f"{_summary(outcome.errors)}; {said}"

    def _backoff(self, account: _Account, failure: EmporiaError | None = None) -> timedelta:
        """Wait before asking a failing account again (backoff.ACCOUNT), stretched at random
        so many installs do not hammer Emporia in step after an outage. A refused login is
        asked again only after backoff.AUTH_REFUSED, doubling with the refusals alone (not
        the outage's cycles before them): it will not heal by itself. A session Emporia no
        longer accepts logs in again at the next tick."""
        if isinstance(failure, EmporiaAuthFailed):
            return backoff.AUTH_REFUSED.after(account.refusals)
        if isinstance(failure, EmporiaSessionExpired):
            return timedelta(0)
        intervals = backoff.ACCOUNT.skipped(account.state.failures)
        if not intervals:
            return timedelta(0)
        stretch = self._rng.uniform(*backoff.ACCOUNT_JITTER)
        return timedelta(seconds=intervals * self.config.update_interval_secs * stretch)

    def _emit(self, points: Sequence[Point], live: bool = True) -> None:
        """Write one batch to every sink (called by the collectors as data arrives)."""
        self.outputs.write(points, live)
