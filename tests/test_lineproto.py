"""Line protocol: the exact bytes upstream dashboards depend on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vuegraf.config import TagConfig
from vuegraf.model import Point, Scale, point_from_kwh
from vuegraf.sinks.lineproto import encode

T = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


def test_minute_point_default_tags():
    p = point_from_kwh(
        "Primary Residence", "Right Panel", "Air Conditioner", Scale.MINUTE, T, 0.025
    )
    assert encode(p, TagConfig(), add_station=False) == (
        "energy_usage,account_name=Primary\\ Residence,detailed=False,"
        "device_name=Air\\ Conditioner usage=1500.0 1795464000"
    )


def test_integer_zero_is_written_as_float():
    p = point_from_kwh("A", "D", "C", Scale.SECOND, T, 0)
    assert " usage=0.0 " in encode(p, TagConfig(), False)


@pytest.mark.parametrize(
    ("scale", "value", "renamed"),
    [
        (Scale.SECOND, "True", "s"),
        (Scale.MINUTE, "False", "m"),
        (Scale.HOUR, "Hour", "h"),
        (Scale.DAY, "Day", "d"),
    ],
)
def test_scale_tag_values_and_renames(scale, value, renamed):
    p = Point("A", "D", "C", scale, T, 1.0)
    assert f",detailed={value}," in encode(p, TagConfig(), False)
    custom = TagConfig(name="scale", second="s", minute="m", hour="h", day="d")
    line = encode(p, custom, False)
    assert f",scale={renamed} " in line
    assert "detailed=" not in line


def test_station_tag_only_when_enabled_and_special_chars_escaped():
    p = Point("A", "Main, Panel", "a=b c", Scale.HOUR, T, 2.5)
    assert "station_name" not in encode(p, TagConfig(), False)
    line = encode(p, TagConfig(), True)
    assert "station_name=Main\\,\\ Panel" in line
    assert "device_name=a\\=b\\ c" in line


def test_point_requires_utc():
    with pytest.raises(ValueError):
        Point("A", "D", "C", Scale.MINUTE, datetime(2026, 1, 1), 1.0)


@pytest.mark.parametrize(
    ("scale", "kwh", "watts"),
    [(Scale.SECOND, 0.001, 3600.0), (Scale.MINUTE, 0.001, 60.0), (Scale.HOUR, 1.5, 1500.0),
     (Scale.DAY, 24.0, 24000.0)],
)
def test_kwh_to_watts_per_scale(scale, kwh, watts):
    assert point_from_kwh("A", "D", "C", scale, T, kwh).watts == pytest.approx(watts)
