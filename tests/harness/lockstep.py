"""Several vuegraf processes in one virtual time that the test moves, event by event.

A clock file holds the virtual time (a Unix timestamp, replaced atomically); the test alone
writes it. Each child (tests/harness/virtual_vuegraf.py --follow NAME) runs on a
`FollowedClock`: `now()` is the file's time, and `wait(s)` writes the time it waits for to
its park file (`<clock>.NAME.parked`) and returns once the file's time has reached it.

The test's side, `Lockstep`, moves time only when every live child is parked, and then to
the earliest time one of them waits for: a discrete-event run. No child is ever late, a
slow or loaded machine only makes the run take longer in real time, and the outcome does
not depend on how fast anything is. A child that has woken and not parked again still shows
its old time, which is not in the future, so it counts as busy: no race between a wake-up
and the next move.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

POLL_SECONDS = 0.005  # a parked child costs about 2 % of a core
BUSY = "busy"


def read_time(path: Path) -> datetime:
    return datetime.fromtimestamp(float(path.read_text()), UTC)


def write_atomically(path: Path, text: str) -> None:
    """A reader sees the old or the new text, never half of it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def park_path(clock: Path, name: str) -> Path:
    return clock.with_name(f"{clock.name}.{name}.parked")


class FollowedClock:
    """The child's clock (vuegraf's Clock protocol): time is whatever the test says."""

    def __init__(self, clock: Path, name: str) -> None:
        self.clock = clock
        self.park = park_path(clock, name)
        self._now = read_time(clock)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._waiting: dict[int, datetime] = {}  # thread id -> the time it waits for

    def now(self) -> datetime:
        return self._now

    def wait(self, seconds: float) -> bool:
        if self._stop.is_set() or seconds <= 0:
            return self._stop.is_set()
        me = threading.get_ident()
        with self._lock:
            self._waiting[me] = self._now + timedelta(seconds=seconds)
            write_atomically(self.park, repr(min(self._waiting.values()).timestamp()))
            target = self._waiting[me]
        try:
            while not self._stop.wait(POLL_SECONDS):
                now = read_time(self.clock)
                if now >= target:
                    self._now = max(self._now, now)
                    return False
            return True
        finally:
            with self._lock:
                del self._waiting[me]
                write_atomically(self.park, BUSY)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


class Lockstep:
    """The test's side: the clock file and the children that follow it."""

    def __init__(self, clock: Path, start: datetime) -> None:
        self.clock = clock
        self.set(start)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.doomed: set[str] = set()  # children the test is about to kill

    def expect_exit(self, name: str) -> None:
        """The test will kill this child (at a moment of its choosing): once it has ended,
        time moves on without it."""
        self.doomed.add(name)

    def now(self) -> datetime:
        return read_time(self.clock)

    def set(self, t: datetime) -> None:
        write_atomically(self.clock, repr(t.timestamp()))

    def adopt(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        """A child started with `--follow name`; it is busy until it first parks."""
        park_path(self.clock, name).unlink(missing_ok=True)
        self.procs[name] = proc

    def drop(self, name: str) -> subprocess.Popen[bytes]:
        """A child that is gone (killed by the test): time moves on without it."""
        park_path(self.clock, name).unlink(missing_ok=True)
        return self.procs.pop(name)

    def parked_until(self, name: str) -> datetime | None:
        """When the child waits for, if it is parked waiting for the future; else None."""
        try:
            text = park_path(self.clock, name).read_text()
        except FileNotFoundError:
            return None
        if text in ("", BUSY):
            return None
        target = datetime.fromtimestamp(float(text), UTC)
        return target if target > self.now() else None

    def wait_parked(
        self, timeout: float = 120.0, describe: Callable[[str], str] = lambda _name: ""
    ) -> dict[str, datetime]:
        """Wait (up to `timeout` real seconds) until every child is parked; returns when each
        waits for. A child the test said it would kill is dropped once it has ended."""
        deadline = time.monotonic() + timeout
        while True:
            targets = {name: self.parked_until(name) for name in self.procs}
            parked = {name: t for name, t in targets.items() if t is not None}
            if len(parked) == len(targets):
                return parked
            for name, proc in list(self.procs.items()):
                if proc.poll() is None:
                    continue
                if name in self.doomed:
                    self.doomed.discard(name)
                    self.drop(name)
                    continue
                raise AssertionError(
                    f"{name} ended (exit {proc.returncode}) at {self.now():%H:%M:%S}"
                    f"{describe(name)}"
                )
            if time.monotonic() > deadline:
                busy = [name for name in targets if name not in parked]
                raise AssertionError(
                    f"still busy after {timeout} s at {self.now():%H:%M:%S}: {busy}"
                    + "".join(describe(name) for name in busy)
                )
            time.sleep(POLL_SECONDS)

    def step(
        self,
        timeout: float = 120.0,
        describe: Callable[[str], str] = lambda _name: "",
        until: datetime | None = None,
    ) -> datetime:
        """Once every child is parked, move time to the earliest wake-up (no further than
        `until`); returns the new time."""
        targets = self.wait_parked(timeout, describe)
        nxt = min(targets.values()) if targets else until
        if nxt is None:
            raise AssertionError("no child left to wait for and no time to move to")
        if until is not None:
            nxt = min(nxt, until)
        self.set(nxt)
        return nxt

    def run_until(
        self,
        end: datetime,
        timeout: float = 120.0,
        describe: Callable[[str], str] = lambda _name: "",
    ) -> None:
        """Step until virtual time reaches `end`."""
        while self.now() < end:
            self.step(timeout, describe, until=end)
