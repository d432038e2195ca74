"""--resetdatabase on every store: it deletes vuegraf's measurement and says how much."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from vuegraf.cli import reset_database
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.model import Point, Scale
from vuegraf.sinks.factory import build_sinks, build_store
from vuegraf.sinks.queue import QueuedSink

T = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
ACCOUNTS = [{"name": "Home", "email": "e@x", "password": "pw"}]


def points(n):
    return [Point("Home", "P", "C", Scale.MINUTE, T + timedelta(minutes=i), 1.0) for i in range(n)]


def test_reset_sqlite_deletes_rows_and_logs_count(tmp_path, caplog):
    config = parse_config({"accounts": ACCOUNTS}, tmp_path / "vuegraf.json")
    sink = build_store(config)
    sink.open()
    sink.write(points(7))
    sink.close()
    with caplog.at_level(logging.WARNING, logger="vuegraf"):
        reset_database(config, FakeClock(T))
    assert "deleted 7 points of measurement energy_usage from sqlite" in caplog.text
    sink.open()
    assert sink.last_times("Home", Scale.MINUTE, T - timedelta(days=1), T + timedelta(days=1)) == {}
    sink.close()


@pytest.mark.integration
def test_reset_influxdb_v1_drops_the_series(influxdb_v1_db, tmp_path, caplog):
    server, database = influxdb_v1_db
    config = parse_config(
        {"influxDb": {"host": server.host, "port": server.port, "database": database},
         "accounts": ACCOUNTS},
        tmp_path / "vuegraf.json",
    )
    sink = build_store(config)
    sink.open()
    sink.write(points(5))
    sink.close()
    with caplog.at_level(logging.WARNING, logger="vuegraf"):
        reset_database(config, FakeClock(T))
    assert "deleted 5 points" in caplog.text
    assert list(server.client(database).query("SELECT * FROM energy_usage").get_points()) == []


class FakeInflux2(BaseHTTPRequestHandler):
    """A local stand-in for InfluxDB 2's delete API, which no server here speaks
    (VictoriaMetrics answers it 400), so this call is untested against a real server (see
    README, "Stores"). It records each request for the test to check."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        url = urlparse(self.path)
        FakeInflux2.requests.append(
            {"path": url.path, "query": parse_qs(url.query), "body": body.decode(),
             "auth": self.headers.get("Authorization")}
        )
        if url.path == "/api/v2/delete":
            self.send_response(204)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_influx2():
    FakeInflux2.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeInflux2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def v2_config(url, tmp_path):
    return parse_config(
        {"influxDb": {"version": 2, "url": url, "org": "home", "bucket": "energy",
                      "token": "tok-123"}, "accounts": ACCOUNTS},
        tmp_path / "vuegraf.json",
    )


def test_reset_influxdb_v2_calls_the_delete_api(fake_influx2, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vuegraf"):
        reset_database(v2_config(fake_influx2, tmp_path), FakeClock(T))
    (req,) = FakeInflux2.requests
    assert req["path"] == "/api/v2/delete"
    assert req["query"]["bucket"] == ["energy"] and req["query"]["org"] == ["home"]
    assert req["auth"] == "Token tok-123"
    body = json.loads(req["body"])
    assert body["predicate"] == '_measurement="energy_usage"'
    assert body["start"].startswith("1970-01-01T00:00:00")
    assert body["stop"].startswith("2026-11-23T20:00:00")
    assert "deleted measurement energy_usage from influxdb-v2" in caplog.text
    assert "tok-123" not in caplog.text


def test_reset_also_deletes_the_retry_queue(tmp_path, caplog):
    config = parse_config({"accounts": ACCOUNTS}, tmp_path / "vuegraf.json")
    queued = build_sinks(config)[0]
    assert isinstance(queued, QueuedSink) and config.state_dir is not None
    queued.open()
    queued.queue.push(points(3))  # as if the store had been down
    queued.close()
    queue_file = config.state_dir / "queue-sqlite.sqlite"
    assert queue_file.exists()
    with caplog.at_level(logging.WARNING, logger="vuegraf"):
        reset_database(config, FakeClock(T))
    assert not queue_file.exists()
    assert "deleted the retry queue" in caplog.text
