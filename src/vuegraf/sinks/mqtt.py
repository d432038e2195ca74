"""MQTT: the newest minute value of each channel, in upstream vuegraf's message format.

Publishing never blocks collection. paho's network thread connects, reconnects
with backoff and does all socket work; `write` only puts messages in a bounded
in-memory queue and hands them to paho while connected. While the broker is
away the queue keeps the newest `maxPending` messages (the oldest are dropped
and counted); on reconnect they go out in order. QoS 1, so a message handed to
paho just before a connection drops is resent rather than lost.

With `perChannelTopics`, each channel's latest value is also published,
retained, on `<topicPrefix>/<account>/<device>/<channel>` as a small JSON
object: `{"value": 1234.5, "unit": "W", "time": "2026-11-30T21:49:00Z"}`, the
time being the start (UTC) of the minute the value averages. A dashboard that
subscribes late still sees every value at once, and can tell how old it is.
Only the newest value per topic is kept while disconnected: an older retained
value is of no use to anyone.

Availability: one retained topic (`availabilityTopic`, by default
`<topicPrefix>/status`) says `online` or `offline` for everything vuegraf
publishes. The broker holds `offline` as vuegraf's last will, sent for it when
the connection ends without a goodbye (crash, kill, network loss noticed after
1.5 keepalives); vuegraf publishes `online` on every (re)connect and `offline`
itself when it stops cleanly (a clean disconnect discards the will).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vuegraf import backoff
from vuegraf.config import MqttConfig, TagConfig
from vuegraf.model import Point, Scale, Unit
from vuegraf.sinks.base import CountsOwnPoints, LiveOnly, SinkError
from vuegraf.sinks.homeassistant import STATE_LEVEL, HomeAssistant
from vuegraf.statelog import StateLog
from vuegraf.stats import Stats

if TYPE_CHECKING:
    from paho.mqtt.client import (
        Client,
        ConnectFlags,
        DisconnectFlags,
        MQTTMessage,
        MQTTMessageInfo,
    )
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

logger = logging.getLogger(__name__)

QOS = 1
ONLINE = "online"
OFFLINE = "offline"
UNIT = "W"
CLOSE_TIMEOUT = 3.0  # seconds close() may wait to deliver what is pending
STOP_WAIT = 0.5  # seconds close() then waits for paho's network thread to end
# Characters with a meaning in topics: a name containing them would create extra levels or
# wildcards (and a wildcard in a published topic makes the broker drop the connection).
_TOPIC_UNSAFE = str.maketrans({"/": "_", "+": "_", "#": "_", "\0": "_"})


def latest_minute_points(points: Sequence[Point]) -> list[Point]:
    """Each channel's newest minute point in the batch, in order of first appearance."""
    newest: dict[tuple[str, str, str], Point] = {}
    for p in points:
        if p.scale is not Scale.MINUTE or p.unit is not Unit.WATTS:
            continue
        key = (p.account, p.device, p.channel)
        if key not in newest or p.time > newest[key].time:
            newest[key] = p
    return list(newest.values())


def latest_minute_messages(
    points: Sequence[Point], tags: TagConfig, add_station: bool
) -> list[dict[str, object]]:
    """One message per channel: its newest minute point in the batch, as upstream sent."""
    messages = []
    for p in latest_minute_points(points):
        msg: dict[str, object] = {
            "account": p.account,
            "device_name": p.channel,
            "usage_watts": p.watts,
            "epoch_s": p.epoch_s,
            "detailed": tags.value(p.scale),
        }
        if add_station:
            msg["station"] = p.device
        messages.append(msg)
    return messages


def channel_payload(point: Point) -> str:
    """The retained per-channel message: the value, its unit, and the minute it belongs to."""
    minute = point.time.strftime("%Y-%m-%dT%H:%M:%SZ")  # Point.time is UTC
    return json.dumps({"value": point.watts, "unit": UNIT, "time": minute})


def topic_part(name: str) -> str:
    """A name made safe as one topic level."""
    return name.translate(_TOPIC_UNSAFE)


def channel_topic(prefix: str, point: Point) -> str:
    """`<prefix>/<account>/<device>/<channel>` for the retained per-channel value."""
    parts = (point.account, point.device, point.channel)
    return "/".join([prefix, *(topic_part(p) for p in parts)])


class MqttSink(LiveOnly, CountsOwnPoints):
    """Publishes to one broker; see the module docstring for the delivery rules.

    `reconnect_delays` (min, max seconds, doubling in between) and `close_timeout`
    are arguments so tests can shorten them. It counts its own outcomes in
    `stats` (messages written and dropped), hence `CountsOwnPoints`. Filled holes are
    not published (`LiveOnly`): they would follow the newest value.
    """

    name = "mqtt"

    def __init__(
        self,
        cfg: MqttConfig,
        tags: TagConfig,
        add_station: bool,
        stats: Stats | None = None,
        *,
        reconnect_delays: tuple[float, float] = (
            backoff.MQTT_RECONNECT.first.total_seconds(),
            backoff.MQTT_RECONNECT.most.total_seconds(),
        ),
        close_timeout: float = CLOSE_TIMEOUT,
        home_assistant: HomeAssistant | None = None,
        availability_topic: str | None = None,
    ) -> None:
        """`home_assistant`: discovery configs and states to publish as well (see
        sinks/homeassistant.py); `availability_topic`: instead of the configured one (a
        shard's replica has its own)."""
        self.cfg = cfg
        self.home_assistant = home_assistant
        self.availability_topic = (
            availability_topic if availability_topic is not None else cfg.availability_topic
        )
        self.tags = tags
        self.add_station = add_station
        self.stats = stats
        self.reconnect_delays = reconnect_delays
        self.close_timeout = close_timeout
        self.client_id = f"vuegraf-{uuid.uuid4().hex[:12]}"  # unique: brokers kick duplicates
        self._client: Client | None = None
        # _state guards the fields below it; paho is never called while holding it.
        self._state = threading.Condition()
        self._connected = False
        self._closing = False
        self._pending: deque[tuple[str, str]] = deque()  # (topic, JSON payload), oldest first
        self._retained: dict[str, str] = {}  # topic -> newest value, per-channel topics
        self._dropping = StateLog(logger, "MQTT", logging.WARNING)  # overflow in this outage
        self._trouble = StateLog(logger, "MQTT")  # the connection's problem, logged when it changes
        # Held while handing messages to paho, so the network thread (on reconnect) and
        # the collector (write) never interleave and the order is kept.
        self._publishing = threading.Lock()
        # Held from building Home Assistant's messages to queueing them, so the collector's and
        # paho's thread (announcing again) queue them in the order they were built: an older
        # energy total never follows a newer one, a removal never precedes a stale config.
        self._discovery = threading.Lock()
        # MQTTMessageInfo of messages handed to paho, for close() to wait on; bounded like
        # paho's own queue, so tracking never grows without limit.
        self._in_flight: deque[MQTTMessageInfo] = deque(maxlen=cfg.max_pending)
        self._ever_connected = False
        self._queue_full: int | None = None  # paho's MQTT_ERR_QUEUE_SIZE, set in open()

    @property
    def where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    @property
    def connected(self) -> bool:
        with self._state:
            return self._connected

    @property
    def pending(self) -> int:
        """Messages waiting for the broker (retained per-channel values included)."""
        with self._state:
            return len(self._pending) + len(self._retained)

    @property
    def unacknowledged(self) -> int:
        """Messages handed to paho that the broker has not acknowledged yet."""
        with self._publishing:
            return sum(not _published(info) for info in self._in_flight)

    def open(self) -> None:
        """Start paho's network thread; connecting happens there, in the background."""
        import paho.mqtt.client as mqtt

        self._queue_full = mqtt.MQTT_ERR_QUEUE_SIZE
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        if self.cfg.username is not None:
            client.username_pw_set(self.cfg.username, self.cfg.password)
        if self.cfg.tls:
            try:
                client.tls_set(
                    ca_certs=str(self.cfg.ca_file) if self.cfg.ca_file else None,
                    certfile=str(self.cfg.cert_file) if self.cfg.cert_file else None,
                    keyfile=str(self.cfg.key_file) if self.cfg.key_file else None,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
                raise SinkError(f"MQTT TLS setup failed: {err}", retryable=False) from None
            if self.cfg.insecure:
                client.tls_insecure_set(True)
        low, high = self.reconnect_delays
        # paho annotates whole seconds but sleeps fractions as well (tests use 0.1 s).
        client.reconnect_delay_set(min_delay=low, max_delay=high)  # type: ignore[arg-type]
        # paho's own queue (QoS 1 messages awaiting an ack) gets the same bound as ours, plus
        # room for `online` and `offline`, which must never take a data message's place.
        client.max_queued_messages_set(self.cfg.max_pending + 2)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        if self.home_assistant is not None:
            client.on_message = self._on_message
        # Set before connecting: the broker publishes it if this connection ends unannounced.
        client.will_set(self.availability_topic, OFFLINE, qos=QOS, retain=True)
        self._set_connected(False)
        client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        self._client = client
        client.loop_start()
        logger.info(
            "MQTT broker %s%s, topic %s%s, availability on %s",
            self.where,
            " (TLS)" if self.cfg.tls else "",
            self.cfg.topic,
            f", retained per-channel topics under {self.cfg.topic_prefix}/"
            if self.cfg.per_channel_topics
            else "",
            self.availability_topic,
        )
        if self.home_assistant is not None:
            logger.info(
                "Home Assistant discovery under %s/, states under %s/%s/",
                self.home_assistant.cfg.discovery_prefix,
                self.cfg.topic_prefix,
                STATE_LEVEL,
            )

    def write(self, points: Sequence[Point]) -> None:
        """Queue this batch's messages and publish what can be published now; never waits."""
        if self._client is None:
            raise RuntimeError("sink is not open")
        newest = latest_minute_points(points)
        ha = self.home_assistant
        # Amps and volts are for Home Assistant's sensors only: not in the upstream message.
        electrical = [p for p in points if p.unit is not Unit.WATTS] if ha is not None else []
        if not newest and not electrical:
            return
        messages = [
            (self.cfg.topic, json.dumps(msg))
            for msg in latest_minute_messages(newest, self.tags, self.add_station)
        ]
        with self._discovery:
            discovery = [] if ha is None else ha.messages([*newest, *electrical])
            with self._state:
                self._pending.extend(messages)
                overflow = len(self._pending) - self.cfg.max_pending
                for _ in range(max(0, overflow)):
                    self._pending.popleft()
                if self.cfg.per_channel_topics:
                    for p in newest:
                        topic = channel_topic(self.cfg.topic_prefix, p)
                        self._retained[topic] = channel_payload(p)
                self._retained.update(discovery)
        if overflow > 0:
            self._dropped(overflow)
        self._publish_pending()

    def close(self) -> None:
        """Deliver what is pending, then `offline`, waiting at most `close_timeout` s in all;
        then disconnect."""
        client = self._client
        if client is None:
            return
        deadline = time.monotonic() + self.close_timeout
        with self._state:
            if self._pending or self._retained:
                self._state.wait_for(lambda: self._connected, self.close_timeout)
        self._publish_pending()
        goodbye = self._say_offline(client)
        for info in [*self._in_flight, *goodbye]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                info.wait_for_publish(remaining)
            except (RuntimeError, ValueError):
                pass  # not queued or connection gone: counted below
        with self._state:
            lost = len(self._pending) + len(self._retained)
        lost += sum(not _published(info) for info in self._in_flight)
        if lost:
            logger.warning("MQTT: %d messages not delivered before shutdown", lost)
            self._count("dropped", lost)
        if goodbye and not _published(goodbye[0]):
            logger.warning(
                "MQTT: %s not confirmed before shutdown; the broker's copy may still say %s",
                self.availability_topic,
                ONLINE,
            )
        client.disconnect()
        # paho's thread may sit in a reconnect back-off (up to 1 s) or a connect attempt
        # (up to its 5 s timeout): give it a moment, then leave the daemon thread to finish.
        stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(STOP_WAIT)
        self._client = None
        self._set_connected(False)

    def _say_offline(self, client: Client) -> list[MQTTMessageInfo]:
        """Mark the sink closing and, if connected, publish `offline` (retained): a clean
        disconnect makes the broker discard the last will. Under `_publishing`, so an
        `online` from a reconnect can never come after it."""
        with self._publishing:
            with self._state:
                self._closing = True
                connected = self._connected
            if not connected:
                return []  # the broker sends the will, or already did when the link broke
            info = client.publish(self.availability_topic, OFFLINE, qos=QOS, retain=True)
        return [info]

    # -- paho callbacks (network thread) -----------------------------------------------

    def _on_connect(
        self,
        client: Client,
        _userdata: Any,
        _flags: ConnectFlags,
        reason_code: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if self._closing:
            return  # a connect that finished after close(): the thread is ending anyway
        if reason_code.is_failure:
            self._trouble_once(
                f"refused: {reason_code}",
                logging.ERROR,
                "MQTT broker %s refused the connection: %s; retrying in the background",
                self.where,
                reason_code,
            )
            return
        # `online` goes out first, before anything pending, and never after close()'s
        # `offline`: both are published under `_publishing`, and `_closing` is read under it.
        with self._publishing:
            with self._state:
                if self._closing:
                    return
                self._connected = True
                self._set_connected(True)  # under the lock: stats never disagree with .connected
                waiting = len(self._pending) + len(self._retained)
                again = self._ever_connected
                self._ever_connected = True
                self._trouble.reset()
                self._dropping.reset()
                self._state.notify_all()
            client.publish(self.availability_topic, ONLINE, qos=QOS, retain=True)
        if self.home_assistant is not None:
            # Home Assistant says `online` there when it starts: discovery is sent again then.
            client.subscribe(self.home_assistant.status_topic, qos=QOS)
            self._announce()
        logger.info(
            "MQTT connected to %s%s%s",
            self.where,
            " again" if again else "",
            f"; sending {waiting} pending messages" if waiting else "",
        )
        self._publish_pending()

    def _on_message(self, _client: Client, _userdata: Any, message: MQTTMessage) -> None:
        ha = self.home_assistant
        if ha is None or message.topic != ha.status_topic:
            return
        if message.payload.strip().lower() == ONLINE.encode():
            logger.info("Home Assistant is online (%s): sending discovery again", ha.status_topic)
            self._announce()
            self._publish_pending()

    def _announce(self) -> None:
        """Queue every Home Assistant config and state (retained), for the next publish."""
        assert self.home_assistant is not None
        with self._discovery:
            messages = self.home_assistant.announcement()
            with self._state:
                self._retained.update(messages)

    def _on_disconnect(
        self,
        _client: Client,
        _userdata: Any,
        _flags: DisconnectFlags,
        reason_code: ReasonCode,
        _props: Properties | None,
    ) -> None:
        with self._state:
            was_connected = self._connected
            self._connected = False
            self._set_connected(False)
            closing = self._closing
        if was_connected and not closing:
            self._trouble_once(
                "lost",
                logging.WARNING,
                "MQTT connection to %s lost (%s); reconnecting in the background, keeping up "
                "to %d messages meanwhile",
                self.where,
                reason_code,
                self.cfg.max_pending,
            )

    def _on_connect_fail(self, _client: Client, _userdata: Any) -> None:
        self._trouble_once(
            "unreachable",
            logging.WARNING,
            "MQTT broker %s: cannot connect%s; retrying in the background, keeping up to %d "
            "messages meanwhile",
            self.where,
            " (connection or TLS handshake failed)" if self.cfg.tls else "",
            self.cfg.max_pending,
        )

    # -- internals -----------------------------------------------------------------------

    def _publish_pending(self) -> None:
        """Hand every pending message to paho, in order, if connected."""
        client = self._client
        if client is None:
            return
        with self._publishing:
            with self._state:
                if not self._connected:
                    return
                batch = [(t, p, False) for t, p in self._pending]
                batch += [(t, p, True) for t, p in self._retained.items()]
                self._pending.clear()
                self._retained.clear()
            sent = refused = 0
            for topic, payload, retain in batch:
                info = client.publish(topic, payload, qos=QOS, retain=retain)
                if info.rc == self._queue_full:
                    refused += 1
                    continue
                sent += 1
                self._in_flight.append(info)
            while self._in_flight and _published(self._in_flight[0]):
                self._in_flight.popleft()
        self._count("written", sent)
        if refused:
            self._dropped(refused)

    def _dropped(self, n: int) -> None:
        self._count("dropped", n)
        with self._state:
            self._dropping.failed(
                "MQTT broker %s away and %d messages pending: dropping the oldest",
                self.where,
                self.cfg.max_pending,
                repeat=False,  # one line an outage: each write would repeat it
            )

    def _trouble_once(self, what: str, level: int, msg: str, *args: object) -> None:
        """Log a connection problem when it starts or changes, not at every retry."""
        with self._state:
            self._trouble.failed(msg, *args, kind=what, level=level)

    def _set_connected(self, connected: bool) -> None:
        if self.stats is not None:
            self.stats.set_mqtt_connected(connected)

    def _count(self, outcome: str, n: int) -> None:
        if self.stats is not None:
            self.stats.count_points(self.name, outcome, n)


def _published(info: MQTTMessageInfo) -> bool:
    try:
        return bool(info.is_published())
    except (RuntimeError, ValueError):  # paho raises for messages it did not queue
        return False
