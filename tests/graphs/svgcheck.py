"""A household whose every stored value is a formula, and a reader of the drawn SVG that turns
pixels back into Unix times and watts through the file's own tick labels.

The expected values are computed here from the formulas (independent arithmetic), never by
vuegraf's graph code; the SVG is read with ElementTree and regular expressions only.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vuegraf.config import TagConfig
from vuegraf.graphs.layout import AccountEntry, ChannelEntry, DeviceEntry, Layout
from vuegraf.model import Point, Scale
from vuegraf.sinks.sqlite import SqliteSink

SVG = "{http://www.w3.org/2000/svg}"
ACCOUNT = "Home"
NOW = datetime(2027, 6, 15, 12, 30, 20, tzinfo=UTC)
NOW_T = int(NOW.timestamp())
HOUR = 3600
DAY = 86_400

# Channel names as the store holds them; one circuit's name is hostile markup.
MAINS = "Panel"
KITCHEN = "Kitchen"
ODD = "Kid's \"Room\" <2> & Co"
BALANCE = "Panel-Balance"
FROM_GRID = "Panel-MainsFromGrid"

# Minute points for the last 30 hours (hour-aligned start) ...
MINUTES_FROM = NOW_T // HOUR * HOUR - 30 * HOUR
# ... hour points for 370 days ...
HOURS_FROM = NOW_T // HOUR * HOUR - 370 * DAY
# ... and two outages where nothing was stored at any scale: one inside the day view, one of
# three days about a hundred days ago (a gap in the year view too).
SHORT_GAP = (NOW_T // HOUR * HOUR - 5 * HOUR, NOW_T // HOUR * HOUR - 3 * HOUR)
LONG_GAP = (NOW_T // DAY * DAY - 100 * DAY, NOW_T // DAY * DAY - 97 * DAY)


def in_gap(t: int) -> bool:
    return any(lo <= t < hi for lo, hi in (SHORT_GAP, LONG_GAP))


def minute_values(t: int) -> dict[str, float]:
    m = t // 60
    kitchen = 200.0 + (m % 50) * 4
    odd = 900.0 + (m * 7 % 31) * 10
    mains = kitchen + odd + 120.0 + (m % 3) * 5
    return {MAINS: mains, KITCHEN: kitchen, ODD: odd, BALANCE: mains - kitchen - odd,
            FROM_GRID: mains}


def hour_values(t: int) -> dict[str, float]:
    h = t // HOUR
    kitchen = 150.0 + (h % 24) * 10
    odd = 700.0 + (h % 5) * 60
    mains = kitchen + odd + 100.0
    return {MAINS: mains, KITCHEN: kitchen, ODD: odd, BALANCE: mains - kitchen - odd,
            FROM_GRID: mains}


def minute_times() -> list[int]:
    return [t for t in range(MINUTES_FROM, NOW_T // 60 * 60 + 60, 60) if not in_gap(t)]


def hour_times() -> list[int]:
    return [t for t in range(HOURS_FROM, NOW_T // HOUR * HOUR, HOUR) if not in_gap(t)]


def fill_store(path: Path) -> None:
    """Write the household through the real SQLite sink."""
    points = []
    for scale, times, values in (
        (Scale.MINUTE, minute_times(), minute_values),
        (Scale.HOUR, hour_times(), hour_values),
    ):
        for t in times:
            when = datetime.fromtimestamp(t, UTC)
            for channel, watts in values(t).items():
                points.append(Point(ACCOUNT, MAINS, channel, scale, when, watts))
    sink = SqliteSink(path, TagConfig(), add_station=False)
    sink.open()
    sink.write(points)
    sink.close()


def panel_layout() -> Layout:
    device = DeviceEntry(
        "101",
        MAINS,
        "",
        None,
        (
            ChannelEntry("1,2,3", MAINS, "mains"),
            ChannelEntry("1", KITCHEN, "circuit"),
            ChannelEntry("2", ODD, "circuit"),
            ChannelEntry("Balance", BALANCE, "computed"),
            ChannelEntry("MainsFromGrid", FROM_GRID, "computed"),
        ),
    )
    return (AccountEntry(ACCOUNT, (device,)),)


@dataclass(frozen=True)
class Expected:
    """A bucket's values as the store holds them: min, mean and max of its points."""

    low: float
    mean: float
    high: float


def expected(channel: str, start: int, end: int, step: int, minutes: bool, hours: bool
             ) -> dict[int, Expected]:
    """Each `step` bucket of [start, end): its stored minutes if it has any, else the hour
    points inside it, else (a step shorter than an hour) the hour point covering it. A bucket
    an hour wide with both takes its mean from the hour point, its band from the minutes
    (widened to hold that mean)."""
    minute_set = set(minute_times()) if minutes else set()
    hour_set = set(hour_times()) if hours else set()
    out: dict[int, Expected] = {}
    for b in range(start, end, step):
        got = [minute_values(t)[channel] for t in range(b, b + step, 60) if t in minute_set]
        if not got:
            inside = range(b - b % HOUR, b + step, HOUR)
            got = [hour_values(t)[channel] for t in inside if t in hour_set and t + HOUR > b]
        if got:
            out[b] = Expected(min(got), sum(got) / len(got), max(got))
            if step == HOUR and b in hour_set and minutes and any(
                t in minute_set for t in range(b, b + step, 60)
            ):
                mean = hour_values(b)[channel]
                out[b] = Expected(min(min(got), mean), mean, max(max(got), mean))
    return out


# -- reading the SVG ----------------------------------------------------------------------------


def parse(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    return root


def label_watts(label: str) -> float:
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?) (W|kW)", label)
    assert match, label
    return float(match.group(1)) * (1000 if match.group(2) == "kW" else 1)


def _linear(pairs: list[tuple[float, float]]) -> Callable[[float], float]:
    (p0, v0), (p1, v1) = pairs[0], pairs[-1]
    scale = (v1 - v0) / (p1 - p0)
    for p, v in pairs:  # every tick sits on the line through the first and last
        assert abs(v0 + (p - p0) * scale - v) <= abs(scale) * 0.2, (p, v)
    return lambda p: v0 + (p - p0) * scale


@dataclass
class Axes:
    watts: Callable[[float], float]  # y pixel -> W
    time: Callable[[float], float]  # x pixel -> Unix seconds
    watts_per_px: float
    yticks: list[tuple[float, float]]  # (pixel, W)
    xticks: list[tuple[float, int, str]]  # (pixel, Unix seconds, label)


def axes(root: ET.Element) -> Axes:
    yticks = [
        (float(e.attrib["y"]), label_watts(e.text or ""))
        for e in root.iter(f"{SVG}text")
        if e.attrib.get("class") == "ytick"
    ]
    xticks = [
        (float(e.attrib["x"]), int(e.attrib["data-t"]), e.text or "")
        for e in root.iter(f"{SVG}text")
        if e.attrib.get("class") == "xtick"
    ]
    assert len(yticks) >= 2 and len(xticks) >= 2
    watts = _linear(yticks)
    time = _linear([(x, float(t)) for x, t, _ in xticks])
    per_px = abs(watts(1.0) - watts(0.0))
    return Axes(watts, time, per_px, yticks, xticks)


def paths(root: ET.Element, cls: str) -> dict[str, str]:
    """data-series -> d of the paths of class `cls`."""
    return {
        e.attrib["data-series"]: e.attrib["d"]
        for e in root.iter(f"{SVG}path")
        if e.attrib.get("class") == cls
    }


def subpaths(d: str) -> Iterator[list[tuple[float, float]]]:
    """The M/L points of each subpath (V, H and Z close an area and carry no data)."""
    for part in re.findall(r"M[^M]*", d):
        points = re.findall(r"[ML]\s*(-?[\d.]+)[ ,](-?[\d.]+)", part)
        yield [(float(x), float(y)) for x, y in points]


def to_buckets(ax: Axes, pts: list[tuple[float, float]], start: int, step: int
               ) -> list[tuple[int, float]]:
    """Pixels back to (bucket start, watts); x must land within a fifth of a pixel of the
    bucket's start (coordinates are written to a tenth of a pixel)."""
    seconds_per_px = ax.time(1.0) - ax.time(0.0)
    assert seconds_per_px * 0.2 < step / 2  # so a point cannot be taken for its neighbour
    out = []
    for x, y in pts:
        t = ax.time(x)
        b = start + round((t - start) / step) * step
        assert abs(t - b) <= seconds_per_px * 0.2, (t, b)
        out.append((b, ax.watts(y)))
    return out
