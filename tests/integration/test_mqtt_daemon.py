"""The daemon with an MQTT sink publishes live values only: not the history import, not the holes
it fills after an outage.

`vuegraf.cli.run` (what `vuegraf CONFIG --historydays 2` runs: the import, then the daemon) in
virtual time, with a real Mosquitto, the simulator sharing the virtual clock and recording every
request, and the embedded SQLite store. Emporia answers 503 for ten minutes in the middle, so
holes are filled afterwards. A subscriber records what the broker delivered; it must be exactly
one message per channel for each live minute (the minutes the simulator served as the newest
complete one, read from its request log), each equal to the model, and nothing else, though the
store holds the history and the filled minutes.
"""

from __future__ import annotations

import argparse
import json
import queue
import sqlite3
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest

from harness import oracle
from harness.inprocess import simulator_config
from vuegraf.cli import run
from vuegraf.clock import FakeClock
from vuegraf.simulator import SimulatorServer
from vuegraf.simulator.server import parse_instant
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 91
T0 = datetime(2026, 11, 25, 10, 0, 20, tzinfo=UTC)
OUTAGE_FROM = T0 + timedelta(minutes=10)
OUTAGE_UNTIL = T0 + timedelta(minutes=20)
END = T0 + timedelta(minutes=45)
DEADLINE = 60.0


class ClockWithWeather(FakeClock):
    """Virtual time; after every wait Emporia's state is set for the new time."""

    def __init__(self, start: datetime, stop_after: datetime, sim: SimulatorServer) -> None:
        super().__init__(start, stop_after)
        self.sim = sim

    def wait(self, seconds: float) -> bool:
        stopped = super().wait(seconds)
        if OUTAGE_FROM <= self.now() < OUTAGE_UNTIL:
            self.sim.set_fault(503)
        else:
            self.sim.clear_fault()
        return stopped


def test_history_and_filled_holes_are_not_published(mosquitto, tmp_path):
    topic = f"vuegraf/test-{uuid.uuid4().hex[:8]}"
    inbox: queue.Queue[tuple[str, str]] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex}")
    sub.on_message = lambda _c, _u, m: inbox.put((m.topic, m.payload.decode()))
    sub.on_subscribe = lambda *_a: subscribed.put(True)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    sub.subscribe(f"{topic}/#", qos=1)
    sub.subscribe(topic, qos=1)
    subscribed.get(timeout=DEADLINE)
    subscribed.get(timeout=DEADLINE)
    try:
        with SimulatorServer(seed=SEED) as sim:
            clock = ClockWithWeather(T0, END, sim)
            sim.now = clock.now
            sim.log_requests = True
            config = simulator_config(
                tmp_path,
                sim.url,
                {"mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "topic": topic}},
            )
            args = argparse.Namespace(dryrun=False, debug=False)
            code = run(config, args, clock, Stats(), 2, False)
            log = sim.requests_seen()
            model = sim.model
        assert code == 0
        # Everything the broker took has been delivered once a marker sent after it arrives.
        marker = f"marker-{uuid.uuid4().hex}"
        sub.publish(f"{topic}/marker", marker, qos=1).wait_for_publish(DEADLINE)
        got: list[tuple[str, str]] = []
        while (f"{topic}/marker", marker) not in got:
            got.append(inbox.get(timeout=DEADLINE))
    finally:
        sub.disconnect()
        sub.loop_stop()
    messages = [json.loads(payload) for t, payload in got if t == topic]
    assert [t for t, _p in got if t != topic] == [f"{topic}/marker"]

    # The live minutes: answered 200 as the newest complete minute (asked for at most two
    # minutes after it began), by the simulator's own record.
    live = sorted({parse_instant(r.query["instant"]) for r in log
                   if r.endpoint == "getDeviceListUsages" and r.scale == "1MIN"
                   and r.status == 200
                   and r.at - parse_instant(r.query["instant"]) <= timedelta(minutes=2)})
    # Every channel, live-only ones too: each non-null minute once, with the model's watts.
    want: dict[tuple[str, int], float] = {}
    for minute in live:
        want.update(
            oracle.served(
                oracle.DEFAULT_NAMES,
                model,
                "1MIN",
                minute,
                minute + timedelta(minutes=1),
                oracle.NEW_YORK,
                live_only_too=True,
            )
        )
    published = Counter((m["device_name"], m["epoch_s"]) for m in messages)
    assert published == Counter(list(want))  # each key once
    for m in messages:
        watts = want[(m["device_name"], m["epoch_s"])]
        assert m["usage_watts"] == pytest.approx(watts, rel=1e-9, abs=1e-9)

    # ... though the store got much more: the history import and the filled outage.
    with sqlite3.connect(tmp_path / "vuegraf.sqlite") as db:
        minutes = {row[0] for row in db.execute(
            "SELECT DISTINCT time FROM energy_usage WHERE detailed = 'False'")}
        hours = db.execute(
            "SELECT COUNT(*) FROM energy_usage WHERE detailed = 'Hour'").fetchone()
    outage = {int((OUTAGE_FROM + timedelta(minutes=i)).replace(second=0).timestamp())
              for i in range(1, 9)}
    assert outage <= minutes, "the outage was not filled"
    assert not outage & {epoch for _n, epoch in published}
    assert hours[0] >= 28 * 47  # two days of hours from the import
    assert len(minutes) > 2 * 1440  # the import's minutes, two days back
    assert any(r.status == 503 for r in log)
    assert len(live) >= 25
    print(f"{len(messages)} messages for {len(live)} live minutes; the store holds "
          f"{len(minutes)} minutes and {hours[0]} hour points")
