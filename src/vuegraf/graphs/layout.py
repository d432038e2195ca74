"""Which series belong to which device: the page's and the SVG files' table of contents.

The store knows only series names (and device names when `addStationField` is on), so the
grouping comes from Emporia's device list as the daemon read it (`from_catalogs`). The daemon
keeps it in `<stateDir>/layout.json` for `vuegraf-graph`, which runs without logging in; with
no such file, series are grouped by their station name, or all under their account.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vuegraf.emporia.catalog import DeviceCatalog
from vuegraf.graphs.read import SeriesKey
from vuegraf.naming import COMPUTED_CHANNELS, MAINS

logger = logging.getLogger(__name__)

LAYOUT_FILE = "layout.json"

MAINS_KIND = "mains"
CIRCUIT_KIND = "circuit"
COMPUTED_KIND = "computed"


@dataclass(frozen=True)
class ChannelEntry:
    num: str  # Emporia's channel number ("1,2,3", "4", "Balance"), "" when not known
    name: str  # the series name (tag device_name)
    kind: str  # mains, circuit or computed


@dataclass(frozen=True)
class DeviceEntry:
    id: str  # Emporia's device gid as text; "station:<name>" or "account" when not known
    name: str
    station: str  # the station_name tag of its series ("" unless addStationField)
    parent: str | None  # the id of the panel it hangs off
    channels: tuple[ChannelEntry, ...]

    def keys(self) -> list[SeriesKey]:
        return [(self.station, c.name) for c in self.channels]

    def channel(self, name: str) -> ChannelEntry | None:
        return next((c for c in self.channels if c.name == name), None)


@dataclass(frozen=True)
class AccountEntry:
    name: str
    devices: tuple[DeviceEntry, ...]

    def device(self, device_id: str) -> DeviceEntry | None:
        return next((d for d in self.devices if d.id == device_id), None)


Layout = tuple[AccountEntry, ...]


def find(layout: Layout, account: str) -> AccountEntry | None:
    return next((a for a in layout if a.name == account), None)


def _num_order(num: str) -> tuple[int, int, str]:
    if num == MAINS:
        return (0, 0, num)
    if num.isdigit():
        return (1, int(num), num)
    return (2, 0, num)


def from_catalogs(catalogs: Iterable[DeviceCatalog], add_station: bool) -> Layout:
    """Every device of every account with its channels: mains first, circuits by number,
    then the channels Emporia computes (Balance for a panel, grid in and out for one that
    can feed the grid). Parents come before the devices on their circuits."""
    accounts: list[AccountEntry] = []
    for catalog in catalogs:
        devices: list[DeviceEntry] = []
        for info in catalog.devices.values():
            nums = {MAINS, *info.channels}
            if len(nums) > 1:
                nums.add("Balance")
                if info.can_export(MAINS):
                    nums |= {"MainsFromGrid", "MainsToGrid"}
            channels = []
            for num in sorted(nums, key=_num_order):
                dev_name, chan = catalog.series_name(info.gid, num)
                kind = (
                    MAINS_KIND
                    if num == MAINS
                    else COMPUTED_KIND
                    if num in COMPUTED_CHANNELS
                    else CIRCUIT_KIND
                )
                channels.append(ChannelEntry(num, chan, kind))
            devices.append(
                DeviceEntry(
                    id=str(info.gid),
                    name=info.name,
                    station=info.name if add_station else "",
                    parent=None if info.parent_gid is None else str(info.parent_gid),
                    channels=tuple(channels),
                )
            )
        accounts.append(AccountEntry(catalog.name, tuple(_parents_first(devices))))
    return tuple(accounts)


def with_fallback(live: Layout, saved: Layout | None) -> Layout:
    """`live`, with an account whose device list is not read yet (Emporia away at start or
    after a reload) taken from `saved`: the page and `layout.json` keep the devices the store
    holds series for."""
    if saved is None:
        return live
    kept = {a.name: a for a in saved}
    return tuple(
        account if account.devices or account.name not in kept else kept[account.name]
        for account in live
    )


def _parents_first(devices: list[DeviceEntry]) -> list[DeviceEntry]:
    ids = {d.id for d in devices}
    top = sorted((d for d in devices if d.parent not in ids), key=lambda d: d.name)
    out: list[DeviceEntry] = []
    for dev in top:
        out.append(dev)
        out.extend(sorted((d for d in devices if d.parent == dev.id), key=lambda d: d.name))
    out.extend(d for d in devices if d not in out)
    return out


def from_series(series: Mapping[str, Iterable[SeriesKey]]) -> Layout:
    """A layout from the store's series alone (account -> (station, channel) keys): one device
    per station name, or one per account when the store has none."""
    accounts = []
    for account, keys in series.items():
        by_station: dict[str, list[str]] = {}
        for station, channel in keys:
            by_station.setdefault(station, []).append(channel)
        devices = []
        for station, names in sorted(by_station.items()):
            channels = tuple(
                ChannelEntry(
                    "",
                    name,
                    MAINS_KIND
                    if station and name == station
                    else COMPUTED_KIND
                    if any(name.endswith("-" + c) for c in COMPUTED_CHANNELS)
                    else CIRCUIT_KIND,
                )
                for name in sorted(set(names), key=lambda n: (n != station, n))
            )
            device_id = f"station:{station}" if station else "account"
            devices.append(DeviceEntry(device_id, station or account, station, None, channels))
        accounts.append(AccountEntry(account, tuple(devices)))
    return tuple(accounts)


def to_json(layout: Layout) -> list[dict[str, Any]]:
    return [asdict(a) for a in layout]


def from_json(data: object) -> Layout:
    """The inverse of `to_json`; ValueError when `data` is not a layout."""
    if not isinstance(data, list):
        raise ValueError("not a list of accounts")
    try:
        return tuple(
            AccountEntry(
                str(a["name"]),
                tuple(
                    DeviceEntry(
                        str(d["id"]),
                        str(d["name"]),
                        str(d["station"]),
                        None if d.get("parent") is None else str(d["parent"]),
                        tuple(
                            ChannelEntry(str(c["num"]), str(c["name"]), str(c["kind"]))
                            for c in d["channels"]
                        ),
                    )
                    for d in a["devices"]
                ),
            )
            for a in data
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"not a layout ({err})") from None


def save(directory: Path, layout: Layout, suffix: str = "") -> None:
    """Write `layout<suffix>.json` (atomically) when it changed; a failure is logged, not
    raised: the file only spares `vuegraf-graph` a guess. `suffix`: a shard replica's own
    file (each knows only the accounts it collects)."""
    if not any(account.devices for account in layout):
        return  # nothing read yet: the file keeps what an earlier run knew
    path = Path(directory) / LAYOUT_FILE.replace(".json", f"{suffix}.json")
    text = json.dumps(to_json(layout), indent=1, ensure_ascii=False) + "\n"
    try:
        if path.exists() and path.read_text() == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        logger.warning("Cannot write %s: %s", path, err)


def load(directory: Path) -> Layout | None:
    """Every replica's layout file merged (an account once); None when there is none."""
    accounts: dict[str, AccountEntry] = {}
    found = False
    for path in sorted(Path(directory).glob("layout*.json")):
        try:
            layout = from_json(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            logger.warning("Ignoring %s: %s", path, err)
            continue
        found = True
        for account in layout:
            accounts.setdefault(account.name, account)
    return tuple(accounts.values()) if found else None
