"""Several accounts at once: every live minute before any fill, and a hung account isolated.

The collectors here stand in for `AccountCollector` at the daemon's seam (`live`, then `fill`
when the live half allows it); the daemon, its pool and the sinks' fan-out are the real ones.
Blocking is on events the test controls, and every wait is on a condition with a deadline,
so the verdict does not depend on the machine's speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from harness import oracle
from vuegraf.clock import FakeClock
from vuegraf.collector import TickResult
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.model import Point, Scale

T0 = datetime(2026, 11, 23, 20, 0, 30, tzinfo=UTC)
DEADLINE = 30.0  # seconds any one condition may take


def last_complete_minute(now: datetime) -> datetime:
    """The newest minute complete 5 s (the lag) before `now` (the test's own arithmetic)."""
    return oracle.floor_to(now - timedelta(seconds=5), 60) - timedelta(minutes=1)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {DEADLINE} s"
        time.sleep(0.01)


class RecordingSink:
    name = "recording"

    def __init__(self) -> None:
        self.points: list[Point] = []
        self._lock = threading.Lock()

    def open(self) -> None: ...

    def close(self) -> None: ...

    def write(self, points: Sequence[Point]) -> None:
        with self._lock:
            self.points.extend(points)

    def minutes(self, account: str) -> list[datetime]:
        with self._lock:
            return sorted(p.time for p in self.points if p.account == account)


class Account:
    """One account's collection: its live half writes the newest minute; its live half or
    its fill can be held on an event, as a slow Emporia would hold them."""

    def __init__(
        self,
        name: str,
        emit: Callable[[Sequence[Point]], None],
        hold_live: threading.Event | None = None,
        hold_fill: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.emit = emit
        self.hold_live = hold_live
        self.hold_fill = hold_fill
        self.lives = 0
        self.fills_started = 0

    def live(self, now: datetime) -> TickResult:
        self.lives += 1
        if self.hold_live is not None:
            assert self.hold_live.wait(DEADLINE), "never released"
        bucket = last_complete_minute(now)
        self.emit([Point(self.name, "Panel", "1", Scale.MINUTE, bucket, 100.0)])
        return TickResult(points=1, fill_due=True)

    def fill(self, now: datetime, result: TickResult, until: object = None) -> None:
        self.fills_started += 1
        if self.hold_fill is not None:
            assert self.hold_fill.wait(DEADLINE), "never released"


def config(tmp_path, concurrency: int):
    data = {
        "accounts": [{"name": "Home", "email": "a@b.c", "password": "pw"}],
        "accountConcurrency": concurrency,
    }
    return parse_config(data, tmp_path / "vuegraf.json")


def test_every_accounts_minute_is_written_while_fills_hold_the_workers(tmp_path):
    # Two workers, three accounts whose fills hang: were an account's fill run right after
    # its live half, both workers would hang in the first two fills and the third account's
    # minute would wait for them.
    sink = RecordingSink()
    release = threading.Event()
    accounts = [Account(f"A{i}", sink.write, hold_fill=release) for i in range(3)]
    clock = FakeClock(T0)
    daemon = Daemon(config(tmp_path, 2), [], [sink], clock, collectors=accounts)
    runner = threading.Thread(target=daemon.run, kwargs={"max_cycles": 1}, daemon=True)
    runner.start()
    try:
        wait_for(lambda: all(sink.minutes(a.name) for a in accounts), "minute of every account")
        assert sum(a.fills_started for a in accounts) <= 2  # the fills still hang
    finally:
        release.set()
        clock.stop()
        runner.join(DEADLINE)
    assert not runner.is_alive()
    assert all(a.fills_started == 1 for a in accounts)


def test_a_hung_account_never_holds_another_accounts_minute(tmp_path):
    sink = RecordingSink()
    release = threading.Event()
    hung = Account("Hung", sink.write, hold_live=release)
    others = [Account(f"A{i}", sink.write) for i in range(3)]
    clock = FakeClock(T0)
    daemon = Daemon(config(tmp_path, 4), [], [sink], clock, collectors=[hung, *others])
    results = []
    first_minute = last_complete_minute(T0)

    def run() -> None:
        results.append(daemon.run_cycle())  # the start-up cycle
        results.append(daemon.run_cycle(clock.now()))

    runner = threading.Thread(target=run, daemon=True)
    daemon.outputs.open()
    runner.start()
    try:
        wait_for(lambda: all(sink.minutes(a.name) for a in others), "first minutes")
        # The next tick comes while "Hung" still waits for Emporia: the first cycle stops
        # waiting for it, and the second one collects the others without it.
        clock.advance(60)
        wait_for(lambda: len(results) == 2, "second cycle")
        for account in others:
            assert sink.minutes(account.name) == [first_minute, first_minute + timedelta(minutes=1)]
        assert sink.minutes("Hung") == []
        assert hung.lives == 1  # not asked again while its tick is still at work
        assert results[1].busy_accounts == ["Hung"]  # at work: not failed, not asked twice
        assert not results[1].failed_accounts
    finally:
        release.set()
        runner.join(DEADLINE)
    # Released, its tick ends and is counted by the next cycle; it is asked again after.
    wait_for(lambda: bool(sink.minutes("Hung")), "the hung account's minute")
    third = daemon.run_cycle(clock.now())
    assert "Hung" not in third.failed_accounts + third.busy_accounts
    wait_for(lambda: hung.lives == 2, "the hung account asked again")
    daemon.outputs.close()


def test_a_cycle_that_ends_after_its_next_tick_is_followed_by_that_tick(tmp_path):
    # Each cycle's fills run past the next tick (as a long fill does: the request in hand
    # ends after it). That tick is then taken late, not skipped: every minute is asked for
    # by a live request, none left to a hole fill.
    clock = FakeClock(T0)
    lock = threading.Lock()
    sink = RecordingSink()

    class Filling(Account):
        def fill(self, now: datetime, result: TickResult, until: object = None) -> None:
            with lock:
                clock.advance(25)  # two accounts: 50 s of fills a cycle, on 2 workers

    accounts = [Filling(f"A{i}", sink.write) for i in range(2)]
    daemon = Daemon(config(tmp_path, 2), [], [sink], clock, collectors=accounts)
    daemon.run(max_cycles=5)
    first = last_complete_minute(T0)
    for account in accounts:
        assert sink.minutes(account.name) == [first + timedelta(minutes=i) for i in range(5)]


def test_a_fill_not_begun_when_the_next_tick_comes_costs_its_account_no_minute(tmp_path):
    # Two workers, three accounts: the first two fills to begin hang past the next tick, so
    # the third account's fill still waits in the pool when that tick comes. Its time is
    # over (it would ask nothing), so it is dropped and the account is asked for its next
    # minute; kept, it would hold the account out of the next cycle and run late for nothing.
    sink = RecordingSink()
    release = threading.Event()
    clock = FakeClock(T0)
    lock = threading.Lock()
    begun: list[tuple[str, datetime]] = []
    ended: list[str] = []

    class SlowFills(Account):
        def fill(self, now: datetime, result: TickResult, until: object = None) -> None:
            with lock:
                begun.append((self.name, now))
                hang = len(begun) <= 2
                if len(begun) == 1:
                    clock.advance(60)  # the next tick is due while this fill runs
            if hang:
                assert release.wait(DEADLINE), "never released"
            with lock:
                ended.append(self.name)

    accounts = [SlowFills(f"A{i}", sink.write) for i in range(3)]
    daemon = Daemon(config(tmp_path, 2), [], [sink], clock, collectors=accounts)
    daemon.outputs.open()
    try:
        first = daemon.run_cycle()  # returns at the next tick, the two fills still hanging
        with lock:
            hung = [name for name, _now in begun]
        assert len(hung) == 2
        third = next(a for a in accounts if a.name not in hung)
        assert third.name not in first.failed_accounts
        release.set()
        wait_for(lambda: len(ended) >= 2, "end of the hung fills")
        second = daemon.run_cycle(clock.now())
        assert third.name not in second.failed_accounts
        assert third.lives == 2
        assert sink.minutes(third.name) == [
            last_complete_minute(T0), last_complete_minute(clock.now())
        ]
        with lock:
            # Its only fill is the second cycle's: the first one's was never run.
            assert [now for name, now in begun if name == third.name] == [clock.now()]
    finally:
        release.set()
        clock.stop()
        daemon.outputs.close()
