"""The daily request budget as a guard, through the real loop: real pyemvue over HTTP to the
simulator (sharing the virtual clock and recording every request), the embedded SQLite store,
virtual time across UTC midnights.

- Second data for every channel costs more than a day's budget: it is fetched while the rest
  of a day has room for it, and shed from the UTC day that has not; the requests Emporia saw
  in that day stay under the budget; one line says so; the minutes are all there.
- A 30-day history import in the morning spends most of the day's budget: the live minute is
  spaced out for the rest of the UTC day, the day stays under the budget, and the minutes
  skipped are filled from chart data after 00:00 UTC, equal to the simulator's model.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from harness import oracle
from harness.cli_in_process import main_state_restored
from harness.completeness import compare, seed_minute, sqlite_points
from harness.inprocess import LockedClock, run_daemon, simulator_config, simulator_config_data
from vuegraf import cli
from vuegraf.clock import FakeClock
from vuegraf.simulator import SimulatorServer, UsageModel
from vuegraf.simulator.server import RequestRecord
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 41
NEW_YORK = oracle.NEW_YORK
GUARD_LINE = "a day budget until 00:00 UTC"  # in each line the guard logs on a change of level


def by_utc_day(log: list[RequestRecord]) -> Counter[date]:
    return Counter(r.at.date() for r in log)


def assert_minutes(db: Path, model: UsageModel, first: datetime, last: datetime) -> int:
    """Every minute of [first, last] stored with the model's value; returns how many."""
    minutes = compare(
        "minute points",
        sqlite_points(db, "Home", "False"),
        oracle.served(oracle.DEFAULT_NAMES, model, "1MIN", first, last + timedelta(minutes=1),
                      NEW_YORK),
    )
    assert minutes.ok, str(minutes)
    return minutes.expected


def test_second_data_over_the_budget_is_shed_from_the_day_it_does_not_fit(tmp_path, caplog):
    # 22:00 UTC: the two hours left of the first day have room for second data (2 runs of 28
    # requests beside 125 live ones); a whole day has not (1 440 + 24 + 1 + 24 + 672 = 2 161).
    t0 = datetime(2026, 11, 22, 22, 0, 20, tzinfo=UTC)
    day2 = datetime(2026, 11, 23, tzinfo=UTC)
    end = datetime(2026, 11, 24, 0, 10, 20, tzinfo=UTC)
    clock = FakeClock(t0, stop_after=end)
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        config = simulator_config(tmp_path, sim.url, {"detailedDataEnabled": True})
        assert config.daily_request_budget == 2000
        seed_minute(config, sim.model, t0.replace(second=0) - timedelta(minutes=2))
        stats = Stats(budget=config.daily_request_budget)
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            run_daemon(config, clock, stats)
        log = sim.requests_seen()

    days = by_utc_day(log)
    print(f"requests per UTC day: {dict(sorted(days.items()))}")
    # The whole UTC day under the guard stays under the budget, and its live minutes all
    # went out: 1 440 minutes, 24 hours, a day, 24 device reads.
    assert days[day2.date()] <= 2000
    assert days[day2.date()] >= 1440 + 24 + 1 + 24
    seconds = [r for r in log if r.endpoint == "getChartUsage" and r.scale == "1S"]
    assert seconds and all(r.at < day2 for r in seconds)  # fetched on day 1 only
    assert len({r.at for r in seconds}) == 2  # the runs at 22:00 and 23:00
    # One line, at the first tick of the day the guard began to shed.
    lines = [r for r in caplog.records if GUARD_LINE in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in lines] == [(
        "WARNING",
        "Account Home: 0 Emporia requests today; to stay under the 2000 a day budget until "
        "00:00 UTC, second data is not fetched",
    )]
    assert not [r for r in caplog.records if "new UTC day" in r.getMessage()]
    assert stats.snapshot().shedding == {"Home": "second"}
    # vuegraf's own count is what Emporia saw, endpoint by endpoint.
    counted: Counter[str] = Counter()
    for (_a, endpoint, _outcome), n in stats.snapshot().requests.items():
        if endpoint != "login":
            counted[endpoint] += n
    assert counted == Counter(r.endpoint for r in log)
    # No minute was shed: all of them stored, equal to the model.
    assert assert_minutes(tmp_path / "vuegraf.sqlite", sim.model, t0.replace(second=0)
                          - timedelta(minutes=1), end.replace(second=0) - timedelta(minutes=5)
                          ) > 28 * 1500


def test_live_minutes_spaced_after_a_history_import_are_filled_after_midnight(tmp_path, capsys):
    """`vuegraf --historydays 30` at 02:00 UTC with a budget of 1 700: the import costs about
    480 requests, which leaves fewer than the 1 365 live requests the rest of the day needs
    (1 320 minutes, 22 hours, the day, 22 device reads). The next day has 211 to spare beside
    its 1 489 live ones, enough to fill the minutes skipped."""
    t0 = datetime(2026, 11, 22, 2, 0, 20, tzinfo=UTC)
    day2 = datetime(2026, 11, 23, tzinfo=UTC)
    end = datetime(2026, 11, 23, 0, 20, 20, tzinfo=UTC)
    clock = LockedClock(t0, stop_after=end)
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        path = tmp_path / "vuegraf.json"
        path.write_text(json.dumps(simulator_config_data(sim.url, {"dailyRequestBudget": 1700})))
        path.chmod(0o600)
        with main_state_restored():
            code = cli.main([str(path), "--historydays", "30"], clock_factory=lambda: clock)
        err = capsys.readouterr().err
        log = sim.requests_seen()
    assert code == 0, err

    days = by_utc_day(log)
    print(f"requests per UTC day: {dict(sorted(days.items()))}")
    assert days[t0.date()] <= 1700  # the import's requests included
    assert days[day2.date()] <= 1700
    lives = [r for r in log if r.endpoint == "getDeviceListUsages" and r.scale == "1MIN"]
    day1_lives = [r for r in lives if r.at < day2]
    ticks = int((day2 - t0).total_seconds()) // 60 + 1
    skipped = ticks - len(day1_lives)
    print(f"day 1: {len(day1_lives)} live minutes asked of {ticks} ticks")
    assert 100 < skipped < 400  # spaced out, not stopped
    # Every live minute after midnight went out (the newest complete minute at each tick;
    # usage requests for older minutes fill Balance's holes), and the holes were filled by
    # chart data.
    after = []
    newest = datetime.min.replace(tzinfo=UTC)
    for r in lives:  # in the order asked: a live minute is newer than any asked before
        asked = datetime.fromisoformat(r.query["instant"])
        if asked > newest and r.at >= day2:
            after.append(asked)
        newest = max(newest, asked)
    assert len(after) >= 20, [str(a) for a in after]
    assert all(b - a == timedelta(minutes=1) for a, b in zip(after, after[1:], strict=False))
    fills = [r for r in log if r.endpoint == "getChartUsage" and r.at >= day2]
    assert fills and all(r.scale == "1MIN" and r.status == 200 for r in fills)
    assert not [r for r in log if r.endpoint == "getChartUsage" and t0 + timedelta(minutes=30)
                < r.at < day2]  # no fill while the live minute was being spaced out
    # One line when the guard began to space the minute out, one when the new day ended it.
    lines = [line for line in err.splitlines() if GUARD_LINE in line or "new UTC day" in line]
    assert len(lines) == 2, "\n".join(lines)
    assert " | WARNING | vuegraf.budget | " in lines[0]
    assert lines[0].endswith("second data is not fetched, no hole is filled and the live minute "
                             "is asked only on some ticks; the minutes skipped are filled after "
                             "00:00 UTC")
    assert " | INFO  | vuegraf.budget | " in lines[1]
    # Every minute from the start to the end, skipped or not, stored with the model's value.
    assert assert_minutes(tmp_path / "vuegraf.sqlite", sim.model, t0.replace(second=0)
                          - timedelta(minutes=1), end.replace(second=0) - timedelta(minutes=5)
                          ) > 28 * 1300


def test_holes_beyond_the_spare_are_filled_a_few_a_tick_and_the_rest_after_midnight(
    tmp_path, caplog
):
    """A restart at 00:30 UTC after two days away, with a budget of 1 600: the day's 1 459
    live requests (1 410 minutes, 24 hours, the day, 24 device reads) and the holes' 168 chart
    requests (4 windows of minutes, one of hours and one of days per channel) do not fit
    together. Fills are spread over the day; the next day's spare (111) takes the rest."""
    t0 = datetime(2026, 11, 22, 0, 30, 20, tzinfo=UTC)
    day2 = datetime(2026, 11, 23, tzinfo=UTC)
    end = datetime(2026, 11, 23, 0, 20, 20, tzinfo=UTC)
    away = t0.replace(second=0) - timedelta(days=2)
    clock = FakeClock(t0, stop_after=end)
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        config = simulator_config(tmp_path, sim.url, {"dailyRequestBudget": 1600})
        seed_minute(config, sim.model, away)
        stats = Stats(budget=config.daily_request_budget)
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            run_daemon(config, clock, stats)
        log = sim.requests_seen()

    days = by_utc_day(log)
    print(f"requests per UTC day: {dict(sorted(days.items()))}")
    assert days[t0.date()] <= 1600
    assert days[day2.date()] <= 1600
    fills = [r for r in log if r.endpoint == "getChartUsage" and r.at < day2]
    per_tick = Counter(r.at for r in fills)
    print(f"day 1: {len(fills)} chart requests in {len(per_tick)} ticks, "
          f"at most {max(per_tick.values())} a tick")
    assert max(per_tick.values()) <= 2 and len(per_tick) >= 50  # spread, not at once
    assert fills[-1].at - fills[0].at > timedelta(hours=12)
    assert [r for r in log if r.endpoint == "getChartUsage" and r.at >= day2]  # the rest
    # Every live minute went out on both days.
    lives = [r for r in log if r.endpoint == "getDeviceListUsages" and r.scale == "1MIN"]
    assert len(lives) >= int((end - t0).total_seconds()) // 60
    lines = [(r.levelname, r.getMessage()) for r in caplog.records
             if GUARD_LINE in r.getMessage() or "new UTC day" in r.getMessage()]
    assert [level for level, _m in lines] == ["WARNING", "INFO"], lines
    assert lines[0][1].endswith("second data is not fetched and holes are filled a few requests "
                                "a tick, the rest after 00:00 UTC")
    # Every minute since the restart's last stored one, equal to the model.
    assert assert_minutes(tmp_path / "vuegraf.sqlite", sim.model, away + timedelta(minutes=1),
                          end.replace(second=0) - timedelta(minutes=5)) > 28 * 4200
