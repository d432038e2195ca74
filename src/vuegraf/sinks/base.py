"""The sink contract: where points go.

Lifecycle: `open()` once, then any number of `write(batch)` calls from one
thread at a time, then `close()` once. No write after close; close is never
called while a write is running. `write` either stores the whole batch
(idempotently: a point with the same series and time replaces the old one) or
raises `SinkError`, whose `retryable` says whether trying later can help.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from vuegraf.model import Point, Scale


class SinkError(Exception):
    """A failed write. `retryable`: network, timeout, 5xx, 429 — keep the points and retry."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class StoreReadError(SinkError):
    """A failed read back (`last_times`), worded as a read, never as a rejected write.

    `retryable`: asking again later may work (store down, 5xx, 401/403 until the user fixes
    the rights). `unsupported`: this server does not offer the read API that was tried at
    all (another read API may work); always non-retryable.
    """

    def __init__(self, message: str, retryable: bool, unsupported: bool = False) -> None:
        super().__init__(message, retryable=retryable and not unsupported)
        self.unsupported = unsupported


class Sink(Protocol):
    """What every output is: a name, and open / write / close as described above."""

    name: str

    def open(self) -> None: ...

    def write(self, points: Sequence[Point]) -> None: ...

    def close(self) -> None: ...


# -- abilities: a sink that can do more says so by subclassing one of these -------------------
# The fan-out (sinks/outputs.py) checks them once, by type, when it is built; nothing probes
# a sink for attributes.


class LiveOnly(ABC):  # noqa: B024  (a marker: declaring it is the whole contract)
    """Gets live values only (MQTT): filled holes and history are not news for subscribers,
    and a value from an hour ago must not follow the newest one."""


class CountsOwnPoints(ABC):  # noqa: B024
    """Counts its own outcomes (written, queued, dropped...) in `Stats`, so the fan-out must
    not count its writes as written again."""


class Buffered(ABC):
    """Keeps what it could not deliver and delivers it later (the durable retry queue).

    `flush` delivers the backlog for at most `max_seconds` (None: no limit) and says
    whether it is empty; it never raises for an outage. `inner` is the sink it buffers for.
    """

    inner: Sink

    @property
    @abstractmethod
    def backlog(self) -> int:
        """Points waiting to be delivered."""

    @abstractmethod
    def flush(self, max_seconds: float | None = None) -> bool: ...


class ReadsBack(ABC):
    """A store that can say where each series ends (read at start-up for backfill) and
    delete everything vuegraf wrote (--resetdatabase).

    `last_times` returns, for one account and scale, the time of the newest stored point of
    each series, keyed by (station name or "" when `addStationField` is off, channel name),
    in [since, until): `until` is when this process started writing, so what it wrote itself
    (or queued and replayed) never hides a hole from before. A store that cannot answer
    raises `StoreReadError`; the caller then only loses the backfill (see collector.py),
    never collection.

    `stored_times` returns the stamp of every point stored in [since, until) for one account
    and scale, per series (same keys), oldest first: what `vuegraf coverage` checks bucket by
    bucket. Its callers ask a bounded window at a time (a day of minutes), so an answer stays
    small whatever the store holds. It only reads: a store that does not exist yet holds
    nothing.
    """

    name: str

    @abstractmethod
    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]: ...

    @abstractmethod
    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], list[datetime]]: ...

    @abstractmethod
    def delete_all(self, now: datetime) -> int | None:
        """Delete measurement energy_usage; how many points went, when the store can say."""


class SeriesStore(ReadsBack):
    """A sink that reads back: what a config's store is (InfluxDB, SQLite; see
    `factory.build_store`)."""

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def write(self, points: Sequence[Point]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


def readable_store(sink: Sink) -> ReadsBack | None:
    """The store behind `sink` that can read back, if any (a buffered sink's inner one)."""
    if isinstance(sink, ReadsBack):
        return sink
    if isinstance(sink, Buffered):
        return readable_store(sink.inner)
    return None


def ceil_seconds(t: datetime) -> int:
    """Whole seconds since the epoch, rounded up: points are stored at whole seconds, so a
    read's `time >= since` and `time < until` keep their meaning in a store's own units."""
    return math.ceil(t.timestamp())


def classify_status(status: int | None) -> bool:
    """Whether an HTTP status means "try again later" (True) or "bad data, drop" (False).

    401/403/404 are kept and retried: a rotated token, a changed password or a missing
    bucket is fixed by the user, and the points must still be there when it is.
    """
    if status is None:
        return True
    return status in (401, 403, 404, 408, 429) or status >= 500
