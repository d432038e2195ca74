"""InfluxDB line protocol for our points: one encoder for v1, v2 and --dryrun.

Writing the text ourselves keeps the three outputs byte-identical and makes
the field always a float (upstream could emit `usage=0i` and break the series).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from vuegraf.config import TagConfig
from vuegraf.model import FIELD, MEASUREMENT, Point, Unit


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _format_float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"a value must be finite, got {value!r}")
    text = repr(float(value))
    return text


def point_tags(point: Point, tags: TagConfig, add_station: bool) -> dict[str, str]:
    """The tag set of a point exactly as upstream vuegraf writes it."""
    result = {
        "account_name": point.account,
        "device_name": point.channel,
        tags.name: tags.value(point.scale),
    }
    if add_station:
        result["station_name"] = point.device
    return result


def encode(point: Point, tags: TagConfig, add_station: bool) -> str:
    """One line, timestamp in seconds (write with precision "s")."""
    tag_text = ",".join(
        f"{_escape_tag(k)}={_escape_tag(v)}"
        for k, v in sorted(point_tags(point, tags, add_station).items())
    )
    # Usage is field `usage` (FIELD); amps and volts are fields of their own beside it, in the
    # same series, so no query of `usage` ever sees them.
    field = FIELD if point.unit is Unit.WATTS else point.unit.field
    return f"{MEASUREMENT},{tag_text} {field}={_format_float(point.watts)} {point.epoch_s}"


def encode_all(points: Iterable[Point], tags: TagConfig, add_station: bool) -> list[str]:
    return [encode(p, tags, add_station) for p in points]
