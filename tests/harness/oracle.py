"""What vuegraf should write, worked out here without vuegraf's own code.

The tests compare what reached a store against the values in this module. None of it comes
from `vuegraf.schedule`, `vuegraf.naming` or `vuegraf.model`'s conversions (the code under
test); tests/test_oracle_independence.py fails if a test imports those again.

- **Times** (README.md, "What is written"): second, minute and hour buckets start at multiples
  of 1, 60 and 3600 s since the Unix epoch (integer arithmetic on the epoch); a day is a local
  calendar day, from the `zoneinfo` midnight of its date to the midnight of the next date; the
  time written for a day is 23:59:59 local of that date, converted to UTC; the other scales
  are written at their bucket's start.
- **Watts**: Emporia's kWh per bucket (from the simulator's `UsageModel`, which stands for
  Emporia and is not under test) times the literal factor of README.md's "What is written":
  3 600 000 for a second, 60 000 for a minute, 1 000 for an hour or a day.
- **Names**: literal tables, one per account config the tests use, for the simulator's
  default household (src/vuegraf/simulator/default_scenario.json): the `device_name` tag of
  every (device gid, channel number) spelled out. `check_household` fails if the simulator's
  household ever stops matching the tables.
- **Points**: `served` puts the three together: every non-null bucket the simulator serves in
  a window, keyed by written name and time, in watts. tests/harness/completeness.py compares
  stores against it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from vuegraf.config import AccountConfig
from vuegraf.simulator import UsageModel
from vuegraf.simulator.model import ChannelSpec, DeviceSpec

ChannelKey = tuple[int, str]  # (device gid, Emporia channel number)
Key = tuple[str, int]  # a point as stored: (written channel name, Unix seconds of its time)

# --- time ------------------------------------------------------------------------------------

FIXED_SECONDS = {"1S": 1, "1MIN": 60, "1H": 3600}
DAY = "1D"
WATTS_PER_KWH = {"1S": 3_600_000.0, "1MIN": 60_000.0, "1H": 1_000.0, "1D": 1_000.0}
NEW_YORK = ZoneInfo("America/New_York")


def epoch(t: datetime) -> int:
    """Whole seconds since the epoch, rounded down."""
    return int(t.timestamp() // 1)


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def floor_to(t: datetime, step: int) -> datetime:
    """Start of the `step`-second bucket holding `t`: epoch // step * step."""
    return utc(epoch(t) // step * step)


def local_date(t: datetime, zone: ZoneInfo) -> date:
    return t.astimezone(zone).date()


def midnight(day: date, zone: ZoneInfo) -> datetime:
    """UTC instant at which the local date `day` begins in `zone`."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def day_start(t: datetime, zone: ZoneInfo) -> datetime:
    """UTC start of the local day holding `t`."""
    return midnight(local_date(t, zone), zone)


def day_stamp(day: date, zone: ZoneInfo) -> datetime:
    """Time written for the day point of local date `day`: 23:59:59 there, in UTC."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=zone).astimezone(UTC)


def bucket_floor(scale: str, t: datetime, zone: ZoneInfo) -> datetime:
    """Start of the `scale` bucket ("1S", "1MIN", "1H" or "1D") holding `t`."""
    if scale == DAY:
        return day_start(t, zone)
    return floor_to(t, FIXED_SECONDS[scale])


def bucket_after(scale: str, start: datetime, zone: ZoneInfo) -> datetime:
    """Start of the bucket after the one starting at `start`."""
    if scale == DAY:
        return midnight(local_date(start, zone) + timedelta(days=1), zone)
    return utc(epoch(start) + FIXED_SECONDS[scale])


def bucket_starts(scale: str, since: datetime, until: datetime, zone: ZoneInfo) -> list[datetime]:
    """Starts of every `scale` bucket that starts in [since, until)."""
    if scale == DAY:
        out = []
        day = local_date(since, zone) - timedelta(days=1)
        while (start := midnight(day, zone)) < until:
            if start >= since:
                out.append(start)
            day += timedelta(days=1)
        return out
    step = FIXED_SECONDS[scale]
    first = -(-epoch(since) // step) * step  # ceil to the step
    if first < since.timestamp():
        first += step
    return [utc(s) for s in range(first, epoch(until - timedelta(microseconds=1)) + 1, step)]


def stamp(scale: str, start: datetime, zone: ZoneInfo) -> datetime:
    """Time written for the bucket starting at `start` (README.md, "What is written")."""
    if scale == DAY:
        return day_stamp(local_date(start, zone), zone)
    return start


def watts(scale: str, kwh: float) -> float:
    return float(kwh) * WATTS_PER_KWH[scale]


# --- names of the default simulator household ------------------------------------------------

DEVICE_NAMES = {1001: "Main Panel", 1002: "Garage Panel", 2001: "Office Plug", 3001: "EV Charger"}

# A plug that tests add to the household while vuegraf runs (`SimulatorServer.add_device`).
SHED_PLUG = DeviceSpec(
    device_gid=4001,
    name="Shed Plug",
    kind="outlet",
    model="SSO001",
    firmware="sim-1.0",
    manufacturer_id="SIM00004001",
    channels=(ChannelSpec("1,2,3", None, "daytime", 180.0),),
)

# No `devices` in the account config: mains and single-channel devices carry the device's
# name, every other channel `<device name>-<channel number>`.
DEFAULT_NAMES: dict[ChannelKey, str] = {
    (1001, "1,2,3"): "Main Panel",
    (1001, "1"): "Main Panel-1",
    (1001, "2"): "Main Panel-2",
    (1001, "3"): "Main Panel-3",
    (1001, "4"): "Main Panel-4",
    (1001, "5"): "Main Panel-5",
    (1001, "6"): "Main Panel-6",
    (1001, "7"): "Main Panel-7",
    (1001, "8"): "Main Panel-8",
    (1001, "9"): "Main Panel-9",
    (1001, "10"): "Main Panel-10",
    (1001, "11"): "Main Panel-11",
    (1001, "12"): "Main Panel-12",
    (1001, "13"): "Main Panel-13",
    (1001, "14"): "Main Panel-14",
    (1001, "15"): "Main Panel-15",
    (1001, "16"): "Main Panel-16",
    (1001, "Balance"): "Main Panel-Balance",
    (1002, "1,2,3"): "Garage Panel",
    (1002, "1"): "Garage Panel-1",
    (1002, "2"): "Garage Panel-2",
    (1002, "3"): "Garage Panel-3",
    (1002, "4"): "Garage Panel-4",
    (1002, "5"): "Garage Panel-5",
    (1002, "6"): "Garage Panel-6",
    (1002, "7"): "Garage Panel-7",
    (1002, "8"): "Garage Panel-8",
    (1002, "Balance"): "Garage Panel-Balance",
    (1002, "MainsFromGrid"): "Garage Panel-MainsFromGrid",
    (1002, "MainsToGrid"): "Garage Panel-MainsToGrid",
    (2001, "1,2,3"): "Office Plug",
    (3001, "1,2,3"): "EV Charger",
}

# `"devices": [{"name": "Main Panel", "channels": ["Kitchen"]}]`
KITCHEN_NAMES: dict[ChannelKey, str] = {**DEFAULT_NAMES, (1001, "1"): "Kitchen"}

# `"devices": [{"name": "Main Panel", "channels": ["Kitchen A", "Furnace B"]}]`
KITCHEN_A_FURNACE_B_NAMES: dict[ChannelKey, str] = {
    **DEFAULT_NAMES,
    (1001, "1"): "Kitchen A",
    (1001, "2"): "Furnace B",
}

# Each table above under the parsed `devices` of the account config it belongs to, for
# harness code handed a Config: device name -> {channel number: circuit name}.
_TABLES: list[tuple[dict[str, dict[str, str]], dict[ChannelKey, str]]] = [
    ({}, DEFAULT_NAMES),
    ({"Main Panel": {"1": "Kitchen"}}, KITCHEN_NAMES),
    ({"Main Panel": {"1": "Kitchen A", "2": "Furnace B"}}, KITCHEN_A_FURNACE_B_NAMES),
]


def names_for(account: AccountConfig) -> dict[ChannelKey, str]:
    """The literal names table written for this account's `devices`; an account config
    without one is an error (write its table above rather than compute names)."""
    devices = {d.name: dict(d.channels) for d in account.devices}
    for config_devices, table in _TABLES:
        if devices == config_devices:
            return table
    raise AssertionError(f"tests/harness/oracle.py has no names table for devices {devices}")


# Live values only: Emporia serves no chart (history) data for these.
LIVE_ONLY: frozenset[ChannelKey] = frozenset(
    {(1001, "Balance"), (1002, "Balance"), (1002, "MainsFromGrid"), (1002, "MainsToGrid")}
)


def check_household(model: UsageModel, names: Mapping[ChannelKey, str] = DEFAULT_NAMES) -> None:
    """The simulator serves exactly the channels of `names` (any table above; a test that
    adds or removes devices while running passes a table of the changed household), those
    of LIVE_ONLY without chart data, and its devices carry DEVICE_NAMES."""
    served = {(gid, num): has_chart for gid, num, _dev, _name, has_chart in model.channels()}
    assert set(served) == set(names), sorted(set(served) ^ set(names))
    assert {k for k, chart in served.items() if not chart} == LIVE_ONLY & set(names)
    for gid in {gid for gid, _num in names} & set(DEVICE_NAMES):
        assert model.scenario.device(gid).name == DEVICE_NAMES[gid]


def channels(
    names: Mapping[ChannelKey, str], live_only_too: bool = False
) -> list[tuple[int, str, str]]:
    """(device gid, channel number, written name) of the chart channels of a names table,
    and with `live_only_too` the live-only ones too."""
    return [
        (gid, num, name)
        for (gid, num), name in names.items()
        if live_only_too or (gid, num) not in LIVE_ONLY
    ]


# --- what the simulator serves, as vuegraf should write it -----------------------------------


def served(
    names: Mapping[ChannelKey, str],
    model: UsageModel,
    scale: str,
    since: datetime,
    until: datetime,
    zone: ZoneInfo,
    live_only_too: bool = False,
    only: Collection[str] | None = None,
) -> dict[Key, float]:
    """Watts of every non-null `scale` bucket ("1S", "1MIN", "1H", "1D") the simulator serves
    that starts in [since, until), keyed by written name and written time (`stamp`): of the
    chart channels of `names` (and with `live_only_too` the live-only ones too), only those
    named in `only` when given. `names` must describe the model's household
    (`check_household`)."""
    check_household(model, names)
    wanted = [
        (gid, num, name)
        for gid, num, name in channels(names, live_only_too)
        if only is None or name in only
    ]
    result: dict[Key, float] = {}
    for start in bucket_starts(scale, since, until, zone):
        written = epoch(stamp(scale, start, zone))
        by_device: dict[int, Mapping[str, float | None]] = {}
        for gid, num, name in wanted:
            if gid not in by_device:
                by_device[gid] = model.device_values(gid, scale, start)
            kwh = by_device[gid][num]
            if kwh is not None:
                result[(name, written)] = watts(scale, kwh)
    return result
