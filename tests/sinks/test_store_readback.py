"""The read back every store must get right: `last_times`, the newest stored time of each series.

One suite, every store vuegraf can read back from, each a real server answering the real
query (the expected times are literals written by this test):

- SQLite (the embedded store): its SELECT.
- InfluxDB v1 sink -> real InfluxDB 1.x: InfluxQL over `/query`, HTTP Basic when configured.
- InfluxDB v2 sink -> test proxy (`/api/v2/write` mapped to 1.x `/write`) -> real InfluxDB 1.x:
  the same InfluxQL over the same `/query`, sent with the v2 token, as InfluxDB 2's 1.x
  compatibility API and InfluxDB 3 take it. Once with a plain bucket, once with a bucket
  "db/rp" whose retention policy is not the database's default.
- InfluxDB v2 sink -> real VictoriaMetrics: VictoriaMetrics answers any `/query` with a canned
  reply, so the reader moves on to the Prometheus query API (MetricsQL tlast_over_time).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.influx2_proxy import Influx2Proxy
from servers import InfluxV1Server
from vuegraf.config import InfluxV1Config, InfluxV2Config, TagConfig
from vuegraf.model import Point, Scale
from vuegraf.sinks.base import SeriesStore, StoreReadError
from vuegraf.sinks.influx import InfluxV1Sink, InfluxV2Sink
from vuegraf.sinks.sqlite import SqliteSink

T = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
TOKEN = "readback-token"


def minute(n: int) -> datetime:
    return T + timedelta(minutes=n)


@dataclass
class Backend:
    """One store under test. `open(tags, add_station)` gives an open store (closed after the
    test); `settle()` makes what was written readable (VictoriaMetrics flushes its recent
    points); `reader` is the read API the store should be read through (logged once)."""

    make: Callable[[TagConfig, bool], SeriesStore]
    settle: Callable[[], None] = lambda: None
    reader: str = ""
    opened: list[SeriesStore] = field(default_factory=list)

    def open(self, tags: TagConfig, add_station: bool) -> SeriesStore:
        store = self.make(tags, add_station)
        store.open()
        self.opened.append(store)
        return store


BACKENDS = [
    "sqlite",
    pytest.param("influxdb-v1", marks=pytest.mark.integration),
    pytest.param("influxdb-v2 via /query on InfluxDB 1.x", marks=pytest.mark.integration),
    pytest.param("influxdb-v2 bucket db/rp via /query", marks=pytest.mark.integration),
    pytest.param("influxdb-v2 into VictoriaMetrics", marks=pytest.mark.integration),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind: str = request.param
    with ExitStack() as stack:
        if kind == "sqlite":
            result = Backend(lambda tags, station: SqliteSink(tmp_path / "s.db", tags, station))
        elif kind == "influxdb-v1":
            server, database = request.getfixturevalue("influxdb_v1_db")
            v1 = InfluxV1Config(host=server.host, port=server.port, database=database)
            result = Backend(
                lambda tags, station: InfluxV1Sink(v1, tags, station), reader="InfluxQL /query"
            )
        elif kind.startswith("influxdb-v2 ") and "/query" in kind:
            server, database = request.getfixturevalue("influxdb_v1_db")
            bucket = database
            if "db/rp" in kind:
                # Not the database's default policy: reads must name it, as writes do.
                client = server.client(database)
                client.create_retention_policy("longterm", "INF", 1, database, default=False)
                client.close()
                bucket = f"{database}/longterm"
            proxy = stack.enter_context(Influx2Proxy(server.url, TOKEN, writes="v1"))
            v2 = InfluxV2Config(url=proxy.url, org="home", bucket=bucket, token=TOKEN)
            result = Backend(
                lambda tags, station: InfluxV2Sink(v2, tags, station), reader="InfluxQL /query"
            )
        else:
            vm = request.getfixturevalue("victoria_metrics")
            direct = InfluxV2Config(url=vm.url, org="home", bucket="vuegraf", token=TOKEN)
            result = Backend(
                lambda tags, station: InfluxV2Sink(direct, tags, station),
                settle=vm.force_flush,
                reader="Prometheus API /api/v1/query",
            )
        yield result
        for store in result.opened:
            store.close()


@pytest.fixture
def account() -> str:
    """An account name of its own per test (VictoriaMetrics is shared by the session), with
    the characters InfluxQL and PromQL string literals must escape."""
    return f"Mom's \"Home\" {uuid.uuid4().hex[:8]}"


def test_newest_time_of_each_series_inside_since_until(
    backend: Backend, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.open(TagConfig(), False)
    other = account + " next door"
    store.write(
        [
            # Kitchen: minutes 0..4; the newest inside [minute(0), minute(5)) is minute 4.
            *[Point(account, "Panel", "Kitchen", Scale.MINUTE, minute(n), 100.0 + n)
              for n in range(5)],
            # ... and one exactly at `until`, which is not inside.
            Point(account, "Panel", "Kitchen", Scale.MINUTE, minute(5), 1.0),
            # Oven: only one point, exactly at `since`, which is inside.
            Point(account, "Panel", "Oven", Scale.MINUTE, minute(0), 2.0),
            # Dryer: only a point before `since`.
            Point(account, "Panel", "Dryer", Scale.MINUTE, minute(-1), 3.0),
            # Later points of another scale and of another account do not count.
            Point(account, "Panel", "Oven", Scale.HOUR, minute(3), 4.0),
            Point(other, "Panel", "Oven", Scale.MINUTE, minute(4), 5.0),
        ]
    )
    backend.settle()
    with caplog.at_level(logging.INFO, logger="vuegraf"):
        got = store.last_times(account, Scale.MINUTE, minute(0), minute(5))
    assert got == {("", "Kitchen"): minute(4), ("", "Oven"): minute(0)}
    assert store.last_times(account, Scale.HOUR, minute(0), minute(5)) == {("", "Oven"): minute(3)}
    assert store.last_times(other, Scale.MINUTE, minute(-10), minute(10)) == {
        ("", "Oven"): minute(4)
    }
    # `until` moves: what this process wrote after its start is not seen.
    assert store.last_times(account, Scale.MINUTE, minute(0), minute(3)) == {
        ("", "Kitchen"): minute(2),
        ("", "Oven"): minute(0),
    }
    if backend.reader:
        assert f"reading back through {backend.reader}" in caplog.text


def test_an_empty_store_or_window_has_no_series(backend: Backend, account: str) -> None:
    store = backend.open(TagConfig(), False)
    assert store.last_times(account, Scale.MINUTE, minute(-60), minute(60)) == {}
    store.write([Point(account, "Panel", "Kitchen", Scale.DAY, minute(0), 7.0)])
    backend.settle()
    assert store.last_times(account, Scale.DAY, minute(1), minute(60)) == {}
    assert store.last_times(account, Scale.DAY, minute(0), minute(1)) == {
        ("", "Kitchen"): minute(0)
    }


def test_with_station_names_two_devices_keep_their_own_series(
    backend: Backend, account: str
) -> None:
    store = backend.open(TagConfig(), True)
    store.write(
        [
            Point(account, "Main Panel", "Lights", Scale.SECOND, minute(1), 1.0),
            Point(account, "Main Panel", "Lights", Scale.SECOND, minute(2), 1.0),
            Point(account, "Garage Panel", "Lights", Scale.SECOND, minute(3), 1.0),
        ]
    )
    backend.settle()
    assert store.last_times(account, Scale.SECOND, minute(0), minute(10)) == {
        ("Main Panel", "Lights"): minute(2),
        ("Garage Panel", "Lights"): minute(3),
    }


def test_without_station_names_a_channel_is_one_series_whatever_its_stations(
    backend: Backend, account: str
) -> None:
    """A store written with addStationField on and read with it off: the newest of either."""
    with_station = backend.open(TagConfig(), True)
    with_station.write(
        [
            Point(account, "Main Panel", "Lights", Scale.MINUTE, minute(7), 1.0),
            Point(account, "Garage Panel", "Lights", Scale.MINUTE, minute(4), 1.0),
        ]
    )
    backend.settle()
    without = backend.open(TagConfig(), False)
    assert without.last_times(account, Scale.MINUTE, minute(0), minute(10)) == {
        ("", "Lights"): minute(7)
    }


def test_renamed_scale_tag_and_values(backend: Backend, account: str) -> None:
    tags = TagConfig(name="scale", second="sec", minute="min", hour="hr", day="dy")
    store = backend.open(tags, False)
    store.write(
        [
            Point(account, "Panel", "Kitchen", Scale.HOUR, minute(60), 1.0),
            Point(account, "Panel", "Kitchen", Scale.MINUTE, minute(90), 1.0),
        ]
    )
    backend.settle()
    assert store.last_times(account, Scale.HOUR, minute(0), minute(120)) == {
        ("", "Kitchen"): minute(60)
    }
    assert store.last_times(account, Scale.MINUTE, minute(0), minute(120)) == {
        ("", "Kitchen"): minute(90)
    }


def test_stored_times_are_every_point_of_each_series_inside_since_until(
    backend: Backend, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`stored_times` (what `vuegraf coverage` reads): each series' points in [since, until),
    oldest first, whatever order they were written in; holes stay holes."""
    store = backend.open(TagConfig(), True)
    kitchen = [0, 1, 2, 5, 7, 9]  # minutes 3, 4, 6 and 8 are holes
    store.write(
        [
            *[Point(account, "Panel", "Kitchen", Scale.MINUTE, minute(n), 10.0 + n)
              for n in reversed(kitchen)],
            Point(account, "Panel", "Kitchen", Scale.MINUTE, minute(10), 1.0),  # at `until`
            Point(account, "Panel", "Kitchen", Scale.MINUTE, minute(-1), 1.0),  # before since
            Point(account, "Garage", "Kitchen", Scale.MINUTE, minute(4), 2.0),  # other station
            Point(account, "Panel", "Panel-Balance", Scale.MINUTE, minute(3), -5.0),
            Point(account, "Panel", "Kitchen", Scale.HOUR, minute(0), 3.0),  # other scale
            Point(account + " next door", "Panel", "Kitchen", Scale.MINUTE, minute(3), 4.0),
        ]
    )
    backend.settle()
    with caplog.at_level(logging.INFO, logger="vuegraf"):
        got = store.stored_times(account, Scale.MINUTE, minute(0), minute(10))
    assert got == {
        ("Panel", "Kitchen"): [minute(n) for n in kitchen],
        ("Garage", "Kitchen"): [minute(4)],
        ("Panel", "Panel-Balance"): [minute(3)],
    }
    assert store.stored_times(account, Scale.HOUR, minute(0), minute(10)) == {
        ("Panel", "Kitchen"): [minute(0)]
    }
    assert store.stored_times(account, Scale.MINUTE, minute(20), minute(30)) == {}
    # Read with addStationField off: one series per channel, both stations' points.
    without = backend.open(TagConfig(), False)
    assert without.stored_times(account, Scale.MINUTE, minute(4), minute(6)) == {
        ("", "Kitchen"): [minute(4), minute(5)]
    }
    if backend.reader:
        assert f"reading back through {backend.reader}" in caplog.text


def test_stored_times_with_a_renamed_scale_tag(backend: Backend, account: str) -> None:
    tags = TagConfig(name="scale", second="sec", minute="min", hour="hr", day="dy")
    store = backend.open(tags, False)
    store.write(
        [
            Point(account, "Panel", "Kitchen", Scale.HOUR, minute(60), 1.0),
            Point(account, "Panel", "Kitchen", Scale.MINUTE, minute(90), 1.0),
            Point(account, "Panel", "Kitchen", Scale.MINUTE, minute(91), 1.0),
        ]
    )
    backend.settle()
    assert store.stored_times(account, Scale.HOUR, minute(0), minute(120)) == {
        ("", "Kitchen"): [minute(60)]
    }
    assert store.stored_times(account, Scale.MINUTE, minute(0), minute(120)) == {
        ("", "Kitchen"): [minute(90), minute(91)]
    }


# -- a database that does not exist (yet) -----------------------------------------------------


def v2_read_error(proxy: Influx2Proxy, bucket: str, token: str) -> StoreReadError:
    """The StoreReadError an InfluxDB v2 sink on `proxy` raises when it reads back."""
    cfg = InfluxV2Config(url=proxy.url, org="home", bucket=bucket, token=token)
    store = InfluxV2Sink(cfg, TagConfig(), False)
    store.open()
    try:
        with pytest.raises(StoreReadError) as info:
            store.last_times("Home", Scale.MINUTE, minute(-60), minute(0))
    finally:
        store.close()
    return info.value


@pytest.mark.integration
def test_v1_database_not_created_yet_reads_as_empty(influxdb_v1: InfluxV1Server) -> None:
    """The v1 sink creates its database at the first write: before it, nothing is stored,
    and that is an answer, not an error."""
    cfg = InfluxV1Config(host=influxdb_v1.host, port=influxdb_v1.port, database="not_yet_here")
    store = InfluxV1Sink(cfg, TagConfig(), False)
    store.open()
    try:
        assert store.stored_times("Home", Scale.MINUTE, minute(-60), minute(0)) == {}
        assert store.last_times("Home", Scale.MINUTE, minute(-60), minute(0)) == {}
    finally:
        store.close()


@pytest.mark.integration
def test_v2_bucket_without_database_is_a_read_error_worded_as_a_read(
    influxdb_v1: InfluxV1Server,
) -> None:
    """InfluxDB 2 answers `database not found` when a bucket has no DBRP mapping (before 2.7):
    that read cannot work by waiting (non-retryable), and it is not a rejected write."""
    with Influx2Proxy(influxdb_v1.url, TOKEN) as proxy:
        error = v2_read_error(proxy, "no_such_bucket", TOKEN)
    assert not error.retryable and not error.unsupported
    assert "no database 'no_such_bucket'" in str(error)
    assert "write" not in str(error)
    assert ("GET", "/query") in proxy.requests


@pytest.mark.integration
def test_v2_read_is_sent_with_the_token(influxdb_v1_db: tuple[InfluxV1Server, str]) -> None:
    """The proxy answers 401 to anything without `Authorization: Token <token>`: a wrong
    token is a retryable read error (fixed by the user), worded as a read."""
    server, database = influxdb_v1_db
    with Influx2Proxy(server.url, TOKEN) as proxy:
        error = v2_read_error(proxy, database, "wrong")
    assert error.retryable
    assert str(error).startswith("InfluxQL /query: HTTP 401")
    assert "wrong" not in str(error)
