"""What is missing, per series and scale, and when to ask Emporia for it.

A `Tracker` holds, for one account and one scale, each chart series' *filled
mark*: every bucket before it is stored (or was asked for and Emporia had no
value). Marks come from the store once at start-up (one query per account and
scale; while it cannot answer, from the marks the last run saved and this start,
moved back once it does), then move in memory as live values are written, so
finding holes never costs a database query. A live value that is missing (a failed cycle, a null)
leaves the mark behind, and the series becomes due for a chart request covering
the whole hole in one call. Values that may still arrive late get `settle_secs`
before they are given up; a series that answers with nothing at all (an offline
plug) backs off instead of being asked again every cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from vuegraf.emporia.limits import DEFAULT_LOOKBACK, MAX_BUCKETS, RETENTION
from vuegraf.model import Scale
from vuegraf.schedule import bucket_start, next_bucket

SeriesKey = tuple[int, str]  # (device gid, channel number)

BACKOFF_START = timedelta(minutes=5)
ERROR_BACKOFF_START = timedelta(minutes=1)
BACKOFF_MAX = timedelta(hours=1)


@dataclass
class SeriesState:
    filled: datetime  # first bucket start not yet known
    retry_at: datetime | None = None  # back-off after an empty answer or a failure
    backoff: timedelta = BACKOFF_START
    error_backoff: timedelta = ERROR_BACKOFF_START
    empty: bool = False  # the last answer held no value at all (an offline plug)


@dataclass(frozen=True)
class FillRequest:
    """One chart request to make: buckets first..last (inclusive) of one series."""

    series: SeriesKey
    scale: Scale
    first: datetime
    last: datetime


class Tracker:
    def __init__(self, scale: Scale, zone: tzinfo, settle_secs: float = 120.0) -> None:
        self.scale = scale
        self.zone = zone
        self.settle = timedelta(seconds=settle_secs)
        self.series: dict[SeriesKey, SeriesState] = {}
        self.retired: dict[SeriesKey, SeriesState] = {}  # gone from the account, marks kept

    def earliest(self, now: datetime, lookback: timedelta | None = None) -> datetime:
        """Oldest bucket worth asking for: the lookback, clipped to Emporia's retention."""
        since = now - (lookback if lookback is not None else DEFAULT_LOOKBACK[self.scale])
        start = bucket_start(self.scale, since, self.zone)
        if self.scale not in RETENTION:
            return start  # hours and days are kept for years: include the partial bucket
        since = max(since, now - RETENTION[self.scale])
        start = bucket_start(self.scale, since, self.zone)
        return start if start >= since else next_bucket(self.scale, start, self.zone)

    def seed(
        self,
        keys: Iterable[SeriesKey],
        last_stored: dict[SeriesKey, datetime],
        now: datetime,
        lookback: timedelta | None = None,
        saved_marks: dict[SeriesKey, datetime] | None = None,
        stored_lookback: timedelta | None = None,
    ) -> None:
        """Start-up: marks after the last stored bucket, or the lookback for new series.

        The store only knows each series' newest point, not a hole behind it that the
        previous run had not filled yet; `saved_marks` (the marks that run saved) keep
        such holes: the older of the two wins. A series with stored points is filled
        from them back to `stored_lookback` (hours and days after a long outage: Emporia
        keeps those for years), a new one from `lookback`.
        """
        floor, stored_floor = self._floors(now, lookback, stored_lookback)
        saved_marks = saved_marks or {}
        for key in keys:
            stored = last_stored.get(key)
            if stored is None:
                self.series[key] = SeriesState(filled=floor)
                continue
            after = self._after(stored)
            mark = max(min(after, saved_marks.get(key, after)), stored_floor)
            self.series[key] = SeriesState(filled=mark)

    def seed_from_marks(
        self,
        keys: Iterable[SeriesKey],
        saved_marks: dict[SeriesKey, datetime],
        now: datetime,
        lookback: timedelta | None = None,
        stored_lookback: timedelta | None = None,
    ) -> None:
        """Start-up when the store cannot be read: the marks the previous run saved are all
        there is to go by (every bucket before a mark was stored by that run); a series
        without one is filled from `lookback`, like an empty store."""
        floor, stored_floor = self._floors(now, lookback, stored_lookback)
        for key in keys:
            mark = saved_marks.get(key)
            self.series[key] = SeriesState(
                filled=floor if mark is None else max(mark, stored_floor)
            )

    def lower_to_stored(
        self,
        keys: Iterable[SeriesKey],
        last_stored: dict[SeriesKey, datetime],
        now: datetime,
        lookback: timedelta | None = None,
        stored_lookback: timedelta | None = None,
    ) -> int:
        """The store answered late, after this run began tracking without it
        (`seed_from_marks`): each of `keys` goes back to the bucket after its newest stored
        point where that is older than its mark (never before `stored_lookback`), or to
        `lookback` when the store holds none of it, so the holes from before this start are
        filled too. Marks only move back; returns how many did."""
        floor, stored_floor = self._floors(now, lookback, stored_lookback)
        moved = 0
        for key in keys:
            state = self.series.get(key)
            if state is None:
                continue
            stored = last_stored.get(key)
            mark = floor if stored is None else max(self._after(stored), stored_floor)
            if mark < state.filled:
                state.filled = mark
                moved += 1
        return moved

    def _floors(
        self, now: datetime, lookback: timedelta | None, stored_lookback: timedelta | None
    ) -> tuple[datetime, datetime]:
        """(where a series with nothing stored starts, the oldest bucket a series with stored
        points goes back to): the second is the first unless `stored_lookback` is given."""
        floor = self.earliest(now, lookback)
        return floor, self.earliest(now, stored_lookback) if stored_lookback else floor

    def _after(self, stored: datetime) -> datetime:
        """The bucket after the one holding a point stamped `stored`."""
        return next_bucket(self.scale, bucket_start(self.scale, stored, self.zone), self.zone)

    def marks(self) -> dict[SeriesKey, datetime]:
        return {key: state.filled for key, state in self.series.items()}

    def add_series(self, key: SeriesKey, now: datetime) -> None:
        """A channel that appeared while running: fill it from the lookback like an empty store
        (or, if it was retired earlier in this run, from where it was)."""
        if key not in self.series:
            state = self.retired.pop(key, None)
            self.series[key] = state if state is not None else SeriesState(
                filled=self.earliest(now)
            )

    def retire(self, key: SeriesKey) -> bool:
        """A channel gone from the account: no more chart requests for it (Emporia would
        answer nothing, for ever). Its mark is kept in case it comes back. True if known."""
        state = self.series.pop(key, None)
        if state is not None:
            self.retired[key] = state
        return state is not None

    def stored(self, key: SeriesKey, bucket: datetime) -> None:
        """A live value for `bucket` was written: the mark moves if it was the next one due."""
        state = self.series.get(key)
        if state is not None and state.filled == bucket:
            state.filled = next_bucket(self.scale, bucket, self.zone)

    def due(self, now: datetime, newest: datetime) -> list[FillRequest]:
        """Chart requests to make now, oldest first, covering holes up to `newest` (inclusive)."""
        requests: list[FillRequest] = []
        for key, state in self.series.items():
            if state.filled > newest:
                continue
            if state.retry_at is not None and now < state.retry_at:
                continue
            if next_bucket(self.scale, state.filled, self.zone) + self.settle > now:
                continue  # the first missing value may still arrive on its own
            first = max(state.filled, self.earliest(now))
            t = first
            count = 0
            last = first
            while t <= newest and count < MAX_BUCKETS[self.scale]:
                last = t
                t = next_bucket(self.scale, t, self.zone)
                count += 1
            requests.append(FillRequest(key, self.scale, first, last))
        requests.sort(key=lambda r: r.first)
        return requests

    def answered(
        self,
        request: FillRequest,
        values: Sequence[tuple[datetime, float | None]],
        now: datetime,
    ) -> None:
        """Move the mark past what the answer settled; back off if it held nothing at all."""
        state = self.series[request.series]
        got_any = any(v is not None for _, v in values)
        mark = next_bucket(self.scale, request.last, self.zone)
        for start, value in values:
            if value is None and next_bucket(self.scale, start, self.zone) + self.settle > now:
                mark = min(mark, start)  # too young to give up on
        state.filled = max(state.filled, mark)
        state.error_backoff = ERROR_BACKOFF_START
        state.empty = not got_any
        if got_any:
            state.retry_at = None
            state.backoff = BACKOFF_START
        else:
            state.retry_at = now + state.backoff
            state.backoff = min(state.backoff * 2, BACKOFF_MAX)

    def failed(self, request: FillRequest, now: datetime) -> None:
        """The request itself failed (Emporia error): ask this series again later, not at
        every tick, backing off like an empty answer but starting sooner."""
        state = self.series[request.series]
        wait = state.error_backoff
        state.retry_at = now + wait
        state.error_backoff = min(wait * 2, BACKOFF_MAX)

    def backlog(self, now: datetime, newest: datetime) -> int:
        """Chart requests still needed to fill every hole up to `newest`, at the largest
        window a request may cover. Series backing off after an empty answer (an offline
        plug) are left out: they are asked now and then, not worked through. Those backing
        off after a failed request still count: their holes are there."""
        total = 0
        earliest = self.earliest(now)
        for state in self.series.values():
            if state.filled > newest or (state.empty and state.retry_at is not None):
                continue
            first = max(state.filled, earliest)
            total += -(-self._buckets(first, newest) // MAX_BUCKETS[self.scale])
        return total

    def _buckets(self, first: datetime, last: datetime) -> int:
        """Buckets from `first` to `last`, both included."""
        if self.scale is Scale.DAY:  # 23- and 25-hour days: walk them
            count, t = 0, first
            while t <= last:
                count, t = count + 1, next_bucket(self.scale, t, self.zone)
            return count
        return max(0, int((last - first).total_seconds()) // self.scale.seconds + 1)

    def behind(self, newest: datetime) -> int:
        """How many series still have holes up to `newest` (for logs and tests)."""
        return sum(1 for s in self.series.values() if s.filled <= newest)
