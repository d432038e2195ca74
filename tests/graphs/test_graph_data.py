"""Graphs, totals and live watts read back from a SQLite store whose rows the test chose.

The expected values come from the test's own arithmetic over the rows it wrote (a power that
is constant within each hour, so its energy over any span is a plain sum over minutes), never
from vuegraf's code.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from vuegraf.config import TagConfig
from vuegraf.graphs.data import read_graph, read_now, read_totals
from vuegraf.graphs.layout import ChannelEntry, DeviceEntry
from vuegraf.graphs.read import SqliteGraphReader
from vuegraf.graphs.views import VIEWS
from vuegraf.sinks.sqlite import SCHEMA

NOW = datetime(2027, 3, 10, 12, 34, 30, tzinfo=UTC)
T = int(NOW.timestamp())
ZONE = ZoneInfo("America/New_York")
ACCOUNT = "Home"
MINUTES_FROM = T - 7 * 86400  # minute points only for the last week, like Emporia's retention
HOURS_FROM = T - 400 * 86400
# 30 minutes the store has no minute for
GAP = range(T - T % 60 - 5 * 3600, T - T % 60 - 5 * 3600 + 30 * 60)
HOUR_LAG = 2 * 3600  # the newest two complete hours have no hour point yet


def power(channel: str, t: int) -> float:
    """Watts, constant within each UTC hour: an hour point equals its minutes' mean."""
    h = t // 3600
    base = {"Panel": 900.0, "Panel-1": 250.0, "Panel-Balance": 40.0}[channel]
    return base + 37.0 * (h % 11) - 5.5 * (h % 3)


CHANNELS = ("Panel", "Panel-1", "Panel-Balance")
DEVICE = DeviceEntry(
    "7",
    "Panel",
    "",
    None,
    (
        ChannelEntry("1,2,3", "Panel", "mains"),
        ChannelEntry("1", "Panel-1", "circuit"),
        ChannelEntry("Balance", "Panel-Balance", "computed"),
    ),
)


def minute_stored(t: int) -> bool:
    return MINUTES_FROM <= t < T - 60 and t not in GAP


def hour_stored(h: int) -> bool:
    return HOURS_FROM <= h and h + 3600 <= T - HOUR_LAG


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("graphs") / "vuegraf.sqlite"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    rows = []
    for channel in CHANNELS:
        for t in range(MINUTES_FROM - MINUTES_FROM % 60, T, 60):
            if minute_stored(t):
                rows.append((ACCOUNT, channel, "", "False", t, power(channel, t)))
        for h in range(HOURS_FROM - HOURS_FROM % 3600, T, 3600):
            if hour_stored(h):
                rows.append((ACCOUNT, channel, "", "Hour", h, power(channel, h)))
    # Another account's and another scale's rows must not leak in.
    rows.append(("Other", "Panel", "", "False", T - 600, 1e9))
    rows.append((ACCOUNT, "Panel", "", "True", T - 600, 1e9))
    db.executemany("INSERT INTO energy_usage VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    reader = SqliteGraphReader(path, TagConfig())
    yield reader
    reader.close()


def expected_bucket(channel: str, start: int, step: int, minutes_first: bool, hours: bool):
    """(mean, min, max) of the bucket: its stored minutes, else the hour points under it."""
    values = [power(channel, t) for t in range(start, start + step, 60) if minute_stored(t)]
    if values and minutes_first:
        return sum(values) / len(values), min(values), max(values)
    if hours:
        first = start - start % 3600
        hourly = [
            power(channel, h)
            for h in range(first, max(start + step, first + 3600), 3600)
            if hour_stored(h)
        ]
        if hourly:
            return sum(hourly) / len(hourly), min(hourly), max(hourly)
    return None


@pytest.mark.parametrize("name", ["day", "week", "month", "year"])
def test_every_bucket_is_what_the_store_holds(store, name):
    view = VIEWS[name]
    graph = read_graph(store, ACCOUNT, DEVICE, view, NOW)
    start, end = view.window(NOW)
    assert graph.times == list(range(start, end, view.step))
    assert start <= T < end
    assert [s.name for s in graph.series] == list(CHANNELS)
    minutes_first = name != "year"
    hours = name != "day"
    for series in graph.series:
        for i, t in enumerate(graph.times):
            want = expected_bucket(series.name, t, view.step, minutes_first, hours)
            got = series.mean[i], series.low[i], series.high[i]
            if want is None:
                assert got == (None, None, None), (name, series.name, t)
            else:
                assert got == pytest.approx(want, rel=1e-9), (name, series.name, t)


def test_an_outage_is_a_gap_in_the_day_view(store):
    graph = read_graph(store, ACCOUNT, DEVICE, VIEWS["day"], NOW, channels=["Panel"])
    (mains,) = graph.series
    index = {t: i for i, t in enumerate(graph.times)}
    assert all(mains.mean[index[t]] is None for t in range(GAP.start, GAP.stop, 60))
    assert mains.mean[index[GAP.start - 60]] == power("Panel", GAP.start - 60)
    assert mains.mean[index[GAP.stop]] == power("Panel", GAP.stop)
    assert graph.scales == ["minute"]


def test_month_view_falls_back_to_hours_where_no_minute_was_kept(store):
    graph = read_graph(store, ACCOUNT, DEVICE, VIEWS["month"], NOW, channels=["Panel-1"])
    (circuit,) = graph.series
    old = graph.times.index(T - T % 3600 - 20 * 86400)  # 20 days ago: hour points only
    assert circuit.mean[old] == power("Panel-1", graph.times[old])
    assert graph.scales == ["minute", "hour"]
    # The week's 10-minute buckets within an hour point take that hour's watts.
    week = read_graph(store, ACCOUNT, DEVICE, VIEWS["week"], NOW, channels=["Panel-1"])
    assert all(v is not None for v in week.series[0].mean[: 6 * 20])


def energy_kwh(channel: str, start: int, end: int) -> float:
    """Independent arithmetic: the power is constant within each hour, so a minute holds
    power/60 Wh wherever the store keeps it (minute or hour points)."""
    return sum(power(channel, t) / 60.0 for t in range(start, end, 60)) / 1000.0


def test_totals_are_sums_of_the_stored_energy(store):
    spans, rows = read_totals(store, ACCOUNT, DEVICE, NOW, ZONE)
    assert [p.name for p in spans] == ["today", "month", "year"]
    starts = {p.name: p.start for p in spans}
    # Local midnights in New York (EST, UTC-5, before the 2027-03-14 DST change).
    assert starts["today"] == int(datetime(2027, 3, 10, 5, tzinfo=UTC).timestamp())
    assert starts["month"] == int(datetime(2027, 3, 1, 5, tzinfo=UTC).timestamp())
    assert starts["year"] == int(datetime(2027, 1, 1, 5, tzinfo=UTC).timestamp())
    last_minute = T - T % 60 - 60  # the newest minute stored (the current one is not yet)
    for row in rows:
        for period, start in starts.items():
            # The outage's minutes lie in an hour whose hour point is stored: counted.
            want = energy_kwh(row.name, start, last_minute + 60)
            assert row.kwh[period] == pytest.approx(want, rel=1e-9), (row.name, period)


def test_live_watts_are_the_newest_minute(store):
    (entry,) = [
        c for c in read_now(store, ACCOUNT, [DEVICE], NOW) if c["name"] == "Panel-Balance"
    ]
    newest = T - T % 60 - 60
    assert entry == {
        "device": "7",
        "name": "Panel-Balance",
        "num": "Balance",
        "kind": "computed",
        "watts": power("Panel-Balance", newest),
        "time": newest,
    }
    # Ten minutes later nothing newer came: no live value rather than a stale one.
    later = datetime.fromtimestamp(T + 11 * 60, UTC)
    assert all(c["watts"] is None for c in read_now(store, ACCOUNT, [DEVICE], later))


def test_an_empty_or_missing_store_draws_nothing(tmp_path):
    db = sqlite3.connect(tmp_path / "empty.sqlite")
    db.executescript(SCHEMA)
    db.close()
    reader = SqliteGraphReader(tmp_path / "empty.sqlite", TagConfig())
    graph = read_graph(reader, ACCOUNT, DEVICE, VIEWS["year"], NOW)
    assert all(v is None for s in graph.series for v in s.mean)
    assert graph.scales == []
    reader.close()


KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30: local midnight is half past a UTC hour
HOLE = range(T - T % 3600 - 8 * 3600, T - T % 3600 - 5 * 3600, 3600)  # no hour points here
MINUTES_SINCE = T - T % 3600 - 2 * 86400


def test_totals_take_minutes_for_hours_whose_hour_point_is_missing(tmp_path):
    """Three hours lost their hour points (a failed hour fetch not yet backfilled) but kept
    their minutes; the newest two complete hours have no hour point yet; local midnight is
    half past an hour. Every minute stored counts once, in whichever scale holds it."""
    db = sqlite3.connect(tmp_path / "kolkata.sqlite")
    db.executescript(SCHEMA)
    rows = []
    for t in range(MINUTES_SINCE, T - T % 60, 60):
        rows.append((ACCOUNT, "Panel", "", "False", t, power("Panel", t)))
    for h in range(HOURS_FROM - HOURS_FROM % 3600, T - HOUR_LAG - 3600, 3600):
        if h not in HOLE:
            rows.append((ACCOUNT, "Panel", "", "Hour", h, power("Panel", h)))
    db.executemany("INSERT INTO energy_usage VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    reader = SqliteGraphReader(tmp_path / "kolkata.sqlite", TagConfig())
    mains = DeviceEntry("7", "Panel", "", None, (ChannelEntry("1,2,3", "Panel", "mains"),))
    spans, (row,) = read_totals(reader, ACCOUNT, mains, NOW, KOLKATA)
    reader.close()
    starts = {p.name: p.start for p in spans}
    # 2027-03-10 12:34:30 UTC is 18:04:30 in Kolkata: today began at 18:30 UTC the day before.
    assert starts["today"] == int(datetime(2027, 3, 9, 18, 30, tzinfo=UTC).timestamp())
    end = T - T % 60  # the newest stored minute ends here
    # Today lies within the stored minutes: all of it counts, the hole's hours included.
    assert row.kwh["today"] == pytest.approx(energy_kwh("Panel", starts["today"], end), rel=1e-9)
    assert starts["month"] < MINUTES_SINCE
    for period in ("month", "year"):
        # Before the stored minutes only whole hours are known: the half hour between local
        # midnight and the first whole hour has no point of its own and is not counted.
        first_hour = starts[period] - starts[period] % 3600 + 3600
        want = energy_kwh("Panel", first_hour, end)
        assert row.kwh[period] == pytest.approx(want, rel=1e-9), period
