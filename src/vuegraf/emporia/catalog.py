"""One account's devices as Emporia describes them, and its answers turned into points.

Device metadata is read at start and again on a timer or when a usage answer names a device
not yet known; the per-minute path costs exactly one `getDeviceListUsages` request per
account. Names come from here (`naming` decides them), so a channel is written under the
same device and channel name whether its value came live or from a chart request.

Two of Emporia's known ways of answering wrongly are met here, each logged on state change
(one line when it starts, one when it ends; the per-request detail at DEBUG):
- values answered `null` for some channels, in bursts: not written, and filled from chart
  data later by the hole filler;
- an answer for another bucket than the one asked for (for about an hour after local
  midnight the day scale has answered the previous day's total): checked by the answer's
  `instant`, not written, and `bucket_points` says so, so that the collector asks for the
  bucket again (every channel, the computed ones too, which have no chart data to fill).
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from pyemvue import PyEmVue
from pyemvue.device import VueDeviceChannel

from vuegraf.clock import Clock
from vuegraf.config import AccountConfig
from vuegraf.emporia.errors import EmporiaError
from vuegraf.emporia.session import EmporiaSession
from vuegraf.model import Point, Scale, Unit, point_from_kwh
from vuegraf.naming import MAINS, NO_CHART_CHANNELS, channel_name, device_name
from vuegraf.schedule import bucket_start, bucket_starts, point_time

logger = logging.getLogger(__name__)

# pyemvue retries getDeviceListUsages with 2-30 s sleeps whenever any channel is
# null; an offline plug would stall every cycle for a minute. One attempt: a
# missing value is logged, counted and filled later from chart data.
USAGE_ATTEMPTS = 1
# Emporia's energyUnit for each unit vuegraf asks for, and the request as a log line names it.
_ENERGY_UNITS = {
    Unit.WATTS: ("KilowattHours", "usage request"),
    Unit.AMPS: ("AmpHours", "amps request"),
    Unit.VOLTS: ("Voltage", "volts request"),
}


@dataclass
class DeviceInfo:
    """What vuegraf needs to know of one Emporia device (the twin entries merged)."""

    gid: int
    name: str
    channels: dict[str, str] = field(default_factory=dict)  # channel number -> Emporia name
    parent_gid: int | None = None
    parent_channel: str | None = None
    connected: bool | None = None  # as Emporia last said (deviceConnected), None: not told
    # What Home Assistant shows of the device (empty when Emporia does not say).
    model: str = ""
    firmware: str = ""
    manufacturer_id: str = ""
    # channel number -> Emporia's channel type ("Main", "FiftyAmp", "FiftyAmpBidirectional")
    channel_types: dict[str, str] = field(default_factory=dict)

    def can_export(self, channel_num: str) -> bool:
        """Whether Emporia says the channel can run backwards: a bidirectional circuit, or the
        mains of a panel that has one (solar or a battery behind it feeds the grid)."""
        kinds = self.channel_types
        if channel_num == MAINS:
            return any("bidirectional" in kind.lower() for kind in kinds.values())
        return "bidirectional" in kinds.get(channel_num, "").lower()


@dataclass(frozen=True)
class UsageReading:
    """One channel's usage for one bucket, before naming."""

    device_gid: int
    channel_num: str
    emporia_name: str
    kwh: float | None


def merge_devices(vue_devices: Iterable[Any]) -> dict[int, DeviceInfo]:
    """Fold pyemvue's device list (a Vue appears twice, once nameless) into one entry per gid."""
    devices: dict[int, DeviceInfo] = {}
    for dev in vue_devices:
        gid = int(dev.device_gid)
        info = devices.get(gid)
        if info is None:
            info = devices[gid] = DeviceInfo(gid=gid, name="")
        name = (getattr(dev, "device_name", "") or "").strip()
        if name and not info.name:
            info.name = name
        for attr, text in (
            ("model", getattr(dev, "model", "")),
            ("firmware", getattr(dev, "firmware", "")),
            ("manufacturer_id", getattr(dev, "manufacturer_id", "")),
        ):
            if isinstance(text, str) and text.strip() and not getattr(info, attr):
                setattr(info, attr, text.strip())
        for chan in getattr(dev, "channels", None) or []:
            info.channels.setdefault(str(chan.channel_num), chan.name or "")
            kind = getattr(chan, "type", "")
            if isinstance(kind, str) and kind:
                info.channel_types.setdefault(str(chan.channel_num), kind)
        if isinstance(getattr(dev, "connected", None), bool) and (info.connected is None or name):
            info.connected = dev.connected
        if getattr(dev, "parent_device_gid", None):
            info.parent_gid = int(dev.parent_device_gid)
            info.parent_channel = str(dev.parent_channel_num or "") or None
    for info in devices.values():
        info.name = device_name(info.name, info.gid)
    return devices


def flatten_usage(usage_devices: Iterable[Any]) -> list[UsageReading]:
    """Walk pyemvue's usage answer, nested devices included, one reading per (gid, channel)."""
    seen: set[tuple[int, str]] = set()
    readings: list[UsageReading] = []
    stack = list(usage_devices)
    while stack:
        dev = stack.pop(0)
        for num, chan in (getattr(dev, "channels", None) or {}).items():
            gid = int(chan.device_gid or dev.device_gid)
            key = (gid, str(num))
            if key not in seen:
                seen.add(key)
                kwh = None if chan.usage is None else float(chan.usage)
                readings.append(UsageReading(gid, str(num), chan.name or "", kwh))
            stack.extend((getattr(chan, "nested_devices", None) or {}).values())
    return readings


class DeviceCatalog:
    """One account's devices and channels, and its usage and chart answers as named points.

    It asks Emporia only through `session` (which counts, rate-limits and logs in), and is
    given the few settings it uses: how often metadata is re-read, whether Emporia's channel
    names are used, and the zone whose midnight starts a day bucket.
    """

    def __init__(
        self,
        account: AccountConfig,
        session: EmporiaSession,
        clock: Clock,
        *,
        refresh_secs: float,
        emporia_names: bool,
        zone: tzinfo,
    ) -> None:
        self.account = account
        self.session = session
        self.clock = clock
        self.refresh_every = timedelta(seconds=refresh_secs)
        self.emporia_names = emporia_names
        self.zone = zone
        self.devices: dict[int, DeviceInfo] = {}
        self._devices_read_at: datetime | None = None
        self._refresh_wanted = True
        # Configured device names that matched no Emporia device, with Emporia's names then.
        self._unmatched: dict[str, tuple[str, ...]] = {}
        self.missing_values = 0
        # Channel names whose live values Emporia answers null now, per scale (logged when
        # the set changes), and the scales whose last answer was for another bucket.
        self._missing: dict[Scale, frozenset[str]] = {}
        self._misdated: set[Scale] = set()

    @property
    def name(self) -> str:
        return self.account.name

    def refresh_devices_if_due(self) -> None:
        """Re-read device metadata at start, on the refresh timer, or after an unknown device."""
        now = self.clock.now()
        due = (
            self._refresh_wanted
            or self._devices_read_at is None
            or now - self._devices_read_at >= self.refresh_every
        )
        if due:
            self.refresh_devices()

    def refresh_devices(self) -> None:
        vue_devices = self.session.call("device list request", lambda vue: vue.get_devices())
        self.devices = merge_devices(vue_devices)
        self._devices_read_at = self.clock.now()
        self._refresh_wanted = False
        logger.info(
            "Account %s: %d devices, %d channels",
            self.name,
            len(self.devices),
            sum(len(d.channels) for d in self.devices.values()),
        )
        self._warn_unmatched_device_names()

    def _warn_unmatched_device_names(self) -> None:
        """A configured `devices[].name` that names no Emporia device leaves its circuits
        named `<device>-<n>`: say so, with the names Emporia has. Once per name, again only
        when Emporia's names have changed since (not at every refresh)."""
        known = tuple(sorted({dev.name for dev in self.devices.values()}))
        unmatched: dict[str, tuple[str, ...]] = {}
        for i, dev in enumerate(self.account.devices):
            if dev.name in known or dev.name in unmatched:
                continue
            unmatched[dev.name] = known
            if self._unmatched.get(dev.name) == known:
                continue
            # Only a near-identical name is suggested: "Right Panel" is no slip of "Main Panel".
            folded = {name.casefold(): name for name in known}
            close = difflib.get_close_matches(dev.name.casefold(), folded, n=1, cutoff=0.85)
            logger.warning(
                "Account %s: devices[%d].name %s matches no Emporia device, so its channel "
                "names are not used%s; Emporia's devices: %s",
                self.name,
                i,
                _quoted(dev.name),
                f" (did you mean {_quoted(folded[close[0]])}?)" if close else "",
                ", ".join(map(_quoted, known)) or "none",
            )
        self._unmatched = unmatched

    def usage(
        self, scale: Scale, instant: datetime, unit: Unit = Unit.WATTS
    ) -> list[UsageReading]:
        """One getDeviceListUsages request for every device of the account; `unit` other
        than WATTS asks for Emporia's amp-hours or volts instead of kWh (the readings'
        `kwh` then holds those)."""
        return self.usage_answer(scale, instant, unit)[0]

    def usage_answer(
        self, scale: Scale, instant: datetime, unit: Unit = Unit.WATTS
    ) -> tuple[list[UsageReading], datetime | None]:
        """One getDeviceListUsages request for every device of the account: its readings and
        the instant Emporia says they are for (None when it says none)."""
        self.refresh_devices_if_due()
        gids = sorted(self.devices)
        if not gids:
            return [], None
        energy_unit, what = _ENERGY_UNITS[unit]

        def ask(vue: PyEmVue) -> Any:
            answer = vue.get_device_list_usage(
                deviceGids=gids,
                instant=instant,
                scale=scale.value,
                unit=energy_unit,
                max_retry_attempts=USAGE_ATTEMPTS,
            )
            if not answer:
                # pyemvue answers {} instead of raising when Emporia returns an error status.
                # Raised inside `call`: a failure like any other, so repeated ones re-login.
                status = self.session.last_status
                said = f"HTTP {status}" if status is not None and status != 200 else "an answer"
                raise EmporiaError(f"Emporia sent {said} with no {unit.value} data")
            return answer

        answer = self.session.call(what, ask)
        answered = next(
            (dev.timestamp for dev in answer.values() if isinstance(dev.timestamp, datetime)),
            None,
        )
        if answered is not None and answered.tzinfo is None:
            answered = answered.replace(tzinfo=UTC)
        return flatten_usage(answer.values()), answered

    def electrical_points(
        self, scale: Scale, bucket_start: datetime, stamp: datetime, unit: Unit
    ) -> list[Point]:
        """Every channel's mean current (`Unit.AMPS`) or voltage (`Unit.VOLTS`) for the
        bucket at `bucket_start`, as points stamped `stamp`: one getDeviceListUsages request
        (AmpHours or Voltage), so that a failure of one unit costs the other nothing.

        Amps are the bucket's amp-hours over its length in hours; volts are Emporia's value
        for the bucket as it is. A channel without a value in the answer is left out (not
        filled later: only live buckets are collected)."""
        factor = 3600.0 / scale.seconds if unit is Unit.AMPS else 1.0
        points: list[Point] = []
        for reading in self.usage(scale, bucket_start, unit):
            if reading.kwh is None:
                continue
            dev_name, chan = self._reading_name(reading)
            ids = (reading.device_gid, reading.channel_num)
            points.append(
                Point(
                    self.name, dev_name, chan, scale, stamp, reading.kwh * factor, *ids,
                    unit=unit,
                )
            )
        return points

    def _reading_name(self, reading: UsageReading) -> tuple[str, str]:
        """(device name, channel name) of a usage answer's reading, as `points` names it."""
        dev = self.devices.get(reading.device_gid)
        dev_name = dev.name if dev is not None else device_name(None, reading.device_gid)
        chan = channel_name(
            self.account, dev_name, reading.channel_num, reading.emporia_name, self.emporia_names
        )
        return dev_name, chan

    def points(self, scale: Scale, instant: datetime, stamp: datetime) -> list[Point]:
        """Every channel's usage for the bucket holding `instant`, as points stamped `stamp`;
        none when Emporia's answer is for another bucket (`bucket_points` tells that apart)."""
        return self.bucket_points(scale, instant, stamp) or []

    def bucket_points(
        self, scale: Scale, instant: datetime, stamp: datetime, live: bool = True
    ) -> list[Point] | None:
        """Every channel's usage for the bucket holding `instant`, as points stamped `stamp`.

        None when Emporia's answer says it is for another bucket: nothing of it is written,
        and the caller asks for the bucket again (its computed channels have no chart data
        the hole filler could bring them from). `live=False` for a past bucket asked for a
        hole: its nulls and dates are not the live answers' news, so they are not logged."""
        readings, answered = self.usage_answer(scale, instant)
        if not live:
            wanted = bucket_start(scale, instant, self.zone)
            if answered is not None and bucket_start(scale, answered, self.zone) != wanted:
                return None
        elif not self._answer_is_for(scale, instant, answered):
            return None
        points: list[Point] = []
        missing: list[str] = []
        for reading in readings:
            if reading.device_gid not in self.devices:
                self._refresh_wanted = True
            dev_name, chan = self._reading_name(reading)
            if reading.kwh is None:
                missing.append(chan)
                continue
            ids = (reading.device_gid, reading.channel_num)
            points.append(point_from_kwh(self.name, dev_name, chan, scale, stamp, reading.kwh, ids))
        if live:
            self._log_missing(scale, instant, missing)
        if self._refresh_wanted:
            logger.info("Account %s: unknown device in usage answer; re-reading devices", self.name)
        return points

    def _answer_is_for(self, scale: Scale, asked: datetime, answered: datetime | None) -> bool:
        """Whether an answer Emporia says is for `answered` belongs to the bucket holding
        `asked`; logged when that stops being so and when it is so again."""
        wanted = bucket_start(scale, asked, self.zone)
        got = bucket_start(scale, answered, self.zone) if answered is not None else wanted
        if got == wanted:
            if scale in self._misdated:
                self._misdated.discard(scale)
                logger.info(
                    "Account %s: Emporia's %s answers are for the bucket asked for again",
                    self.name,
                    scale.value,
                )
            return True
        level = logging.DEBUG if scale in self._misdated else logging.WARNING
        self._misdated.add(scale)
        logger.log(
            level,
            "Account %s: Emporia answered the %s request for %s with the values of %s "
            "(Emporia's side): not written; the bucket is asked for again later",
            self.name,
            scale.value,
            wanted.astimezone(self.zone).isoformat(),
            got.astimezone(self.zone).isoformat(),
        )
        return False

    def _log_missing(self, scale: Scale, instant: datetime, missing: list[str]) -> None:
        """Channels Emporia answered null for: one line when some start missing, one when
        they come back, the rest at DEBUG. They are filled from chart data later."""
        self.missing_values += len(missing)
        now = frozenset(missing)
        before = self._missing.get(scale, frozenset())
        self._missing[scale] = now
        if missing:
            logger.debug(
                "Account %s: no %s value yet for %s at %s",
                self.name,
                scale.value,
                ", ".join(missing),
                instant.isoformat(),
            )
        started = sorted(now - before)
        ended = sorted(before - now)
        if started:
            logger.info(
                "Account %s: Emporia has no %s value yet for %s (from %s); filled from "
                "chart data once it has",
                self.name,
                scale.value,
                ", ".join(started),
                instant.isoformat(),
            )
        if ended:
            logger.info(
                "Account %s: %s values for %s are answered again",
                self.name,
                scale.value,
                ", ".join(ended),
            )

    def device_states(self) -> list[tuple[str, str, bool]]:
        """(account, device, connected) from the metadata already read: never a request."""
        return [
            (self.name, dev.name, dev.connected)
            for dev in self.devices.values()
            if dev.connected is not None
        ]

    def chart_channels(self) -> list[tuple[int, str]]:
        """(device gid, channel number) of every channel Emporia serves chart history for,
        from the metadata already read (never a request: callers refresh first)."""
        return [
            (dev.gid, num)
            for dev in self.devices.values()
            for num in dev.channels
            if num not in NO_CHART_CHANNELS
        ]

    def series_name(self, device_gid: int, channel_num: str) -> tuple[str, str]:
        """(device name, channel name) as written for this channel."""
        dev = self.devices.get(device_gid)
        dev_name = dev.name if dev else device_name(None, device_gid)
        emporia_name = dev.channels.get(channel_num) if dev else None
        chan = channel_name(
            self.account,
            dev_name,
            channel_num,
            emporia_name,
            self.emporia_names,
        )
        return dev_name, chan

    def chart(
        self, device_gid: int, channel_num: str, scale: Scale, first: datetime, last: datetime
    ) -> list[tuple[datetime, float | None]]:
        """getChartUsage for buckets `first`..`last` (inclusive): (bucket start, kWh or None)."""
        channel = VueDeviceChannel(gid=device_gid, channelNum=channel_num)
        usage, instant = self.session.call(
            "chart request",
            lambda vue: vue.get_chart_usage(channel, first, last, scale=scale.value),
        )
        if not usage:
            return []
        start = instant if instant is not None else first
        starts = bucket_starts(scale, start, len(usage), self.zone)
        return [
            (t, None if kwh is None else float(kwh)) for t, kwh in zip(starts, usage, strict=True)
        ]

    def chart_values_to_points(
        self,
        device_gid: int,
        channel_num: str,
        scale: Scale,
        values: Iterable[tuple[datetime, float | None]],
    ) -> list[Point]:
        """Named, stamped points for the buckets of a chart answer that have a value."""
        dev_name, chan = self.series_name(device_gid, channel_num)
        zone = self.zone
        ids = (device_gid, channel_num)
        return [
            point_from_kwh(
                self.name, dev_name, chan, scale, point_time(scale, start, zone), kwh, ids
            )
            for start, kwh in values
            if kwh is not None
        ]


def _quoted(name: str) -> str:
    """A device name in double quotes, as it would be written in vuegraf.json."""
    return json.dumps(name, ensure_ascii=False)
