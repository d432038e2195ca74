"""The durable retry queue: points a sink could not take wait on disk, oldest first.

An InfluxDB outage must not lose data, and vuegraf runs unattended for years:
the backlog lives in an SQLite file in the state directory (WAL, synchronous
FULL), so a point acknowledged as queued survives `kill -9` and a power cut.
The file is bounded; when full the oldest points go first, and are counted.

`QueuedSink` wraps any sink with the same contract. It replays the backlog
before new points (FIFO), queues on retryable errors, and drops (counts and
logs) points the server rejected as bad data, which retrying cannot fix.
Writes are idempotent, so a replayed batch that had in fact landed is harmless.
Single writer: one thread writes at a time, as the sink contract already says.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vuegraf import backoff
from vuegraf.clock import Clock, SystemClock
from vuegraf.model import Point, Scale, Unit
from vuegraf.sinks.base import Buffered, CountsOwnPoints, Sink, SinkError
from vuegraf.statelog import StateLog
from vuegraf.stats import Stats

logger = logging.getLogger(__name__)

# Enough for 14 days of minute data for 50 channels; about 25 MB on disk when full.
DEFAULT_MAX_POINTS = 14 * 1440 * 50
# Points per replayed write: InfluxDB handles this comfortably in one request.
REPLAY_CHUNK = 5000
# A write() replays for at most this long, so a huge backlog never stalls collection.
REPLAY_SECONDS = 20.0
# After a failure, writes within this many seconds go straight to the queue: a down server
# that answers with a timeout would otherwise cost one timeout per write, several per cycle.
RETRY_SECONDS = backoff.STORE_WRITE_RETRY.total_seconds()

# 2: points.unit (amps and volts are queued as such, not replayed as usage).
_SCHEMA_VERSION = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# Series are stored once: a point row is then three numbers, which keeps a full queue small.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id      INTEGER PRIMARY KEY,
    account TEXT NOT NULL,
    device  TEXT NOT NULL,
    channel TEXT NOT NULL,
    scale   TEXT NOT NULL,       -- Scale.value: 1S, 1MIN, 15MIN, 1H, 1D
    UNIQUE (account, device, channel, scale)
);
CREATE TABLE IF NOT EXISTS points (
    id      INTEGER PRIMARY KEY, -- FIFO order: only the oldest rows are ever deleted
    series  INTEGER NOT NULL REFERENCES series (id),
    time_us INTEGER NOT NULL,    -- microseconds since the Unix epoch, UTC
    watts   REAL NOT NULL,
    unit    TEXT                 -- Unit.value when not usage: amps, volts; NULL: usage
);
"""


class QueueError(Exception):
    """The queue file cannot be opened, read or written (disk full, permissions, corruption)."""


@dataclass(frozen=True)
class QueuedChunk:
    """The oldest points of the queue; `remove` it once the sink has taken them."""

    points: list[Point]
    last_id: int


def _to_us(time: datetime) -> int:
    return (time - _EPOCH) // _MICROSECOND


def _from_us(value: int) -> datetime:
    return _EPOCH + value * _MICROSECOND


class DurableQueue:
    """An on-disk FIFO of points, bounded to `max_points` by dropping the oldest.

    `open()` before use, `close()` after. A `push` has been committed (and
    fsynced) when it returns: that is what "acknowledged as queued" means.
    """

    def __init__(
        self,
        path: Path,
        max_points: int = DEFAULT_MAX_POINTS,
        stats: Stats | None = None,
        sink_name: str = "influxdb",
    ) -> None:
        if max_points < 1:
            raise ValueError("max_points must be >= 1")
        self.path = Path(path)
        self.max_points = max_points
        self.stats = stats
        self.sink_name = sink_name
        self._db: sqlite3.Connection | None = None
        self._depth = 0
        self._series: dict[tuple[str, str, str, str], int] = {}
        # An overflow episode, until drained; its `failures` count the points dropped.
        self._overflow = StateLog(logger, f"Retry queue for {sink_name}")
        self._lock = threading.Lock()  # cheap insurance; the contract is still one writer

    # -- life cycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating if needed) the queue file and count what an earlier run left."""
        if self._db is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > _SCHEMA_VERSION:
                    raise QueueError(
                        f"retry queue {self.path} was written by a newer vuegraf "
                        f"(schema {version}); move it aside to start with an empty queue"
                    )
                # Must precede table creation to take effect; lets a drained file shrink.
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
                db.executescript(_SCHEMA)
                columns = {row[1] for row in db.execute("PRAGMA table_info(points)")}
                if "unit" not in columns:  # schema 1: every point it holds is usage
                    db.execute("ALTER TABLE points ADD COLUMN unit TEXT")
                db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                depth = db.execute("SELECT COUNT(*) FROM points").fetchone()[0]
            except BaseException:
                db.close()
                raise
        except sqlite3.Error as err:
            raise QueueError(f"cannot open retry queue {self.path}: {err}") from None
        except OSError as err:
            raise QueueError(
                f"cannot open retry queue {self.path}: {err.strerror or err}"
            ) from None
        self._db = db
        self._depth = depth
        self._series.clear()
        self._report_depth()
        if depth:
            logger.info("Retry queue %s holds %d points from an earlier run", self.path, depth)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __len__(self) -> int:
        return self._depth

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("queue is not open")
        return self._db

    # -- the FIFO ------------------------------------------------------------------------

    def push(self, points: Sequence[Point]) -> int:
        """Append `points` durably; returns how many of the oldest points were dropped to fit.

        Raises QueueError if the file cannot be written (nothing of this push is kept then).
        """
        if not points:
            return 0
        with self._lock:
            dropped = max(0, len(points) - self.max_points)
            kept = points[dropped:]  # a batch larger than the queue keeps its newest part
            try:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    rows = [
                        (
                            self._series_id(p),
                            _to_us(p.time),
                            p.watts,
                            None if p.unit is Unit.WATTS else p.unit.value,
                        )
                        for p in kept
                    ]
                    self.db.executemany(
                        "INSERT INTO points (series, time_us, watts, unit) VALUES (?, ?, ?, ?)",
                        rows,
                    )
                    overflow = self._depth + len(kept) - self.max_points
                    if overflow > 0:
                        self.db.execute(
                            "DELETE FROM points WHERE id IN "
                            "(SELECT id FROM points ORDER BY id LIMIT ?)",
                            (overflow,),
                        )
                        dropped += overflow
                    self.db.execute("COMMIT")
                except BaseException:
                    self.db.execute("ROLLBACK")
                    self._series.clear()  # ids cached in this transaction are gone
                    raise
            except sqlite3.Error as err:
                raise QueueError(f"cannot write retry queue {self.path}: {err}") from None
            self._depth = min(self._depth + len(kept), self.max_points)
            self._dropped(dropped)
            self._report_depth()
            return dropped

    def peek(self, limit: int = REPLAY_CHUNK) -> QueuedChunk:
        """The oldest `limit` points, in the order they were pushed (still queued)."""
        with self._lock:
            try:
                rows = self.db.execute(
                    "SELECT p.id, s.account, s.device, s.channel, s.scale, p.time_us, p.watts, "
                    "p.unit "
                    "FROM points p JOIN series s ON s.id = p.series ORDER BY p.id LIMIT ?",
                    (limit,),
                ).fetchall()
            except sqlite3.Error as err:
                raise QueueError(f"cannot read retry queue {self.path}: {err}") from None
        points = [
            Point(
                account,
                device,
                channel,
                Scale(scale),
                _from_us(time_us),
                watts,
                unit=Unit.WATTS if unit is None else Unit(unit),
            )
            for _id, account, device, channel, scale, time_us, watts, unit in rows
        ]
        return QueuedChunk(points=points, last_id=rows[-1][0] if rows else 0)

    def remove(self, chunk: QueuedChunk) -> None:
        """Delete a chunk from `peek` once the sink has stored (or finally rejected) it."""
        if not chunk.points:
            return
        with self._lock:
            try:  # one statement: its own (fsynced) transaction in autocommit mode
                deleted = self.db.execute(
                    "DELETE FROM points WHERE id <= ?", (chunk.last_id,)
                ).rowcount
            except sqlite3.Error as err:
                raise QueueError(f"cannot write retry queue {self.path}: {err}") from None
            self._depth = max(0, self._depth - deleted)
            if self._depth == 0:
                self._drained()
            self._report_depth()

    # -- internals -----------------------------------------------------------------------

    def _series_id(self, p: Point) -> int:
        key = (p.account, p.device, p.channel, p.scale.value)
        found = self._series.get(key)
        if found is None:
            self.db.execute(
                "INSERT OR IGNORE INTO series (account, device, channel, scale) "
                "VALUES (?, ?, ?, ?)",
                key,
            )
            found = self.db.execute(
                "SELECT id FROM series WHERE account = ? AND device = ? AND channel = ? "
                "AND scale = ?",
                key,
            ).fetchone()[0]
            self._series[key] = found
        return found

    def _dropped(self, n: int) -> None:
        if not n:
            return
        if self.stats is not None:
            self.stats.count_points(self.sink_name, "dropped", n)
        self._overflow.failed(
            "Retry queue for %s is full (%d points): dropping the oldest points "
            "until the backlog drains",
            self.sink_name,
            self.max_points,
            count=n,
            repeat=False,  # one line an episode: each push would repeat it
        )

    def _drained(self) -> None:
        if self._overflow.failing:
            self._overflow.logger.warning(
                "Retry queue for %s drained; %d of its oldest points were dropped while it "
                "was full",
                self.sink_name,
                self._overflow.failures,
            )
            self._overflow.reset()
        try:
            # Give the outage's disk space back. executescript, because the pragma frees one
            # page per step and execute() would stop after the first.
            self.db.executescript("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
        except sqlite3.Error:
            logger.debug("incremental_vacuum of %s failed", self.path, exc_info=True)

    def _report_depth(self) -> None:
        if self.stats is not None:
            self.stats.set_queue_depth(self.sink_name, self._depth)


class QueuedSink(Buffered, CountsOwnPoints):
    """Any sink, made outage-proof by a `DurableQueue` in front of it.

    `write` never raises for an outage: the points are queued (durably) and
    replayed, oldest first, at the next `write` or `flush`. It raises
    SinkError only when the queue itself cannot store them.

    It counts its own outcomes in `stats` (written, queued, replayed, rejected;
    the queue counts dropped), hence `CountsOwnPoints`.
    """

    def __init__(
        self,
        inner: Sink,
        queue: DurableQueue,
        stats: Stats | None = None,
        clock: Clock | None = None,
        *,
        replay_chunk: int = REPLAY_CHUNK,
        replay_seconds: float | None = REPLAY_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.inner = inner
        self.queue = queue
        self.stats = stats
        self.clock = clock or SystemClock()
        self.replay_chunk = replay_chunk
        self.replay_seconds = replay_seconds
        self.retry_seconds = retry_seconds
        self._next_try: datetime | None = None  # while failing: no attempt before this
        self.name = inner.name
        self._outage = StateLog(logger, self.name)  # failed attempts in the current outage
        self._replayed = 0  # points replayed since the backlog started
        self._last_rejection: str | None = None

    def open(self) -> None:
        try:
            self.queue.open()
        except QueueError as err:
            raise SinkError(str(err), retryable=False) from None
        try:
            self.inner.open()
        except BaseException:
            self.queue.close()
            raise

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.queue.close()

    @property
    def backlog(self) -> int:
        """Points waiting in the queue."""
        return len(self.queue)

    def write(self, points: Sequence[Point]) -> None:
        """Replay the backlog, then write `points`; queue them if the sink is unreachable."""
        points = self._storable(points)
        if self._next_try is not None and self.clock.now() < self._next_try:
            self._enqueue(points)  # failed moments ago: do not wait for another timeout
            return
        if len(self.queue):
            if not self._replay(self.replay_seconds):
                self._enqueue(points)  # still down: behind the backlog, order kept
                return
            if len(self.queue):
                self._enqueue(points)  # time budget spent: the rest goes next time
                return
        if not points:
            return
        try:
            self.inner.write(points)
        except SinkError as err:
            if not err.retryable:
                self._reject(points, err)
                return
            self._failed(err)
            self._enqueue(points)
            return
        self._count("written", len(points))
        self._recovered()

    def flush(self, max_seconds: float | None = REPLAY_SECONDS) -> bool:
        """Replay the backlog (for at most `max_seconds`, None: no limit); True when empty.

        The daemon calls this each cycle and once at shutdown; it never raises for an outage.
        Unlike `write`, it always tries, even right after a failure.
        """
        if len(self.queue):
            self._replay(max_seconds)
        return not len(self.queue)

    # -- internals -----------------------------------------------------------------------

    def _replay(self, max_seconds: float | None) -> bool:
        """Write queued chunks oldest first; False when the sink failed (still down)."""
        deadline = (
            None if max_seconds is None else self.clock.now() + timedelta(seconds=max_seconds)
        )
        while len(self.queue):
            chunk = self._peek()
            try:
                self.inner.write(chunk.points)
            except SinkError as err:
                if err.retryable:
                    self._failed(err)
                    return False
                self._reject(chunk.points, err)  # poison: retrying would block the queue forever
            else:
                self._replayed += len(chunk.points)
                self._count("replayed", len(chunk.points))
            self._remove(chunk)
            if deadline is not None and self.clock.now() >= deadline:
                logger.info(
                    "%s: replayed %d queued points so far, %d to go",
                    self.name,
                    self._replayed,
                    len(self.queue),
                )
                return True
        self._recovered()
        return True

    def _enqueue(self, points: Sequence[Point]) -> None:
        if not points:
            return
        try:
            self.queue.push(points)
        except QueueError as err:
            logger.error("%s: %d points lost: %s", self.name, len(points), err)
            self._count("dropped", len(points))
            raise SinkError(f"{err} ({len(points)} points lost)", retryable=True) from None
        self._count("queued", len(points))

    def _peek(self) -> QueuedChunk:
        try:
            return self.queue.peek(self.replay_chunk)
        except QueueError as err:
            raise SinkError(str(err), retryable=True) from None

    def _remove(self, chunk: QueuedChunk) -> None:
        try:
            self.queue.remove(chunk)
        except QueueError as err:
            raise SinkError(str(err), retryable=True) from None

    def _failed(self, err: SinkError) -> None:
        now = self.clock.now()
        self._next_try = now + timedelta(seconds=self.retry_seconds)
        self._outage.failed("%s: %s; queuing points until it is back", self.name, err, now=now)

    def _recovered(self) -> None:
        """Log the end of an outage (or of an earlier run's backlog) once, with the count."""
        self._next_try = None
        if not self._outage.failing and not self._replayed:
            return
        if self._outage.failing:
            assert self._outage.since is not None
            self._outage.recovered(
                "%s: recovered after %d failed writes (%s); replayed %d queued points",
                self.name,
                self._outage.failures,
                _duration(self.clock.now() - self._outage.since),
                self._replayed,
            )
        else:
            logger.info(
                "%s: replayed %d points queued by an earlier run", self.name, self._replayed
            )
        self._replayed = 0

    def _reject(self, points: Sequence[Point], err: SinkError) -> None:
        """Bad data is never retried; say why once per distinct reason, count every point."""
        self._count("rejected", len(points))
        reason = str(err)
        if reason != self._last_rejection:
            logger.error("%s rejected %d points, dropping them: %s", self.name, len(points), reason)
            self._last_rejection = reason
        else:
            logger.debug("%s rejected %d more points: %s", self.name, len(points), reason)

    def _storable(self, points: Sequence[Point]) -> list[Point]:
        """NaN or infinite watts can be neither written nor queued: reject them up front."""
        good = [p for p in points if math.isfinite(p.watts)]
        if len(good) != len(points):
            bad = [p for p in points if not math.isfinite(p.watts)]
            self._reject(bad, SinkError("usage is not a finite number", retryable=False))
        return good

    def _count(self, outcome: str, n: int) -> None:
        if self.stats is not None:
            self.stats.count_points(self.name, outcome, n)


def _duration(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"
