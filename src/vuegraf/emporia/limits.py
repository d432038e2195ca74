"""Emporia's limits that vuegraf plans its requests around, written once.

How long Emporia keeps each resolution, how many buckets one chart request may ask for, how
far back an empty store is filled, and which scales a config collects. Emporia publishes
none of the numbers: they are what its API does (a chart request over the limit is refused,
a minute older than a week comes back empty). The simulator models the same API on its own
and does not import these, so a wrong number here shows up as a failing test.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from vuegraf.model import Scale

# How long Emporia keeps each resolution. Hours and days are kept for years: no entry.
KEPT = {Scale.SECOND: timedelta(hours=3), Scale.MINUTE: timedelta(days=7)}
# Never ask further back than this: a little inside KEPT, as its edge moves on while a
# request waits its turn, and a window reaching past the edge comes back with a hole.
RETENTION = {
    Scale.SECOND: KEPT[Scale.SECOND] - timedelta(minutes=2),
    Scale.MINUTE: KEPT[Scale.MINUTE] - timedelta(minutes=10),
}
# How far back a past bucket is asked for with getDeviceListUsages, the one way to recover a
# computed channel's value (Balance, TotalUsage, Mains*Grid have no chart data). Emporia does
# not say how far back that answers: vuegraf goes no further than it keeps minutes, at every
# scale, and counts older holes of those channels as lost.
INSTANT_RETENTION = RETENTION[Scale.MINUTE]
# Buckets per getChartUsage request (1S: 1 h, 1MIN: 12 h), below what Emporia refuses
# (1MIN: more than 13 h 20 min).
MAX_BUCKETS = {Scale.SECOND: 3600, Scale.MINUTE: 720, Scale.HOUR: 480, Scale.DAY: 480}
# How far back an empty store is filled: seconds and minutes as far as Emporia keeps them,
# hours and days a week (further only with --historydays).
DEFAULT_LOOKBACK = {
    Scale.SECOND: KEPT[Scale.SECOND],
    Scale.MINUTE: KEPT[Scale.MINUTE],
    Scale.HOUR: timedelta(days=7),
    Scale.DAY: timedelta(days=7),
}


class ScaleSwitches(Protocol):
    """The settings that choose the scales collected (a `Config` has them)."""

    @property
    def detailed_data_enabled(self) -> bool: ...

    @property
    def detailed_data_seconds_enabled(self) -> bool: ...

    @property
    def detailed_data_hours_enabled(self) -> bool: ...

    @property
    def detailed_data_days_enabled(self) -> bool: ...


def enabled_scales(switches: ScaleSwitches) -> list[Scale]:
    """The bucket scales collected, minutes first: always minutes (the live data), hours
    and days as their switches say. Seconds are apart (`second_data_enabled`): they come
    from chart requests only, never from a usage request."""
    scales = [Scale.MINUTE]
    if switches.detailed_data_hours_enabled:
        scales.append(Scale.HOUR)
    if switches.detailed_data_days_enabled:
        scales.append(Scale.DAY)
    return scales


def history_scales(switches: ScaleSwitches) -> list[Scale]:
    """The scales `--historydays` imports, cheap and important first: days, hours, minutes."""
    return enabled_scales(switches)[::-1]


def second_data_enabled(switches: ScaleSwitches) -> bool:
    """Second data is collected only when detailed data is on and seconds are not off."""
    return switches.detailed_data_enabled and switches.detailed_data_seconds_enabled
