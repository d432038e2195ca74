"""Shared pytest fixtures.

Add new fixtures under a section comment of their own; keep server start-up code in servers.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from harness.testtime import TestTime
from servers import InfluxV1Server, MosquittoServer, VictoriaMetricsServer, require_binary

# ---------------------------------------------------------------------------------------------
# Real servers (see servers.py and shared/design/SERVERS.md).
#
# One of each per test session, started on first use on a free loopback port with a temp data
# dir, and stopped at the end. Without the binary a test skips, except under CI=true where it
# fails. Tests that stop, kill or reconfigure a server start their own instance instead of
# using these.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def influxdb_v1() -> Iterator[InfluxV1Server]:
    """A running InfluxDB 1.x without authentication, shared by the session."""
    with InfluxV1Server(require_binary("influxd")) as server:
        yield server


@pytest.fixture
def influxdb_v1_db(influxdb_v1: InfluxV1Server) -> Iterator[tuple[InfluxV1Server, str]]:
    """A fresh, uniquely named database in the session InfluxDB: (server, database name).

    The database is dropped afterwards (unless the test left the server stopped).
    """
    name = f"test_{uuid.uuid4().hex[:12]}"
    client = influxdb_v1.client()
    try:
        client.create_database(name)
        yield influxdb_v1, name
        if influxdb_v1.is_running():
            client.drop_database(name)
    finally:
        client.close()


@pytest.fixture(scope="session")
def victoria_metrics() -> Iterator[VictoriaMetricsServer]:
    """A running VictoriaMetrics (InfluxDB 2 write API at ``.url``), shared by the session."""
    with VictoriaMetricsServer(require_binary("victoria-metrics")) as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoServer]:
    """A running Mosquitto broker that allows anonymous clients, shared by the session."""
    with MosquittoServer(require_binary("mosquitto")) as server:
        yield server


# ---------------------------------------------------------------------------------------------
# Wall-clock runs at any date (see harness/testtime.py).
#
# A test that runs vuegraf on the wall clock against the simulator takes `test_time`: the
# simulator gets `test_time.now`, the vuegraf child `test_time.vuegraf(...)`. With
# VUEGRAF_TEST_START set, every such test starts at that instant; `-m realclock` selects them.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def test_time() -> TestTime:
    """Now, or VUEGRAF_TEST_START: taken when the test starts, then running at normal speed."""
    return TestTime.from_env()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "test_time" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realclock)
