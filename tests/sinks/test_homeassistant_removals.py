"""When Home Assistant entities of an account no longer in vuegraf.json are removed.

An empty retained config makes Home Assistant delete the entity, and its device with the
last one, with whatever the user set on them; so one is sent only for a device no configured
account lists. A renamed account (same Emporia login, same devices) keeps its entities; a
replica of several leaves them alone, as the renamed account may be another replica's now.
The publisher is driven directly with a fake device directory; what was announced by an
earlier run is its state file (written here as that run left it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from vuegraf.config import HomeAssistantConfig
from vuegraf.energy import EnergyLedger
from vuegraf.model import Point, Scale
from vuegraf.sinks.homeassistant import DeviceFacts, HomeAssistant

MINUTE = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
GID = 1001
CONFIG = "homeassistant/sensor/vuegraf_1001/1_2_3_power/config"


@dataclass
class Facts:
    name: str = "Main Panel"
    channels: dict[str, str] = field(default_factory=lambda: {"1,2,3": ""})
    parent_gid: int | None = None
    connected: bool | None = True
    model: str = "VUE002"
    firmware: str = "1.0"

    def can_export(self, channel_num: str) -> bool:
        return False


def earlier_run(tmp_path: Path, account: str) -> Path:
    """The state file of a run that announced the mains of device 1001 for `account`."""
    path = tmp_path / "homeassistant.json"
    announced = {
        CONFIG: {"account": account, "gid": GID, "channel": "1,2,3"},
        "homeassistant/sensor/vuegraf_1001/1_2_3_energy/config": {
            "account": account, "gid": GID, "channel": "1,2,3"
        },
        "homeassistant/binary_sensor/vuegraf_1001/connected/config": {
            "account": account, "gid": GID, "channel": None
        },
    }
    path.write_text(json.dumps({"announced": announced}))
    return path


def publisher(
    state: Path,
    accounts: list[str],
    listed: dict[str, dict[int, DeviceFacts]],
    owned: list[str] | None = None,
) -> HomeAssistant:
    return HomeAssistant(
        HomeAssistantConfig(),
        topic_prefix="vuegraf",
        availability_topic="vuegraf/status",
        ledger=EnergyLedger(None),
        directory=lambda: list(listed.items()),
        accounts=accounts,
        owned=owned,
        state_path=state,
    )


def mains(account: str, gid: int = GID) -> Point:
    return Point(account, "Main Panel", "Main Panel", Scale.MINUTE, MINUTE, 500.0, gid, "1,2,3")


def emptied(messages: list[tuple[str, str]]) -> list[str]:
    return sorted(topic for topic, payload in messages if payload == "")


def test_a_renamed_account_keeps_the_entities_of_the_devices_it_lists(tmp_path: Path) -> None:
    ha = publisher(earlier_run(tmp_path, "Home"), ["House"], {"House": {GID: Facts()}})
    assert emptied(ha.announcement()) == []  # on connect, before any device list is read
    messages = ha.messages([mains("House")])
    assert emptied(messages) == []
    assert CONFIG in dict(messages)
    saved = json.loads((tmp_path / "homeassistant.json").read_text())["announced"]
    assert {v["account"] for v in saved.values()} == {"House"}


def test_an_account_taken_out_loses_its_entities_once_the_others_lists_are_read(
    tmp_path: Path,
) -> None:
    listed: dict[str, dict[int, DeviceFacts]] = {}
    ha = publisher(earlier_run(tmp_path, "Home"), ["Other"], listed)
    assert emptied(ha.announcement()) == []
    assert emptied(ha.messages([])) == []  # Other's devices are not read yet
    listed["Other"] = {2002: Facts(name="Other Panel")}
    assert emptied(ha.messages([mains("Other", 2002)])) == sorted(
        [
            CONFIG,
            "homeassistant/sensor/vuegraf_1001/1_2_3_energy/config",
            "homeassistant/binary_sensor/vuegraf_1001/connected/config",
            "vuegraf/homeassistant/1001/1_2_3",
            "vuegraf/homeassistant/1001/connected",
        ]
    )


def test_a_replica_of_several_leaves_an_unconfigured_accounts_entities_alone(
    tmp_path: Path,
) -> None:
    """"Home" was renamed "House", which another replica collects now: this replica neither
    lists the device nor may delete what the other replica announces."""
    listed: dict[str, dict[int, DeviceFacts]] = {"Mine": {2002: Facts(name="Other Panel")}}
    ha = publisher(earlier_run(tmp_path, "Home"), ["Mine", "House"], listed, owned=["Mine"])
    assert emptied(ha.announcement()) == []
    assert emptied(ha.messages([mains("Mine", 2002)])) == []
