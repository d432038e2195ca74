"""The SVG drawing: read back through its own tick labels, it shows what the store holds.

The store is filled through the real SQLite sink with values that are formulas of time
(`svgcheck`); the expected bucket values are computed from those formulas, the drawn ones
from the pixels, so nothing here trusts vuegraf's graph code.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from graphs import svgcheck as sc
from vuegraf.config import TagConfig
from vuegraf.graphs.data import GraphData, SeriesData, read_graph
from vuegraf.graphs.layout import DeviceEntry
from vuegraf.graphs.read import SqliteGraphReader
from vuegraf.graphs.svg import render, watt_ticks
from vuegraf.graphs.views import VIEWS

ZONE = ZoneInfo("America/New_York")
# view -> (minutes read, hours read): the scales each view draws from.
SCALES = {"day": (True, False), "week": (True, True), "month": (True, True), "year": (False, True)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("svg") / "vuegraf.sqlite"
    sc.fill_store(path)
    return path


@pytest.fixture(scope="module")
def drawn(store: Path) -> dict[str, tuple[GraphData, ET.Element]]:
    """Each view of the panel, drawn once for the module's tests."""
    reader = SqliteGraphReader(store, TagConfig())
    device = sc.panel_layout()[0].devices[0]
    out = {}
    try:
        for name, view in VIEWS.items():
            graph = read_graph(reader, sc.ACCOUNT, device, view, sc.NOW)
            out[name] = (graph, sc.parse(render(graph, ZONE, f"{device.name} · {name}")))
    finally:
        reader.close()
    return out


def _window(root: ET.Element) -> tuple[int, int, int]:
    return int(root.attrib["data-start"]), int(root.attrib["data-end"]), int(
        root.attrib["data-step"]
    )


def _expected_window(view: str) -> tuple[int, int, int]:
    # Independent of View.window: the bucket holding NOW is the last one.
    step = {"day": 60, "week": 600, "month": 3600, "year": 43_200}[view]
    span = {"day": 1, "week": 7, "month": 30, "year": 365}[view] * sc.DAY
    end = (sc.NOW_T // step + 1) * step
    return end - span, end, step


@pytest.mark.parametrize("view", ["day", "week", "month", "year"])
def test_mains_line_carries_the_stored_values(drawn, view):
    _graph, root = drawn[view]
    start, end, step = _expected_window(view)
    assert _window(root) == (start, end, step)
    ax = sc.axes(root)
    minutes, hours = SCALES[view]
    want = sc.expected(sc.MAINS, start, end, step, minutes, hours)
    got: dict[int, float] = {}
    for run in sc.subpaths(sc.paths(root, "line")[sc.MAINS]):
        buckets = sc.to_buckets(ax, run, start, step)
        if len(buckets) == 2 and buckets[0] == buckets[1]:
            buckets = buckets[:1]  # a lone bucket is drawn as a dot: one point twice
        # Within a run the buckets follow each other: a line never spans a missing bucket.
        assert [b for b, _ in buckets] == list(range(buckets[0][0], buckets[-1][0] + step, step))
        for b, watts in buckets:
            assert b not in got
            got[b] = watts
    assert sorted(got) == sorted(want)  # every stored bucket drawn, nothing else
    for b, watts in got.items():
        assert abs(watts - want[b].mean) <= ax.watts_per_px, (view, b, watts, want[b])


@pytest.mark.parametrize("view", ["day", "week", "month", "year"])
def test_stack_of_circuits_meets_the_mains(drawn, view):
    """Kitchen at the bottom, the other circuit on it, Balance on top: each area's top edge is
    the running sum, and the last one's is the mains; the grid channel is no area."""
    _graph, root = drawn[view]
    start, end, step = _expected_window(view)
    ax = sc.axes(root)
    minutes, hours = SCALES[view]
    areas = sc.paths(root, "area")
    assert set(areas) == {sc.KITCHEN, sc.ODD, sc.BALANCE}
    below: dict[int, float] = {}
    for channel in (sc.KITCHEN, sc.ODD, sc.BALANCE):
        want = sc.expected(channel, start, end, step, minutes, hours)
        tops = {
            b: w
            for run in sc.subpaths(areas[channel])
            for b, w in sc.to_buckets(ax, run, start, step)
        }
        assert sorted(tops) == sorted(want)
        for b, watts in tops.items():
            running = below.get(b, 0.0) + want[b].mean
            assert abs(watts - running) <= ax.watts_per_px, (view, channel, b)
            below[b] = running
    mains = sc.expected(sc.MAINS, start, end, step, minutes, hours)
    for b, total in below.items():
        assert abs(total - mains[b].mean) < 1e-6  # the formulas' own identity
    assert sc.FROM_GRID in sc.paths(root, "line")


def test_band_shows_min_and_max_of_each_bucket(drawn):
    """The week view's 10-minute buckets hold ten minutes each: the band spans their min and
    max (per run, the highs left to right, then the lows back)."""
    _graph, root = drawn["week"]
    start, end, step = _expected_window("week")
    ax = sc.axes(root)
    want = sc.expected(sc.MAINS, start, end, step, True, True)
    checked = 0
    for run in sc.subpaths(sc.paths(root, "band")[sc.MAINS]):
        half = len(run) // 2
        highs = sc.to_buckets(ax, run[:half], start, step)
        lows = sc.to_buckets(ax, run[half:][::-1], start, step)
        assert [b for b, _ in highs] == [b for b, _ in lows]
        for (b, high), (_b, low) in zip(highs, lows, strict=True):
            assert abs(high - want[b].high) <= ax.watts_per_px
            assert abs(low - want[b].low) <= ax.watts_per_px
            checked += want[b].low < want[b].high
    assert checked > 100  # the minute buckets of the last day were among them


def test_gaps_split_every_series(drawn):
    """The outage inside the day view leaves the day's line and areas in two pieces, with
    nothing drawn between; the three-day one splits the year view."""
    _graph, root = drawn["day"]
    start, end, step = _expected_window("day")
    ax = sc.axes(root)
    for cls in ("line", "area"):
        for name, d in sc.paths(root, cls).items():
            runs = [sc.to_buckets(ax, r, start, step) for r in sc.subpaths(d)]
            assert len(runs) == 2, (cls, name)
            assert runs[0][-1][0] == sc.SHORT_GAP[0] - 60
            assert runs[1][0][0] == sc.SHORT_GAP[1]
    _graph, root = drawn["year"]
    start, end, step = _expected_window("year")
    ax = sc.axes(root)
    mains = sc.paths(root, "line")[sc.MAINS]
    runs = [sc.to_buckets(ax, r, start, step) for r in sc.subpaths(mains)]
    assert len(runs) == 2
    assert runs[0][-1][0] < sc.LONG_GAP[0] and runs[1][0][0] >= sc.LONG_GAP[1] - step


@pytest.mark.parametrize(
    ("view", "every"),
    [("day", "hour"), ("week", "day"), ("month", "day"), ("year", "month")],
)
def test_time_ticks_fall_on_round_local_times(drawn, view, every):
    _graph, root = drawn[view]
    start, end, _step = _expected_window(view)
    ticks = sc.axes(root).xticks
    assert len(ticks) >= 4
    for _x, t, label in ticks:
        assert start <= t < end
        local = datetime.fromtimestamp(t, UTC).astimezone(ZONE)
        assert (local.minute, local.second) == (0, 0)
        if every != "hour":
            assert local.hour == 0, (view, local)
        if every == "month":
            assert local.day == 1
            assert label.split()[0] == local.strftime("%b")
        elif every == "hour" and local.hour:
            assert label == f"{local.hour:02d}:00"
        else:
            assert str(local.day) in label


def test_watt_ticks_are_round_and_cover_the_data(drawn):
    for _graph, root in drawn.values():
        ticks = sc.axes(root).yticks
        values = sorted(w for _y, w in ticks)
        steps = {round(b - a, 6) for a, b in zip(values, values[1:], strict=False)}
        assert len(steps) == 1
        (step,) = steps
        assert step in {s * 10**p for s in (1, 2, 2.5, 5) for p in range(0, 6)}
        assert 0.0 in values
    assert [t.label for t in watt_ticks(0, 1900)] == [
        "0.0 kW", "0.5 kW", "1.0 kW", "1.5 kW", "2.0 kW"]
    assert [t.label for t in watt_ticks(-90, 420)][:2] == ["-100 W", "0 W"]


def test_names_are_escaped_and_the_file_still_parses():
    """Names are user input: markup in them stays text, and characters XML cannot hold at all
    are replaced rather than making the file unreadable."""
    t0 = sc.NOW_T - sc.NOW_T % 60 - 3600
    view = VIEWS["day"]
    times = list(range(t0, t0 + 180, 60))
    odd = 'a</text><script>alert("x")</script>&amp;\x01'
    device = DeviceEntry("1", odd, "", None, ())
    graph = GraphData(
        sc.ACCOUNT, device, view, times[0] - 60, times[-1] + 60, times,
        [SeriesData(odd, "1,2,3", "mains", [1.0, None, 3.0], [1.0, None, 3.0], [1.0, None, 3.0])],
        ["minute"],
    )
    root = sc.parse(render(graph, ZONE, f"title {odd}"))
    assert root.find(f"{sc.SVG}script") is None
    assert not list(root.iter(f"{sc.SVG}script"))
    shown = odd.replace("\x01", "\ufffd")
    assert shown in sc.paths(root, "line")
    assert root.findtext(f"{sc.SVG}title") == f"title {shown}"
    # Two lone points, each a dot of its own.
    assert len(list(sc.subpaths(sc.paths(root, "line")[shown]))) == 2


def test_without_a_mains_every_channel_is_a_line(store):
    """A layout guessed from the store has no mains: stacking could add the mains to its own
    circuits, so each channel is drawn as a line of its own."""
    device = DeviceEntry("account", sc.ACCOUNT, "", None, tuple(
        c.__class__("", c.name, "circuit") for c in sc.panel_layout()[0].devices[0].channels
    ))
    reader = SqliteGraphReader(store, TagConfig())
    try:
        graph = read_graph(reader, sc.ACCOUNT, device, VIEWS["day"], sc.NOW)
    finally:
        reader.close()
    root = sc.parse(render(graph, ZONE, "guessed"))
    assert sc.paths(root, "area") == {}
    assert set(sc.paths(root, "line")) == {c.name for c in device.channels}


def test_an_empty_window_still_draws_axes():
    view = VIEWS["week"]
    start, end = view.window(sc.NOW)
    device = sc.panel_layout()[0].devices[0]
    nothing: list[float | None] = [None] * view.buckets
    graph = GraphData(sc.ACCOUNT, device, view, start, end, view.times(sc.NOW), [
        SeriesData(c.name, c.num, c.kind, nothing, nothing, nothing) for c in device.channels
    ], [])
    root = sc.parse(render(graph, ZONE, "empty"))
    assert sc.paths(root, "line") == {} and sc.paths(root, "area") == {}
    assert any(e.attrib.get("class") == "empty" for e in root.iter(f"{sc.SVG}text"))
    assert len(sc.axes(root).xticks) == 7
