"""Do the numbers vuegraf writes add up? The minutes of each UTC hour against the hour point,
the hours of each local day against the day point, for every series.

Emporia's scales agree with each other: an hour is the sum of its minutes and a day the sum of
its hours, within its rounding. A store that holds an hour which its minutes do not add up to
holds a wrong number somewhere (a stale day total written as today's, a value from another
bucket, a unit mix-up), and the user's dashboards disagree with each other. So every point
written (live, filled, imported) is fed to `ConsistencyCheck`, which keeps running buckets:

- an hour bucket: the 60 minute points of one UTC hour and the hour point;
- a day bucket: the hour points of one local day (23, 24 or 25) and the day point. Only days
  whose two midnights fall on UTC hours: elsewhere (a +05:30 zone) an hour point straddles two
  days and no set of hours adds up to a day.

A bucket is judged once, when it is complete (every part and its own point): counted in
`Stats.count_checked`, exported as `vuegraf_consistency_checked_total` and
`vuegraf_consistency_disagreements_total`; the first disagreement of each local day is logged
at WARNING with the series, the bucket and both numbers, the rest at DEBUG. A point written
again (a fill, an import run twice) replaces its value while the bucket is open and is ignored
once the bucket was judged, so nothing is counted twice. A bucket still incomplete after
`IDLE_SECONDS` without a new point is dropped (a minute Emporia never had, a computed channel
whose missed live value is never filled): memory stays bounded on a Pi that runs for years.

Usage only (`Unit.WATTS`): amps and volts are averages, not sums, and are left out, as are
second points (they are never complete: Emporia keeps them for about three hours).
"""

from __future__ import annotations

import bisect
import logging
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo

from vuegraf.clock import Clock, SystemClock
from vuegraf.energy import MinuteSet
from vuegraf.model import Point, Scale, Unit
from vuegraf.schedule import local_day_start, next_local_day_start
from vuegraf.sinks.base import CountsOwnPoints
from vuegraf.stats import Stats

logger = logging.getLogger(__name__)

#: How far a bucket's parts may be from its own point and still agree, relative to the larger
#: of the two. Emporia's kWh carry at least 9 significant digits (the simulator serves exactly
#: 9), so each of at most 61 numbers is off by half a unit of its 9th digit, 5e-10 of itself:
#: a sum is off by at most about 3e-8. 1e-6 leaves room for that and float sums, and is still
#: far below a real disagreement (one minute of a steady load is 1.7 % of its hour).
RELATIVE_TOLERANCE = 1e-6
#: The same for buckets near zero (a spare circuit), in watts.
ABSOLUTE_TOLERANCE = 1e-6
#: An incomplete bucket that got no point for this long is dropped (2 days: a hole is filled
#: within minutes once Emporia has the data; the import writes a bucket's parts within its run).
IDLE_SECONDS = 2 * 86_400
#: Buckets judged are remembered (as ranges, a few bytes each) this long, so that a fill of
#: an already judged bucket is not judged again: Emporia keeps minutes 7 days, and a second
#: --historydays import of the same days within this long counts nothing twice.
JUDGED_SECONDS = 400 * 86_400
#: Hours further back than this are not checked against minutes: Emporia keeps minutes for
#: 7 days, so none of theirs can come (an import of a year of hours opens no bucket for them).
MINUTES_KEPT_SECONDS = 8 * 86_400
_SWEEP_SECONDS = 3_600  # how often idle buckets are looked for
_DAYS_KEPT = 4_096  # instants whose local day is remembered
_NOTHING = math.nan  # a part or own point not written yet

_SeriesKey = tuple[str, str, str]  # account, device, channel
_BucketKey = tuple[str, str, str, Scale, int]  # series, the bucket's scale, its start (epoch s)


@dataclass(slots=True)
class _Bucket:
    """One open bucket: its parts by position (NaN until written) and its own point."""

    start: int
    parts: array[float]
    whole: float = _NOTHING
    touched: float = 0.0  # clock time of its last point
    missing: int = field(init=False)

    def __post_init__(self) -> None:
        self.missing = len(self.parts) + 1

    def set_part(self, index: int, value: float) -> None:
        if math.isnan(self.parts[index]):
            self.missing -= 1
        self.parts[index] = value

    def set_whole(self, value: float) -> None:
        if math.isnan(self.whole):
            self.missing -= 1
        self.whole = value


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A judged bucket whose parts do not add up to its own point (what the log line says)."""

    account: str
    device: str
    channel: str
    scale: Scale  # the bucket's: HOUR (minutes against it) or DAY (hours against it)
    start: datetime
    parts_sum: float  # in the unit of the bucket's own point (W for an hour, Wh for a day)
    whole: float


class ConsistencyCheck:
    """Running sums of each series' minutes per hour and hours per day, judged when complete.

    Fed one batch at a time (`add`; the fan-out's lock serialises writers). `zone` is the
    zone whose midnights end a day point (`Config.zone`), as the collector stamps them.
    """

    def __init__(self, zone: tzinfo, stats: Stats | None = None, clock: Clock | None = None):
        self.zone = zone
        self.stats = stats
        self.clock = clock if clock is not None else SystemClock()
        self._open: dict[_BucketKey, _Bucket] = {}
        self._judged: dict[tuple[_SeriesKey, Scale], MinuteSet] = {}
        self._warned_on: date | None = None  # the local date of the last WARNING
        self._next_sweep = 0.0
        self._days: dict[int, tuple[int, int] | None] = {}  # instant -> its local day
        self.disagreements: list[Disagreement] = []  # the newest few, for tests and reports
        self.checked = 0

    @property
    def open_buckets(self) -> int:
        return len(self._open)

    def add(self, points: Sequence[Point]) -> None:
        now = self.clock.now().timestamp()
        for p in points:
            if p.unit is not Unit.WATTS or not math.isfinite(p.watts):
                continue  # NaN marks "not written yet" inside a bucket
            if p.scale is Scale.MINUTE:
                self._add_minute(p, now)
            elif p.scale is Scale.HOUR:
                self._add_hour(p, now)
            elif p.scale is Scale.DAY:
                self._add_day(p, now)
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + _SWEEP_SECONDS

    # -- feeding -----------------------------------------------------------------------------

    def _add_minute(self, p: Point, now: float) -> None:
        t = p.epoch_s
        start = t - t % 3600
        if start >= now - MINUTES_KEPT_SECONDS:
            self._part(p, Scale.HOUR, start, 60, (t - start) // 60, p.watts / 60.0, now)

    def _add_hour(self, p: Point, now: float) -> None:
        t = p.epoch_s
        start = t - t % 3600
        if start >= now - MINUTES_KEPT_SECONDS:  # else no minute of it can come any more
            self._whole(p, Scale.HOUR, start, 60, p.watts, now)
        day = self._whole_hour_day(p.time)
        if day is not None:
            day_start, hours = day
            self._part(p, Scale.DAY, day_start, hours, (start - day_start) // 3600, p.watts, now)

    def _add_day(self, p: Point, now: float) -> None:
        day = self._whole_hour_day(p.time)
        if day is not None:
            self._whole(p, Scale.DAY, day[0], day[1], p.watts, now)

    def _whole_hour_day(self, t: datetime) -> tuple[int, int] | None:
        """(start, hours) of the local day holding `t`, or None when a midnight of it is not
        on a UTC hour. Kept by instant: every channel's point of an hour asks the same."""
        key = int(t.timestamp())
        if key in self._days:
            return self._days[key]
        start = local_day_start(t, self.zone)
        end = next_local_day_start(start, self.zone)
        first, last = int(start.timestamp()), int(end.timestamp())
        day = None if first % 3600 or last % 3600 else (first, (last - first) // 3600)
        if len(self._days) >= _DAYS_KEPT:
            self._days.clear()
        self._days[key] = day
        return day

    def _bucket(
        self, p: Point, scale: Scale, start: int, size: int, now: float
    ) -> _Bucket | None:
        """The open bucket, opened if need be; None once it was judged."""
        key = (p.account, p.device, p.channel, scale, start)
        bucket = self._open.get(key)
        if bucket is None:
            judged = self._judged.get(((p.account, p.device, p.channel), scale))
            if judged is not None and _holds(judged, self._index(scale, start)):
                return None
            bucket = self._open[key] = _Bucket(start, array("d", [_NOTHING] * size))
        bucket.touched = now
        return bucket

    def _part(
        self, p: Point, scale: Scale, start: int, size: int, index: int, value: float, now: float
    ) -> None:
        bucket = self._bucket(p, scale, start, size, now)
        if bucket is not None and 0 <= index < size:
            bucket.set_part(index, value)
            self._judge_if_complete(p, scale, bucket)

    def _whole(
        self, p: Point, scale: Scale, start: int, size: int, value: float, now: float
    ) -> None:
        bucket = self._bucket(p, scale, start, size, now)
        if bucket is not None:
            bucket.set_whole(value)
            self._judge_if_complete(p, scale, bucket)

    # -- judging -----------------------------------------------------------------------------

    def _judge_if_complete(self, p: Point, scale: Scale, bucket: _Bucket) -> None:
        if bucket.missing:
            return
        series = (p.account, p.device, p.channel)
        del self._open[(*series, scale, bucket.start)]
        index = self._index(scale, bucket.start)
        self._judged.setdefault((series, scale), MinuteSet()).add(index)
        total = math.fsum(bucket.parts)
        scale_of_parts = max(abs(total), abs(bucket.whole))
        agreed = abs(total - bucket.whole) <= (
            RELATIVE_TOLERANCE * scale_of_parts + ABSOLUTE_TOLERANCE
        )
        self.checked += 1
        if self.stats is not None:
            self.stats.count_checked(p.account, scale.value, agreed)
        if not agreed:
            found = Disagreement(
                *series, scale, datetime.fromtimestamp(bucket.start, UTC), total, bucket.whole
            )
            self.disagreements = [*self.disagreements[-99:], found]
            self._log(found)

    def _log(self, found: Disagreement) -> None:
        today = self.clock.now().astimezone(self.zone).date()
        first_today = today != self._warned_on
        self._warned_on = today
        what = "minutes of the hour" if found.scale is Scale.HOUR else "hours of the day"
        unit = "W" if found.scale is Scale.HOUR else "Wh"
        logger.log(
            logging.WARNING if first_today else logging.DEBUG,
            "Consistency: %s %s of %s/%s/%s add up to %.6g %s, its own point says %.6g %s%s",
            what,
            found.start.isoformat(),
            found.account,
            found.device,
            found.channel,
            found.parts_sum,
            unit,
            found.whole,
            unit,
            " (first disagreement today; the rest at DEBUG, counted in "
            "vuegraf_consistency_disagreements_total)" if first_today else "",
        )

    def _sweep(self, now: float) -> None:
        """Drop open buckets idle for `IDLE_SECONDS` and judged ranges older than
        `JUDGED_SECONDS`."""
        idle = [key for key, b in self._open.items() if now - b.touched > IDLE_SECONDS]
        for key in idle:
            del self._open[key]
        if idle:
            logger.debug("Consistency: dropped %d buckets left incomplete", len(idle))
        horizon = int(now) - JUDGED_SECONDS
        for (_, scale), judged in self._judged.items():
            judged.forget_before(self._index(scale, horizon))

    def _index(self, scale: Scale, start: int) -> int:
        """A bucket's number in its series, consecutive buckets consecutive numbers (so the
        judged ones stay a few ranges): its UTC hour, or its local date."""
        if scale is Scale.HOUR:
            return start // 3600
        return datetime.fromtimestamp(start, self.zone).toordinal()


def _holds(judged: MinuteSet, index: int) -> bool:
    """Whether `index` lies in one of the judged ranges."""
    i = bisect.bisect_right(judged.starts, index) - 1
    return i >= 0 and index < judged.ends[i]


class ConsistencySink(CountsOwnPoints):
    """The check as a sink: every batch, live, filled or imported (not `LiveOnly`), as the
    energy counters are fed. What it counts is buckets judged, not points written, so the
    fan-out does not count its writes (`CountsOwnPoints`). It never fails a write."""

    name = "consistency"

    def __init__(self, check: ConsistencyCheck) -> None:
        self.check = check

    def open(self) -> None:
        pass

    def write(self, points: Sequence[Point]) -> None:
        self.check.add(points)

    def close(self) -> None:
        pass  # the check outlives its sinks: the import's buckets go on into collection
