"""The embedded SQLite store: round-trip, and a rewrite of the same point replaces it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from vuegraf.config import TagConfig
from vuegraf.model import Point, Scale
from vuegraf.sinks.sqlite import SqliteSink

T = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


def rows(path):
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT account_name, device_name, station_name, detailed, time, usage "
            "FROM energy_usage ORDER BY time, device_name, detailed"
        ).fetchall()


def test_round_trip_all_scales(tmp_path):
    path = tmp_path / "sub" / "store.sqlite"
    sink = SqliteSink(path, TagConfig(), add_station=False)
    sink.open()
    points = [
        Point("Home", "Panel", "Kitchen", Scale.MINUTE, T, 123.5),
        Point("Home", "Panel", "Kitchen", Scale.SECOND, T, 99.0),
        Point("Home", "Panel", "Kitchen", Scale.HOUR, T, 1500.0),
        Point("Home", "Panel", "Panel", Scale.DAY, T + timedelta(hours=4, seconds=59), 24000.0),
    ]
    sink.write(points)
    sink.close()
    assert rows(path) == [
        ("Home", "Kitchen", "", "False", int(T.timestamp()), 123.5),
        ("Home", "Kitchen", "", "Hour", int(T.timestamp()), 1500.0),
        ("Home", "Kitchen", "", "True", int(T.timestamp()), 99.0),
        ("Home", "Panel", "", "Day", int(T.timestamp()) + 4 * 3600 + 59, 24000.0),
    ]


def test_same_point_written_twice_stays_one_point(tmp_path):
    path = tmp_path / "store.sqlite"
    sink = SqliteSink(path, TagConfig(), add_station=True)
    sink.open()
    sink.write([Point("Home", "Panel", "Kitchen", Scale.MINUTE, T, 100.0)])
    sink.write([Point("Home", "Panel", "Kitchen", Scale.MINUTE, T, 100.0)])
    sink.write([Point("Home", "Panel", "Kitchen", Scale.MINUTE, T, 250.0)])  # corrected value
    sink.close()
    assert rows(path) == [("Home", "Kitchen", "Panel", "False", int(T.timestamp()), 250.0)]


def test_station_is_part_of_identity_only_with_add_station(tmp_path):
    a = Point("Home", "Panel A", "Pump", Scale.MINUTE, T, 1.0)
    b = Point("Home", "Panel B", "Pump", Scale.MINUTE, T, 2.0)
    with_station = SqliteSink(tmp_path / "a.sqlite", TagConfig(), add_station=True)
    with_station.open()
    with_station.write([a, b])
    with_station.close()
    assert len(rows(tmp_path / "a.sqlite")) == 2
    # Without station_name InfluxDB sees one series, and so does the store: last write wins.
    without = SqliteSink(tmp_path / "b.sqlite", TagConfig(), add_station=False)
    without.open()
    without.write([a, b])
    without.close()
    assert [r[5] for r in rows(tmp_path / "b.sqlite")] == [2.0]


def test_reopen_keeps_data(tmp_path):
    path = tmp_path / "store.sqlite"
    for value in (1.0, 2.0):
        sink = SqliteSink(path, TagConfig(), add_station=False)
        sink.open()
        sink.write([Point("Home", "P", "C", Scale.MINUTE, T + timedelta(minutes=value), value)])
        sink.close()
    assert [r[5] for r in rows(path)] == [1.0, 2.0]
