"""Regression tests for faults found in review: each would have hurt an unattended daemon."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil import tz

from vuegraf.backfill import Tracker
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config, system_zone
from vuegraf.emporia import RELOGIN_AFTER_FAILURES, EmporiaAccount, EmporiaError
from vuegraf.model import Scale
from vuegraf.schedule import local_day_start, next_local_day_start
from vuegraf.simulator import SimulatorServer
from vuegraf.sinks.base import classify_status

NOW = datetime(2026, 11, 23, 15, 0, 30, tzinfo=UTC)


def sim_account(tmp_path, url, clock, **kw):
    config = parse_config(
        {"accounts": [{"name": "Home", "email": "e", "password": "p", "simulatorUrl": url}]},
        tmp_path / "vuegraf.json",
        environ={},
    )
    return EmporiaAccount(config.accounts[0], config, clock, **kw)


@pytest.mark.parametrize(("status", "retryable"), [
    (400, False), (422, False), (413, False), (401, True), (403, True), (404, True),
    (408, True), (429, True), (500, True), (503, True), (None, True),
])
def test_auth_and_missing_bucket_are_kept_for_retry(status, retryable):
    assert classify_status(status) is retryable


def test_an_error_status_is_an_error_not_an_empty_success(tmp_path):
    """pyemvue returns {} for a 5xx getDeviceListUsages; that must not look like success."""
    clock = FakeClock(NOW)
    with SimulatorServer(now=clock.now) as sim:
        account = sim_account(tmp_path, sim.url, clock)
        account.refresh_devices()
        sim.error_rate = 1.0
        with pytest.raises(EmporiaError, match="HTTP 500"):
            account.points(Scale.MINUTE, NOW.replace(second=0) - timedelta(minutes=1), NOW)


def test_chart_channels_never_makes_a_request(tmp_path):
    clock = FakeClock(NOW)
    with SimulatorServer(now=clock.now) as sim:
        account = sim_account(tmp_path, sim.url, clock)
        account.refresh_devices()
        before = sim.stats()["total"]
        clock.advance(7200)  # the device refresh is due, but only usage() may do it
        assert len(account.chart_channels()) == 28
        assert sim.stats()["total"] == before


class RevokedVue:
    logins = 0

    def login_simulator(self, host, username=None, password=None):
        RevokedVue.logins += 1
        return True

    def get_devices(self):
        raise RuntimeError("NotAuthorizedException: Refresh Token has expired")


def test_a_dead_session_is_replaced_by_a_new_login(tmp_path):
    RevokedVue.logins = 0
    account = sim_account(tmp_path, "http://127.0.0.1:9", FakeClock(NOW),
                          vue_factory=RevokedVue)
    for _ in range(3):
        with pytest.raises(EmporiaError):
            account.refresh_devices()
    assert RevokedVue.logins == 3  # an auth failure drops the session each time
    assert RELOGIN_AFTER_FAILURES >= 2


def test_hours_after_a_long_outage_are_filled_from_the_last_stored_one():
    t = Tracker(Scale.HOUR, ZoneInfo("America/New_York"))
    last = NOW - timedelta(days=10)
    key = (1001, "1")
    t.seed([key], {key: last}, NOW, lookback=timedelta(days=7),
           stored_lookback=timedelta(days=720))
    assert t.series[key].filled == last.replace(minute=0, second=0) + timedelta(hours=1)


def test_system_zone_is_a_real_iana_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/Santiago")
    zone = system_zone()
    assert isinstance(zone, ZoneInfo) and zone.key == "America/Santiago"
    monkeypatch.setenv("TZ", ":Europe/Berlin")
    zone = system_zone()
    assert isinstance(zone, ZoneInfo) and zone.key == "Europe/Berlin"


@pytest.mark.parametrize("zone", [ZoneInfo("America/Santiago"), tz.gettz("America/Santiago")])
def test_local_days_always_move_forward_across_a_midnight_dst_change(zone):
    day = local_day_start(datetime(2025, 9, 5, 12, tzinfo=UTC), zone)
    starts = [day]
    for _ in range(5):
        starts.append(next_local_day_start(starts[-1], zone))
    lengths = [(b - a).total_seconds() / 3600 for a, b in zip(starts, starts[1:], strict=False)]
    assert all(20 <= h <= 26 for h in lengths), lengths
    if isinstance(zone, ZoneInfo):
        assert lengths == [24, 24, 23, 24, 24]  # 2025-09-07 starts at 01:00 and is 23 h
