"""What a real vuegraf process publishes to MQTT, and what the broker says for it once it is gone.

`python -m vuegraf CONFIG` (through harness/testtime.py: the real CLI, at the test's date) runs
against the Emporia simulator and the session Mosquitto. A subscriber records what the broker
delivered:

- with per-channel topics, each retained payload is `{"value", "unit", "time"}`: the watts the
  simulator's model gives for that channel and minute (harness/oracle.py, not vuegraf's code),
  "W", and the start of that minute in UTC, which is also the `epoch_s` of the upstream message
  for the same channel and minute;
- the availability topic says `online` while vuegraf runs, `offline` after SIGTERM (vuegraf's
  own goodbye), and `offline` after SIGKILL: nothing of vuegraf runs after a SIGKILL, so that
  one is the last will the broker held for it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness import oracle
from harness.inprocess import write_simulator_config
from harness.subscriber import Received, Subscriber, retained
from harness.testtime import TestTime
from servers import MosquittoServer, poll_until
from vuegraf.simulator import SimulatorServer

pytestmark = pytest.mark.integration

SEED = 73
ACCOUNT = "Home"
DEADLINE = 120.0  # seconds for anything the test waits on: generous, a slow machine only waits
ISO_MINUTE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:00Z")


def write_config(tmp_path: Path, sim_url: str, broker_port: int, mqtt: dict[str, object]) -> Path:
    """One simulator account publishing to the local broker with the `mqtt` settings."""
    mqtt = {"host": "127.0.0.1", "port": broker_port, **mqtt}
    return write_simulator_config(tmp_path, sim_url, {"mqtt": mqtt}, ACCOUNT)


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def receive_until(
    sub: Subscriber,
    got: list[Received],
    done: Callable[[list[Received]], bool],
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Append what the broker delivers to `got` until `done(got)`; fail after DEADLINE, or at
    once if `proc` (expected to keep running) has exited."""

    def arrived() -> bool:
        while not sub.inbox.empty():
            got.append(sub.inbox.get())
        if proc is not None and proc.poll() is not None:
            detail = tail(log) if log is not None else ""
            raise AssertionError(f"vuegraf exited ({proc.returncode}) before {what}:\n{detail}")
        return done(got)

    poll_until(
        arrived, bool, DEADLINE, 0.05, lambda _a: f"no {what} within {DEADLINE} s; "
        f"{len(got)} messages, the last: {got[-5:]}"
    )


def payloads(got: list[Received], topic: str) -> list[str]:
    return [r.payload for r in got if r.topic == topic]


def channel_topics(prefix: str) -> dict[str, str]:
    """Per-channel topic -> written channel name, for the simulator's default household."""
    return {
        f"{prefix}/{ACCOUNT}/{oracle.DEVICE_NAMES[gid]}/{name}": name
        for (gid, _num), name in oracle.DEFAULT_NAMES.items()
    }


def test_per_channel_payloads_and_availability_of_a_running_then_stopped_vuegraf(
    mosquitto: MosquittoServer, tmp_path: Path, test_time: TestTime
) -> None:
    base = f"test-{uuid.uuid4().hex[:8]}"
    topic, prefix = f"{base}/energy_usage", f"{base}/power"
    status = f"{prefix}/status"  # the default: <topicPrefix>/status
    mains = f"{prefix}/{ACCOUNT}/Main Panel/Main Panel"
    sub = Subscriber(mosquitto.port, f"{base}/#")
    got: list[Received] = []
    log = tmp_path / "vuegraf.log"
    try:
        with SimulatorServer(seed=SEED, now=test_time.now) as sim:
            config = write_config(
                tmp_path,
                sim.url,
                mosquitto.port,
                {
                    "topic": topic,
                    "perChannelTopics": True,
                    "topicPrefix": prefix,
                },
            )
            started = test_time.now()
            with test_time.running(log, str(config)) as proc:
                receive_until(
                    sub,
                    got,
                    lambda g: "online" in payloads(g, status) and bool(payloads(g, mains)),
                    "online and a value for the mains",
                    proc,
                    log,
                )
                assert retained(mosquitto.port, status).payload == "online"
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=DEADLINE) == 0, tail(log)
            stopped = test_time.now()
            model = sim.model
        receive_until(sub, got, lambda g: "offline" in payloads(g, status), "offline")
        sub.nothing_more()
    finally:
        sub.close()

    # Availability: online while running, offline after the clean stop, and nothing else.
    assert payloads(got, status) == ["online", "offline"]
    assert got[-1].topic == status, "offline is the last thing vuegraf published"
    assert retained(mosquitto.port, status).payload == "offline"

    topics = channel_topics(prefix)
    messages = [r.json() for r in got if r.topic == topic]
    upstream = {(m["device_name"], m["epoch_s"]): m for m in messages}
    assert len(upstream) == len(messages), "one upstream message per channel and minute"
    per_channel: dict[tuple[str, int], float] = {}
    for r in got:
        if r.topic in (topic, status):
            continue
        assert r.topic in topics, r.topic
        name = topics[r.topic]
        payload = r.json()
        assert list(payload) == ["value", "unit", "time"], r.payload
        assert payload["unit"] == "W"
        assert isinstance(payload["value"], float)
        assert ISO_MINUTE.fullmatch(payload["time"]), payload["time"]
        minute = datetime.fromisoformat(payload["time"].replace("Z", "+00:00"))
        assert started - timedelta(minutes=10) <= minute <= stopped
        epoch = int(minute.timestamp())
        # The minute it belongs to is the one the upstream message of the same value names.
        assert upstream[(name, epoch)]["usage_watts"] == payload["value"]
        per_channel[(name, epoch)] = payload["value"]

    # One per-channel value for every upstream message, and each is the simulator's watts.
    assert set(per_channel) == set(upstream)
    minutes = sorted({epoch for _name, epoch in per_channel})
    want: dict[tuple[str, int], float] = {}
    for epoch in minutes:
        start = datetime.fromtimestamp(epoch, UTC)
        want.update(
            oracle.served(
                oracle.DEFAULT_NAMES,
                model,
                "1MIN",
                start,
                start + timedelta(minutes=1),
                oracle.NEW_YORK,
                live_only_too=True,
            )
        )
    assert set(per_channel) <= set(want)
    for key, watts in per_channel.items():
        assert watts == pytest.approx(want[key], rel=1e-9, abs=1e-9), key
    for epoch in minutes:  # every channel Emporia had a value for, not only some
        assert {k for k in want if k[1] == epoch} == {k for k in per_channel if k[1] == epoch}
    assert ("Main Panel", minutes[0]) in per_channel
    print(f"{len(per_channel)} per-channel values for minutes {minutes}")


def test_the_broker_says_offline_for_a_vuegraf_killed_with_sigkill(
    mosquitto: MosquittoServer, tmp_path: Path, test_time: TestTime
) -> None:
    base = f"test-{uuid.uuid4().hex[:8]}"
    status = f"{base}/bridge/availability"  # configured; per-channel topics stay off
    sub = Subscriber(mosquitto.port, status)
    got: list[Received] = []
    log = tmp_path / "vuegraf.log"
    try:
        with SimulatorServer(seed=SEED, now=test_time.now) as sim:
            config = write_config(
                tmp_path,
                sim.url,
                mosquitto.port,
                {
                    "topic": f"{base}/energy_usage",
                    "availabilityTopic": status,
                },
            )
            with test_time.running(log, str(config)) as proc:
                receive_until(sub, got, lambda g: "online" in payloads(g, status), "online",
                              proc, log)
                proc.kill()  # SIGKILL: no goodbye, no DISCONNECT; the socket just closes
                assert proc.wait(timeout=DEADLINE) == -signal.SIGKILL
        receive_until(sub, got, lambda g: "offline" in payloads(g, status), "the last will")
        sub.nothing_more()
    finally:
        sub.close()
    assert payloads(got, status) == ["online", "offline"]
    assert retained(mosquitto.port, status).payload == "offline"
