"""Home Assistant discovery and energy counters: MQTT messages per minute, and their CPU cost.

Runs the real daemon in virtual time against the bundled simulator (the default household),
the embedded SQLite store and a real Mosquitto, twice per round: MQTT as upstream had it
(`homeAssistant` off), then with Home Assistant discovery on (which adds the energy ledger,
committed to `energy.sqlite` after every batch). `mosquitto_sub`, in a process of its own,
counts what the broker delivered; each simulated minute waits until the broker delivered what
vuegraf published. Prints, for the steady minutes after the first:

- MQTT messages per simulated minute, by kind (upstream messages, Home Assistant states,
  configs, connectivity), for each run;
- the process CPU seconds per simulated minute of each run (the simulator, pyemvue and SQLite
  are in both), and the difference: what discovery and the counters cost per minute; the
  median of `--rounds` rounds, each run measured with `time.process_time`.

    .venv/bin/python bench/homeassistant.py [--minutes 120] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test servers' launcher

from servers import MosquittoServer, poll_until  # noqa: E402
from vuegraf.clock import FakeClock  # noqa: E402
from vuegraf.config import parse_config  # noqa: E402
from vuegraf.daemon import Daemon  # noqa: E402
from vuegraf.emporia import EmporiaAccount  # noqa: E402
from vuegraf.model import Point, Scale  # noqa: E402
from vuegraf.schedule import next_tick  # noqa: E402
from vuegraf.simulator import SimulatorServer  # noqa: E402
from vuegraf.sinks.factory import build_ledger, build_sinks, build_store  # noqa: E402
from vuegraf.stats import Stats  # noqa: E402

START = datetime(2026, 11, 20, 15, 0, 30, tzinfo=UTC)


def kind(topic: str) -> str:
    if topic.endswith("/config"):
        return "discovery configs"
    if topic.endswith("/connected"):
        return "connectivity states"
    if "/homeassistant/" in topic:
        return "Home Assistant states"
    if topic.endswith("/status"):
        return "availability"
    return "upstream messages"


def wait_for(condition: Callable[[], bool], what: str) -> None:
    poll_until(condition, bool, 60, 0.05, lambda _a: f"no {what} within 60 s")


class Listener:
    """`mosquitto_sub` on the run's topics, in a process of its own: it keeps up with any
    burst, and its CPU is not the measured process's. `mark()` publishes a mark after what
    vuegraf sent and waits for it: everything before it has then been delivered."""

    def __init__(self, port: int, prefix: str, work: Path) -> None:
        self.path = work / "received.txt"
        self.out = open(self.path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-p", str(port), "-q", "1", "-v", "-t", f"{prefix}/#",
             "-t", f"{prefix}-ha/#"],
            stdout=self.out,
        )
        self.port = port
        self.prefix = prefix
        self.mark_topic = f"{prefix}/bench-mark"
        self.marks = 0
        time.sleep(0.5)  # subscribed
        self._read = open(self.path)  # noqa: SIM115
        self._partial = ""
        self._topics: list[str] = []
        self._marks_seen = 0

    def topics(self) -> list[str]:
        """Every topic vuegraf's messages were delivered on so far, in order (read
        incrementally: polling stays cheap); the marks are counted, not listed."""
        text = self._partial + self._read.read()
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            topic = line.split(" ", 1)[0]
            if topic == self.mark_topic:
                self._marks_seen += 1
            elif line.strip():
                self._topics.append(topic)
        return self._topics

    def mark(self) -> None:
        """Publish a mark (QoS 1, as vuegraf) and wait until it is delivered: the broker
        delivers one subscription's messages in the order it took them."""
        self.marks += 1
        subprocess.run(
            ["mosquitto_pub", "-p", str(self.port), "-q", "1", "-t", self.mark_topic,
             "-m", str(self.marks)],
            check=True, timeout=30,
        )

        def seen() -> bool:
            self.topics()
            return self._marks_seen >= self.marks

        wait_for(seen, "the mark delivered")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.out.close()
        self._read.close()


def run(broker: MosquittoServer, minutes: int, home_assistant: bool, tag: str) -> dict:
    """One vuegraf for `minutes` simulated minutes after a first one; what it cost."""
    work = Path(tempfile.mkdtemp(prefix="vuegraf-ha-bench-"))
    prefix = f"bench-{tag}"
    clock = FakeClock(START)
    listener = Listener(broker.port, prefix, work)
    with SimulatorServer(seed=1, now=clock.now) as sim:
        config = parse_config(
            {
                "accounts": [
                    {"name": "Home", "email": "e", "password": "p", "simulatorUrl": sim.url}
                ],
                "sqlitePath": str(work / "bench.sqlite"),
                "stateDir": str(work / "state"),
                "timezone": "America/New_York",
                "mqtt": {
                    "host": "127.0.0.1",
                    "port": broker.port,
                    "topic": f"{prefix}/energy_usage",
                    "topicPrefix": prefix,
                    "homeAssistant": {"discoveryPrefix": f"{prefix}-ha"} if home_assistant
                    else False,
                },
            },
            work / "vuegraf.json",
        )
        # Every series stored up to just before the start: steady running, not a week's fill.
        store = build_store(config)
        store.open()
        seeded = START.replace(second=0) - timedelta(minutes=2)
        store.write(
            [
                Point("Home", dev, chan, Scale.MINUTE, seeded, 1.0)
                for _gid, _num, dev, chan, _chart in _channels(sim)
            ]
        )
        store.close()
        stats = Stats()
        ledger = build_ledger(config, clock) if home_assistant else None
        accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
        sinks = build_sinks(
            config,
            stats=stats,
            clock=clock,
            ledger=ledger,
            directory=lambda: [(a.name, a.catalog.devices) for a in accounts],
        )
        daemon = Daemon(config, accounts, sinks, clock, stats=stats)
        for sink in daemon.sinks:
            sink.open()
        mqtt_sink = daemon.sinks[-1]
        wait_for(lambda: mqtt_sink.connected, "MQTT connected")  # type: ignore[attr-defined]

        def delivered() -> None:
            """Wait until the broker took every message the sink published (acknowledged),
            then until the listener got a mark published after them: every message of the
            cycle is counted in its own minute, never in a later one."""
            wait_for(
                lambda: mqtt_sink.pending == 0 and mqtt_sink.unacknowledged == 0,  # type: ignore[attr-defined]
                "MQTT acknowledged",
            )
            listener.mark()

        def tick_until(end: datetime) -> int:
            cycles = 0
            while True:
                now = clock.now()
                tick = next_tick(now, config.update_interval_secs, config.lag_secs)
                if tick >= end:
                    clock.advance((end - now).total_seconds())
                    return cycles
                clock.advance((tick - now).total_seconds())
                daemon.run_cycle(tick)
                cycles += 1
                # Paced like the real minute: what a cycle published is delivered before the
                # next (a burst of hours in a second would only measure the broker's queues).
                delivered()

        # The first minute: configs, and the short fill after the seeded point.
        tick_until(START + timedelta(minutes=3))
        delivered()
        before = len(listener.topics())
        cpu = time.process_time()
        cycles = tick_until(START + timedelta(minutes=3 + minutes))
        cpu = time.process_time() - cpu
        got: Counter[str] = Counter(kind(topic) for topic in listener.topics()[before:])
        for sink in daemon.sinks:
            sink.close()
    listener.close()
    return {"cycles": cycles, "cpu_per_minute": cpu / minutes, "messages": got}


def _channels(sim: SimulatorServer) -> list[tuple[int, str, str, str, bool]]:
    """(gid, number, device name, written channel name, has chart) of the default household,
    named as vuegraf writes them with no `devices` in the config."""
    out = []
    for gid, num, dev, _emporia_name, chart in sim.model.channels():
        if num == "1,2,3":
            chan = dev
        else:
            chan = f"{dev}-{num}"
        out.append((gid, num, dev, chan, chart))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[bool, list[dict]] = {False: [], True: []}
    with MosquittoServer() as broker:
        for round_ in range(args.rounds):
            for home_assistant in (False, True):
                tag = f"{round_}-{'ha' if home_assistant else 'plain'}"
                results[home_assistant].append(run(broker, args.minutes, home_assistant, tag))
    print(f"default simulator household, {args.minutes} simulated minutes per run after the "
          f"first, {args.rounds} rounds")
    for home_assistant, label in ((False, "MQTT, homeAssistant off"),
                                  (True, "MQTT, homeAssistant on")):
        last = results[home_assistant][-1]
        per_minute = {k: v / args.minutes for k, v in sorted(last["messages"].items())}
        total = sum(per_minute.values())
        print(f"\n{label}: {total:.1f} MQTT messages per minute")
        for what, n in per_minute.items():
            print(f"  {what:<24} {n:6.1f}")
        cpu = [r["cpu_per_minute"] * 1000 for r in results[home_assistant]]
        print(f"  process CPU per simulated minute: median {statistics.median(cpu):.1f} ms "
              f"(rounds: {', '.join(f'{c:.1f}' for c in cpu)})")
    extra = [
        (on["cpu_per_minute"] - off["cpu_per_minute"]) * 1000
        for off, on in zip(results[False], results[True], strict=True)
    ]
    print(f"\nextra CPU per minute for discovery and energy counters: median "
          f"{statistics.median(extra):.1f} ms (rounds: {', '.join(f'{e:.1f}' for e in extra)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
