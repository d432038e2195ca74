"""Emporia answers the per-minute request can get, through real pyemvue and the simulator.

- An error status pyemvue turns into an empty answer (`get_device_list_usage` returns `{}` for
  a 4xx instead of raising) is a failed call like any other: after RELOGIN_AFTER_FAILURES of
  them in a row the session is replaced by a new login. Before, the failure was raised after
  the failure count had been reset, so the per-minute request never led to a re-login.
- A Retry-After too large for a timedelta (or not a number vuegraf can read) still rate-limits
  vuegraf: capped at 6 hours, no request is sent before then. Before, it raised OverflowError
  (or ValueError) inside the request, which was counted as an ordinary failure and nothing
  was held back.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from harness.emporia_cloud import cognito_cloud, cognito_config
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.emporia import RELOGIN_AFTER_FAILURES, EmporiaAccount, EmporiaError, EmporiaRateLimited
from vuegraf.model import Scale
from vuegraf.simulator import SimulatorServer
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 15, 7, 30, tzinfo=UTC)
MINUTE = datetime(2026, 11, 24, 15, 6, tzinfo=UTC)  # the last complete minute at NOW


@pytest.mark.parametrize("status", [400, 403])
def test_empty_usage_answers_count_as_failures_and_lead_to_a_relogin(tmp_path, status):
    stats = Stats()
    with cognito_cloud(now=lambda: NOW) as (cognito, sim):
        config = cognito_config(tmp_path)
        account = EmporiaAccount(config.accounts[0], config, FakeClock(NOW), stats)
        account.refresh_devices()
        sim.set_fault(status, endpoints={"getDeviceListUsages"})
        for _ in range(RELOGIN_AFTER_FAILURES):
            with pytest.raises(EmporiaError, match="^usage request failed: Emporia sent "
                               ".*no usage data$"):
                account.points(Scale.MINUTE, MINUTE, MINUTE)
        assert stats.snapshot().requests[("Home", "login", "ok")] == 1
        with pytest.raises(EmporiaError, match=f"Emporia sent HTTP {status} with no usage data"):
            account.points(Scale.MINUTE, MINUTE, MINUTE)  # the status is named; a new login
        sim.clear_fault()
        assert account.points(Scale.MINUTE, MINUTE, MINUTE)

        snap = stats.snapshot().requests
        assert snap[("Home", "login", "ok")] == 2  # one new session, from the stored tokens
        assert cognito.password_logins == 1
        assert [r.endpoint for r in sim.requests_seen()].count("customers") == 2
        assert snap[("Home", "getDeviceListUsages", f"http_{status}")] == (
            RELOGIN_AFTER_FAILURES + 1
        )


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("99999999999999", timedelta(hours=6)),  # capped, not an OverflowError
        ("360000", timedelta(hours=6)),  # 100 hours: capped too
        ("\u00b2", timedelta(minutes=1)),  # a digit to str.isdigit, not to int(): ignored
    ],
    ids=["overflow", "over-the-cap", "non-ascii-digit"],
)
def test_an_unusable_retry_after_still_holds_requests_back(tmp_path, header, wait):
    clock = FakeClock(NOW)
    with SimulatorServer(now=clock.now) as sim:
        sim.log_requests = True
        config = parse_config(
            {"accounts": [{"name": "Home", "email": "me@example.com", "password": "pw",
                           "simulatorUrl": sim.url}]},
            tmp_path / "vuegraf.json",
            environ={},
        )
        account = EmporiaAccount(config.accounts[0], config, clock)
        account.refresh_devices()
        sim.set_fault(429, endpoints={"getDeviceListUsages"}, retry_after=header)
        with pytest.raises(EmporiaRateLimited) as limited:
            account.points(Scale.MINUTE, MINUTE, MINUTE)
        assert limited.value.not_before == NOW + wait
        assert account.not_before == NOW + wait
        sim.clear_fault()

        clock.advance((wait - timedelta(seconds=1)).total_seconds())
        with pytest.raises(EmporiaRateLimited, match="not sent"):
            account.points(Scale.MINUTE, MINUTE, MINUTE)
        assert [r.status for r in sim.requests_seen()
                if r.endpoint == "getDeviceListUsages"] == [429]

        clock.advance(1)
        assert account.points(Scale.MINUTE, MINUTE, MINUTE)
        assert [r.status for r in sim.requests_seen()
                if r.endpoint == "getDeviceListUsages"] == [429, 200]
