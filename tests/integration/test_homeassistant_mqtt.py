"""Home Assistant discovery and energy counters, as a real broker delivers them.

vuegraf runs as a child process against the Emporia simulator and the session Mosquitto,
with `mqtt.homeAssistant` on; a subscriber records everything the broker delivers under the
test's own topics (a prefix of its own per test, so the shared broker's retained messages of
other tests never mix in). The expected side is worked out here: the household from the
simulator's scenario and oracle.py's literal tables, topics and unique ids by the format
sinks/homeassistant.py promises (written out here, not computed by it), watts and energy
from the simulator's usage model (never from vuegraf's code).

Two kinds of child:
- the real `vuegraf CONFIG` (harness/testtime.py, at the test's date) where one start is
  enough: discovery, availability and its last will after `kill -9`, the re-announce when
  Home Assistant says `online`, a shard replica's availability topic;
- tests/harness/virtual_vuegraf.py following a clock this test moves (harness/lockstep.py:
  `vuegraf.cli.run`'s wiring, time jumping from tick to tick once the child waits) where
  minutes must pass: a device and a circuit that vanish from Emporia's list, and the energy
  counters across an Emporia outage, a SIGKILL, a pause and the backfill, checked against
  the model, InfluxDB 1.x and Prometheus's `vuegraf_energy_joules_total` of the same run.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import oracle
from harness.completeness import seed_minute
from harness.inprocess import simulator_config, write_simulator_config
from harness.lockstep import Lockstep
from harness.subscriber import Received, Subscriber
from harness.testtime import TestTime
from servers import InfluxV1Server, MosquittoServer, free_ports, poll_until
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel

pytestmark = pytest.mark.integration

HARNESS = Path(__file__).resolve().parents[1] / "harness" / "virtual_vuegraf.py"
ACCOUNT = "Home"
# Seconds for anything the test waits on: generous, a slow machine only waits. The plug's
# minute is missing about 3 % of the time (its gaps), and its entities come with the first
# tick that has one: two or three missing in a row are a minute or two more.
DEADLINE = 300.0
MAINS = "1,2,3"
SCENARIO = Scenario.default()
# The plug hangs on Main Panel circuit 5, the charger on Garage Panel circuit 3.
PARENTS = {2001: 1001, 3001: 1002}
# Emporia says these can run backwards: the solar circuit (bidirectional) and the mains of
# the panel it is on.
EXPORTING = {(1002, "1"), (1002, MAINS)}
# Channels that only ever draw power: no exported-energy sensor, whatever the hour.
DRAWING_ONLY = {
    (1001, MAINS),
    *((1001, str(n)) for n in range(1, 17)),
    *((1002, str(n)) for n in range(2, 9)),
    (2001, MAINS),
    (3001, MAINS),
}
CHANNEL_KINDS = ("power", "energy")
SENSOR_FIELDS = {
    "power": ("power", "measurement", "W"),
    "energy": ("energy", "total_increasing", "kWh"),
    "energy_exported": ("energy", "total_increasing", "kWh"),
}
JOULES_PER_KWH = 3_600_000.0


# -- the names this test expects (the published format, written out) -----------------------


def object_id(num: str) -> str:
    """A channel number in a topic level or unique_id: Emporia's `1,2,3` has commas."""
    return num.replace(",", "_")


def unique_id(gid: int, num: str, kind: str) -> str:
    return f"vuegraf_{gid}_{object_id(num)}_{kind}"


@dataclass(frozen=True)
class Topics:
    """One test's topics: everything lives under `base`, so one subscription sees it all."""

    base: str

    @property
    def discovery(self) -> str:
        return f"{self.base}/ha"

    @property
    def ha_status(self) -> str:
        return f"{self.base}/ha/status"

    @property
    def prefix(self) -> str:
        return f"{self.base}/vuegraf"

    @property
    def availability(self) -> str:
        return f"{self.base}/vuegraf/status"

    def sensor_config(self, gid: int, num: str, kind: str) -> str:
        return f"{self.discovery}/sensor/vuegraf_{gid}/{object_id(num)}_{kind}/config"

    def connectivity_config(self, gid: int) -> str:
        return f"{self.discovery}/binary_sensor/vuegraf_{gid}/connected/config"

    def state(self, gid: int, num: str) -> str:
        return f"{self.prefix}/homeassistant/{gid}/{object_id(num)}"

    def connectivity(self, gid: int) -> str:
        return f"{self.prefix}/homeassistant/{gid}/connected"

    def mqtt_settings(self, port: int) -> dict[str, object]:
        return {
            "host": "127.0.0.1",
            "port": port,
            "topic": f"{self.base}/energy_usage",
            "topicPrefix": self.prefix,
            "availabilityTopic": self.availability,
            "homeAssistant": {"discoveryPrefix": self.discovery, "statusTopic": self.ha_status},
        }

    def base_configs(self, channels: Sequence[tuple[int, str]]) -> set[str]:
        """Power and energy configs of `channels`, and a connectivity config per device."""
        topics = {self.sensor_config(g, n, k) for g, n in channels for k in CHANNEL_KINDS}
        return topics | {self.connectivity_config(g) for g, _n in channels}


def new_topics() -> Topics:
    return Topics(f"test-{uuid.uuid4().hex[:10]}")


HOUSEHOLD = sorted(oracle.DEFAULT_NAMES)  # (gid, channel number) of every channel


def all_configs(topics: Topics) -> set[str]:
    """Every config the default household gets (with EXPORTING's exported-energy sensors)."""
    return topics.base_configs(HOUSEHOLD) | {
        topics.sensor_config(g, n, "energy_exported") for g, n in EXPORTING
    }


def cli_config(
    tmp_path: Path, sim: SimulatorServer, topics: Topics, broker_port: int, now: datetime
) -> Path:
    """The config file of a real `vuegraf` (the embedded SQLite store, Home Assistant on),
    with what an earlier run left 4 minutes before `now` in its store: the start fills a few
    minutes, not 7 days."""
    settings = {"mqtt": topics.mqtt_settings(broker_port)}
    seed_minute(
        simulator_config(tmp_path, sim.url, settings, ACCOUNT),
        sim.model,
        oracle.floor_to(now, 60) - timedelta(minutes=4),
    )
    return write_simulator_config(tmp_path, sim.url, settings, ACCOUNT)


# -- what the broker delivered --------------------------------------------------------------


class Broker:
    """Everything the broker delivers under `topics.base`, in order of arrival."""

    def __init__(self, port: int, topics: Topics) -> None:
        self.port = port
        self.topics = topics
        self.sub = Subscriber(port, f"{topics.base}/#")
        self.got: list[Received] = []

    def close(self) -> None:
        self.sub.close()

    def drain(self) -> list[Received]:
        while not self.sub.inbox.empty():
            self.got.append(self.sub.inbox.get())
        return self.got

    def wait(
        self,
        done: Callable[[list[Received]], bool],
        what: str,
        alive: Callable[[], str | None] = lambda: None,
    ) -> None:
        """Until `done(everything so far)`; fails after DEADLINE, or at once when `alive()`
        says why the child that should be publishing is gone."""

        def check() -> bool:
            gone = alive()
            if gone is not None:
                raise AssertionError(f"{gone} before {what}")
            return done(self.drain())

        poll_until(check, bool, DEADLINE, 0.05, lambda _ok: f"no {what} within {DEADLINE} s; "
                   f"{len(self.got)} messages, the last: {self.got[-5:]}")

    def since(self, index: int) -> list[Received]:
        return self.drain()[index:]

    def publish(self, topic: str, payload: str) -> None:
        """As Home Assistant does on its status topic when it starts (not retained)."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-{uuid.uuid4().hex}")
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        try:
            client.publish(topic, payload, qos=1).wait_for_publish(DEADLINE)
        finally:
            client.disconnect()
            client.loop_stop()

    def retained_under(self, topic_filter: str, count: int) -> dict[str, str]:
        """What the broker keeps retained under `topic_filter`, as a subscriber arriving now
        gets it: `count` messages are waited for, then a quiet moment must bring no more."""
        late = Subscriber(self.port, topic_filter)
        try:
            got = late.take(count, DEADLINE)
            late.nothing_more()
        finally:
            late.close()
        assert all(r.retain for r in got), [r.topic for r in got if not r.retain]
        return {r.topic: r.payload for r in got}


def payloads(got: Sequence[Received], topic: str) -> list[str]:
    return [r.payload for r in got if r.topic == topic]


def seen(got: Sequence[Received]) -> set[str]:
    return {r.topic for r in got}


def states_of(got: Sequence[Received], topics: Topics, gid: int, num: str) -> list[dict[str, Any]]:
    """The channel's JSON states, in order of arrival."""
    return [r.json() for r in got if r.topic == topics.state(gid, num) and r.payload]


def configs(got: Sequence[Received], topics: Topics) -> dict[str, dict[str, Any]]:
    """The newest non-empty discovery config per topic."""
    out: dict[str, dict[str, Any]] = {}
    for r in got:
        if r.topic.startswith(f"{topics.discovery}/") and r.topic.endswith("/config"):
            if r.payload:
                out[r.topic] = r.json()
            else:
                out.pop(r.topic, None)
    return out


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def exited(proc: subprocess.Popen[bytes], log: Path) -> Callable[[], str | None]:
    return lambda: None if proc.poll() is None else (
        f"vuegraf exited ({proc.returncode}):\n{tail(log)}"
    )


def model_watts(model: UsageModel, gid: int, num: str, minute: datetime) -> float | None:
    kwh = model.device_values(gid, "1MIN", minute)[num]
    return None if kwh is None else oracle.watts("1MIN", kwh)


def minute_of(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def assert_never_negative(got: Sequence[Received], topics: Topics) -> int:
    """No energy value of any state is negative (both are `total_increasing` sensors)."""
    states = [
        r.json() for r in got
        if r.topic.startswith(f"{topics.prefix}/homeassistant/")
        and not r.topic.endswith("/connected") and r.payload
    ]
    negative = [s for s in states if s["energy"] < 0 or s["energy_exported"] < 0]
    assert not negative, negative[:5]
    return len(states)


# -- 1. discovery -------------------------------------------------------------------------------


def check_config(topics: Topics, gid: int, num: str, kind: str, config: dict[str, Any]) -> None:
    """One sensor's discovery config, field by field."""
    device_class, state_class, unit = SENSOR_FIELDS[kind]
    where = (gid, num, kind)
    assert config["unique_id"] == unique_id(gid, num, kind), where
    assert config["device_class"] == device_class, where
    assert config["state_class"] == state_class, where
    assert config["unit_of_measurement"] == unit, where
    assert config["state_topic"] == topics.state(gid, num), where
    assert config["value_template"] == f"{{{{ value_json.{kind} }}}}", where
    assert config["availability_topic"] == topics.availability, where
    assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    check_device(gid, config["device"])


def check_device(gid: int, device: dict[str, Any]) -> None:
    spec = SCENARIO.device(gid)
    assert device["identifiers"] == [f"emporia_{gid}"], device
    assert device["manufacturer"] == "Emporia", device
    assert device["name"] == oracle.DEVICE_NAMES[gid], device
    assert (device["model"], device["sw_version"]) == (spec.model, spec.firmware), device
    if gid in PARENTS:
        assert device["via_device"] == f"emporia_{PARENTS[gid]}", device
    else:
        assert "via_device" not in device, device


def test_every_channel_is_discovered_with_the_sensors_the_energy_dashboard_takes(
    mosquitto: MosquittoServer, tmp_path: Path, test_time: TestTime
) -> None:
    """Every channel of the default household gets a power (W, measurement) and an energy
    (kWh, total_increasing) sensor, the solar circuit and the garage panel's mains a second
    energy sensor for what they feed back, and every device a connectivity sensor and a
    device entry (Emporia's gid, model and firmware, the panel a plug or charger hangs on).
    Each state's power is the model's watts of the minute it names."""
    topics = new_topics()
    broker = Broker(mosquitto.port, topics)
    log = tmp_path / "vuegraf.log"
    wanted = all_configs(topics)
    state_topics = {topics.state(g, n) for g, n in HOUSEHOLD}
    try:
        with SimulatorServer(seed=73, now=test_time.now) as sim:
            config = cli_config(tmp_path, sim, topics, mosquitto.port, test_time.now())
            with test_time.running(log, str(config)) as proc:
                broker.wait(
                    lambda g: wanted <= seen(g) and state_topics <= seen(g)
                    and all(topics.connectivity(gid) in seen(g) for gid in oracle.DEVICE_NAMES),
                    "every config, state and connectivity",
                    exited(proc, log),
                )
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=DEADLINE) == 0, tail(log)
            model = sim.model
        got = broker.drain()
    finally:
        broker.close()

    found = configs(got, topics)
    for gid, num in HOUSEHOLD:
        for kind in CHANNEL_KINDS:
            check_config(topics, gid, num, kind, found[topics.sensor_config(gid, num, kind)])
    for gid, num in EXPORTING:
        kind = "energy_exported"
        check_config(topics, gid, num, kind, found[topics.sensor_config(gid, num, kind)])
    exported = {t for t in found if t.endswith("_energy_exported/config")}
    for gid, num in DRAWING_ONLY:
        assert topics.sensor_config(gid, num, "energy_exported") not in exported, (gid, num)
    assert (1001, "3") in DRAWING_ONLY <= set(oracle.DEFAULT_NAMES)  # the Fridge, for one
    for gid in oracle.DEVICE_NAMES:
        connectivity = found[topics.connectivity_config(gid)]
        assert connectivity["unique_id"] == f"vuegraf_{gid}_connected"
        assert connectivity["device_class"] == "connectivity"
        assert connectivity["state_topic"] == topics.connectivity(gid)
        assert connectivity["availability_topic"] == topics.availability
        assert (connectivity["payload_on"], connectivity["payload_off"]) == ("ON", "OFF")
        check_device(gid, connectivity["device"])
        states = payloads(got, topics.connectivity(gid))
        assert states and set(states) <= {"ON", "OFF"}, states
        if gid != 2001:  # the plug goes offline in its gaps; the others never do
            assert set(states) == {"ON"}, (gid, states)
    unique_ids = [c["unique_id"] for c in found.values()]
    assert len(unique_ids) == len(set(unique_ids))

    # Each state: the model's watts of the minute it names; both energies >= 0.
    checked = 0
    for gid, num in HOUSEHOLD:
        for state in (json.loads(p) for p in payloads(got, topics.state(gid, num))):
            assert set(state) == {"power", "energy", "energy_exported", "time"}, state
            want = model_watts(model, gid, num, minute_of(state["time"]))
            assert want is not None, (gid, num, state)
            assert state["power"] == pytest.approx(want, abs=6e-4), (gid, num, state)
            checked += 1
    assert checked >= len(HOUSEHOLD)
    assert assert_never_negative(got, topics) == checked
    print(f"{len(found)} discovery configs, {checked} states checked against the model")


# -- 2, 3. availability, the last will, and discovery sent again ---------------------------------


def test_killed_vuegraf_goes_unavailable_and_discovery_is_sent_again_when_asked(
    mosquitto: MosquittoServer, tmp_path: Path, test_time: TestTime
) -> None:
    """`online` while running; a Home Assistant that starts (`online` on its status topic)
    gets every config again; after `kill -9` the broker sends the last will, `offline`; a
    restart says `online` and sends every config again."""
    topics = new_topics()
    broker = Broker(mosquitto.port, topics)
    wanted = all_configs(topics)
    status = topics.availability

    def configs_since(index: int) -> Callable[[list[Received]], bool]:
        return lambda g: wanted <= {r.topic for r in g[index:] if r.payload}

    try:
        with SimulatorServer(seed=29, now=test_time.now) as sim:
            config = cli_config(tmp_path, sim, topics, mosquitto.port, test_time.now())
            log = tmp_path / "first.log"
            with test_time.running(log, str(config)) as proc:
                broker.wait(
                    lambda g: "online" in payloads(g, status) and configs_since(0)(g),
                    "online and every config", exited(proc, log),
                )
                assert broker.retained_under(status, 1) == {status: "online"}
                # Home Assistant starts: every config again, and every channel's state.
                asked = len(broker.drain())
                broker.publish(topics.ha_status, "online")
                broker.wait(configs_since(asked), "the configs sent again", exited(proc, log))
                again = broker.since(asked)
                broker.wait(
                    lambda g: {topics.state(gid, n) for gid, n in HOUSEHOLD}
                    <= {r.topic for r in g[asked:]},
                    "the states sent again", exited(proc, log),
                )
                killed = len(broker.drain())
                proc.kill()  # SIGKILL: no goodbye; the broker publishes the will
                assert proc.wait(timeout=DEADLINE) == -signal.SIGKILL
            broker.wait(lambda g: "offline" in payloads(g[killed:], status), "the last will")
            assert broker.retained_under(status, 1) == {status: "offline"}

            restarted = len(broker.drain())
            log = tmp_path / "second.log"
            with test_time.running(log, str(config)) as proc:
                broker.wait(
                    lambda g: "online" in payloads(g[restarted:], status)
                    and configs_since(restarted)(g),
                    "online and every config after the restart", exited(proc, log),
                )
                assert broker.retained_under(status, 1) == {status: "online"}
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=DEADLINE) == 0, tail(log)
        got = broker.drain()
    finally:
        broker.close()

    # Availability went online, offline (the will), online, offline (the goodbye): nothing
    # else, and never two in a row the same.
    assert payloads(got, status) == ["online", "offline", "online", "offline"]
    # The re-announce: each config exactly once more, unchanged, and nothing removed.
    resent = [r for r in again if r.topic in wanted]
    assert sorted(r.topic for r in resent) == sorted(wanted), "each config once"
    before = configs(got[:asked], topics)
    assert {r.topic: r.json() for r in resent} == {t: before[t] for t in wanted}
    assert not [r.topic for r in got if r.topic.endswith("/config") and not r.payload]
    assert assert_never_negative(got, topics) > 0
    print(f"{len(resent)} configs sent again when Home Assistant said online")


# -- a rename in vuegraf.json and a reload ------------------------------------------------------


def test_a_renamed_circuit_keeps_its_unique_ids_and_counters_across_a_reload(
    mosquitto: MosquittoServer, tmp_path: Path, test_time: TestTime
) -> None:
    """Main Panel circuit 1 is named "Kitchen" in vuegraf.json, then SIGHUP: every entity
    keeps its unique_id and state topic (the circuit's name changes, its ids do not), and no
    energy value falls across the reload."""
    topics = new_topics()
    broker = Broker(mosquitto.port, topics)
    wanted = all_configs(topics)
    kitchen = {topics.sensor_config(1001, "1", kind) for kind in CHANNEL_KINDS}
    log = tmp_path / "vuegraf.log"
    try:
        with SimulatorServer(seed=37, now=test_time.now) as sim:
            config = cli_config(tmp_path, sim, topics, mosquitto.port, test_time.now())
            with test_time.running(log, str(config)) as proc:
                broker.wait(lambda g: wanted <= seen(g), "every config", exited(proc, log))
                before = configs(broker.drain(), topics)
                reloaded = len(broker.got)
                data = json.loads(config.read_text())
                data["accounts"][0]["devices"] = [{"name": "Main Panel", "channels": ["Kitchen"]}]
                written = config.with_name("vuegraf.json.new")
                written.write_text(json.dumps(data))
                written.chmod(0o600)
                written.replace(config)
                proc.send_signal(signal.SIGHUP)
                broker.wait(
                    lambda g: wanted <= {r.topic for r in g[reloaded:] if r.payload},
                    "every config after the reload", exited(proc, log),
                )
                broker.wait(
                    lambda g: {topics.state(gid, n) for gid, n in HOUSEHOLD}
                    <= {r.topic for r in g[reloaded:]},
                    "every state after the reload", exited(proc, log),
                )
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=DEADLINE) == 0, tail(log)
        got = broker.drain()
    finally:
        broker.close()
    assert "Config reloaded" in log.read_text()
    after = configs(got[reloaded:], topics)
    for topic in wanted:
        assert after[topic]["unique_id"] == before[topic]["unique_id"], topic
        assert after[topic]["state_topic"] == before[topic]["state_topic"], topic
        if topic in kitchen:
            assert "Kitchen" in after[topic]["name"] and "Kitchen" not in before[topic]["name"]
        else:
            assert after[topic] == before[topic], topic
    for gid, num in HOUSEHOLD:
        states = states_of(got, topics, gid, num)
        assert states_of(got[reloaded:], topics, gid, num), (gid, num, "no state after")
        for key in ("energy", "energy_exported"):
            values = [s[key] for s in states]
            assert values == sorted(values), (gid, num, key, values)
    assert assert_never_negative(got, topics) > 0


def rewrite_accounts(config: Path, accounts: list[dict[str, Any]]) -> None:
    """vuegraf.json with other accounts (owner-only, as vuegraf wants it), replaced at once."""
    data = json.loads(config.read_text())
    data["accounts"] = accounts
    written = config.with_name("vuegraf.json.new")
    written.write_text(json.dumps(data))
    written.chmod(0o600)
    written.replace(config)


def test_a_renamed_account_keeps_its_entities_and_one_taken_out_loses_them(
    mosquitto: MosquittoServer, tmp_path: Path, test_time: TestTime
) -> None:
    """The account is renamed in vuegraf.json ("Home" to "House", the same Emporia login) and
    vuegraf restarted: its devices are the same, so not one config is emptied (Home
    Assistant would delete the entities and their devices, with the user's settings, and
    make new ones). Then it is replaced by another Emporia account: once that account's
    devices are read, every entity of the old one is removed."""
    topics = new_topics()
    broker = Broker(mosquitto.port, topics)
    wanted = all_configs(topics)
    runs: list[list[Received]] = []

    def run(
        config: Path,
        accounts: list[dict[str, Any]],
        until: Callable[[set[str], set[str]], bool],
        what: str,
    ) -> None:
        """vuegraf with `accounts` until `until(configs published, configs emptied)` holds
        for what this run delivered, then SIGTERM; what it delivered is added to `runs`."""
        rewrite_accounts(config, accounts)
        begin = len(broker.drain())
        log = tmp_path / f"run{len(runs)}.log"
        with test_time.running(log, str(config)) as proc:
            broker.wait(
                lambda g: "online" in payloads(g[begin:], topics.availability)
                and until({r.topic for r in g[begin:] if r.payload}, {
                    r.topic for r in g[begin:] if not r.payload}),
                what, exited(proc, log),
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=DEADLINE) == 0, tail(log)
        runs.append(broker.drain()[begin:])

    try:
        with SimulatorServer(seed=41, now=test_time.now, accounts=1) as sim:
            config = cli_config(tmp_path, sim, topics, mosquitto.port, test_time.now())
            home = json.loads(config.read_text())["accounts"][0]

            def announced(published: set[str], _emptied: set[str]) -> bool:
                return wanted <= published

            run(config, [home], announced, "every config")
            run(config, [{**home, "name": "House"}], announced, "every config, renamed")
            run(
                config,
                [{**home, "name": "Other", "simulatorUrl": sim.account_url(0)}],
                lambda _published, emptied: wanted <= emptied,
                "the old account's configs emptied",
            )
    finally:
        broker.close()
    first, renamed, replaced = runs
    # The rename: the same configs again, none emptied in between.
    assert not [r.topic for r in renamed if r.topic.endswith("/config") and not r.payload]
    assert {t: c for t, c in configs(renamed, topics).items() if t in wanted} == {
        t: c for t, c in configs(first, topics).items() if t in wanted
    }
    # Another account: each of the old entities removed once, its configs and states; the
    # new account's devices (gids shifted by 100000 in the simulator) announced.
    emptied = [r.topic for r in replaced if not r.payload]
    assert len(emptied) == len(set(emptied))
    assert wanted | {topics.state(g, n) for g, n in HOUSEHOLD} <= set(emptied)
    assert topics.sensor_config(101001, MAINS, "energy") in configs(replaced, topics)


# -- 6. a shard replica -------------------------------------------------------------------------


def shard_owner(name: str, count: int) -> int:
    """The README's rule: SHA-256 of the account name, first 8 bytes, modulo the count."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def test_a_shard_replica_has_an_availability_topic_and_will_of_its_own(
    mosquitto: MosquittoServer, tmp_path: Path, test_time: TestTime
) -> None:
    """`--shard 0/2`: the replica says online (and its will says offline) on
    `<availabilityTopic>/0-of-2`, and its entities' configs name that topic, so one replica
    that dies marks only its own entities unavailable."""
    topics = new_topics()
    broker = Broker(mosquitto.port, topics)
    own = f"{topics.availability}/0-of-2"
    wanted = all_configs(topics)
    assert shard_owner(ACCOUNT, 2) == 0  # replica 0 of 2 collects this account
    log = tmp_path / "vuegraf.log"
    try:
        with SimulatorServer(seed=31, now=test_time.now) as sim:
            config = cli_config(tmp_path, sim, topics, mosquitto.port, test_time.now())
            with test_time.running(log, str(config), "--shard", "0/2") as proc:
                broker.wait(
                    lambda g: "online" in payloads(g, own) and wanted <= seen(g),
                    "online on the replica's topic and every config", exited(proc, log),
                )
                proc.kill()
                assert proc.wait(timeout=DEADLINE) == -signal.SIGKILL
            broker.wait(lambda g: "offline" in payloads(g, own), "the replica's last will")
        got = broker.drain()
    finally:
        broker.close()
    assert payloads(got, own) == ["online", "offline"]
    assert payloads(got, topics.availability) == [], "the shared topic is no replica's"
    found = configs(got, topics)
    assert wanted <= set(found)
    assert {c["availability_topic"] for c in found.values()} == {own}


# -- children in virtual time ---------------------------------------------------------------


class Children:
    """virtual_vuegraf.py children following the clock file `lockstep` moves."""

    def __init__(self, tmp_path: Path, config: Path, lockstep: Lockstep) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.lockstep = lockstep
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.tmp_path / f"run{self.runs}.log"

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        with self.log.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(HARNESS), str(self.config), str(self.lockstep.clock),
                 "--follow", "vuegraf"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )
        self.lockstep.adopt("vuegraf", proc)
        return proc

    def describe(self, _name: str) -> str:
        return f"\n--- run {self.runs}:\n{tail(self.log, 15)}"

    def alive(self) -> str | None:
        proc = self.lockstep.procs.get("vuegraf")
        if proc is None or proc.poll() is None:
            return None
        return f"vuegraf exited ({proc.returncode}):{self.describe('vuegraf')}"

    def run_until(self, end: datetime) -> None:
        """Move time tick by tick to `end`, then wait for the child to be parked again."""
        self.lockstep.run_until(end, describe=self.describe)
        self.lockstep.wait_parked(describe=self.describe)

    def kill(self) -> None:
        """SIGKILL (no goodbye); time then moves on without the child."""
        proc = self.lockstep.drop("vuegraf")
        proc.kill()
        assert proc.wait(timeout=DEADLINE) == -signal.SIGKILL

    def stop(self) -> None:
        proc = self.lockstep.drop("vuegraf")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == 0, self.describe("vuegraf")

    def kill_all(self) -> None:
        for proc in self.lockstep.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@contextmanager
def children(tmp_path: Path, config: Path, lockstep: Lockstep) -> Iterator[Children]:
    kids = Children(tmp_path, config, lockstep)
    try:
        yield kids
    finally:
        kids.kill_all()


# -- 4. a device and a circuit that vanish ------------------------------------------------------

REMOVED_DEVICE = 3001  # the EV charger, on the garage panel
REMOVED_CIRCUIT = (1001, "16")


def test_a_device_and_a_circuit_gone_from_emporia_get_their_configs_removed(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    """The EV charger and Main Panel circuit 16 leave the account while vuegraf runs: at the
    next device refresh their configs and states are emptied (retained), so Home Assistant
    removes them, and every other config stays as it was."""
    t0 = datetime(2026, 11, 23, 14, 0, 20, tzinfo=UTC)
    topics = new_topics()
    broker = Broker(mosquitto.port, topics)
    lockstep = Lockstep(tmp_path / "clock", t0)
    wanted = all_configs(topics)
    removed = {
        topics.sensor_config(REMOVED_DEVICE, MAINS, "power"),
        topics.sensor_config(REMOVED_DEVICE, MAINS, "energy"),
        topics.connectivity_config(REMOVED_DEVICE),
        topics.sensor_config(*REMOVED_CIRCUIT, "power"),
        topics.sensor_config(*REMOVED_CIRCUIT, "energy"),
    }
    emptied_states = {
        topics.state(REMOVED_DEVICE, MAINS),
        topics.connectivity(REMOVED_DEVICE),
        topics.state(*REMOVED_CIRCUIT),
    }
    settings = {
        "mqtt": topics.mqtt_settings(mosquitto.port),
        "deviceRefreshSecs": 60,
        "detailedDataHoursEnabled": False,
        "detailedDataDaysEnabled": False,
    }
    try:
        with (
            SimulatorServer(seed=47, now=lockstep.now) as sim,
            children(
                tmp_path, write_simulator_config(tmp_path, sim.url, settings, ACCOUNT), lockstep
            ) as kids,
        ):
            seed_minute(
                simulator_config(tmp_path, sim.url, settings, ACCOUNT),
                sim.model,
                oracle.floor_to(t0, 60) - timedelta(minutes=3),
            )
            kids.start()
            kids.run_until(t0 + timedelta(minutes=2))
            broker.wait(lambda g: wanted <= set(configs(g, topics)), "every config", kids.alive)
            before = configs(broker.drain(), topics)
            changed = len(broker.got)
            sim.remove_device(REMOVED_DEVICE)
            sim.remove_circuit(*REMOVED_CIRCUIT)
            # A device refresh is due every minute; what vanished goes once it has delivered
            # no minute for homeassistant.STILL_THERE (15 min).
            kids.run_until(t0 + timedelta(minutes=20))
            broker.wait(
                lambda g: {r.topic for r in g[changed:] if r.payload == ""}
                >= removed | emptied_states,
                "empty configs for the vanished device and circuit", kids.alive,
            )
            kept = {t: json.dumps(c, sort_keys=True) for t, c in before.items() if t not in removed}
            retained = broker.retained_under(f"{topics.discovery}/#", len(kept))
            kids.stop()
        got = broker.drain()
    finally:
        broker.close()
    # Removed: exactly the vanished device's and circuit's configs and states, each once.
    emptied = [r.topic for r in got if r.payload == ""]
    assert sorted(emptied) == sorted(removed | emptied_states)
    for topic in removed | emptied_states:  # and nothing published there after that
        assert payloads(got, topic)[-1] == "", (topic, payloads(got, topic))
    # Kept: every other config, as it was, still retained by the broker.
    assert {t: json.dumps(json.loads(p), sort_keys=True) for t, p in retained.items()} == kept
    assert len(kept) == len(before) - len(removed) >= len(wanted) - len(removed)


# -- 5. energy counters: outage, SIGKILL, pause, backfill ----------------------------------------

COUNTER_SEED = 61
# Where each run of the counter test starts, and which counters must rise in its window:
# - 06:50 in New York on a June morning: the garage panel's mains turn from drawing to
#   feeding back (both of its counters rise), solar feeds back, the main panel draws;
# - 23:50 before the 25-hour day of the autumn clock change: local midnight falls in the
#   pause, inside the minutes the restart backfills; no counter may jump or start again.
COUNTER_RUNS = {
    "june-morning": (
        datetime(2026, 6, 21, 10, 50, 20, tzinfo=UTC),
        {(1001, MAINS, "drawn"), (1002, MAINS, "drawn"), (1002, MAINS, "fed"), (1002, "1", "fed")},
    ),
    "midnight-before-dst-change": (
        datetime(2026, 11, 1, 3, 50, 20, tzinfo=UTC),
        {(1001, MAINS, "drawn"), (1001, "2", "drawn"), (1002, MAINS, "drawn")},
    ),
}
# Channels whose counters are followed: the main panel's mains, a circuit (the furnace),
# solar, the garage panel's mains. Their minutes never have gaps.
CHECKED = [(1001, MAINS), (1001, "2"), (1002, "1"), (1002, MAINS)]
# The ledger's origin rule: a counter starts 2 minutes before the clock when first seen.
ORIGIN_SLACK = timedelta(minutes=2)
OUTAGE = timedelta(minutes=4)
PAUSE = timedelta(minutes=5)
ENERGY = "vuegraf_energy_joules_total"
EXPORTED = "vuegraf_energy_exported_joules_total"


@dataclass(frozen=True)
class Reading:
    """One channel's counters as vuegraf showed them at one moment."""

    minute: datetime  # the state's `time`: the newest minute in it
    imported_kwh: float  # the state's `energy`
    exported_kwh: float  # the state's `energy_exported`
    imported_j: float  # vuegraf_energy_joules_total
    exported_j: float  # vuegraf_energy_exported_joules_total


def scrape(port: int) -> dict[tuple[str, str], float]:
    """(metric, channel) -> value of the account's energy counters on /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        body = answer.read().decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in (ENERGY, EXPORTED) and sample.labels.get("account") == ACCOUNT:
                out[(sample.name, sample.labels["channel"])] = float(sample.value)
    return out


def observe(
    broker: Broker, topics: Topics, minute: datetime, port: int, alive: Callable[[], str | None]
) -> dict[tuple[int, str], Reading]:
    """With the child parked after the tick that read `minute`: each checked channel's newest
    state (which must name that minute) and its counters on /metrics."""
    stamp = minute.strftime("%Y-%m-%dT%H:%M:%SZ")
    broker.wait(
        lambda g: all(
            any(s["time"] == stamp for s in states_of(g, topics, gid, num))
            for gid, num in CHECKED
        ),
        f"the states of {stamp}",
        alive,
    )
    metrics = scrape(port)
    out = {}
    for gid, num in CHECKED:
        state = states_of(broker.got, topics, gid, num)[-1]
        assert state["time"] == stamp, state
        name = oracle.DEFAULT_NAMES[(gid, num)]
        out[(gid, num)] = Reading(
            minute, state["energy"], state["energy_exported"],
            metrics[(ENERGY, name)], metrics[(EXPORTED, name)],
        )
    return out


def model_joules(
    model: UsageModel, gid: int, num: str, first: datetime, last: datetime
) -> tuple[float, float, int]:
    """(drawn, fed back) joules of the model's minutes first..last, both included, and how
    many minutes: a minute of w watts is w x 60 J, drawn if w > 0, fed back if w < 0."""
    drawn = fed = 0.0
    minutes = 0
    t = first
    while t <= last:
        watts = model_watts(model, gid, num, t)
        assert watts is not None, (gid, num, t)
        drawn += max(watts, 0.0) * 60
        fed += max(-watts, 0.0) * 60
        minutes += 1
        t += timedelta(minutes=1)
    return drawn, fed, minutes


def influx_joules(
    client: Any, name: str, first: datetime, last: datetime
) -> tuple[float, float, int]:
    """The same from the minutes InfluxDB holds for the channel, first..last included."""
    result = client.query(
        f"SELECT usage FROM energy_usage WHERE account_name = '{ACCOUNT}' "
        f"AND device_name = '{name}' AND detailed = 'False' "
        f"AND time >= {int(first.timestamp())}s AND time <= {int(last.timestamp())}s",
        epoch="s",
    )
    watts = [float(row["usage"]) for row in result.get_points()]
    drawn = sum(max(w, 0.0) * 60 for w in watts)
    fed = sum(max(-w, 0.0) * 60 for w in watts)
    return drawn, fed, len(watts)


def last_read(end: datetime) -> datetime:
    """The minute the last tick before `end` read: ticks come at hh:mm:05 (lagSecs 5) and
    read the minute before."""
    return oracle.floor_to(end - timedelta(seconds=5), 60) - timedelta(minutes=1)


@pytest.mark.parametrize("run", sorted(COUNTER_RUNS))
def test_energy_counters_survive_an_outage_a_kill_and_a_backfill_and_match_every_view(
    mosquitto: MosquittoServer,
    influxdb_v1_db: tuple[InfluxV1Server, str],
    tmp_path: Path,
    run: str,
) -> None:
    """The counters of CHECKED, seen at a first observation (5 minutes in) and a last one
    (6 minutes after a restart): in between, Emporia fails for 4 minutes, vuegraf is
    SIGKILLed and stays down 5 more, then fills the hole. Every state ever published rises
    or stays; nothing is counted while Emporia fails; the first observation holds the
    minutes from the counter's origin on (not the day the first start filled); the increase
    equals the model's minutes in between, the minutes InfluxDB holds, and the increase of
    the Prometheus counters."""
    t0, rising = COUNTER_RUNS[run]
    server, database = influxdb_v1_db
    client = server.client(database)
    (port,) = free_ports(1)
    topics = new_topics()
    broker = Broker(mosquitto.port, topics)
    lockstep = Lockstep(tmp_path / "clock", t0)
    settings = {
        "influxDb": {"host": server.host, "port": server.port, "database": database},
        "mqtt": topics.mqtt_settings(mosquitto.port),
        "prometheus": {"port": port},
        "detailedDataHoursEnabled": False,
        "detailedDataDaysEnabled": False,
    }
    status = topics.availability
    try:
        with (
            SimulatorServer(seed=COUNTER_SEED, now=lockstep.now) as sim,
            children(
                tmp_path, write_simulator_config(tmp_path, sim.url, settings, ACCOUNT), lockstep
            ) as kids,
        ):
            # An earlier run stored minutes up to a day ago: the first start fills that day,
            # which is history, not energy used since the counters began.
            seed_minute(
                simulator_config(tmp_path, sim.url, settings, ACCOUNT),
                sim.model,
                oracle.floor_to(t0, 60) - timedelta(days=1),
            )
            kids.start()
            a_end = t0 + timedelta(minutes=5)
            kids.run_until(a_end)
            first = observe(broker, topics, last_read(a_end), port, kids.alive)

            # Emporia fails every usage and chart request: nothing may be counted meanwhile.
            sim.set_fault(503, ["getDeviceListUsages", "getChartUsage"])
            outage_start = len(broker.drain())
            kids.run_until(a_end + OUTAGE)
            during = scrape(port)
            broker.drain()
            killed = len(broker.got)
            kids.kill()
            broker.wait(lambda g: "offline" in payloads(g[killed:], status), "the last will")
            # Down a while, then Emporia is back and vuegraf restarts and backfills.
            lockstep.set(lockstep.now() + PAUSE)
            sim.clear_fault()
            restarted_at = lockstep.now()
            kids.start()
            b_end = restarted_at + timedelta(minutes=6)
            kids.run_until(b_end)
            last = observe(broker, topics, last_read(b_end), port, kids.alive)
            kids.stop()
            model = sim.model
        got = broker.drain()
    finally:
        broker.close()

    origin = oracle.floor_to(t0 - ORIGIN_SLACK, 60)
    report = []
    for gid, num in CHECKED:
        name = oracle.DEFAULT_NAMES[(gid, num)]
        a, b = first[(gid, num)], last[(gid, num)]
        # Every state ever published for the channel: never a fall, also across the kill.
        states = states_of(got, topics, gid, num)
        for key in ("energy", "energy_exported"):
            values = [s[key] for s in states]
            assert values == sorted(values), (name, key, values)
            assert values[0] >= 0
        # Nothing counted while Emporia failed: no state rose, /metrics stood still.
        for s in states_of(got[outage_start:killed], topics, gid, num):
            assert (s["energy"], s["energy_exported"]) == (a.imported_kwh, a.exported_kwh)
        assert during[(ENERGY, name)] == a.imported_j
        assert during[(EXPORTED, name)] == a.exported_j

        # At the first observation: the minutes from the origin on, not the day filled.
        drawn, fed, _n = model_joules(model, gid, num, origin, a.minute)
        assert a.imported_j == pytest.approx(drawn, rel=1e-9, abs=1e-6), name
        assert a.exported_j == pytest.approx(fed, rel=1e-9, abs=1e-6), name
        # The increase: exactly the minutes after the first observation's through the
        # last's, in the model, in InfluxDB, on /metrics and in Home Assistant's state.
        since = a.minute + timedelta(minutes=1)
        drawn, fed, minutes = model_joules(model, gid, num, since, b.minute)
        stored = influx_joules(client, name, since, b.minute)
        assert stored[2] == minutes, (name, "minutes stored", stored[2], minutes)
        assert stored[0] == pytest.approx(drawn, rel=1e-9, abs=1e-6), name
        assert stored[1] == pytest.approx(fed, rel=1e-9, abs=1e-6), name
        assert b.imported_j - a.imported_j == pytest.approx(drawn, rel=1e-9, abs=1e-6), name
        assert b.exported_j - a.exported_j == pytest.approx(fed, rel=1e-9, abs=1e-6), name
        for reading in (a, b):  # the state is the counter in kWh, rounded to 6 decimals
            assert reading.imported_kwh == pytest.approx(reading.imported_j / JOULES_PER_KWH,
                                                         abs=6e-7), name
            assert reading.exported_kwh == pytest.approx(reading.exported_j / JOULES_PER_KWH,
                                                         abs=6e-7), name
        report.append(
            f"{name}: +{(b.imported_j - a.imported_j) / JOULES_PER_KWH:.6f} kWh drawn, "
            f"+{(b.exported_j - a.exported_j) / JOULES_PER_KWH:.6f} kWh fed back over "
            f"{minutes} minutes ({a.minute:%H:%M} to {b.minute:%H:%M} UTC)"
        )
    # The window's counters that must rise did (the checks above are not about zeros).
    for gid, num, which in rising:
        a, b = first[(gid, num)], last[(gid, num)]
        assert (b.imported_j > a.imported_j) if which == "drawn" else (
            b.exported_j > a.exported_j), (gid, num, which)
    assert payloads(got, status) == ["online", "offline", "online", "offline"]
    assert assert_never_negative(got, topics) > 0
    client.close()
    print("\n".join(report))
