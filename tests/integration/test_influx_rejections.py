"""Writes InfluxDB refuses until the user fixes something are queued, then replayed.

A real InfluxDB 1.x with authentication (its own instance: the tests add users and rights).
Points go through the production sink stack (`build_sinks`: the InfluxDB v1 sink behind the
durable retry queue in the state directory):
- 401, a wrong password: queued; the user corrects the password and starts vuegraf again,
  which replays what the first process queued on disk;
- 403, a user with READ but not WRITE on the database: queued; after GRANT WRITE, replayed;
- 404, a database that does not exist and that the user may not create: queued; after the
  admin creates it (and grants WRITE), replayed.
Each time every point ends up in InfluxDB with its value, and nothing was dropped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from servers import InfluxV1Server
from vuegraf.clock import FakeClock
from vuegraf.config import Config, parse_config
from vuegraf.model import Point, Scale
from vuegraf.sinks.base import StoreReadError
from vuegraf.sinks.factory import build_sinks, build_store
from vuegraf.sinks.queue import QueuedSink
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

T = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
DATABASE = "vue"
USER = "vuegraf"
PASSWORD = "right-password"
CHANNELS = ("Kitchen", "Dryer", "Main Panel")


def points() -> list[Point]:
    """Ten minutes of three channels, each with a value of its own."""
    return [
        Point("Home", "Main Panel", channel, Scale.MINUTE, T + timedelta(minutes=m),
              1000.0 * m + 10.0 * n + 0.25)
        for m in range(10)
        for n, channel in enumerate(CHANNELS)
    ]


def expected() -> set[tuple[str, int, float]]:
    start = int(T.timestamp())
    return {
        (channel, start + 60 * m, 1000.0 * m + 10.0 * n + 0.25)
        for m in range(10)
        for n, channel in enumerate(CHANNELS)
    }


def stored(server: InfluxV1Server) -> set[tuple[str, int, float]]:
    client = server.client(DATABASE)
    try:
        result = client.query('SELECT "usage", "device_name" FROM "energy_usage"', epoch="s")
    finally:
        client.close()
    return {(row["device_name"], row["time"], row["usage"]) for row in result.get_points()}


def config(server: InfluxV1Server, tmp_path: Path, user: str, password: str) -> Config:
    return parse_config(
        {
            "influxDb": {
                "host": server.host,
                "port": server.port,
                "database": DATABASE,
                "user": user,
                "pass": password,
                "timeout": 5000,
            },
            "accounts": [{"name": "Home", "email": "me@example.com", "password": "pw"}],
            "stateDir": "state",
        },
        tmp_path / "vuegraf.json",
    )


def open_queued(cfg: Config, stats: Stats) -> QueuedSink:
    (sink,) = build_sinks(cfg, stats=stats, clock=FakeClock(T), mqtt=False)
    assert isinstance(sink, QueuedSink)
    sink.open()
    return sink


def write_and_check_queued(
    sink: QueuedSink, stats: Stats, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vuegraf"):
        batch = points()
        sink.write(batch[:15])
        sink.write(batch[15:])
    assert sink.backlog == 30
    snapshot = stats.snapshot()
    assert snapshot.sink_points[("influxdb-v1", "queued")] == 30
    assert ("influxdb-v1", "rejected") not in snapshot.sink_points
    assert ("influxdb-v1", "dropped") not in snapshot.sink_points
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"({status})" in errors[0], errors
    assert "queuing points until it is back" in errors[0]


def assert_replayed(
    sink: QueuedSink,
    stats: Stats,
    server: InfluxV1Server,
    caplog: pytest.LogCaptureFixture,
    said: str,
) -> None:
    with caplog.at_level(logging.INFO, logger="vuegraf"):
        assert sink.flush(max_seconds=None) is True
    assert sink.backlog == 0
    assert stats.snapshot().sink_points[("influxdb-v1", "replayed")] == 30
    assert stored(server) == expected()
    assert said in caplog.text


def test_wrong_password_401_is_queued_and_replayed_after_the_fix(
    influxdb_v1_auth: InfluxV1Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    influx = influxdb_v1_auth  # its own server: the test adds users and rights
    influx.admin(f"CREATE DATABASE {DATABASE}")
    influx.admin(f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}'")
    influx.admin(f"GRANT ALL ON {DATABASE} TO {USER}")
    stats = Stats()
    sink = open_queued(config(influx, tmp_path, USER, "wrong-password"), stats)
    write_and_check_queued(sink, stats, 401, caplog)
    sink.close()
    assert stored(influx) == set()

    # The user fixes the password and starts vuegraf again: the new process finds the
    # points the first one queued on disk, and replays them.
    caplog.clear()
    fixed = open_queued(config(influx, tmp_path, USER, PASSWORD), stats)
    assert fixed.backlog == 30
    assert_replayed(
        fixed, stats, influx, caplog, "replayed 30 points queued by an earlier run"
    )
    fixed.close()


def test_user_without_write_right_403_is_queued_and_replayed_after_grant(
    influxdb_v1_auth: InfluxV1Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    influx = influxdb_v1_auth  # its own server: the test adds users and rights
    influx.admin(f"CREATE DATABASE {DATABASE}")
    influx.admin(f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}'")
    influx.admin(f"GRANT READ ON {DATABASE} TO {USER}")
    stats = Stats()
    sink = open_queued(config(influx, tmp_path, USER, PASSWORD), stats)
    write_and_check_queued(sink, stats, 403, caplog)
    assert stored(influx) == set()

    caplog.clear()
    influx.admin(f"GRANT WRITE ON {DATABASE} TO {USER}")
    assert_replayed(sink, stats, influx, caplog, "replayed 30 queued points")
    sink.close()


def test_missing_database_404_is_queued_and_replayed_once_it_exists(
    influxdb_v1_auth: InfluxV1Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    influx = influxdb_v1_auth  # its own server: the test adds users and rights
    influx.admin(f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}'")  # no admin right
    cfg = config(influx, tmp_path, USER, PASSWORD)

    # The start-up read back, before any write, says it could not read: not that a write
    # was rejected. (InfluxDB 1.x checks the read right before the database: a 403.)
    store = build_store(cfg)
    store.open()
    try:
        with pytest.raises(StoreReadError) as info:
            store.last_times("Home", Scale.MINUTE, T - timedelta(days=7), T)
    finally:
        store.close()
    assert info.value.retryable
    assert str(info.value).startswith("InfluxQL /query: HTTP 403: error authorizing query")
    assert "write" not in str(info.value)

    stats = Stats()
    sink = open_queued(cfg, stats)
    with caplog.at_level(logging.WARNING, logger="vuegraf"):
        write_and_check_queued(sink, stats, 404, caplog)
    assert "cannot create database vue" in caplog.text  # tried once, a warning
    assert "database not found" in caplog.text

    caplog.clear()
    influx.admin(f"CREATE DATABASE {DATABASE}")
    influx.admin(f"GRANT WRITE ON {DATABASE} TO {USER}")
    assert_replayed(sink, stats, influx, caplog, "replayed 30 queued points")
    sink.close()
