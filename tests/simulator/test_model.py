"""The simulator's usage model: deterministic, realistic, consistent across channels and scales."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from vuegraf.simulator import Scenario, UsageModel, bucket_floor, bucket_next
from vuegraf.simulator.model import SCALES, ScenarioError, bucket_starts

TZ = ZoneInfo("America/New_York")
DAY = datetime(2026, 11, 17, tzinfo=UTC)  # a Tuesday, well before any test "now"
SPARE = (1001, "16")
PLUG = 2001
CHARGER = 3001


@pytest.fixture(scope="module")
def model() -> UsageModel:
    return UsageModel(Scenario.default())


def hours(start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(hours=i) for i in range(count)]


def local_hour(t: datetime) -> int:
    return t.astimezone(TZ).hour


def kwh(model: UsageModel, gid: int, num: str, scale: str, start: datetime) -> float:
    """`model.kwh` of a bucket the device serves (the devices asked here never drop one)."""
    value = model.kwh(gid, num, scale, start)
    assert value is not None, (gid, num, scale, start)
    return value


def served(model: UsageModel, gid: int, scale: str, start: datetime) -> dict[str, float]:
    """`model.device_values` of a bucket the device serves: every channel has a value."""
    values = model.device_values(gid, scale, start)
    present = {num: v for num, v in values.items() if v is not None}
    assert present == values, (gid, scale, start)
    return present


# -- the default scenario ------------------------------------------------------------------


def test_default_scenario_channels(model: UsageModel) -> None:
    chans = model.channels()
    assert len(chans) == 32
    assert sum(1 for c in chans if c[4]) == 28
    no_chart = {(g, n) for g, n, _, _, chart in chans if not chart}
    assert no_chart == {
        (1001, "Balance"),
        (1002, "Balance"),
        (1002, "MainsFromGrid"),
        (1002, "MainsToGrid"),
    }
    names = {(g, n): (dev, ch) for g, n, dev, ch, _ in chans}
    assert names[(1001, "1,2,3")] == ("Main Panel", "Main")
    assert names[(1001, "1")] == ("Main Panel", "Kitchen")
    assert names[SPARE] == ("Main Panel", "Spare")
    assert names[(PLUG, "1,2,3")][0] == "Office Plug"
    assert names[(CHARGER, "1,2,3")][0] == "EV Charger"
    assert [n for g, n, *_ in chans if g == 1001][:3] == ["1,2,3", "1", "2"]
    assert model.scenario.device(PLUG).parent_gid == 1001
    assert model.scenario.device(PLUG).parent_channel == "5"
    assert model.scenario.device(CHARGER).parent_channel == "3"


# -- determinism -----------------------------------------------------------------------------


def test_same_inputs_same_value_and_seed_matters(model: UsageModel) -> None:
    again = UsageModel(Scenario.default(), seed=1)
    other = UsageModel(Scenario.default(), seed=2)
    differ = 0
    samples = 0
    for scale in SCALES:
        t = bucket_floor(scale, DAY + timedelta(hours=19, minutes=7, seconds=13), TZ)
        for gid, num, *_ in model.channels():
            a = model.kwh(gid, num, scale, t)
            assert a == again.kwh(gid, num, scale, t)
            assert a == model.kwh(gid, num, scale, t)
            b = other.kwh(gid, num, scale, t)
            if a is not None and b is not None and a != 0:
                samples += 1
                differ += a != b
    assert differ >= 0.9 * samples


def test_kwh_floors_to_the_bucket_and_rejects_naive_times(model: UsageModel) -> None:
    t = DAY + timedelta(hours=3)
    assert model.kwh(1001, "1", "1H", t + timedelta(minutes=41)) == model.kwh(1001, "1", "1H", t)
    with pytest.raises(ValueError):
        model.kwh(1001, "1", "1H", t.replace(tzinfo=None))
    with pytest.raises(KeyError):
        model.kwh(1001, "99", "1H", t)
    with pytest.raises(ValueError):
        model.kwh(1001, "1", "2H", t)


# -- realism ---------------------------------------------------------------------------------


def test_values_in_plausible_watt_ranges(model: UsageModel) -> None:
    minutes = [DAY + timedelta(minutes=m) for m in range(0, 2 * 1440, 7)]
    for gid, num, _, name, _ in model.channels():
        watts = [v * 60_000 for t in minutes if (v := model.kwh(gid, num, "1MIN", t)) is not None]
        assert watts, (gid, num)
        low, high = min(watts), max(watts)
        if name == "Solar":
            assert -6000 < low < -300 and high <= 0
        elif gid == 1002 and not num.isdigit():  # net of solar, EV and loads
            assert -6000 < low and high < 15000
        elif num == "1,2,3" and gid == 1001:
            assert 300 < low and high < 15000, (low, high)
        elif gid == CHARGER:
            assert low == 0 and high < 7700
        else:
            assert 0 <= low and high < 5000, (gid, num, low, high)


def test_evening_uses_more_than_night(model: UsageModel) -> None:
    ts = hours(DAY - timedelta(days=14), 14 * 24)
    for gid, num in [(1001, "1"), (1001, "1,2,3"), (1001, "6")]:
        evening = [kwh(model, gid, num, "1H", t) for t in ts if 18 <= local_hour(t) <= 21]
        night = [kwh(model, gid, num, "1H", t) for t in ts if 1 <= local_hour(t) <= 4]
        assert sum(evening) / len(evening) > 1.5 * sum(night) / len(night), (gid, num)


def test_solar_generates_by_day_only(model: UsageModel) -> None:
    ts = hours(DAY - timedelta(days=7), 7 * 24)
    for t in ts:
        value = kwh(model, 1002, "1", "1H", t)
        if local_hour(t) in (11, 12, 13):
            assert value < -0.1
        if local_hour(t) in (0, 1, 2, 3, 20, 21, 22, 23):
            assert value == 0


def test_ev_charges_some_evenings_at_about_7kw(model: UsageModel) -> None:
    ts = hours(DAY - timedelta(days=60), 60 * 24)
    values = [kwh(model, CHARGER, "1,2,3", "1H", t) for t in ts]
    zero = sum(1 for v in values if v == 0)
    assert zero / len(values) > 0.85
    assert 6.5 < max(values) < 7.5  # a full hour at ~7.2 kW
    charging_hours = {local_hour(t) for t, v in zip(ts, values, strict=True) if v > 0}
    assert charging_hours <= {17, 18, 19, 20, 21, 22, 23, 0, 1, 2}
    sessions_days = {t.astimezone(TZ).date() for t, v in zip(ts, values, strict=True) if v > 1}
    assert 10 < len(sessions_days) < 45


def test_a_day_is_close_to_its_hours(model: UsageModel) -> None:
    start = bucket_floor("1D", DAY, TZ)
    starts = bucket_starts("1H", start, bucket_next("1D", start, TZ) - timedelta(seconds=1), TZ, 30)
    assert starts is not None and len(starts) == 24
    for num in ("1", "2", "3", "1,2,3"):
        day = kwh(model, 1001, num, "1D", start)
        by_hour = sum(kwh(model, 1001, num, "1H", t) for t in starts)
        assert abs(day - by_hour) < 0.2 * day, num


# -- consistency between channels and scales -------------------------------------------------


@pytest.mark.parametrize("scale", ["1S", "1MIN", "15MIN", "1H", "1D", "1W", "1MON"])
def test_mains_is_circuits_plus_nested_plus_balance(model: UsageModel, scale: str) -> None:
    checked = 0
    for k in range(6):
        t = bucket_floor(scale, DAY + timedelta(hours=5 * k, minutes=13 * k), TZ)
        for gid, child in ((1001, PLUG), (1002, CHARGER)):
            values = served(model, gid, scale, t)
            nested = model.kwh(child, "1,2,3", scale, t)
            if nested is None:
                continue  # the plug is offline for this bucket
            circuits = [v for n, v in values.items() if n.isdigit()]
            parts = sum(circuits) + nested + values["Balance"]
            assert values["1,2,3"] == pytest.approx(parts, rel=1e-6, abs=1e-9)
            unmetered = values["Balance"] / max(abs(values["1,2,3"]), 1e-9)
            assert 0 < values["Balance"] and (gid == 1002 or unmetered < 0.1)
            if gid == 1002:
                grid = values["MainsFromGrid"] + values["MainsToGrid"]
                assert grid == pytest.approx(values["1,2,3"], rel=1e-6, abs=1e-9)
                assert values["MainsFromGrid"] >= 0 >= values["MainsToGrid"]
            checked += 1
    assert checked >= 8


def test_one_channel_alone_equals_the_whole_device(model: UsageModel) -> None:
    for scale in SCALES:
        t = bucket_floor(scale, DAY + timedelta(hours=20), TZ)
        for gid in (1001, 1002, PLUG, CHARGER):
            whole = model.device_values(gid, scale, t)
            for num, value in whole.items():
                assert model.kwh(gid, num, scale, t) == value


def test_week_is_the_sum_of_its_days(model: UsageModel) -> None:
    week = bucket_floor("1W", DAY, TZ)
    assert week.astimezone(TZ).weekday() == 0
    days = bucket_starts("1D", week, bucket_next("1W", week, TZ) - timedelta(seconds=1), TZ, 10)
    assert days is not None and len(days) == 7
    for num in ("1", "1,2,3"):
        total = sum(kwh(model, 1001, num, "1D", d) for d in days)
        assert model.kwh(1001, num, "1W", week) == pytest.approx(total, rel=0.06)


def test_spare_circuit_is_integer_zero_at_every_scale(model: UsageModel) -> None:
    for scale in SCALES:
        for k in range(5):
            t = DAY - timedelta(days=3 * k, hours=k, seconds=k)
            value = model.kwh(*SPARE, scale, t)
            assert value == 0 and type(value) is int
            assert json.dumps(value) == "0"
    assert type(model.kwh(1001, "1", "1MIN", DAY)) is float


def test_plug_has_gaps_at_a_plausible_rate(model: UsageModel) -> None:
    minutes = [DAY + timedelta(minutes=m) for m in range(3 * 1440)]
    nulls = sum(model.kwh(PLUG, "1,2,3", "1MIN", t) is None for t in minutes)
    assert 0.015 < nulls / len(minutes) < 0.05
    seconds = [DAY + timedelta(seconds=s) for s in range(3600)]
    nulls_1s = sum(model.kwh(PLUG, "1,2,3", "1S", t) is None for t in seconds)
    assert 0.01 < nulls_1s / len(seconds) < 0.06
    hours_ = hours(DAY - timedelta(days=60), 60 * 24)
    nulls_1h = sum(model.kwh(PLUG, "1,2,3", "1H", t) is None for t in hours_)
    assert 0.01 < nulls_1h / len(hours_) < 0.06
    # Offline minutes are the gaps.
    gap = next(t for t in minutes if model.kwh(PLUG, "1,2,3", "1MIN", t) is None)
    assert not model.online(PLUG, gap + timedelta(seconds=30))
    # Only the plug has gaps.
    for gid, num in [(1001, "1,2,3"), (1001, "5"), (CHARGER, "1,2,3")]:
        assert all(model.kwh(gid, num, "1MIN", t) is not None for t in minutes[:1440])


# -- buckets -------------------------------------------------------------------------------


def test_sub_day_buckets_align_in_utc() -> None:
    t = datetime(2026, 3, 8, 7, 59, 59, 999_999, tzinfo=UTC)
    assert bucket_floor("1S", t, TZ) == datetime(2026, 3, 8, 7, 59, 59, tzinfo=UTC)
    assert bucket_floor("1MIN", t, TZ) == datetime(2026, 3, 8, 7, 59, tzinfo=UTC)
    assert bucket_floor("15MIN", t, TZ) == datetime(2026, 3, 8, 7, 45, tzinfo=UTC)
    assert bucket_floor("1H", t, TZ) == datetime(2026, 3, 8, 7, tzinfo=UTC)
    assert bucket_floor("1H", t.astimezone(TZ), TZ) == datetime(2026, 3, 8, 7, tzinfo=UTC)
    assert bucket_next("15MIN", datetime(2026, 3, 8, 7, 45, tzinfo=UTC), TZ) == datetime(
        2026, 3, 8, 8, tzinfo=UTC
    )
    with pytest.raises(ValueError):
        bucket_floor("1H", t.replace(tzinfo=None), TZ)


@pytest.mark.parametrize(
    ("when", "start", "length_h"),
    [
        (datetime(2026, 3, 7, 12, tzinfo=UTC), datetime(2026, 3, 7, 5, tzinfo=UTC), 24),
        (datetime(2026, 3, 8, 12, tzinfo=UTC), datetime(2026, 3, 8, 5, tzinfo=UTC), 23),
        (datetime(2026, 3, 9, 3, 59, tzinfo=UTC), datetime(2026, 3, 8, 5, tzinfo=UTC), 23),
        (datetime(2026, 11, 1, 12, tzinfo=UTC), datetime(2026, 11, 1, 4, tzinfo=UTC), 25),
        (datetime(2026, 11, 2, 4, 59, tzinfo=UTC), datetime(2026, 11, 1, 4, tzinfo=UTC), 25),
        (datetime(2026, 11, 2, 5, tzinfo=UTC), datetime(2026, 11, 2, 5, tzinfo=UTC), 24),
    ],
)
def test_days_are_local_and_dst_days_are_23_or_25_hours(
    when: datetime, start: datetime, length_h: int
) -> None:
    got = bucket_floor("1D", when, TZ)
    assert got == start and got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert bucket_next("1D", got, TZ) - got == timedelta(hours=length_h)


def test_week_month_year_buckets_are_local() -> None:
    t = datetime(2026, 11, 5, 3, tzinfo=UTC)  # still Nov 4 in New York (a Wednesday)
    assert bucket_floor("1W", t, TZ) == datetime(2026, 11, 2, 5, tzinfo=UTC)
    assert bucket_floor("1MON", t, TZ) == datetime(2026, 11, 1, 4, tzinfo=UTC)
    assert bucket_next("1MON", datetime(2026, 12, 1, 5, tzinfo=UTC), TZ) == datetime(
        2027, 1, 1, 5, tzinfo=UTC
    )
    assert bucket_floor("1Y", t, TZ) == datetime(2026, 1, 1, 5, tzinfo=UTC)


def test_bucket_starts_counts_and_limits() -> None:
    a = datetime(2026, 11, 20, 0, 0, 30, tzinfo=UTC)
    starts = bucket_starts("1MIN", a, a + timedelta(hours=1), TZ, 800)
    assert starts is not None and len(starts) == 61 and starts[0] == a.replace(second=0)
    assert bucket_starts("1MIN", a, a + timedelta(hours=14), TZ, 800) is None
    days = bucket_starts(
        "1D", datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 2, 12, tzinfo=UTC), TZ, 9
    )
    assert days is not None
    assert [b - a for a, b in zip(days, days[1:], strict=False)] == [
        timedelta(hours=24),
        timedelta(hours=25),
    ]


def test_a_25_hour_day_holds_more_energy(model: UsageModel) -> None:
    rack = (1001, "12")  # a constant load
    long_day = model.kwh(*rack, "1D", datetime(2026, 11, 1, 12, tzinfo=UTC))
    short_day = model.kwh(*rack, "1D", datetime(2026, 3, 8, 12, tzinfo=UTC))
    assert long_day == pytest.approx(0.055 * 25, rel=0.02)
    assert short_day == pytest.approx(0.055 * 23, rel=0.02)


# -- scenario files --------------------------------------------------------------------------


def test_scenario_file_round_trip_and_errors(tmp_path: Path) -> None:
    text = Path(__file__).parents[2] / "src/vuegraf/simulator/default_scenario.json"
    data = json.loads(text.read_text())
    path = tmp_path / "s.json"
    data["timezone"] = "Europe/Berlin"
    path.write_text(json.dumps(data))
    loaded = Scenario.load(path)
    assert loaded.timezone == "Europe/Berlin"
    assert loaded.devices == Scenario.default().devices

    data["devices"][0]["circuits"][0]["profile"] = "disco"
    path.write_text(json.dumps(data))
    with pytest.raises(ScenarioError, match=r"devices\[0\]\.circuits\[0\]\.profile"):
        Scenario.load(path)

    data["devices"][0]["circuits"][0]["profile"] = "evening"
    data["devices"][2]["parentChannelNum"] = "42"
    path.write_text(json.dumps(data))
    with pytest.raises(ScenarioError, match=r"devices\[2\]\.parentChannelNum"):
        Scenario.load(path)

    data["devices"][2]["parentChannelNum"] = "5"
    data["timezone"] = "Mars/Olympus_Mons"
    path.write_text(json.dumps(data))
    with pytest.raises(ScenarioError, match="timezone"):
        Scenario.load(path)
