"""The values that cross every seam: a reading's scale and the point it becomes.

Configurable tag strings ("True", "Hour", ...) never appear here; only the sinks
translate a `Scale` into the tag value the user configured.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime

MEASUREMENT = "energy_usage"
FIELD = "usage"


class Scale(enum.Enum):
    """The scales vuegraf writes, valued by Emporia's scale code. QUARTER (15 minutes) is
    only for amps and volts (`Unit`): usage is never collected, tracked or filled at it."""

    SECOND = "1S"
    MINUTE = "1MIN"
    QUARTER = "15MIN"
    HOUR = "1H"
    DAY = "1D"

    @property
    def watts_per_kwh(self) -> float:
        """Factor turning Emporia's kWh-per-bucket into the value written (day: Wh, not W)."""
        return _WATTS_PER_KWH[self]

    @property
    def seconds(self) -> int:
        """Nominal bucket length (a local day may be 23 or 25 h; see schedule.py)."""
        return _SECONDS[self]


_WATTS_PER_KWH = {
    Scale.SECOND: 3_600_000.0,
    Scale.MINUTE: 60_000.0,
    Scale.QUARTER: 4_000.0,
    Scale.HOUR: 1_000.0,
    Scale.DAY: 1_000.0,
}
_SECONDS = {
    Scale.SECOND: 1,
    Scale.MINUTE: 60,
    Scale.QUARTER: 900,
    Scale.HOUR: 3600,
    Scale.DAY: 86400,
}


class Unit(enum.Enum):
    """What a point's value measures. Usage (watts; watt-hours for a day) is what upstream
    wrote and every dashboard reads; amps and volts are optional extras written apart, so
    no query of usage ever sees them."""

    WATTS = "usage"
    AMPS = "amps"
    VOLTS = "volts"

    @property
    def field(self) -> str:
        """The InfluxDB field (and SQLite column) a point of this unit is written as."""
        return self.value


@dataclass(frozen=True, slots=True)
class Point:
    """One usage value: what every sink receives.

    `device` is the Emporia device (written as tag `station_name`), `channel` the
    circuit (written, for historic reasons, as tag `device_name`). `time` is an
    aware UTC datetime, already stamped for its scale (`schedule.point_time`).

    `device_gid` and `channel_num` are Emporia's ids of the channel, when the point came
    from Emporia: names change when the user renames a circuit in vuegraf.json, ids do not,
    so whatever must outlive a rename (energy counters, Home Assistant entities) keys on
    them. They are not part of the point's identity: two points of one series and time
    are the same point whether or not they carry them (a point read back from the retry
    queue does not).
    """

    account: str
    device: str
    channel: str
    scale: Scale
    time: datetime
    watts: float
    device_gid: int | None = field(default=None, compare=False, repr=False)
    channel_num: str | None = field(default=None, compare=False, repr=False)
    # What `watts` holds: watts (Wh for a day) by default; for Unit.AMPS the bucket's mean
    # current in A, for Unit.VOLTS its voltage in V (the name `watts` stays for usage's sake).
    unit: Unit = Unit.WATTS

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() != UTC.utcoffset(None):
            raise ValueError(f"Point.time must be aware UTC, got {self.time!r}")
        if not isinstance(self.watts, float):
            object.__setattr__(self, "watts", float(self.watts))

    @property
    def epoch_s(self) -> int:
        return int(self.time.timestamp())

    def series(self) -> tuple[str, str, str, Scale]:
        """Identity of the series this point belongs to (time excluded)."""
        return (self.account, self.device, self.channel, self.scale)


def point_from_kwh(
    account: str,
    device: str,
    channel: str,
    scale: Scale,
    time: datetime,
    kwh: float,
    ids: tuple[int, str] | None = None,
) -> Point:
    """Build a point from Emporia's kWh for one bucket, converting to watts per scale;
    `ids` is Emporia's (device gid, channel number) of the channel."""
    gid, num = ids if ids is not None else (None, None)
    return Point(account, device, channel, scale, time, float(kwh) * scale.watts_per_kwh, gid, num)
