"""A series store at the seam, in memory, for tests of how the collector uses its reads.

`MemoryStore` keeps every point written and answers the read back from them as a real store
would (the newest point of each channel in [since, until)). Tests that need a store which
holds nothing from before, fails, or refuses subclass it and override `last_times`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from vuegraf.model import Point, Scale
from vuegraf.sinks.base import SeriesStore


class MemoryStore(SeriesStore):
    name = "memory"

    def __init__(self) -> None:
        self.points: list[Point] = []

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def write(self, points: Sequence[Point]) -> None:
        self.points.extend(points)

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]:
        """The newest point of each (station "" , channel) of `account` and `scale`."""
        newest: dict[tuple[str, str], datetime] = {}
        for p in self.points:
            if p.account == account and p.scale is scale and since <= p.time < until:
                key = ("", p.channel)
                newest[key] = max(newest.get(key, p.time), p.time)
        return newest

    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], list[datetime]]:
        """Every point's time of each (station "", channel) of `account` and `scale`."""
        times: dict[tuple[str, str], set[datetime]] = {}
        for p in self.points:
            if p.account == account and p.scale is scale and since <= p.time < until:
                times.setdefault(("", p.channel), set()).add(p.time)
        return {key: sorted(ts) for key, ts in times.items()}

    def delete_all(self, now: datetime) -> int | None:
        return None
