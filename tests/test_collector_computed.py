"""Computed channels (Balance, MainsFromGrid, MainsToGrid) have no chart history, yet no hole
is left in them: a bucket missed live is asked for again with a usage request at its instant,
which brings every channel of the account at once. What can never come (a null that stays,
a hole older than Emporia keeps) is counted as lost and said once.

The daemon runs in virtual time against the Emporia simulator (real pyemvue over HTTP, the
simulator's clock tied to the FakeClock), writing to a store at the seam. Expected values come
from the simulator's model (tests/harness/oracle.py); times are literals or plain arithmetic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness import oracle
from harness.completeness import compare
from harness.inprocess import simulator_config
from harness.stores import MemoryStore
from vuegraf.backfill import Holes
from vuegraf.clock import FakeClock
from vuegraf.config import Config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.marks import MarksFile
from vuegraf.model import Point, Scale
from vuegraf.simulator import SimulatorServer, UsageModel
from vuegraf.simulator.server import RequestRecord
from vuegraf.stats import Stats

SEED = 5
T0 = datetime(2026, 11, 23, 10, 50, 20, tzinfo=UTC)
FIRST_LIVE = datetime(2026, 11, 23, 10, 49, tzinfo=UTC)  # the newest complete minute at T0
NO_DAYS = {"detailedDataDaysEnabled": False}
SETTLE = timedelta(minutes=5)  # a missed minute is filled within this (settle 2 min + ticks)
LIVE_ONLY = sorted(oracle.DEFAULT_NAMES[k] for k in oracle.LIVE_ONLY)


class Store(MemoryStore):
    def values(self, scale: Scale) -> dict[oracle.Key, float]:
        return {(p.channel, int(p.time.timestamp())): p.watts
                for p in self.points if p.scale is scale}


def preloaded(model: UsageModel, minute: datetime, hour: datetime) -> Store:
    """A store holding every series (live-only ones too) up to `minute` and `hour`, as an
    install that ran until then would: no week-long first fill to wait for. (The store is
    read only before the first live bucket: at T0 that is minute 10:49 and hour 09:00.)"""
    store = Store()
    names = {gid: dev for gid, _num, dev, _name, _chart in model.channels()}
    for gid, _num, name in oracle.channels(oracle.DEFAULT_NAMES, live_only_too=True):
        store.points.append(Point("Home", names[gid], name, Scale.MINUTE, minute, 1.0))
        store.points.append(Point("Home", names[gid], name, Scale.HOUR, hour, 1.0))
    return store


def run(config: Config, clock: FakeClock, store: Store,
        on_cycle: Callable[[datetime], None] | None = None) -> Stats:
    stats = Stats()
    account = EmporiaAccount(config.accounts[0], config, clock, stats)
    Daemon(config, [account], [store], clock, stats=stats,
           on_cycle=[on_cycle] if on_cycle else []).run()
    return stats


def served(model: UsageModel, scale: str, first: datetime, end: datetime,
           only: list[str] | None = None) -> dict[oracle.Key, float]:
    return oracle.served(oracle.DEFAULT_NAMES, model, scale, first, end, model.tz,
                         live_only_too=True, only=only)


def only_the_models_gaps(stats: Stats, model: UsageModel, start: datetime, end: datetime) -> bool:
    """Nothing was lost but values the model itself has none for (the simulated household's
    plug that goes offline now and then): no `retention` loss, and a `no_value` one only for
    a series with fewer values than buckets in the run."""
    lost = stats.snapshot().lost
    assert {key[3] for key in lost} <= {"no_value"}, lost
    first = start.replace(minute=0, second=0) - timedelta(hours=2)
    for _account, scale, channel, _reason in lost:
        values = served(model, scale, first, end, only=[channel])
        buckets = int((end - first).total_seconds()) // (60 if scale == "1MIN" else 3600)
        assert len(values) < buckets, (scale, channel)
    return True


def instant(record: RequestRecord) -> datetime:
    return datetime.fromisoformat(record.query["instant"].replace("Z", "+00:00"))


def past_usage(log: list[RequestRecord], scale: str) -> list[RequestRecord]:
    """Usage requests for a bucket older than the newest one complete when asked: fills."""
    step = 60 if scale == "1MIN" else 3600
    newest = {  # the newest bucket complete at `at` (the live one asked then)
        r.at: datetime.fromtimestamp(r.at.timestamp() // step * step - step, UTC) for r in log
    }
    return [r for r in log if r.endpoint == "getDeviceListUsages" and r.scale == scale
            and r.status == 200 and instant(r) < newest[r.at]]


def test_two_minutes_of_502_leave_no_hole_in_any_series_balance_included(tmp_path: Path):
    """Emporia's usage endpoint answers 502 from 10:58:30 to 11:00:30: the live minutes 10:58
    and 10:59 and the hour 10:00 are missed. Within three cycles of the recovery every one of
    them is stored for every series, Balance and the grid split included, as the model says,
    and that cost one usage request per missed bucket: no chart request at all."""
    end = T0 + timedelta(minutes=20)
    clock = FakeClock(T0, stop_after=end)
    fault = (datetime(2026, 11, 23, 10, 58, 30, tzinfo=UTC),
             datetime(2026, 11, 23, 11, 0, 30, tzinfo=UTC))
    cycles: list[datetime] = []
    third_after: dict[Scale, dict[oracle.Key, float]] = {}

    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        model = sim.model
        store = preloaded(model, FIRST_LIVE - timedelta(minutes=1),
                          datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
        sim.add_fault_window(502, *fault, endpoints={"getDeviceListUsages"})

        def after_cycle(finished: datetime) -> None:
            if finished > fault[1]:
                cycles.append(finished)
                if len(cycles) == 3:
                    third_after.update({s: store.values(s) for s in (Scale.MINUTE, Scale.HOUR)})

        config = simulator_config(tmp_path, sim.url, NO_DAYS)
        stats = run(config, clock, store, after_cycle)
        log = sim.requests_seen()

    failed = [r for r in log if r.status == 502]
    assert {r.endpoint for r in failed} == {"getDeviceListUsages"}
    assert {r.scale for r in failed} == {"1MIN", "1H"}
    missed = served(model, "1MIN", datetime(2026, 11, 23, 10, 57, tzinfo=UTC),
                    datetime(2026, 11, 23, 11, 0, tzinfo=UTC))
    assert len(missed) == 32 * 3  # 28 chart series and 4 live-only ones, 3 minutes
    result = compare("the outage's minutes, three cycles after it", third_after[Scale.MINUTE],
                     missed)
    assert result.ok, str(result)
    hour = served(model, "1H", datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
                  datetime(2026, 11, 23, 11, 0, tzinfo=UTC))
    assert len(hour) == 32
    result = compare("the hour missed, three cycles after it", third_after[Scale.HOUR], hour)
    assert result.ok, str(result)

    # Everything, before and after, as the model says.
    settled = end.replace(second=0) - SETTLE
    result = compare("minutes", store.values(Scale.MINUTE), served(model, "1MIN", FIRST_LIVE,
                                                                    settled))
    assert result.ok, str(result)

    # The cost: one usage request per missed bucket, no chart request.
    minute_fills = {instant(r) for r in past_usage(log, "1MIN")}
    assert datetime(2026, 11, 23, 10, 58, tzinfo=UTC) in minute_fills
    assert len(minute_fills) == len(past_usage(log, "1MIN")) <= 3
    # The hour is the live one until it is answered: asked again at the next tick.
    assert past_usage(log, "1H") == []
    assert datetime(2026, 11, 23, 10, 0, tzinfo=UTC) in {
        instant(r) for r in log if r.scale == "1H" and r.status == 200 and r.at > fault[1]
    }
    assert [r for r in log if r.endpoint == "getChartUsage" and r.at > fault[0]] == []
    assert only_the_models_gaps(stats, model, T0, end)


def test_a_restart_s_balance_minutes_come_back_from_the_store_s_newest(tmp_path: Path):
    """Stopped at 10:55, started again at 11:05: the ten Balance minutes in between are asked
    for with usage requests and stored as the model says; nothing older is asked for."""
    first_end = T0 + timedelta(minutes=5)
    restart = T0 + timedelta(minutes=15)
    end = restart + timedelta(minutes=8)
    clocks = {"now": FakeClock(T0, stop_after=first_end)}
    with SimulatorServer(seed=SEED, now=lambda: clocks["now"].now()) as sim:
        sim.log_requests = True
        model = sim.model
        store = preloaded(model, FIRST_LIVE - timedelta(minutes=1),
                          datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
        config = simulator_config(tmp_path, sim.url, NO_DAYS)
        run(config, clocks["now"], store)
        clocks["now"] = FakeClock(restart, stop_after=end)
        stats = run(config, clocks["now"], store)
        log = sim.requests_seen()

    settled = end.replace(second=0) - SETTLE
    want = served(model, "1MIN", FIRST_LIVE, settled, only=LIVE_ONLY)
    assert len(want) == 4 * int((settled - FIRST_LIVE).total_seconds() // 60)
    result = compare("live-only minutes across the restart",
                     {k: v for k, v in store.values(Scale.MINUTE).items() if k[0] in LIVE_ONLY},
                     want)
    assert result.ok, str(result)
    fills = sorted({instant(r) for r in past_usage(log, "1MIN")})
    assert fills[0] >= first_end.replace(second=0) - timedelta(minutes=2)
    assert len(fills) >= 9
    assert only_the_models_gaps(stats, model, restart, end)


def test_a_balance_emporia_never_answers_is_counted_lost_once_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """From the third cycle on, Emporia answers null for Main Panel's Balance at every instant:
    each of its minutes is asked for once more after it settled, then counted as lost (the
    count equals the minutes missing from the store), in one log line; every other series is
    complete."""
    end = T0 + timedelta(minutes=15)
    clock = FakeClock(T0, stop_after=end)
    balance = oracle.DEFAULT_NAMES[(1001, "Balance")]
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        model = sim.model
        store = preloaded(model, FIRST_LIVE - timedelta(minutes=1),
                          datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
        cycles: list[datetime] = []

        def after_cycle(finished: datetime) -> None:
            cycles.append(finished)
            if len(cycles) == 2:
                sim.null_usage.add((1001, "Balance"))

        config = simulator_config(tmp_path, sim.url, NO_DAYS)
        with caplog.at_level(logging.DEBUG, logger="vuegraf.collector"):
            stats = run(config, clock, store, after_cycle)

    stored = store.values(Scale.MINUTE)
    written = {t for name, t in stored if name == balance}
    count = int((end.replace(second=0) - FIRST_LIVE).total_seconds()) // 60
    all_minutes = {int((FIRST_LIVE + timedelta(minutes=n)).timestamp()) for n in range(count)}
    missing = all_minutes - written
    lost = stats.snapshot().lost
    assert ("Home", "1MIN", balance, "no_value") in lost
    assert {k for k in lost if k[2] == balance} <= {("Home", "1MIN", balance, "no_value"),
                                                    ("Home", "1H", balance, "no_value")}
    others_lost = {k: n for k, n in lost.items() if k[2] != balance}
    assert all(k[3] == "no_value" for k in lost)
    if others_lost:  # only the model's own gaps (the plug that goes offline now and then)
        only = Stats()
        for (account, scale, channel, reason), n in others_lost.items():
            only.count_lost(account, scale, channel, reason, n)
        assert only_the_models_gaps(only, model, T0, end)
    assert 6 <= lost[("Home", "1MIN", balance, "no_value")] <= len(missing)
    # Those given up are exactly the oldest missing ones; the youngest may still be settling.
    assert len(missing) - lost[("Home", "1MIN", balance, "no_value")] <= 3
    others = served(model, "1MIN", FIRST_LIVE, end.replace(second=0) - SETTLE)
    others = {k: v for k, v in others.items() if k[0] != balance}
    result = compare("every other series", {k: v for k, v in stored.items() if k[0] != balance},
                     others)
    assert result.ok, str(result)
    said = [r for r in caplog.records if "can no longer be filled" in r.getMessage()]
    assert [r.levelno for r in said if r.levelno > logging.DEBUG] == [logging.INFO]
    assert "Emporia has no value" in said[0].getMessage()


def test_a_balance_hole_older_than_retention_is_lost_and_the_rest_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """The last run saved a hole in Main Panel's Balance from 8 to 6 days ago: the part
    Emporia no longer keeps is counted as lost to retention in one WARNING, and the rest is
    asked for with usage requests, newest first, and stored as the model says."""
    end = T0 + timedelta(minutes=4)
    clock = FakeClock(T0, stop_after=end)
    balance = oracle.DEFAULT_NAMES[(1001, "Balance")]
    hole = (FIRST_LIVE - timedelta(days=8), FIRST_LIVE - timedelta(days=6))
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        model = sim.model
        store = preloaded(model, FIRST_LIVE - timedelta(minutes=1),
                          datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
        config = simulator_config(tmp_path, sim.url,
                                  {**NO_DAYS, "dailyRequestBudget": 100000})
        (tmp_path / "state").mkdir()
        MarksFile(tmp_path / "state", "Home").save(
            {Scale.MINUTE: {(1001, "Balance"): Holes((hole,), FIRST_LIVE)}}
        )
        with caplog.at_level(logging.INFO, logger="vuegraf.collector"):
            stats = run(config, clock, store)
        log = sim.requests_seen()

    lost = stats.snapshot().lost[("Home", "1MIN", balance, "retention")]
    # Emporia keeps 7 days of minutes; vuegraf asks no further back than 10 minutes inside
    # that: from the hole's start to 7 days less 10 minutes before the first tick.
    # As the run goes on, that edge moves on (and the oldest minutes, asked for last, with
    # it): at most up to where it is at the end.
    edge = T0 - timedelta(days=7) + timedelta(minutes=10)
    between = int((edge - hole[0]).total_seconds() // 60)
    by_the_end = int((end + (edge - T0) - hole[0]).total_seconds() // 60)
    assert between - 1 <= lost <= by_the_end + 1
    said = [r for r in caplog.records if "can no longer be filled" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "older than Emporia keeps them" in said[0].getMessage()
    fills = [instant(r) for r in past_usage(log, "1MIN")]
    assert len(fills) >= 30  # up to half of each tick's 60 requests, then the rest
    assert fills == sorted(fills, reverse=True)
    assert fills[0] == hole[1] - timedelta(minutes=1)
    assert min(fills) > edge - timedelta(minutes=1)
    want = {k: v for k, v in served(model, "1MIN", min(fills), hole[1], only=[balance]).items()}
    got = {k: v for k, v in store.values(Scale.MINUTE).items()
           if k[0] == balance and k[1] < int(hole[1].timestamp())}
    result = compare("Balance minutes filled", got, want)
    assert result.ok, str(result)


def test_saved_balance_holes_are_kept_while_emporia_is_down_at_the_start(tmp_path: Path):
    """The last run saved a hole in Main Panel's Balance; this one starts while Emporia's
    usage endpoint answers 502 (no live answer names Balance yet): the marks it saves keep
    that hole, so a second restart still knows it."""
    end = T0 + timedelta(minutes=3)
    clock = FakeClock(T0, stop_after=end)
    hole = (FIRST_LIVE - timedelta(minutes=40), FIRST_LIVE - timedelta(minutes=30))
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        model = sim.model
        store = preloaded(model, FIRST_LIVE - timedelta(minutes=1),
                          datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
        sim.add_fault_window(502, T0 - timedelta(minutes=1), end + timedelta(minutes=1),
                             endpoints={"getDeviceListUsages"})
        config = simulator_config(tmp_path, sim.url, NO_DAYS)
        (tmp_path / "state").mkdir()
        marks = MarksFile(tmp_path / "state", "Home")
        marks.save({Scale.MINUTE: {(1001, "Balance"): Holes((hole,), FIRST_LIVE)}})
        run(config, clock, store)
    saved = MarksFile(tmp_path / "state", "Home").load()
    assert saved[Scale.MINUTE][(1001, "Balance")] == Holes((hole,), FIRST_LIVE)
    assert len(saved[Scale.MINUTE]) == 28 + 1  # the chart series, and the hole kept
