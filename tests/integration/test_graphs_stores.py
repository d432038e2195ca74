"""The graph readers of every store give the same numbers: a real InfluxDB 1.x, a real
VictoriaMetrics (read through its Prometheus API) and the embedded SQLite store.

The same points go into each through vuegraf's own sinks; the expected buckets, sums and
newest points are worked out here from the points themselves, and `read_graph` must draw the
same graph from all three stores for each view.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vuegraf.config import Config, TagConfig, parse_config
from vuegraf.graphs.cli import main as graph_main
from vuegraf.graphs.data import read_graph
from vuegraf.graphs.layout import ChannelEntry, DeviceEntry
from vuegraf.graphs.read import Bucket, GraphReader, SqliteGraphReader
from vuegraf.graphs.remote import RemoteGraphReader
from vuegraf.graphs.store import reader_for
from vuegraf.graphs.views import VIEWS
from vuegraf.model import Point, Scale
from vuegraf.sinks.factory import build_store
from vuegraf.sinks.sqlite import SqliteSink

pytestmark = pytest.mark.integration

STATION = "Main Panel"
CHANNELS = ("Main Panel", "Kitchen Oven")  # a space: regex and quoting must keep it literal
NOW = datetime(2026, 3, 2, 23, 59, 30, tzinfo=UTC)  # the day view's last bucket: 23:59
DAY_END = int(datetime(2026, 3, 3, tzinfo=UTC).timestamp())
MINUTES_FROM = DAY_END - 3 * 3600  # minute points: the last three hours of the day
GAP = range(DAY_END - 90 * 60, DAY_END - 70 * 60, 60)  # an outage: 20 minutes missing
HOURS_FROM = DAY_END - 40 * 86_400  # hour points: the 40 days before the minutes


def minute_watts(channel: int, t: int) -> float:
    return 100.0 * (channel + 1) + (t // 60) % 7 * 10.5


def hour_watts(channel: int, t: int) -> float:
    return 1000.0 * (channel + 1) + (t // 3600) % 5 * 25.25


def points(account: str) -> list[Point]:
    out = []
    for i, channel in enumerate(CHANNELS):
        for t in range(MINUTES_FROM, DAY_END, 60):
            if t not in GAP:
                at = datetime.fromtimestamp(t, UTC)
                out.append(Point(account, STATION, channel, Scale.MINUTE, at, minute_watts(i, t)))
        for t in range(HOURS_FROM, MINUTES_FROM, 3600):
            at = datetime.fromtimestamp(t, UTC)
            out.append(Point(account, STATION, channel, Scale.HOUR, at, hour_watts(i, t)))
    return out


def stored(account: str, scale: Scale, start: int, end: int) -> dict[tuple[str, str], list]:
    """(time, watts) of each series' points of `scale` in [start, end)."""
    got: dict[tuple[str, str], list] = {}
    for p in points(account):
        t = int(p.time.timestamp())
        if p.scale is scale and start <= t < end:
            got.setdefault((STATION, p.channel), []).append((t, p.watts))
    return got


def expected_buckets(account: str, scale: Scale, start: int, end: int, step: int):
    out: dict[tuple[str, str], dict[int, Bucket]] = {}
    for key, rows in stored(account, scale, start, end).items():
        groups: dict[int, list[float]] = {}
        for t, w in rows:
            groups.setdefault(start + (t - start) // step * step, []).append(w)
        out[key] = {
            b: Bucket(min(ws), sum(ws) / len(ws), max(ws)) for b, ws in groups.items()
        }
    return out


def config(tmp_path: Path, influx: dict | None) -> Config:
    return parse_config(config_data(tmp_path, influx), tmp_path / "vuegraf.json")


def config_data(tmp_path: Path, influx: dict | None) -> dict:
    data: dict = {
        "accounts": [{"name": "x", "email": "me@example.com", "password": "pw"}],
        "addStationField": True,
        "sqlitePath": str(tmp_path / "store.sqlite"),
    }
    if influx is not None:
        data["influxDb"] = influx
    return data


def write(cfg: Config, account: str) -> None:
    sink = build_store(cfg) if cfg.influx is not None else SqliteSink(
        cfg.sqlite_path, cfg.tags, True
    )
    sink.open()
    try:
        sink.write(points(account))
    finally:
        sink.close()


@pytest.fixture
def stores(influxdb_v1_db, victoria_metrics, tmp_path: Path) -> Iterator[tuple[str, dict]]:
    account = f"graphs-{uuid.uuid4().hex[:8]}"
    server, database = influxdb_v1_db
    influx_cfg = config(
        tmp_path,
        {"version": 1, "host": server.host, "port": server.port, "database": database},
    )
    vm_cfg = config(
        tmp_path,
        {"version": 2, "url": victoria_metrics.url, "org": "o", "bucket": "b", "token": "t"},
    )
    sqlite_cfg = config(tmp_path, None)
    for cfg in (influx_cfg, vm_cfg, sqlite_cfg):
        write(cfg, account)
    wanted = len(points(account))
    victoria_metrics.export_until(
        lambda rows: sum(len(r["values"]) for r in rows) >= wanted,
        timeout=30.0,
        match=f'{{__name__="energy_usage_usage",account_name="{account}"}}',
    )
    configs["influxdb"] = config_data(
        tmp_path, {"version": 1, "host": server.host, "port": server.port, "database": database}
    )
    configs["victoria"] = config_data(
        tmp_path,
        {"version": 2, "url": victoria_metrics.url, "org": "o", "bucket": "b", "token": "t"},
    )
    configs["sqlite"] = config_data(tmp_path, None)
    readers = {
        "influxdb": reader_for(influx_cfg),
        "victoria": reader_for(vm_cfg),
        "sqlite": reader_for(sqlite_cfg),
    }
    try:
        yield account, readers
    finally:
        for reader in readers.values():
            reader.close()


def close_enough(got: dict, want: dict) -> bool:
    """Bucket maps equal, means to a millionth of a watt (each store sums in its own order)."""
    if got.keys() != want.keys():
        return False
    for key, buckets in want.items():
        if got[key].keys() != buckets.keys():
            return False
        for b, w in buckets.items():
            g = got[key][b]
            if (g.low, g.high) != (w.low, w.high):
                return False
            if abs(g.mean - w.mean) > 1e-6:
                return False
    return True


WINDOWS = [
    # scale, start, end, step: a day of minutes (the gap shows), 10-minute buckets of several
    # points each, hours, 12-hour buckets of hour points, and a window not aligned to its step
    (Scale.MINUTE, DAY_END - 86_400, DAY_END, 60),
    (Scale.MINUTE, DAY_END - 7 * 86_400, DAY_END, 600),
    (Scale.HOUR, DAY_END - 30 * 86_400, DAY_END, 3600),
    (Scale.HOUR, DAY_END - 365 * 86_400, DAY_END, 43_200),
    (Scale.MINUTE, MINUTES_FROM + 420, DAY_END - 60, 900),
]


def test_every_store_answers_the_buckets_sums_and_newest_points_the_points_give(stores):
    account, readers = stores
    keys = [(STATION, c) for c in CHANNELS]
    for name, reader in readers.items():
        for scale, start, end, step in WINDOWS:
            want = expected_buckets(account, scale, start, end, step)
            got = reader.buckets(account, scale, keys, start, end, step)
            assert close_enough(got, want), (name, scale, start, end, step)
            assert close_enough(reader.buckets(account, scale, None, start, end, step), want)
            # The planted gap is no bucket at all.
            if step == 60:
                assert not any(t in got[keys[0]] for t in GAP), name
            sums = reader.sums(account, scale, keys, start, end)
            want_sums = {k: sum(w for _t, w in rows) for k, rows in stored(
                account, scale, start, end).items()}
            assert sums.keys() == want_sums.keys(), name
            assert all(abs(sums[k] - want_sums[k]) < 1e-6 for k in want_sums), name
            newest = reader.latest(account, scale, keys[1:], start, end)
            want_newest = {k: max(rows) for k, rows in stored(account, scale, start, end).items()
                           if k == keys[1]}
            assert newest == want_newest, name
        # A window with no points answers nothing, not zeros.
        assert reader.buckets(account, Scale.MINUTE, keys, GAP[0], GAP[-1] + 60, 60) == {}
        assert reader.sums(account, Scale.MINUTE, keys, GAP[0], GAP[-1] + 60) == {}


def test_each_store_lists_its_series(stores):
    account, readers = stores
    for name, reader in readers.items():
        assert isinstance(reader, RemoteGraphReader | SqliteGraphReader)
        listing = reader.series()
        assert sorted(listing[account]) == sorted((STATION, c) for c in CHANNELS), name
        assert reader.series(account).keys() == {account}, name


def test_read_graph_draws_the_same_graph_from_every_store_for_each_view(stores):
    account, readers = stores
    device = DeviceEntry(
        "1", STATION, STATION, None,
        (ChannelEntry("1,2,3", CHANNELS[0], "mains"), ChannelEntry("4", CHANNELS[1], "circuit")),
    )
    for view in VIEWS.values():
        graphs = {name: read_graph(r, account, device, view, NOW).to_json()
                  for name, r in readers.items()}
        assert graphs["influxdb"] == graphs["sqlite"], view.name
        assert graphs["victoria"] == graphs["sqlite"], view.name
        drawn = [v for s in graphs["sqlite"]["series"] for v in s["mean"] if v is not None]
        assert drawn, view.name  # each view draws something
    day = read_graph(readers["victoria"], account, device, VIEWS["day"], NOW)
    times = day.times
    for t in GAP:
        assert day.series[1].mean[times.index(t)] is None  # the outage is drawn as a gap
    before = GAP[0] - 60
    assert day.series[1].mean[times.index(before)] == pytest.approx(minute_watts(1, before))


# The configs of the three stores of the running test, for `vuegraf-graph`.
configs: dict[str, dict] = {}


def test_vuegraf_graph_draws_the_same_files_from_every_store(stores, tmp_path: Path):
    account, _readers = stores
    (tmp_path / "state").mkdir()
    layout = [{"name": account, "devices": [{
        "id": "1", "name": STATION, "station": STATION, "parent": None,
        "channels": [{"num": "1,2,3", "name": CHANNELS[0], "kind": "mains"},
                     {"num": "4", "name": CHANNELS[1], "kind": "circuit"}]}]}]
    (tmp_path / "state" / "layout.json").write_text(json.dumps(layout))
    drawn = {}
    for name, data in configs.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**data, "stateDir": "state"}))
        path.chmod(0o600)
        out = tmp_path / f"svg-{name}"
        assert graph_main([str(path), "--svg", str(out), "--now", NOW.isoformat()]) == 0
        drawn[name] = {p.relative_to(out): p.read_text() for p in sorted(out.rglob("*.svg"))}
    assert len(drawn["sqlite"]) == 4  # one device, four views
    assert drawn["influxdb"] == drawn["sqlite"]
    assert drawn["victoria"] == drawn["sqlite"]


def test_the_readers_are_typed_as_graph_readers(tmp_path: Path):
    reader: GraphReader = reader_for(config(tmp_path, None))
    assert isinstance(reader, SqliteGraphReader)
    assert reader.tags == TagConfig()
