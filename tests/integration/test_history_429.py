"""`vuegraf CONFIG --historydays N` while Emporia answers one account's chart requests 429.

`vuegraf.cli.run` (the import, then the daemon) in virtual time with two accounts, each on its
own simulator sharing the virtual clock: "Limited" gets HTTP 429 for every chart request (with a
Retry-After of an hour, or none), "Calm" is served normally. The import must end Limited's part
at its first 429 instead of waiting out the Retry-After window by window (which held live
collection back for hours), say once how many windows were left and that `--historydays` can be
run again, finish Calm's part, and start the daemon at once; the daemon then asks Limited
nothing before the time Emporia gave. Requests vuegraf held back itself are no failed tries:
no window is reported failed.
"""

from __future__ import annotations

import argparse
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from harness.inprocess import LockedClock
from vuegraf.cli import run
from vuegraf.config import parse_config
from vuegraf.simulator import SimulatorServer
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 22, 9, 0, 20, tzinfo=UTC)
END = T0 + timedelta(minutes=70)
DAYS = 5
CONCURRENCY = 4


@pytest.mark.parametrize(
    ("retry_after", "wait_s"), [("3600", 3600), (None, 60)], ids=["retry-after-3600", "none"]
)
def test_a_429_ends_that_accounts_import_and_live_collection_starts_at_once(
    tmp_path, caplog, retry_after, wait_s
):
    clock = LockedClock(T0, stop_after=END)
    with SimulatorServer(seed=5, now=clock.now) as limited_sim, \
            SimulatorServer(seed=6, now=clock.now) as calm_sim:
        limited_sim.log_requests = calm_sim.log_requests = True
        limited_sim.set_fault(429, endpoints={"getChartUsage"}, retry_after=retry_after)
        config = parse_config(
            {
                "accounts": [
                    {"name": "Limited", "email": "limited@example.com", "password": "pw",
                     "simulatorUrl": limited_sim.url},
                    {"name": "Calm", "email": "calm@example.com", "password": "pw",
                     "simulatorUrl": calm_sim.url},
                ],
                "stateDir": "state",
                "timezone": "America/New_York",
                "historyConcurrency": CONCURRENCY,
                "historyRequestsPerSecond": 1000,
            },
            tmp_path / "vuegraf.json",
            environ={},
        )
        args = argparse.Namespace(dryrun=False, debug=False)
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            code = run(config, args, clock, Stats(), DAYS, False)
        limited_log = limited_sim.requests_seen()
        calm_log = calm_sim.requests_seen()

    assert code == 0
    # Calm: its whole import, then live collection at once (not hours later).
    live = [r for r in calm_log if r.endpoint == "getDeviceListUsages"]
    assert live, "live collection never started"
    assert live[0].at < T0 + timedelta(minutes=2), live[0].at
    calm_windows = [r for r in calm_log if r.endpoint == "getChartUsage" and r.at <= live[0].at]
    assert calm_windows and all(r.status == 200 for r in calm_windows)
    windows = len(calm_windows)  # both accounts have the same devices: the same plan

    # Limited: the first 429s (one per worker at most, all sent before the first came back),
    # then nothing until Emporia's wait is over.
    assert [r.endpoint for r in limited_log[:2]] == ["customers", "devices"]  # the login
    import_charts = []
    for r in limited_log[2:]:
        if r.endpoint != "getChartUsage":
            break
        import_charts.append(r)
    assert 1 <= len(import_charts) <= CONCURRENCY, len(import_charts)
    assert all(r.status == 429 for r in import_charts)
    first = import_charts[0].at
    after = limited_log[2 + len(import_charts):]
    assert after, "the daemon never asked Limited again"
    assert after[0].at >= first + timedelta(seconds=wait_s), (after[0].at, first)
    assert after[0].status == 200  # the daemon: devices, then the live minute

    # Said once, in one line: how many windows were left, and how to get them.
    said = [r for r in caplog.records if r.name == "vuegraf.history"
            and r.levelno >= logging.WARNING and "429" in r.message]
    assert len(said) == 1, [r.message for r in said]
    line = said[0].getMessage()
    assert "\n" not in line and "Limited" in line and f"--historydays {DAYS} again" in line
    match = re.search(r"(\d+) of (\d+) windows not fetched", line)
    assert match is not None, line
    assert (int(match.group(1)), int(match.group(2))) == (windows, windows)
    # No window failed: requests vuegraf held back are no failed tries.
    assert not [r for r in caplog.records if "failed 3 times" in r.getMessage()]
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("History of")]
    assert len(summary) == 1 and f"0 windows failed, {windows} left after HTTP 429" in summary[0]


def test_a_429_before_the_import_began_still_starts_collection(tmp_path, caplog):
    """Emporia answers the import's very first request (the login) 429: the import of that
    account never begins, which is no fatal error; the daemon starts and waits for the time
    Emporia gave. (Before, the only account counted as failed and vuegraf exited 1.)"""
    clock = LockedClock(T0, stop_after=T0 + timedelta(minutes=15))
    with SimulatorServer(seed=7, now=clock.now) as sim:
        sim.log_requests = True
        seen = 0

        def only_the_first_request(_endpoint: str) -> None:
            nonlocal seen
            seen += 1
            if seen == 2:
                sim.clear_fault()

        sim.set_fault(429, retry_after="600")
        sim.on_request = only_the_first_request
        config = parse_config(
            {"accounts": [{"name": "Home", "email": "me@example.com", "password": "pw",
                           "simulatorUrl": sim.url}], "stateDir": "state"},
            tmp_path / "vuegraf.json",
            environ={},
        )
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            code = run(config, argparse.Namespace(dryrun=False, debug=False), clock, Stats(),
                       DAYS, False)
        log = sim.requests_seen()

    assert code == 0
    assert [(r.endpoint, r.status) for r in log[:1]] == [("customers", 429)]
    assert log[1:], "collection never started"
    assert log[1].at >= log[0].at + timedelta(seconds=600)
    assert any(r.endpoint == "getDeviceListUsages" and r.status == 200 for r in log)
    said = [r.getMessage() for r in caplog.records
            if r.name == "vuegraf.history" and r.levelno >= logging.WARNING]
    assert len(said) == 1 and "before its import began" in said[0], said
    assert f"--historydays {DAYS} again" in said[0]
