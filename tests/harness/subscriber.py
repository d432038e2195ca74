"""An MQTT subscriber that records what a real broker delivered, for tests of what vuegraf
publishes (paho, like vuegraf, but nothing of vuegraf's own code)."""

from __future__ import annotations

import json
import queue
import time
import uuid
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt


@dataclass
class Received:
    topic: str
    payload: str
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """Subscribes to `topic` (a filter: wildcards allowed) and records every message the
    broker delivers, in order."""

    def __init__(
        self,
        port: int,
        topic: str,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.inbox: queue.Queue[Received] = queue.Queue()
        subscribed = queue.Queue[bool]()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex}")
        if username is not None:
            client.username_pw_set(username, password)
        client.on_message = lambda _c, _u, m: self.inbox.put(
            Received(m.topic, m.payload.decode(), bool(m.retain))
        )
        client.on_subscribe = lambda *_args: subscribed.put(True)
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.subscribe(topic, qos=1)
        subscribed.get(timeout=60)
        self.client = client

    def take(self, n: int, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        got: list[Received] = []
        while len(got) < n:
            remaining = deadline - time.monotonic()
            try:
                got.append(self.inbox.get(timeout=max(0.01, remaining)))
            except queue.Empty:
                raise AssertionError(f"received {len(got)} of {n} messages: {got}") from None
        return got

    def nothing_more(self, wait: float = 0.5) -> None:
        """No message beyond those taken. A quiet period, not a wait for something to happen:
        a slow machine can only make it miss a stray message, never fail a good run."""
        time.sleep(wait)
        leftovers = []
        while not self.inbox.empty():
            leftovers.append(self.inbox.get())
        assert leftovers == []

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, timeout: float = 60.0) -> Received:
    """What the broker keeps retained on `topic` (one topic, no wildcards), as a subscriber
    arriving now receives it; fails if nothing is retained there."""
    late = Subscriber(port, topic)
    try:
        (got,) = late.take(1, timeout)
    finally:
        late.close()
    assert got.retain, f"{topic}: {got.payload!r} was delivered live, not as the retained copy"
    return got
