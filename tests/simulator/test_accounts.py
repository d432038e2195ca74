"""Many accounts on one simulator: `/account/N` prefixes in simulatorUrl, through pyemvue.

Expected values come from the scenario file (ids), the usage model of each account (values)
and literals; the root URL must answer byte for byte as a server without accounts does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
import requests
from pyemvue import PyEmVue
from pyemvue.device import VueDeviceChannel

from vuegraf.simulator import Scenario, SimulatorServer
from vuegraf.simulator.__main__ import main
from vuegraf.simulator.model import ScenarioError, account_seed

NOW = datetime(2026, 11, 24, 15, 7, 30, tzinfo=UTC)
MINUTE = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
HEADERS = {"authtoken": "simulator"}
ACCOUNTS = 5


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=9, now=lambda: NOW, accounts=ACCOUNTS) as server:
        yield server


def login(url: str) -> PyEmVue:
    client = PyEmVue()
    assert client.login_simulator(url)
    return client


def mains_minute(client: PyEmVue, gid: int) -> float:
    usage = client.get_device_list_usage([gid], MINUTE, scale="1MIN")
    value = usage[gid].channels["1,2,3"].usage
    assert isinstance(value, float)
    return value


def test_each_account_has_its_own_customer_and_device_ids(sim: SimulatorServer) -> None:
    first, third = login(sim.account_url(0)), login(sim.account_url(2))
    # Customer 424242 and demo@example.com in the bundled scenario; gids 1001, 1002, ...
    assert (first.customer.customer_gid, first.customer.email) == (424243, "demo+0@example.com")
    assert (third.customer.customer_gid, third.customer.email) == (424245, "demo+2@example.com")
    gids = sorted({d.device_gid for d in third.get_devices()})
    assert gids == [301001, 301002, 302001, 303001]
    plug = next(d for d in third.get_devices() if d.device_gid == 302001)
    assert (plug.device_name, plug.parent_device_gid) == ("Office Plug", 301001)
    assert plug.manufacturer_id.endswith("-2")
    root = login(sim.url)
    assert root.customer.customer_gid == 424242
    assert sorted({d.device_gid for d in root.get_devices()}) == [1001, 1002, 2001, 3001]


def test_each_account_serves_the_usage_of_its_own_model(sim: SimulatorServer) -> None:
    values: dict[int | str, float] = {}
    for number in (0, 1, 4):
        gid = 1001 + (number + 1) * 100_000
        got = mains_minute(login(sim.account_url(number)), gid)
        model = sim.account(number).model
        assert model.seed == account_seed(9, number)
        kwh = model.kwh(gid, "1,2,3", "1MIN", MINUTE)
        assert got == kwh
        values[number] = got
    values["root"] = mains_minute(login(sim.url), 1001)
    assert len(set(values.values())) == 4, values  # four households, four different minutes


def test_root_answers_exactly_as_a_server_without_accounts(sim: SimulatorServer) -> None:
    paths = [
        "/customers",
        "/customers/devices",
        "/AppAPI?apiMethod=getDeviceListUsages&deviceGids=1001+2001&instant=2026-11-24T15:00:00Z"
        "&scale=1MIN&energyUnit=KilowattHours",
        "/AppAPI?apiMethod=getChartUsage&deviceGid=1001&channel=1&start=2026-11-24T10:00:00Z"
        "&end=2026-11-24T14:00:00Z&scale=1MIN&energyUnit=KilowattHours",
    ]
    with SimulatorServer(seed=9, now=lambda: NOW) as alone:
        for path in paths:
            want = requests.get(alone.url + path, headers=HEADERS, timeout=30)
            got = requests.get(sim.url + path, headers=HEADERS, timeout=30)
            assert (got.status_code, got.content) == (want.status_code, want.content), path


def test_requests_are_counted_per_account_and_endpoint(sim: SimulatorServer) -> None:
    client = login(sim.account_url(3))  # one customers request
    client.get_devices()
    mains_minute(client, 401001)
    mains_minute(client, 401001)
    login(sim.account_url(1))
    assert sim.account(3).stats()["requests"] == {
        "customers": {"-": 1},
        "devices": {"-": 1},
        "getDeviceListUsages": {"1MIN": 2},
    }
    assert sim.account(1).stats()["requests"] == {"customers": {"-": 1}}
    assert sim.stats()["total"] == 0  # the root account was not asked
    assert sorted(sim.served_accounts()) == [1, 3]
    over_http = requests.get(f"{sim.account_url(3)}/simulator/stats", timeout=30).json()
    assert over_http["total"] == 4
    requests.post(f"{sim.account_url(3)}/simulator/reset-stats", timeout=30)
    assert sim.account(3).stats()["total"] == 0 and sim.account(1).stats()["total"] == 1


def minute_status(sim: SimulatorServer, number: int) -> int:
    gid = 1001 + (number + 1) * 100_000
    return requests.get(
        f"{sim.account_url(number)}/AppAPI?apiMethod=getDeviceListUsages&deviceGids={gid}"
        "&instant=2026-11-24T15:00:00Z&scale=1MIN&energyUnit=KilowattHours",
        headers=HEADERS,
        timeout=30,
    ).status_code


def test_faults_per_account_and_for_the_whole_server(sim: SimulatorServer) -> None:
    sim.account(1).set_fault(503, endpoints={"getDeviceListUsages"})
    assert (minute_status(sim, 1), minute_status(sim, 2)) == (503, 200)
    assert requests.get(f"{sim.account_url(1)}/customers", headers=HEADERS, timeout=30).ok
    sim.account(1).clear_fault()
    assert minute_status(sim, 1) == 200
    sim.set_fault(429, retry_after=30)  # the server's: every account without its own
    for number in (1, 2):
        answer = requests.get(f"{sim.account_url(number)}/customers", headers=HEADERS, timeout=30)
        assert (answer.status_code, answer.headers["Retry-After"]) == (429, "30")
    sim.clear_fault()


def test_knobs_are_the_servers_until_set_on_an_account(sim: SimulatorServer) -> None:
    acct = sim.account(4)
    sim.latency_s = 0.25
    assert acct.latency_s == 0.25
    acct.latency_s = 0.5
    sim.latency_s = 0.0
    assert (acct.latency_s, sim.latency_s, sim.account(0).latency_s) == (0.5, 0.0, 0.0)
    acct.latency_s = 0.0
    acct.data_delay_s = 60.0
    assert sim.account(0).data_delay_s == 3.0
    later = NOW - timedelta(seconds=90)  # complete for 3 s of delay, not yet for 60 s
    minute = f"{later:%Y-%m-%dT%H:%M}:00Z"
    for number, known in ((0, True), (4, False)):
        gid = 1001 + (number + 1) * 100_000
        answer = requests.get(
            f"{sim.account_url(number)}/AppAPI?apiMethod=getDeviceListUsages&deviceGids={gid}"
            f"&instant={minute}&scale=1MIN&energyUnit=KilowattHours",
            headers=HEADERS,
            timeout=30,
        ).json()
        usage = answer["deviceListUsages"]["devices"][0]["channelUsages"][0]["usage"]
        assert (usage is not None) is known, (number, usage)


def test_the_request_log_names_the_client_of_the_url(sim: SimulatorServer) -> None:
    sim.log_requests = True
    login(sim.account_url(2, client="replica-1")).get_devices()
    login(sim.account_url(2))
    log = sim.account(2).requests_seen()
    assert [(r.endpoint, r.client) for r in log] == [
        ("customers", "replica-1"),
        ("devices", "replica-1"),
        ("customers", None),
    ]
    assert sim.requests_seen() == [] and sim.account(1).requests_seen() == []


def test_unknown_accounts_are_404(sim: SimulatorServer) -> None:
    for path in (f"/account/{ACCOUNTS}/customers", "/account/007/customers", "/account/1"):
        answer = requests.get(sim.url + path, headers=HEADERS, timeout=30)
        assert answer.status_code == 404, path
    with pytest.raises(IndexError):
        sim.account(ACCOUNTS)
    with SimulatorServer(now=lambda: NOW) as alone:  # no accounts: only the root
        answer = requests.get(f"{alone.url}/account/0/customers", headers=HEADERS, timeout=30)
        assert answer.status_code == 404


def test_only_a_few_models_are_kept_and_answers_stay_the_same() -> None:
    with SimulatorServer(seed=3, now=lambda: NOW, accounts=10, models_kept=2) as sim:
        first = [mains_minute(login(sim.account_url(n)), 1001 + (n + 1) * 100_000)
                 for n in range(10)]
        built = [n for n, acct in sim.served_accounts().items() if acct._model is not None]
        assert len(built) <= 2, built
        again = [mains_minute(login(sim.account_url(n)), 1001 + (n + 1) * 100_000)
                 for n in range(10)]
    assert first == again


def test_a_device_added_to_one_account_only() -> None:
    with SimulatorServer(now=lambda: NOW, accounts=2, models_kept=1) as sim:
        acct = sim.account(1)
        plug = acct.scenario.device(202001)
        acct.add_device(
            type(plug)(
                device_gid=205001, name="Shed Plug", kind="outlet", model="SSO001",
                firmware="sim-1.0", manufacturer_id="SIM5", channels=plug.channels,
            )
        )
        names = {d.device_name for d in login(sim.account_url(1)).get_devices()}
        assert "Shed Plug" in names
        assert "Shed Plug" not in {d.device_name for d in login(sim.account_url(0)).get_devices()}
        assert mains_minute(login(sim.account_url(1)), 205001) > 0


def test_for_account_shifts_ids_and_refuses_gids_it_cannot_shift() -> None:
    base = Scenario.default()
    shifted = base.for_account(41)
    assert [d.device_gid for d in shifted.devices] == [4201001, 4201002, 4202001, 4203001]
    assert [d.parent_gid for d in shifted.devices] == [None, None, 4201001, 4201002]
    assert [d.name for d in shifted.devices] == [d.name for d in base.devices]
    big = base.devices[0].__class__(
        device_gid=100_000, name="Big", kind="outlet", model="SSO001", firmware="x",
        manufacturer_id="m", channels=base.devices[2].channels,
    )
    odd = Scenario(base.customer, (big,), base.timezone)
    with pytest.raises(ScenarioError, match="100000"):
        odd.for_account(0)
    with pytest.raises(ScenarioError):
        SimulatorServer(odd, accounts=1)
    SimulatorServer(odd)  # one account needs no shifting


def test_pyemvue_carries_the_prefix_to_every_endpoint(sim: SimulatorServer) -> None:
    client = login(sim.account_url(0))
    client.get_devices()
    client.get_device_list_usage([101001], MINUTE, scale="1MIN")
    client.get_chart_usage(
        VueDeviceChannel(gid=101001, channelNum="1"), MINUTE - timedelta(hours=1), MINUTE,
        scale="1MIN",
    )
    client.get_devices_status()
    assert set(sim.account(0).stats()["requests"]) == {
        "customers", "devices", "getDeviceListUsages", "getChartUsage", "status",
    }
    assert sim.stats()["total"] == 0


def test_the_command_serves_accounts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vuegraf.simulator", "--port", "0", "--accounts", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("vuegraf-simulator listening on ")
        answer = requests.get(f"{url}/account/2/customers", headers=HEADERS, timeout=30)
        assert answer.json()["customerGid"] == 424245
        missing = requests.get(f"{url}/account/3/customers", headers=HEADERS, timeout=30)
        assert missing.status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    path = tmp_path / "big.json"
    data = json.loads((resources.files("vuegraf.simulator") / "default_scenario.json").read_text())
    (charger,) = [d for d in data["devices"] if d["deviceGid"] == 3001]  # nothing nests on it
    charger["deviceGid"] = 123456
    path.write_text(json.dumps(data))
    assert main(["--scenario", str(path), "--port", "0", "--accounts", "2"]) == 2
    assert "123456" in capsys.readouterr().err
