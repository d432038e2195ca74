"""What Home Assistant is told: discovery configs, states, removals (no broker here; the
integration tests publish through a real Mosquitto to a real Home Assistant)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from vuegraf.clock import FakeClock
from vuegraf.config import HomeAssistantConfig
from vuegraf.emporia.catalog import DeviceInfo
from vuegraf.energy import EnergyLedger
from vuegraf.model import Point, Scale
from vuegraf.sinks.homeassistant import DeviceFacts, HomeAssistant, Message

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# Home Assistant's own pattern for a discovery topic (component, optional node id, object id).
DISCOVERY_TOPIC = re.compile(
    r"^homeassistant/(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?"
    r"(?P<object_id>[a-zA-Z0-9_-]+)/config$"
)


def panel(
    gid: int = 1001,
    name: str = "Main Panel",
    circuits: Mapping[str, str] | None = None,
    bidirectional: tuple[str, ...] = (),
) -> DeviceInfo:
    circuits = {"1": "Kitchen", "2": "Fridge"} if circuits is None else circuits
    types = {"1,2,3": "Main"} | {
        num: "FiftyAmpBidirectional" if num in bidirectional else "FiftyAmp" for num in circuits
    }
    return DeviceInfo(
        gid=gid,
        name=name,
        channels={"1,2,3": "", **circuits},
        connected=True,
        model="VUE002",
        firmware="Vue2-1.10.3",
        manufacturer_id=f"A{gid}",
        channel_types=types,
    )


def plug(gid: int = 2001, parent: int = 1001) -> DeviceInfo:
    return DeviceInfo(
        gid=gid,
        name="Office Plug",
        channels={"1,2,3": ""},
        parent_gid=parent,
        parent_channel="5",
        connected=False,
        model="SSO001",
        firmware="Outlet-1.4.0",
    )


def minute(
    gid: int, num: str, watts: float, offset: int = 0, *, device: str = "Main Panel",
    channel: str | None = None, account: str = "Home",
) -> Point:
    name = channel if channel is not None else (device if num == "1,2,3" else f"{device}-{num}")
    return Point(
        account, device, name, Scale.MINUTE, T0 + timedelta(minutes=offset), watts, gid, num
    )


class World:
    """A publisher over a directory the test changes, with a ledger fed like the daemon's."""

    def __init__(
        self,
        tmp_path: Path,
        devices: dict[str, dict[int, DeviceInfo]],
        accounts: tuple[str, ...] = ("Home",),
        owned: tuple[str, ...] | None = None,
    ) -> None:
        self.devices = devices
        self.clock = FakeClock(T0 + timedelta(seconds=65))
        self.ledger = EnergyLedger(None, self.clock)
        self.state = tmp_path / "homeassistant.json"
        self.ha = self.make(accounts, owned)

    def make(
        self, accounts: tuple[str, ...] = ("Home",), owned: tuple[str, ...] | None = None
    ) -> HomeAssistant:
        def directory() -> list[tuple[str, Mapping[int, DeviceFacts]]]:
            return [(name, devs) for name, devs in self.devices.items()]

        return HomeAssistant(
            HomeAssistantConfig(),
            topic_prefix="vuegraf",
            availability_topic="vuegraf/status",
            ledger=self.ledger,
            directory=directory,
            accounts=accounts,
            owned=owned,
            update_interval_secs=60,
            state_path=self.state,
        )

    def write(self, points: list[Point]) -> dict[str, str]:
        self.ledger.add(points)
        return dict(self.ha.messages(points))


def configs(messages: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    return {t: json.loads(p) for t, p in messages.items() if t.endswith("/config") and p}


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path, {"Home": {1001: panel(bidirectional=("1",)), 2001: plug()}})


def test_each_channel_gets_power_and_energy_sensors_the_energy_dashboard_accepts(world):
    sent = world.write(
        [
            minute(1001, "1,2,3", 1500.0),
            minute(1001, "1", -400.0, channel="Solar"),
            minute(1001, "2", 95.0, channel="Fridge"),
            minute(1001, "Balance", 12.0),
            minute(2001, "1,2,3", 30.0, device="Office Plug"),
        ]
    )
    got = configs(sent)
    for topic in got:
        assert DISCOVERY_TOPIC.match(topic), topic
    power = got["homeassistant/sensor/vuegraf_1001/1_2_3_power/config"]
    assert {k: power[k] for k in (
        "name", "unique_id", "device_class", "state_class", "unit_of_measurement",
        "state_topic", "value_template", "availability_topic", "expire_after",
    )} == {
        "name": "Power",
        "unique_id": "vuegraf_1001_1_2_3_power",
        "device_class": "power",
        "state_class": "measurement",
        "unit_of_measurement": "W",
        "state_topic": "vuegraf/homeassistant/1001/1_2_3",
        "value_template": "{{ value_json.power }}",
        "availability_topic": "vuegraf/status",
        "expire_after": 300,
    }
    energy = got["homeassistant/sensor/vuegraf_1001/2_energy/config"]
    assert (energy["name"], energy["device_class"], energy["state_class"]) == (
        "Fridge energy", "energy", "total_increasing",
    )
    assert energy["unit_of_measurement"] == "kWh"
    assert power["device"] == {
        "identifiers": ["emporia_1001"],
        "name": "Main Panel",
        "manufacturer": "Emporia",
        "model": "VUE002",
        "sw_version": "Vue2-1.10.3",
    }
    assert got["homeassistant/sensor/vuegraf_2001/1_2_3_power/config"]["device"]["via_device"] == (
        "emporia_1001"
    )
    # Fed-back energy: the bidirectional circuit and the mains of its panel; not the fridge,
    # nor the plug; Balance only once it has fed back.
    exported = {t.split("/")[3] for t in got if t.endswith("_energy_exported/config")}
    assert exported == {"1_2_3_energy_exported", "1_energy_exported"}
    assert got["homeassistant/sensor/vuegraf_1001/Balance_energy/config"]["name"] == (
        "Balance energy"
    )
    # One connectivity sensor per device, and its state.
    conn = got["homeassistant/binary_sensor/vuegraf_2001/connected/config"]
    assert (conn["device_class"], conn["entity_category"], conn["state_topic"]) == (
        "connectivity", "diagnostic", "vuegraf/homeassistant/2001/connected",
    )
    assert sent["vuegraf/homeassistant/2001/connected"] == "OFF"
    assert sent["vuegraf/homeassistant/1001/connected"] == "ON"


def test_states_carry_the_newest_watts_and_counters_that_never_go_negative(world):
    world.write([minute(1001, "1", -400.0, channel="Solar")])
    sent = world.write([minute(1001, "1", 250.0, 1, channel="Solar")])
    state = json.loads(sent["vuegraf/homeassistant/1001/1"])
    assert state == {
        "power": 250.0,
        "energy": round(250.0 * 60 / 3.6e6, 6),
        "energy_exported": round(400.0 * 60 / 3.6e6, 6),
        "time": "2026-06-01T12:01:00Z",
    }
    # Emporia revises the newest minute: the power shown follows, the counter never falls.
    sent = world.write([minute(1001, "1", 100.0, 1, channel="Solar")])
    state = json.loads(sent["vuegraf/homeassistant/1001/1"])
    assert state["power"] == 100.0 and state["energy"] == round(250.0 * 60 / 3.6e6, 6)
    # A late older minute (a fill) moves the counters but not the power shown.
    world.write([minute(1001, "1", 50.0, -1, channel="Solar")])
    sent = world.write([minute(1001, "1", 130.0, 2, channel="Solar")])
    state = json.loads(sent["vuegraf/homeassistant/1001/1"])
    assert state["power"] == 130.0 and state["time"] == "2026-06-01T12:02:00Z"
    # The 150 owed by the revision was paid by the next minutes: the sum of the last values.
    assert state["energy"] == round((100.0 + 50.0 + 130.0) * 60 / 3.6e6, 6)


def test_a_channel_seen_feeding_back_gets_its_exported_sensor_then(world):
    first = world.write([minute(1001, "Balance", 5.0)])
    assert "homeassistant/sensor/vuegraf_1001/Balance_energy_exported/config" not in first
    # A clamp's noise (-3 W for a minute: 180 J) is not feeding back; 1 Wh is.
    noise = world.write([minute(1001, "Balance", -3.0, 1)])
    assert "homeassistant/sensor/vuegraf_1001/Balance_energy_exported/config" not in noise
    later = world.write([minute(1001, "Balance", -60.0, 2)])
    assert configs(later)["homeassistant/sensor/vuegraf_1001/Balance_energy_exported/config"][
        "value_template"
    ] == "{{ value_json.energy_exported }}"
    # Announced once, it stays, also in a new run that has not seen it feed back yet.
    again = World(world.state.parent, world.devices)
    assert "homeassistant/sensor/vuegraf_1001/Balance_energy_exported/config" in configs(
        again.write([minute(1001, "Balance", 5.0, 3)])
    )


def test_configs_go_out_once_and_again_on_a_rename_with_the_same_unique_id(world):
    first = world.write([minute(1001, "2", 95.0, channel="Fridge")])
    assert "homeassistant/sensor/vuegraf_1001/2_power/config" in first
    second = world.write([minute(1001, "2", 96.0, 1, channel="Fridge")])
    assert configs(second) == {}  # unchanged: only the state
    assert "vuegraf/homeassistant/1001/2" in second
    renamed = world.write([minute(1001, "2", 97.0, 2, channel="Kitchen Fridge")])
    power = configs(renamed)["homeassistant/sensor/vuegraf_1001/2_power/config"]
    assert (power["name"], power["unique_id"]) == ("Kitchen Fridge power", "vuegraf_1001_2_power")
    # And the counter went on: the rename changed no key.
    state = json.loads(renamed["vuegraf/homeassistant/1001/2"])
    assert state["energy"] == round((95.0 + 96.0 + 97.0) * 60 / 3.6e6, 6)


def test_default_circuit_names_read_well_after_the_device_name(world):
    got = configs(world.write([minute(1001, "2", 1.0)]))  # written as "Main Panel-2"
    assert got["homeassistant/sensor/vuegraf_1001/2_power/config"]["name"] == "Circuit 2 power"


def test_an_announcement_repeats_every_config_and_state(world):
    sent = world.write(
        [minute(1001, "1,2,3", 1.0), minute(2001, "1,2,3", 2.0, device="Office Plug")]
    )
    again = dict(world.ha.announcement())
    assert configs(again) == configs(sent)
    assert {t for t in again if not t.endswith("/config")} == {
        t for t in sent if not t.endswith("/config")
    }


def test_accounts_with_the_same_names_never_collide(tmp_path: Path, caplog):
    # Two accounts, each with a "Main Panel" whose circuit 1 is "Kitchen": Emporia's gids differ.
    w = World(
        tmp_path,
        {"Home": {1001: panel(1001)}, "Cabin": {5001: panel(5001)}},
        accounts=("Home", "Cabin"),
    )
    got = configs(
        w.write([minute(1001, "1", 1.0, channel="Kitchen"),
                 minute(5001, "1", 2.0, channel="Kitchen", account="Cabin")])
    )
    ids = [c["unique_id"] for c in got.values()]
    assert len(ids) == len(set(ids))
    assert {"vuegraf_1001_1_power", "vuegraf_5001_1_power"} <= set(ids)
    # One device in two accounts (shared with a second login) is announced once, said once.
    with caplog.at_level(logging.WARNING):
        twice = w.write([minute(1001, "1", 3.0, 1, channel="Kitchen", account="Cabin")] * 2)
    assert configs(twice) == {} and "vuegraf/homeassistant/1001/1" not in twice
    assert [r.message for r in caplog.records if "is in accounts" in r.message] == [
        "Home Assistant: device 1001 is in accounts Home and Cabin; announced once, for Home"
    ]


def removed(messages: Mapping[str, str]) -> set[str]:
    return {t for t, p in messages.items() if p == ""}


def test_a_circuit_or_device_emporia_no_longer_lists_is_removed(world):
    world.write(
        [minute(1001, "2", 95.0), minute(2001, "1,2,3", 2.0, device="Office Plug"),
         minute(1001, "Balance", 1.0)]
    )
    world.devices["Home"] = {1001: panel(circuits={"1": "Kitchen"}, bidirectional=("1",))}
    # Not while they delivered a minute in the last 15: Emporia's list and its answers may
    # disagree for a while, and an entity that comes and goes loses its history.
    assert removed(world.write([minute(1001, "1,2,3", 1.0, 15)])) == set()
    gone = removed(world.write([minute(1001, "1,2,3", 1.0, 16)]))
    assert gone == {
        "homeassistant/sensor/vuegraf_1001/2_power/config",
        "homeassistant/sensor/vuegraf_1001/2_energy/config",
        "vuegraf/homeassistant/1001/2",
        "homeassistant/sensor/vuegraf_2001/1_2_3_power/config",
        "homeassistant/sensor/vuegraf_2001/1_2_3_energy/config",
        "homeassistant/binary_sensor/vuegraf_2001/connected/config",
        "vuegraf/homeassistant/2001/1_2_3",
        "vuegraf/homeassistant/2001/connected",
    }  # Balance stays: a computed channel of a panel still listed
    assert removed(world.write([minute(1001, "1,2,3", 1.0, 17)])) == set()  # once
    # It stays removed across a restart (the state file no longer lists it).
    restarted = World(world.state.parent, world.devices)
    assert removed(restarted.write([minute(1001, "1,2,3", 1.0, 18)])) == set()


def test_a_channel_that_still_delivers_minutes_is_never_removed(world):
    # Emporia's device list leaves out a circuit that its usage answers still carry.
    world.devices["Home"] = {1001: panel(circuits={"1": "Kitchen"}), 2001: plug()}
    for offset in range(0, 180, 30):
        sent = world.write([minute(1001, "2", 95.0, offset)])
        assert removed(sent) == set()
        assert "vuegraf/homeassistant/1001/2" in sent


def test_an_empty_device_list_removes_nothing(world):
    world.write([minute(1001, "2", 95.0)])
    world.devices["Home"] = {}
    assert removed(world.write([minute(1001, "2", 95.0, 1)])) == set()


def test_an_account_taken_out_of_the_config_loses_its_entities_at_the_next_start(tmp_path):
    w = World(tmp_path, {"Home": {1001: panel()}, "Cabin": {5001: panel(5001)}},
              accounts=("Home", "Cabin"))
    w.write([minute(1001, "2", 1.0), minute(5001, "2", 1.0, account="Cabin")])
    w.devices.pop("Cabin")
    later = World(tmp_path, w.devices, accounts=("Home",))
    gone = removed(later.write([minute(1001, "2", 1.0, 1)]))
    assert gone == {
        "homeassistant/sensor/vuegraf_5001/2_power/config",
        "homeassistant/sensor/vuegraf_5001/2_energy/config",
        "homeassistant/binary_sensor/vuegraf_5001/connected/config",
        "vuegraf/homeassistant/5001/2",
        "vuegraf/homeassistant/5001/connected",
    }


def test_an_account_another_replica_collects_is_left_alone(tmp_path):
    w = World(tmp_path, {"Home": {1001: panel()}, "Cabin": {5001: panel(5001)}},
              accounts=("Home", "Cabin"))
    w.write([minute(1001, "2", 1.0), minute(5001, "2", 1.0, account="Cabin")])
    # The next start is replica 0 of 2, and Cabin is replica 1's: nothing is removed, and
    # this replica's file forgets Cabin.
    replica = World(tmp_path, {"Home": {1001: panel()}}, accounts=("Home", "Cabin"),
                    owned=("Home",))
    assert removed(replica.write([minute(1001, "2", 1.0, 1)])) == set()
    saved = json.loads((tmp_path / "homeassistant.json").read_text())["announced"]
    assert {v["account"] for v in saved.values()} == {"Home"}


def test_points_without_emporia_ids_and_other_scales_announce_nothing(world):
    hour = Point("Home", "Main Panel", "Main Panel", Scale.HOUR, T0, 1.0, 1001, "1,2,3")
    bare = Point("Home", "Main Panel", "Main Panel", Scale.MINUTE, T0, 1.0)
    assert world.write([hour, bare]) == {}


def test_messages_are_topic_payload_pairs_and_every_payload_is_json_or_a_switch(world):
    sent: list[Message] = world.ha.messages(
        [minute(1001, "1,2,3", 1.0), minute(2001, "1,2,3", 2.0, device="Office Plug")]
    )
    for topic, payload in sent:
        if payload in ("ON", "OFF"):
            assert topic.endswith("/connected")
        else:
            json.loads(payload)


def test_a_panels_configs_come_before_those_of_the_plug_on_its_circuit(world):
    # The plug's minute comes first in the batch; Home Assistant needs its parent device first.
    for sent in (
        world.ha.messages([minute(2001, "1,2,3", 2.0, device="Office Plug"),
                           minute(1001, "1,2,3", 1.0)]),
        world.ha.announcement(),
    ):
        topics = [t for t, _p in sent if t.endswith("/config")]
        first_plug = min(i for i, t in enumerate(topics) if "vuegraf_2001" in t)
        last_panel = max(i for i, t in enumerate(topics) if "vuegraf_1001" in t)
        assert last_panel < first_plug, topics
