"""Home Assistant's current and voltage sensors, for an account with `ampsVolts`: announced
once a channel's first bucket came, in the channel's JSON state, and nothing changes for a
channel without them (the end to end through a real broker and Home Assistant is the usage
one in tests/integration; these are the messages)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vuegraf.clock import FakeClock
from vuegraf.config import HomeAssistantConfig
from vuegraf.emporia.catalog import DeviceInfo
from vuegraf.energy import EnergyLedger
from vuegraf.model import Point, Scale, Unit
from vuegraf.sinks.homeassistant import DeviceFacts, HomeAssistant

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
QUARTER = T0 - timedelta(minutes=15)
PANEL = DeviceInfo(
    gid=1001,
    name="Main Panel",
    channels={"1,2,3": "", "1": "Kitchen", "2": "Fridge"},
    connected=True,
    model="VUE002",
    firmware="Vue2-1.10.3",
    channel_types={"1,2,3": "Main", "1": "FiftyAmp", "2": "FiftyAmp"},
)


class World:
    """A publisher of one account with one panel, and a ledger fed like the daemon's."""

    def __init__(self, tmp_path: Path) -> None:
        self.ledger = EnergyLedger(None, FakeClock(T0 + timedelta(seconds=65)))

        def directory() -> list[tuple[str, Mapping[int, DeviceFacts]]]:
            return [("Home", {1001: PANEL})]

        self.ha = HomeAssistant(
            HomeAssistantConfig(),
            topic_prefix="vuegraf",
            availability_topic="vuegraf/status",
            ledger=self.ledger,
            directory=directory,
            accounts=("Home",),
            update_interval_secs=60,
            state_path=tmp_path / "homeassistant.json",
        )

    def write(self, points: list[Point]) -> dict[str, str]:
        self.ledger.add(points)
        return dict(self.ha.messages(points))


def configs(messages: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    return {t: json.loads(p) for t, p in messages.items() if t.endswith("/config") and p}


def minute(num: str, watts: float, offset: int = 0, channel: str = "Fridge") -> Point:
    return Point("Home", "Main Panel", channel, Scale.MINUTE, T0 + timedelta(minutes=offset),
                 watts, 1001, num)


def electrical(num: str, amps: float, volts: float, start: datetime = QUARTER,
               channel: str = "Fridge",
               scale: Scale = Scale.QUARTER) -> list[Point]:
    return [
        Point("Home", "Main Panel", channel, scale, start, amps, 1001, num, unit=Unit.AMPS),
        Point("Home", "Main Panel", channel, scale, start, volts, 1001, num, unit=Unit.VOLTS),
    ]


def test_current_and_voltage_sensors_come_with_the_first_bucket(tmp_path: Path) -> None:
    world = World(tmp_path)
    first = world.write([minute("2", 95.0)])
    assert not [t for t in configs(first) if t.endswith(("_current/config", "_voltage/config"))]
    assert json.loads(first["vuegraf/homeassistant/1001/2"]) == {
        "power": 95.0,
        "energy": round(95.0 * 60 / 3.6e6, 6),
        "energy_exported": 0.0,
        "time": "2026-06-01T12:00:00Z",
    }

    sent = world.write(electrical("2", 0.79, 120.4))
    got = configs(sent)
    current = got["homeassistant/sensor/vuegraf_1001/2_current/config"]
    voltage = got["homeassistant/sensor/vuegraf_1001/2_voltage/config"]
    assert {k: current[k] for k in (
        "name", "unique_id", "device_class", "state_class", "unit_of_measurement",
        "state_topic", "value_template", "expire_after",
    )} == {
        "name": "Fridge current",
        "unique_id": "vuegraf_1001_2_current",
        "device_class": "current",
        "state_class": "measurement",
        "unit_of_measurement": "A",
        "state_topic": "vuegraf/homeassistant/1001/2",
        "value_template": "{{ value_json.current }}",
        "expire_after": 1800,  # two 15-minute buckets
    }
    assert (voltage["device_class"], voltage["unit_of_measurement"], voltage["name"]) == (
        "voltage", "V", "Fridge voltage"
    )
    assert voltage["device"] == current["device"]
    # The power, energy and connectivity configs are not sent again: they did not change.
    assert set(got) == {
        "homeassistant/sensor/vuegraf_1001/2_current/config",
        "homeassistant/sensor/vuegraf_1001/2_voltage/config",
    }
    assert json.loads(sent["vuegraf/homeassistant/1001/2"]) == {
        "power": 95.0,
        "energy": round(95.0 * 60 / 3.6e6, 6),
        "energy_exported": 0.0,
        "time": "2026-06-01T12:00:00Z",
        "current": 0.79,
        "voltage": 120.4,
    }
    # The next minute keeps the newest bucket's current and voltage in the state.
    later = world.write([minute("2", 90.0, 1)])
    state = json.loads(later["vuegraf/homeassistant/1001/2"])
    assert (state["power"], state["current"], state["voltage"]) == (90.0, 0.79, 120.4)
    # An older bucket arriving late changes nothing; a newer one replaces both.
    world.write(electrical("2", 5.0, 100.0, start=QUARTER - timedelta(minutes=15)))
    newer = world.write(electrical("2", 0.81, 119.9, start=T0))
    state = json.loads(newer["vuegraf/homeassistant/1001/2"])
    assert (state["current"], state["voltage"]) == (0.81, 119.9)


def test_hourly_amps_expire_after_two_hours(tmp_path: Path) -> None:
    world = World(tmp_path)
    sent = world.write(electrical("1", 3.5, 121.0, start=T0 - timedelta(hours=1),
                                  channel="Kitchen", scale=Scale.HOUR))
    got = configs(sent)
    assert got["homeassistant/sensor/vuegraf_1001/1_current/config"]["expire_after"] == 7200
    assert json.loads(sent["vuegraf/homeassistant/1001/1"])["current"] == 3.5
