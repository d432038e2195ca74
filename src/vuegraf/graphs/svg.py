"""One device's view drawn as a standalone SVG document, with nothing but the standard library.

The files are for people who serve a folder with nginx or open it in a file manager, often on
a Raspberry Pi: a plotting library (matplotlib and numpy, about 100 MB) would outweigh the rest
of vuegraf, and the drawing needed is small: lines, filled areas, two axes and a legend.

What is drawn:
- the mains (or a device's only channel) as a line, with a min/max band where a bucket holds
  several points (the week, month and year views);
- the circuits as stacked areas, Balance on top, so the stack's top edge meets the mains line;
- the channels Emporia computes for the grid (from / to) as dashed lines, outside the stack;
- a missing bucket ends a line or an area; nothing is ever drawn across it.

The drawing is meant to be read back by a program as well as by eye, so that tests can check
it against the store without trusting this module's arithmetic:
- each y tick is `<text class="ytick" y="PIXEL">LABEL</text>` (label "1.5 kW", "250 W") and each
  x tick `<text class="xtick" x="PIXEL" data-t="UNIX SECONDS">`;
- each series is a `<path data-series="CHANNEL NAME">` with absolute `M`/`L` points only:
  class "line" (one subpath per run of buckets with data), class "area" (a stacked series: its
  `M`/`L` points are the stack's top edge, i.e. the sum of the stacked series up to this one,
  a missing value counting 0 below it; each run is closed with `V`/`H`/`Z` down to zero), class
  "band" (per run: the highs left to right, then the lows right to left).
- a point's x is its bucket's start.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from vuegraf.graphs.data import GraphData, SeriesData
from vuegraf.graphs.layout import COMPUTED_KIND, MAINS_KIND
from vuegraf.graphs.views import zone_name

WIDTH = 1000
PLOT_LEFT = 72
PLOT_RIGHT = 20
PLOT_TOP = 44
PLOT_HEIGHT = 280
X_LABELS = 22  # below the plot
LEGEND_ROW = 20
LEGEND_COLUMNS = 5
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif"

MAINS_COLOUR = "#1f2937"
BAND_COLOUR = "#94a3b8"
BALANCE_COLOUR = "#cbd5e1"
# Distinct, fairly light fills: the mains line stays readable over them.
PALETTE = (
    "#60a5fa", "#f59e0b", "#34d399", "#f87171", "#a78bfa", "#fbbf24", "#2dd4bf", "#fb7185",
    "#818cf8", "#a3e635", "#f472b6", "#38bdf8", "#fdba74", "#4ade80", "#c084fc", "#facc15",
    "#22d3ee", "#e879f9", "#86efac", "#fca5a5",
)
GRID_DASH = ("#dc2626", "#059669", "#7c3aed", "#0891b2")

# Characters XML 1.0 does not allow even as references; a name holding one would make the file
# unreadable, so each is shown as U+FFFD.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: str) -> str:
    """`value` as XML character data or attribute text (names are user input)."""
    value = _NOT_XML.sub("\ufffd", value)
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def _n(value: float) -> str:
    """A coordinate to a tenth of a pixel: finer than any screen, and a third of repr's bytes."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


# -- the value axis ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    value: float
    label: str


def nice_step(span: float, most: int) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that cuts `span` into at most `most`."""
    if span <= 0:
        return 1.0
    raw = span / most
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if factor * power >= raw * (1 - 1e-9):
            return factor * power
    return 10.0 * power


def watt_ticks(low: float, high: float, most: int = 6) -> list[Tick]:
    """Round ticks covering [low, high] (0 always among them), labelled in W or kW."""
    low, high = min(low, 0.0), max(high, 0.0)
    if high - low < 1.0:
        high = low + 1.0
    step = nice_step(high - low, most)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    kilo = max(abs(first), abs(last)) * step >= 1000
    unit_step = step / 1000 if kilo else step
    # As few decimals as show every tick exactly (0.25 kW needs two, 500 W none).
    decimals = next(d for d in range(4) if abs(unit_step * 10**d - round(unit_step * 10**d)) < 1e-6)
    ticks = []
    for i in range(first, last + 1):
        value = i * step
        shown = value / 1000 if kilo else value
        text = f"{shown:.{decimals}f}"
        if text.startswith("-") and float(text) == 0:
            text = text[1:]
        ticks.append(Tick(value, f"{text} {'kW' if kilo else 'W'}"))
    return ticks


# -- the time axis -------------------------------------------------------------------------------


def _local_midnights(start: int, end: int, zone: tzinfo) -> Iterator[datetime]:
    day = datetime.fromtimestamp(start, UTC).astimezone(zone).date()
    while True:
        midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
        t = midnight.timestamp()
        if t >= end:
            return
        if t >= start:
            yield midnight
        day += timedelta(days=1)


def time_ticks(view: str, start: int, end: int, zone: tzinfo, most: int = 12) -> list[Tick]:
    """Ticks at round local times suited to the view: hours for a day, days for a week or a
    month, months for a year. `Tick.value` is the Unix time."""
    ticks: list[Tick] = []
    if view == "day" or end - start <= 2 * 86_400:
        hours = next(h for h in (1, 2, 3, 4, 6, 12, 24) if (end - start) / (h * 3600) <= most)
        # Quarter hours of UTC: every local full hour, in zones 30 or 45 minutes off too.
        t = start - start % 900
        while t < end:
            local = datetime.fromtimestamp(t, UTC).astimezone(zone)
            if t >= start and local.minute == 0 and local.hour % hours == 0:
                label = local.strftime("%a %d") if local.hour == 0 else local.strftime("%H:%M")
                ticks.append(Tick(t, label))
            t += 900
        return ticks
    if view == "year" or end - start > 90 * 86_400:
        local = datetime.fromtimestamp(start, UTC).astimezone(zone)
        year, month = local.year, local.month
        while True:
            first = datetime(year, month, 1, tzinfo=zone)
            t = int(first.timestamp())
            if t >= end:
                return ticks
            if t >= start:
                ticks.append(Tick(t, first.strftime("%b %Y" if month == 1 else "%b")))
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    days = next(d for d in (1, 2, 3, 7, 14) if (end - start) / (d * 86_400) <= most)
    for midnight in _local_midnights(start, end, zone):
        # The day number since year 1, not the day of the month: evenly spaced across months.
        if midnight.date().toordinal() % days == 0:
            label = midnight.strftime("%a %d" if days == 1 else "%b %d")
            ticks.append(Tick(int(midnight.timestamp()), label))
    return ticks


# -- the series --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roles:
    """Which series is drawn how: the line, the stack (bottom first), the dashed lines."""

    mains: SeriesData | None
    stacked: list[SeriesData]
    dashed: list[SeriesData]


def _is_balance(series: SeriesData) -> bool:
    return series.num == "Balance" or (series.num == "" and series.name.endswith("-Balance"))


def roles(series: Sequence[SeriesData]) -> Roles:
    """The mains (or a device's only channel) is the line; with a mains, the circuits and the
    Balance stack under it; without one (a layout guessed from the store), every channel is a
    line of its own, since stacking could add the mains to its own circuits."""
    mains = next((s for s in series if s.kind == MAINS_KIND), None)
    if mains is None and len(series) == 1:
        mains = series[0]
    rest = [s for s in series if s is not mains]
    if mains is None:
        return Roles(None, [], rest)
    balance = [s for s in rest if _is_balance(s)]
    circuits = [s for s in rest if s.kind != COMPUTED_KIND]
    dashed = [s for s in rest if s.kind == COMPUTED_KIND and not _is_balance(s)]
    return Roles(mains, circuits + balance, dashed)


def _runs(values: Sequence[float | None]) -> Iterator[tuple[int, int]]:
    """[i, j) index ranges of consecutive non-None values."""
    i, n = 0, len(values)
    while i < n:
        if values[i] is None:
            i += 1
            continue
        j = i
        while j < n and values[j] is not None:
            j += 1
        yield i, j
        i = j


def stack_tops(stacked: Sequence[SeriesData]) -> list[list[float | None]]:
    """Each stacked series' top edge: the sum of its mean and all means below it (a missing
    one counts 0 below), None where the series itself has no value."""
    tops: list[list[float | None]] = []
    if not stacked:
        return tops
    base = [0.0] * len(stacked[0].mean)
    for s in stacked:
        top: list[float | None] = []
        for i, v in enumerate(s.mean):
            if v is None:
                top.append(None)
            else:
                base[i] += v
                top.append(base[i])
        tops.append(top)
    return tops


# -- the document ------------------------------------------------------------------------------


class _Plot:
    """The mapping from (Unix time, watts) to pixels."""

    def __init__(self, start: int, end: int, low: float, high: float) -> None:
        self.start, self.end, self.low, self.high = start, end, low, high
        self.left = PLOT_LEFT
        self.width = WIDTH - PLOT_LEFT - PLOT_RIGHT
        self.top = PLOT_TOP
        self.height = PLOT_HEIGHT

    def x(self, t: float) -> float:
        return self.left + (t - self.start) * self.width / (self.end - self.start)

    def y(self, watts: float) -> float:
        return self.top + (self.high - watts) * self.height / (self.high - self.low)

    @property
    def bottom(self) -> float:
        return self.top + self.height


def _line_path(plot: _Plot, times: Sequence[int], values: Sequence[float | None]) -> str:
    parts = []
    for i, j in _runs(values):
        points = [f"{_n(plot.x(times[k]))} {_n(plot.y(values[k] or 0.0))}" for k in range(i, j)]
        if len(points) == 1:
            points.append(points[0])  # a lone bucket: a dot (round caps), not nothing
        parts.append("M" + " L".join(points))
    return " ".join(parts)


def _area_path(plot: _Plot, times: Sequence[int], tops: Sequence[float | None]) -> str:
    parts = []
    zero = _n(plot.y(0.0))
    for i, j in _runs(tops):
        points = [f"{_n(plot.x(times[k]))} {_n(plot.y(tops[k] or 0.0))}" for k in range(i, j)]
        # A lone bucket is as wide as its step, so that it shows.
        right = plot.x(times[j - 1] + (times[1] - times[0] if len(times) > 1 else 0))
        if len(points) == 1:
            points.append(f"{_n(right)} {points[0].split()[1]}")
        parts.append("M" + " L".join(points) + f" V{zero} H{_n(plot.x(times[i]))} Z")
    return " ".join(parts)


def _band_path(
    plot: _Plot,
    times: Sequence[int],
    low: Sequence[float | None],
    high: Sequence[float | None],
) -> str:
    parts = []
    for i, j in _runs(high):
        if all(low[k] == high[k] for k in range(i, j)):
            continue  # one point per bucket: nothing to show around the line
        tops = [f"{_n(plot.x(times[k]))} {_n(plot.y(high[k] or 0.0))}" for k in range(i, j)]
        lows = [
            f"{_n(plot.x(times[k]))} {_n(plot.y(low[k] or 0.0))}"
            for k in range(j - 1, i - 1, -1)
        ]
        parts.append("M" + " L".join(tops + lows) + " Z")
    return " ".join(parts)


def _extent(graph: GraphData, parts: Roles, tops: list[list[float | None]]) -> tuple[float, float]:
    values: list[float] = []
    if parts.mains is not None:
        values += [v for v in parts.mains.high if v is not None]
        values += [v for v in parts.mains.low if v is not None]
        values += [v for v in parts.mains.mean if v is not None]
    for s in parts.dashed:
        values += [v for v in s.mean if v is not None]
    for top in tops:
        values += [v for v in top if v is not None]
    if not values:
        return 0.0, 100.0
    return min(values), max(values)


def _local(t: int, zone: tzinfo) -> str:
    return datetime.fromtimestamp(t, UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M")


def render(graph: GraphData, zone: tzinfo, title: str) -> str:
    """The SVG document of `graph`, times shown in `zone`."""
    parts = roles(graph.series)
    tops = stack_tops(parts.stacked)
    low, high = _extent(graph, parts, tops)
    yticks = watt_ticks(low, high)
    plot = _Plot(graph.start, graph.end, yticks[0].value, yticks[-1].value)
    xticks = time_ticks(graph.view.name, graph.start, graph.end, zone)

    legend: list[tuple[str, str, str]] = []  # (name, colour, how)
    if parts.mains is not None:
        legend.append((parts.mains.name, MAINS_COLOUR, "line"))
    colours: dict[str, str] = {}
    circuit_no = 0
    for s in parts.stacked:
        if _is_balance(s):
            colours[s.name] = BALANCE_COLOUR
        else:
            colours[s.name] = PALETTE[circuit_no % len(PALETTE)]
            circuit_no += 1
        legend.append((s.name, colours[s.name], "area"))
    for i, s in enumerate(parts.dashed):
        colours[s.name] = GRID_DASH[i % len(GRID_DASH)] if parts.mains else PALETTE[
            i % len(PALETTE)
        ]
        legend.append((s.name, colours[s.name], "dashed" if parts.mains else "line"))

    legend_rows = max(1, -(-len(legend) // LEGEND_COLUMNS))
    legend_top = plot.bottom + X_LABELS + 14
    height = int(legend_top + legend_rows * LEGEND_ROW + 6)

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="{_text(FONT)}" font-size="12" '
        f'data-view="{_text(graph.view.name)}" data-start="{graph.start}" '
        f'data-end="{graph.end}" data-step="{graph.view.step}">',
        f"<title>{_text(title)}</title>",
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text class="title" x="{PLOT_LEFT}" y="22" font-size="15" font-weight="600" '
        f'fill="#111827">{_text(title)}</text>',
        f'<text class="window" x="{WIDTH - PLOT_RIGHT}" y="22" text-anchor="end" '
        f'fill="#6b7280">{_text(_local(graph.start, zone))} – '
        f"{_text(_local(graph.end, zone))} ({_text(zone_name(zone))})</text>",
    ]

    # Grid and axes.
    out.append('<g class="grid" stroke="#e5e7eb" stroke-width="1">')
    for tick in yticks:
        y = _n(plot.y(tick.value))
        out.append(f'<line x1="{plot.left}" x2="{plot.left + plot.width}" y1="{y}" y2="{y}"/>')
    for tick in xticks:
        x = _n(plot.x(tick.value))
        out.append(f'<line x1="{x}" x2="{x}" y1="{plot.top}" y2="{_n(plot.bottom)}"/>')
    out.append("</g>")
    out.append('<g class="yaxis" fill="#4b5563" text-anchor="end">')
    for tick in yticks:
        out.append(
            f'<text class="ytick" x="{plot.left - 6}" y="{_n(plot.y(tick.value))}" '
            f'dy="0.32em">{_text(tick.label)}</text>'
        )
    out.append("</g>")
    out.append('<g class="xaxis" fill="#4b5563" text-anchor="middle">')
    for tick in xticks:
        out.append(
            f'<text class="xtick" x="{_n(plot.x(tick.value))}" y="{_n(plot.bottom + 16)}" '
            f'data-t="{int(tick.value)}">{_text(tick.label)}</text>'
        )
    out.append("</g>")

    # The data, clipped to the plot (a bucket's lone-point area may reach past the end).
    out.append(
        f'<clipPath id="plot"><rect x="{plot.left}" y="{plot.top}" width="{plot.width}" '
        f'height="{plot.height}"/></clipPath>'
    )
    out.append('<g class="data" clip-path="url(#plot)">')
    # Highest first: each area reaches down to zero, and the ones below paint over it.
    for s, top in reversed(list(zip(parts.stacked, tops, strict=True))):
        d = _area_path(plot, graph.times, top)
        if d:
            out.append(
                f'<path class="area" data-series="{_text(s.name)}" fill="{colours[s.name]}" '
                f'fill-opacity="0.85" stroke="none" d="{d}"/>'
            )
    zero = _n(plot.y(0.0))
    out.append(
        f'<line class="zero" x1="{plot.left}" x2="{plot.left + plot.width}" y1="{zero}" '
        f'y2="{zero}" stroke="#9ca3af" stroke-width="1"/>'
    )
    if parts.mains is not None:
        m = parts.mains
        band = _band_path(plot, graph.times, m.low, m.high)
        if band:
            out.append(
                f'<path class="band" data-series="{_text(m.name)}" fill="{BAND_COLOUR}" '
                f'fill-opacity="0.45" stroke="none" d="{band}"/>'
            )
    for s in parts.dashed:
        d = _line_path(plot, graph.times, s.mean)
        if d:
            dash = ' stroke-dasharray="5 3"' if parts.mains is not None else ""
            out.append(
                f'<path class="line" data-series="{_text(s.name)}" fill="none" '
                f'stroke="{colours[s.name]}" stroke-width="1.2"{dash} stroke-linejoin="round" '
                f'stroke-linecap="round" d="{d}"/>'
            )
    if parts.mains is not None:
        d = _line_path(plot, graph.times, parts.mains.mean)
        if d:
            out.append(
                f'<path class="line" data-series="{_text(parts.mains.name)}" fill="none" '
                f'stroke="{MAINS_COLOUR}" stroke-width="1.5" stroke-linejoin="round" '
                f'stroke-linecap="round" d="{d}"/>'
            )
    if not any(v is not None for s in graph.series for v in s.mean):
        out.append(
            f'<text class="empty" x="{_n(plot.left + plot.width / 2)}" '
            f'y="{_n(plot.top + plot.height / 2)}" text-anchor="middle" fill="#6b7280">'
            "no data stored for this window</text>"
        )
    out.append("</g>")
    out.append(
        f'<rect x="{plot.left}" y="{plot.top}" width="{plot.width}" height="{plot.height}" '
        'fill="none" stroke="#d1d5db"/>'
    )

    # Legend.
    out.append('<g class="legend" fill="#374151">')
    column = (WIDTH - 2 * PLOT_LEFT // 2) // LEGEND_COLUMNS
    for i, (name, colour, how) in enumerate(legend):
        lx = PLOT_LEFT // 2 + (i % LEGEND_COLUMNS) * column
        ly = legend_top + (i // LEGEND_COLUMNS) * LEGEND_ROW
        if how == "area":
            mark = f'<rect x="{lx}" y="{ly - 9}" width="14" height="10" fill="{colour}"/>'
        else:
            dash = ' stroke-dasharray="4 2"' if how == "dashed" else ""
            mark = (
                f'<line x1="{lx}" x2="{lx + 14}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                f'stroke-width="2"{dash}/>'
            )
        shown = name if len(name) <= 26 else name[:25] + "…"
        out.append(
            f'<g class="legend-item" data-legend="{_text(name)}">{mark}'
            f'<text x="{lx + 20}" y="{ly}">{_text(shown)}</text></g>'
        )
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
