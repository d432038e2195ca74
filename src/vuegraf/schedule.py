"""Scheduling decisions as pure functions of the time: no clock, no I/O.

Ticks are aligned to multiples of the update interval counted from the Unix
epoch (for the default 60 s: every wall-clock minute) plus `lag_secs`, so the
loop never drifts however long a cycle takes; missed ticks are skipped.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, time, timedelta, tzinfo

from vuegraf.model import Scale

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def floor_time(t: datetime, seconds: int) -> datetime:
    """Start of the `seconds`-long UTC bucket holding `t`."""
    offset = (t - EPOCH).total_seconds()
    return EPOCH + timedelta(seconds=math.floor(offset / seconds) * seconds)


def next_tick(now: datetime, interval_secs: int, lag_secs: float) -> datetime:
    """First aligned tick strictly after `now`: k × interval + lag since the epoch."""
    base = floor_time(now - timedelta(seconds=lag_secs), interval_secs)
    tick = base + timedelta(seconds=interval_secs + lag_secs)
    # floor() of (now - lag) gives base <= now - lag, so base + lag <= now < tick.
    return tick


def last_complete_minute(now: datetime, lag_secs: float) -> datetime:
    """Start of the newest minute that ended at least `lag_secs` before `now`."""
    return floor_time(now - timedelta(seconds=lag_secs), 60) - timedelta(minutes=1)


# --- buckets and stamps -------------------------------------------------------------

def local_day_start(t: datetime, zone: tzinfo) -> datetime:
    """UTC instant of local midnight starting the local day that holds `t`."""
    local = t.astimezone(zone)
    midnight = datetime.combine(local.date(), time(0), tzinfo=zone)
    return _normalize_local(midnight, zone).astimezone(UTC)


def next_local_day_start(day_start: datetime, zone: tzinfo) -> datetime:
    """UTC instant of the local midnight after the local day starting at `day_start`.

    Always later than `day_start`: noon of the day exists in every zone, so the date is
    taken from there, never from a midnight a DST change skipped or repeated.
    """
    noon = (day_start + timedelta(hours=12)).astimezone(zone)
    midnight = datetime.combine(noon.date() + timedelta(days=1), time(0), tzinfo=zone)
    result = _normalize_local(midnight, zone).astimezone(UTC)
    if result <= day_start:  # a tzinfo that cannot express the gap: never loop in place
        result = day_start + timedelta(hours=24)
    return result


def _normalize_local(local: datetime, zone: tzinfo) -> datetime:
    """Move a wall time that does not exist (a DST gap at midnight) to the first that does."""
    roundtrip = local.astimezone(UTC).astimezone(zone)
    if roundtrip.replace(tzinfo=None) != local.replace(tzinfo=None):
        return roundtrip
    return local


def bucket_start(scale: Scale, t: datetime, zone: tzinfo) -> datetime:
    """Start (UTC) of the bucket of `scale` holding `t`; days are local days in `zone`."""
    if scale is Scale.DAY:
        return local_day_start(t, zone)
    return floor_time(t, scale.seconds)


def next_bucket(scale: Scale, start: datetime, zone: tzinfo) -> datetime:
    if scale is Scale.DAY:
        return next_local_day_start(start, zone)
    return start + timedelta(seconds=scale.seconds)


def bucket_starts(scale: Scale, first: datetime, count: int, zone: tzinfo) -> list[datetime]:
    """`count` consecutive bucket starts from the bucket holding `first`."""
    result = []
    t = bucket_start(scale, first, zone)
    for _ in range(count):
        result.append(t)
        t = next_bucket(scale, t, zone)
    return result


def point_time(scale: Scale, start: datetime, zone: tzinfo) -> datetime:
    """Timestamp written for a bucket: its start, or 23:59:59 local time for a day.

    Computed from the local date with zoneinfo, so DST days get the right date and
    offset (upstream's pytz `replace` put them an hour early or on the wrong day).
    """
    if scale is not Scale.DAY:
        return start
    local_date = start.astimezone(zone).date()
    end_of_day = datetime.combine(local_date, time(23, 59, 59), tzinfo=zone)
    return end_of_day.astimezone(UTC)


def last_complete_bucket(scale: Scale, now: datetime, lag_secs: float, zone: tzinfo) -> datetime:
    """Start of the newest bucket of `scale` that ended at least `lag_secs` before `now`."""
    current = bucket_start(scale, now - timedelta(seconds=lag_secs), zone)
    if scale is Scale.DAY:
        return local_day_start(current - timedelta(seconds=1), zone)
    return current - timedelta(seconds=scale.seconds)


def windows(
    scale: Scale, start: datetime, end: datetime, max_buckets: int, zone: tzinfo
) -> list[tuple[datetime, datetime]]:
    """Split buckets [start, end) into chart windows of at most `max_buckets` buckets.

    Each window is (first bucket start, last bucket start), as getChartUsage takes
    them: both ends inclusive. Day windows step through real local days, so a
    window that crosses a DST change does not end a day early.
    """
    result: list[tuple[datetime, datetime]] = []
    t = bucket_start(scale, start, zone)
    while t < end:
        first = t
        last = t
        n = 0
        while t < end and n < max_buckets:
            last = t
            t = next_bucket(scale, t, zone)
            n += 1
        result.append((first, last))
    return result


def daily_request_estimate(
    update_interval_secs: int,
    hours: bool,
    days: bool,
    second_channels: int,
    detailed_interval_secs: int,
    device_refresh_secs: int,
    amps_volts: Scale | None = None,
) -> dict[str, int]:
    """Emporia requests one account makes a day in steady running, by kind; `amps_volts`:
    the scale amps and volts are collected at (two requests a bucket), None when off."""
    day = 86400
    estimate = {"minute": math.ceil(day / update_interval_secs)}
    if hours:
        estimate["hour"] = 24
    if days:
        estimate["day"] = 1
    if second_channels:
        # Imported here, not at the top: vuegraf.emporia imports this module.
        from vuegraf.emporia.limits import KEPT, MAX_BUCKETS

        runs = math.ceil(day / detailed_interval_secs)
        # Each run asks for the seconds since the last (no further back than Emporia keeps).
        span = min(detailed_interval_secs, KEPT[Scale.SECOND].total_seconds())
        windows = math.ceil(span / MAX_BUCKETS[Scale.SECOND])
        estimate["second"] = runs * windows * second_channels
    if amps_volts is not None:
        estimate["amps_volts"] = 2 * math.ceil(day / amps_volts.seconds)
    estimate["devices"] = math.ceil(day / device_refresh_secs)
    return estimate
