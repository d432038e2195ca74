"""An InfluxDB outage loses nothing: real InfluxDB 1.x killed and restarted under a QueuedSink.

Virtual time: each "minute" is one write call with that minute's points. The test starts its
own server, because it kills it (the session one is shared with other tests).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from servers import InfluxV1Server, require_binary
from vuegraf.clock import FakeClock
from vuegraf.config import InfluxV1Config, TagConfig
from vuegraf.model import Point, Scale
from vuegraf.sinks.influx import InfluxV1Sink
from vuegraf.sinks.queue import DurableQueue, QueuedSink
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
CHANNELS = ("Kitchen", "Dryer", "Main Panel")
DATABASE = "vue"


@pytest.fixture
def influx() -> Iterator[InfluxV1Server]:
    with InfluxV1Server(require_binary("influxd")) as server:
        yield server


def minute(i: int) -> list[Point]:
    t = T0 + timedelta(minutes=i)
    return [
        Point("Home", "Main Panel", ch, Scale.MINUTE, t, 1000.0 * i + n + 0.25)
        for n, ch in enumerate(CHANNELS)
    ]


def make_sink(
    server: InfluxV1Server, queue_path: Path, stats: Stats, clock: FakeClock
) -> QueuedSink:
    cfg = InfluxV1Config(host=server.host, port=server.port, database=DATABASE, timeout_ms=3000)
    inner = InfluxV1Sink(cfg, TagConfig(), add_station=False)
    sink = QueuedSink(inner, DurableQueue(queue_path, 10_000, stats, inner.name), stats, clock)
    sink.open()
    return sink


def stored(server: InfluxV1Server) -> list[tuple[str, str, float]]:
    client = server.client(DATABASE)
    try:
        result = client.query(
            'SELECT "usage", "device_name" FROM "energy_usage" WHERE "detailed" = \'False\''
        )
    finally:
        client.close()
    return sorted((row["time"], row["device_name"], row["usage"]) for row in result.get_points())


def expected(first: int, last: int) -> list[tuple[str, str, float]]:
    return sorted(
        (p.time.strftime("%Y-%m-%dT%H:%M:%SZ"), p.channel, p.watts)
        for i in range(first, last + 1)
        for p in minute(i)
    )


def test_outage_and_restart_lose_nothing_and_duplicate_nothing(
    influx: InfluxV1Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue_path = tmp_path / "state" / "influxdb-v1.queue.sqlite"
    stats = Stats()
    clock = FakeClock(T0)
    sink = make_sink(influx, queue_path, stats, clock)

    with caplog.at_level(logging.INFO, logger="vuegraf.sinks.queue"):
        for i in range(0, 5):  # minutes 0-4 go straight in
            sink.write(minute(i))
            clock.advance(60)
        assert stored(influx) == expected(0, 4)

        influx.kill()  # SIGKILL: an outage
        for i in range(5, 12):  # seven minutes of outage
            sink.write(minute(i))
            clock.advance(60)
        assert sink.backlog == 7 * 3

        # vuegraf itself restarts during the outage: a new process finds the queue on disk.
        sink.close()
        sink = make_sink(influx, queue_path, stats, clock)
        for i in range(12, 15):
            sink.write(minute(i))
            clock.advance(60)
        assert sink.backlog == 10 * 3

        influx.start()  # same port, same data
        for i in range(15, 18):
            sink.write(minute(i))
            clock.advance(60)
        assert sink.backlog == 0
        assert sink.flush() is True
        sink.close()

    # Every minute exactly once (InfluxDB would merge a duplicate; the count proves none is
    # missing and nothing landed twice as a separate series or time).
    assert stored(influx) == expected(0, 17)
    points = stats.snapshot().sink_points
    assert points[("influxdb-v1", "queued")] == 10 * 3
    assert points[("influxdb-v1", "replayed")] == 10 * 3
    assert points[("influxdb-v1", "written")] == 8 * 3
    assert ("influxdb-v1", "dropped") not in points
    assert stats.snapshot().queue_depth == {"influxdb-v1": 0}

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    recoveries = [r.getMessage() for r in caplog.records if "recovered" in r.getMessage()]
    # One ERROR for the outage in each process, one recovery line with the replayed count.
    assert len(errors) == 2
    assert all("queuing points" in r.getMessage() for r in errors)
    assert len(recoveries) == 1
    assert "replayed 30 queued points" in recoveries[0]
