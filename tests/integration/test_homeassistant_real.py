"""vuegraf's Home Assistant discovery read back from a real Home Assistant 2024.3.3.

The real CLI (`python -m vuegraf`, through harness/testtime.py) collects the simulator's
default household and publishes to a Mosquitto of this test's own, which a Home Assistant of
this test's own uses through its MQTT integration (harness/homeassistant.py). What is checked
is what Home Assistant made of it, by its own code: its entity and device registries, its
states, its Energy dashboard validation, and the entities going unavailable when vuegraf is
killed. Expected values come from the simulator's scenario and model, not from vuegraf.
"""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from harness import oracle
from harness.homeassistant import STATISTICS_NOT_DEFINED, HomeAssistant, require_hass
from harness.inprocess import write_simulator_config
from harness.subscriber import Subscriber
from harness.testtime import TestTime
from servers import MosquittoServer, poll_until
from vuegraf.simulator import Scenario, SimulatorServer

pytestmark = pytest.mark.integration

SEED = 31
DEADLINE = 180.0


def object_part(channel_num: str) -> str:
    """Home Assistant's rule for ids in a discovery topic: letters, digits, `_` and `-`."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in channel_num)


def unique_id(gid: int, num: str, what: str) -> str:
    return f"vuegraf_{gid}_{object_part(num)}_{what}"


def test_home_assistant_makes_entities_devices_and_energy_sources_of_what_vuegraf_announces(
    tmp_path: Path, test_time: TestTime
) -> None:
    scenario = Scenario.default()
    channels = [(gid, num) for gid, num, *_rest in oracle.channels(oracle.DEFAULT_NAMES, True)]
    log = tmp_path / "vuegraf.log"
    with (
        MosquittoServer() as broker,
        HomeAssistant(require_hass()) as hass,
        SimulatorServer(seed=SEED, now=test_time.now) as sim,
    ):
        hass.use_broker(broker.host, broker.port)
        states = Subscriber(broker.port, "vuegraf/homeassistant/1001/1_2_3")
        config = write_simulator_config(
            tmp_path,
            sim.url,
            {"mqtt": {"host": "127.0.0.1", "port": broker.port, "homeAssistant": True}},
        )
        with test_time.running(log, str(config)) as proc:
            # Every channel: a power and an energy entity, by Emporia's ids.
            wanted = {unique_id(gid, num, what) for gid, num in channels
                      for what in ("power", "energy")}
            registered = hass.wait_for(
                hass.entity_registry,
                lambda entities: wanted <= {e.unique_id for e in entities},
                DEADLINE,
                "a power and an energy entity for every channel",
            )
            assert proc.poll() is None
            by_uid = {e.unique_id: e for e in registered if e.platform == "mqtt"}
            exported = {uid for uid in by_uid if uid.endswith("_energy_exported")}
            # Emporia's bidirectional circuit (solar) and the mains of its panel.
            assert {unique_id(1002, "1,2,3", "energy_exported"),
                    unique_id(1002, "1", "energy_exported")} <= exported
            assert unique_id(1001, "3", "energy_exported") not in exported  # the fridge

            # One device per Emporia device, as the scenario describes it; the plug and the
            # charger hang on their panels.
            devices = {d.identifiers: d for d in hass.device_registry()}
            found = {}
            for spec in scenario.devices:
                device = devices[frozenset({("mqtt", f"emporia_{spec.device_gid}")})]
                assert (device.name, device.manufacturer, device.model, device.sw_version) == (
                    spec.name, "Emporia", spec.model, spec.firmware,
                )
                found[spec.device_gid] = device
            for spec in scenario.devices:
                parent = found[spec.parent_gid].id if spec.parent_gid else None
                assert found[spec.device_gid].via_device_id == parent, spec.name
            mains = by_uid[unique_id(1001, "1,2,3", "power")]
            assert mains.device_id == found[1001].id

            # A state as Home Assistant shows it: the watts vuegraf published for a minute,
            # which are the model's for that minute.
            message = states.inbox.get(timeout=DEADLINE).json()
            minute = datetime.fromisoformat(message["time"].replace("Z", "+00:00"))
            kwh = sim.model.kwh(1001, "1,2,3", "1MIN", minute)
            assert kwh is not None
            assert message["power"] == pytest.approx(kwh * 60_000, abs=1e-3)

            def power_shown() -> float | None:
                state = hass.state(mains.entity_id)
                try:
                    return float(state["state"]) if state else None
                except ValueError:
                    return None

            newest: list[dict[str, Any]] = [message]

            def agrees(shown: float | None) -> bool:
                while not states.inbox.empty():
                    newest.append(states.inbox.get().json())
                return shown is not None and any(
                    shown == pytest.approx(m["power"], abs=1e-3) for m in newest[-3:]
                )

            poll_until(power_shown, agrees, DEADLINE, 0.5,
                       lambda s: f"{mains.entity_id} shows {s}, vuegraf sent {newest[-3:]}")
            energy = hass.state(by_uid[unique_id(1001, "1,2,3", "energy")].entity_id)
            assert energy is not None
            assert energy["attributes"]["unit_of_measurement"] == "kWh"
            assert energy["attributes"]["state_class"] == "total_increasing"
            assert float(energy["state"]) >= 0

            # Home Assistant's Energy dashboard takes them: grid in and out from the mains,
            # solar from the solar circuit, circuits and plugs as devices. Only the statistics
            # are missing until its first 5-minute compile.
            def entity_id(gid: int, num: str, what: str) -> str:
                return by_uid[unique_id(gid, num, what)].entity_id

            grid_in = [entity_id(1001, "1,2,3", "energy"), entity_id(1002, "1,2,3", "energy")]
            grid_out = [entity_id(1002, "1,2,3", "energy_exported")]
            solar = [entity_id(1002, "1", "energy_exported")]
            devices_used = [entity_id(1001, "3", "energy"), entity_id(2001, "1,2,3", "energy")]
            hass.energy_save_prefs(
                grid_import=grid_in, grid_export=grid_out, solar=solar, devices=devices_used
            )
            validation = hass.energy_validate()
            for used in (*grid_in, *grid_out, *solar, *devices_used):
                assert validation.issues_of(used, ignore=[STATISTICS_NOT_DEFINED]) == [], used
            # And it refused nothing vuegraf sent.
            assert hass.log_problems("vuegraf") == []

            # A crashed vuegraf: the broker's last will makes every entity unavailable.
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            hass.wait_for_state(mains.entity_id, "unavailable", timeout=DEADLINE)
            solar_state = hass.state(entity_id(1002, "1", "energy_exported"))
            assert solar_state is not None and solar_state["state"] == "unavailable"

        # Started again: available again, the counter where it was or above.
        before = float(energy["state"])
        with test_time.running(log, str(config)):
            hass.wait_for_state(
                entity_id(1001, "1,2,3", "energy"),
                lambda s: s is not None and s["state"] not in ("unavailable", "unknown")
                and float(s["state"]) >= before,
                timeout=DEADLINE,
            )
        states.client.disconnect()
    assert "Traceback" not in log.read_text()
