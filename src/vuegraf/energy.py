"""Energy counters that never lie: each channel's energy drawn and fed back, from its minutes.

Home Assistant's Energy dashboard and Prometheus' `increase()` both read a counter that only
rises; a counter that goes down is read as a meter reset (and Home Assistant then adds the
new value on top of the old one). So the counters here are built from Emporia's minute
points only, the one scale that covers every instant exactly once:

- A minute adds its energy once. A minute that is missing (Emporia down, a failed cycle)
  adds nothing until a fill brings it, and then adds it then, whenever that is: after an
  outage the counter equals the sum of the minutes Emporia reports for the whole period.
  Nothing is ever extrapolated, so nothing rises while Emporia is away.
- Drawn and fed-back energy are two counters (`imported`, `exported`), each only rising:
  a solar minute of -400 W adds 400 W x 60 s to `exported` and nothing to `imported`.
- A minute written again with another value (Emporia revised it, or a fill's chart value
  differs from the live one) moves the counter by the difference, so the counter keeps
  agreeing with the store, which holds the last value. A difference that would lower a
  counter is owed instead (`debt`) and taken from the next minutes' energy: the counter
  never goes down and catches up with the store's sum.
- Minutes before the counter's `origin` (when vuegraf first saw the channel) never count:
  the first start's week of backfill is history, not energy used in the first minute.
- No day, month or time zone enters: there is no midnight, so no midnight spike or reset.

Which minutes were counted is kept as a few [start, end) ranges per channel for the last
`window` (8 days: Emporia keeps minutes for 7, so no fill reaches further back), and each
counted value for the last `REVISION_MINUTES` (a revision comes within minutes).

The counters are kept in `energy.sqlite` in the state directory, written in one transaction
(synchronous, so a power cut keeps what was committed) after every batch. What readers get
(`totals`) is what was last committed: a value published to Home Assistant is never one
that a crash could take back. The ledger is fed by `EnergySink`, which the sink factory puts
before the store: a crash between the two leaves a minute counted but not stored, which the
backfill brings to the store later, rather than a minute stored but not counted, which no
fill would bring again. (One case remains: a commit that fails, a full disk, is retried with
the next batch while the store goes on; a crash before a commit works again loses those
minutes from the counters, never adds any.) One process at a time: a lock file beside it.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None  # type: ignore[assignment]

from vuegraf.clock import Clock, SystemClock
from vuegraf.model import Point, Scale, Unit
from vuegraf.sinks.base import SinkError

logger = logging.getLogger(__name__)

MINUTE_SECONDS = Scale.MINUTE.seconds
JOULES_PER_KWH = 3_600_000.0
#: How far back of a channel's newest minute a minute still counts: Emporia keeps minutes for
#: 7 days, so a fill never brings an older one.
DEFAULT_WINDOW = timedelta(days=8)
#: Counted values kept this many minutes back of the newest, to follow a revision.
REVISION_MINUTES = 120
#: A new counter starts this far before the clock: the live minute being written belongs to
#: it, the backfill of the days before does not.
ORIGIN_SLACK = timedelta(minutes=2)
FILE_NAME = "energy"
_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class ChannelId:
    """A channel as Emporia knows it (its device gid and channel number): what a rename in
    vuegraf.json leaves alone. Points without Emporia's ids (hand-built ones) fall back to
    their names, under gid None."""

    device_gid: int | None
    channel: str

    @classmethod
    def of(cls, point: Point) -> ChannelId:
        if point.device_gid is not None and point.channel_num is not None:
            return cls(point.device_gid, point.channel_num)
        return cls(None, "\x1f".join((point.account, point.device, point.channel)))

    @property
    def text(self) -> str:
        """The key as stored in the file."""
        return f"{self.device_gid}|{self.channel}" if self.device_gid is not None else self.channel

    @classmethod
    def parse(cls, text: str) -> ChannelId:
        gid, sep, rest = text.partition("|")
        if sep and gid.isdigit():
            return cls(int(gid), rest)
        return cls(None, text)


@dataclass(frozen=True, slots=True)
class Totals:
    """A channel's counters, in joules; both only ever rise."""

    imported: float
    exported: float

    @property
    def imported_kwh(self) -> float:
        return self.imported / JOULES_PER_KWH

    @property
    def exported_kwh(self) -> float:
        return self.exported / JOULES_PER_KWH


class MinuteSet:
    """Which minutes (epoch minute numbers) were counted, as merged [start, end) ranges.

    Live collection writes consecutive minutes, so this stays a handful of ranges however
    long vuegraf runs; ranges that end before the window are dropped.
    """

    __slots__ = ("starts", "ends")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for start, end in sorted(ranges):
            if self.ends and start <= self.ends[-1]:
                self.ends[-1] = max(self.ends[-1], end)
            elif start < end:
                self.starts.append(start)
                self.ends.append(end)

    def add(self, minute: int) -> bool:
        """Record `minute`; False if it was already there."""
        i = bisect.bisect_right(self.starts, minute) - 1
        if i >= 0 and minute < self.ends[i]:
            return False
        joins_left = i >= 0 and self.ends[i] == minute
        joins_right = i + 1 < len(self.starts) and self.starts[i + 1] == minute + 1
        if joins_left and joins_right:
            self.ends[i] = self.ends[i + 1]
            del self.starts[i + 1], self.ends[i + 1]
        elif joins_left:
            self.ends[i] = minute + 1
        elif joins_right:
            self.starts[i + 1] = minute
        else:
            self.starts.insert(i + 1, minute)
            self.ends.insert(i + 1, minute + 1)
        return True

    def forget_before(self, minute: int) -> None:
        """Drop whole ranges that end at or before `minute` (a range spanning it is kept)."""
        cut = bisect.bisect_right(self.ends, minute)
        del self.starts[:cut], self.ends[:cut]

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends, strict=True))

    def __len__(self) -> int:
        return len(self.starts)


def _split(watts: float) -> tuple[float, float]:
    """A minute's (imported, exported) joules: the positive and the negative part."""
    joules = watts * MINUTE_SECONDS
    return (joules, 0.0) if joules >= 0 else (0.0, -joules)


class _Counter:
    """One channel's counters and what was counted (guarded by the ledger's lock)."""

    __slots__ = (
        "imported",
        "exported",
        "debt_in",
        "debt_out",
        "origin",
        "newest",
        "counted",
        "recent",
        "names",
    )

    def __init__(self, origin: int, names: tuple[str, str, str]) -> None:
        self.imported = 0.0
        self.exported = 0.0
        self.debt_in = 0.0  # joules owed to `imported` by revisions that lowered a minute
        self.debt_out = 0.0
        self.origin = origin  # first minute that counts
        self.newest = origin - 1  # newest minute counted
        self.counted = MinuteSet()
        self.recent: dict[int, float] = {}  # minute -> watts counted, for revisions
        self.names = names  # (account, device, channel) as last written

    def add(self, minute: int, watts: float, window_minutes: int) -> bool:
        """Count one minute; True if a counter or what is kept changed."""
        if minute < self.origin or minute < self.newest - window_minutes:
            return False
        if self.counted.add(minute):
            before = (0.0, 0.0)
        elif minute in self.recent and self.recent[minute] != watts:
            before = _split(self.recent[minute])
        else:
            return False  # the same value again, or a revision too old to follow
        after = _split(watts)
        self.imported, self.debt_in = _credit(self.imported, self.debt_in, after[0] - before[0])
        self.exported, self.debt_out = _credit(self.exported, self.debt_out, after[1] - before[1])
        self.recent[minute] = watts
        if minute > self.newest:
            self.newest = minute
            self.counted.forget_before(minute - window_minutes)
        if len(self.recent) > 2 * REVISION_MINUTES:
            keep_from = self.newest - REVISION_MINUTES
            self.recent = {m: w for m, w in self.recent.items() if m >= keep_from}
        return True

    def totals(self) -> Totals:
        return Totals(self.imported, self.exported)

    def state(self) -> str:
        """What the file keeps beside the totals, as JSON."""
        keep_from = self.newest - REVISION_MINUTES
        return json.dumps(
            {
                "origin": self.origin,
                "newest": self.newest,
                "debt": [self.debt_in, self.debt_out],
                "counted": self.counted.ranges(),
                "recent": [[m, w] for m, w in sorted(self.recent.items()) if m >= keep_from],
            },
            separators=(",", ":"),
        )

    @classmethod
    def restore(
        cls, names: tuple[str, str, str], imported: float, exported: float, state: str
    ) -> _Counter:
        data = json.loads(state)
        counter = cls(int(data["origin"]), names)
        counter.imported, counter.exported = float(imported), float(exported)
        counter.debt_in, counter.debt_out = (float(d) for d in data["debt"])
        counter.newest = int(data["newest"])
        counter.counted = MinuteSet((int(s), int(e)) for s, e in data["counted"])
        counter.recent = {int(m): float(w) for m, w in data["recent"]}
        for value in (counter.imported, counter.exported, counter.debt_in, counter.debt_out):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"counter value {value!r} is not a finite number >= 0")
        return counter


def _credit(total: float, debt: float, joules: float) -> tuple[float, float]:
    """Add `joules` (negative: a revision lowered a minute) to a counter that never falls:
    a fall is owed, and what is owed is paid from the next rise."""
    if joules < 0:
        return total, debt - joules
    paid = min(debt, joules)
    return total + joules - paid, debt - paid


class EnergyLedger:
    """Every channel's energy counters; safe to use from any thread.

    `path` None keeps them in memory only (tests, and configs built without a state
    directory): they then start from zero at every start.
    """

    def __init__(
        self,
        path: Path | None = None,
        clock: Clock | None = None,
        window: timedelta = DEFAULT_WINDOW,
        origin_slack: timedelta = ORIGIN_SLACK,
    ) -> None:
        self.path = path
        self._clock = clock if clock is not None else SystemClock()
        self._window_minutes = int(window.total_seconds()) // MINUTE_SECONDS
        self._origin_slack = origin_slack
        self._lock = threading.Lock()
        self._counters: dict[ChannelId, _Counter] = {}
        self._committed: dict[ChannelId, Totals] = {}
        self._dirty: set[ChannelId] = set()
        self._db: sqlite3.Connection | None = None
        self._held: IO[str] | None = None  # the lock file, locked while open

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        """Load what the last run committed.

        A file that is not a database, or holds rows that make no sense, is set aside, said
        at ERROR, and the counters start again from zero (a reset, which both Home Assistant
        and Prometheus know how to read), rather than vuegraf not starting. A file that
        cannot be opened now (locked, an I/O error, no permission) or that another vuegraf
        process uses raises `SinkError`: starting from zero then would count again what the
        file holds, and Home Assistant would add it twice."""
        if self.path is None or self._db is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file()
        try:
            self._db = self._connect(self.path)
            rows = self._db.execute(
                "SELECT key, account, device, channel, imported_j, exported_j, state FROM counter"
            ).fetchall()
            counters = {
                ChannelId.parse(key): _Counter.restore((acct, dev, chan), imp, exp, state)
                for key, acct, dev, chan, imp, exp, state in rows
            }
        except sqlite3.OperationalError as err:
            self.close()
            raise SinkError(
                f"cannot open the energy counters in {self.path}: {err}", retryable=False
            ) from None
        except (sqlite3.DatabaseError, ValueError, TypeError, KeyError) as err:
            if self._db is not None:
                self._db.close()
                self._db = None
            aside = self.path.with_name(f"{self.path.name}.unreadable-{os.getpid()}")
            logger.error(
                "Energy counters: %s cannot be read (%s); moved to %s, counting again from zero",
                self.path,
                err,
                aside,
            )
            for suffix in ("", "-wal", "-shm"):
                part = self.path.with_name(self.path.name + suffix)
                if part.exists():
                    part.replace(aside.with_name(aside.name + suffix))
            self._db = self._connect(self.path)
            counters = {}
        with self._lock:
            self._counters = counters
            self._committed = {key: c.totals() for key, c in counters.items()}
        if counters:
            logger.info("Energy counters: %d channels loaded from %s", len(counters), self.path)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut, not just a crash
        db.execute(
            "CREATE TABLE IF NOT EXISTS counter (key TEXT PRIMARY KEY, account TEXT NOT NULL, "
            "device TEXT NOT NULL, channel TEXT NOT NULL, imported_j REAL NOT NULL, "
            "exported_j REAL NOT NULL, state TEXT NOT NULL)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(_SCHEMA_VERSION),)
        )
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._held is not None:
            self._held.close()  # closing the file drops its lock
            self._held = None

    def _lock_file(self) -> None:
        """One process per counters file: two would each overwrite the other's rows."""
        assert self.path is not None
        if fcntl is None:
            return  # no advisory locks on this system
        held = open(self.path.with_name(self.path.name + ".lock"), "a")  # noqa: SIM115
        try:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            held.close()
            raise SinkError(
                f"the energy counters in {self.path} are in use by another vuegraf process; "
                "give each process its own stateDir (or use --shard)",
                retryable=False,
            ) from None
        self._held = held

    # -- counting -------------------------------------------------------------------------

    def add(self, points: Sequence[Point]) -> set[ChannelId]:
        """Count the batch's minute points (other scales are ignored) and commit; returns
        the channels whose counters or records changed. Raises `SinkError` (retryable) when
        the commit fails: the counts stay in memory and are committed with the next batch,
        and readers go on seeing the last committed totals meanwhile."""
        origin = self._origin()
        changed: set[ChannelId] = set()
        with self._lock:
            for point in points:
                if point.scale is not Scale.MINUTE or point.unit is not Unit.WATTS:
                    continue
                key = ChannelId.of(point)
                counter = self._counters.get(key)
                names = (point.account, point.device, point.channel)
                if counter is None:
                    counter = self._counters[key] = _Counter(origin, names)
                    changed.add(key)
                elif counter.names != names:
                    counter.names = names
                    changed.add(key)
                if counter.add(point.epoch_s // MINUTE_SECONDS, point.watts, self._window_minutes):
                    changed.add(key)
            self._dirty |= changed
            self._commit()
        return changed

    def _origin(self) -> int:
        return int((self._clock.now() - self._origin_slack).timestamp()) // MINUTE_SECONDS

    def _commit(self) -> None:
        """Write the changed counters in one transaction; then readers see them."""
        if not self._dirty:
            return
        if self._db is not None:
            rows = [
                (key.text, *c.names, c.imported, c.exported, c.state())
                for key, c in ((k, self._counters[k]) for k in self._dirty)
            ]
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany(
                        "INSERT OR REPLACE INTO counter VALUES (?, ?, ?, ?, ?, ?, ?)", rows
                    )
            except sqlite3.Error as err:
                raise SinkError(
                    f"cannot save the energy counters to {self.path}: {err}", retryable=True
                ) from None
        for key in self._dirty:
            self._committed[key] = self._counters[key].totals()
        self._dirty.clear()

    # -- reading --------------------------------------------------------------------------

    def totals(self, key: ChannelId) -> Totals | None:
        """The channel's committed counters; None for a channel never counted."""
        with self._lock:
            return self._committed.get(key)

    def origin(self, key: ChannelId) -> int | None:
        """The first epoch minute the channel's counters count (None: no such channel)."""
        with self._lock:
            counter = self._counters.get(key)
            return None if counter is None else counter.origin

    def channels(self) -> dict[ChannelId, Totals]:
        with self._lock:
            return dict(self._committed)


class EnergySink:
    """The ledger as a sink: every batch, live or filled, is counted (not `LiveOnly`).

    Put before the store (sinks/factory.py), so a minute is counted before it is stored."""

    name = "energy"

    def __init__(self, ledger: EnergyLedger) -> None:
        self.ledger = ledger

    def open(self) -> None:
        self.ledger.open()

    def write(self, points: Sequence[Point]) -> None:
        self.ledger.add(points)

    def close(self) -> None:
        self.ledger.close()


def ledger_path(state_dir: Path | None, file_suffix: str = "") -> Path | None:
    """`energy<suffix>.sqlite` in the state directory (one per replica of a shard)."""
    return None if state_dir is None else state_dir / f"{FILE_NAME}{file_suffix}.sqlite"
