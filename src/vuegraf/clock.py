"""The injectable clock: nothing else in vuegraf reads the time or sleeps.

`SystemClock` is the production one; `FakeClock` lets scheduler tests run
thousands of cycles in virtual time without sleeping.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware UTC."""
        ...

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds`; return True if a stop was requested (early return)."""
        ...

    def stop(self) -> None:
        """Ask every current and future `wait` to return True at once."""
        ...

    @property
    def stopped(self) -> bool: ...


class SystemClock:
    """Wall-clock time; `wait` wakes early when `stop()` is called (e.g. from SIGTERM)."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, seconds: float) -> bool:
        if seconds > 0:
            return self._stop.wait(seconds)
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


class FakeClock:
    """Virtual time: `wait` advances the clock instantly. Optional `on_wait` hook for tests."""

    def __init__(self, start: datetime, stop_after: datetime | None = None) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock start must be aware")
        self._now = start.astimezone(UTC)
        self._stopped = False
        self.stop_after = stop_after
        self.waits: list[float] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def wait(self, seconds: float) -> bool:
        if self._stopped:
            return True
        self.waits.append(seconds)
        if seconds > 0:
            self._now += timedelta(seconds=seconds)
        if self.stop_after is not None and self._now >= self.stop_after:
            self._stopped = True
        return self._stopped

    def stop(self) -> None:
        self._stopped = True

    @property
    def stopped(self) -> bool:
        return self._stopped
