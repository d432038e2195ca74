"""Scheduling decisions as pure functions of the time: no clock, no I/O.

Ticks are aligned to multiples of the update interval counted from the Unix
epoch (for the default 60 s: every wall-clock minute) plus `lag_secs`, so the
loop never drifts however long a cycle takes; missed ticks are skipped.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

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
