"""The simulator over real HTTP, driven by the real pyemvue client (and raw requests)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from pyemvue import PyEmVue
from pyemvue.device import VueDeviceChannel, VueUsageDevice

from vuegraf.simulator import SimulatorServer, bucket_floor, bucket_next
from vuegraf.simulator.__main__ import main
from vuegraf.simulator.server import clock_from

NOW = datetime(2026, 11, 24, 15, 7, 30, tzinfo=UTC)  # a Tuesday afternoon, fixed
HEADERS = {"authtoken": "simulator"}
KITCHEN = VueDeviceChannel(gid=1001, channelNum="1")
MAINS = VueDeviceChannel(gid=1001, channelNum="1,2,3")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(now=lambda: NOW) as server:
        yield server


@pytest.fixture(scope="module")
def vue(sim: SimulatorServer) -> PyEmVue:
    client = PyEmVue()
    assert client.login_simulator(sim.url)
    return client


def app_api(sim: SimulatorServer, query: str, headers: dict[str, str] = HEADERS) -> Any:
    return requests.get(f"{sim.url}/AppAPI?{query}", headers=headers, timeout=30)


def walk(devices: dict[int, VueUsageDevice]) -> Iterator[tuple[int, str, Any, Any]]:
    """(gid, channel, usage, channel object) for every channel, nested devices included."""
    stack = list(devices.values())
    while stack:
        dev = stack.pop()
        for num, chan in dev.channels.items():
            yield dev.device_gid, num, chan.usage, chan
            stack.extend(chan.nested_devices.values())


# -- account and devices ---------------------------------------------------------------------


def test_login_and_customer(vue: PyEmVue) -> None:
    assert vue.customer.customer_gid == 424242
    assert vue.customer.email == "demo@example.com"


def test_devices_have_a_nameless_twin_and_nested_children(vue: PyEmVue) -> None:
    devices = vue.get_devices()
    main = [d for d in devices if d.device_gid == 1001]
    assert [d.device_name for d in main] == ["Main Panel", ""]
    assert [c.channel_num for c in main[0].channels] == ["1,2,3"]
    assert [c.channel_num for c in main[1].channels] == [str(i) for i in range(1, 17)]
    assert main[1].channels[0].name == "Kitchen" and main[1].channels[15].name == "Spare"
    garage = [d for d in devices if d.device_gid == 1002]
    assert len(garage) == 2 and len(garage[1].channels) == 8
    assert garage[0].time_zone == "America/New_York" and garage[0].solar is True
    plug = next(d for d in devices if d.device_gid == 2001)
    assert (plug.device_name, plug.parent_device_gid, plug.parent_channel_num) == (
        "Office Plug",
        1001,
        "5",
    )
    assert plug.outlet is not None and plug.outlet.outlet_on
    charger = next(d for d in devices if d.device_gid == 3001)
    assert (charger.parent_device_gid, charger.parent_channel_num) == (1002, "3")
    assert charger.ev_charger is not None and charger.ev_charger.max_charging_rate == 40


def test_status_channel_types_and_location(vue: PyEmVue) -> None:
    devices = vue.get_devices()
    outlets, chargers = vue.get_devices_status(devices)
    assert [o.device_gid for o in outlets] == [2001]
    assert [c.device_gid for c in chargers] == [3001]
    assert next(d for d in devices if d.device_gid == 1001).connected is True
    types = vue.get_channel_types()
    assert len(types) > 10 and any(t.description == "Solar/Generation" for t in types)
    dev = vue.populate_device_properties(devices[2])
    assert dev.device_name == "Garage Panel" and dev.time_zone == "America/New_York"


# -- getDeviceListUsages ---------------------------------------------------------------------


def test_list_usage_matches_the_model_for_every_channel(sim: SimulatorServer, vue: PyEmVue) -> None:
    instant = NOW - timedelta(minutes=10)
    start = bucket_floor("1MIN", instant, sim.model.tz)
    got = vue.get_device_list_usage(
        [1001, 1002, 2001, 3001], instant, scale="1MIN", max_retry_attempts=1
    )
    assert set(got) == {1001, 1002}  # the plug and charger come nested in their parents
    seen = {}
    for gid, num, usage, chan in walk(got):
        assert usage == sim.model.kwh(gid, num, "1MIN", start), (gid, num)
        seen[(gid, num)] = chan
    assert set(seen) == {(g, n) for g, n, *_ in sim.model.channels()}
    assert set(seen[(1001, "5")].nested_devices) == {2001}
    assert set(seen[(1002, "3")].nested_devices) == {3001}
    assert seen[(1001, "1,2,3")].name == "Main" and seen[(1001, "1")].name == "Kitchen"
    assert seen[(1001, "Balance")].usage > 0
    assert seen[(1001, "1,2,3")].percentage == 100


def test_a_child_requested_alone_is_top_level(sim: SimulatorServer, vue: PyEmVue) -> None:
    instant = NOW - timedelta(hours=2)
    got = vue.get_device_list_usage([3001], instant, scale="1H", max_retry_attempts=1)
    assert set(got) == {3001}
    start = bucket_floor("1H", instant, sim.model.tz)
    assert got[3001].channels["1,2,3"].usage == sim.model.kwh(3001, "1,2,3", "1H", start)
    # The panel alone: no nested entries.
    got = vue.get_device_list_usage([1001], instant, scale="1H", max_retry_attempts=1)
    assert all(not c.nested_devices for c in got[1001].channels.values())


@pytest.mark.parametrize("gids", ["1001+1002", "1001%2B1002", "1001%201002", "1001+9999+1002"])
def test_gid_separators_and_unknown_gids(sim: SimulatorServer, gids: str) -> None:
    r = app_api(
        sim,
        f"apiMethod=getDeviceListUsages&deviceGids={gids}&instant=2026-11-24T14:00:00Z"
        "&scale=1H&energyUnit=KilowattHours",
    )
    assert r.status_code == 200
    body = r.json()["deviceListUsages"]
    assert [d["deviceGid"] for d in body["devices"]] == [1001, 1002]
    assert body["scale"] == "1H" and body["instant"] == "2026-11-24T14:00:00Z"


def test_spare_circuit_is_a_json_integer_zero(sim: SimulatorServer) -> None:
    r = app_api(
        sim,
        "apiMethod=getDeviceListUsages&deviceGids=1001&instant=2026-11-24T14:00:00.250Z"
        "&scale=1MIN&energyUnit=KilowattHours",
    )
    usages = {
        c["channelNum"]: c["usage"]
        for c in r.json()["deviceListUsages"]["devices"][0]["channelUsages"]
    }
    assert usages["16"] == 0 and type(usages["16"]) is int
    assert '"usage":0,' in r.text
    assert type(usages["1"]) is float


def test_incomplete_bucket_is_null(vue: PyEmVue) -> None:
    for scale in ("1MIN", "1H", "1D"):
        got = vue.get_device_list_usage([1001], NOW, scale=scale, max_retry_attempts=1)
        assert all(usage is None for *_, usage, _ in walk(got)), scale
    # The previous minute ended 30 s ago: known.
    got = vue.get_device_list_usage(
        [1001], NOW - timedelta(minutes=1), scale="1MIN", max_retry_attempts=1
    )
    assert got[1001].channels["1"].usage is not None


@pytest.mark.parametrize(
    ("instant", "status"),
    [
        ("2026-11-24T14:00:00Z", 200),
        ("2026-11-24T14:00:00.123456Z", 200),
        ("2026-11-24T14:00:00%2B00:00", 400),
        ("2026-11-24T14:00:00+00:00", 400),
        ("2026-11-24 14:00:00", 400),
        ("yesterday", 400),
        ("2026-13-24T14:00:00Z", 400),
    ],
)
def test_instant_format(sim: SimulatorServer, instant: str, status: int) -> None:
    r = app_api(
        sim,
        f"apiMethod=getDeviceListUsages&deviceGids=1001&instant={instant}"
        "&scale=1MIN&energyUnit=KilowattHours",
    )
    assert r.status_code == status


# -- getChartUsage ---------------------------------------------------------------------------


def test_hourly_chart_of_a_day_matches_the_model(sim: SimulatorServer, vue: PyEmVue) -> None:
    start = datetime(2026, 11, 20, 0, 30, tzinfo=UTC)
    usage, first = vue.get_chart_usage(KITCHEN, start, start + timedelta(hours=23), scale="1H")
    assert first == datetime(2026, 11, 20, tzinfo=UTC)
    assert len(usage) == 24
    assert usage == [sim.model.kwh(1001, "1", "1H", first + timedelta(hours=i)) for i in range(24)]
    assert all(isinstance(v, float) and v > 0 for v in usage)


def test_daily_chart_across_dst_matches_the_model(sim: SimulatorServer, vue: PyEmVue) -> None:
    start = datetime(2026, 10, 30, 12, tzinfo=UTC)
    usage, first = vue.get_chart_usage(MAINS, start, start + timedelta(days=4), scale="1D")
    assert first == datetime(2026, 10, 30, 4, tzinfo=UTC)  # local midnight, EDT
    days = [first]
    for _ in range(4):
        days.append(bucket_next("1D", days[-1], sim.model.tz))
    assert days[3] - days[2] == timedelta(hours=25)  # Nov 1 2026, clocks go back
    assert usage == [sim.model.kwh(1001, "1,2,3", "1D", d) for d in days]


def test_minute_window_limit(vue: PyEmVue) -> None:
    start = NOW - timedelta(days=2)
    usage, _ = vue.get_chart_usage(KITCHEN, start, start + timedelta(hours=12), scale="1MIN")
    assert len(usage) == 721 and None not in usage
    with pytest.raises(requests.HTTPError) as err:
        vue.get_chart_usage(KITCHEN, start, start + timedelta(hours=14), scale="1MIN")
    assert err.value.response.status_code == 400
    assert "larger than the allowed limit of PT13H20M" in err.value.response.text


def test_second_data_is_kept_three_hours(sim: SimulatorServer, vue: PyEmVue) -> None:
    old = NOW - timedelta(hours=4)
    usage, _ = vue.get_chart_usage(KITCHEN, old, old + timedelta(seconds=599), scale="1S")
    assert len(usage) == 600 and set(usage) == {None}
    recent = NOW - timedelta(hours=2)
    usage, first = vue.get_chart_usage(
        KITCHEN, recent, recent + timedelta(seconds=3599), scale="1S"
    )
    assert len(usage) == 3600 and None not in usage
    assert usage[17] == sim.model.kwh(1001, "1", "1S", first + timedelta(seconds=17))
    with pytest.raises(requests.HTTPError) as err:
        vue.get_chart_usage(KITCHEN, recent, recent + timedelta(seconds=3600), scale="1S")
    assert "PT1H" in err.value.response.text
    # Minute data is kept a week, hours for ever.
    week = NOW - timedelta(days=8)
    usage, _ = vue.get_chart_usage(KITCHEN, week, week + timedelta(minutes=9), scale="1MIN")
    assert usage == [None] * 10
    years = NOW - timedelta(days=3 * 365)
    usage, _ = vue.get_chart_usage(KITCHEN, years, years + timedelta(hours=9), scale="1H")
    assert len(usage) == 10 and None not in usage


def test_incomplete_and_future_chart_buckets_are_null(vue: PyEmVue) -> None:
    usage, first = vue.get_chart_usage(
        KITCHEN, NOW - timedelta(hours=3), NOW + timedelta(hours=1), scale="1H"
    )
    assert first == datetime(2026, 11, 24, 12, tzinfo=UTC)
    assert [v is not None for v in usage] == [True, True, True, False, False]
    usage, _ = vue.get_chart_usage(
        KITCHEN, NOW - timedelta(seconds=10), NOW, scale="1S"
    )  # the last ~3 s of data are not in yet
    assert usage[:6] != [None] * 6 and usage[-4:] == [None] * 4


def test_plug_chart_has_gaps(vue: PyEmVue) -> None:
    start = NOW - timedelta(days=1)
    plug = VueDeviceChannel(gid=2001, channelNum="1,2,3")
    usage, _ = vue.get_chart_usage(plug, start, start + timedelta(hours=13), scale="1MIN")
    nulls = usage.count(None)
    assert 0 < nulls < 0.08 * len(usage)


def test_channels_without_chart_data(sim: SimulatorServer, vue: PyEmVue) -> None:
    start = NOW - timedelta(days=1)
    balance = VueDeviceChannel(gid=1001, channelNum="Balance")
    assert vue.get_chart_usage(balance, start, start + timedelta(hours=2), scale="1H") == (
        [],
        start.replace(microsecond=0),
    )
    r = app_api(
        sim,
        "apiMethod=getChartUsage&deviceGid=1002&channel=MainsFromGrid"
        "&start=2026-11-20T00:00:00Z&end=2026-11-20T05:00:00Z&scale=1H&energyUnit=KilowattHours",
    )
    assert r.json() == {"usageList": [], "firstUsageInstant": "2026-11-20T00:00:00Z"}


def test_chart_bad_requests(sim: SimulatorServer) -> None:
    base = "apiMethod=getChartUsage&deviceGid=1001&channel=1&energyUnit=KilowattHours"
    after = app_api(sim, f"{base}&start=2026-11-20T05:00:00Z&end=2026-11-20T00:00:00Z&scale=1H")
    assert after.status_code == 400
    scale = app_api(sim, f"{base}&start=2026-11-20T00:00:00Z&end=2026-11-20T05:00:00Z&scale=2H")
    assert scale.status_code == 400
    missing = app_api(sim, f"{base}&start=2026-11-20T00:00:00Z&scale=1H")
    assert missing.status_code == 400
    days = app_api(sim, f"{base}&start=2024-01-01T00:00:00Z&end=2026-11-20T00:00:00Z&scale=1D")
    assert days.status_code == 400 and "allowed limit" in days.json()["message"]


def test_an_hour_of_seconds_is_served_whole(sim: SimulatorServer, vue: PyEmVue) -> None:
    # How fast is a benchmark's business (a timed assert fails on a busy machine).
    recent = NOW - timedelta(hours=2)
    usage, _ = vue.get_chart_usage(MAINS, recent, recent + timedelta(seconds=3599), scale="1S")
    assert len(usage) == 3600 and all(u is not None for u in usage)


# -- protocol odds and ends ------------------------------------------------------------------


def test_auth_header_required_and_unknown_paths(sim: SimulatorServer) -> None:
    assert requests.get(f"{sim.url}/customers", timeout=30).status_code == 401
    assert requests.get(f"{sim.url}/customers", headers=HEADERS, timeout=30).status_code == 200
    assert requests.get(f"{sim.url}/nope", headers=HEADERS, timeout=30).status_code == 404
    r = requests.get(f"{sim.url}/devices/4242/locationProperties", headers=HEADERS, timeout=30)
    assert r.status_code == 404
    assert app_api(sim, "apiMethod=getSomethingElse").status_code == 400


def test_concurrent_requests(sim: SimulatorServer) -> None:
    query = (
        "apiMethod=getChartUsage&deviceGid=1001&channel=1,2,3&start=2026-11-22T00:00:00Z"
        "&end=2026-11-22T11:59:00Z&scale=1MIN&energyUnit=KilowattHours"
    )
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: app_api(sim, query), range(24)))
    assert {r.status_code for r in answers} == {200}
    assert len({r.text for r in answers}) == 1
    assert len(answers[0].json()["usageList"]) == 720


# -- stats and knobs -------------------------------------------------------------------------


def test_stats_count_by_endpoint_and_scale() -> None:
    with SimulatorServer(now=lambda: NOW) as sim:
        vue = PyEmVue()
        vue.login_simulator(sim.url)
        vue.get_devices()
        vue.get_devices_status()
        start = NOW - timedelta(days=1)
        vue.get_chart_usage(KITCHEN, start, start + timedelta(hours=2), scale="1H")
        vue.get_chart_usage(KITCHEN, start, start + timedelta(hours=2), scale="1H")
        vue.get_chart_usage(KITCHEN, start, start + timedelta(hours=2), scale="1MIN")
        vue.get_device_list_usage([1001], start, scale="1MIN", max_retry_attempts=1)
        stats = requests.get(f"{sim.url}/simulator/stats", timeout=30).json()
        assert stats["requests"] == {
            "customers": {"-": 1},
            "devices": {"-": 1},
            "status": {"-": 1},
            "getChartUsage": {"1H": 2, "1MIN": 1},
            "getDeviceListUsages": {"1MIN": 1},
        }
        assert stats["total"] == 7
        assert sim.stats() == requests.get(f"{sim.url}/simulator/stats", timeout=30).json()
        reset = requests.post(f"{sim.url}/simulator/reset-stats", timeout=30)
        assert reset.status_code == 200
        assert sim.stats()["total"] == 0
        vue.get_channel_types()
        assert sim.stats()["requests"] == {"channeltypes": {"-": 1}}
        sim.reset_stats()
        assert sim.stats()["requests"] == {}


def test_error_rate_can_be_changed_while_serving() -> None:
    with SimulatorServer(error_rate=1.0, now=lambda: NOW) as sim:
        r = requests.get(f"{sim.url}/customers", headers=HEADERS, timeout=30)
        assert r.status_code == 500
        vue = PyEmVue()
        with pytest.raises(requests.HTTPError):
            vue.login_simulator(sim.url)
        sim.error_rate = 0.0
        assert vue.login_simulator(sim.url)
        assert sim.stats()["errors"] == 2


def test_timeouts_and_a_quick_stop() -> None:
    """Held requests wait `timeout_s` (5 min here), yet stop() releases them at once: the
    deadlines below are far shorter than the hold and far longer than a stop takes."""
    sim = SimulatorServer(timeout_rate=1.0, timeout_s=300.0, now=lambda: NOW).start()
    stopper = threading.Thread(target=sim.stop, daemon=True)
    try:
        with pytest.raises(requests.Timeout):
            requests.get(f"{sim.url}/customers", headers=HEADERS, timeout=2)
        # A request still held by the server must not delay stop().
        held = threading.Thread(
            target=lambda: _swallow(requests.get, f"{sim.url}/customers", headers=HEADERS),
            daemon=True,
        )
        held.start()
        deadline = time.monotonic() + 60
        while sim.stats()["timeouts"] < 2:
            assert time.monotonic() < deadline, "the second request never reached the server"
            time.sleep(0.01)
    finally:
        stopper.start()
        stopper.join(timeout=60)
    assert not stopper.is_alive(), "stop() waited for a held request"
    held.join(timeout=60)
    assert not held.is_alive(), "the held request was not released by stop()"


def _swallow(fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, timeout=120, **kwargs)
    except requests.RequestException:
        pass


def test_latency_is_applied() -> None:
    with SimulatorServer(latency_s=0.15, now=lambda: NOW) as sim:
        began = time.perf_counter()
        requests.get(f"{sim.url}/customers", headers=HEADERS, timeout=30)
        assert time.perf_counter() - began >= 0.15


# -- the command line ------------------------------------------------------------------------


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "vuegraf-simulator"
    if script.exists():
        return [str(script)]
    found = shutil.which("vuegraf-simulator")
    return [found] if found else [sys.executable, "-m", "vuegraf.simulator"]


@pytest.mark.parametrize("command", [_cli(), [sys.executable, "-m", "vuegraf.simulator"]])
def test_cli_prints_its_url_serves_and_exits_0_on_sigterm(command: list[str]) -> None:
    proc = subprocess.Popen(
        [*command, "--port", "0", "--seed", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        prefix = "vuegraf-simulator listening on http://127.0.0.1:"
        assert line.startswith(prefix), line
        url = line.removeprefix("vuegraf-simulator listening on ")
        r = requests.get(f"{url}/customers", headers=HEADERS, timeout=30)
        assert r.status_code == 200 and r.json()["customerGid"] == 424242
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_a_missing_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--scenario", "/nonexistent/scenario.json", "--port", "0"]) == 2
    assert "scenario.json" in capsys.readouterr().err


def test_clock_from_starts_at_the_instant_and_runs_on_or_stays() -> None:
    start = datetime(2027, 3, 14, 6, 59, 30, tzinfo=UTC)
    running = clock_from(start)
    first = running()
    assert start <= first < start + timedelta(seconds=30)
    deadline = time.monotonic() + 60
    while running() == first:  # the wall clock moves it on
        assert time.monotonic() < deadline
        time.sleep(0.001)
    frozen = clock_from(start, frozen=True)
    assert frozen() == start == frozen()
    with pytest.raises(ValueError, match="aware"):
        clock_from(datetime(2027, 3, 14))


def test_cli_now_pins_the_date_the_simulator_serves() -> None:
    """`--now` with `--frozen`: the minute holding that instant is not complete yet, the one
    before it is, whatever the real date."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vuegraf.simulator", "--port", "0", "--data-delay", "0",
         "--now", "2027-03-14T01:59:30-05:00", "--frozen"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("vuegraf-simulator listening on ")
        query = (
            "apiMethod=getChartUsage&deviceGid=1001&channel=1,2,3&scale=1MIN"
            "&start=2027-03-14T06:57:00Z&end=2027-03-14T06:59:00Z&energyUnit=KilowattHours"
        )
        r = requests.get(f"{url}/AppAPI?{query}", headers=HEADERS, timeout=30)
        assert r.status_code == 200, r.text
        usage = r.json()["usageList"]
        assert [u is not None for u in usage] == [True, True, False]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
