"""The collection loop: tick → collect from every account → write to every sink.

Ticks come from schedule.next_tick (aligned, drift-free); all waiting goes
through the injected clock, so a stop request (SIGTERM) ends a wait at once and
tests run thousands of cycles in virtual time. One account failing never stops
another, and a sink failure never stops collection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from vuegraf.clock import Clock
from vuegraf.config import Config
from vuegraf.emporia import EmporiaAccount, EmporiaError
from vuegraf.model import Point, Scale
from vuegraf.schedule import last_complete_minute, next_tick
from vuegraf.sinks.base import Sink, SinkError

logger = logging.getLogger(__name__)


@dataclass
class CycleResult:
    """What one cycle did; returned for tests and the health state."""

    bucket: datetime
    points: list[Point] = field(default_factory=list)
    failed_accounts: list[str] = field(default_factory=list)
    failed_sinks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_accounts and not self.failed_sinks


class _StateLog:
    """Logs an outage once at ERROR and its end once at INFO, not every cycle."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def failed(self, reason: str) -> None:
        self.failures += 1
        if self.failures == 1:
            logger.error("%s: %s", self.what, reason)
        else:
            logger.debug("%s still failing (%d cycles): %s", self.what, self.failures, reason)

    def succeeded(self) -> None:
        if self.failures:
            logger.info("%s: recovered after %d failed cycles", self.what, self.failures)
        self.failures = 0


class Daemon:
    def __init__(
        self,
        config: Config,
        accounts: Sequence[EmporiaAccount],
        sinks: Sequence[Sink],
        clock: Clock,
        dump_points: bool = False,
    ) -> None:
        self.config = config
        self.accounts = list(accounts)
        self.sinks = list(sinks)
        self.clock = clock
        self.dump_points = dump_points
        self.cycles = 0
        self._last_bucket: datetime | None = None
        self._account_state = {a.name: _StateLog(f"Account {a.name}") for a in self.accounts}
        self._sink_state = {s.name: _StateLog(f"Sink {s.name}") for s in self.sinks}

    def run(self, max_cycles: int | None = None) -> None:
        """Collect now, then at every aligned tick until the clock is stopped."""
        for sink in self.sinks:
            sink.open()
        try:
            logger.info(
                "Collecting every %d s (lag %d s) for %d account(s)",
                self.config.update_interval_secs,
                self.config.lag_secs,
                len(self.accounts),
            )
            self.run_cycle()
            while max_cycles is None or self.cycles < max_cycles:
                now = self.clock.now()
                tick = next_tick(now, self.config.update_interval_secs, self.config.lag_secs)
                if self.clock.wait((tick - now).total_seconds()):
                    break
                self.run_cycle(tick)
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception:
                    logger.exception("closing sink %s failed", sink.name)
            logger.info("Stopped after %d cycles", self.cycles)

    def run_cycle(self, tick: datetime | None = None) -> CycleResult:
        """Collect the newest complete minute from every account and write it everywhere."""
        started = self.clock.now()
        bucket = last_complete_minute(started, self.config.lag_secs)
        result = CycleResult(bucket=bucket)
        if bucket == self._last_bucket:
            return result
        self.cycles += 1
        for account in self.accounts:
            state = self._account_state[account.name]
            try:
                points = account.points(Scale.MINUTE, bucket, bucket)
            except EmporiaError as err:
                state.failed(str(err))
                result.failed_accounts.append(account.name)
                continue
            state.succeeded()
            result.points.extend(points)
        self._last_bucket = bucket
        if self.dump_points:
            for p in result.points:
                logger.debug("point %s", p)
        for sink in self.sinks:
            self._write(sink, result)
        logger.info(
            "Minute %s: %d points from %d account(s) written to %s",
            bucket.strftime("%Y-%m-%d %H:%M"),
            len(result.points),
            len(self.accounts) - len(result.failed_accounts),
            ", ".join(s.name for s in self.sinks if s.name not in result.failed_sinks) or "nothing",
        )
        if tick is not None:
            late = (self.clock.now() - tick).total_seconds()
            if late > self.config.update_interval_secs:
                logger.warning(
                    "Cycle took %.0f s, longer than the %d s interval; missed ticks are skipped",
                    late,
                    self.config.update_interval_secs,
                )
        return result

    def _write(self, sink: Sink, result: CycleResult) -> None:
        state = self._sink_state[sink.name]
        try:
            sink.write(result.points)
        except SinkError as err:
            # Issue 4 adds the durable queue; until then the failure is loud, never silent.
            state.failed(f"write of {len(result.points)} points failed: {err}")
            result.failed_sinks.append(sink.name)
            return
        state.succeeded()
