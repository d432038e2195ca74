"""Emporia's known breakages as the simulator replays them: a withdrawn endpoint, fault
windows on the simulator's own clock, null bursts in live values, stale day totals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from pyemvue import PyEmVue
from pyemvue.device import VueDeviceChannel

from vuegraf.simulator import SimulatorServer
from vuegraf.simulator.__main__ import main, parse_duration, parse_fault

NOW = datetime(2026, 11, 24, 15, 7, 30, tzinfo=UTC)
HEADERS = {"authtoken": "simulator"}
NEW_YORK = ZoneInfo("America/New_York")  # the default scenario's zone


class Clock:
    """The simulator's `now`, moved by the test."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def get(sim: SimulatorServer, path: str) -> requests.Response:
    return requests.get(f"{sim.url}{path}", headers=HEADERS, timeout=30)


def usages(sim: SimulatorServer, instant: datetime, scale: str, gids: str = "1001+1002") -> Any:
    text = instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = get(
        sim,
        f"/AppAPI?apiMethod=getDeviceListUsages&deviceGids={gids}&instant={text}"
        f"&scale={scale}&energyUnit=KilowattHours",
    )
    assert r.status_code == 200, r.text
    return r.json()["deviceListUsages"]


def values(body: Any) -> dict[tuple[int, str], float | None]:
    out: dict[tuple[int, str], float | None] = {}
    stack = list(body["devices"])
    while stack:
        dev = stack.pop()
        for chan in dev["channelUsages"]:
            out[(chan["deviceGid"], chan["channelNum"])] = chan["usage"]
            stack.extend(chan["nestedDevices"])
    return out


# -- a withdrawn endpoint ---------------------------------------------------------------------


def test_a_withdrawn_endpoint_answers_404_and_is_counted() -> None:
    with SimulatorServer(now=lambda: NOW, accounts=1) as sim:
        vue = PyEmVue()
        assert vue.login_simulator(sim.url)
        devices = vue.get_devices()
        sim.withdraw("locationProperties")
        assert get(sim, "/devices/1001/locationProperties").status_code == 404
        assert get(sim, "/customers/devices").status_code == 200  # the others still answer
        # The server's withdrawal holds for its accounts too.
        assert requests.get(f"{sim.account_url(0)}/devices/1001/locationProperties",
                            headers=HEADERS, timeout=30).status_code == 404
        assert sim.stats()["requests"]["locationProperties"] == {"-": 1}
        sim.restore()
        assert get(sim, "/devices/1001/locationProperties").status_code == 200
        assert vue.populate_device_properties(devices[0]).device_name == "Main Panel"


# -- fault windows ----------------------------------------------------------------------------


def test_customers_answer_400_for_exactly_five_hours_of_the_simulators_clock() -> None:
    clock = Clock(NOW)
    start = NOW + timedelta(hours=1)
    with SimulatorServer(now=clock) as sim:
        sim.add_fault_window(400, start, start + timedelta(hours=5), endpoints={"customers"})
        for at, status in [
            (start - timedelta(seconds=1), 200),
            (start, 400),
            (start + timedelta(hours=4, minutes=59, seconds=59), 400),
            (start + timedelta(hours=5), 200),
        ]:
            clock.t = at
            assert get(sim, "/customers").status_code == status, at
            assert get(sim, "/customers/devices").status_code == 200, at
        clock.t = start
        vue = PyEmVue()
        with pytest.raises(requests.HTTPError):
            vue.login_simulator(sim.url)  # a login fails in the window


def test_a_maintenance_hour_answers_503_everywhere_and_429s_say_when_to_return() -> None:
    clock = Clock(NOW)
    with SimulatorServer(now=clock, accounts=2) as sim:
        sim.add_fault_window(503, NOW, NOW + timedelta(hours=1))
        own = sim.account(1)
        later = NOW + timedelta(hours=2)
        own.add_fault_window(429, later, later + timedelta(minutes=10), retry_after=120)
        own.add_fault_window(429, later + timedelta(minutes=10), later + timedelta(minutes=20))
        assert len(own.fault_windows) == 2 and len(sim.fault_windows) == 1
        paths = ["/customers", "/customers/devices", "/customers/devices/status",
                 "/devices/channels/channeltypes"]
        for path in paths:
            assert get(sim, path).status_code == 503
            r = requests.get(f"{sim.account_url(0)}{path}", headers=HEADERS, timeout=30)
            assert r.status_code == 503 and "Retry-After" not in r.headers
        clock.t = later + timedelta(minutes=5)
        assert get(sim, "/customers").status_code == 200
        r = requests.get(f"{sim.account_url(1)}/customers", headers=HEADERS, timeout=30)
        assert r.status_code == 429 and r.headers["Retry-After"] == "120"
        clock.t = later + timedelta(minutes=15)
        r = requests.get(f"{sim.account_url(1)}/customers", headers=HEADERS, timeout=30)
        assert r.status_code == 429 and "Retry-After" not in r.headers
        clock.t = later + timedelta(minutes=20)
        assert requests.get(f"{sim.account_url(1)}/customers", headers=HEADERS,
                            timeout=30).status_code == 200
        own.clear_fault_windows()
        sim.clear_fault_windows()
        clock.t = NOW
        assert get(sim, "/customers").status_code == 200
        # Answered faults are counted like any other request.
        assert sim.stats()["requests"]["customers"] == {"-": 3}


def test_a_fault_window_must_be_a_window() -> None:
    sim = SimulatorServer(now=lambda: NOW)
    with pytest.raises(ValueError, match="before it starts"):
        sim.add_fault_window(503, NOW, NOW)
    with pytest.raises(ValueError, match="aware"):
        sim.add_fault_window(503, datetime(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(ValueError):
        sim.add_fault_window(999, NOW, NOW + timedelta(hours=1))


# -- null bursts ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nulls() -> Iterator[tuple[SimulatorServer, dict[tuple[int, str, datetime], float | None]]]:
    """Four hours of minutes asked for one by one, with 5 % nulls in 5-minute bursts."""
    with SimulatorServer(now=lambda: NOW, none_rate=0.05, none_burst_s=300, data_delay_s=0) as sim:
        first = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
        served: dict[tuple[int, str, datetime], float | None] = {}
        for i in range(240):
            start = first + timedelta(minutes=i)
            for (gid, num), usage in values(usages(sim, start, "1MIN")).items():
                served[(gid, num, start)] = usage
        yield sim, served


def test_nulls_fall_on_chart_channels_in_whole_bursts_at_about_the_rate(nulls: Any) -> None:
    sim, served = nulls
    chart = {(g, n) for g, n, _d, _c, has_chart in sim.model.channels() if has_chart}
    nulled = {k for k, v in served.items() if v is None and sim.model.kwh(*k[:2], "1MIN", k[2])
              is not None}
    assert nulled, "no null at all"
    assert {(g, n) for g, n, _t in nulled} <= chart  # only values that can be filled later
    # Bursts: every nulled minute's whole 5-minute block (epoch-aligned) is null.
    for gid, num, start in nulled:
        block = start - timedelta(minutes=start.minute % 5)
        for m in range(5):
            assert served[(gid, num, block + timedelta(minutes=m))] is None, (gid, num, start)
    # The rate over 48 blocks x the chart channels (~1 000 draws): 5 %, within wide bounds.
    fraction = len(nulled) / sum(1 for k in served if (k[0], k[1]) in chart)
    assert 0.02 < fraction < 0.09, fraction


def test_nulls_do_not_depend_on_request_order_and_chart_data_stays(nulls: Any) -> None:
    sim, served = nulls
    late = datetime(2026, 11, 24, 13, 59, tzinfo=UTC)
    again = values(usages(sim, late, "1MIN"))  # asked again, after all the others
    assert {k: v for k, v in again.items()} == {
        (g, n): v for (g, n, t), v in served.items() if t == late
    }
    for gid, num, start in served:
        assert (served[(gid, num, start)] is None) == (
            sim.answers_null(gid, num, "1MIN", start)
            or sim.model.kwh(gid, num, "1MIN", start) is None
        )
    # The chart endpoint still has every nulled value.
    gid, num, start = next(k for k, v in served.items() if v is None and sim.answers_null(*k[:2],
                           "1MIN", k[2]))
    vue = PyEmVue()
    vue.login_simulator(sim.url)
    chart, _first = vue.get_chart_usage(VueDeviceChannel(gid=gid, channelNum=num), start, start,
                                        scale="1MIN")
    assert chart == [sim.model.kwh(gid, num, "1MIN", start)] and chart[0] is not None


def test_no_nulls_without_a_rate() -> None:
    with SimulatorServer(now=lambda: NOW) as sim:
        assert not sim.answers_null(1001, "1", "1MIN", NOW)
        sim.none_rate = 1.0  # switched while serving: every chart channel null
        body = values(usages(sim, NOW - timedelta(minutes=5), "1MIN"))
        assert body[(1001, "1")] is None and body[(1001, "Balance")] is not None


# -- stale day totals -------------------------------------------------------------------------


def test_the_hour_after_midnight_answers_yesterdays_total_under_yesterdays_instant() -> None:
    midnight = datetime(2026, 11, 25, tzinfo=NEW_YORK)
    yesterday = midnight - timedelta(days=1)
    clock = Clock(midnight + timedelta(minutes=30))
    with SimulatorServer(now=clock, stale_day_s=3600, data_delay_s=0) as sim:
        expected = {(g, n): sim.model.kwh(g, n, "1D", yesterday)
                    for g, n, *_ in sim.model.channels() if g in (1001, 1002)}
        assert all(v is not None for v in expected.values())
        stale = usages(sim, midnight + timedelta(minutes=10), "1D")
        assert stale["instant"] == "2026-11-24T05:00:00Z"  # yesterday's midnight in New York
        assert values(stale) == expected
        # Yesterday asked for by its middle: its own total, complete, under its own instant.
        asked = usages(sim, yesterday + timedelta(hours=12), "1D")
        assert asked["instant"] == "2026-11-24T17:00:00Z" and values(asked) == expected
        # After the hour, the new day is itself again: not complete, so null.
        clock.t = midnight + timedelta(hours=1)
        fresh = usages(sim, midnight + timedelta(minutes=10), "1D")
        assert fresh["instant"] == "2026-11-25T05:10:00Z"
        assert all(v is None for v in values(fresh).values())
        # Other scales are never stale.
        clock.t = midnight + timedelta(minutes=30)
        last_hour = midnight - timedelta(hours=1)
        hour = usages(sim, last_hour, "1H")
        assert hour["instant"] == "2026-11-25T04:00:00Z"
        assert values(hour)[(1001, "1")] == sim.model.kwh(1001, "1", "1H", last_hour)


# -- the command line -------------------------------------------------------------------------


def test_fault_and_duration_syntax() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2) and parse_duration("90s").seconds == 90
    for bad in ("", "5", "h", "0s", "1x"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    fault = parse_fault("400:customers@2026-09-14T13:00:00Z/5h")
    assert (fault.status, fault.endpoints) == (400, frozenset({"customers"}))
    assert fault.window(NOW) == (datetime(2026, 9, 14, 13, tzinfo=UTC),
                                 datetime(2026, 9, 14, 18, tzinfo=UTC))
    relative = parse_fault("503@+10m/1h")
    assert relative.endpoints is None
    assert relative.window(NOW) == (NOW + timedelta(minutes=10), NOW + timedelta(minutes=70))
    always = parse_fault("429:getChartUsage,getDeviceListUsages")
    start, end = always.window(NOW)
    assert start < datetime(1970, 1, 1, tzinfo=UTC) and end > datetime(9000, 1, 1, tzinfo=UTC)
    for bad in ("abc", "42", "400:customers@+1h", "400@x/1h", "999"):
        with pytest.raises(ValueError):
            parse_fault(bad)


def test_cli_rejects_an_unknown_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--port", "0", "--withdraw", "locationProperty"])
    assert exit_.value.code == 2 and "unknown endpoint locationProperty" in capsys.readouterr().err


def test_cli_serves_the_breakages_it_is_given() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vuegraf.simulator", "--port", "0", "--data-delay", "0",
         "--now", "2026-11-25T05:30:00Z", "--frozen", "--withdraw", "locationProperties",
         "--fault", "400:customers@+0s/5h", "--fault", "429:status@+0s/1h",
         "--retry-after", "60", "--stale-day", "3600", "--none-rate", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("vuegraf-simulator listening on ")

        def status(path: str) -> requests.Response:
            return requests.get(f"{url}{path}", headers=HEADERS, timeout=30)

        assert status("/devices/1001/locationProperties").status_code == 404
        assert status("/customers").status_code == 400
        r = status("/customers/devices/status")
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"
        assert status("/customers/devices").status_code == 200
        r = status("/AppAPI?apiMethod=getDeviceListUsages&deviceGids=1001&instant="
                   "2026-11-25T05:10:00Z&scale=1D&energyUnit=KilowattHours")
        body = r.json()["deviceListUsages"]
        assert body["instant"] == "2026-11-24T05:00:00Z"  # stale: yesterday's
        usage = {c["channelNum"]: c["usage"] for c in body["devices"][0]["channelUsages"]}
        assert usage["1"] is None and usage["Balance"] is not None  # --none-rate 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
