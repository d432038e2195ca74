"""History's worker threads share one account's session: a burst of 5xx makes exactly one re-login.

`run_history` with 4 workers, real pyemvue over HTTP to the simulator (with latency, so the
workers' requests overlap), once through pyemvue's simulator login and once through its
production `Auth` with the Cognito stand-in (tokens kept in a file). Every chart request is
answered 502 until the account logs in again; the simulator's hook ends the burst at the
second `/customers` request (the re-login's). RELOGIN_AFTER_FAILURES failures in a row must
replace the session once: one thread logs in while the others wait for it, and failures of
requests made with the old session do not count against the new one. Before, every worker
that found the session gone logged in on its own (2 to 5 logins where 2 are right), each
writing the token file.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.emporia_cloud import cognito_cloud, cognito_config
from harness.inprocess import LockedClock
from vuegraf.clock import FakeClock
from vuegraf.config import Config, parse_config
from vuegraf.emporia import RELOGIN_AFTER_FAILURES, EmporiaAccount
from vuegraf.history import run_history
from vuegraf.model import Point, Scale
from vuegraf.simulator import SimulatorServer
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 15, 7, 30, tzinfo=UTC)
SETTINGS = {"historyConcurrency": 4, "historyRequestsPerSecond": 1000,
            "timezone": "America/New_York"}


class Recording:
    name = "recording"

    def __init__(self) -> None:
        self.points: list[Point] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        pass

    def write(self, points: Sequence[Point]) -> None:
        with self._lock:
            self.points.extend(points)

    def close(self) -> None:
        pass


@contextmanager
def simulator_cloud(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[SimulatorServer, Config]]:
    with SimulatorServer(seed=3, latency_s=0.05, now=clock.now) as sim:
        config = parse_config(
            {"accounts": [{"name": "Home", "email": "me@example.com", "password": "pw",
                           "simulatorUrl": sim.url}], "stateDir": "state", **SETTINGS},
            tmp_path / "vuegraf.json",
            environ={},
        )
        yield sim, config


@contextmanager
def production_cloud(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[SimulatorServer, Config]]:
    with cognito_cloud(seed=3, latency_s=0.05, now=clock.now) as (_cognito, sim):
        yield sim, cognito_config(tmp_path, **SETTINGS)


@pytest.mark.parametrize("cloud", [simulator_cloud, production_cloud],
                         ids=["simulator-login", "cognito-login"])
def test_a_5xx_burst_during_history_makes_exactly_one_relogin(tmp_path, cloud):
    clock = LockedClock(NOW)
    stats = Stats()
    with cloud(tmp_path, clock) as (sim, config):
        sim.log_requests = True
        account = EmporiaAccount(config.accounts[0], config, clock, stats)
        account.refresh_devices()  # the first login
        logins: Counter[str] = Counter()
        lock = threading.Lock()

        def end_burst_at_relogin(endpoint: str) -> None:
            with lock:
                logins[endpoint] += 1
                if endpoint == "customers" and logins[endpoint] == 1:
                    sim.clear_fault()  # the re-login's /customers: Emporia is well again

        sim.set_fault(502, endpoints={"getChartUsage"})
        sim.on_request = end_burst_at_relogin
        sink = Recording()
        result = run_history([account], [sink], 2, config, clock, stats,
                             scales={Scale.HOUR, Scale.DAY}, retry_delays=(0.0, 0.0))
        log = sim.requests_seen()

    failed_charts = [r for r in log if r.endpoint == "getChartUsage" and r.status == 502]
    assert len(failed_charts) >= RELOGIN_AFTER_FAILURES  # the burst was long enough
    assert [r.endpoint for r in log].count("customers") == 2  # the first login, one re-login
    assert stats.snapshot().requests[("Home", "login", "ok")] == 2
    assert ("Home", "login", "error") not in stats.snapshot().requests
    assert result.jobs > 4 * RELOGIN_AFTER_FAILURES  # plenty of windows for every worker
    assert result.done == result.jobs and sink.points
    if account.token_file is not None and account.token_file.exists():
        tokens = json.loads(account.token_file.read_text())  # one whole write, not two mixed
        assert set(tokens) >= {"id_token", "access_token", "refresh_token"}
