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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, cast

from vuegraf.clock import Clock
from vuegraf.collector import AccountCollector, TickResult
from vuegraf.config import Config
from vuegraf.emporia import EmporiaAccount
from vuegraf.model import Point
from vuegraf.schedule import next_tick
from vuegraf.sinks.base import SeriesStore, Sink, SinkError
from vuegraf.stats import Stats

logger = logging.getLogger(__name__)


@dataclass
class CycleResult:
    """What one cycle did; returned for tests and the health state."""

    started: datetime
    points: int = 0
    failed_accounts: list[str] = field(default_factory=list)
    failed_sinks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_accounts and not self.failed_sinks


class Collector(Protocol):
    """A source: one account's collection, run once per tick."""

    @property
    def name(self) -> str: ...

    def tick(self, now: datetime) -> TickResult: ...


class _StateLog:
    """Logs an outage once (at ERROR, or `level`) and its end once at INFO, not every cycle."""

    def __init__(self, what: str, level: int = logging.ERROR) -> None:
        self.what = what
        self.level = level
        self.failures = 0

    def failed(self, reason: str) -> None:
        self.failures += 1
        if self.failures == 1:
            logger.log(self.level, "%s: %s", self.what, reason)
        else:
            logger.debug("%s still failing (%d cycles): %s", self.what, self.failures, reason)

    def succeeded(self) -> None:
        if self.failures:
            logger.info("%s: recovered after %d failed cycles", self.what, self.failures)
        self.failures = 0


def _summary(errors: list[str]) -> str:
    """One readable line for a cycle's failures: the first, and how many more."""
    for err in errors[1:]:
        logger.debug("also failed: %s", err)
    more = f" (and {len(errors) - 1} more failed requests)" if len(errors) > 1 else ""
    return errors[0] + more


def find_store(sinks: Sequence[Sink]) -> SeriesStore | None:
    """The first sink that can report what it holds (InfluxDB or SQLite), unwrapping queues."""
    for sink in sinks:
        inner = getattr(sink, "inner", sink)
        if hasattr(inner, "last_times"):
            return cast(SeriesStore, inner)
    return None


class Daemon:
    def __init__(
        self,
        config: Config,
        accounts: Sequence[EmporiaAccount],
        sinks: Sequence[Sink],
        clock: Clock,
        dump_points: bool = False,
        stats: Stats | None = None,
        store: SeriesStore | None | bool = True,
        collectors: Sequence[Collector] | None = None,
        on_cycle: Sequence[Callable[[datetime], None]] = (),
    ) -> None:
        """`store=True` finds the series store among the sinks; None disables backfill.

        `collectors` replaces the per-account collectors (tests drive the loop with fakes).
        """
        self.config = config
        self.sinks = list(sinks)
        self.clock = clock
        self.dump_points = dump_points
        self.stats = stats if stats is not None else Stats()
        self.cycles = 0
        self.store = find_store(self.sinks) if store is True else store or None
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
        self._retry_at: dict[str, datetime] = {
            a.name: a.not_before for a in accounts if a.not_before is not None
        }
        self._rng = random.Random()
        self._account_state = {c.name: _StateLog(f"Account {c.name}") for c in self.collectors}
        self._fill_state = {
            c.name: _StateLog(f"Account {c.name}, filling holes", logging.WARNING)
            for c in self.collectors
        }
        self._sink_state = {s.name: _StateLog(f"Sink {s.name}") for s in self.sinks}
        self._cycle: CycleResult | None = None
        self.on_cycle = list(on_cycle)

    def run(self, max_cycles: int | None = None) -> None:
        """Collect now, then at every aligned tick until the clock is stopped."""
        for sink in self.sinks:
            sink.open()
        try:
            logger.info(
                "Collecting every %d s (lag %d s) for %d account(s)",
                self.config.update_interval_secs,
                self.config.lag_secs,
                len(self.collectors),
            )
            now = self.clock.now()
            for name, retry_at in self._retry_at.items():
                if retry_at > now:
                    logger.info(
                        "Account %s: Emporia asked (HTTP 429) for no request before %s UTC; "
                        "collecting from then on",
                        name,
                        retry_at.strftime("%Y-%m-%d %H:%M:%S"),
                    )
            self.run_cycle()
            while not self.clock.stopped and (max_cycles is None or self.cycles < max_cycles):
                now = self.clock.now()
                tick = next_tick(now, self.config.update_interval_secs, self.config.lag_secs)
                if self.clock.wait((tick - now).total_seconds()):
                    break
                self.run_cycle(tick)
        finally:
            for sink in self.sinks:
                flush = getattr(sink, "flush", None)
                if flush is not None:
                    try:
                        flush(max_seconds=3)  # SIGTERM: replay what can be; the rest stays queued
                    except Exception:
                        logger.exception("flushing sink %s failed", sink.name)
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception:
                    logger.exception("closing sink %s failed", sink.name)
            logger.info("Stopped after %d cycles", self.cycles)

    def run_cycle(self, tick: datetime | None = None) -> CycleResult:
        """One tick for every account: live values due now, then holes to fill."""
        started = self.clock.now()
        result = self._cycle = CycleResult(started=started)
        self.cycles += 1
        for collector in self.collectors:
            if self.clock.stopped:
                break
            state = self._account_state[collector.name]
            retry_at = self._retry_at.get(collector.name)
            if retry_at is not None and self.clock.now() < retry_at:
                result.failed_accounts.append(collector.name)  # still backing off
                continue
            outcome = collector.tick(self.clock.now())
            if outcome.fill_errors:
                self._fill_state[collector.name].failed(_summary(outcome.fill_errors))
            elif outcome.ok and outcome.fill_requests and not outcome.stopped:
                # Only fills that were tried and worked end a fill outage: a tick whose
                # holes are all waiting out a back-off proves nothing.
                self._fill_state[collector.name].succeeded()
            if outcome.stopped and outcome.ok:
                # A stop (SIGTERM, SIGHUP) cut the tick short: neither an outage nor a
                # recovery, and nothing to back off from.
                continue
            if outcome.ok:
                state.succeeded()
                self._retry_at.pop(collector.name, None)
            else:
                state.failed(_summary(outcome.errors))
                result.failed_accounts.append(collector.name)
                self._retry_at[collector.name] = self.clock.now() + self._backoff(state.failures)
            if outcome.not_before is not None:
                # Emporia answered 429: its Retry-After wins over the usual back-off.
                retry_at = self._retry_at.get(collector.name, outcome.not_before)
                self._retry_at[collector.name] = max(retry_at, outcome.not_before)
        self._cycle = None
        for sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if flush is not None and not self.clock.stopped:
                try:
                    flush()  # replay a backlog even when this cycle wrote nothing
                except SinkError as err:
                    self._sink_state[sink.name].failed(f"replaying its queue failed: {err}")
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
            len(self.collectors) - len(result.failed_accounts),
            ", ".join(self._sink_status(s, result) for s in self.sinks) or "nothing",
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

    @staticmethod
    def _sink_status(sink: Sink, result: CycleResult) -> str:
        if sink.name in result.failed_sinks:
            return f"{sink.name} (failed)"
        backlog = getattr(sink, "backlog", 0)
        return f"{sink.name} ({backlog} queued)" if backlog else sink.name

    def _backoff(self, failures: int) -> timedelta:
        """Wait before asking a failing account again: next tick, then 2, 4 ... 16 intervals,
        with jitter so many installs do not hammer Emporia in step after an outage."""
        if failures <= 1:
            return timedelta(0)
        intervals = min(2 ** (failures - 1), 16) - 1
        seconds = intervals * self.config.update_interval_secs * self._rng.uniform(0.8, 1.2)
        return timedelta(seconds=seconds)

    def _emit(self, points: Sequence[Point], live: bool = True) -> None:
        """Write one batch to every sink (called by the collectors as data arrives).

        Filled holes (`live=False`) skip sinks marked `live_only` (MQTT): subscribers
        want the newest value, not an hour-old one after it.
        """
        if not points:
            return
        if self._cycle is not None:
            self._cycle.points += len(points)
        if self.dump_points:
            for p in points:
                logger.debug("point %s", p)
        for sink in self.sinks:
            if not live and getattr(sink, "live_only", False):
                continue
            state = self._sink_state[sink.name]
            try:
                sink.write(points)
            except SinkError as err:
                state.failed(f"write of {len(points)} points failed: {err}")
                if self._cycle is not None and sink.name not in self._cycle.failed_sinks:
                    self._cycle.failed_sinks.append(sink.name)
                continue
            if not getattr(sink, "counts_points", False):
                self.stats.count_points(sink.name, "written", len(points))
            state.succeeded()
