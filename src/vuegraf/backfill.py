"""What is missing, per series and scale, and when to ask Emporia for it.

A `Tracker` holds, for one account and one scale, each chart series' *holes*: the
buckets not stored yet, as a short list of closed spans (a stored bucket follows each)
and an open end (nothing stored from there on). They come from the store once at
start-up (one query per account and scale: where each series ends) together with the
holes the last run saved (the marks file: the store cannot show a hole behind its newest
point), then change in memory as live values are written and chart requests answer, so
finding holes never costs a database query. A live value that is missing (a failed
cycle, a null, a restart) leaves a hole behind the next one written, and the series
becomes due for a chart request covering it. Values that may still arrive late get
`settle_secs` before they are given up.

Which hole is asked for first serves the user first, without losing anything old:
1. a hole about to leave Emporia's retention (within `EDGE_MARGIN` of it): later it is gone;
2. a recent hole, one that a single request fills up to the present (the minutes lost to a
   restart or an outage): filled at the next cycle even while a week-long fill runs;
3. everything else, oldest first.
A request covers up to `MAX_BUCKETS` buckets from its hole on, stored buckets and later
holes included: one request costs the same whatever it spans. A series that answers with
nothing up to the present (an offline plug) backs off instead of being asked again every
cycle; empty windows with stored values after them (a device newer than the lookback) are
given up and the next window asked at once.

What can never be filled is counted as *lost* (`Tracker.take_lost`, by series and reason), so
that "nothing lost" is a number: buckets that fell out of Emporia's retention before they were
filled (`RETENTION_LOST`), and buckets Emporia answered without a value once they had settled
(`NO_VALUE`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo

from vuegraf import backoff
from vuegraf.emporia.limits import DEFAULT_LOOKBACK, MAX_BUCKETS, RETENTION
from vuegraf.model import Scale
from vuegraf.schedule import bucket_start, local_day_start, next_bucket

SeriesKey = tuple[int, str]  # (device gid, channel number)

# A series' back-offs (an empty answer, a failed request): vuegraf.backoff's table.
BACKOFF_START = backoff.FILL_EMPTY.first
ERROR_BACKOFF_START = backoff.FILL_ERROR.first
# A hole starting this close to Emporia's retention edge is asked for before any other.
EDGE_MARGIN = {Scale.SECOND: timedelta(minutes=15), Scale.MINUTE: timedelta(hours=2)}
# Closed holes kept apart per series; beyond this the two oldest are joined (the stored
# buckets between them are asked for again, which a window often covers anyway).
MAX_HOLES = 256

Span = tuple[datetime, datetime]  # buckets [start, end)

# Why a bucket was given up: the reasons `Tracker.take_lost` counts (the metric's label).
RETENTION_LOST = "retention"  # older than Emporia keeps it (or than vuegraf looks back)
NO_VALUE = "no_value"  # Emporia answered null for it after it had settled
SHED = "shed"  # the request budget gave it up (second data)


@dataclass(frozen=True)
class Holes:
    """What one series lacks: `closed` spans (oldest first, each followed by a stored bucket)
    and every bucket from `open_from` on. A restart needs it: the marks file keeps it."""

    closed: tuple[Span, ...]
    open_from: datetime

    @property
    def first(self) -> datetime:
        """The oldest missing bucket: every one before it is stored (the series' *mark*)."""
        return self.closed[0][0] if self.closed else self.open_from


@dataclass
class SeriesState:
    open_from: datetime  # every bucket from here on is missing
    holes: list[Span] = field(default_factory=list)  # closed holes before it, oldest first
    retry_at: datetime | None = None  # back-off after an empty answer or a failure
    backoff: timedelta = BACKOFF_START
    error_backoff: timedelta = ERROR_BACKOFF_START
    empty: bool = False  # the last answer reached the open end and held no value (offline)
    # A value of the series was stored or answered: a null is lost only after one (before
    # it, the device did not exist yet).
    seen: bool = False
    # The oldest bucket counted as lost to retention: everything from it up to where the
    # series was clipped is counted already (never twice).
    lost_from: datetime | None = None

    @classmethod
    def from_saved(cls, saved: Holes | datetime) -> SeriesState:
        """A series as a run saved it; a bare time is a mark of the older format (everything
        before it stored, nothing known after it)."""
        if isinstance(saved, datetime):
            return cls(open_from=saved, seen=True)
        state = cls(open_from=saved.open_from, seen=True)
        state.holes, state.open_from = _joined(list(saved.closed), saved.open_from)
        return state

    @property
    def filled(self) -> datetime:
        """First bucket start not yet known: every bucket before it is stored."""
        return self.holes[0][0] if self.holes else self.open_from

    def saved(self) -> Holes:
        return Holes(tuple(self.holes), self.open_from)

    def known(self, first: datetime, end: datetime) -> bool:
        """Buckets [first, end) are stored (or given up); True if that changed anything."""
        if end <= first:
            return False
        holes: list[Span] = []
        changed = False
        for start, stop in self.holes:
            if stop <= first or start >= end:
                holes.append((start, stop))
                continue
            changed = True
            if start < first:
                holes.append((start, first))
            if stop > end:
                holes.append((end, stop))
        if first > self.open_from:
            holes.append((self.open_from, first))  # a value written past a missing one
            self.open_from, changed = end, True
        elif end > self.open_from:
            self.open_from, changed = end, True
        self.holes = holes
        while len(self.holes) > MAX_HOLES:
            (start, _), (_, stop) = self.holes[0], self.holes[1]
            self.holes[0:2] = [(start, stop)]
        return changed

    def is_missing(self, bucket: datetime) -> bool:
        """Whether the bucket starting at `bucket` is not stored."""
        return bucket >= self.open_from or any(s <= bucket < e for s, e in self.holes)

    def missing_spans(self, end: datetime) -> list[Span]:
        """The missing buckets before `end`, as spans (the open end cut at `end`)."""
        spans = [(s, min(e, end)) for s, e in self.holes if s < end]
        if self.open_from < end:
            spans.append((self.open_from, end))
        return spans

    def missing(self, first: datetime, end: datetime) -> None:
        """Buckets [first, end) are not stored after all (the store says so)."""
        self.holes, self.open_from = _joined([*self.holes, (first, end)], self.open_from)

    def open_at(self, start: datetime) -> None:
        """Nothing from `start` on is stored (the store's newest point is before it)."""
        self.holes, self.open_from = _joined(self.holes, min(self.open_from, start))

    def clip(self, floor: datetime) -> None:
        """Nothing before `floor` is asked for (the lookback, Emporia's retention)."""
        self.holes = [(max(start, floor), stop) for start, stop in self.holes if stop > floor]
        self.open_from = max(self.open_from, floor)


def _joined(spans: list[Span], open_from: datetime) -> tuple[list[Span], datetime]:
    """`spans` sorted, overlapping and touching ones joined, those reaching `open_from`
    taken into the open end."""
    joined: list[Span] = []
    for start, stop in sorted(s for s in spans if s[0] < s[1]):
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], stop))
        else:
            joined.append((start, stop))
    while joined and joined[-1][1] >= open_from:
        open_from = min(open_from, joined.pop()[0])
    return joined, open_from


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
        # Buckets given up since the last `take_lost`, by series and reason.
        self._lost: dict[tuple[SeriesKey, str], int] = {}
        self._lost_spans: list[Span] = []  # their time ranges (for one log line)

    def earliest(self, now: datetime, lookback: timedelta | None = None) -> datetime:
        """Oldest bucket worth asking for: the lookback, clipped to Emporia's retention."""
        since = now - (lookback if lookback is not None else DEFAULT_LOOKBACK[self.scale])
        start = bucket_start(self.scale, since, self.zone)
        if self.scale not in RETENTION:
            return start  # hours and days are kept for years: include the partial bucket
        since = max(since, now - RETENTION[self.scale])
        start = bucket_start(self.scale, since, self.zone)
        return start if start >= since else next_bucket(self.scale, start, self.zone)

    def _edge(self, now: datetime) -> datetime | None:
        """The oldest bucket Emporia still keeps (a little inside); None for hours and days,
        kept for years: their holes are bounded by where they were seeded."""
        return self.earliest(now) if self.scale in RETENTION else None

    def seed(
        self,
        keys: Iterable[SeriesKey],
        last_stored: dict[SeriesKey, datetime],
        now: datetime,
        lookback: timedelta | None = None,
        saved_marks: Mapping[SeriesKey, Holes | datetime] | None = None,
        stored_lookback: timedelta | None = None,
    ) -> None:
        """Start-up: holes after the last stored bucket, or the lookback for new series.

        The store only knows each series' newest point, not a hole behind it that the
        previous run had not filled yet; `saved_marks` (the holes that run saved, or a
        mark of the older format) keep such holes, and the store's newest point says
        where the open end is if it is older than the saved one. A series with stored
        points is filled from them back to `stored_lookback` (hours and days after a long
        outage: Emporia keeps those for years), a new one from `lookback`.
        """
        floor, stored_floor = self._floors(now, lookback, stored_lookback)
        saved_marks = saved_marks or {}
        for key in keys:
            stored = last_stored.get(key)
            if stored is None:
                saved = saved_marks.get(key)
                if saved is not None:
                    # The last run's holes older than the floor (the store holds nothing
                    # since: a stop longer than the lookback) can no longer be filled.
                    self._clip(key, SeriesState.from_saved(saved), floor)
                self.series[key] = SeriesState(open_from=floor)
                continue
            after = self._after(stored)
            state = SeriesState.from_saved(saved_marks.get(key, after))
            state.open_at(after)
            self._clip(key, state, stored_floor)
            self.series[key] = state

    def seed_from_marks(
        self,
        keys: Iterable[SeriesKey],
        saved_marks: Mapping[SeriesKey, Holes | datetime],
        now: datetime,
        lookback: timedelta | None = None,
        stored_lookback: timedelta | None = None,
    ) -> None:
        """Start-up when the store cannot be read: the holes the previous run saved are all
        there is to go by (every other bucket was stored by that run); a series without
        them is filled from `lookback`, like an empty store."""
        floor, stored_floor = self._floors(now, lookback, stored_lookback)
        for key in keys:
            saved = saved_marks.get(key)
            if saved is None:
                self.series[key] = SeriesState(open_from=floor)
                continue
            state = SeriesState.from_saved(saved)
            self._clip(key, state, stored_floor)
            self.series[key] = state

    def lower_to_stored(
        self,
        keys: Iterable[SeriesKey],
        last_stored: dict[SeriesKey, datetime],
        now: datetime,
        lookback: timedelta | None = None,
        stored_lookback: timedelta | None = None,
        ends: Mapping[SeriesKey, datetime] | None = None,
    ) -> int:
        """The store answered late, after this run began tracking without it
        (`seed_from_marks`): for each of `keys`, the buckets from the one after its newest
        stored point (never before `stored_lookback`), or from `lookback` when the store
        holds none of it, up to its mark become a hole, so the holes from before this start
        are filled too. Marks only move back; returns how many did."""
        floor, stored_floor = self._floors(now, lookback, stored_lookback)
        moved = 0
        for key in keys:
            state = self.series.get(key)
            if state is None:
                continue
            stored = last_stored.get(key)
            mark = floor if stored is None else max(self._after(stored), stored_floor)
            if stored is not None and self._after(stored) < mark:
                # Not what a clip counted already (the holes saved before the floor).
                counted = state.lost_from if state.lost_from is not None else mark
                self.lose(key, RETENTION_LOST, [(self._after(stored), min(mark, counted))])
            # `ends`: where this run began writing the series (its buckets from there on are
            # known to this run: not asked for again).
            end = min(state.filled, (ends or {}).get(key, state.filled))
            if mark < end:
                state.missing(mark, end)
                moved += 1
        return moved

    def _floors(
        self, now: datetime, lookback: timedelta | None, stored_lookback: timedelta | None
    ) -> tuple[datetime, datetime]:
        """(where a series with nothing stored starts, the oldest bucket a series with stored
        points goes back to): the second is the first unless `stored_lookback` is given."""
        floor = self.earliest(now, lookback)
        return floor, self.earliest(now, stored_lookback) if stored_lookback else floor

    def next_after(self, stored: datetime) -> datetime:
        """The bucket after the one holding a point stamped `stored`."""
        return self._after(stored)

    def previous(self, bucket: datetime) -> datetime:
        """The bucket just before the one starting at `bucket`."""
        return self._before(bucket)

    def count(self, start: datetime, end: datetime) -> int:
        """Buckets in [start, end), both bucket starts."""
        return self._buckets(start, self._before(end)) if end > start else 0

    def _after(self, stored: datetime) -> datetime:
        """The bucket after the one holding a point stamped `stored`."""
        return next_bucket(self.scale, bucket_start(self.scale, stored, self.zone), self.zone)

    def marks(self) -> dict[SeriesKey, datetime]:
        """Each series' oldest missing bucket."""
        return {key: state.filled for key, state in self.series.items()}

    def holes(self) -> dict[SeriesKey, Holes]:
        """Each series' holes, as the marks file keeps them."""
        return {key: state.saved() for key, state in self.series.items()}

    def add_series(self, key: SeriesKey, now: datetime) -> None:
        """A channel that appeared while running: fill it from the lookback like an empty store
        (or, if it was retired earlier in this run, from where it was)."""
        if key not in self.series:
            state = self.retired.pop(key, None)
            self.series[key] = state if state is not None else SeriesState(
                open_from=self.earliest(now)
            )

    def retire(self, key: SeriesKey) -> bool:
        """A channel gone from the account: no more chart requests for it (Emporia would
        answer nothing, for ever). Its mark is kept in case it comes back. True if known."""
        state = self.series.pop(key, None)
        if state is not None:
            self.retired[key] = state
        return state is not None

    def stored(self, key: SeriesKey, bucket: datetime) -> None:
        """A live value for `bucket` was written: if buckets before it are missing, they
        become a hole of their own."""
        state = self.series.get(key)
        if state is not None:
            state.seen = True
            state.known(bucket, next_bucket(self.scale, bucket, self.zone))

    def due(self, now: datetime, newest: datetime) -> list[FillRequest]:
        """Chart requests to make now, covering holes up to `newest` (inclusive): one per
        series, for the hole it needs most (see the module's order), most urgent first."""
        edge = self._edge(now)
        ranked: list[tuple[int, datetime, FillRequest]] = []
        for key, state in self.series.items():
            if state.filled > newest:
                continue  # nothing missing up to `newest` (the common case: caught up)
            if state.retry_at is not None and now < state.retry_at:
                continue
            starts = [
                s for s in self._starts(state, edge, newest)
                if next_bucket(self.scale, s, self.zone) + self.settle <= now
            ]  # a younger first missing value may still arrive on its own
            if not starts:
                continue
            if edge is not None and starts[0] < edge + EDGE_MARGIN[self.scale]:
                rank, first = 0, starts[0]
            else:
                recent = [s for s in starts if self._window_last(s, newest) >= newest]
                rank, first = (1, recent[0]) if recent else (2, starts[0])
            request = FillRequest(key, self.scale, first, self._window_last(first, newest))
            ranked.append((rank, first, request))
        ranked.sort(key=lambda r: (r[0], r[1]))
        return [request for _rank, _first, request in ranked]

    def _starts(
        self, state: SeriesState, edge: datetime | None, newest: datetime
    ) -> list[datetime]:
        """Where each of a series' holes up to `newest` begins, oldest first, past `edge`."""
        return [first for first, _last in self._spans(state, edge, newest)]

    def _spans(
        self, state: SeriesState, edge: datetime | None, newest: datetime
    ) -> list[tuple[datetime, datetime]]:
        """A series' holes as (first, last) buckets, inclusive, between `edge` and `newest`."""
        spans: list[tuple[datetime, datetime]] = []
        ends: list[tuple[datetime, datetime | None]] = [*state.holes, (state.open_from, None)]
        for start, stop in ends:
            if edge is not None:
                if stop is not None and stop <= edge:
                    continue  # gone from Emporia
                start = max(start, edge)
            if start > newest:
                break
            last = newest if stop is None else min(self._before(stop), newest)
            spans.append((start, last))
        return spans

    def _before(self, bucket: datetime) -> datetime:
        """The bucket just before the one starting at `bucket`."""
        return bucket_start(self.scale, bucket - timedelta(seconds=1), self.zone)

    def _day_start(self, day: date) -> datetime:
        """When local `day` begins (noon always exists, so DST at midnight cannot move it)."""
        return local_day_start(datetime.combine(day, time(12), tzinfo=self.zone), self.zone)

    def _window_last(self, first: datetime, newest: datetime) -> datetime:
        """The last bucket a request from `first` covers: `MAX_BUCKETS` of them, at most up
        to `newest`."""
        if self.scale is not Scale.DAY:
            step = self.scale.seconds
            count = min(MAX_BUCKETS[self.scale] - 1, int((newest - first).total_seconds()) // step)
            return first + timedelta(seconds=max(0, count) * step)
        if first > newest:
            return first
        # Local dates, not 24-hour steps: a day has 23 or 25 hours across DST.
        last_date = first.astimezone(self.zone).date() + timedelta(days=MAX_BUCKETS[self.scale] - 1)
        return min(self._day_start(last_date), newest)

    def answered(
        self,
        request: FillRequest,
        values: Sequence[tuple[datetime, float | None]],
        now: datetime,
    ) -> bool:
        """What the answer settled is no longer missing; back off if it held nothing at all
        up to the series' open end. True if any bucket stopped being missing."""
        state = self.series[request.series]
        got_any = any(v is not None for _, v in values)
        end = next_bucket(self.scale, request.last, self.zone)
        for start, value in values:
            if value is None and next_bucket(self.scale, start, self.zone) + self.settle > now:
                end = min(end, start)  # too young to give up on
        # What the window gives up without a value (null, or not in the answer at all): lost
        # when Emporia answered the series' neighbours, after a first value (before it, the
        # device did not exist yet; a window with no value at all is an unplugged device).
        answered = {start for start, value in values if value is not None}
        if answered:
            since = request.first if state.seen else min(answered)
            given_up = [
                start
                for first, stop in state.missing_spans(end)
                for start in self._starts_in(max(first, since), stop)
                if start not in answered
            ]
            if given_up:
                self.lose(request.series, NO_VALUE, self._runs(given_up))
            state.seen = True
        # Empty up to the present (a window cut short by the newest bucket, not a whole one
        # with more after it): an offline plug, asked again later. An empty whole window is
        # a span before a device existed, or a long outage: the next one is asked at once.
        reached_open = (
            request.last >= state.open_from
            and self._buckets(request.first, request.last) < MAX_BUCKETS[self.scale]
        )
        progressed = state.known(request.first, end)
        state.error_backoff = ERROR_BACKOFF_START
        state.empty = not got_any and reached_open
        if state.empty:
            state.retry_at = now + state.backoff
            state.backoff = backoff.FILL_EMPTY.doubled(state.backoff)
        else:
            # Values, or an empty window with stored ones after it (before a device was
            # installed): nothing to wait for, the next window is asked at once.
            state.retry_at = None
            if got_any:
                state.backoff = BACKOFF_START
        return progressed

    def give_up(self, request: FillRequest, reason: str | None = None) -> None:
        """The window cannot be had (it failed every try of an import, or the budget sheds
        it): count it as known, so the series goes on with the next one. With `reason`, its
        missing buckets are counted as lost."""
        state = self.series[request.series]
        end = next_bucket(self.scale, request.last, self.zone)
        if reason is not None:
            spans = [
                (max(s, request.first), min(e, end))
                for s, e in state.missing_spans(end) if e > request.first
            ]
            self.lose(request.series, reason, spans)
        state.known(request.first, end)

    # -- what is lost ------------------------------------------------------------------

    def expire(self, now: datetime, floor: datetime | None = None) -> None:
        """Give up every hole older than `floor` (default: the oldest bucket Emporia still
        keeps, for seconds and minutes; nothing for hours and days), counting it as lost."""
        floor = floor if floor is not None else self._edge(now)
        if floor is None:
            return
        for key, state in self.series.items():
            if state.filled < floor:
                self._clip(key, state, floor)

    def _clip(self, key: SeriesKey, state: SeriesState, floor: datetime) -> None:
        """`state.clip(floor)`, the buckets it drops counted as lost to retention."""
        dropped = [(s, min(e, floor)) for s, e in state.missing_spans(floor)]
        if dropped:
            self.lose(key, RETENTION_LOST, dropped)
            first = dropped[0][0]
            state.lost_from = first if state.lost_from is None else min(state.lost_from, first)
        state.clip(floor)

    def lose(self, key: SeriesKey, reason: str, spans: Iterable[Span]) -> None:
        """Count the buckets of `spans` ([start, end) each) as lost for `reason`."""
        count = 0
        for start, end in spans:
            if end > start:
                count += self.count(start, end)
                self._lost_spans.append((start, end))
        if count:
            self._lost[(key, reason)] = self._lost.get((key, reason), 0) + count

    def take_lost(self) -> tuple[dict[tuple[SeriesKey, str], int], Span | None]:
        """The buckets given up since the last call, by (series, reason), and the time range
        they lie in (None when there are none); the count starts again."""
        lost, spans = self._lost, self._lost_spans
        self._lost, self._lost_spans = {}, []
        if not spans:
            return lost, None
        return lost, (min(s for s, _ in spans), max(e for _, e in spans))

    def _starts_in(self, first: datetime, end: datetime) -> Iterable[datetime]:
        """The bucket starts from `first` (a bucket start) up to `end` (excluded)."""
        t = first
        while t < end:
            yield t
            t = next_bucket(self.scale, t, self.zone)

    def _runs(self, starts: Sequence[datetime]) -> list[Span]:
        """Bucket starts as spans [start, end) of consecutive buckets."""
        spans: list[Span] = []
        for start in sorted(starts):
            end = next_bucket(self.scale, start, self.zone)
            if spans and spans[-1][1] == start:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        return spans

    def failed(self, request: FillRequest, now: datetime) -> None:
        """The request itself failed (Emporia error): ask this series again later, not at
        every tick, backing off like an empty answer but starting sooner."""
        state = self.series[request.series]
        wait = state.error_backoff
        state.retry_at = now + wait
        state.error_backoff = backoff.FILL_ERROR.doubled(wait)

    def backlog(self, now: datetime, newest: datetime) -> int:
        """Chart requests still needed to fill every hole up to `newest`, at the largest
        window a request may cover. Series backing off after an empty answer (an offline
        plug) are left out: they are asked now and then, not worked through. Those backing
        off after a failed request still count: their holes are there."""
        total = 0
        edge = self._edge(now)
        for state in self.series.values():
            if state.filled > newest or (state.empty and state.retry_at is not None):
                continue
            covered: datetime | None = None  # first bucket after the windows counted
            for first, last in self._spans(state, edge, newest):
                if covered is not None:
                    if covered > last:
                        continue
                    first = max(first, covered)
                windows = -(-self._buckets(first, last) // MAX_BUCKETS[self.scale])
                total += windows
                covered = self._skip(first, windows * MAX_BUCKETS[self.scale], newest)
        return total

    def _skip(self, first: datetime, count: int, newest: datetime) -> datetime:
        """The bucket `count` buckets after `first` (or any after `newest`, if that is sooner)."""
        if self.scale is not Scale.DAY:
            return first + timedelta(seconds=count * self.scale.seconds)
        t = first
        for _ in range(count):
            if t > newest:
                break
            t = next_bucket(self.scale, t, self.zone)
        return t

    def _buckets(self, first: datetime, last: datetime) -> int:
        """Buckets from `first` to `last`, both included."""
        if self.scale is Scale.DAY:  # 23- and 25-hour days: count local dates
            days = (last.astimezone(self.zone).date() - first.astimezone(self.zone).date()).days
            return max(0, days + 1)
        return max(0, int((last - first).total_seconds()) // self.scale.seconds + 1)

    def behind(self, newest: datetime) -> int:
        """How many series still have holes up to `newest` (for logs and tests)."""
        return sum(1 for s in self.series.values() if s.filled <= newest)
