"""The holes of an account's computed channels, and which past buckets to ask Emporia for.

Balance, TotalUsage, MainsFromGrid and MainsToGrid have no chart history: a bucket of theirs
missed live (a failed cycle, a restart, a store outage longer than the queue) comes back only
from a getDeviceListUsages for that bucket's instant, which answers every channel of the
account for the bucket in one request. So their holes are kept per scale like any series'
(a `Tracker` each, saved in the marks file with the rest), but asked for bucket by bucket for
every computed series of the account at once: one request per missing bucket, newest first,
no further back than `INSTANT_RETENTION` (older holes are counted as lost).

Emporia's device list does not name these channels: a series is learned from the first usage
answer that has it, and followed from the bucket after its newest stored point (or from that
first bucket when the store has none: nothing before vuegraf first wrote it is a hole).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import datetime, timedelta, tzinfo

from vuegraf.backfill import NO_VALUE, Holes, SeriesKey, SeriesState, Span, Tracker
from vuegraf.emporia.limits import INSTANT_RETENTION
from vuegraf.model import Scale
from vuegraf.schedule import next_bucket

# A bucket whose request failed, or that Emporia answered for another bucket, waits this long
# before it is asked again (the others go on), doubling each time up to `RETRY_MAX`.
RETRY_AFTER = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=4)


class ComputedHoles:
    """Per scale, each computed series' holes, and the account's buckets still to ask for."""

    def __init__(self, scales: Iterable[Scale], zone: tzinfo, settle_secs: float = 120.0) -> None:
        self.zone = zone
        self.trackers = {scale: Tracker(scale, zone, settle_secs) for scale in scales}
        # (scale, bucket) -> (not before, the wait after the next failure)
        self._retry_at: dict[tuple[Scale, datetime], tuple[datetime, timedelta]] = {}
        # (scale, series) -> the first bucket this run wrote of it: what a late answer of the
        # store turns into holes stops there.
        self._followed_from: dict[tuple[Scale, SeriesKey], datetime] = {}

    def floor(self, scale: Scale, now: datetime) -> datetime:
        """The oldest bucket asked for: holes before it are lost."""
        return self.trackers[scale].earliest(now, INSTANT_RETENTION)

    def knows(self, scale: Scale, key: SeriesKey) -> bool:
        return key in self.trackers[scale].series

    def follow(
        self,
        scale: Scale,
        key: SeriesKey,
        bucket: datetime,
        now: datetime,
        stored: datetime | None = None,
        saved: Holes | datetime | None = None,
    ) -> None:
        """A computed series first seen in an answer for `bucket`: its holes are what the
        last run saved (`saved`) and whatever follows its newest stored point (`stored`);
        with neither, it begins at `bucket`."""
        tracker = self.trackers[scale]
        after = None if stored is None else tracker.next_after(stored)
        if saved is not None:
            state = SeriesState.from_saved(saved)
            if after is not None:
                state.open_at(after)
        else:
            state = SeriesState(open_from=after if after is not None else bucket)
        state.seen = True  # a value of it is being written
        tracker.series[key] = state
        self._followed_from[(scale, key)] = bucket
        tracker.expire(now, self.floor(scale, now))

    def stored(self, scale: Scale, key: SeriesKey, bucket: datetime) -> None:
        """A value of `key` for `bucket` was written."""
        self.trackers[scale].stored(key, bucket)

    def retire(self, gone: Collection[int]) -> None:
        """Devices no longer in the account: their computed series are not asked for."""
        for tracker in self.trackers.values():
            for key in [k for k in tracker.series if k[0] in gone]:
                tracker.retire(key)

    def holes(self) -> dict[Scale, dict[SeriesKey, Holes]]:
        """Each scale's series' holes, as the marks file keeps them."""
        return {scale: tracker.holes() for scale, tracker in self.trackers.items()}

    def lower_to_stored(
        self, scale: Scale, last_stored: Mapping[SeriesKey, datetime], now: datetime
    ) -> int:
        """The store answered after these series were followed without it: those it holds
        points of are followed from the bucket after their newest one. Returns how many
        moved back."""
        tracker = self.trackers[scale]
        keys = [k for k in tracker.series if k in last_stored]
        ends = {k: self._followed_from[(scale, k)] for k in keys
                if (scale, k) in self._followed_from}
        return tracker.lower_to_stored(
            keys, dict(last_stored), now, INSTANT_RETENTION, INSTANT_RETENTION, ends
        )

    # -- what to ask for -------------------------------------------------------------

    def _missing(self, scale: Scale, now: datetime, newest: datetime) -> list[Span]:
        """The buckets from the floor to `newest` (included) some series lacks and that have
        settled, as disjoint spans, oldest first."""
        tracker = self.trackers[scale]
        floor = self.floor(scale, now)
        end = next_bucket(scale, newest, self.zone)
        while end > floor and end + tracker.settle > now:
            end = tracker.previous(end)  # a younger value may still arrive on its own
        spans = sorted(
            (max(s, floor), e)
            for state in tracker.series.values()
            for s, e in state.missing_spans(end)
            if e > floor
        )
        merged: list[Span] = []
        for start, stop in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
            else:
                merged.append((start, stop))
        return merged

    def due(self, scale: Scale, now: datetime, newest: datetime) -> Iterator[datetime]:
        """The buckets to ask for, newest first: each missing for some series, settled, not
        older than the floor and not waiting after a failure."""
        tracker = self.trackers[scale]
        for start, stop in reversed(self._missing(scale, now, newest)):
            bucket = tracker.previous(stop)
            while bucket >= start:
                retry = self._retry_at.get((scale, bucket))
                if retry is None or now >= retry[0]:
                    yield bucket
                bucket = tracker.previous(bucket)

    def backlog(self, now: datetime, newest: Mapping[Scale, datetime]) -> int:
        """Requests still needed: one per missing bucket of every scale."""
        total = 0
        for scale, tracker in self.trackers.items():
            for start, stop in self._missing(scale, now, newest[scale]):
                total += tracker.count(start, stop)
        return total

    def answered(
        self, scale: Scale, bucket: datetime, values: Collection[SeriesKey], now: datetime
    ) -> None:
        """Emporia answered `bucket`; `values`: the computed series it had a value for. Those
        are stored; the others lacking it are given up (the bucket has settled) as lost."""
        tracker = self.trackers[scale]
        end = next_bucket(scale, bucket, self.zone)
        self._retry_at.pop((scale, bucket), None)
        for key, state in tracker.series.items():
            if not state.is_missing(bucket):
                continue
            if key not in values:
                tracker.lose(key, NO_VALUE, [(bucket, end)])
            state.known(bucket, end)

    def failed(self, scale: Scale, bucket: datetime, now: datetime) -> None:
        """The request for `bucket` failed or was answered for another bucket: asked again
        after `RETRY_AFTER`, twice as long after each further failure (up to `RETRY_MAX`),
        so a bucket Emporia never answers right costs a few requests a day, not one a tick."""
        _when, wait = self._retry_at.get((scale, bucket), (now, RETRY_AFTER))
        self._retry_at[(scale, bucket)] = (now + wait, min(wait * 2, RETRY_MAX))
        if len(self._retry_at) > 4096:  # entries of buckets that have left the window since
            floors = {s: self.floor(s, now) for s in self.trackers}
            self._retry_at = {k: v for k, v in self._retry_at.items() if k[1] >= floors[k[0]]}

    def expire(self, now: datetime) -> None:
        """Holes older than the floor are given up, counted as lost."""
        for scale, tracker in self.trackers.items():
            tracker.expire(now, self.floor(scale, now))
