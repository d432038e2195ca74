"""The sink contract: where points go.

Lifecycle: `open()` once, then any number of `write(batch)` calls from one
thread at a time, then `close()` once. No write after close; close is never
called while a write is running. `write` either stores the whole batch
(idempotently: a point with the same series and time replaces the old one) or
raises `SinkError`, whose `retryable` says whether trying later can help.
"""

from __future__ import annotations

import math
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
    name: str

    def open(self) -> None: ...

    def write(self, points: Sequence[Point]) -> None: ...

    def close(self) -> None: ...


class SeriesStore(Sink, Protocol):
    """A sink that can say where each series ends (read once at start-up for backfill)
    and delete everything vuegraf wrote (--resetdatabase).

    Returns, for one account and scale, the time of the newest stored point of
    each series, keyed by (station name or "" when `addStationField` is off,
    channel name), in [since, until): `until` is when this process started
    writing, so what it wrote itself (or queued and replayed) never hides a
    hole from before. A store that cannot answer raises `StoreReadError`; the
    caller then only loses the backfill (see collector.py), never collection.
    """

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]: ...

    def delete_all(self, now: datetime) -> int | None:
        """Delete measurement energy_usage; how many points went, when the store can say."""
        ...


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
