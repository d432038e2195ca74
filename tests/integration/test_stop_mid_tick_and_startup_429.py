"""Two things Emporia's request gate raises that are not outages.

- A stop (SIGTERM, SIGHUP) that lands while a tick's requests are in flight: the gate refuses
  the tick's next request, or cuts pyemvue's retry wait short. That is silent: no ERROR or
  WARNING, the cycle not counted as failed (the health and a reload's statistics go on from
  there). Three places: inside the login at start-up (plain simulator, the stop arrives
  while it answers), during the live minute's retry wait and during a hole fill's retry
  wait (pyemvue's production Auth against the Cognito stand-in, Emporia answering 503).
- A 429 with Retry-After at start-up: the account is asked again at the first tick at or
  after the Retry-After time, not before, and not a back-off later.

The real daemon in virtual time (FakeClock; the simulator's clock is the same).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.emporia_cloud import cognito_cloud, cognito_config
from harness.inprocess import simulator_config
from harness.stores import MemoryStore
from vuegraf.clock import FakeClock
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount, RetryPolicy
from vuegraf.model import Scale
from vuegraf.simulator import SimulatorServer
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 41
T0 = datetime(2026, 11, 23, 10, 0, 20, tzinfo=UTC)
# pyemvue's wait after a 5xx, on vuegraf's clock: long enough that a stop lands inside it.
RETRY = RetryPolicy(attempts=3, first_delay_s=30.0, max_delay_s=30.0)


class EmptyStore(MemoryStore):
    """A store that holds nothing before this run: every series is filled from the lookback,
    so every tick makes chart requests for holes."""

    name = "store"

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]:
        return {}


def said_loudly(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records
            if r.levelno >= logging.WARNING]


def cycle_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Cycle at ")]


def test_a_stop_during_the_start_up_login_is_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0, stop_after=T0 + timedelta(minutes=10))
    stats = Stats()
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True

        def stop_while_answering(_token: str) -> bool:
            clock.stop()  # SIGTERM arrives while the login's request is being answered
            return True

        sim.token_check = stop_while_answering
        config = simulator_config(tmp_path, sim.url)
        account = EmporiaAccount(config.accounts[0], config, clock, stats)
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            Daemon(config, [account], [EmptyStore()], clock, stats=stats).run()
        seen = sim.requests_seen()

    # The login's request was answered; the device list it would have asked next was not sent.
    assert [(r.endpoint, r.status) for r in seen] == [("customers", 200)]
    assert said_loudly(caplog) == []
    snapshot = stats.snapshot()
    assert snapshot.cycles == 1
    assert snapshot.failed_cycles == 0 and snapshot.consecutive_failed_cycles == 0
    assert [" from 1 account(s) " in line for line in cycle_lines(caplog)] == [True]


@pytest.fixture
def cloud() -> Iterator[tuple[SimulatorServer, FakeClock]]:
    clock = FakeClock(T0)
    with cognito_cloud(seed=SEED, now=clock.now) as (_cognito, sim):
        yield sim, clock


@pytest.mark.parametrize("endpoint", ["getDeviceListUsages", "getChartUsage"])
def test_a_stop_during_a_retry_wait_in_a_tick_is_silent(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    cloud: tuple[SimulatorServer, FakeClock],
    endpoint: str,
) -> None:
    sim, clock = cloud
    config = cognito_config(tmp_path, timezone="America/New_York")
    stats = Stats()
    store = EmptyStore()
    finished: list[datetime] = []

    def trouble_at_the_fourth_tick(at: datetime) -> None:
        """After three good cycles Emporia answers 503 to `endpoint`; the stop comes 10 s
        into the next tick, inside pyemvue's 30 s wait before its second attempt."""
        finished.append(at)
        if len(finished) == 3:
            sim.set_fault(503, endpoints={endpoint})
            clock.stop_after = at + timedelta(seconds=70)  # the next tick is 60 s later

    account = EmporiaAccount(config.accounts[0], config, clock, stats, retry=RETRY)
    daemon = Daemon(config, [account], [store], clock, stats=stats,
                    on_cycle=[trouble_at_the_fourth_tick])
    with caplog.at_level(logging.INFO, logger="vuegraf"):
        daemon.run()
    seen = sim.requests_seen()

    # The fourth tick's request was answered 503 once; the stop ended the retry wait, and
    # nothing more was sent.
    assert len(finished) == 4 and clock.stopped
    faulted = [r for r in seen if r.status == 503]
    assert [(r.endpoint, r.at) for r in faulted] == [(endpoint, finished[2] + timedelta(minutes=1))]
    assert seen[-1] == faulted[0]
    if endpoint == "getChartUsage":  # the tick's live minute came first, then the fills
        assert [r.endpoint for r in seen if r.at == faulted[0].at][0] == "getDeviceListUsages"
        assert sum(r.endpoint == "getChartUsage" for r in seen if r.at < faulted[0].at) >= 3 * 28
    # Silent, and no failed cycle.
    assert said_loudly(caplog) == []
    snapshot = stats.snapshot()
    assert snapshot.cycles == 4
    assert snapshot.failed_cycles == 0 and snapshot.consecutive_failed_cycles == 0
    assert all(" from 1 account(s) " in line for line in cycle_lines(caplog))


def test_a_429_at_start_up_is_asked_again_at_its_retry_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    retry_after = 480  # the tick at T0 + 8 min 45 s is the first one at or after it
    clock = FakeClock(T0, stop_after=T0 + timedelta(minutes=20))
    stats = Stats()
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        sim.set_fault(429, retry_after=retry_after)

        def emporia_calms_down(_finished: datetime) -> None:
            sim.clear_fault()

        config = simulator_config(tmp_path, sim.url)
        account = EmporiaAccount(config.accounts[0], config, clock, stats)
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            Daemon(config, [account], [EmptyStore()], clock, stats=stats,
                   on_cycle=[emporia_calms_down]).run()
        seen = sim.requests_seen()

    # The start-up's first request (the login's) was answered 429; the next one came at the
    # first tick at or after the Retry-After, within one interval of it.
    assert [(r.endpoint, r.status, r.at) for r in seen[:1]] == [("customers", 429, T0)]
    not_before = T0 + timedelta(seconds=retry_after)
    assert not_before <= seen[1].at < not_before + timedelta(minutes=1), seen[1]
    assert [r.status for r in seen[1:]] == [200] * (len(seen) - 1)
    # Then collecting: a live minute every tick from there on.
    live = sorted({r.at for r in seen if r.endpoint == "getDeviceListUsages"})
    assert live[0] == seen[1].at and len(live) >= 10
    # One ERROR when it began, one INFO when it ended.
    assert [m for m in said_loudly(caplog) if "429" in m] == [m for m in said_loudly(caplog)]
    assert len(said_loudly(caplog)) == 1
    assert sum("recovered after" in r.getMessage() for r in caplog.records) == 1
