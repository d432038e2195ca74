"""Device metadata through real pyemvue and the simulator: twins merged, names, states."""

from __future__ import annotations

from datetime import UTC, datetime

from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.emporia import EmporiaAccount
from vuegraf.simulator import SimulatorServer

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def test_devices_merged_named_and_connected(tmp_path):
    clock = FakeClock(NOW)
    with SimulatorServer(now=clock.now) as sim:
        config = parse_config(
            {"accounts": [{"name": "Home", "email": "e", "password": "p",
                           "simulatorUrl": sim.url}]},
            tmp_path / "vuegraf.json",
        )
        account = EmporiaAccount(config.accounts[0], config, clock)
        account.refresh_devices()
        requests = sim.stats()["total"]
        states = account.device_states()
        assert sim.stats()["total"] == requests  # reading states costs no request
    # pyemvue lists each Vue twice (named mains, nameless circuits): one entry per gid here.
    assert sorted(account.devices) == [1001, 1002, 2001, 3001]
    main = account.devices[1001]
    assert main.name == "Main Panel"
    assert set(main.channels) >= {"1,2,3", *map(str, range(1, 17))}
    assert (account.devices[2001].parent_gid, account.devices[2001].parent_channel) == (1001, "5")
    assert sorted(states) == [
        ("Home", "EV Charger", True),
        ("Home", "Garage Panel", True),
        ("Home", "Main Panel", True),
        ("Home", "Office Plug", True),
    ]
    assert len(account.chart_channels()) == 28
