"""vuegraf's daemon in the test process, on a virtual clock, against the Emporia simulator.

`simulator_config` is the config such a test starts from (`write_simulator_config` the same
as a file, for a vuegraf child), `run_daemon` runs the loop with the
production sinks until the clock stops. (What an earlier run left in the store:
completeness.seed_store. A vuegraf the test must SIGKILL runs as a child: virtual_vuegraf.py.)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from vuegraf.clock import FakeClock
from vuegraf.config import Config, parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.sinks.base import Sink
from vuegraf.sinks.factory import build_sinks
from vuegraf.stats import Stats


class LockedClock(FakeClock):
    """Virtual time shared by threads (the history import's workers and the daemon): one lock
    around it, so no thread sees time move half-way."""

    def __init__(self, start: datetime, stop_after: datetime | None = None) -> None:
        super().__init__(start, stop_after)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return super().now()

    def wait(self, seconds: float) -> bool:
        with self._lock:
            return super().wait(seconds)


def simulator_config_data(
    sim_url: str, settings: Mapping[str, Any] | None = None, account: str = "Home"
) -> dict[str, Any]:
    """One account served by the simulator at `sim_url`, the state directory `state` next to
    the config file, New York time (the simulated household's zone, so local days agree with
    Emporia's), and the top-level `settings` (influxDb, mqtt, ...) on top."""
    return {
        "accounts": [
            {
                "name": account,
                "email": "me@example.com",
                "password": "pw",
                "simulatorUrl": sim_url,
            }
        ],
        "timezone": "America/New_York",
        "stateDir": "state",
        **(settings or {}),
    }


def simulator_config(
    tmp_path: Path, sim_url: str, settings: Mapping[str, Any] | None = None, account: str = "Home"
) -> Config:
    """`simulator_config_data` as the config of tmp_path/vuegraf.json; no environment
    variables."""
    return parse_config(
        simulator_config_data(sim_url, settings, account), tmp_path / "vuegraf.json", environ={}
    )


def write_simulator_config(
    tmp_path: Path, sim_url: str, settings: Mapping[str, Any] | None = None, account: str = "Home"
) -> Path:
    """`simulator_config_data` written to tmp_path/vuegraf.json (owner-only, as vuegraf wants
    a file with a password), for a test that runs vuegraf as a child process."""
    path = tmp_path / "vuegraf.json"
    path.write_text(json.dumps(simulator_config_data(sim_url, settings, account)))
    path.chmod(0o600)
    return path


def run_daemon(
    config: Config,
    clock: FakeClock,
    stats: Stats | None = None,
    on_cycle: Sequence[Callable[[datetime], None]] = (),
) -> list[Sink]:
    """One vuegraf process until `clock` stops, wired as `vuegraf.cli.run` wires the loop: an
    EmporiaAccount per configured account and the production sinks (`build_sinks`: the store
    behind the durable queue in the state directory, MQTT when configured), all on `clock`
    and counting into `stats`. `on_cycle` hooks run after every cycle. Returns the sinks."""
    stats = Stats() if stats is None else stats
    accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
    sinks = build_sinks(config, stats=stats, clock=clock)
    Daemon(config, accounts, sinks, clock, stats=stats, on_cycle=on_cycle).run()
    return sinks
