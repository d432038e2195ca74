"""The graphs page's server in-process: what it refuses, and that the page never takes
collection down with it (busy, idle clients, a port in use, no device list yet)."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vuegraf.cli import start_web
from vuegraf.clock import FakeClock
from vuegraf.config import TagConfig, parse_config
from vuegraf.graphs import layout as layouts
from vuegraf.graphs.layout import AccountEntry, ChannelEntry, DeviceEntry, Layout
from vuegraf.graphs.read import SqliteGraphReader
from vuegraf.sinks.sqlite import SCHEMA
from vuegraf.web.server import MAX_REQUESTS, WebServer, is_loopback

NOW = datetime(2027, 5, 4, 10, 0, 30, tzinfo=UTC)
DEVICE = DeviceEntry("9", "Plug", "", None, (ChannelEntry("1,2,3", "Plug", "mains"),))
LAYOUT: Layout = (AccountEntry("Home", (DEVICE,)),)


def store(tmp_path: Path) -> SqliteGraphReader:
    db = sqlite3.connect(tmp_path / "vuegraf.sqlite")
    db.executescript(SCHEMA)
    db.close()
    return SqliteGraphReader(tmp_path / "vuegraf.sqlite", TagConfig())


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_a_loopback_page_without_a_password_answers_only_loopback_names(tmp_path):
    with WebServer("127.0.0.1", 0, store(tmp_path), lambda: LAYOUT, UTC, FakeClock(NOW)) as web:
        assert get(web.url + "/api/layout")[0] == 200  # Host: 127.0.0.1:<port>
        assert get(web.url + "/api/layout", {"Host": f"localhost:{web.port}"})[0] == 200
        # A site that points its own name at 127.0.0.1 (DNS rebinding) reads nothing.
        status, body = get(web.url + "/api/layout", {"Host": f"evil.example:{web.port}"})
        assert status == 421 and "localhost" in body["error"]


def test_with_a_password_the_host_name_is_free(tmp_path):
    web = WebServer(
        "127.0.0.1", 0, store(tmp_path), lambda: LAYOUT, UTC, FakeClock(NOW), ("u", "p")
    )
    with web:
        auth = {"Authorization": "Basic dTpw", "Host": "energy.home.arpa"}
        assert get(web.url + "/api/layout", auth)[0] == 200


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]")
    assert is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    assert not is_loopback("::") and not is_loopback("nas.local")


class SlowReader(SqliteGraphReader):
    """Holds every live-watts read until `release` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, TagConfig())
        self.release = threading.Event()
        self.inside = threading.Semaphore(0)

    def latest(self, *args: Any, **kwargs: Any) -> Any:
        self.inside.release()
        self.release.wait(60)
        return super().latest(*args, **kwargs)


def test_more_requests_than_it_serves_at_once_get_503_not_a_thread_each(tmp_path):
    store(tmp_path).close()
    reader = SlowReader(tmp_path / "vuegraf.sqlite")
    with WebServer("127.0.0.1", 0, reader, lambda: LAYOUT, UTC, FakeClock(NOW)) as web:
        answers: list[int] = []
        held = [
            threading.Thread(target=lambda: answers.append(get(web.url + "/api/now")[0]))
            for _ in range(MAX_REQUESTS)
        ]
        for thread in held:
            thread.start()
        for _ in held:
            assert reader.inside.acquire(timeout=30)  # every slot is taken
        status, body = get(web.url + "/api/now")
        assert status == 503 and "busy" in body["error"]
        reader.release.set()
        for thread in held:
            thread.join(timeout=30)
        assert answers == [200] * MAX_REQUESTS
        assert get(web.url + "/api/now")[0] == 200  # the slots came back


def test_an_idle_connection_is_closed_after_the_request_timeout(tmp_path):
    web = WebServer(
        "127.0.0.1", 0, store(tmp_path), lambda: LAYOUT, UTC, FakeClock(NOW), request_timeout=1
    )
    with web, socket.create_connection(("127.0.0.1", web.port)) as idle:
        idle.settimeout(30)
        started = time.monotonic()
        assert idle.recv(1) == b""  # the server hung up: no thread left waiting on it
        assert time.monotonic() - started < 25


def config(tmp_path: Path, web: dict[str, Any]) -> Any:
    return parse_config(
        {
            "accounts": [{"name": "Home", "email": "me@example.com", "password": "pw"}],
            "web": web,
            "stateDir": "state",
        },
        tmp_path / "vuegraf.json",
        environ={},
    )


def test_a_port_in_use_leaves_collection_running_without_the_page(tmp_path, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = config(tmp_path, {"port": port})
        with caplog.at_level(logging.ERROR):
            assert start_web(cfg, lambda: LAYOUT, FakeClock(NOW)) is None
    assert any(
        f"cannot listen on 127.0.0.1:{port}" in m and "without the graphs page" in m
        for m in caplog.messages
    )


def test_an_open_page_without_a_password_is_warned_about(tmp_path, caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = config(tmp_path, {"port": port, "address": "0.0.0.0"})
    with caplog.at_level(logging.WARNING):
        web = start_web(cfg, lambda: LAYOUT, FakeClock(NOW))
    assert web is not None
    web.stop()
    assert any("has no username and password" in m for m in caplog.messages)


def test_accounts_not_read_yet_keep_the_devices_an_earlier_run_saved(tmp_path):
    layouts.save(tmp_path, LAYOUT)
    saved = layouts.load(tmp_path)
    assert saved == LAYOUT
    not_read = (AccountEntry("Home", ()), AccountEntry("New", ()))
    assert layouts.with_fallback(not_read, saved) == (LAYOUT[0], AccountEntry("New", ()))
    # Saving a layout with no device at all leaves the file as it was.
    layouts.save(tmp_path, not_read)
    assert layouts.load(tmp_path) == LAYOUT
    read = (AccountEntry("Home", (DEVICE, DEVICE)),)
    assert layouts.with_fallback(read, saved) == read
