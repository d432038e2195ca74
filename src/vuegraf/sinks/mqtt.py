"""MQTT: the newest minute value of each channel, in upstream vuegraf's message format.

Publishing never blocks collection: paho's network loop runs in its own thread,
connects (and reconnects) in the background, and `write` only queues messages.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence

from vuegraf.config import MqttConfig, TagConfig
from vuegraf.model import Point, Scale

logger = logging.getLogger(__name__)


def latest_minute_messages(
    points: Sequence[Point], tags: TagConfig, add_station: bool
) -> list[dict[str, object]]:
    """One message per channel: its newest minute point in the batch."""
    newest: dict[tuple[str, str, str], Point] = {}
    for p in points:
        if p.scale is not Scale.MINUTE:
            continue
        key = (p.account, p.device, p.channel)
        if key not in newest or p.time > newest[key].time:
            newest[key] = p
    messages = []
    for p in newest.values():
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


class MqttSink:
    name = "mqtt"

    def __init__(self, cfg: MqttConfig, tags: TagConfig, add_station: bool) -> None:
        self.cfg = cfg
        self.tags = tags
        self.add_station = add_station
        self._client = None

    def open(self) -> None:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"vuegraf-{uuid.uuid4().hex[:12]}"
        )
        if self.cfg.username is not None:
            client.username_pw_set(self.cfg.username, self.cfg.password)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.connect_async(self.cfg.host, self.cfg.port, keepalive=60)
        client.loop_start()
        self._client = client
        logger.info("MQTT broker %s:%d, topic %s", self.cfg.host, self.cfg.port, self.cfg.topic)

    def _on_connect(self, _client, _userdata, _flags, reason_code, _props) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            logger.error("MQTT connection refused: %s", reason_code)
        else:
            logger.info("MQTT connected")

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:  # type: ignore[no-untyped-def]
        if reason_code != 0:
            logger.warning("MQTT disconnected (%s); reconnecting in the background", reason_code)

    def write(self, points: Sequence[Point]) -> None:
        if self._client is None:
            raise RuntimeError("sink is not open")
        for msg in latest_minute_messages(points, self.tags, self.add_station):
            self._client.publish(self.cfg.topic, json.dumps(msg), qos=0)

    def close(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
            self._client = None
