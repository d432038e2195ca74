"""The test servers themselves: each starts, answers, keeps its data over a restart."""

from __future__ import annotations

import queue
import re
import socket
import subprocess
import time
import uuid

import paho.mqtt.client as mqtt
import pytest
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS

import servers
from servers import InfluxV1Server, MosquittoServer, VictoriaMetricsServer, require_binary

integration = pytest.mark.integration


# -- require_binary (no server needed) --------------------------------------------------------


def test_require_binary_finds_an_installed_binary() -> None:
    assert require_binary("sh").endswith("/sh")


@pytest.mark.parametrize("value", ["true", "1"])
def test_require_binary_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="no-such-binary-vuegraf"):
        require_binary("no-such-binary-vuegraf")


@pytest.mark.parametrize("value", [None, "false", ""])
def test_require_binary_skips_outside_ci(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="no-such-binary-vuegraf"):
        require_binary("no-such-binary-vuegraf")


def test_require_root_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers.os, "geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="dockerd needs root; .* uid 1000"):
        servers.require_root("dockerd")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="dockerd needs root"):
        servers.require_root("dockerd")
    monkeypatch.setattr(servers.os, "geteuid", lambda: 0)
    servers.require_root("dockerd")  # root: nothing happens


def test_docker_client_prefers_debians(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    debian = tmp_path / "usr-bin-docker"
    debian.write_text("#!/bin/sh\n")
    debian.chmod(0o755)
    other = tmp_path / "path" / "docker"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", str(other.parent))
    monkeypatch.setattr(servers, "DEBIAN_DOCKER_CLIENT", str(debian))
    assert servers.docker_client() == str(debian)
    monkeypatch.setattr(servers, "DEBIAN_DOCKER_CLIENT", str(tmp_path / "missing"))
    assert servers.docker_client() == str(other)


# containerd's own rule for a namespace, as its error message states it
CONTAINERD_NAME = re.compile(r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")


@pytest.mark.parametrize(
    "temp_name",
    [
        "vuegraf-dockerd-_jqwz0w4",  # the name that failed a CI run
        "vuegraf-dockerd-abc_",
        "vuegraf-dockerd-a__b",
        "vuegraf-dockerd-x1y2",
    ],
)
def test_containerd_namespace_is_valid_for_any_temp_dir_name(temp_name: str) -> None:
    namespace = servers.containerd_namespace(temp_name)
    assert CONTAINERD_NAME.match(namespace), namespace
    assert CONTAINERD_NAME.match(f"{namespace}-plugins")
    assert namespace.startswith("vuegraf-dockerd-")


@integration
def test_unmount_under_finds_and_removes_nested_mounts(tmp_path) -> None:
    servers.require_root("mounting a tmpfs")
    outer = tmp_path / "a dir\twith space, tab"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    try:
        for point in (outer, inner):
            subprocess.run(["mount", "-t", "tmpfs", "none", str(point)], check=True)
            (point / "inner").mkdir(exist_ok=True)
        # The most recent mount first, with the escapes of /proc/self/mountinfo undone.
        assert servers.mounts_under(tmp_path) == [str(inner), str(outer)]
    finally:
        servers.unmount_under(tmp_path)
    assert servers.mounts_under(tmp_path) == []


# -- InfluxDB 1.x -----------------------------------------------------------------------------

POINTS = [
    {
        "measurement": "energy_usage",
        "tags": {"device_name": "A"},
        "time": "2023-11-14T22:13:20Z",
        "fields": {"usage": 1.5},
    },
    {
        "measurement": "energy_usage",
        "tags": {"device_name": "B"},
        "time": "2023-11-14T22:14:20Z",
        "fields": {"usage": 2.5},
    },
]


def _usage_by_device(client, database: str) -> dict[str, float]:
    result = client.query("SELECT usage, device_name FROM energy_usage", database=database)
    return {row["device_name"]: row["usage"] for row in result.get_points()}


@integration
def test_influxdb_v1_write_and_query(influxdb_v1_db: tuple[InfluxV1Server, str]) -> None:
    server, database = influxdb_v1_db
    client = server.client(database=database)
    try:
        assert client.write_points(POINTS)
        assert _usage_by_device(client, database) == {"A": 1.5, "B": 2.5}
    finally:
        client.close()


@integration
def test_influxdb_v1_databases_are_per_test(influxdb_v1_db: tuple[InfluxV1Server, str]) -> None:
    server, database = influxdb_v1_db
    client = server.client()
    try:
        names = {db["name"] for db in client.get_list_database()}
        assert database in names
        assert "_internal" not in names  # monitor store disabled
        assert _usage_by_device(client, database) == {}
    finally:
        client.close()


@integration
def test_influxdb_v1_restart_and_kill_keep_data_and_port() -> None:
    with InfluxV1Server(require_binary("influxd")) as server:
        port, data_dir = server.port, server.dir
        client = server.client(database="keep")
        client.create_database("keep")
        assert client.write_points(POINTS)

        first_pid = server.pid
        server.restart()
        assert (server.port, server.dir) == (port, data_dir)
        assert server.pid != first_pid
        assert _usage_by_device(client, "keep") == {"A": 1.5, "B": 2.5}

        server.kill()
        assert not server.is_running()
        with pytest.raises(OSError), socket.create_connection((server.host, port), timeout=1):
            pass
        server.start()  # back after the outage, same port and data
        assert server.port == port
        assert _usage_by_device(client, "keep") == {"A": 1.5, "B": 2.5}
        client.close()
    assert data_dir is not None and not data_dir.exists()
    assert not server.is_running()


@integration
def test_influxdb_v1_with_auth() -> None:
    from influxdb.exceptions import InfluxDBClientError

    with InfluxV1Server(require_binary("influxd"), auth=True) as server:
        anonymous = server.client(username=None, password=None)
        with pytest.raises(InfluxDBClientError) as error:
            anonymous.get_list_database()
        assert error.value.code == 401
        admin = server.client()
        admin.create_database("secured")
        assert {"name": "secured"} in admin.get_list_database()
        server.restart()  # the admin user is kept; it is not created twice
        assert {"name": "secured"} in admin.get_list_database()
        # `admin()` runs a statement as the admin user and fails on InfluxDB's refusal.
        server.admin("CREATE USER reader WITH PASSWORD 'reader-pw'")
        server.admin("GRANT READ ON secured TO reader")
        assert {"user": "reader", "admin": False} in admin.get_list_users()
        with pytest.raises(AssertionError, match="user not found"):
            server.admin("GRANT READ ON secured TO nobody")
        anonymous.close()
        admin.close()


# -- VictoriaMetrics --------------------------------------------------------------------------


@integration
def test_victoria_metrics_accepts_influxdb2_writes(
    victoria_metrics: VictoriaMetricsServer,
) -> None:
    device = f"A-{uuid.uuid4().hex[:8]}"  # the session server is shared: keep to our own series
    with InfluxDBClient(url=victoria_metrics.url, token="x", org="o") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="b", record=f"energy_usage,device_name={device} usage=1.5 1700000000000000000"
        )
    rows = victoria_metrics.export(match=f'{{__name__=~"energy_usage.*",device_name="{device}"}}')
    assert len(rows) == 1
    assert rows[0]["metric"] == {"__name__": "energy_usage_usage", "device_name": device}
    assert rows[0]["values"] == [1.5]
    assert rows[0]["timestamps"] == [1700000000000]

    victoria_metrics.delete_series(f'{{device_name="{device}"}}')
    assert victoria_metrics.export_now(f'{{device_name="{device}"}}') == []


@integration
def test_victoria_metrics_export_until_times_out(victoria_metrics: VictoriaMetricsServer) -> None:
    with pytest.raises(AssertionError, match="did not satisfy"):
        victoria_metrics.export_until(bool, timeout=0.2, match='{__name__="no_such_series"}')


# -- Mosquitto --------------------------------------------------------------------------------


def _connect(
    server: MosquittoServer, username: str | None = None, password: str | None = None
) -> tuple[mqtt.Client, mqtt.ReasonCode, queue.Queue]:
    """A started paho client and its CONNACK reason code; messages arrive in the queue."""
    connacks: queue.Queue = queue.Queue()
    messages: queue.Queue = queue.Queue()
    subacks: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex}")
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda _c, _u, _f, reason, _p: connacks.put(reason)
    client.on_message = lambda _c, _u, message: messages.put(message)
    client.on_subscribe = lambda _c, _u, _mid, reasons, _p: subacks.put(reasons)
    client.user_data_set(subacks)
    client.connect(server.host, server.port, keepalive=10)
    # Wait for CONNACK on this thread: a background loop would retry a refused connection.
    deadline = time.monotonic() + 5
    while connacks.empty() and time.monotonic() < deadline:
        client.loop(timeout=0.05)
    assert not connacks.empty(), f"no CONNACK from {server!r} within 5 s"
    reason = connacks.get_nowait()
    if not reason.is_failure:
        client.loop_start()
    return client, reason, messages


def _publish_and_receive(
    server: MosquittoServer, username: str | None = None, password: str | None = None
) -> None:
    topic = f"vuegraf/test/{uuid.uuid4().hex}"
    subscriber, reason, messages = _connect(server, username, password)
    publisher, reason2, _ = _connect(server, username, password)
    try:
        assert not reason.is_failure and not reason2.is_failure
        subscriber.subscribe(topic, qos=1)
        granted = subscriber.user_data_get().get(timeout=30)  # wait for SUBACK
        assert not granted[0].is_failure
        info = publisher.publish(topic, b'{"watts": 1.5}', qos=1)
        info.wait_for_publish(timeout=30)
        message = messages.get(timeout=30)
        assert (message.topic, message.payload) == (topic, b'{"watts": 1.5}')
    finally:
        for client in (subscriber, publisher):
            client.disconnect()
            client.loop_stop()


@integration
def test_mosquitto_anonymous_publish_subscribe(mosquitto: MosquittoServer) -> None:
    _publish_and_receive(mosquitto)


@integration
def test_mosquitto_with_password() -> None:
    broker = MosquittoServer(
        require_binary("mosquitto"),
        users={"user": "pass", "other": "secret"},
        passwd_binary=require_binary("mosquitto_passwd"),
    )
    with broker:
        _publish_and_receive(broker, "user", "pass")
        _publish_and_receive(broker, "other", "secret")
        for username, password in [("user", "wrong"), (None, None)]:
            client, reason, _ = _connect(broker, username, password)
            client.disconnect()
            assert reason.is_failure, (username, reason)


@integration
def test_start_retries_when_a_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    binary = require_binary("mosquitto")
    with socket.socket() as taken:
        taken.bind((servers.LOOPBACK, 0))
        taken.listen()
        offers = [[taken.getsockname()[1]]]
        real_free_ports = servers.free_ports
        monkeypatch.setattr(
            servers, "free_ports", lambda n=1: offers.pop() if offers else real_free_ports(n)
        )
        with MosquittoServer(binary) as broker:
            assert broker.port != taken.getsockname()[1]
            assert "already in use" in broker.log_tail().lower()


@integration
def test_start_failure_reports_the_log() -> None:
    server = VictoriaMetricsServer(require_binary("victoria-metrics"))
    server._command = lambda: [server.binary, "-no-such-flag"]  # type: ignore[method-assign]
    with pytest.raises(servers.ServerStartError, match="no-such-flag"):
        server.start()
    assert server.dir is None and not server.is_running()
