"""The graphs page in a real browser (headless Chromium), served by `WebServer` from SQLite.

The store is filled with values the test makes up (a formula of the time), with two planted
outages; what the page draws (`window.vuegraf.charts[...].data`) is compared with bucket
means, minimums and maximums the test computes from the rows it wrote, not with anything
vuegraf computes. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest

from harness import oracle
from harness.browser import Browser
from vuegraf.clock import FakeClock
from vuegraf.config import TagConfig
from vuegraf.graphs.layout import AccountEntry, ChannelEntry, DeviceEntry, Layout
from vuegraf.graphs.read import SqliteGraphReader
from vuegraf.model import Point, Scale
from vuegraf.simulator import Scenario, UsageModel
from vuegraf.sinks.sqlite import SqliteSink
from vuegraf.web.server import WebServer

pytestmark = pytest.mark.integration

ZONE = ZoneInfo("America/New_York")
NOW = datetime(2027, 6, 15, 16, 20, 30, tzinfo=UTC)  # a fixed instant: no verdict on the date
T = int(NOW.timestamp())
ACCOUNT = "Home"
MINUTE, HOUR, DAY = 60, 3600, 86_400
MINUTE_DAYS = 8  # minute points for the last 8 days (the week view reads only minutes)
HOUR_DAYS = 370  # hour points for a little over the year view
# Outage 1: neither minutes nor hours for three whole hours of the last day.
GAP1 = (T // HOUR - 5) * HOUR, (T // HOUR - 2) * HOUR
# Outage 2: two days without hour points twenty days back, on 12-hour bucket edges (the year
# view's), before the minutes start.
GAP2_START = (T - 20 * DAY) // 43_200 * 43_200
GAP2 = GAP2_START, GAP2_START + 2 * DAY

# (span, step, reads minutes, reads hours): the four views, as the page's tabs name them.
VIEWS = {
    "day": (DAY, 60, True, False),
    "week": (7 * DAY, 600, True, True),
    "month": (30 * DAY, 3600, True, True),
    "year": (365 * DAY, 43_200, False, True),
}

PANEL = DeviceEntry(
    "1001",
    "Panel",
    "",
    None,
    (
        ChannelEntry("1,2,3", "Panel", "mains"),
        ChannelEntry("1", "Panel-1", "circuit"),
        ChannelEntry("2", "Panel-2", "circuit"),
        ChannelEntry("Balance", "Panel-Balance", "computed"),
    ),
)
PLUG = DeviceEntry("2001", "Plug", "", "1001", (ChannelEntry("1,2,3", "Plug", "mains"),))
LAYOUT: Layout = (AccountEntry(ACCOUNT, (PANEL, PLUG)),)


def circuit_watts(channel: str, t: int, per: int) -> float:
    """The made-up value of a channel at `t` for points `per` seconds apart (mains is the sum
    of the rest, as a panel's is)."""
    n = t // per
    parts = {
        "Panel-1": 100.0 + (n % 37) * 3.5,
        "Panel-2": 250.0 + (n * 7 % 53) * 1.25,
        "Panel-Balance": 20.0 + (n % 5) * 0.5,
    }
    if channel == "Panel":
        return sum(parts.values())
    if channel == "Plug":
        return 5.0 + (n % 11) * 0.75
    return parts[channel]


def in_gap(t: int, per: int) -> bool:
    return any(lo < t + per and t < hi for lo, hi in (GAP1, GAP2))


@dataclass
class Rows:
    """What the test wrote: channel -> time -> watts, per scale."""

    minutes: dict[str, dict[int, float]]
    hours: dict[str, dict[int, float]]


def write_rows(path: Path) -> Rows:
    last_minute = T // MINUTE * MINUTE - MINUTE  # the minute under way is not stored yet
    last_hour = T // HOUR * HOUR - HOUR
    names = [c.name for d in (PANEL, PLUG) for c in d.channels]
    rows = Rows({n: {} for n in names}, {n: {} for n in names})
    for t in range(last_minute - MINUTE_DAYS * DAY + MINUTE, last_minute + 1, MINUTE):
        if not in_gap(t, MINUTE):
            for name in names:
                rows.minutes[name][t] = circuit_watts(name, t, MINUTE)
    for t in range(last_hour - HOUR_DAYS * DAY + HOUR, last_hour + 1, HOUR):
        if not in_gap(t, HOUR):
            for name in names:
                rows.hours[name][t] = circuit_watts(name, t, HOUR)
    sink = SqliteSink(path, TagConfig(), add_station=False)
    sink.open()
    try:
        for scale, table in ((Scale.MINUTE, rows.minutes), (Scale.HOUR, rows.hours)):
            sink.write(
                [
                    Point(ACCOUNT, "", name, scale, datetime.fromtimestamp(t, UTC), watts)
                    for name, values in table.items()
                    for t, watts in values.items()
                ]
            )
    finally:
        sink.close()
    return rows


Stats = tuple[float, float, float] | None  # mean, min, max of a bucket


def expected_buckets(rows: Rows, channel: str, view: str) -> tuple[list[int], list[Stats]]:
    """The view's bucket starts, and each bucket's mean/min/max: from the minutes written in
    it; where there are none (and the view reads hours), from the hour points of the hour
    (or 12 hours) it lies in; None where neither has anything. An hour-wide bucket with an
    hour point takes its mean from it and its band from the minutes."""
    span, step, minutes, hours = VIEWS[view]
    end = (T // step + 1) * step
    times = list(range(end - span, end, step))
    out: list[Stats] = []
    for t in times:
        values = []
        if minutes:
            got = rows.minutes[channel]
            values = [got[m] for m in range(t, t + step, MINUTE) if m in got]
        if not values and hours:
            block = max(step, HOUR)
            first = t - t % block
            values = [
                v
                for h in range(first, first + block, HOUR)
                if (v := rows.hours[channel].get(h)) is not None
            ]
        hour = rows.hours[channel].get(t) if hours and step == HOUR else None
        if values and hour is not None:
            # An hour-wide bucket: the mean is the hour point's, the band the minutes'.
            out.append((hour, min(min(values), hour), max(max(values), hour)))
            continue
        out.append((statistics.fmean(values), min(values), max(values)) if values else None)
    return times, out


def column(stats: list[Stats], i: int) -> list[float | None]:
    """The means (0), minimums (1) or maximums (2) of buckets, None for an empty one."""
    return [None if s is None else s[i] for s in stats]


# The API sends watts to a thousandth: each drawn value is within half of that of the store's.
ROUNDING = 0.0005 + 1e-9


def assert_series(
    drawn: list[float | None], expected: list[float | None], what: str, tol: float = ROUNDING
) -> None:
    assert len(drawn) == len(expected), what
    for i, (got, want) in enumerate(zip(drawn, expected, strict=True)):
        if want is None:
            assert got is None, f"{what}[{i}]: {got} where the store holds nothing"
        else:
            assert got is not None and math.isclose(got, want, abs_tol=tol), (
                f"{what}[{i}]: drawn {got}, the store holds {want}"
            )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[WebServer, Path, Rows]]:
    db = tmp_path / "vuegraf.sqlite"
    rows = write_rows(db)
    reader = SqliteGraphReader(db, TagConfig())
    with WebServer("127.0.0.1", 0, reader, lambda: LAYOUT, ZONE, FakeClock(NOW)) as server:
        yield server, db, rows


def wait_drawn(browser: Browser, device: str, view: str) -> None:
    """Wait until every chart of that pick has drawn."""
    browser.wait_for(
        "return window.vuegraf && window.vuegraf.ready && window.vuegraf.drawn === arguments[0]",
        f"#{quote(ACCOUNT)}/{device}/{view}",
    )


def open_view(browser: Browser, url: str, device: str, view: str) -> None:
    browser.open(f"{url}/#{quote(ACCOUNT)}/{device}/{view}")
    wait_drawn(browser, device, view)


def no_console_errors(browser: Browser) -> None:
    assert browser.severe() == []
    assert browser.script("return window.vuegraf.error") is None
    assert browser.script("return document.getElementById('error').hidden") is True


def drawn(browser: Browser, chart: str) -> tuple[list[int], list[list[float | None]]]:
    """A chart's data as uPlot holds it: the bucket starts, then each series' values."""
    data = browser.script("return window.vuegraf.charts[arguments[0]].data", chart)
    return [int(t) for t in data[0]], data[1:]


@pytest.mark.parametrize("view", list(VIEWS))
def test_each_view_draws_what_the_store_holds(
    browser: Browser, served: tuple[WebServer, Path, Rows], view: str
) -> None:
    server, _db, rows = served
    open_view(browser, server.url, PANEL.id, view)
    browser.screenshot(f"page-{view}.png")
    no_console_errors(browser)
    charts = browser.script("return Object.keys(window.vuegraf.charts).sort()")
    assert charts == sorted(["stack", *(c.name for c in PANEL.channels)])

    expect: dict[str, list[Stats]] = {}
    for channel in PANEL.channels:
        times, expect[channel.name] = expected_buckets(rows, channel.name, view)
        drawn_times, data = drawn(browser, channel.name)
        assert drawn_times == times
        for i, what in enumerate(("mean", "min", "max")):
            want = column(expect[channel.name], i)
            assert_series(data[i], want, f"{view} {channel.name} {what}")

    # The planted outages are gaps wherever they cover a whole bucket; the only other empty
    # bucket may be the newest, which holds the minute under way (not stored yet).
    step = VIEWS[view][1]
    mains_times, (mains, *_bounds) = drawn(browser, "Panel")
    covered = [
        i
        for i, t in enumerate(mains_times)
        if any(lo <= t and t + step <= hi for lo, hi in (GAP1, GAP2))
    ]
    assert covered, f"no outage inside the {view} view"
    assert all(mains[i] is None for i in covered)
    others = [i for i, v in enumerate(mains) if v is None and i not in covered]
    assert others in ([], [len(mains) - 1])

    # The stack: circuits, then Balance, each a running sum of the means below; mains on top.
    _times, stack = drawn(browser, "stack")
    layers = ["Panel-1", "Panel-2", "Panel-Balance"]
    sums = [0.0] * len(mains_times)
    for k, name in enumerate(layers):
        layer: list[float | None] = []
        for i, s in enumerate(expect[name]):
            if s is None:
                layer.append(None)
            else:
                sums[i] += s[0]
                layer.append(sums[i])
        # A layer adds the rounding of each mean below it.
        assert_series(stack[k], layer, f"{view} stack layer {name}", (k + 1) * ROUNDING)
    assert_series(stack[len(layers)], column(expect["Panel"], 0), f"{view} stack mains")


def test_the_live_value_follows_a_new_minute(
    browser: Browser, served: tuple[WebServer, Path, Rows]
) -> None:
    server, db, rows = served
    # The graphs are read again every 5 s (`?refresh=5`), not every minute.
    browser.open(f"{server.url}/?refresh=5#{quote(ACCOUNT)}/{PANEL.id}/day")
    wait_drawn(browser, PANEL.id, "day")
    last = max(rows.minutes["Panel-1"])
    browser.wait_for("return window.vuegraf.live['Panel-1'] !== undefined")
    assert browser.script("return window.vuegraf.live['Panel-1']") == {
        "watts": rows.minutes["Panel-1"][last],
        "time": last,
    }
    # The table's totals were read too (each cell a number of kWh).
    browser.wait_until(
        lambda: all(
            re.fullmatch(r"-?\d+\.\d+ kWh", text)
            for text in browser.script(
                "return Array.from(document.querySelectorAll('#channels td[data-col=today], "
                "#channels td[data-col=year]')).map(c => c.textContent)"
            )
        ),
        "the totals in the table",
    )

    newer = last + MINUTE
    sink = SqliteSink(db, TagConfig(), add_station=False)
    sink.open()
    try:
        at = datetime.fromtimestamp(newer, UTC)
        sink.write([Point(ACCOUNT, "", "Panel-1", Scale.MINUTE, at, 4321.5)])
    finally:
        sink.close()
    # Polled every 15 s, without reloading the page: its start time stays what it was.
    started = browser.script("return performance.timeOrigin")
    browser.wait_for("return (window.vuegraf.live['Panel-1'] || {}).time === arguments[0]", newer)
    assert browser.script("return window.vuegraf.live['Panel-1'].watts") == 4321.5
    cell = "#channels tr[data-channel='Panel-1'] td[data-col=live]"
    assert browser.script(f'return document.querySelector("{cell}").textContent') == "4.32 kW"
    # The day graph draws the new minute too, in the circuit's chart and in the stack.
    assert newer in drawn(browser, "Panel-1")[0]
    browser.wait_for(
        "var u = window.vuegraf.charts['Panel-1'];"
        "return u.data[1][u.data[0].indexOf(arguments[0])] === 4321.5",
        newer,
    )
    stack_times, stack = drawn(browser, "stack")
    assert stack[0][stack_times.index(newer)] == 4321.5  # Panel-1 is the bottom layer
    assert browser.script("return performance.timeOrigin") == started
    browser.screenshot("page-live.png")
    no_console_errors(browser)


def test_a_live_value_minutes_old_says_its_age(browser: Browser, tmp_path: Path) -> None:
    """Collection stalled: six minutes after the newest minute the table shows it greyed,
    with its age, not as the watts of now."""
    rows = write_rows(tmp_path / "vuegraf.sqlite")
    last = max(rows.minutes["Panel-1"])
    later = FakeClock(datetime.fromtimestamp(last + 6 * MINUTE + 30, UTC))
    reader = SqliteGraphReader(tmp_path / "vuegraf.sqlite", TagConfig())
    with WebServer("127.0.0.1", 0, reader, lambda: LAYOUT, ZONE, later) as server:
        open_view(browser, server.url, PANEL.id, "day")
        browser.wait_for("return window.vuegraf.live['Panel-1'] !== undefined")
        cell = "#channels tr[data-channel='Panel-1'] td[data-col=live]"
        text = browser.script(f'return document.querySelector("{cell}").textContent')
        watts = rows.minutes["Panel-1"][last]
        assert text == f"{round(watts)} W (7 min ago)", text
        assert browser.script(f'return document.querySelector("{cell}").className') == "stale"
        no_console_errors(browser)


def test_the_hash_keeps_the_choice(browser: Browser, served: tuple[WebServer, Path, Rows]) -> None:
    server, _db, _rows = served
    open_view(browser, server.url, PANEL.id, "day")
    # The plug is listed under its panel.
    nested = "#devices li a[data-device='1001'] + ul a[data-device='2001']"
    assert browser.script(f'return document.querySelector("{nested}") !== null')
    browser.script("document.querySelector('#tabs button[data-view=week]').click()")
    wait_drawn(browser, "1001", "week")
    assert browser.script("return location.hash") == "#Home/1001/week"
    browser.script("document.querySelector(\"#devices a[data-device='2001']\").click()")
    wait_drawn(browser, "2001", "week")
    browser.driver.refresh()
    wait_drawn(browser, "2001", "week")
    assert browser.script("return location.hash") == "#Home/2001/week"
    # A plug has no circuits: its one chart, no stack.
    assert browser.script("return Object.keys(window.vuegraf.charts)") == ["Plug"]
    times, stats = expected_buckets(_rows, "Plug", "week")
    drawn_times, data = drawn(browser, "Plug")
    assert drawn_times == times
    assert_series(data[0], column(stats, 0), "Plug week mean")
    no_console_errors(browser)


def test_charts_follow_the_width_of_a_phone(
    browser: Browser, served: tuple[WebServer, Path, Rows]
) -> None:
    server, _db, _rows = served
    open_view(browser, server.url, PANEL.id, "day")
    widths = "return Object.values(window.vuegraf.charts).map(u => u.width)"
    assert min(browser.script(widths)) > 800
    browser.driver.set_window_size(420, 900)
    viewport = browser.script("return document.documentElement.clientWidth")
    browser.wait_until(
        lambda: all(200 < w <= viewport for w in browser.script(widths)), "charts a phone wide"
    )
    browser.screenshot("page-phone.png")
    no_console_errors(browser)


def test_a_store_error_is_shown_on_the_page(browser: Browser, tmp_path: Path) -> None:
    reader = SqliteGraphReader(tmp_path / "missing.sqlite", TagConfig())
    with WebServer("127.0.0.1", 0, reader, lambda: LAYOUT, ZONE, FakeClock(NOW)) as server:
        browser.open(f"{server.url}/#Home/1001/day")
        message = browser.wait_for(
            "var e = document.getElementById('error'); return !e.hidden && e.textContent"
        )
        browser.screenshot("page-error.png")
    assert "does not exist yet" in message
    # The browser reports the 503 answers themselves; the page's script logged nothing.
    assert [e for e in browser.severe() if e.get("source") != "network"] == []


# -- the README's picture: a few days of the simulated household ---------------------------------

REALISTIC_NOW = datetime(2027, 6, 15, 23, 0, 30, tzinfo=UTC)  # 19:00 in the house's time zone


def household_names(model: UsageModel) -> dict[tuple[int, str], str]:
    """Series names as `useEmporiaChannelNames` writes them: circuits by Emporia's names."""
    return {
        (spec.device_gid, num): name
        if num.isdigit() and name
        else oracle.DEFAULT_NAMES[(spec.device_gid, num)]
        for spec in model.scenario.devices
        for num, name, _chart in model.device_channels(spec.device_gid)
    }


def household_layout(model: UsageModel) -> Layout:
    names = household_names(model)
    devices = []
    for spec in model.scenario.devices:
        channels = tuple(
            ChannelEntry(
                num,
                names[(spec.device_gid, num)],
                "mains" if num == "1,2,3" else "circuit" if num.isdigit() else "computed",
            )
            for num, _name, _chart in model.device_channels(spec.device_gid)
        )
        parent = None if spec.parent_gid is None else str(spec.parent_gid)
        devices.append(DeviceEntry(str(spec.device_gid), spec.name, "", parent, channels))
    return (AccountEntry(ACCOUNT, tuple(devices)),)


def test_screenshot_of_the_simulated_household(browser: Browser, tmp_path: Path) -> None:
    """Three days of the default simulator household; the picture is docs/images/graphs.png."""
    model = UsageModel(Scenario.default(), seed=1)
    layout = household_layout(model)
    names = household_names(model)
    end = int(REALISTIC_NOW.timestamp()) // MINUTE * MINUTE
    points = []
    mains: dict[int, float] = {}
    for t in range(end - 3 * DAY, end, MINUTE):
        start = datetime.fromtimestamp(t, UTC)
        for device in layout[0].devices:
            for num, kwh in model.device_values(int(device.id), "1MIN", start).items():
                if kwh is None:
                    continue
                watts = kwh * 60_000.0  # a kWh in a minute is 60 kW
                name = names[(int(device.id), num)]
                points.append(Point(ACCOUNT, "", name, Scale.MINUTE, start, watts))
                if name == "Main Panel":
                    mains[t] = watts
    db = tmp_path / "vuegraf.sqlite"
    sink = SqliteSink(db, TagConfig(), add_station=False)
    sink.open()
    try:
        sink.write(points)
    finally:
        sink.close()
    reader = SqliteGraphReader(db, TagConfig())
    clock = FakeClock(REALISTIC_NOW)
    with WebServer("127.0.0.1", 0, reader, lambda: layout, ZONE, clock) as server:
        open_view(browser, server.url, "1001", "day")
        browser.screenshot("graphs.png")
        drawn_times, data = drawn(browser, "Main Panel")
    day_start = (int(REALISTIC_NOW.timestamp()) // 60 + 1) * 60 - DAY
    assert drawn_times == list(range(day_start, day_start + DAY, 60))
    assert_series(data[0], [mains.get(t) for t in drawn_times], "Main Panel day mean")
    no_console_errors(browser)

