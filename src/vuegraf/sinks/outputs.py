"""The one fan-out: every batch to every sink, counted, with one state log per sink.

The daemon, the history import and the collectors only see `Outputs`: they hand it a batch
and learn which sinks failed. What a sink can do beyond open / write / close is declared by
its type (sinks/base.py) and read once here, when `Outputs` is built.

Collectors of several accounts write from several threads; a lock makes the sinks see one
write at a time, as their contract says.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from vuegraf.model import Point, Scale
from vuegraf.sinks.base import (
    Buffered,
    CountsOwnPoints,
    LiveOnly,
    ReadsBack,
    Sink,
    SinkError,
    readable_store,
)
from vuegraf.statelog import StateLog
from vuegraf.stats import Stats

logger = logging.getLogger(__name__)

# At shutdown (SIGTERM), a buffered sink replays what it can in this long; the rest stays
# queued on disk for the next start.
SHUTDOWN_FLUSH_SECONDS = 3.0


@dataclass
class RunningSink:
    """A sink with what it declared, read once, and its own outage log."""

    sink: Sink
    live_only: bool
    counts_points: bool
    buffered: Buffered | None
    state: StateLog

    @classmethod
    def of(cls, sink: Sink) -> RunningSink:
        return cls(
            sink=sink,
            live_only=isinstance(sink, LiveOnly),
            counts_points=isinstance(sink, CountsOwnPoints),
            buffered=sink if isinstance(sink, Buffered) else None,
            state=StateLog(logger, f"Sink {sink.name}"),
        )

    @property
    def name(self) -> str:
        return self.sink.name


class _OneAtATime(ReadsBack):
    """A store's read back, one call at a time: the accounts' threads read it when they start,
    and the read API is chosen by the first answer (`readback.FirstAnswering`). A store whose
    reads and writes share a connection guards it itself (`SqliteSink`)."""

    def __init__(self, store: ReadsBack, lock: threading.Lock) -> None:
        self.inner = store
        self.name = store.name
        self._lock = lock

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]:
        with self._lock:
            return self.inner.last_times(account, scale, since, until)

    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], list[datetime]]:
        with self._lock:
            return self.inner.stored_times(account, scale, since, until)

    def delete_all(self, now: datetime) -> int | None:
        with self._lock:
            return self.inner.delete_all(now)


@dataclass
class Tally:
    """What reached the sinks since the last `Outputs.take_tally` (one cycle)."""

    points: int = 0
    failed_sinks: list[str] = field(default_factory=list)


class Outputs:
    """Writes batches to every sink and keeps, per sink, its counts and its state log."""

    def __init__(
        self, sinks: Sequence[Sink], stats: Stats | None = None, dump_points: bool = False
    ) -> None:
        self.sinks = list(sinks)
        self.stats = stats
        self.dump_points = dump_points
        self.running = [RunningSink.of(s) for s in self.sinks]
        self._lock = threading.Lock()
        self._tally = Tally()
        # The store that can say what it holds (backfill reads it): the first one declared,
        # read one call at a time, since several accounts' threads read it when they start.
        # Not under the write lock: a store slow to answer must not hold every live write.
        found = next((s for s in map(readable_store, self.sinks) if s is not None), None)
        self.store: ReadsBack | None = (
            None if found is None else _OneAtATime(found, threading.Lock())
        )

    @property
    def running_names(self) -> list[str]:
        return [running.name for running in self.running]

    def open(self) -> None:
        """Open every sink; if one fails, close those already open and raise."""
        opened: list[Sink] = []
        try:
            for sink in self.sinks:
                sink.open()
                opened.append(sink)
        except BaseException:
            for sink in reversed(opened):
                self._close_one(sink)
            raise

    def close(self, flush_seconds: float | None = SHUTDOWN_FLUSH_SECONDS) -> None:
        """Replay what can be in `flush_seconds` (None: nothing), then close every sink."""
        if flush_seconds is not None:
            for running in self.running:
                if running.buffered is not None:
                    try:
                        running.buffered.flush(max_seconds=flush_seconds)
                    except Exception:
                        logger.exception("flushing sink %s failed", running.name)
        for sink in self.sinks:
            self._close_one(sink)

    @staticmethod
    def _close_one(sink: Sink) -> None:
        try:
            sink.close()
        except Exception:
            logger.exception("closing sink %s failed", sink.name)

    def write(
        self, points: Sequence[Point], live: bool = True, skip: Collection[str] = ()
    ) -> dict[str, SinkError]:
        """Write one batch to every sink (but those named in `skip`); returns the sinks that
        failed, by name. Filled holes and history (`live=False`) skip `LiveOnly` sinks."""
        if not points:
            return {}
        failed: dict[str, SinkError] = {}
        with self._lock:
            self._tally.points += len(points)
            if self.dump_points:
                for p in points:
                    logger.debug("point %s", p)
            for running in self.running:
                if (not live and running.live_only) or running.name in skip:
                    continue
                try:
                    running.sink.write(points)
                except SinkError as err:
                    failed[running.name] = err
                    running.state.failed(
                        "%s: write of %d points failed: %s", running.state.what, len(points), err
                    )
                    if running.name not in self._tally.failed_sinks:
                        self._tally.failed_sinks.append(running.name)
                    continue
                if not running.counts_points:
                    self.count(running.name, "written", len(points))
                self._recovered(running)
        return failed

    def flush(self) -> None:
        """Replay every buffered sink's backlog (each cycle, even one that wrote nothing)."""
        with self._lock:
            for running in self.running:
                if running.buffered is None:
                    continue
                try:
                    running.buffered.flush()
                except SinkError as err:
                    running.state.failed(
                        "%s: replaying its queue failed: %s", running.state.what, err
                    )

    def count(self, sink: str, outcome: str, n: int) -> None:
        if self.stats is not None:
            self.stats.count_points(sink, outcome, n)

    def take_tally(self) -> Tally:
        """What was written since the last call; starts a new tally."""
        with self._lock:
            tally, self._tally = self._tally, Tally()
        return tally

    def status(self, failed: Collection[str]) -> str:
        """`influxdb-v1 (12 queued), mqtt (failed)`: one cycle's sinks for its log line."""
        parts = []
        for running in self.running:
            if running.name in failed:
                parts.append(f"{running.name} (failed)")
            elif running.buffered is not None and running.buffered.backlog:
                parts.append(f"{running.name} ({running.buffered.backlog} queued)")
            else:
                parts.append(running.name)
        return ", ".join(parts) or "nothing"

    @staticmethod
    def _recovered(running: RunningSink) -> None:
        running.state.recovered(
            "%s: recovered after %d failed cycles", running.state.what, running.state.failures
        )
