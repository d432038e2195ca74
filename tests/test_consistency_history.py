"""The consistency check over a 30-day `--historydays` import of the default simulator
household: real pyemvue over HTTP to the simulator, the SQLite store, the check wired as `run`
wires it (`import_history(..., check)` puts it among the sinks).

On the simulator's data, which adds up by construction (its model shares each day among its
hours and each hour among its minutes), the check finds no disagreement. When the simulator
answers a changed value for chosen buckets, it finds exactly those: a changed minute makes
its hour disagree; a changed hour makes its hour (against its minutes) and its day (against
its hours) disagree; a changed day makes that day disagree. One WARNING says so.
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vuegraf.cli import import_history, run
from vuegraf.clock import FakeClock
from vuegraf.config import PrometheusConfig, parse_config
from vuegraf.consistency import ConsistencyCheck
from vuegraf.emporia import EmporiaAccount
from vuegraf.exporter import ExporterServer, LatestValues, VuegrafCollector
from vuegraf.model import Scale
from vuegraf.simulator import SimulatorServer
from vuegraf.simulator.model import Scenario, UsageModel, local_midnight
from vuegraf.stats import Stats

# 30 days back crosses the autumn change in New York (1 Nov 2026): a 25-hour day is judged.
NOW = datetime(2026, 11, 18, 15, 0, 20, tzinfo=UTC)
DAYS = 30
MAIN, KITCHEN = 1001, "1"  # Main Panel's circuit 1 (no gaps in the default household)
# Planted: one minute and one hour inside Emporia's minute retention, one day outside it.
PLANTED_MINUTE = datetime(2026, 11, 15, 18, 7, tzinfo=UTC)
PLANTED_HOUR = datetime(2026, 11, 14, 9, tzinfo=UTC)
PLANTED_DAY_DATE = datetime(2026, 10, 28).date()


class PlantedModel(UsageModel):
    """The simulator's model, but chosen buckets of one channel answer 10 % more."""

    def __init__(self, scenario: Scenario, seed: int, planted: set[tuple[str, datetime]]):
        super().__init__(scenario, seed)
        self.planted = planted

    def kwh(
        self, device_gid: int, channel_num: str, scale: str, bucket_start: datetime
    ) -> float | None:
        value = super().kwh(device_gid, channel_num, scale, bucket_start)
        if (device_gid, channel_num) == (MAIN, KITCHEN) and (scale, bucket_start) in self.planted:
            assert value is not None
            return value * 1.1
        return value


def import_30_days(tmp_path, planted: set[tuple[str, datetime]] | None = None):
    clock = FakeClock(NOW)
    stats = Stats()
    with SimulatorServer(seed=5, now=clock.now) as sim:
        if planted is not None:
            sim._model = PlantedModel(sim.scenario, sim.seed, planted)
        config = parse_config(
            {
                "accounts": [{"name": "Home", "email": "h@example.com", "password": "pw",
                              "simulatorUrl": sim.url}],
                "timezone": "America/New_York",
                "stateDir": str(tmp_path / "state"),
                "sqlitePath": str(tmp_path / "vuegraf.sqlite"),
            },
            tmp_path / "vuegraf.json",
        )
        check = ConsistencyCheck(config.zone, stats, clock)
        accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
        assert import_history(config, accounts, DAYS, False, clock, stats, None, check=check)
    return check, stats, clock


def consistency_samples(stats: Stats, clock: FakeClock) -> dict[tuple[str, str], float]:
    collector = VuegrafCollector(LatestValues(clock), stats, health=lambda: True)
    server = ExporterServer(PrometheusConfig(port=0), collector, health=lambda: True,
                            runtime_metrics=False)
    return {
        (s.name, s.labels["scale"]): s.value
        for family in text_string_to_metric_families(server.metrics_text().decode())
        for s in family.samples
        if family.name.startswith("vuegraf_consistency") and s.labels["account"] == "Home"
    }


def test_a_30_day_import_adds_up_and_planted_buckets_are_found(tmp_path, caplog):
    """One import (each costs half a minute of CI): every bucket but the planted ones is the
    clean data, so "exactly the planted ones disagree" is both proofs at once: 0 disagreeing
    buckets among the thousands of clean ones, and each planted one found."""
    caplog.set_level(logging.INFO, logger="vuegraf.consistency")
    ny = Scenario.default().tz
    day = local_midnight(PLANTED_DAY_DATE, ny)
    plants = {("1MIN", PLANTED_MINUTE), ("1H", PLANTED_HOUR), ("1D", day)}
    check, stats, clock = import_30_days(tmp_path, plants)

    snap = stats.snapshot()
    # Judged: every channel's whole days (about 28 of the 30, 24 channels and more with a
    # chart) and the hours of the week of minutes Emporia keeps.
    assert snap.checked[("Home", "1D")] >= 25 * 24
    assert snap.checked[("Home", "1H")] >= 6 * 24 * 24
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    hour_of_minute = PLANTED_MINUTE.replace(minute=0)
    day_of_hour = local_midnight(PLANTED_HOUR.astimezone(ny).date(), ny)
    found = {(d.device, d.channel, d.scale, d.start) for d in check.disagreements}
    kitchen = ("Main Panel", "Main Panel-1")
    assert found == {
        (*kitchen, Scale.HOUR, hour_of_minute),
        (*kitchen, Scale.HOUR, PLANTED_HOUR),
        (*kitchen, Scale.DAY, day_of_hour),
        (*kitchen, Scale.DAY, day),
    }
    assert snap.disagreements == {("Home", "1H"): 2, ("Home", "1D"): 2}
    samples = consistency_samples(stats, clock)
    assert samples[("vuegraf_consistency_disagreements_total", "1H")] == 2
    assert samples[("vuegraf_consistency_disagreements_total", "1D")] == 2
    assert samples[("vuegraf_consistency_checked_total", "1D")] == snap.checked[("Home", "1D")]
    assert len(warnings) == 1 and "Main Panel-1" in warnings[0].getMessage()
    # Each disagreement is the planted 10 %, from the model itself: a planted own point is
    # 1.1 x its parts; a planted part puts its parts 0.1 x that part above the own point.
    model = UsageModel(Scenario.default(), seed=5)
    by_bucket = {(d.scale, d.start): d for d in check.disagreements}
    for scale, start in ((Scale.HOUR, PLANTED_HOUR), (Scale.DAY, day)):
        d = by_bucket[(scale, start)]
        assert d.whole == pytest.approx(1.1 * d.parts_sum, rel=1e-6)
    minute_kwh = model.kwh(MAIN, KITCHEN, "1MIN", PLANTED_MINUTE)
    hour_kwh = model.kwh(MAIN, KITCHEN, "1H", PLANTED_HOUR)
    assert minute_kwh is not None and hour_kwh is not None
    d = by_bucket[(Scale.HOUR, hour_of_minute)]
    assert d.parts_sum - d.whole == pytest.approx(0.1 * minute_kwh * 1000.0, rel=1e-6)
    d = by_bucket[(Scale.DAY, day_of_hour)]
    assert d.parts_sum - d.whole == pytest.approx(0.1 * hour_kwh * 1000.0, rel=1e-6)


def test_collection_live_and_filled_adds_up(tmp_path, caplog):
    """`run` as `main` calls it, from a first start: the week of holes filled from chart data
    and three hours of live minutes, hours and a day all reach the check, and add up."""
    caplog.set_level(logging.INFO, logger="vuegraf.consistency")
    start = datetime(2026, 11, 18, 4, 30, 20, tzinfo=UTC)  # 23:30 in New York
    clock = FakeClock(start, stop_after=start + timedelta(hours=3))
    stats = Stats()
    with SimulatorServer(seed=5, now=clock.now) as sim:
        config = parse_config(
            {
                "accounts": [{"name": "Home", "email": "h@example.com", "password": "pw",
                              "simulatorUrl": sim.url}],
                "timezone": "America/New_York",
                "stateDir": str(tmp_path / "state"),
                "sqlitePath": str(tmp_path / "vuegraf.sqlite"),
            },
            tmp_path / "vuegraf.json",
        )
        args = argparse.Namespace(dryrun=False, debug=False)
        assert run(config, args, clock, stats, 0, False) == 0
    snap = stats.snapshot()
    # Hours of the filled week and the live ones, and the filled week's days.
    assert snap.checked[("Home", "1H")] >= 6 * 24 * 24
    assert snap.checked[("Home", "1D")] >= 5 * 24
    assert snap.disagreements == {}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
