"""Holes are filled in the order that serves the user: what a restart just lost comes before
an older fill still running, and an existing install's marks file is still read.

The daemon runs in virtual time against the Emporia simulator (real pyemvue over HTTP, the
simulator's clock tied to the FakeClock), writing to a store at the seam that keeps every
point and answers the read back from them. Expected minutes come from the simulator's model
(tests/harness/oracle.py); times are literals or plain arithmetic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness import oracle
from harness.completeness import compare
from harness.inprocess import simulator_config
from harness.stores import MemoryStore
from vuegraf.clock import FakeClock
from vuegraf.config import Config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.model import Point, Scale
from vuegraf.simulator import SimulatorServer, UsageModel
from vuegraf.simulator.server import RequestRecord
from vuegraf.stats import Stats

SEED = 5
T0 = datetime(2026, 11, 23, 10, 0, 20, tzinfo=UTC)
MINUTES_ONLY = {"detailedDataHoursEnabled": False, "detailedDataDaysEnabled": False}
SETTLE = timedelta(minutes=5)  # a missed minute is filled within this (settle 2 min + ticks)
# Emporia keeps minutes 7 days; vuegraf stays 10 minutes inside that edge.
RETENTION_MARGIN = timedelta(minutes=15)


class Store(MemoryStore):
    def minutes(self) -> dict[oracle.Key, float]:
        return {(p.channel, int(p.time.timestamp())): p.watts
                for p in self.points if p.scale is Scale.MINUTE}


def run(config: Config, clock: FakeClock, store: Store,
        on_cycle: Callable[[datetime], None] | None = None) -> Stats:
    """One vuegraf process until the clock stops."""
    stats = Stats()
    account = EmporiaAccount(config.accounts[0], config, clock, stats)
    Daemon(config, [account], [store], clock, stats=stats,
           on_cycle=[on_cycle] if on_cycle else []).run()
    assert stats.snapshot().failed_cycles == 0
    return stats


def minute_points(model: UsageModel, first: datetime, end: datetime,
                  names: dict[oracle.ChannelKey, str] = oracle.DEFAULT_NAMES,
                  only: list[str] | None = None) -> dict[oracle.Key, float]:
    """Every minute the simulator serves in [first, end), as vuegraf should write it."""
    return oracle.served(names, model, "1MIN", first, end, model.tz, only=only)


def chart_start(record: RequestRecord) -> datetime:
    return datetime.fromisoformat(record.query["start"].replace("Z", "+00:00"))


def minute_charts(log: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in log if r.endpoint == "getChartUsage" and r.scale == "1MIN"]


def test_a_restart_during_the_first_fill_has_its_lost_minutes_filled_first(tmp_path: Path):
    """First start on an empty store: 7 days of minutes for 28 chart series, 392 requests at
    60 a cycle. Stopped after 3 cycles, down 10 minutes, started again: the minutes lost
    while down are stored by the end of the second cycle after the restart, while the week
    is still being filled; then the week is finished, every minute as the model says."""
    end_1 = T0 + timedelta(minutes=3)
    restart = end_1 + timedelta(minutes=10)
    end_2 = restart + timedelta(minutes=15)
    clocks = {"now": FakeClock(T0, stop_after=end_1)}
    store = Store()
    cycles: list[datetime] = []
    at_second_cycle: dict[oracle.Key, float] = {}

    def after_cycle(finished: datetime) -> None:
        cycles.append(finished)
        if len(cycles) == 2:
            at_second_cycle.update(store.minutes())

    with SimulatorServer(seed=SEED, now=lambda: clocks["now"].now()) as sim:
        config = simulator_config(tmp_path, sim.url, MINUTES_ONLY)
        run(config, clocks["now"], store)
        after_first_run = store.minutes()
        clocks["now"] = FakeClock(restart, stop_after=end_2)
        run(config, clocks["now"], store, after_cycle)
        model = sim.model

    week = minute_points(model, T0 - timedelta(days=7) + RETENTION_MARGIN, T0)
    assert len(week) > 28 * 10000 * 0.9
    # The first run left the week half done (otherwise this test proves nothing) ...
    assert 0 < len(week.keys() & after_first_run.keys()) < len(week) * 0.7
    # ... and the second cycle after the restart still had some of it to do,
    assert len(cycles) >= 10 and cycles[1] < restart + timedelta(minutes=2)
    assert len(week.keys() & at_second_cycle.keys()) < len(week)
    # but every minute from the first run's last ones to the restart was there by then.
    lost = minute_points(model, end_1 - timedelta(minutes=5), restart.replace(second=0))
    assert len(lost) >= 28 * 14
    result = compare("minutes lost to the restart, two cycles after it", at_second_cycle, lost)
    assert result.ok, str(result)
    # At the end, the whole week and everything since, each minute as the model says.
    everything = minute_points(model, end_2 - timedelta(days=7) + RETENTION_MARGIN,
                               end_2.replace(second=0) - SETTLE)
    result = compare("minutes at the end", store.minutes(), everything)
    assert result.ok, str(result)


def marks_path(state_dir: Path, account: str) -> Path:
    """Where versions without holes kept an account's marks: the name's SHA-256, 16 digits."""
    return state_dir / f"marks-{hashlib.sha256(account.encode()).hexdigest()[:16]}.json"


def test_the_marks_file_of_an_older_version_is_read_and_its_hole_filled(tmp_path: Path):
    """An install upgraded from a version that saved one mark per series: its store ends at
    10:00, but its marks say nothing after 07:00 had been filled (a hole the store cannot
    show). The hole is filled, from 07:00 exactly: nothing older is asked for."""
    previous = T0.replace(second=0) - timedelta(minutes=5)
    mark = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    end = T0 + timedelta(minutes=10)
    clock = FakeClock(T0, stop_after=end)
    store = Store()
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        model = sim.model
        names = {gid: dev for gid, _num, dev, _name, _chart in model.channels()}
        series = oracle.channels(oracle.DEFAULT_NAMES)
        store.points = [Point("Home", names[gid], name, Scale.MINUTE, previous, 1.0)
                        for gid, _num, name in series]
        config = simulator_config(tmp_path, sim.url, MINUTES_ONLY)
        state = tmp_path / "state"
        state.mkdir()
        marks_path(state, "Home").write_text(json.dumps({
            "account": "Home",
            "marks": {"1MIN": {f"{gid}|{num}": mark.timestamp() for gid, num, _ in series}},
        }))
        run(config, clock, store)
        log = sim.requests_seen()

    starts = [chart_start(r) for r in minute_charts(log)]
    assert min(starts) == mark
    assert len([s for s in starts if s == mark]) == len(series)
    want = minute_points(model, mark, previous)
    assert len(want) > 28 * 170
    result = compare("minutes of the hole the old marks named", store.minutes(), want)
    assert result.ok, str(result)
    # The file is now in the format with holes (and still has the marks older versions read).
    data = json.loads(marks_path(state, "Home").read_text())
    assert set(data) == {"account", "marks", "holes"}
    # Every chart series, and the computed channels (their holes are kept too).
    computed = {f"{gid}|{num}" for gid, num, _d, _n, chart in model.channels() if not chart}
    assert computed
    assert set(data["marks"]["1MIN"]) == {f"{gid}|{num}" for gid, num, _ in series} | computed


def test_a_device_installed_two_days_ago_is_filled_as_fast_as_the_others(tmp_path: Path):
    """A plug installed 2 days before the first start: Emporia answers its first 10 of 14
    week windows with nothing. Those are given up at once (a live minute came after them),
    not backed off from for hours: its last 2 days are stored when everyone else's week is."""
    installed = datetime(2026, 11, 21, 10, 30, tzinfo=UTC)
    end = T0 + timedelta(minutes=12)
    clock = FakeClock(T0, stop_after=end)
    store = Store()
    names = {**oracle.DEFAULT_NAMES, (4001, "1,2,3"): "Shed Plug"}
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        sim.add_device(replace(oracle.SHED_PLUG, installed_at=installed))
        config = simulator_config(tmp_path, sim.url, MINUTES_ONLY)
        run(config, clock, store)
        log = sim.requests_seen()
        model = sim.model

    settled = end.replace(second=0) - SETTLE
    plug = minute_points(model, installed - timedelta(hours=1), settled, names, ["Shed Plug"])
    assert min(t for _name, t in plug) == int(installed.timestamp())
    assert len(plug) > 2 * 1400
    result = compare("the new plug's minutes", store.minutes(), plug)
    assert result.ok, str(result)
    everyone = minute_points(model, end - timedelta(days=7) + RETENTION_MARGIN, settled, names)
    result = compare("every series' minutes", store.minutes(), everyone)
    assert result.ok, str(result)
    plug_charts = [r for r in minute_charts(log) if r.query["deviceGid"] == "4001"]
    assert 14 <= len(plug_charts) <= 16, [chart_start(r) for r in plug_charts]
