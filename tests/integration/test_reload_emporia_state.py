"""SIGHUP through the real `vuegraf.cli.main` (in this process, in virtual time, against the
simulator sharing that time): what a reload must not forget, and what it must say.

- A reload while Emporia's Retry-After runs: the new run's accounts must not ask Emporia
  anything before the time Emporia gave (the state lives in an object `main` builds once, as
  the counters do), and the episode is not reported a second time.
- A reload during `--historydays`: the import is cut short (the reload starts collection with
  the new config, it does not resume the import), and one WARNING line says so and how to
  fetch the rest; collection then goes on.

`main` is given a clock factory: each run gets a virtual clock that starts where the previous
one stopped. Signals are real (`signal.raise_signal` / `os.kill`), handled by `main`'s own
handlers; its log lines are read from the captured stderr.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.cli_in_process import main_state_restored
from vuegraf import cli
from vuegraf.clock import FakeClock
from vuegraf.config import load_config
from vuegraf.model import Point, Scale
from vuegraf.simulator import SimulatorServer
from vuegraf.sinks.factory import build_store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 22, 9, 0, 20, tzinfo=UTC)
RETRY_AFTER_S = 600
DEADLINE = 60.0  # seconds a signal may take to be handled


class RunClock(FakeClock):
    """Virtual time for one run of `main` (thread-safe: the import has worker threads), with
    `on_wait(clock)` called after each wait that did not end in a stop."""

    def __init__(self, start: datetime, stop_after: datetime | None,
                 on_wait: Callable[[RunClock], None] | None = None) -> None:
        super().__init__(start, stop_after)
        self._lock = threading.Lock()
        self.on_wait = on_wait

    def now(self) -> datetime:
        with self._lock:
            return super().now()

    def wait(self, seconds: float) -> bool:
        with self._lock:
            stopped = super().wait(seconds)
        if not stopped and self.on_wait is not None:
            self.on_wait(self)
        return self.stopped


class Runs:
    """The clock factory for `main`: run 1 gets `first`, later runs last `then` each."""

    def __init__(self, first: Callable[[datetime], RunClock], then: timedelta) -> None:
        self.first = first
        self.then = then
        self.clocks: list[RunClock] = []

    def now(self) -> datetime:
        return self.clocks[-1].now() if self.clocks else T0

    def __call__(self) -> RunClock:
        start = self.now()
        clock = self.first(start) if not self.clocks else RunClock(start, start + self.then)
        self.clocks.append(clock)
        return clock


def write_config(tmp_path: Path, sim: SimulatorServer) -> Path:
    path = tmp_path / "vuegraf.json"
    path.write_text(json.dumps({
        "accounts": [{"name": "Home", "email": "me@example.com", "password": "pw",
                      "simulatorUrl": sim.url}],
        "stateDir": "state",
        "timezone": "America/New_York",
        "detailedDataHoursEnabled": False,
        "detailedDataDaysEnabled": False,
    }))
    path.chmod(0o600)
    return path


def store_minutes_up_to(config: Path, sim: SimulatorServer, last: datetime) -> None:
    """One stored minute per chart series at `last`, so the test is about what follows (an
    empty store would be filled 7 days back first). Names by upstream's rule, written out:
    the mains and one-channel devices carry the device's name, circuits `<device>-<n>`."""
    names = {(dev if num == "1,2,3" else f"{dev}-{num}")
             for _gid, num, dev, _name, chart in sim.model.channels() if chart}
    store = build_store(load_config(config))
    store.open()
    store.write([Point("Home", "", name, Scale.MINUTE, last, 1.0) for name in names])
    store.close()


def log_lines(err: str, level: str) -> list[str]:
    """The messages of vuegraf's log lines at `level` ("time | LEVEL | logger | message")."""
    return [line.split(" | ", 3)[3] for line in err.splitlines()
            if line.count(" | ") >= 3 and line.split(" | ")[1].strip() == level]


def test_a_reload_keeps_emporias_retry_after(tmp_path, capsys):
    reload_at: list[datetime] = []

    def weather(clock: RunClock) -> None:
        """Emporia says 429 from T0+4 min; once it has, SIGHUP (and Emporia is well again)."""
        if reload_at:
            return
        if any(r.status == 429 for r in sim.requests_seen()):
            sim.clear_fault()
            reload_at.append(clock.now())
            signal.raise_signal(signal.SIGHUP)
        elif clock.now() >= T0 + timedelta(minutes=4):
            sim.set_fault(429, retry_after=str(RETRY_AFTER_S))

    runs = Runs(lambda start: RunClock(start, start + timedelta(hours=1), weather),
                then=timedelta(minutes=15))
    with SimulatorServer(seed=17, now=runs.now) as sim:
        sim.log_requests = True
        config = write_config(tmp_path, sim)
        store_minutes_up_to(config, sim, T0.replace(second=0) - timedelta(minutes=2))
        with main_state_restored():
            code = cli.main([str(config)], clock_factory=runs)
        log = sim.requests_seen()
    err = capsys.readouterr().err

    assert code == 0
    assert len(runs.clocks) == 2 and reload_at, "no reload happened"
    assert "Config reloaded" in log_lines(err, "INFO")
    limited = [r for r in log if r.status == 429]
    assert limited
    first_429 = limited[0].at
    not_before = first_429 + timedelta(seconds=RETRY_AFTER_S)
    assert reload_at[0] < not_before
    # Nothing asked of Emporia inside its Retry-After, before the reload or after it.
    inside = [(r.at, r.endpoint) for r in log if first_429 < r.at < not_before]
    assert inside == [], inside
    # Collection went on after the wait, in the new run.
    after = [r for r in log if r.at >= not_before]
    assert after and after[0].status == 200
    assert any(r.endpoint == "getDeviceListUsages" and r.status == 200 for r in after)
    # The episode was reported once, not again by the new run.
    noisy = [m for m in log_lines(err, "WARNING") + log_lines(err, "ERROR") if "429" in m]
    assert len(noisy) == 1, noisy


def test_a_reload_during_historydays_says_the_import_was_cut_short(tmp_path, capsys):
    runs = Runs(lambda start: RunClock(start, None), then=timedelta(minutes=3))
    charts = 0
    lock = threading.Lock()

    def reload_at_the_third_window(endpoint: str) -> None:
        nonlocal charts
        with lock:
            if endpoint != "getChartUsage":
                return
            charts += 1
            if charts != 3:
                return
        os.kill(os.getpid(), signal.SIGHUP)
        # This window is not answered before main has handled the signal, so the import
        # cannot finish first.
        deadline = time.monotonic() + DEADLINE
        while not runs.clocks[0].stopped and time.monotonic() < deadline:
            time.sleep(0.01)

    with SimulatorServer(seed=19, now=runs.now) as sim:
        sim.log_requests = True
        sim.on_request = reload_at_the_third_window
        config = write_config(tmp_path, sim)
        with main_state_restored():
            code = cli.main([str(config), "--historydays", "3"], clock_factory=runs)
        log = sim.requests_seen()
    err = capsys.readouterr().err

    assert code == 0
    assert runs.clocks[0].stopped and len(runs.clocks) == 2
    warnings = log_lines(err, "WARNING")
    cut = [m for m in warnings if "cut short" in m]
    assert len(cut) == 1, warnings
    assert "reload" in cut[0] and "--historydays 3 again" in cut[0]
    assert "Config reloaded" in log_lines(err, "INFO")
    # After the reload: collection, not the import.
    reloaded = runs.clocks[1]
    live = [r for r in log if r.endpoint == "getDeviceListUsages"]
    assert live and all(r.status == 200 for r in live)
    assert reloaded.now() > T0
