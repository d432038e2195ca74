"""Test infrastructure: tests/harness/oracle.py against values worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from harness import oracle
from vuegraf.config import AccountConfig, parse_config
from vuegraf.simulator import Scenario, UsageModel

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_fixed_buckets_floor_on_the_epoch() -> None:
    t = at("2026-11-23T19:59:47.250+00:00")
    assert oracle.bucket_floor("1S", t, NY) == at("2026-11-23T19:59:47+00:00")
    assert oracle.bucket_floor("1MIN", t, NY) == at("2026-11-23T19:59:00+00:00")
    assert oracle.bucket_floor("1H", t, NY) == at("2026-11-23T19:00:00+00:00")
    assert oracle.bucket_after("1H", at("2026-11-23T19:00:00+00:00"), NY) == at(
        "2026-11-23T20:00:00+00:00"
    )


@pytest.mark.parametrize(
    ("zone", "day", "start", "end", "stamp"),
    [
        # 23-hour and 25-hour days, and an ordinary one.
        (NY, date(2026, 3, 8), "2026-03-08T05:00+00:00", "2026-03-09T04:00+00:00",
         "2026-03-09T03:59:59+00:00"),
        (NY, date(2026, 11, 1), "2026-11-01T04:00+00:00", "2026-11-02T05:00+00:00",
         "2026-11-02T04:59:59+00:00"),
        (NY, date(2026, 11, 23), "2026-11-23T05:00+00:00", "2026-11-24T05:00+00:00",
         "2026-11-24T04:59:59+00:00"),
        (BERLIN, date(2026, 3, 29), "2026-03-28T23:00+00:00", "2026-03-29T22:00+00:00",
         "2026-03-29T21:59:59+00:00"),
        (BERLIN, date(2026, 10, 25), "2026-10-24T22:00+00:00", "2026-10-25T23:00+00:00",
         "2026-10-25T22:59:59+00:00"),
    ],
)
def test_local_days_and_their_stamps(
    zone: ZoneInfo, day: date, start: str, end: str, stamp: str
) -> None:
    assert oracle.midnight(day, zone) == at(start)
    assert oracle.day_start(at(stamp), zone) == at(start)
    assert oracle.bucket_after("1D", at(start), zone) == at(end)
    assert oracle.day_stamp(day, zone) == at(stamp)
    assert oracle.stamp("1D", at(start), zone) == at(stamp)


def test_bucket_starts_are_the_buckets_starting_in_the_half_open_range() -> None:
    since, until = at("2026-11-23T19:58:30+00:00"), at("2026-11-23T20:01:00+00:00")
    assert oracle.bucket_starts("1MIN", since, until, NY) == [
        at("2026-11-23T19:59:00+00:00"),
        at("2026-11-23T20:00:00+00:00"),
    ]
    days = oracle.bucket_starts(
        "1D", at("2026-10-31T04:00+00:00"), at("2026-11-02T05:00+00:00"), NY
    )
    assert days == [at("2026-10-31T04:00+00:00"), at("2026-11-01T04:00+00:00")]


def test_watts_per_scale() -> None:
    assert oracle.watts("1S", 0.001) == pytest.approx(3600.0)
    assert oracle.watts("1MIN", 0.001) == pytest.approx(60.0)
    assert oracle.watts("1H", 0.5) == pytest.approx(500.0)
    assert oracle.watts("1D", 12.0) == pytest.approx(12000.0)


def test_name_tables_match_the_simulated_household_and_the_configs() -> None:
    oracle.check_household(UsageModel(Scenario.default()))
    assert len(oracle.channels(oracle.DEFAULT_NAMES)) == 28
    assert len(oracle.channels(oracle.DEFAULT_NAMES, live_only_too=True)) == 32

    def account(devices: list[dict[str, object]] | None) -> AccountConfig:
        data: dict[str, object] = {"name": "Home", "email": "e", "password": "p"}
        if devices is not None:
            data["devices"] = devices
        config = parse_config({"accounts": [data]}, Path("/nonexistent/vuegraf.json"), environ={})
        return config.accounts[0]

    assert oracle.names_for(account(None)) is oracle.DEFAULT_NAMES
    kitchen = account([{"name": "Main Panel", "channels": ["Kitchen"]}])
    assert oracle.names_for(kitchen) is oracle.KITCHEN_NAMES
    assert oracle.KITCHEN_NAMES[(1001, "1")] == "Kitchen"
    assert oracle.KITCHEN_NAMES[(1001, "2")] == "Main Panel-2"
    with pytest.raises(AssertionError, match="no names table"):
        oracle.names_for(account([{"name": "Main Panel", "channels": {"7": "Washer"}}]))
