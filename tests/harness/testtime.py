"""The time a test runs at: now, or a date chosen with VUEGRAF_TEST_START.

Tests that run vuegraf on the wall clock against the simulator take their "now" from here,
so the same test can be run at any date without waiting for it:

    VUEGRAF_TEST_START=2027-03-14T06:50:00Z pytest -m realclock

Each test starts at that instant (the offset is taken when its fixture is set up) and time
then runs at normal speed. The simulator gets `TestTime.now` as its clock; vuegraf, as a
child process, runs through `shifted_vuegraf.py` with the same offset, so both sides agree on
which buckets are complete. With no VUEGRAF_TEST_START the offset is zero and the child is
the real `python -m vuegraf`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vuegraf.clock import SystemClock

START_ENV = "VUEGRAF_TEST_START"
SHIFTED_VUEGRAF = Path(__file__).resolve().parent / "shifted_vuegraf.py"


def parse_instant(text: str) -> datetime:
    """`2027-03-14T06:50:00Z` (or with an offset) as aware UTC."""
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"{START_ENV}={text!r}: give a UTC offset or Z")
    return t.astimezone(UTC)


class ShiftedClock(SystemClock):
    """The wall clock moved by a fixed offset: waits and stops are real, `now` is shifted."""

    def __init__(self, offset: timedelta) -> None:
        super().__init__()
        self.offset = offset

    def now(self) -> datetime:
        return super().now() + self.offset


@dataclass(frozen=True)
class TestTime:
    """Wall-clock time moved by `offset`, shared by the simulator and the vuegraf child."""

    offset: timedelta = timedelta(0)

    __test__ = False  # not a test class, whatever its name

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> TestTime:
        text = (environ if environ is not None else os.environ).get(START_ENV, "").strip()
        if not text:
            return cls()
        return cls(parse_instant(text) - datetime.now(UTC))

    @property
    def shifted(self) -> bool:
        return self.offset != timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def clock(self) -> SystemClock:
        return ShiftedClock(self.offset) if self.shifted else SystemClock()

    def vuegraf(self, *args: str) -> list[str]:
        """The command line of `vuegraf ARGS` at this time."""
        if not self.shifted:
            return [sys.executable, "-m", "vuegraf", *args]
        seconds = repr(self.offset.total_seconds())
        return [sys.executable, str(SHIFTED_VUEGRAF), "--offset-seconds", seconds, "--", *args]

    @contextmanager
    def running(self, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
        """`vuegraf ARGS` at this time as a child process with its stderr in `log`; killed on
        the way out if the test left it running (a failed assertion must not leave it behind)."""
        with log.open("wb") as err:
            proc = subprocess.Popen(
                self.vuegraf(*args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
