"""SIGHUP through the real `vuegraf.cli.main` (in this process, in virtual time, against the
simulator sharing that time) while the budget guard sheds: the level reached today stays with
the new run's guard, announced once, not again by the reload."""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, datetime, timedelta

import pytest

from harness.cli_in_process import main_state_restored
from vuegraf import cli
from vuegraf.clock import FakeClock
from vuegraf.simulator import SimulatorServer

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 22, 9, 0, 20, tzinfo=UTC)
RELOAD_AT = T0 + timedelta(minutes=5)
GUARD_LINE = "a day budget until 00:00 UTC"


class RunClock(FakeClock):
    """Virtual time for one run of `main`; the first run raises SIGHUP at `RELOAD_AT`."""

    def __init__(self, start: datetime, stop_after: datetime, reload: bool) -> None:
        super().__init__(start, stop_after)
        self._lock = threading.Lock()
        self.reload = reload

    def now(self) -> datetime:
        with self._lock:
            return super().now()

    def wait(self, seconds: float) -> bool:
        with self._lock:
            stopped = super().wait(seconds)
        if not stopped and self.reload and self.now() >= RELOAD_AT:
            self.reload = False
            signal.raise_signal(signal.SIGHUP)
        return self.stopped


def test_a_reload_keeps_the_days_budget_level_and_says_it_once(tmp_path, capsys):
    clocks: list[RunClock] = []

    def factory() -> RunClock:
        start = clocks[-1].now() if clocks else T0
        clock = RunClock(start, start + timedelta(minutes=10), reload=not clocks)
        clocks.append(clock)
        return clock

    with SimulatorServer(seed=19, now=lambda: clocks[-1].now() if clocks else T0) as sim:
        path = tmp_path / "vuegraf.json"
        # 500 a day: the 15 hours left of the UTC day need about 930 live requests, so the
        # live minute is spaced out from the first tick.
        path.write_text(json.dumps({
            "accounts": [{"name": "Home", "email": "me@example.com", "password": "pw",
                          "simulatorUrl": sim.url}],
            "stateDir": "state",
            "timezone": "America/New_York",
            "dailyRequestBudget": 500,
        }))
        path.chmod(0o600)
        with main_state_restored():
            code = cli.main([str(path)], clock_factory=factory)
    err = capsys.readouterr().err

    assert code == 0, err
    assert len(clocks) == 2 and "Config reloaded" in err, "no reload happened"
    lines = [line for line in err.splitlines() if GUARD_LINE in line]
    assert len(lines) == 1, lines
    assert " | WARNING | vuegraf.budget | " in lines[0]
    assert "the live minute is asked only on some ticks" in lines[0]
    assert "new UTC day" not in err
