"""Home Assistant MQTT discovery: what to publish so every channel appears as sensors.

This module decides the messages; `MqttSink` delivers them over its one connection (with
its last will on the availability topic, so a crashed vuegraf shows every entity as
unavailable). Every message here is retained.

Per channel, three sensors (five with amps and volts) share one JSON state topic
`<topicPrefix>/homeassistant/<device gid>/<channel>`, holding
`{"power": W, "energy": kWh, "energy_exported": kWh, "time": "<minute, UTC>"}`:

- power (W, `measurement`), which expires (shows unavailable) when no new minute came for
  five update intervals: a stale number is never shown as the current one;
- energy drawn (kWh, `total_increasing`), from the energy ledger (energy.py): it only
  rises, by each minute of Emporia's data counted once, across restarts;
- energy fed back (kWh, `total_increasing`), for channels that can run backwards (Emporia
  says bidirectional, the mains of a panel with such a circuit, or any channel once it was
  seen feeding back). Never a negative value in a `total_increasing` sensor;
- current (A) and voltage (V), `measurement`, for the channels of an account with
  `ampsVolts`, once its first bucket came (the state then also holds `"current"` and
  `"voltage"`); they expire after two buckets without a new one.

Per device, a `connectivity` binary sensor (Emporia's own view, as of the last device list)
and a device entry: Emporia's gid as identifier, model, firmware, `via_device` for a plug
or charger on a panel's circuit.

Ids come from Emporia (device gid, channel number), never from names: a rename in
vuegraf.json renames the entity and keeps its history. Configs are published when they
change, again on every connect and whenever Home Assistant says `online` on its status
topic. A channel or device that Emporia no longer lists gets an empty retained config
(Home Assistant then removes the entity); so do the entities of an account taken out of
vuegraf.json, once the device lists of the accounts still configured were read and none
lists their device: an account that was only renamed keeps its entities (an empty config
would make Home Assistant delete them and their device, with the user's settings, and
create new ones). What was announced is kept in the state directory, so this also works
across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from vuegraf import __version__
from vuegraf.config import HomeAssistantConfig
from vuegraf.energy import ChannelId, EnergyLedger
from vuegraf.model import Point, Scale, Unit

logger = logging.getLogger(__name__)

Message = tuple[str, str]  # (topic, payload), published retained
STATE_LEVEL = "homeassistant"
MANUFACTURER = "Emporia"
FILE_NAME = "homeassistant"
#: The power sensor shows unavailable after this many update intervals without a new minute.
EXPIRE_INTERVALS = 5
MINIMUM_EXPIRE_SECONDS = 300
#: A channel that delivered a minute this recently (behind the newest minute seen) is never
#: taken for gone, whatever the device list says: Emporia's list and its answers may differ.
#: The factory makes it at least two device-list reads, so one bad list removes nothing.
STILL_THERE = timedelta(minutes=15)
#: Fed-back energy that makes a channel get its exported sensor without Emporia saying it can
#: run backwards (1 Wh): a clamp's noise of a fraction of a watt is not a solar panel.
EXPORT_SEEN_JOULES = 3600.0
MAINS = "1,2,3"
#: Channels Emporia computes for a panel (no circuit of their own).
COMPUTED = frozenset({"Balance", "TotalUsage", "MainsFromGrid", "MainsToGrid"})
_OBJECT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_ON, _OFF = "ON", "OFF"


class DeviceFacts(Protocol):
    """What Home Assistant is told about an Emporia device (the catalogue's `DeviceInfo`)."""

    name: str
    channels: dict[str, str]
    parent_gid: int | None
    connected: bool | None
    model: str
    firmware: str

    def can_export(self, channel_num: str) -> bool: ...


#: (account name, its devices by gid as last read; empty: not read yet)
Directory = Callable[[], Iterable[tuple[str, Mapping[int, DeviceFacts]]]]


def object_part(text: str) -> str:
    """`text` as Home Assistant accepts it in a discovery topic's node and object ids."""
    return _OBJECT_UNSAFE.sub("_", text)


def device_identifier(gid: int) -> str:
    return f"emporia_{gid}"


@dataclass
class _Channel:
    """What was last seen of one channel (guarded by the publisher's lock)."""

    account: str
    device: str
    channel: str
    gid: int
    num: str
    watts: float | None = None
    minute: datetime | None = None  # of `watts`
    # Amps and volts (an account's ampsVolts): the newest bucket's, and its length.
    amps: float | None = None
    volts: float | None = None
    electrical: datetime | None = None  # start of the bucket of `amps` and `volts`
    electrical_secs: int = 0


@dataclass(frozen=True)
class _Announced:
    """One published discovery config, as kept in the state file."""

    account: str
    gid: int
    channel: str | None  # None: the device's connectivity sensor


class HomeAssistant:
    """Builds discovery configs and states; thread-safe (the collector writes, paho's thread
    asks for everything again on connect)."""

    def __init__(
        self,
        cfg: HomeAssistantConfig,
        *,
        topic_prefix: str,
        availability_topic: str,
        ledger: EnergyLedger,
        directory: Directory,
        accounts: Collection[str],
        owned: Collection[str] | None = None,
        update_interval_secs: int = 60,
        state_path: Path | None = None,
        gone_after: timedelta = STILL_THERE,
    ) -> None:
        """`accounts`: every account of the config; `owned`: those this process collects
        (a shard's), None for all. Entities of an account no longer configured are removed;
        those of an account another replica collects are left to it."""
        self.cfg = cfg
        self.topic_prefix = topic_prefix
        self.availability_topic = availability_topic
        self.ledger = ledger
        self.directory = directory
        self.accounts = frozenset(accounts)
        self.owned = self.accounts if owned is None else frozenset(owned)
        self.expire_after = max(MINIMUM_EXPIRE_SECONDS, EXPIRE_INTERVALS * update_interval_secs)
        self.state_path = state_path
        self.gone_after = gone_after
        self._lock = threading.Lock()
        self._channels: dict[ChannelId, _Channel] = {}
        self._configs: dict[str, str] = {}  # config topic -> payload published this run
        self._device_states: dict[int, str] = {}  # gid -> ON/OFF published this run
        self._announced: dict[str, _Announced] = self._load()
        self._owners: dict[int, str] = {}  # gid -> the account that announces it
        self._newest: datetime | None = None  # the newest minute seen in this run
        self._warned_shared: set[int] = set()
        self._saved_text: str | None = None
        self._forget_unowned()

    @property
    def status_topic(self) -> str:
        return self.cfg.status_topic

    # -- what to publish ----------------------------------------------------------------

    def messages(self, points: Sequence[Point]) -> list[Message]:
        """The messages one live batch calls for: new or changed configs, the states of the
        channels in it, device connectivity, and removals of what Emporia no longer lists."""
        with self._lock:
            touched: dict[ChannelId, _Channel] = {}
            for point in points:
                if point.scale is not Scale.MINUTE and point.unit is Unit.WATTS:
                    continue
                if point.device_gid is None:
                    continue
                if point.channel_num is None or not self._owns_gid(point):
                    continue
                key = ChannelId(point.device_gid, point.channel_num)
                chan = self._channels.get(key)
                if chan is None:
                    chan = self._channels[key] = _Channel(
                        point.account, point.device, point.channel, key.device_gid or 0, key.channel
                    )
                chan.account, chan.device, chan.channel = point.account, point.device, point.channel
                touched[key] = chan
                if point.unit is not Unit.WATTS:
                    _electrical(chan, point)
                    continue
                if chan.minute is None or point.time >= chan.minute:
                    chan.watts, chan.minute = point.watts, point.time
                if self._newest is None or point.time > self._newest:
                    self._newest = point.time
            devices, listed = self._devices()
            out: list[Message] = []
            for key, chan in _parents_first(touched, devices):
                out += self._configs_for(key, chan, devices, only_changed=True)
            out += [self._state(key, chan) for key, chan in touched.items()]
            out += self._device_messages(devices, {c.gid for c in touched.values()})
            out += self._removals(devices, listed)
            self._save_if_changed()
            return out

    def announcement(self) -> list[Message]:
        """Every config and state known in this run, for a (re)connect or a Home Assistant
        that just started: a broker without persistence has lost the retained ones."""
        with self._lock:
            devices, _listed = self._devices()
            out: list[Message] = []
            for key, chan in _parents_first(self._channels, devices):
                out += self._configs_for(key, chan, devices, only_changed=False)
            out += [self._state(key, chan) for key, chan in self._channels.items()]
            self._device_states.clear()
            out += self._device_messages(devices, {c.gid for c in self._channels.values()})
            self._save_if_changed()
            return out

    # -- configs --------------------------------------------------------------------------

    def _configs_for(
        self,
        key: ChannelId,
        chan: _Channel,
        devices: Mapping[int, tuple[str, DeviceFacts]],
        only_changed: bool,
    ) -> list[Message]:
        out: list[Message] = []
        facts = devices.get(chan.gid, (chan.account, None))[1]
        # (topic, config, channel: None for the device's connectivity sensor)
        configs: list[tuple[str, dict[str, Any], str | None]] = [
            (topic, payload, chan.num) for topic, payload in self._channel_configs(key, chan, facts)
        ]
        if facts is not None:
            configs.append((*self._connectivity_config(chan, facts), None))
        for topic, payload, channel in configs:
            text = json.dumps(payload, sort_keys=True)
            if only_changed and self._configs.get(topic) == text:
                continue
            self._configs[topic] = text
            self._announced[topic] = _Announced(chan.account, chan.gid, channel)
            out.append((topic, text))
        return out

    def _channel_configs(
        self, key: ChannelId, chan: _Channel, facts: DeviceFacts | None
    ) -> list[tuple[str, dict[str, Any]]]:
        label = _label(chan)
        node = f"vuegraf_{chan.gid}"
        obj = object_part(chan.num)
        base: dict[str, Any] = {
            "state_topic": self.state_topic(chan.gid, chan.num),
            "availability_topic": self.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": self._device_block(chan, facts),
            "origin": {"name": "vuegraf", "sw_version": __version__},
        }
        configs: list[tuple[str, dict[str, Any]]] = [
            (
                self._config_topic("sensor", node, f"{obj}_power"),
                {
                    **base,
                    "name": _named(label, "power"),
                    "unique_id": f"{node}_{obj}_power",
                    "device_class": "power",
                    "state_class": "measurement",
                    "unit_of_measurement": "W",
                    "value_template": "{{ value_json.power }}",
                    "expire_after": self.expire_after,
                    "suggested_display_precision": 0,
                },
            ),
            (
                self._config_topic("sensor", node, f"{obj}_energy"),
                {
                    **base,
                    "name": _named(label, "energy"),
                    "unique_id": f"{node}_{obj}_energy",
                    "device_class": "energy",
                    "state_class": "total_increasing",
                    "unit_of_measurement": "kWh",
                    "value_template": "{{ value_json.energy }}",
                    "suggested_display_precision": 3,
                },
            ),
        ]
        if chan.electrical is not None:
            # Amps and volts come once a bucket (15 min or 1 h): they expire after two.
            expire = max(self.expire_after, 2 * chan.electrical_secs)
            for what, unit in (("current", "A"), ("voltage", "V")):  # what: the device class
                configs.append(
                    (
                        self._config_topic("sensor", node, f"{obj}_{what}"),
                        {
                            **base,
                            "name": _named(label, what),
                            "unique_id": f"{node}_{obj}_{what}",
                            "device_class": what,
                            "state_class": "measurement",
                            "unit_of_measurement": unit,
                            "value_template": f"{{{{ value_json.{what} }}}}",
                            "expire_after": expire,
                            "suggested_display_precision": 1,
                        },
                    )
                )
        exported_topic = self._config_topic("sensor", node, f"{obj}_energy_exported")
        totals = self.ledger.totals(key)
        if (
            exported_topic in self._announced
            or (facts is not None and facts.can_export(chan.num))
            or (totals is not None and totals.exported >= EXPORT_SEEN_JOULES)
        ):
            configs.append(
                (
                    exported_topic,
                    {
                        **base,
                        "name": _named(label, "energy exported"),
                        "unique_id": f"{node}_{obj}_energy_exported",
                        "device_class": "energy",
                        "state_class": "total_increasing",
                        "unit_of_measurement": "kWh",
                        "value_template": "{{ value_json.energy_exported }}",
                        "suggested_display_precision": 3,
                    },
                )
            )
        return configs

    def _connectivity_config(
        self, chan: _Channel, facts: DeviceFacts
    ) -> tuple[str, dict[str, Any]]:
        node = f"vuegraf_{chan.gid}"
        return self._config_topic("binary_sensor", node, "connected"), {
            "name": "Connection",
            "unique_id": f"{node}_connected",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": self.connectivity_topic(chan.gid),
            "availability_topic": self.availability_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "payload_on": _ON,
            "payload_off": _OFF,
            "device": self._device_block(chan, facts),
            "origin": {"name": "vuegraf", "sw_version": __version__},
        }

    def _device_block(self, chan: _Channel, facts: DeviceFacts | None) -> dict[str, Any]:
        block: dict[str, Any] = {
            "identifiers": [device_identifier(chan.gid)],
            "name": chan.device,
            "manufacturer": MANUFACTURER,
        }
        if facts is not None:
            if facts.model:
                block["model"] = facts.model
            if facts.firmware:
                block["sw_version"] = facts.firmware
            if facts.parent_gid:
                block["via_device"] = device_identifier(facts.parent_gid)
        return block

    def _config_topic(self, component: str, node: str, obj: str) -> str:
        return f"{self.cfg.discovery_prefix}/{component}/{node}/{obj}/config"

    def state_topic(self, gid: int, channel_num: str) -> str:
        return f"{self.topic_prefix}/{STATE_LEVEL}/{gid}/{object_part(channel_num)}"

    def connectivity_topic(self, gid: int) -> str:
        return f"{self.topic_prefix}/{STATE_LEVEL}/{gid}/connected"

    # -- states ---------------------------------------------------------------------------

    def _state(self, key: ChannelId, chan: _Channel) -> Message:
        totals = self.ledger.totals(key)
        state: dict[str, Any] = {
            "power": None if chan.watts is None else round(chan.watts, 3),
            "energy": round(totals.imported_kwh, 6) if totals is not None else 0.0,
            "energy_exported": round(totals.exported_kwh, 6) if totals is not None else 0.0,
            "time": "" if chan.minute is None else chan.minute.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if chan.electrical is not None:
            state["current"] = None if chan.amps is None else round(chan.amps, 3)
            state["voltage"] = None if chan.volts is None else round(chan.volts, 2)
        return self.state_topic(chan.gid, chan.num), json.dumps(state)

    def _device_messages(
        self, devices: Mapping[int, tuple[str, DeviceFacts]], gids: Iterable[int]
    ) -> list[Message]:
        out: list[Message] = []
        for gid in sorted(set(gids)):
            facts = devices.get(gid, ("", None))[1]
            if facts is None or facts.connected is None:
                continue
            value = _ON if facts.connected else _OFF
            if self._device_states.get(gid) != value:
                self._device_states[gid] = value
                out.append((self.connectivity_topic(gid), value))
        return out

    # -- removals -------------------------------------------------------------------------

    def _devices(self) -> tuple[dict[int, tuple[str, DeviceFacts]], dict[str, set[int]]]:
        """Every device of the accounts read so far, by gid, with its account (the first that
        lists it); and the gids each account lists, for accounts whose list is not empty."""
        found: dict[int, tuple[str, DeviceFacts]] = {}
        listed: dict[str, set[int]] = {}
        for account, devices in self.directory():
            for gid, facts in devices.items():
                found.setdefault(gid, (account, facts))
            if devices:
                listed[account] = set(devices)
        return found, listed

    def _removals(
        self, devices: Mapping[int, tuple[str, DeviceFacts]], listed: Mapping[str, set[int]]
    ) -> list[Message]:
        """Empty configs for what Emporia no longer lists, for accounts whose device list was
        read and is not empty (an empty list is more likely Emporia's trouble than a house
        without devices, and removing every entity would lose the user's settings).

        What an account no longer configured announced is judged by the account that lists
        its device now (a renamed account), else removed once every configured account's
        list was read."""
        every_list_read = self.accounts <= set(listed)
        lately = self._seen_lately()
        gone: list[tuple[str, _Announced]] = []
        unconfigured: list[tuple[str, _Announced]] = []
        for topic, what in self._announced.items():
            account = what.account
            if account not in self.accounts:
                if what.gid in devices:
                    account = devices[what.gid][0]
                elif every_list_read:
                    unconfigured.append((topic, what))
                    continue
                else:
                    continue
            if account not in listed:
                continue
            facts = devices.get(what.gid, ("", None))[1]
            if what.gid in listed[account] and facts is not None:
                if what.channel is None or what.channel in facts.channels:
                    continue
                if what.channel in COMPUTED or what.channel == MAINS:
                    continue  # a listed device has them, whether or not the list says so
            if (what.gid, what.channel) in lately:
                continue
            gone.append((topic, what))
        return self._remove(gone, "is gone from Emporia's list") + self._remove(
            unconfigured, "is no longer in the config"
        )

    def _seen_lately(self) -> set[tuple[int, str | None]]:
        """(gid, channel) of every channel that delivered a minute lately, and (gid, None) of
        its device: neither is taken for gone."""
        if self._newest is None:
            return set()
        since = self._newest - self.gone_after
        lately: set[tuple[int, str | None]] = set()
        for chan in self._channels.values():
            if chan.minute is not None and chan.minute >= since:
                lately |= {(chan.gid, chan.num), (chan.gid, None)}
        return lately

    def _remove(self, gone: Sequence[tuple[str, _Announced]], why: str) -> list[Message]:
        """Empty retained configs for `gone`, and for each channel or device whose last
        config goes, its state too; one log line per channel or device."""
        out: list[Message] = []
        for topic, _what in gone:
            del self._announced[topic]
            self._configs.pop(topic, None)
            out.append((topic, ""))
        left = {(a.gid, a.channel) for a in self._announced.values()}
        for gid, channel, account in sorted({(w.gid, w.channel or "", w.account) for _, w in gone}):
            if (gid, channel or None) in left:
                continue
            if channel:
                self._channels.pop(ChannelId(gid, channel), None)
                out.append((self.state_topic(gid, channel), ""))
                what = f"channel {channel} of device {gid}"
            else:
                self._device_states.pop(gid, None)
                out.append((self.connectivity_topic(gid), ""))
                what = f"device {gid}"
            logger.info("Home Assistant: %s of account %s %s; its entities are removed",
                        what, account, why)
        return out

    def _forget_unowned(self) -> None:
        """At start: forget (leave alone) the entities of accounts another replica collects.
        A replica of several also leaves alone those of accounts no longer in the config:
        their devices may now be listed by an account another replica collects (a renamed
        account), and an empty config sent after that replica's would delete its entities.
        A process that collects every account removes them in `_removals`."""
        every_account = self.owned == self.accounts
        for topic, what in list(self._announced.items()):
            if what.account in self.owned:
                continue
            if what.account in self.accounts or not every_account:
                del self._announced[topic]

    def _owns_gid(self, point: Point) -> bool:
        """One account announces a device: a device two configured accounts share would
        otherwise be two sets of entities fighting over one unique_id."""
        assert point.device_gid is not None
        owner = self._owners.setdefault(point.device_gid, point.account)
        if owner == point.account:
            return True
        if point.device_gid not in self._warned_shared:
            self._warned_shared.add(point.device_gid)
            logger.warning(
                "Home Assistant: device %s is in accounts %s and %s; announced once, for %s",
                point.device_gid,
                owner,
                point.account,
                owner,
            )
        return False

    # -- the state file -------------------------------------------------------------------

    def _load(self) -> dict[str, _Announced]:
        path = self.state_path
        if path is None or not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            return {
                topic: _Announced(str(v["account"]), int(v["gid"]), v["channel"])
                for topic, v in data["announced"].items()
            }
        except (OSError, ValueError, TypeError, KeyError) as err:
            logger.warning("Home Assistant: ignoring unreadable %s: %s", path, err)
            return {}

    def _save_if_changed(self) -> None:
        path = self.state_path
        if path is None:
            return
        text = json.dumps(
            {
                "announced": {
                    topic: {"account": a.account, "gid": a.gid, "channel": a.channel}
                    for topic, a in sorted(self._announced.items())
                }
            },
            indent=1,
        )
        if text == self._saved_text:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            self._saved_text = text
        except OSError as err:
            logger.warning("Home Assistant: cannot save %s: %s", path, err)


def _parents_first(
    channels: Mapping[ChannelId, _Channel], devices: Mapping[int, tuple[str, DeviceFacts]]
) -> list[tuple[ChannelId, _Channel]]:
    """Channels of panels before those of the plugs and chargers on their circuits: Home
    Assistant links a device to its `via_device` only if that one exists already, and does
    not look again when the same config comes back."""

    def depth(gid: int) -> int:
        hops, seen = 0, {gid}
        facts = devices.get(gid, ("", None))[1]
        while facts is not None and facts.parent_gid and facts.parent_gid not in seen:
            seen.add(facts.parent_gid)
            hops += 1
            facts = devices.get(facts.parent_gid, ("", None))[1]
        return hops

    return sorted(channels.items(), key=lambda item: depth(item[1].gid))


def _electrical(chan: _Channel, point: Point) -> None:
    """Keep an amps or volts point in its channel, unless an older bucket's."""
    if chan.electrical is not None and point.time < chan.electrical:
        return
    if chan.electrical != point.time:
        chan.amps = chan.volts = None  # a new bucket: the other unit comes in a moment
    chan.electrical, chan.electrical_secs = point.time, point.scale.seconds
    if point.unit is Unit.AMPS:
        chan.amps = point.watts
    else:
        chan.volts = point.watts


def _label(chan: _Channel) -> str | None:
    """The channel's part of its entities' names (Home Assistant puts the device's name
    first): none for the mains and single-channel devices, "Circuit 4" for a circuit left
    at its default name `<device>-4`."""
    if chan.channel == chan.device:
        return None
    prefix = f"{chan.device}-"
    if chan.channel.startswith(prefix):
        rest = chan.channel[len(prefix) :]
        return f"Circuit {rest}" if rest.isdigit() else rest
    return chan.channel


def _named(label: str | None, what: str) -> str:
    return f"{label} {what}" if label else what[:1].upper() + what[1:]


def state_file(state_dir: Path | None, file_suffix: str = "") -> Path | None:
    return None if state_dir is None else state_dir / f"{FILE_NAME}{file_suffix}.json"
