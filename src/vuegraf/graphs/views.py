"""The four views (the Kasa logger's day, week, month and year) and the buckets they draw.

A view is a span ending now, cut into buckets of `step` seconds aligned to the Unix epoch
(so every store, whose GROUP BY time buckets are epoch-aligned too, cuts them alike). Each
bucket is read from the scales listed, finest first: a bucket the first scale holds nothing
for takes the next scale's value, so a month of history imported as hour points still draws
where no minute was ever stored. The year view reads hour points only: minutes would be
half a million rows a channel.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import available_timezones

from vuegraf.model import Scale

DAY = 86_400


@dataclass(frozen=True)
class View:
    name: str
    span: int  # seconds shown
    step: int  # seconds per bucket (one drawn point)
    scales: tuple[Scale, ...]  # read finest first; a later one only fills empty buckets

    @property
    def buckets(self) -> int:
        return self.span // self.step

    def window(self, now: datetime) -> tuple[int, int]:
        """[start, end) in Unix seconds: the bucket holding `now` is the last one."""
        t = int(now.timestamp())
        end = (t // self.step + 1) * self.step
        return end - self.span, end

    def times(self, now: datetime) -> list[int]:
        start, end = self.window(now)
        return list(range(start, end, self.step))

    @property
    def period(self) -> timedelta:
        return timedelta(seconds=self.span)


VIEWS: dict[str, View] = {
    view.name: view
    for view in (
        View("day", DAY, 60, (Scale.MINUTE,)),
        View("week", 7 * DAY, 600, (Scale.MINUTE, Scale.HOUR)),
        View("month", 30 * DAY, 3600, (Scale.MINUTE, Scale.HOUR)),
        View("year", 365 * DAY, 12 * 3600, (Scale.HOUR,)),
    )
}


def zone_name(zone: tzinfo) -> str:
    """The IANA name the page formats times in (uPlot's tzDate). The system's zone is
    "localtime" to zoneinfo, which no browser knows: its name is looked up where Debian and
    Docker images keep it; UTC when it has none."""
    key = getattr(zone, "key", None)
    if not isinstance(key, str) or not key:
        return "UTC"
    return key if key != "localtime" else _system_zone_name()


@functools.cache
def _system_zone_name() -> str:
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    for name in candidates:
        if name and name in available_timezones():
            return name
    return "UTC"
