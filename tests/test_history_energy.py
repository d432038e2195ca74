"""`--historydays` counts the minutes it stores into the energy counters.

A minute the import stores is one no later fill asks for again (the backfill starts from the
store's newest point), so if the import left it out, the counters would stay short of the
store for good. Minutes from before a channel's counter began stay out (they are history).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest

from harness import oracle
from vuegraf.cli import import_history
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.emporia import EmporiaAccount
from vuegraf.energy import ChannelId, EnergyLedger
from vuegraf.model import Point, Scale
from vuegraf.simulator import SimulatorServer
from vuegraf.stats import Stats

NOW = datetime(2026, 11, 18, 15, 0, 20, tzinfo=UTC)
GID, NUM = 1001, "1,2,3"  # Main Panel's mains


def test_minutes_imported_after_the_counters_began_are_counted_once(tmp_path):
    state = tmp_path / "state"
    path = state / "energy.sqlite"
    # The counter began 30 hours ago (a run then counted one minute), and vuegraf was down
    # since: the import brings the day of minutes it missed.
    began = NOW - timedelta(hours=30)
    first = EnergyLedger(path, FakeClock(began))
    first.open()
    first_minute = oracle.floor_to(began, 60) - timedelta(minutes=1)
    first.add([Point("Home", "Main Panel", "Main Panel", Scale.MINUTE, first_minute, 500.0,
                     GID, NUM)])
    first.close()

    clock = FakeClock(NOW)
    with SimulatorServer(seed=5, now=clock.now) as sim:
        config = parse_config(
            {
                "accounts": [{"name": "Home", "email": "h@example.com", "password": "pw",
                              "simulatorUrl": sim.url}],
                "timezone": "America/New_York",
                "stateDir": str(state),
                "sqlitePath": str(tmp_path / "vuegraf.sqlite"),
            },
            tmp_path / "vuegraf.json",
        )
        accounts = [EmporiaAccount(a, config, clock) for a in config.accounts]
        ledger = EnergyLedger(path, clock)
        assert import_history(config, accounts, 1, False, clock, Stats(), ledger)
        model = sim.model

    with sqlite3.connect(tmp_path / "vuegraf.sqlite") as db:
        stored = [
            datetime.fromtimestamp(t, UTC)
            for (t,) in db.execute(
                "SELECT time FROM energy_usage WHERE detailed = 'False' "
                "AND device_name = 'Main Panel' AND station_name = ''"
            )
        ]
    assert len(stored) > 1000  # the import stored the day's minutes
    expected = 500.0 * 60 + sum(
        (model.kwh(GID, NUM, "1MIN", t) or 0.0) * 3_600_000.0 for t in stored if t > first_minute
    )
    reopened = EnergyLedger(path, clock)
    reopened.open()
    totals = reopened.totals(ChannelId(GID, NUM))
    assert totals is not None
    assert totals.imported - totals.exported == pytest.approx(expected, rel=1e-9, abs=1e-6)
    reopened.close()
