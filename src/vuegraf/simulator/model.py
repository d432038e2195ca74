"""The simulator's scenario and its deterministic usage model (no HTTP here).

Every value is a pure function of (seed, device, channel, scale, bucket start), so tests, the
server and a re-run all agree without storing anything. A bucket's modelled kWh is closed
form — mean power x bucket length x a hashed noise factor — so an hour of per-second data
costs a few thousand cheap evaluations and never a loop over the seconds inside a bucket.

Semantics chosen (Emporia's live view, kept simple; docs/ARCHITECTURE.md, "The Emporia API"):

- A circuit's usage EXCLUDES the devices nested on it, at every scale and on both endpoints:
  circuit "5" (Office) of Main Panel is the office minus the Office Plug. (Real Emporia's chart
  endpoint reports such a circuit raw; the simulator does not model that difference.)
- Mains "1,2,3" = circuits + devices nested on the panel + an unmetered remainder, all for the
  same bucket. Solar circuits are negative, so a bidirectional panel's mains can go negative.
- "Balance" = mains - circuits - nested devices, i.e. the unmetered remainder.
- "MainsFromGrid" = what the panel's circuits, nested devices and remainder draw, and
  "MainsToGrid" = what its generating circuits feed (negative, like the mains), as a gross
  meter counts them: the two add up to the mains, and, unlike max(mains, 0) of each bucket,
  an hour of them is the sum of its minutes.
- A device's gaps (``gapRate``) null every channel of that device for the bucket, per scale,
  independently; the energy still flows, so the parent's mains still counts it.
- A device with ``installed_at`` (tests set it; scenario files do not) nulls its own channels
  in every bucket that starts before that instant: Emporia has nothing from before a device
  was installed. A parent's mains is not changed.
- The scales agree as Emporia's do, top down: a local day is modelled from the profile's daily
  mean; the day is cut where it meets UTC hours (24 pieces, 23 or 25 on DST days, two half
  hours at the ends in a +05:30 zone) and each piece gets the day's value in proportion to its
  own modelled value; a 1H bucket is the sum of its pieces (of one or two days); a minute gets
  its piece's value in proportion to its own modelled value, and 15MIN is its 15 minutes. So
  the minutes of an hour add up to the hour and the hours of a day to the day, for every
  channel, within the nine significant digits served. This holds for the leaves (circuits and
  a panel's remainder); mains, Balance and the grid split are sums of leaves. Pieces and their
  minutes' weights are cached, so a minute costs about 1.5 modelled buckets, an hour or a day
  about one (bench/consistency.py).
- A bucket is always worked out for the whole device and its served values are kept (up to
  `_VALUES_LIMIT` buckets per scale): vuegraf asks for a device's channels one chart request
  after another over the same window, and tests then compare against the same buckets, so
  every channel after the first, and every second look, costs a dictionary copy.
- 1S is modelled directly and is not a share of its minute; 1W/1MON/1Y are sums of the days.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SCALES = ("1S", "1MIN", "15MIN", "1H", "1D", "1W", "1MON", "1Y")
FIXED_SECONDS = {"1S": 1, "1MIN": 60, "15MIN": 900, "1H": 3600}
MAINS = "1,2,3"
COMPUTED = ("Balance", "MainsFromGrid", "MainsToGrid")
PROFILES = frozenset(
    {
        "constant",
        "zero",
        "fridge",
        "evening",
        "morning_evening",
        "daytime",
        "night",
        "hvac",
        "solar",
        "ev",
    }
)
KINDS = frozenset({"vue", "outlet", "charger"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCALE_INDEX = {s: i for i, s in enumerate(SCALES)}
# Relative noise amplitude per scale: short buckets jitter more, as averaging would predict.
_NOISE_AMP = {
    "1S": 0.35,
    "1MIN": 0.22,
    "15MIN": 0.12,
    "1H": 0.08,
    "1D": 0.04,
    "1W": 0.0,
    "1MON": 0.0,
    "1Y": 0.0,
}
_PROFILE_NOISE = {"constant": 0.3, "fridge": 1.0, "solar": 0.8}
_EV_SESSION_PROBABILITY = 0.45
_EV_NOISE = 0.02
_REMAINDER_NOISE = 0.3
_MAX_NOISE = 2.5  # x the largest amplitude (0.35) stays below 1
_KWH_PER_WATT_SECOND = 1.0 / 3_600_000.0
_PACK = struct.Struct(">5q")
_UNPACK = struct.Struct(">32H")
_U16 = 65536.0
_TWO_U = 2.0 / _U16  # maps a 16-bit draw onto [0, 2)
_CACHE_LIMIT = 20_000
_PARTS_LIMIT = 4_096  # device-days cut into pieces: a year of four devices' hours
_MINUTES_LIMIT = 16_384  # pieces whose minutes were added up
_PIECE_WEIGHTS_LIMIT = 96  # pieces whose minutes' weights are kept: a day of four devices
_NESTED_LIMIT = 16_384  # buckets of nested devices, whose values their parent's mains adds
# Device-buckets whose served values are kept, per scale: 7 days of minutes (40 320) or a year
# of hours (35 040) of the four-device default household, what a start-up fill and a 365-day
# import ask for, so the values of one channel's requests are still there for the next one's.
_VALUES_LIMIT = 45_000
_SALT_WEATHER = 101
_SALT_EV = 102
# Account n of a many-account simulator has device gids (n + 1) x this + the scenario's gid.
ACCOUNT_GID_STRIDE = 100_000


class ScenarioError(ValueError):
    """A scenario file that cannot be simulated; the message names the key path."""


# ---------------------------------------------------------------------------------------------
# Scenario
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Customer:
    customer_gid: int
    email: str
    first_name: str
    last_name: str
    created_at: str = "2024-01-15T18:22:31.000Z"


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """One metered channel: a circuit of a panel, or the single "1,2,3" of a plug/charger.

    `watts` is the channel's weekly mean power (negative for generation); `profile` shapes it
    over the local day.
    """

    channel_num: str
    name: str | None
    profile: str
    watts: float
    channel_type_gid: int | None = None
    multiplier: float = 1.0
    noise: float = 1.0


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device; for a panel (`kind` "vue") `channels` are its circuits, mains is computed."""

    device_gid: int
    name: str
    kind: str
    model: str
    firmware: str
    manufacturer_id: str
    channels: tuple[ChannelSpec, ...]
    parent_gid: int | None = None
    parent_channel: str | None = None
    remainder_watts: float = 0.0
    bidirectional: bool = False
    gap_rate: float = 0.0
    installed_at: datetime | None = None  # buckets starting before it are null

    @property
    def is_panel(self) -> bool:
        return self.kind == "vue"


@dataclass(frozen=True, slots=True)
class ChannelTypeSpec:
    gid: int
    description: str
    selectable: bool = True


@dataclass(frozen=True)
class Scenario:
    """Who the account is, where it is (time zone) and which devices and circuits it has."""

    customer: Customer
    devices: tuple[DeviceSpec, ...]
    timezone: str = "America/New_York"
    channel_types: tuple[ChannelTypeSpec, ...] = ()
    zip_code: str = "00000"
    latitude: float = 0.0
    longitude: float = 0.0

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def device(self, device_gid: int) -> DeviceSpec:
        for dev in self.devices:
            if dev.device_gid == device_gid:
                return dev
        raise KeyError(device_gid)

    def for_account(self, number: int) -> Scenario:
        """Account `number` (0, 1, ...) of a simulator serving many: this household with ids
        of its own, as no two Emporia accounts share a customer or a device. Customer gid +
        number + 1; device gids (and parents) + (number + 1) x ACCOUNT_GID_STRIDE; e-mail
        `user+number@domain`; manufacturer ids with `-number` appended. Names, circuits and
        profiles stay as they are (its usage differs by its seed, `account_seed`)."""
        if number < 0:
            raise ValueError(f"account number {number} is negative")
        big = [d.device_gid for d in self.devices if not 0 < d.device_gid < ACCOUNT_GID_STRIDE]
        if big:
            raise ScenarioError(
                f"devices: gid {big[0]} is outside 1..{ACCOUNT_GID_STRIDE - 1}, which a "
                "simulator serving many accounts needs to give each account its own gids"
            )
        shift = (number + 1) * ACCOUNT_GID_STRIDE
        user, at, domain = self.customer.email.partition("@")
        customer = replace(
            self.customer,
            customer_gid=self.customer.customer_gid + number + 1,
            email=f"{user}+{number}{at}{domain}",
        )
        devices = tuple(
            replace(
                d,
                device_gid=d.device_gid + shift,
                manufacturer_id=f"{d.manufacturer_id}-{number}",
                parent_gid=None if d.parent_gid is None else d.parent_gid + shift,
            )
            for d in self.devices
        )
        return replace(self, customer=customer, devices=devices)

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Read a scenario JSON file (camelCase keys, see default_scenario.json)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"{path}: invalid JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def default(cls) -> Scenario:
        """The bundled two-panel house with a plug and an EV charger."""
        text = (
            resources.files("vuegraf.simulator")
            .joinpath("default_scenario.json")
            .read_text(encoding="utf-8")
        )
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        if not isinstance(data, Mapping):
            raise ScenarioError("scenario: must be a JSON object")
        cust = _req(data, "customer", Mapping, "")
        customer = Customer(
            customer_gid=_req(cust, "customerGid", int, "customer"),
            email=_req(cust, "email", str, "customer"),
            first_name=_opt(cust, "firstName", str, "customer", ""),
            last_name=_opt(cust, "lastName", str, "customer", ""),
            created_at=_opt(cust, "createdAt", str, "customer", "2024-01-15T18:22:31.000Z"),
        )
        raw_devices = _req(data, "devices", list, "")
        devices = tuple(_device(d, f"devices[{i}]") for i, d in enumerate(raw_devices))
        types = tuple(
            ChannelTypeSpec(
                gid=_req(t, "channelTypeGid", int, f"channelTypes[{i}]"),
                description=_req(t, "description", str, f"channelTypes[{i}]"),
                selectable=_opt(t, "selectable", bool, f"channelTypes[{i}]", True),
            )
            for i, t in enumerate(_opt(data, "channelTypes", list, "", []))
        )
        loc = _opt(data, "location", Mapping, "", {})
        return cls(
            customer=customer,
            devices=devices,
            timezone=_opt(data, "timezone", str, "", "America/New_York"),
            channel_types=types,
            zip_code=_opt(loc, "zipCode", str, "location", "00000"),
            latitude=float(_opt(loc, "latitude", (int, float), "location", 0.0)),
            longitude=float(_opt(loc, "longitude", (int, float), "location", 0.0)),
        )


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _req(obj: object, key: str, typ: Any, where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise ScenarioError(f"{_path(where, key)}: required")
    value = obj[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise ScenarioError(f"{_path(where, key)}: wrong type {type(value).__name__}")
    return value


def _opt(obj: Mapping[str, Any], key: str, typ: Any, where: str, default: Any) -> Any:
    if key not in obj or obj[key] is None:
        return default
    return _req(obj, key, typ, where)


def _channel(obj: Mapping[str, Any], where: str, num: str | None = None) -> ChannelSpec:
    profile = _req(obj, "profile", str, where)
    return ChannelSpec(
        channel_num=num if num is not None else _req(obj, "channelNum", str, where),
        name=_opt(obj, "name", str, where, None) if num is None else None,
        profile=profile,
        watts=float(_opt(obj, "watts", (int, float), where, 0.0)),
        channel_type_gid=_opt(obj, "channelTypeGid", int, where, None),
        multiplier=float(_opt(obj, "channelMultiplier", (int, float), where, 1.0)),
        noise=float(_opt(obj, "noise", (int, float), where, _PROFILE_NOISE.get(profile, 1.0))),
    )


def _device(obj: Mapping[str, Any], where: str) -> DeviceSpec:
    if not isinstance(obj, Mapping):
        raise ScenarioError(f"{where}: must be an object")
    kind = _opt(obj, "kind", str, where, "vue")
    if kind not in KINDS:
        raise ScenarioError(f"{where}.kind: unknown kind {kind!r} (one of {sorted(KINDS)})")
    gid = _req(obj, "deviceGid", int, where)
    if kind == "vue":
        circuits = _req(obj, "circuits", list, where)
        channels = tuple(_channel(c, f"{where}.circuits[{i}]") for i, c in enumerate(circuits))
    else:
        channels = (_channel(obj, where, num=MAINS),)
    return DeviceSpec(
        device_gid=gid,
        name=_req(obj, "deviceName", str, where),
        kind=kind,
        model=_opt(obj, "model", str, where, "VUE002" if kind == "vue" else kind.upper()),
        firmware=_opt(obj, "firmware", str, where, "sim-1.0"),
        manufacturer_id=_opt(obj, "manufacturerDeviceId", str, where, f"SIM{gid:08d}"),
        channels=channels,
        parent_gid=_opt(obj, "parentDeviceGid", int, where, None),
        parent_channel=_opt(obj, "parentChannelNum", str, where, None),
        remainder_watts=float(_opt(obj, "remainderWatts", (int, float), where, 0.0)),
        bidirectional=_opt(obj, "bidirectional", bool, where, False),
        gap_rate=float(_opt(obj, "gapRate", (int, float), where, 0.0)),
    )


def account_seed(seed: int, number: int) -> int:
    """The usage seed of account `number` of a simulator started with `seed`: a hash of
    both, so accounts' usage differs and a re-run gives each the same again."""
    digest = hashlib.blake2b(f"{seed}/{number}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _validate(sc: Scenario) -> None:
    try:
        ZoneInfo(sc.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScenarioError(f"timezone: unknown time zone {sc.timezone!r}") from None
    by_gid: dict[int, DeviceSpec] = {}
    for i, dev in enumerate(sc.devices):
        where = f"devices[{i}]"
        if dev.device_gid in by_gid:
            raise ScenarioError(f"{where}.deviceGid: duplicate {dev.device_gid}")
        by_gid[dev.device_gid] = dev
        if not 0.0 <= dev.gap_rate <= 1.0:
            raise ScenarioError(f"{where}.gapRate: must be between 0 and 1")
        if dev.remainder_watts < 0:
            raise ScenarioError(f"{where}.remainderWatts: must not be negative")
        seen: set[str] = set()
        for j, ch in enumerate(dev.channels):
            cw = f"{where}.circuits[{j}]" if dev.is_panel else where
            if ch.profile not in PROFILES:
                raise ScenarioError(f"{cw}.profile: unknown profile {ch.profile!r}")
            if not 0.0 <= ch.noise <= _MAX_NOISE:  # keeps every noise factor positive
                raise ScenarioError(f"{cw}.noise: must be between 0 and {_MAX_NOISE}")
            if dev.is_panel and (ch.channel_num in COMPUTED or ch.channel_num == MAINS):
                raise ScenarioError(f"{cw}.channelNum: {ch.channel_num!r} is reserved")
            if ch.channel_num in seen:
                raise ScenarioError(f"{cw}.channelNum: duplicate {ch.channel_num!r}")
            seen.add(ch.channel_num)
    for i, dev in enumerate(sc.devices):
        where = f"devices[{i}]"
        if (dev.parent_gid is None) != (dev.parent_channel is None):
            raise ScenarioError(f"{where}: parentDeviceGid and parentChannelNum go together")
        if dev.parent_gid is None:
            continue
        parent = by_gid.get(dev.parent_gid)
        if parent is None or not parent.is_panel:
            raise ScenarioError(f"{where}.parentDeviceGid: {dev.parent_gid} is not a panel")
        nums = {c.channel_num for c in parent.channels} | {MAINS}
        if dev.parent_channel not in nums:
            raise ScenarioError(f"{where}.parentChannelNum: {dev.parent_channel!r} not on parent")
        # A cycle would make the mains recursion endless.
        up, hops = dev, 0
        while up.parent_gid is not None:
            up, hops = by_gid[up.parent_gid], hops + 1
            if hops > len(sc.devices):
                raise ScenarioError(f"{where}.parentDeviceGid: nesting forms a cycle")


# ---------------------------------------------------------------------------------------------
# Buckets
# ---------------------------------------------------------------------------------------------


def _check_scale(scale: str) -> None:
    if scale not in _SCALE_INDEX:
        raise ValueError(f"unknown scale {scale!r}")


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got {t!r}")
    return t


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant a local calendar day starts (a skipped midnight maps to the jump)."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def bucket_floor(scale: str, t: datetime, tz: ZoneInfo) -> datetime:
    """Start (aware UTC) of the `scale` bucket holding `t`.

    Sub-day buckets align in UTC; 1D and longer are local calendar periods in `tz`
    (weeks start on Monday), so a DST day lasts 23 or 25 hours.
    """
    _check_scale(scale)
    t = _aware(t)
    if scale in FIXED_SECONDS:
        step = timedelta(seconds=FIXED_SECONDS[scale])
        return _EPOCH + ((t - _EPOCH) // step) * step
    day = t.astimezone(tz).date()
    if scale == "1W":
        day -= timedelta(days=day.weekday())
    elif scale == "1MON":
        day = day.replace(day=1)
    elif scale == "1Y":
        day = day.replace(month=1, day=1)
    return local_midnight(day, tz)


def bucket_next(scale: str, bucket_start: datetime, tz: ZoneInfo) -> datetime:
    """Start (aware UTC) of the bucket after the one starting at `bucket_start`."""
    _check_scale(scale)
    start = _aware(bucket_start)
    if scale in FIXED_SECONDS:
        return start.astimezone(UTC) + timedelta(seconds=FIXED_SECONDS[scale])
    day = start.astimezone(tz).date()
    if scale == "1D":
        day += timedelta(days=1)
    elif scale == "1W":
        day += timedelta(days=7)
    elif scale == "1MON":
        day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    else:
        day = date(day.year + 1, 1, 1)
    return local_midnight(day, tz)


def bucket_starts(
    scale: str, first: datetime, last: datetime, tz: ZoneInfo, limit: int
) -> list[datetime] | None:
    """Starts of the buckets from the one holding `first` to the one holding `last`.

    None when there would be more than `limit` (so a huge request costs nothing).
    """
    start = bucket_floor(scale, first, tz)
    end = bucket_floor(scale, last, tz)
    if end < start:
        return []
    if scale in FIXED_SECONDS:
        step = timedelta(seconds=FIXED_SECONDS[scale])
        count = (end - start) // step + 1
        if count > limit:
            return None
        return [start + i * step for i in range(count)]
    out: list[datetime] = []
    cur = start
    while cur <= end:
        if len(out) >= limit:
            return None
        out.append(cur)
        cur = bucket_next(scale, cur, tz)
    return out


# ---------------------------------------------------------------------------------------------
# Daily shapes: tables per local minute, normalised so the weekly mean is 1
# ---------------------------------------------------------------------------------------------


def _bump(h: float, center: float, width: float) -> float:
    d = abs(h - center) % 24.0
    d = min(d, 24.0 - d)
    return math.exp(-0.5 * (d / width) ** 2)


def _plateau(h: float, on: float, off: float, steep: float = 3.0) -> float:
    return 1.0 / (1.0 + math.exp(-(h - on) * steep)) / (1.0 + math.exp((h - off) * steep))


def _raw_shape(profile: str, h: float, weekend: bool) -> float:
    """Relative power at local hour `h`: why a kitchen peaks at dinner and solar at noon."""
    if profile == "constant":
        return 1.0
    if profile == "fridge":
        return 1.0 + 0.15 * _bump(h, 15, 3) + 0.1 * _bump(h, 19, 1.5)
    if profile == "evening":
        lunch = 0.45 if weekend else 0.2
        return (
            0.25
            + 0.45 * _bump(h, 7.5, 1.0)
            + lunch * _bump(h, 12.5, 1.5)
            + 1.6 * _bump(h, 19.5, 2.0)
        )
    if profile == "morning_evening":
        morning = _bump(h, 9.0, 1.5) if weekend else _bump(h, 7.0, 1.2)
        return 0.12 + 1.1 * morning + 0.9 * _bump(h, 20.0, 1.6)
    if profile == "daytime":
        if weekend:
            return 0.12 + 0.25 * _bump(h, 14.0, 2.5)
        return 0.12 + _plateau(h, 8.5, 17.5)
    if profile == "night":
        return 0.05 + _plateau(h, 17.5, 23.5) + 0.6 * _plateau(h, 5.5, 7.0)
    if profile == "hvac":
        return 0.6 + 0.45 * _bump(h, 6.5, 1.5) + 0.55 * _bump(h, 19.0, 2.5)
    if profile == "solar":
        return max(0.0, math.sin(math.pi * (h - 6.0) / 12.0)) ** 1.3 if 6.0 < h < 18.0 else 0.0
    return 0.0  # zero, ev (ev is modelled as sessions, not a shape)


def _season(profile: str, doy: int) -> float:
    if profile == "hvac":  # a furnace works hardest in January
        return max(0.2, 1.0 + 0.6 * math.cos(2 * math.pi * (doy - 20) / 365.25))
    if profile == "solar":  # and panels around the June solstice
        return 1.0 + 0.3 * math.cos(2 * math.pi * (doy - 172) / 365.25)
    return 1.0


@dataclass(frozen=True, slots=True)
class _Shape:
    tables: tuple[tuple[float, ...], tuple[float, ...]]  # [weekend][minute of day]
    day_mean: tuple[float, float]  # [weekend]
    season: tuple[float, ...]  # [day of year], index 0 unused


def _build_shape(profile: str) -> _Shape:
    raw = [
        [_raw_shape(profile, (m + 0.5) / 60.0, weekend) for m in range(1440)]
        for weekend in (False, True)
    ]
    means = [sum(r) / 1440.0 for r in raw]
    weekly = (5 * means[0] + 2 * means[1]) / 7.0
    norm = 1.0 / weekly if weekly > 0 else 0.0
    tables = (tuple(v * norm for v in raw[0]), tuple(v * norm for v in raw[1]))
    return _Shape(
        tables=tables,
        day_mean=(means[0] * norm, means[1] * norm),
        season=tuple(_season(profile, d) for d in range(367)),
    )


_SHAPES: dict[str, _Shape] = {}


def _shape(profile: str) -> _Shape:
    shape = _SHAPES.get(profile)
    if shape is None:
        shape = _SHAPES[profile] = _build_shape(profile)
    return shape


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What every channel of a bucket shares: when it is in local time and how long it lasts."""

    start_ts: int
    seconds: float
    minute: int  # local minute of day at the bucket's middle; -1 for a whole day
    weekend: int
    doy: int
    ordinal: int  # local date


@dataclass(frozen=True, slots=True)
class _Chan:
    num: str
    slot: int
    profile: str
    watts: float
    noise: float
    shape: _Shape
    is_ev: bool


@dataclass(frozen=True, slots=True)
class _Dev:
    spec: DeviceSpec
    chans: tuple[_Chan, ...]
    children: tuple[int, ...]
    slots: int
    zero: frozenset[str]  # channels that always read int 0


@dataclass(frozen=True, slots=True)
class _Parts:
    """A device's local day cut where it meets UTC hours (24 whole hours in a whole-hour zone,
    23 or 25 on DST days, two half hours at the ends in a +05:30 zone), with each piece's
    share of the day's value per leaf."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    leaves: tuple[tuple[float, ...], ...]  # [piece][leaf]


def _round(value: float) -> float:
    """Nine significant digits: stable JSON and the same number on every call."""
    if value == 0:
        return 0.0
    return float(f"{value:.9g}")


class UsageModel:
    """Deterministic kWh per (device, channel, scale, bucket) for a scenario and seed."""

    def __init__(self, scenario: Scenario, seed: int = 1) -> None:
        self.scenario = scenario
        self.seed = seed
        self.tz = scenario.tz
        self._seed64 = seed % (1 << 63)
        children: dict[int, list[int]] = {}
        for dev in scenario.devices:
            if dev.parent_gid is not None:
                children.setdefault(dev.parent_gid, []).append(dev.device_gid)
        self._devs: dict[int, _Dev] = {}
        for dev in scenario.devices:
            chans = tuple(
                _Chan(
                    c.channel_num,
                    2 + i,
                    c.profile,
                    c.watts,
                    c.noise,
                    _shape(c.profile),
                    c.profile == "ev",
                )
                for i, c in enumerate(dev.channels)
            )
            self._devs[dev.device_gid] = _Dev(
                spec=dev,
                chans=chans,
                children=tuple(children.get(dev.device_gid, ())),
                slots=2 + len(chans),
                zero=frozenset(c.num for c in chans if c.profile == "zero"),
            )
        # Per-day facts (weather, EV sessions, local midnights) are hashed once and kept.
        self._day_cache: dict[tuple[int, int, int], Any] = {}
        self._mean_cache: dict[tuple[int, int, int], tuple[float, ...]] = {}
        self._parts_cache: dict[tuple[int, int], _Parts] = {}  # (gid, local date)
        self._minute_cache: dict[tuple[int, int], tuple[float, ...]] = {}  # (gid, piece start)
        # (gid, piece start) -> (its first minute, each minute's weights): the minutes of a
        # piece are asked for one after another, and their sum needed every weight already.
        self._piece_weights: dict[tuple[int, int], tuple[int, list[tuple[float, ...]]]] = {}
        self._nested: dict[tuple[int, str, int], dict[str, float]] = {}  # (gid, scale, start)
        # Served values per scale, by (gid, bucket start); the HTTP server's threads share them.
        self._values: dict[str, dict[tuple[int, int], dict[str, float | None]]] = {
            scale: {} for scale in SCALES
        }
        self._evict_lock = threading.Lock()

    # -- public ---------------------------------------------------------------------------

    def channels(self) -> list[tuple[int, str, str, str, bool]]:
        """Every channel served: (device_gid, channel_num, device_name, channel_name, has_chart)."""
        out: list[tuple[int, str, str, str, bool]] = []
        for dev in self.scenario.devices:
            for num, name, has_chart in self.device_channels(dev.device_gid):
                out.append((dev.device_gid, num, dev.name, name, has_chart))
        return out

    def device_channels(self, device_gid: int) -> list[tuple[str, str, bool]]:
        """(channel_num, Emporia usage name, has_chart) in the order getDeviceListUsages uses."""
        dev = self._devs[device_gid].spec
        out = [(MAINS, "Main", True)]
        if dev.is_panel:
            out += [(c.channel_num, c.name or "", True) for c in dev.channels]
            out.append(("Balance", "Balance", False))
            if dev.bidirectional:
                out += [(num, num, False) for num in ("MainsFromGrid", "MainsToGrid")]
        return out

    def kwh(
        self, device_gid: int, channel_num: str, scale: str, bucket_start: datetime
    ) -> float | None:
        """kWh of the bucket holding `bucket_start`; None when the device has a gap there.

        The always-zero profile answers int 0 on purpose (JSON `0`, as Emporia sends it).
        """
        values = self.device_values(device_gid, scale, bucket_start, only=channel_num)
        try:
            return values[channel_num]
        except KeyError:
            raise KeyError(f"device {device_gid} has no channel {channel_num!r}") from None

    def device_values(
        self, device_gid: int, scale: str, bucket_start: datetime, only: str | None = None
    ) -> dict[str, float | None]:
        """Served values of every channel of a device for one bucket (or just `only`)."""
        dev = self._devs[device_gid]
        start = bucket_floor(scale, bucket_start, self.tz)
        start_ts = int((start - _EPOCH).total_seconds())
        kept = self._values[scale]
        values = kept.get((device_gid, start_ts))
        if values is None:
            values = self._device_values(dev, scale, start, start_ts)
            self._keep(kept, (device_gid, start_ts), values, _VALUES_LIMIT)
        if only is None:
            return dict(values)
        return {only: values[only]} if only in values else {}

    def _device_values(
        self, dev: _Dev, scale: str, start: datetime, start_ts: int
    ) -> dict[str, float | None]:
        """What `device_values` serves for the bucket, worked out (not from `_values`)."""
        if scale in FIXED_SECONDS or scale == "1D":
            raw = self._served(dev, scale, start_ts)
        else:
            raw = self._raw_calendar(dev, scale, start)
        if dev.spec.gap_rate > 0 and self._gap(dev, scale, start_ts):
            return dict.fromkeys(raw)
        if dev.spec.installed_at is not None and start < dev.spec.installed_at:
            return dict.fromkeys(raw)
        zero = dev.zero
        return {num: 0 if num in zero else _round(value) for num, value in raw.items()}

    def online(self, device_gid: int, t: datetime) -> bool:
        """Whether the device reports the minute holding `t` (its gaps are offline time)."""
        dev = self._devs[device_gid]
        start = bucket_floor("1MIN", t, self.tz)
        if dev.spec.installed_at is not None and start < dev.spec.installed_at:
            return False
        if dev.spec.gap_rate <= 0:
            return True
        return not self._gap(dev, "1MIN", int((start - _EPOCH).total_seconds()))

    def charging(self, device_gid: int, t: datetime) -> bool:
        """Whether an EV charging session of this device covers instant `t`."""
        ts = (_aware(t) - _EPOCH).total_seconds()
        ordinal = t.astimezone(self.tz).toordinal()
        return any(
            a <= ts < b for o in (ordinal - 1, ordinal) for a, b in self._ev_sessions(device_gid, o)
        )

    # -- internals ------------------------------------------------------------------------

    def _uniforms(self, gid: int, kind: int, start_ts: int, count: int) -> tuple[int, ...]:
        """`count` 16-bit numbers hashed from the key: the model's only source of chance."""
        out: tuple[int, ...] = ()
        block = 0
        while len(out) < count:
            key = _PACK.pack(self._seed64, gid, kind, start_ts, block)
            out += _UNPACK.unpack(hashlib.blake2b(key, digest_size=64).digest())
            block += 1
        return out

    def _gap(self, dev: _Dev, scale: str, start_ts: int) -> bool:
        u = self._uniforms(dev.spec.device_gid, _SCALE_INDEX[scale], start_ts, 1)[0]
        return u / _U16 < dev.spec.gap_rate

    def _midnight_ts(self, ordinal: int) -> int:
        key = (0, 0, ordinal)
        ts = self._day_cache.get(key)
        if ts is None:
            ts = int((local_midnight(date.fromordinal(ordinal), self.tz) - _EPOCH).total_seconds())
            self._remember(key, ts)
        return ts

    def _remember(self, key: tuple[int, int, int], value: Any) -> None:
        if len(self._day_cache) > _CACHE_LIMIT:
            self._day_cache.clear()  # bounded memory; recomputing is cheap and deterministic
        self._day_cache[key] = value

    def _weather(self, gid: int, ordinal: int) -> float:
        """Sunshine factor of a local day (0.35 overcast .. 1.0 clear)."""
        key = (gid, _SALT_WEATHER, ordinal)
        w: float | None = self._day_cache.get(key)
        if w is None:
            u = self._uniforms(gid, _SALT_WEATHER, ordinal, 1)[0]
            w = 0.35 + 0.65 * (u / _U16) ** 0.5
            self._remember(key, w)
        return w

    def _ev_sessions(self, gid: int, ordinal: int) -> tuple[tuple[float, float], ...]:
        """The evening charging session of a local day, if any, as UTC epoch (start, end)."""
        key = (gid, _SALT_EV, ordinal)
        sessions = self._day_cache.get(key)
        if sessions is None:
            u = self._uniforms(gid, _SALT_EV, ordinal, 3)
            sessions = ()
            if u[0] / _U16 < _EV_SESSION_PROBABILITY:
                begin = self._midnight_ts(ordinal) + (17.5 + 4.5 * u[1] / _U16) * 3600.0
                sessions = ((begin, begin + (1.0 + 3.5 * u[2] / _U16) * 3600.0),)
            self._remember(key, sessions)
        return sessions

    def _context(self, scale: str, start_ts: int) -> _Ctx:
        if scale in FIXED_SECONDS:
            seconds = float(FIXED_SECONDS[scale])
            local = datetime.fromtimestamp(start_ts + seconds / 2.0, self.tz)
            minute = local.hour * 60 + local.minute
        else:  # a local day
            local = datetime.fromtimestamp(start_ts, self.tz)
            nxt = bucket_next("1D", datetime.fromtimestamp(start_ts, UTC), self.tz)
            seconds = (nxt - _EPOCH).total_seconds() - start_ts
            minute = -1
        ordinal = local.toordinal()
        doy = ordinal - date(local.year, 1, 1).toordinal() + 1
        return _Ctx(start_ts, seconds, minute, int(local.weekday() >= 5), doy, ordinal)

    def _means(self, dev: _Dev, ctx: _Ctx) -> tuple[float, ...]:
        """Mean watts of each channel at this local minute (or day): shared by many buckets."""
        key = (dev.spec.device_gid, ctx.minute, ctx.ordinal)
        means = self._mean_cache.get(key)
        if means is None:
            means = tuple(self._mean_watts(dev.spec.device_gid, c, ctx) for c in dev.chans)
            if len(self._mean_cache) > _CACHE_LIMIT:
                self._mean_cache.clear()
            self._mean_cache[key] = means
        return means

    def _mean_watts(self, gid: int, chan: _Chan, ctx: _Ctx) -> float:
        if chan.is_ev:
            return 0.0
        shape = chan.shape
        if ctx.minute < 0:
            rel = shape.day_mean[ctx.weekend]
        else:
            rel = shape.tables[ctx.weekend][ctx.minute]
        watts = chan.watts * rel * shape.season[ctx.doy]
        if chan.profile == "solar":
            watts *= self._weather(gid, ctx.ordinal)
        return watts

    def _ev_kwh(self, gid: int, chan: _Chan, ctx: _Ctx, u: int) -> float:
        """Energy of the charging sessions overlapping the bucket (closed form, no loop)."""
        end = ctx.start_ts + ctx.seconds
        overlap = 0.0
        for o in (ctx.ordinal - 1, ctx.ordinal):
            for a, b in self._ev_sessions(gid, o):
                overlap += max(0.0, min(b, end) - max(a, ctx.start_ts))
        if overlap == 0.0:
            return 0.0
        factor = 1.0 + _EV_NOISE * (2.0 * u / _U16 - 1.0)
        return chan.watts * overlap * factor * _KWH_PER_WATT_SECOND

    # -- top-down: a day, cut into pieces at UTC hours, cut into minutes ----------------------
    # A device's leaves are its own channels and, for a panel, the unmetered remainder; a
    # panel's mains is always the sum of its leaves and its nested devices' mains.

    def _weights(self, dev: _Dev, scale: str, ctx: _Ctx) -> tuple[float, ...]:
        """Unrounded kWh of a device's leaves as the noise of `scale` makes them for one
        bucket: a day's value, or a finer bucket's weight (mean watts x (1 + noise) x
        seconds)."""
        gid = dev.spec.device_gid
        amp = _NOISE_AMP[scale]
        means = self._means(dev, ctx)
        k = ctx.seconds * _KWH_PER_WATT_SECOND
        u = self._uniforms(gid, _SCALE_INDEX[scale], ctx.start_ts, dev.slots)
        out = [
            (
                self._ev_kwh(gid, c, ctx, u[c.slot])
                if c.is_ev
                else m * (1.0 + amp * c.noise * (u[c.slot] * _TWO_U - 1.0)) * k
            )
            for c, m in zip(dev.chans, means, strict=True)
        ]
        if dev.spec.is_panel:
            noise = 1.0 + amp * _REMAINDER_NOISE * (u[1] * _TWO_U - 1.0)
            out.append(dev.spec.remainder_watts * noise * k)
        return tuple(out)

    def _parts(self, dev: _Dev, ordinal: int) -> _Parts:
        """A local day of a device cut at UTC hours, the day's value shared among the pieces
        by their weights (an hour's value as the noise of 1H makes it)."""
        key = (dev.spec.device_gid, ordinal)
        parts = self._parts_cache.get(key)
        if parts is not None:
            return parts
        a, b = self._midnight_ts(ordinal), self._midnight_ts(ordinal + 1)
        cuts = [a, *range((a // 3600 + 1) * 3600, b, 3600), b]
        day_ctx = self._context("1D", a)
        day = self._weights(dev, "1D", day_ctx)
        weights = [
            self._weights(dev, "1H", self._piece_ctx(s, e, day_ctx))
            for s, e in zip(cuts, cuts[1:], strict=False)
        ]
        totals = [math.fsum(column) for column in zip(*weights, strict=True)]
        leaves = tuple(
            tuple(_share(d, w, t) for d, w, t in zip(day, ws, totals, strict=True))
            for ws in weights
        )
        parts = _Parts(tuple(cuts[:-1]), tuple(cuts[1:]), leaves)
        self._keep(self._parts_cache, key, parts, _PARTS_LIMIT)
        return parts

    def _piece_ctx(self, start: int, end: int, day: _Ctx) -> _Ctx:
        local = datetime.fromtimestamp((start + end) / 2.0, self.tz)
        minute = local.hour * 60 + local.minute
        return _Ctx(start, float(end - start), minute, day.weekend, day.doy, day.ordinal)

    def _minute_sums(self, dev: _Dev, parts: _Parts, piece: int) -> tuple[float, ...]:
        """The weights of a piece's minutes added up, per leaf: what a minute's share is of."""
        start, end = parts.starts[piece], parts.ends[piece]
        key = (dev.spec.device_gid, start)
        sums = self._minute_cache.get(key)
        if sums is None:
            first = -(-start // 60) * 60
            weights = [
                self._weights(dev, "1MIN", self._context("1MIN", ts))
                for ts in range(first, end, 60)
            ]
            sums = tuple(math.fsum(column) for column in zip(*weights, strict=True))
            self._keep(self._minute_cache, key, sums, _MINUTES_LIMIT)
            self._keep(self._piece_weights, key, (first, weights), _PIECE_WEIGHTS_LIMIT)
        return sums

    def _leaves(self, dev: _Dev, scale: str, start_ts: int) -> tuple[float, ...]:
        """Unrounded kWh of a device's leaves for one bucket: a day as modelled, an hour the
        sum of its pieces, a minute its piece's share."""
        if scale == "1D" or scale == "1S":
            return self._weights(dev, scale, self._context(scale, start_ts))
        if scale == "1H":
            total: tuple[float, ...] | None = None
            for ordinal in sorted({self._ordinal(start_ts), self._ordinal(start_ts + 3599)}):
                parts = self._parts(dev, ordinal)
                for k, s in enumerate(parts.starts):
                    if start_ts <= s < start_ts + 3600:
                        piece = parts.leaves[k]
                        total = piece if total is None else _add(total, piece)
            assert total is not None
            return total
        if scale == "15MIN":
            total = self._leaves(dev, "1MIN", start_ts)
            for m in range(1, 15):
                total = _add(total, self._leaves(dev, "1MIN", start_ts + 60 * m))
            return total
        ctx = self._context("1MIN", start_ts)  # a minute, which never spans two local days
        parts = self._parts(dev, ctx.ordinal)
        k = bisect.bisect_right(parts.starts, start_ts) - 1
        sums = self._minute_sums(dev, parts, k)
        kept = self._piece_weights.get((dev.spec.device_gid, parts.starts[k]))
        if kept is not None:
            weights = kept[1][(start_ts - kept[0]) // 60]
        else:
            weights = self._weights(dev, "1MIN", ctx)
        piece = parts.leaves[k]
        return tuple(_share(p, w, t) for p, w, t in zip(piece, weights, sums, strict=True))

    def _keep(self, cache: dict[Any, Any], key: Any, value: Any, limit: int) -> None:
        """Remember `value`, forgetting the oldest entries beyond `limit` (bounded memory, no
        cliff: recomputing one entry is cheap and deterministic). Under a lock: two server
        threads must not both take the same oldest entry out."""
        with self._evict_lock:
            while len(cache) >= limit:
                del cache[next(iter(cache))]
            cache[key] = value

    def _ordinal(self, ts: int) -> int:
        """The local date holding instant `ts`."""
        return datetime.fromtimestamp(ts, self.tz).toordinal()

    def _served(self, dev: _Dev, scale: str, start_ts: int) -> dict[str, float]:
        """Unrounded, ungapped kWh of a device's channels for one bucket of 1S..1D: mains,
        circuits, Balance and the grid split, each a sum of leaves. A nested device's are
        kept a while: its parent's mains needs them as well as its own answer."""
        if dev.spec.parent_gid is None:
            return self._served_now(dev, scale, start_ts)
        key = (dev.spec.device_gid, scale, start_ts)
        served = self._nested.get(key)
        if served is None:
            served = self._served_now(dev, scale, start_ts)
            self._keep(self._nested, key, served, _NESTED_LIMIT)
        return served

    def _served_now(self, dev: _Dev, scale: str, start_ts: int) -> dict[str, float]:
        """What `_served` answers, worked out."""
        leaves = self._leaves(dev, scale, start_ts)
        out = {c.num: v for c, v in zip(dev.chans, leaves, strict=False)}
        if not dev.spec.is_panel:
            return out
        remainder = leaves[-1]
        nested = [self._served(self._devs[c], scale, start_ts)[MAINS] for c in dev.children]
        mains = sum(out.values()) + sum(nested) + remainder
        out = {MAINS: mains, **out, "Balance": remainder}
        if dev.spec.bidirectional:
            parts = (*leaves, *nested)
            out["MainsFromGrid"] = math.fsum(v for v in parts if v > 0.0)
            out["MainsToGrid"] = math.fsum(v for v in parts if v < 0.0)
        return out

    def _raw_calendar(self, dev: _Dev, scale: str, start: datetime) -> dict[str, float]:
        """A week, month or year as the sum of the model's local days."""
        end = bucket_next(scale, start, self.tz)
        total: dict[str, float] = {}
        day = start
        while day < end:
            ts = int((day - _EPOCH).total_seconds())
            for num, value in self._served(dev, "1D", ts).items():
                total[num] = total.get(num, 0.0) + value
            day = bucket_next("1D", day, self.tz)
        return total


def _share(total: float, weight: float, weights: float) -> float:
    """`total` x `weight` / `weights`: a finer bucket's part of a coarser one's value."""
    return total * weight / weights if weights != 0.0 else 0.0


def _add(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))
