"""The day's request count outlives a restart, through `vuegraf.cli.main` twice on one state
directory: real pyemvue over HTTP to the simulator (which records every request), the embedded
SQLite store, virtual time.

`vuegraf --historydays 30` at 20:00 UTC spends about 480 requests of a 600 budget; the process
stops a few minutes later and a new one starts. The rest of the UTC day needs about 245 live
requests, so the new process must go on from the morning's count (and space the live minute
out), or the account goes over the budget."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest

from harness.cli_in_process import main_state_restored
from harness.inprocess import LockedClock, simulator_config_data
from vuegraf import cli
from vuegraf.simulator import SimulatorServer

pytestmark = pytest.mark.integration

SEED = 43
BUDGET = 600


def test_a_restart_after_an_import_keeps_the_day_under_the_budget(tmp_path, capsys):
    t0 = datetime(2026, 11, 22, 20, 0, 20, tzinfo=UTC)
    restart = t0 + timedelta(minutes=5)
    end = datetime(2026, 11, 23, 0, 5, 20, tzinfo=UTC)
    path = tmp_path / "vuegraf.json"
    first = LockedClock(t0, stop_after=restart)
    clocks = [first]  # the simulator follows the clock of the process running
    with SimulatorServer(seed=SEED, now=lambda: clocks[-1].now()) as sim:
        sim.log_requests = True
        path.write_text(json.dumps(simulator_config_data(sim.url,
                                                         {"dailyRequestBudget": BUDGET})))
        path.chmod(0o600)
        with main_state_restored():
            code = cli.main([str(path), "--historydays", "30"], clock_factory=lambda: first)
        assert code == 0, capsys.readouterr().err
        imported = len(sim.requests_seen())
        assert imported > 400  # the import spent most of the day's budget
        second = LockedClock(restart + timedelta(seconds=30), stop_after=end)
        clocks.append(second)
        with main_state_restored():
            code = cli.main([str(path)], clock_factory=lambda: second)
        err = capsys.readouterr().err
        log = sim.requests_seen()
    assert code == 0, err

    days: Counter[date] = Counter(r.at.date() for r in log)
    print(f"requests per UTC day: {dict(sorted(days.items()))}, {imported} by the first run")
    assert days[t0.date()] <= BUDGET
    # The restarted process spaced the live minute out (said once), it did not stop it.
    lives = [r for r in log if r.endpoint == "getDeviceListUsages" and r.scale == "1MIN"
             and restart < r.at < datetime(2026, 11, 23, tzinfo=UTC)]
    assert 30 < len(lives) < 235
    assert "the live minute is asked only on some ticks" in err
    # The next UTC day: every live minute again.
    assert [r for r in log if r.endpoint == "getDeviceListUsages" and r.scale == "1MIN"
            and r.at.date() == end.date()]
