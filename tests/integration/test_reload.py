"""SIGHUP to the real `python -m vuegraf CONFIG` process, on the real clock, against the simulator.

- A reload that moves InfluxDB to another database: points go to the new one (values equal to
  the simulator's model for every minute found there), and none to the old one after it.
- One that moves MQTT to another broker and topic: messages arrive there (equal to the model),
  nothing more on the old broker.
- One that moves Prometheus to another port: the old port is closed, the new one serves
  /metrics with the model's watts.
- One that brings a new secret (run with -d, where the secret would show): masked in every line
  from the reload on.
- SIGTERM while the reload is reading the new config: exit 0, no second run started.

Verdicts never depend on the hour or the load: every wait is on a condition (a log line, a row,
a message) with a deadline of a minute or more, and expected values come from the simulator's
model for exactly the buckets found.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.testtime import TestTime
from servers import MosquittoServer, free_ports, require_binary
from vuegraf.simulator import SimulatorServer, UsageModel

pytestmark = pytest.mark.integration

SEED = 83
DEADLINE = 90.0  # seconds any one condition may take to come true


# -- the process ------------------------------------------------------------------------------


class Vuegraf:
    """`python -m vuegraf CONFIG [flags]` with its stderr in a log file."""

    def __init__(self, test_time: TestTime, config: Path, *flags: str) -> None:
        self.log = config.with_suffix(".log")
        self.proc = subprocess.Popen(
            test_time.vuegraf(str(config), *flags),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        self._lines: list[str] = []
        self._offset = 0
        self._partial = b""

    def lines(self) -> list[str]:
        """The log so far (read on from where the last call stopped: -d logs are large)."""
        with self.log.open("rb") as f:
            f.seek(self._offset)
            data = self._partial + f.read()
        self._offset += len(data) - len(self._partial)
        *complete, self._partial = data.split(b"\n")
        self._lines.extend(line.decode(errors="replace") for line in complete)
        return self._lines

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines())

    def tail(self) -> str:
        return "\n".join(self.lines()[-40:])

    def wait_for(self, condition: Callable[[], bool], what: str,
                 timeout: float = DEADLINE) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"vuegraf exited ({self.proc.returncode}) before {what}:\n"
                                     + self.tail())
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s:\n" + self.tail())
            time.sleep(0.05)

    def wait_log(self, text: str, times: int = 1) -> None:
        self.wait_for(lambda: self.count(text) >= times, f"{times} x {text!r} in the log")

    def reload(self, config: Path, data: dict[str, Any]) -> None:
        """Write the new config, SIGHUP, and wait until it is loaded."""
        write_json(config, data)
        reloaded = self.count("Config reloaded")
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log("Config reloaded", reloaded + 1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=DEADLINE)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def lines_after(self, text: str) -> list[str]:
        lines = self.lines()
        at = max(i for i, line in enumerate(lines) if text in line)
        return lines[at + 1:]


@pytest.fixture
def run_vuegraf(test_time: TestTime) -> Iterator[Callable[..., Vuegraf]]:
    """Starts vuegraf at the test's time (VUEGRAF_TEST_START shifts it; the simulator must be
    given `test_time.now` too); stops whatever is left at the end."""
    started: list[Vuegraf] = []

    def start(config: Path, *flags: str) -> Vuegraf:
        started.append(Vuegraf(test_time, config, *flags))
        return started[-1]

    yield start
    for v in started:
        v.stop()


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def base_config(sim: SimulatorServer, **extra: Any) -> dict[str, Any]:
    return {
        "accounts": [{"name": "Home", "email": "me@example.com", "password": "pw-0ld-one",
                      "simulatorUrl": sim.url}],
        "stateDir": "state",
        "timezone": "America/New_York",
        **extra,
    }


# -- the model as oracle ----------------------------------------------------------------------


def series_by_name(model: UsageModel) -> dict[str, tuple[int, str]]:
    """Stored channel name -> (gid, channel) for every channel the simulator serves (live ones
    too), by upstream's rule: mains and one-channel devices carry the device's name, any other
    channel `<device>-<channel>`."""
    return {
        (dev if num == "1,2,3" else f"{dev}-{num}"): (gid, num)
        for gid, num, dev, _name, _chart in model.channels()
    }


def minute_watts(model: UsageModel, gid: int, num: str, start: datetime) -> float | None:
    kwh = model.device_values(gid, "1MIN", start)[num]
    return None if kwh is None else kwh * 60_000


def check_minutes(model: UsageModel, found: dict[tuple[str, int], float]) -> tuple[int, int]:
    """Every (channel, minute) found equals the model; the newest minute found is complete
    (every channel the model has a value for). Returns (values checked, newest epoch)."""
    names = series_by_name(model)
    for (name, epoch), watts in found.items():
        gid, num = names[name]
        want = minute_watts(model, gid, num, datetime.fromtimestamp(epoch, UTC))
        assert want is not None, (name, epoch)
        assert watts == pytest.approx(want, rel=1e-9, abs=1e-9), (name, epoch)
    newest = max(epoch for _name, epoch in found)
    bucket = datetime.fromtimestamp(newest, UTC)
    want_names = {n for n, (g, c) in names.items() if minute_watts(model, g, c, bucket) is not None}
    assert {n for n, e in found if e == newest} == want_names
    return len(found), newest


# -- InfluxDB -----------------------------------------------------------------------------------


def influx_minutes(client: Any) -> dict[tuple[str, int], float]:
    result = client.query("SELECT usage FROM energy_usage WHERE detailed = 'False' "
                          "GROUP BY device_name", epoch="s")
    return {(tags["device_name"], int(row["time"])): row["usage"]
            for (_m, tags), rows in result.items() for row in rows}


def test_reload_to_another_influx_database(influxdb_v1, tmp_path, run_vuegraf, test_time):
    old_db, new_db = (f"reload_{uuid.uuid4().hex[:10]}" for _ in range(2))
    admin = influxdb_v1.client()
    try:
        with SimulatorServer(seed=SEED, now=test_time.now) as sim:
            influx = {"host": influxdb_v1.host, "port": influxdb_v1.port}
            config = tmp_path / "vuegraf.json"
            write_json(config, base_config(sim, influxDb={**influx, "database": old_db}))
            vuegraf = run_vuegraf(config)
            old, new = influxdb_v1.client(old_db), influxdb_v1.client(new_db)
            vuegraf.wait_log("Cycle at")
            vuegraf.wait_for(lambda: bool(influx_minutes(old)), "minutes in the old database")

            vuegraf.reload(config, base_config(sim, influxDb={**influx, "database": new_db}))
            # The old run closed its sinks before the reload: from here on nothing may land
            # in the old database.
            old_rows = influx_minutes(old)
            cycles = vuegraf.count("Cycle at")
            vuegraf.wait_log("Cycle at", cycles + 1)
            vuegraf.wait_for(lambda: bool(influx_minutes(new)), "minutes in the new database")
            assert influx_minutes(old) == old_rows
            checked, newest = check_minutes(sim.model, influx_minutes(new))
            assert newest >= max(epoch for _n, epoch in old_rows)
            print(f"after the reload: {checked} minute values in {new_db}, equal to the model")
            assert vuegraf.stop() == 0
        assert "Traceback" not in vuegraf.log.read_text()
    finally:
        for db in (old_db, new_db):
            admin.drop_database(db)
        admin.close()


# -- MQTT -------------------------------------------------------------------------------------


class Subscriber:
    """Records every message a broker delivers on `topic` (a filter)."""

    def __init__(self, port: int, topic: str) -> None:
        self.inbox: queue.Queue[tuple[str, str]] = queue.Queue()
        self.got: list[tuple[str, str]] = []
        subscribed: queue.Queue[bool] = queue.Queue()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex}")
        client.on_message = lambda _c, _u, m: self.inbox.put((m.topic, m.payload.decode()))
        client.on_subscribe = lambda *_a: subscribed.put(True)
        client.connect("127.0.0.1", port)
        client.loop_start()
        client.subscribe(topic, qos=1)
        subscribed.get(timeout=DEADLINE)
        self.client = client
        self.port = port

    def drain(self) -> list[tuple[str, str]]:
        while True:
            try:
                self.got.append(self.inbox.get_nowait())
            except queue.Empty:
                return self.got

    def until(self, condition: Callable[[list[tuple[str, str]]], bool], what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition(self.drain()):
            assert time.monotonic() < deadline, f"no {what} within {DEADLINE} s: {self.got}"
            time.sleep(0.05)

    def marker(self, topic: str) -> int:
        """Publish a marker through the same broker and wait for it: everything the broker
        took before it has then been delivered. Returns the marker's index in `got`."""
        text = f"marker-{uuid.uuid4().hex}"
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        publisher.connect("127.0.0.1", self.port)
        publisher.loop_start()
        publisher.publish(topic, text, qos=1).wait_for_publish(DEADLINE)
        publisher.disconnect()
        publisher.loop_stop()
        self.until(lambda got: (topic, text) in got, "marker")
        return self.got.index((topic, text))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_messages(model: UsageModel, messages: list[tuple[str, str]]) -> int:
    """Every upstream-format message equals the model's watts for its channel and minute."""
    names = series_by_name(model)
    for _topic, payload in messages:
        msg = json.loads(payload)
        assert msg["account"] == "Home" and msg["detailed"] == "False"
        gid, num = names[msg["device_name"]]
        want = minute_watts(model, gid, num, datetime.fromtimestamp(msg["epoch_s"], UTC))
        assert msg["usage_watts"] == pytest.approx(want, rel=1e-9, abs=1e-9), msg
    return len(messages)


STATUS_TOPIC = "vuegraf/status"  # the default availability topic


def test_reload_to_another_mqtt_broker_and_topic(mosquitto, tmp_path, run_vuegraf, test_time):
    old_topic, new_topic = f"old/{uuid.uuid4().hex[:8]}", f"new/{uuid.uuid4().hex[:8]}"
    with MosquittoServer(require_binary("mosquitto")) as new_broker, \
            SimulatorServer(seed=SEED, now=test_time.now) as sim:
        on_old = Subscriber(mosquitto.port, "#")  # any topic on the old broker
        on_new = Subscriber(new_broker.port, "#")
        try:
            config = tmp_path / "vuegraf.json"
            write_json(config, base_config(
                sim, mqtt={"host": "127.0.0.1", "port": mosquitto.port, "topic": old_topic}))
            vuegraf = run_vuegraf(config)
            on_old.until(lambda got: any(t == old_topic for t, _p in got), "message on old")

            vuegraf.reload(config, base_config(
                sim, mqtt={"host": "127.0.0.1", "port": new_broker.port, "topic": new_topic}))
            # The old run's sink has closed (its messages acknowledged by the broker): after a
            # marker through the old broker, all of them have arrived.
            first = on_old.marker("test/marker-1")
            on_new.until(lambda got: any(t == new_topic for t, _p in got), "message on new")
            # The new run has published; a second marker: nothing new on the old broker.
            second = on_old.marker("test/marker-2")
            assert on_old.got[first + 1:second] == []
            # Besides the messages, each run's availability (README.md, "MQTT"): the old run
            # said offline to the old broker as it closed; the new one is online on the new.
            old_status = [p for t, p in on_old.got[:first] if t == STATUS_TOPIC]
            assert old_status[-2:] == ["online", "offline"]  # (earlier: retained, other tests)
            assert [p for t, p in on_new.got if t == STATUS_TOPIC] == ["online"]
            messages = [(t, p) for t, p in on_new.got if t != STATUS_TOPIC]
            assert [t for t, _p in messages] == [new_topic] * len(messages)
            n = check_messages(sim.model, messages)
            check_messages(sim.model, [(t, p) for t, p in on_old.got if t == old_topic])
            print(f"after the reload: {n} messages on the new broker, equal to the model")
            assert vuegraf.stop() == 0
        finally:
            on_old.close()
            on_new.close()


# -- Prometheus ---------------------------------------------------------------------------------


def scrape(port: int) -> str | None:
    """/metrics, or None when nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            return str(answer.read().decode())
    except (ConnectionRefusedError, urllib.error.URLError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, ConnectionRefusedError) or isinstance(err, ConnectionRefusedError):
            return None
        raise


def power(text: str) -> dict[str, tuple[float, int]]:
    """channel -> (watts, minute start) from vuegraf_power_watts and its timestamp gauge."""
    watts: dict[str, float] = {}
    stamps: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vuegraf_power_watts":
                watts[sample.labels["channel"]] = sample.value
            elif sample.name == "vuegraf_power_timestamp_seconds":
                stamps[sample.labels["channel"]] = int(sample.value)
    return {name: (w, stamps[name]) for name, w in watts.items()}


def test_reload_to_another_prometheus_port(tmp_path, run_vuegraf, test_time):
    old_port, new_port = free_ports(2)
    with SimulatorServer(seed=SEED, now=test_time.now) as sim:
        config = tmp_path / "vuegraf.json"
        write_json(config, base_config(sim, prometheus={"port": old_port}))
        vuegraf = run_vuegraf(config)
        vuegraf.wait_for(lambda: bool(power(scrape(old_port) or "")), "watts on the old port")

        vuegraf.reload(config, base_config(sim, prometheus={"port": new_port}))
        assert scrape(old_port) is None, "the old port still answers"
        vuegraf.wait_for(lambda: bool(power(scrape(new_port) or "")), "watts on the new port")
        values = power(scrape(new_port) or "")
        found = {(name, stamp): w for name, (w, stamp) in values.items()}
        checked, _newest = check_minutes(sim.model, found)
        assert scrape(old_port) is None
        print(f"after the reload: {checked} channels on port {new_port}, equal to the model")
        assert vuegraf.stop() == 0


# -- a new secret ---------------------------------------------------------------------------------

# The new password also occurs in what -d prints (a circuit the new config names after it), so
# any line logged with it unmasked would show it.
NEW_SECRET = "Sauna-7Qz pw/x"


def test_a_new_secret_is_masked_from_the_first_line_after_the_reload(
    tmp_path, run_vuegraf, test_time
):
    with SimulatorServer(seed=SEED, now=test_time.now) as sim:
        config = tmp_path / "vuegraf.json"
        write_json(config, base_config(sim))
        vuegraf = run_vuegraf(config, "-d")
        vuegraf.wait_log("point Point(")

        new = base_config(sim)
        new["accounts"][0]["password"] = NEW_SECRET
        new["accounts"][0]["devices"] = [{"name": "Main Panel", "channels": {"3": NEW_SECRET}}]
        vuegraf.reload(config, new)
        renamed = re.compile(r"device='Main Panel', channel='(\*\*\*|Sauna)")
        vuegraf.wait_for(lambda: any(renamed.search(line)
                                     for line in vuegraf.lines_after("Config reloaded")),
                         "a point of the renamed circuit")
        assert vuegraf.stop() == 0

    lines = vuegraf.lines()
    assert not [line for line in lines if NEW_SECRET in line or "Sauna-7Qz" in line]
    # The old run may still log points of the old config between the SIGHUP and the reload.
    after = vuegraf.lines_after("Config reloaded")
    points = [line for line in after if "point Point(" in line and "device='Main Panel'" in line]
    masked = [line for line in points if "channel='***'" in line]
    assert masked, "the renamed circuit's points were never logged"
    # The first point of that circuit after the reload is already masked: no line before it
    # could carry the name (the old config did not know it).
    first = next(line for line in points if re.search(r"channel='(Main Panel-3|\*\*\*)'", line))
    assert "channel='***'" in first


# -- SIGTERM during a reload ----------------------------------------------------------------------

FIFO_SECRET = "from-a-fifo pw"


def feed(fifo: Path) -> threading.Thread:
    """Write the password once, when vuegraf opens the pipe to read its config."""
    def write() -> None:
        with fifo.open("w") as f:
            f.write(FIFO_SECRET)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def reader_waiting(fifo: Path) -> bool:
    """True once someone has the pipe open for reading (then a non-blocking writer may open)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    os.close(fd)
    return True


def test_sigterm_while_the_reload_reads_the_config_stops_cleanly(tmp_path, run_vuegraf, test_time):
    fifo = tmp_path / "password.pipe"
    os.mkfifo(fifo)
    with SimulatorServer(seed=SEED, now=test_time.now) as sim:
        data = base_config(sim)
        data["accounts"][0].pop("password")
        data["accounts"][0]["passwordFile"] = fifo.name  # reading it blocks until written
        config = tmp_path / "vuegraf.json"
        write_json(config, data)
        feed(fifo)
        vuegraf = run_vuegraf(config)
        vuegraf.wait_log("Cycle at")

        vuegraf.proc.send_signal(signal.SIGHUP)
        vuegraf.wait_log("Stopped after")
        # The reload is now reading the config: it waits for the password pipe. Hold the
        # pipe open (so its read waits for data), then SIGTERM.
        vuegraf.wait_for(lambda: reader_waiting(fifo), "the reload reading the password pipe")
        held = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            vuegraf.proc.send_signal(signal.SIGTERM)
            vuegraf.wait_log("Received SIGTERM; stopping")
            os.write(held, FIFO_SECRET.encode())
        finally:
            os.close(held)
        code = vuegraf.proc.wait(timeout=DEADLINE)

    assert code == 0, vuegraf.tail()
    lines = vuegraf.lines()
    assert sum("Collecting every" in line for line in lines) == 1, vuegraf.tail()
    after = vuegraf.lines_after("Received SIGTERM")
    assert not [line for line in after if "Cycle at" in line or "Collecting" in line]
    assert any("Stopped during the reload" in line for line in after)
    assert not [line for line in lines if "Traceback" in line or FIFO_SECRET in line]
