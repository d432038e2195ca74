"""MqttSink against a real Mosquitto: exact messages, auth, outages, overflow, TLS, retained.

A subscriber (paho) records what the broker really delivered; payloads are compared as JSON.
Tests that stop a broker or need special settings start their own; the session broker is
only used with a topic of the test's own.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.subscriber import Subscriber, retained
from harness.tcpproxy import TcpProxy
from servers import MosquittoServer, MosquittoTlsServer, free_ports, poll_until, require_binary
from vuegraf.config import MqttConfig, TagConfig
from vuegraf.model import Point, Scale
from vuegraf.sinks.mqtt import MqttSink
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
FAST = (0.2, 1.0)  # reconnect delays for tests where the broker stays up


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.02)


def minute(i: int, channels: dict[str, float], account: str = "Home") -> list[Point]:
    t = T0 + timedelta(minutes=i)
    return [Point(account, "Main Panel", ch, Scale.MINUTE, t, w) for ch, w in channels.items()]


def message(i: int, channel: str, watts: float, **extra: object) -> dict[str, object]:
    """The upstream message for minute `i` (README.md, "MQTT")."""
    epoch = int((T0 + timedelta(minutes=i)).timestamp())
    msg: dict[str, object] = {
        "account": "Home",
        "device_name": channel,
        "usage_watts": watts,
        "epoch_s": epoch,
        "detailed": "False",
    }
    msg.update(extra)
    return msg


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for sub in made:
        sub.close()


@pytest.fixture
def sinks() -> Iterator[list[MqttSink]]:
    made: list[MqttSink] = []
    yield made
    for sink in made:
        sink.close()


def open_sink(
    sinks: list[MqttSink],
    cfg: MqttConfig,
    stats: Stats | None = None,
    add_station: bool = False,
    tags: TagConfig | None = None,
    reconnect_delays: tuple[float, float] = FAST,
    close_timeout: float = 3.0,
) -> MqttSink:
    """An open sink, closed by the fixture; sinks meant to fail get a short close_timeout."""
    sink = MqttSink(
        cfg,
        tags or TagConfig(),
        add_station,
        stats,
        reconnect_delays=reconnect_delays,
        close_timeout=close_timeout,
    )
    sink.open()
    sinks.append(sink)
    return sink


def unique_topic() -> str:
    return f"test-{uuid.uuid4().hex[:8]}/energy_usage"


# --- plain, anonymous and with a password -------------------------------------------------


def test_messages_exactly_as_upstream(
    mosquitto: MosquittoServer, sinks: list[MqttSink], subscribers: list[Subscriber]
) -> None:
    topic = unique_topic()
    sub = Subscriber(mosquitto.port, topic)
    subscribers.append(sub)
    stats = Stats()
    sink = open_sink(sinks, MqttConfig(mosquitto.host, mosquitto.port, topic=topic), stats, True)
    wait_until(lambda: sink.connected, what="connection")
    assert stats.snapshot().mqtt_connected is True

    hour = Point("Home", "Main Panel", "Kitchen", Scale.HOUR, T0, 999.0)
    second = Point("Home", "Main Panel", "Kitchen", Scale.SECOND, T0, 5.0)
    sink.write(
        minute(1, {"Kitchen": 120.5, "Dryer": 0.0})
        + minute(0, {"Kitchen": 100.0, "Dryer": 3000.0})  # older: not published
        + [hour, second]
    )
    sink.write([hour])  # no minute point: nothing to publish
    sink.write(minute(2, {"Kitchen": 7.25}))
    got = sub.take(3)
    assert [(r.topic, r.retain) for r in got] == [(topic, False)] * 3
    assert [r.json() for r in got] == [
        message(1, "Kitchen", 120.5, station="Main Panel"),
        message(1, "Dryer", 0.0, station="Main Panel"),
        message(2, "Kitchen", 7.25, station="Main Panel"),
    ]
    assert isinstance(got[1].json()["usage_watts"], float)
    sub.nothing_more()
    assert stats.snapshot().sink_points == {("mqtt", "written"): 3}


def test_renamed_tag_value_and_no_station(
    mosquitto: MosquittoServer, sinks: list[MqttSink], subscribers: list[Subscriber]
) -> None:
    topic = unique_topic()
    sub = Subscriber(mosquitto.port, topic)
    subscribers.append(sub)
    tags = TagConfig(name="scale", minute="Minute")
    sink = open_sink(sinks, MqttConfig(mosquitto.host, mosquitto.port, topic=topic), tags=tags)
    sink.write(minute(0, {"Oven": 42.0}))  # before the connection is up: kept, then sent
    (got,) = sub.take(1)
    assert got.json() == {**message(0, "Oven", 42.0), "detailed": "Minute"}


def test_password_protected_broker(
    sinks: list[MqttSink], subscribers: list[Subscriber], caplog: pytest.LogCaptureFixture
) -> None:
    broker = MosquittoServer(
        require_binary("mosquitto"),
        users={"vue": "mqtt-pw", "reader": "reader-pw"},
        passwd_binary=require_binary("mosquitto_passwd"),
    )
    with broker:
        topic = unique_topic()
        sub = Subscriber(broker.port, topic, "reader", "reader-pw")
        subscribers.append(sub)
        good = MqttConfig(broker.host, broker.port, "vue", "mqtt-pw", topic=topic)
        bad = MqttConfig(broker.host, broker.port, "vue", "wrong-pw", topic=topic)
        with caplog.at_level(logging.DEBUG, logger="vuegraf.sinks.mqtt"):
            ok_sink = open_sink(sinks, good)
            bad_sink = open_sink(sinks, bad, close_timeout=0.1)
            ok_sink.write(minute(0, {"Oven": 1.5}))
            bad_sink.write(minute(0, {"Oven": 666.0}))
            (got,) = sub.take(1)
            assert got.json() == message(0, "Oven", 1.5)
            wait_until(lambda: count_logged(caplog, "refused") >= 3, what="three refusals")
        assert not bad_sink.connected and bad_sink.pending == 1
        sub.nothing_more()
        refusals = [r for r in caplog.records if "refused" in r.getMessage()]
        assert [r.levelno for r in refusals if r.levelno > logging.DEBUG] == [logging.ERROR]
        assert "wrong-pw" not in caplog.text


def test_unreachable_broker_never_blocks(
    sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    (port,) = free_ports(1)  # nobody listens there
    stats = Stats()
    with caplog.at_level(logging.DEBUG, logger="vuegraf.sinks.mqtt"):
        sink = MqttSink(
            MqttConfig("127.0.0.1", port, max_pending=50),
            TagConfig(),
            False,
            stats,
            reconnect_delays=(0.1, 0.2),
        )
        sink.open()
        for i in range(200):
            sink.write(minute(i, {"Oven": float(i)}))
        assert sink.pending == 50
        wait_until(lambda: count_logged(caplog, "cannot connect") >= 3, what="three attempts")
        ends_within(sink.close, 60, "close() of a sink whose broker is unreachable")
    points = stats.snapshot().sink_points
    assert points[("mqtt", "dropped")] == 150 + 50  # overflow, then undelivered at shutdown
    assert stats.snapshot().mqtt_connected is False
    cannot = [
        r
        for r in caplog.records
        if "cannot connect" in r.getMessage() and r.levelno > logging.DEBUG
    ]
    assert len(cannot) == 1
    assert sum("dropping the oldest" in m for m in caplog.messages) == 1
    assert "50 messages not delivered before shutdown" in caplog.text


# --- the broker goes away and comes back ----------------------------------------------------


def test_a_silent_broker_never_blocks_collection(
    mosquitto: MosquittoServer, sinks: list[MqttSink]
) -> None:
    """A broker that takes the connection and never answers it: `write` must return without
    waiting for it. The proxy never answers for as long as the test waits (a minute), and
    paho waits for the CONNACK for 1.5 keepalives (15 min here), so a write that waited on
    the connection could only end by failing the deadline."""
    with TcpProxy(mosquitto.port) as proxy:
        proxy.hold()
        sink = open_sink(
            sinks, MqttConfig("127.0.0.1", proxy.port, max_pending=50, keepalive=600),
            close_timeout=0.1,
        )
        wait_until(lambda: proxy.accepted >= 1, what="the connection attempt")

        def collect() -> None:
            for i in range(200):
                sink.write(minute(i, {"Oven": float(i)}))

        ends_within(collect, 60, "200 writes while the broker is silent")
        assert not sink.connected
        assert sink.pending == 50


def count_logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def ends_within(fn: Callable[[], None], timeout: float, what: str) -> None:
    """Run `fn` in a thread; fail if it has not returned after `timeout` s (a hang)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as err:  # re-raised in the test's thread
            errors.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{what} did not return within {timeout} s"
    if errors:
        raise errors[0]


# --- the broker goes away and comes back ----------------------------------------------------


@pytest.fixture
def broker() -> Iterator[MosquittoServer]:
    with MosquittoServer(require_binary("mosquitto")) as server:
        yield server


@pytest.fixture
def proxy(broker: MosquittoServer) -> Iterator[TcpProxy]:
    """The sink's way to the broker, cut and restored by the test (subscribers go direct)."""
    with TcpProxy(broker.port) as made:
        yield made


def outage(proxy: TcpProxy, sink: MqttSink, minutes: range, restart: MosquittoServer | None = None
           ) -> None:
    """Cut the sink off and write `minutes` while it is away (with `restart`, the broker is
    also restarted meanwhile). The sink cannot reconnect until the test calls
    `proxy.forward()`, so subscribers are always listening before it does."""
    proxy.cut()
    wait_until(lambda: not sink.connected, what="the sink to notice")
    if restart is not None:
        restart.kill()
        restart.start()  # same port
    for i in minutes:
        sink.write(minute(i, {"Oven": 10.0 * i}))
    assert not sink.connected


def test_broker_restart_delivers_what_was_pending_in_order(
    broker: MosquittoServer,
    proxy: TcpProxy,
    sinks: list[MqttSink],
    subscribers: list[Subscriber],
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = unique_topic()
    stats = Stats()
    first = Subscriber(broker.port, topic)
    subscribers.append(first)
    with caplog.at_level(logging.INFO, logger="vuegraf.sinks.mqtt"):
        sink = open_sink(
            sinks,
            MqttConfig("127.0.0.1", proxy.port, topic=topic),
            stats,
            reconnect_delays=(0.2, 1.0),
        )
        sink.write(minute(0, {"Oven": 0.0}))
        assert [r.json() for r in first.take(1)] == [message(0, "Oven", 0.0)]
        # The broker's acknowledgement must be back before the link is cut: a QoS 1 message
        # whose PUBACK the cut swallowed is rightly sent again after it.
        poll_until(
            lambda: [info.is_published() for info in sink._in_flight],
            all,
            timeout=30.0,
            interval=0.02,
            describe=lambda acked: f"minute 0 not acknowledged by the broker: {acked}",
        )

        outage(proxy, sink, range(1, 6), restart=broker)
        sub = Subscriber(broker.port, topic)  # the restarted broker forgot the first one
        subscribers.append(sub)
        assert sink.pending == 5
        assert stats.snapshot().mqtt_connected is False
        proxy.forward()
        got = sub.take(5)
        assert [r.json() for r in got] == [message(i, "Oven", 10.0 * i) for i in range(1, 6)]
        assert stats.snapshot().mqtt_connected is True
        sink.write(minute(6, {"Oven": 60.0}))
        assert [r.json() for r in sub.take(1)] == [message(6, "Oven", 60.0)]
    sub.nothing_more()
    assert stats.snapshot().sink_points == {("mqtt", "written"): 7}
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    lost = [m for level, m in lines if "lost" in m]
    assert len(lost) == 1 and lines[[m for _, m in lines].index(lost[0])][0] == "WARNING"
    assert (
        "INFO",
        f"MQTT connected to 127.0.0.1:{proxy.port} again; sending 5 pending messages",
    ) in lines


def test_overflow_while_away_drops_the_oldest_and_counts(
    broker: MosquittoServer,
    proxy: TcpProxy,
    sinks: list[MqttSink],
    subscribers: list[Subscriber],
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = unique_topic()
    stats = Stats()
    sub = Subscriber(broker.port, topic)
    subscribers.append(sub)
    with caplog.at_level(logging.INFO, logger="vuegraf.sinks.mqtt"):
        sink = open_sink(
            sinks,
            MqttConfig("127.0.0.1", proxy.port, topic=topic, max_pending=3),
            stats,
            reconnect_delays=(0.2, 1.0),
        )
        wait_until(lambda: sink.connected, what="connection")
        outage(proxy, sink, range(1, 9))  # 8 minutes, room for 3
        assert sink.pending == 3
        proxy.forward()
        got = sub.take(3)
    assert [r.json() for r in got] == [message(i, "Oven", 10.0 * i) for i in (6, 7, 8)]
    sub.nothing_more()
    assert stats.snapshot().sink_points == {("mqtt", "dropped"): 5, ("mqtt", "written"): 3}
    assert sum("dropping the oldest" in m for m in caplog.messages) == 1


# --- retained per-channel topics and availability -------------------------------------------


def test_per_channel_retained_topics_for_a_late_subscriber(
    mosquitto: MosquittoServer, sinks: list[MqttSink], subscribers: list[Subscriber]
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}/power"
    topic = unique_topic()
    cfg = MqttConfig(
        mosquitto.host, mosquitto.port, topic=topic, per_channel_topics=True, topic_prefix=prefix
    )
    sink = MqttSink(cfg, TagConfig(), False)
    sink.open()
    sink.write(minute(0, {"Kitchen": 1.0, "Pool/Spa #2": 2.0}))
    sink.write(minute(1, {"Kitchen": 11.5, "Pool/Spa #2": 0.0}))
    sink.write(minute(1, {"Heat+Pump": 700.0}, account="A/B"))
    sink.close()  # delivered before close returns

    late = Subscriber(mosquitto.port, f"{prefix}/#")
    subscribers.append(late)
    got = {r.topic: (r.payload, r.retain) for r in late.take(4)}
    # The newest minute of each channel (T0 + 1 min: 20:01 UTC), as README.md's "MQTT" shows
    # it, byte for byte; and the availability topic, left at offline by the clean close.
    assert got == {
        f"{prefix}/Home/Main Panel/Kitchen": (
            '{"value": 11.5, "unit": "W", "time": "2026-11-23T20:01:00Z"}',
            True,
        ),
        f"{prefix}/Home/Main Panel/Pool_Spa _2": (
            '{"value": 0.0, "unit": "W", "time": "2026-11-23T20:01:00Z"}',
            True,
        ),
        f"{prefix}/A_B/Main Panel/Heat_Pump": (
            '{"value": 700.0, "unit": "W", "time": "2026-11-23T20:01:00Z"}',
            True,
        ),
        f"{prefix}/status": ("offline", True),
    }
    late.nothing_more()


def test_availability_online_offline_and_the_last_will(
    broker: MosquittoServer,
    proxy: TcpProxy,
    sinks: list[MqttSink],
    subscribers: list[Subscriber],
) -> None:
    """`online` when connected and again after every reconnect; `offline` from the broker
    (the last will) when the link breaks without a goodbye, and from vuegraf on close.
    A configured availabilityTopic is used as given; the status messages are not counted
    as points."""
    status = f"test-{uuid.uuid4().hex[:8]}/bridge/state"
    topic = unique_topic()
    live = Subscriber(broker.port, status)
    data = Subscriber(broker.port, topic)
    subscribers.extend([live, data])
    stats = Stats()
    cfg = MqttConfig("127.0.0.1", proxy.port, topic=topic, availability_topic=status)
    sink = open_sink(sinks, cfg, stats, reconnect_delays=(0.2, 1.0))

    assert [r.payload for r in live.take(1)] == ["online"]
    assert retained(broker.port, status).payload == "online"

    proxy.cut()  # the broker sees the TCP connection end, with no DISCONNECT: the will
    assert [r.payload for r in live.take(1)] == ["offline"]
    assert retained(broker.port, status).payload == "offline"

    proxy.forward()  # the sink reconnects by itself
    assert [r.payload for r in live.take(1)] == ["online"]
    assert retained(broker.port, status).payload == "online"
    # (Data only on a link that stays up: a QoS 1 message whose ack a cut link lost is sent
    # again on reconnect, and may then arrive twice.)
    sink.write(minute(0, {"Oven": 5.0}))
    assert [r.json() for r in data.take(1)] == [message(0, "Oven", 5.0)]

    sink.close()
    assert [r.payload for r in live.take(1)] == ["offline"]
    assert retained(broker.port, status).payload == "offline"
    live.nothing_more()
    data.nothing_more()
    assert stats.snapshot().sink_points == {("mqtt", "written"): 1}


# --- TLS ------------------------------------------------------------------------------------


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(
        [require_binary("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def issue(cwd: Path, name: str, subject: str, extensions: str) -> None:
    """A P-256 key and a certificate for it signed by the test CA."""
    (cwd / f"{name}.ext").write_text(extensions)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(cwd, "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
    openssl(
        cwd,
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        f"{name}.crt",
        "-extfile",
        f"{name}.ext",
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed CA, a server certificate for "localhost" only, a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl(
        d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=vuegraf test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    common = "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    issue(
        d, "server", "/CN=localhost",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n{common}",
    )  # fmt: skip
    issue(
        d, "client", "/CN=vuegraf",
        f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage=clientAuth\n{common}",
    )  # fmt: skip
    return d


def tls_broker(pki: Path, require_certificate: bool = False) -> MosquittoTlsServer:
    return MosquittoTlsServer(
        require_binary("mosquitto"),
        cafile=pki / "ca.crt",
        certfile=pki / "server.crt",
        keyfile=pki / "server.key",
        require_certificate=require_certificate,
    )


def test_tls_with_own_ca(
    pki: Path,
    sinks: list[MqttSink],
    subscribers: list[Subscriber],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="vuegraf.sinks.mqtt")
    with tls_broker(pki) as broker:
        topic = unique_topic()
        sub = Subscriber(broker.port, topic)  # listens on the plain listener
        subscribers.append(sub)

        def tls(host: str, **kwargs: Any) -> MqttConfig:
            return MqttConfig(host, broker.tls_port, topic=topic, tls=True, **kwargs)

        verified = open_sink(sinks, tls("localhost", ca_file=pki / "ca.crt"))
        system_cas = open_sink(sinks, tls("localhost"), close_timeout=0.1)  # does not know our CA
        wrong_name = open_sink(sinks, tls("127.0.0.1", ca_file=pki / "ca.crt"), close_timeout=0.1)
        insecure = open_sink(sinks, tls("127.0.0.1", ca_file=pki / "ca.crt", insecure=True))
        for n, sink in enumerate((verified, system_cas, wrong_name, insecure)):
            sink.write(minute(n, {"Oven": float(n)}))
        got = sorted((r.json() for r in sub.take(2)), key=lambda m: m["epoch_s"])
        assert got == [message(0, "Oven", 0.0), message(3, "Oven", 3.0)]
        for host in ("localhost", "127.0.0.1"):
            where = f"MQTT broker {host}:{broker.tls_port}: cannot connect"

            def failed(where: str = where) -> bool:
                return count_logged(caplog, where) >= 1

            wait_until(failed, what=where)
        assert (system_cas.connected, wrong_name.connected) == (False, False)
        sub.nothing_more()


def test_tls_client_certificate(
    pki: Path, sinks: list[MqttSink], subscribers: list[Subscriber]
) -> None:
    with tls_broker(pki, require_certificate=True) as broker:
        topic = unique_topic()
        sub = Subscriber(broker.port, topic)
        subscribers.append(sub)
        base = MqttConfig(
            "localhost", broker.tls_port, topic=topic, tls=True, ca_file=pki / "ca.crt"
        )
        with_cert = open_sink(
            sinks,
            MqttConfig(
                **{**base.__dict__, "cert_file": pki / "client.crt", "key_file": pki / "client.key"}
            ),
        )
        without = open_sink(sinks, base, close_timeout=0.1)
        with_cert.write(minute(0, {"Oven": 1.0}))
        without.write(minute(1, {"Oven": 2.0}))
        assert [r.json() for r in sub.take(1)] == [message(0, "Oven", 1.0)]
        # The broker refuses it (under TLS 1.3 possibly only after the client thinks the
        # handshake is done): it is never connected, and its message never arrives.
        assert not without.connected
        sub.nothing_more()
