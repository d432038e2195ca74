"""A budget below the steady need spaces the live minute out every UTC day; the minutes it
skips are filled the next day from the chart allowance kept at that level, through the real
loop: real pyemvue over HTTP to the simulator (recording every request), the embedded SQLite
store, virtual time across a UTC midnight.

A budget of 200 from 20:00 UTC: the 4 hours left of the first day need 249 live requests, so
about 50 minutes are skipped; the next day (1 489 needed) is at level `minute` from its first
tick, and its allowance (at most half of the 151 beyond hours, the day and device reads)
brings the first day's skipped minutes back, equal to the simulator's model."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest

from harness import oracle
from harness.completeness import compare, seed_minute, sqlite_points
from harness.inprocess import run_daemon, simulator_config
from vuegraf.clock import FakeClock
from vuegraf.simulator import SimulatorServer
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 47
BUDGET = 200


def test_minutes_skipped_under_a_low_budget_are_filled_the_next_day(tmp_path, caplog):
    t0 = datetime(2026, 11, 22, 20, 0, 20, tzinfo=UTC)
    day2 = datetime(2026, 11, 23, tzinfo=UTC)
    end = datetime(2026, 11, 23, 10, 0, 20, tzinfo=UTC)
    clock = FakeClock(t0, stop_after=end)
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        config = simulator_config(tmp_path, sim.url, {"dailyRequestBudget": BUDGET})
        seed_minute(config, sim.model, t0.replace(second=0) - timedelta(minutes=2))
        stats = Stats(budget=config.daily_request_budget)
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            run_daemon(config, clock, stats)
        log = sim.requests_seen()

    days: Counter[date] = Counter(r.at.date() for r in log)
    print(f"requests per UTC day: {dict(sorted(days.items()))}")
    assert days[t0.date()] <= BUDGET
    assert days[day2.date()] <= BUDGET
    lives = [r for r in log if r.endpoint == "getDeviceListUsages" and r.scale == "1MIN"]
    skipped = 240 - len([r for r in lives if r.at < day2])
    assert skipped > 20  # the first day's minute was spaced out
    # The second day's chart requests are for earlier days' holes only (the first day's
    # skipped minutes: one window per channel), spread out.
    fills = [r for r in log if r.endpoint == "getChartUsage" and r.at >= day2]
    assert len([r for r in fills if r.scale == "1MIN"]) >= 28
    assert all(datetime.fromisoformat(r.query["end"]) < day2 for r in fills), fills[:3]
    assert max(Counter(r.at for r in fills).values()) == 1
    # Every minute of the first day, skipped or not, stored with the model's value.
    minutes = compare(
        "minute points",
        sqlite_points(tmp_path / "vuegraf.sqlite", "Home", "False"),
        oracle.served(oracle.DEFAULT_NAMES, sim.model, "1MIN", t0.replace(second=0)
                      - timedelta(minutes=1), day2, oracle.NEW_YORK),
    )
    assert minutes.ok, str(minutes)
    assert minutes.expected >= 28 * 240
    lines = [r.getMessage() for r in caplog.records if "a day budget until" in r.getMessage()]
    assert len(lines) == 1
    assert "except for 84 chart requests a day for holes of earlier days" in lines[0]
