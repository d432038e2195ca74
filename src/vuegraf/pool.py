"""The bounded pool that Emporia's blocking requests run on.

pyemvue blocks for every request (0.1 to 1 s at Emporia), so vuegraf runs them on threads: a
fixed number of them, never one per account or per window, so memory and Emporia's load stay
bounded whatever the config holds. The daemon runs each account's tick on it; the
`--historydays` drain runs chart requests on it, paced by a token bucket.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from vuegraf.clock import Clock

T = TypeVar("T")


class RateLimiter:
    """Token bucket shared by the workers: `rate` requests a second, bursts of `burst`.

    Each caller reserves the next free slot under a lock and waits for it outside
    the lock via the clock, so a stop request ends the wait and FakeClock tests run
    in virtual time.
    """

    def __init__(self, rate: float, clock: Clock, burst: int = 1) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.clock = clock
        self._interval = 1.0 / rate
        self._tolerance = (max(burst, 1) - 1) * self._interval
        self._next: float | None = None  # when the bucket is next full, Unix seconds
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Wait for a token; False if a stop was requested instead."""
        with self._lock:
            now = self.clock.now().timestamp()
            slot = now if self._next is None or self._next < now else self._next
            self._next = slot + self._interval
            delay = slot - now - self._tolerance
        if delay > 0:
            return not self.clock.wait(delay)
        return not self.clock.stopped


class RequestPool:
    """`workers` threads for work that blocks on Emporia; `submit` hands one piece to them."""

    def __init__(self, workers: int, name: str = "vuegraf-requests") -> None:
        self.workers = max(1, workers)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=name)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        return self._executor.submit(fn)

    def shutdown(self) -> None:
        """Drop what has not started and wait for what has (it ends at its next request
        once the clock is stopped)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
