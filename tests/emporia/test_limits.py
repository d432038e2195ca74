"""Emporia's limits: which scales a config collects, and that a chart window planned at the
limits (as many buckets as one request may ask for, reaching back as far as vuegraf asks) is
served whole by the simulator, which models Emporia's retention and window limit on its own."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.emporia import EmporiaAccount
from vuegraf.emporia.limits import (
    MAX_BUCKETS,
    RETENTION,
    enabled_scales,
    history_scales,
    second_data_enabled,
)
from vuegraf.model import Scale
from vuegraf.simulator import SimulatorServer

# 10:17:31 in New York (the simulator's zone), a Monday outside any DST change.
NOW = datetime(2026, 11, 23, 15, 17, 31, tzinfo=UTC)
NY = ZoneInfo("America/New_York")
KITCHEN = (1001, "1")  # a Main Panel circuit of the simulator's default scenario


def config_with(tmp_path, **keys):
    return parse_config(
        {"accounts": [{"name": "Home", "email": "me@example.com", "password": "pw"}], **keys},
        tmp_path / "vuegraf.json",
        environ={},
    )


@pytest.mark.parametrize(
    ("keys", "collected", "imported"),
    [
        ({}, ["1MIN", "1H", "1D"], ["1D", "1H", "1MIN"]),
        ({"detailedDataHoursEnabled": False}, ["1MIN", "1D"], ["1D", "1MIN"]),
        ({"detailedDataDaysEnabled": False}, ["1MIN", "1H"], ["1H", "1MIN"]),
        (
            {"detailedDataHoursEnabled": False, "detailedDataDaysEnabled": False},
            ["1MIN"],
            ["1MIN"],
        ),
        # Detailed (second) data changes nothing here: seconds come from chart requests only.
        ({"detailedDataEnabled": True}, ["1MIN", "1H", "1D"], ["1D", "1H", "1MIN"]),
    ],
)
def test_minutes_always_and_hours_and_days_as_switched(tmp_path, keys, collected, imported):
    config = config_with(tmp_path, **keys)
    assert [s.value for s in enabled_scales(config)] == collected
    assert [s.value for s in history_scales(config)] == imported


@pytest.mark.parametrize(
    ("keys", "wanted"),
    [
        ({}, False),
        ({"detailedDataSecondsEnabled": True}, False),
        ({"detailedDataEnabled": True}, True),
        ({"detailedDataEnabled": True, "detailedDataSecondsEnabled": False}, False),
    ],
)
def test_second_data_needs_detailed_data_on_and_seconds_not_off(tmp_path, keys, wanted):
    assert second_data_enabled(config_with(tmp_path, **keys)) is wanted


def windows_at_the_limits() -> dict[Scale, tuple[datetime, datetime]]:
    """Per scale, the first and last bucket of one request of MAX_BUCKETS buckets: seconds
    and minutes starting at the oldest bucket vuegraf would ask for, hours and days ending
    with the newest complete one (by plain arithmetic, not vuegraf's schedule)."""
    second = (NOW - RETENTION[Scale.SECOND]).replace(microsecond=0) + timedelta(seconds=1)
    minute = (NOW - RETENTION[Scale.MINUTE]).replace(second=0) + timedelta(minutes=1)
    hour_end = NOW.replace(minute=0, second=0) - timedelta(hours=1)
    today = NOW.astimezone(NY).date()
    day_first = today - timedelta(days=MAX_BUCKETS[Scale.DAY])
    return {
        Scale.SECOND: (second, second + timedelta(seconds=MAX_BUCKETS[Scale.SECOND] - 1)),
        Scale.MINUTE: (minute, minute + timedelta(minutes=MAX_BUCKETS[Scale.MINUTE] - 1)),
        Scale.HOUR: (hour_end - timedelta(hours=MAX_BUCKETS[Scale.HOUR] - 1), hour_end),
        Scale.DAY: (
            datetime.combine(day_first, time(0), tzinfo=NY).astimezone(UTC),
            datetime.combine(today - timedelta(days=1), time(0), tzinfo=NY).astimezone(UTC),
        ),
    }


def test_a_window_at_the_limits_is_served_whole(tmp_path):
    clock = FakeClock(NOW)
    with SimulatorServer(now=clock.now) as sim:
        config = parse_config(
            {"accounts": [{"name": "Home", "email": "me@example.com", "password": "pw",
                           "simulatorUrl": sim.url}],
             "timezone": "America/New_York"},
            tmp_path / "vuegraf.json",
            environ={},
        )
        account = EmporiaAccount(config.accounts[0], config, clock)
        for scale, (first, last) in windows_at_the_limits().items():
            values = account.chart(*KITCHEN, scale, first, last)
            assert [t for t, _ in values][:1] == [first], scale
            assert len(values) == MAX_BUCKETS[scale], scale
            assert [t for t, kwh in values if kwh is None] == [], scale
