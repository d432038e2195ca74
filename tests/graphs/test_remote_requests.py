"""What the graph readers send where no real server can run here (InfluxDB 2/3), and the
quoting that keeps names literal. A local HTTP server records each request and plays an
answer; the values read back come from that answer's literals."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from vuegraf.config import parse_config
from vuegraf.graphs.read import Bucket
from vuegraf.graphs.remote import _series_key_tags, metricsql_regex_literal
from vuegraf.graphs.store import reader_for
from vuegraf.model import Scale

INFLUXQL_BUCKETS = (
    b'{"results":[{"statement_id":0,"series":[{"name":"energy_usage","tags":'
    b'{"device_name":"Kitchen","station_name":"Panel"},"columns":["time","low","mean","high"],'
    b'"values":[[1772409600,10,20.5,31],[1772410200,null,null,null]]}]}]}'
)


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, dict[str, list[str]], str | None]]]]:
    seen: list[tuple[str, dict[str, list[str]], str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            seen.append((url.path, parse_qs(url.query), self.headers.get("Authorization")))
            body = INFLUXQL_BUCKETS if url.path == "/query" else b"404 page not found"
            self.send_response(200 if url.path == "/query" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def test_influxdb_2_is_read_through_its_1x_api_with_the_token_and_the_bucket_as_database(
    recorder, tmp_path: Path
):
    url, seen = recorder
    config = parse_config(
        {
            "influxDb": {
                "version": 2, "url": url, "org": "home", "bucket": "energy/autogen",
                "token": "tok-secret",
            },
            "accounts": [{"name": "Home", "email": "me@example.com", "password": "pw"}],
            "addStationField": True,
        },
        tmp_path / "vuegraf.json",
    )
    reader = reader_for(config)
    try:
        got = reader.buckets(
            "Home", Scale.MINUTE, [("Panel", "Kitchen")], 1772409600, 1772410800, 600
        )
    finally:
        reader.close()
    assert got == {("Panel", "Kitchen"): {1772409600: Bucket(10.0, 20.5, 31.0)}}
    assert len(seen) == 1
    path, params, auth = seen[0]
    assert path == "/query"
    assert auth == "Token tok-secret"
    assert params["db"] == ["energy"] and params["rp"] == ["autogen"]
    assert params["epoch"] == ["s"]
    query = params["q"][0]
    assert 'min("usage")' in query and 'max("usage")' in query and "count(" not in query
    assert '"account_name" = \'Home\'' in query and '"detailed" = \'False\'' in query
    assert '"device_name" = \'Kitchen\'' in query and '"station_name" = \'Panel\'' in query
    assert "time >= 1772409600s AND time < 1772410800s" in query
    assert 'GROUP BY time(600s), "device_name", "station_name" fill(none)' in query


@pytest.mark.parametrize(
    "name", ["Main Panel", "Oven (2)", "a.b*c+d?", "x|y", "[dry]{er}^$", "back\\slash", "é ü"]
)
def test_a_name_as_a_metricsql_regex_matches_exactly_itself(name: str):
    literal = metricsql_regex_literal(name)
    assert "\\ " not in literal  # Go's RE2 refuses an escaped space
    assert re.fullmatch(literal, name)
    assert not re.fullmatch(literal, name + "x")


def test_series_keys_are_split_on_unescaped_separators_only():
    key = r"energy_usage,account_name=My\ Home,device_name=A\,B\=C,station_name=Main\ Panel"
    assert _series_key_tags(key) == {
        "account_name": "My Home",
        "device_name": "A,B=C",
        "station_name": "Main Panel",
    }
