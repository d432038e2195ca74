"""Counters the whole program shares: Emporia requests, cycles, sink outcomes.

One `Stats` object is built in `cli.main` and passed down. Writers call the
small `count_*`/`set_*` methods from any thread; readers (the request budget
log, the health file, the Prometheus exporter) take a `snapshot()`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

from vuegraf.config import DEFAULT_DAILY_BUDGET


@dataclass(frozen=True)
class StatsSnapshot:
    """A consistent copy of every counter, for readers."""

    requests: dict[tuple[str, str, str], int]  # (account, endpoint, outcome) -> count
    requests_today: dict[str, int]  # account -> count for the current UTC day
    budget: int
    cycles: int
    failed_cycles: int
    consecutive_failed_cycles: int
    last_cycle_seconds: float | None
    last_success: datetime | None
    sink_points: dict[tuple[str, str], int]  # (sink, outcome) -> count
    queue_depth: dict[str, int]
    mqtt_connected: bool | None
    # account -> (state, one-line reason): "ok", or whose side a failure is on (see
    # `set_account_state`)
    account_states: dict[str, tuple[str, str]] = field(default_factory=dict)
    shedding: dict[str, str] = field(default_factory=dict)  # account -> what the budget sheds
    # (account, scale code) -> buckets whose finer buckets did not add up to them
    disagreements: dict[tuple[str, str], int] = field(default_factory=dict)
    checked: dict[tuple[str, str], int] = field(default_factory=dict)  # buckets compared
    # (account, scale, channel, reason) -> buckets given up for good (vuegraf.backfill reasons)
    lost: dict[tuple[str, str, str, str], int] = field(default_factory=dict)


@dataclass
class Stats:
    budget: int = DEFAULT_DAILY_BUDGET
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _day: date | None = None
    _today: Counter[str] = field(default_factory=Counter)
    cycles: int = 0
    failed_cycles: int = 0
    consecutive_failed_cycles: int = 0
    last_cycle_seconds: float | None = None
    last_success: datetime | None = None
    _sink_points: Counter[tuple[str, str]] = field(default_factory=Counter)
    _queue_depth: dict[str, int] = field(default_factory=dict)
    mqtt_connected: bool | None = None
    _account_states: dict[str, tuple[str, str]] = field(default_factory=dict)
    _shedding: dict[str, str] = field(default_factory=dict)
    _shedding_day: dict[str, date] = field(default_factory=dict)  # the UTC day of each level
    _disagreements: Counter[tuple[str, str]] = field(default_factory=Counter)
    _checked: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lost: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)

    def count_request(
        self, account: str, endpoint: str, outcome: str, when: datetime, budgeted: bool = True
    ) -> int:
        """Count one Emporia request; returns the account's count for `when`'s UTC day.

        `budgeted=False` for what Emporia's API never sees (a Cognito login): counted by
        endpoint and outcome, but not in the day's count that the budget compares with.
        """
        with self._lock:
            self._requests[(account, endpoint, outcome)] += 1
            day = when.date()
            if day != self._day:
                self._day = day
                self._today.clear()
            if budgeted:
                self._today[account] += 1
            return self._today[account]

    def requests_today(self, account: str, when: datetime | None = None) -> int:
        """The account's count for the current UTC day; with `when`, for `when`'s UTC day (0
        when no request has been counted on it yet: the day just began)."""
        with self._lock:
            if when is not None and when.date() != self._day:
                return 0
            return self._today[account]

    def today(self) -> tuple[date | None, dict[str, int]]:
        """The UTC day last counted and each account's count on it (for the file that keeps
        them across a restart, `vuegraf.daycount`)."""
        with self._lock:
            return self._day, dict(self._today)

    def resume_today(self, day: date, counts: Mapping[str, int]) -> None:
        """Go on from `counts`, what an earlier process counted on the UTC `day`: each
        account's count is at least that. Nothing is counted twice when this process already
        counted some of them (a reload reads the file again); counts of a day other than the
        one being counted are ignored."""
        with self._lock:
            if self._day is not None and day != self._day:
                return
            self._day = day
            for account, n in counts.items():
                self._today[account] = max(self._today[account], n)

    def count_cycle(self, ok: bool, seconds: float, finished: datetime) -> None:
        with self._lock:
            self.cycles += 1
            self.last_cycle_seconds = seconds
            if ok:
                self.consecutive_failed_cycles = 0
                self.last_success = finished
            else:
                self.failed_cycles += 1
                self.consecutive_failed_cycles += 1

    def count_points(self, sink: str, outcome: str, n: int) -> None:
        """outcome: written, queued, replayed, dropped, rejected."""
        if n:
            with self._lock:
                self._sink_points[(sink, outcome)] += n

    def set_queue_depth(self, sink: str, depth: int) -> None:
        with self._lock:
            self._queue_depth[sink] = depth

    def set_mqtt_connected(self, connected: bool) -> None:
        with self._lock:
            self.mqtt_connected = connected

    def set_account_state(self, account: str, state: str, reason: str = "") -> None:
        """An account's state as the health check and `/metrics` show it: "ok", or whose side
        the failure is on ("auth_failed": the user's; "emporia_down", "rate_limited":
        Emporia's; "api_changed": Emporia changed its API, vuegraf needs an update)."""
        with self._lock:
            self._account_states[account] = (state, reason)

    def keep_account_states(self, accounts: Collection[str]) -> None:
        """Forget the states and the shedding of accounts not in `accounts` (a reload
        removed or renamed them): an old name's refused login must not keep the health check
        failing, nor its budget level show in `/metrics` for ever."""
        with self._lock:
            for gone in set(self._account_states) - set(accounts):
                del self._account_states[gone]
            for gone in set(self._shedding) - set(accounts):
                del self._shedding[gone]
                self._shedding_day.pop(gone, None)

    def set_shedding(self, account: str, level: str, day: date | None = None) -> None:
        """What the daily request budget makes an account leave out now ("" for nothing),
        and the UTC `day` that level was reached on (kept for the guard a reload builds)."""
        with self._lock:
            self._shedding[account] = level
            if day is None:
                self._shedding_day.pop(account, None)
            else:
                self._shedding_day[account] = day

    def shedding_of(self, account: str) -> tuple[str, date | None]:
        """An account's budget level and the UTC day it was reached on ("" and None when no
        guard has planned for it yet): a reload's new guard goes on from it."""
        with self._lock:
            return self._shedding.get(account, ""), self._shedding_day.get(account)

    def count_checked(self, account: str, scale: str, agreed: bool) -> None:
        """One bucket compared with the sum of its finer buckets (consistency check)."""
        with self._lock:
            self._checked[(account, scale)] += 1
            if not agreed:
                self._disagreements[(account, scale)] += 1

    def count_lost(self, account: str, scale: str, channel: str, reason: str, n: int) -> None:
        """`n` buckets of one series that can never be filled (`reason`: why)."""
        if n:
            with self._lock:
                self._lost[(account, scale, channel, reason)] += n

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                requests=dict(self._requests),
                requests_today=dict(self._today),
                budget=self.budget,
                cycles=self.cycles,
                failed_cycles=self.failed_cycles,
                consecutive_failed_cycles=self.consecutive_failed_cycles,
                last_cycle_seconds=self.last_cycle_seconds,
                last_success=self.last_success,
                sink_points=dict(self._sink_points),
                queue_depth=dict(self._queue_depth),
                mqtt_connected=self.mqtt_connected,
                account_states=dict(self._account_states),
                shedding=dict(self._shedding),
                disagreements=dict(self._disagreements),
                checked=dict(self._checked),
                lost=dict(self._lost),
            )
