"""Emporia answering 429 Too Many Requests for ten minutes, with and without `Retry-After`.

The real daemon in virtual time, real pyemvue over HTTP to the simulator (which shares the
virtual clock and records every request), the embedded SQLite store. While Emporia says 429,
vuegraf must not ask again before the Retry-After (or, without one, before a back-off that
grows), log the episode once and its end once, show the account as rate limited (Emporia's
side) in Stats, `/metrics` and the health check while it lasts and ok afterwards, count
every request it made exactly as the simulator saw them, and afterwards fill every minute it
missed: the store is compared with the simulator's model for each minute and channel.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import oracle
from harness.completeness import compare, seed_minute, sqlite_points
from harness.inprocess import run_daemon, simulator_config
from vuegraf.clock import FakeClock
from vuegraf.config import PrometheusConfig
from vuegraf.exporter import ExporterServer, LatestValues, VuegrafCollector
from vuegraf.health import HealthFile, check
from vuegraf.simulator import SimulatorServer, UsageModel
from vuegraf.simulator.server import RequestRecord
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 29
T0 = datetime(2026, 11, 22, 9, 0, 20, tzinfo=UTC)
OUTAGE_FROM = T0 + timedelta(minutes=4)
LIMITED_FROM = T0 + timedelta(minutes=10)
LIMITED_UNTIL = T0 + timedelta(minutes=20)
END = T0 + timedelta(minutes=45)


@dataclass(frozen=True)
class Case:
    retry_after: str | None
    endpoints: frozenset[str] | None = None  # None: every request is answered 429
    outage_first: bool = False  # 503s for 6 minutes just before, so holes wait to be filled
    # Second data every tick, so chart requests are made in every tick's fill (the minutes an
    # outage missed come back by usage requests for their instants, which bring every channel).
    seconds: bool = False


CASES = {
    "retry-after-300": Case("300"),
    "no-retry-after": Case(None),
    "charts-only-while-filling": Case("120", frozenset({"getChartUsage"}), outage_first=True,
                                      seconds=True),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_429_backs_off_logs_once_counts_and_loses_nothing(tmp_path, caplog, case):
    clock = FakeClock(T0, stop_after=END)
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        config = simulator_config(
            tmp_path,
            sim.url,
            {"detailedDataHoursEnabled": False, "detailedDataDaysEnabled": False,
             **({"detailedDataEnabled": True, "detailedDataChannels": ["Main Panel"],
                 "detailedIntervalSecs": 60} if case.seconds else {})},
        )
        # Minutes stored up to just before T0, so the test is about what follows.
        seed_minute(config, sim.model, T0.replace(second=0) - timedelta(minutes=2))

        def switch(now: datetime) -> None:
            """Emporia's mood, by the shared virtual clock (checked after every cycle)."""
            if case.outage_first and OUTAGE_FROM <= now < LIMITED_FROM:
                sim.set_fault(503)
            elif LIMITED_FROM <= now < LIMITED_UNTIL:
                sim.set_fault(429, endpoints=case.endpoints, retry_after=case.retry_after)
            else:
                sim.clear_fault()

        stats = Stats()
        health = HealthFile(tmp_path / "observed", stats, config.health_failure_threshold, 60)
        exporter = ExporterServer(PrometheusConfig(port=0), VuegrafCollector(LatestValues(), stats),
                                  health=health.healthy, runtime_metrics=False)
        states: list[tuple[datetime, str, str, str]] = []  # (time, state, metric, health says)

        def observe(now: datetime) -> None:
            """The account's state after each cycle, in Stats, /metrics and the health file."""
            health.update(now)
            state, _reason = stats.snapshot().account_states["Home"]
            (metric,) = [s.labels["state"] for f in text_string_to_metric_families(
                exporter.metrics_text().decode()) if f.name == "vuegraf_account_state"
                for s in f.samples if s.value == 1.0]
            states.append((now, state, metric, check(health.path, now.timestamp())[1]))

        with caplog.at_level(logging.INFO, logger="vuegraf"):
            run_daemon(config, clock, stats, [switch, observe])
        log = sim.requests_seen()

    limited = [r for r in log if r.status == 429]
    assert limited, "the simulator never answered 429"
    assert all(LIMITED_FROM <= r.at < LIMITED_UNTIL + timedelta(minutes=1) for r in limited)
    if case.endpoints is not None:
        assert {r.endpoint for r in limited} <= case.endpoints
    # After each 429, nothing until the wait is over.
    waits = []
    for r in limited:
        after = [n for n in log if n.at > r.at]
        assert after, "no request after the 429 episode"
        waits.append((after[0].at - r.at).total_seconds())
    print(f"{case}: {len(limited)} requests answered 429, then waits of {waits} s; "
          f"{len(log)} requests in all")
    if case.retry_after is not None:
        wait = int(case.retry_after)
        assert all(w >= wait for w in waits), waits
        assert len(limited) <= 600 // wait + 1
    else:
        assert all(w >= 60 for w in waits), waits  # own back-off: 1 min, then doubling
        assert waits == sorted(waits), waits
        assert len(limited) <= 4
    # The tick that got a 429 sent nothing more: its other requests (fills) were held back.
    for r in limited:
        assert [n for n in log if n.at == r.at and n.status == 429] == [r]
        assert not [n for n in log if n.at == r.at and n.status != 429
                    and log.index(n) > log.index(r)]
    if case.outage_first:  # the 429 came while filling, after the tick's live value
        first = limited[0]
        assert first.endpoint == "getChartUsage"
        assert [(n.endpoint, n.status) for n in log if n.at == first.at][0] == (
            "getDeviceListUsages", 200)

    # Logged once as it began and once as it ended, not every cycle.
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING and "429" in r.message]
    assert len(noisy) == 1, [r.message for r in noisy]
    print(noisy[0].levelname, noisy[0].message)
    # Requests vuegraf held back itself during the wait are no failures of their own.
    assert "more failed requests" not in noisy[0].message, noisy[0].message
    recoveries = 2 if case.outage_first else 1  # the 503 outage ends too
    assert sum("recovered after" in r.message for r in caplog.records) == recoveries

    # Emporia's side, told as such: rate limited while it says 429, ok once it answers, the
    # same in Stats and /metrics; the health check names it.
    assert all(state == metric for _t, state, metric, _h in states)
    limited_states = {state for t, state, _m, _h in states if LIMITED_FROM <= t < LIMITED_UNTIL}
    assert "rate_limited" in limited_states
    assert limited_states <= {"rate_limited", "ok"} | ({"emporia_down"} if case.outage_first
                                                       else set())
    said = [h for t, state, _m, h in states if state == "rate_limited"]
    assert all("account Home: Emporia asks for fewer requests (HTTP 429" in h for h in said), said
    assert states[-1][1] == "ok"
    if case.outage_first:
        assert "emporia_down" in {state for t, state, _m, _h in states if t < LIMITED_FROM}

    # Every request counted, as the simulator saw it, 429s included.
    counted: Counter[str] = Counter()
    for (_a, endpoint, _outcome), n in stats.snapshot().requests.items():
        if endpoint != "login":
            counted[endpoint] += n
    seen = Counter(r.endpoint for r in log)
    assert counted == seen
    assert sum(n for (_a, _e, o), n in stats.snapshot().requests.items()
               if o == "http_429") == len(limited)

    # Nothing lost: every minute of the window is stored, equal to the model.
    assert_minutes_complete(tmp_path / "vuegraf.sqlite", sim.model, log)


def assert_minutes_complete(db: Path, model: UsageModel, log: list[RequestRecord]) -> None:
    first = T0.replace(second=0) - timedelta(minutes=1)
    last = END.replace(second=0) - timedelta(minutes=5)
    # The model's own gaps (the Office Plug) are not expected: nothing to store there.
    minutes = compare(
        "minute points",
        sqlite_points(db, "Home", "False"),
        oracle.served(
            oracle.DEFAULT_NAMES, model, "1MIN", first, last + timedelta(minutes=1), oracle.NEW_YORK
        ),
    )
    assert minutes.expected > 28 * 30
    assert minutes.ok, str(minutes)
    # ... and the hole was filled after the episode, not by luck: usage requests for the
    # minutes missed (each brings every channel's minute), or chart requests.
    fills = [r for r in log if r.status == 200 and r.at >= LIMITED_UNTIL and (
        r.endpoint == "getChartUsage" and r.scale == "1MIN"
        or r.endpoint == "getDeviceListUsages"
        and r.query["instant"] < (r.at - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M"))]
    assert fills
