"""The Emporia cloud API as pyemvue calls it, served over real HTTP from the usage model.

`PyEmVue().login_simulator(sim.url)` talks to this server exactly as it talks to Emporia, so the
daemon and tests exercise the real client: its URL building, JSON parsing and retries. Knobs
(latency, error and timeout rates) can be changed while serving, and `now` is injectable so a
test's virtual clock decides which buckets are complete.

Choices where Emporia's behaviour is unknown or out of scope:
- Chart data for channels without it (Balance, MainsFromGrid, MainsToGrid) and for unknown
  devices or channels: HTTP 200 with an empty `usageList` and `firstUsageInstant` = `start`.
- `energyUnit` KilowattHours, and for getDeviceListUsages also AmpHours and Voltage (see
  simulator/electrical.py); any other unit answers HTTP 400.
- The chart window limit counts buckets, inclusive of both ends (1MIN: 800 buckets, so exactly
  13 h 20 min from a minute boundary to a minute boundary is one bucket too many).
- Every API request is counted in the stats, including those answered 401, 500 or delayed.
- Write calls (PUT channels, outlet, charger) are not simulated: 404.

Test knobs (see "faults, auth and scenario changes" below), all switchable while serving:
`token_check` (an id token it refuses answers 401, as Emporia's gateway does for an expired or
revoked Cognito token), `set_fault` (every request, or those of some endpoints, answers e.g.
429 with or without `Retry-After`, or 503), `add_device` & co. (the account's devices and
circuits change, as when a user installs a plug), `log_requests` (a record of every request:
when by the simulator's clock, endpoint, status) and `on_request` (a hook called with each
request's endpoint as it arrives, to switch a fault at an exact request), `refused_units`
(energyUnit values answered 400, as for a unit Emporia withdrew).

Emporia's known breakages, replayed (also `vuegraf-simulator` options, see its `--help`):
- `withdraw(endpoint)`: the endpoint answers 404 for good, as `locationProperties` did from
  December 2025 (`restore` brings it back).
- `add_fault_window(status, start, end)`: every request (or those of some endpoints) answers
  `status` from `start` to `end` (excluded) of the simulator's own clock (`now`), so a test in
  virtual time gets an exact window; several may be set, beside `set_fault`. The cases on
  record: `/customers` 400 for five hours (endpoints={"customers"}), a maintenance hour
  (503 for every endpoint), 429 with or without `Retry-After` (Cognito's own 502s are the
  Cognito stand-in's to replay, not this server's). The first window holding answers.
- `none_rate`: that fraction of getDeviceListUsages channel values is answered `null` although
  the data exists; chart data stays served, as Emporia fills the values later. Only channels
  with chart data are nulled (so every null can be filled), in bursts of `none_burst_s`: a
  channel is null for every bucket whose start falls in a burst block chosen by a hash of
  (seed, device, channel, scale, block), never by request order, so a test can compute which
  were null (`answers_null`).
- `null_usage`: (device gid, channel number) pairs getDeviceListUsages answers `null` for, at
  every instant, while they are in the set: a computed channel (Balance) Emporia never
  answers for a while, whose buckets a client can only count as lost.
- `stale_day_s`: for that long after local midnight, a `1D` getDeviceListUsages for an instant
  of the new day answers the previous day's values and, as `instant`, the previous day's
  midnight (UTC), as Emporia has been seen to. A `1D` request for the previous day itself
  answers its complete total in that time, as at any other: the stale answer is Emporia
  serving yesterday's final total as today's, so yesterday's total is known. A client must
  check the answer's instant against the day it asked for.

Many accounts on one server (`accounts=N`): pyemvue's `login_simulator(url)` sends every
request to `url` + `/` + the API path, so a path prefix in `simulatorUrl` is what reaches the
server with each request (the username stays in the client). `http://HOST:PORT/account/17`
is account 17: the scenario's household with ids of its own and usage from a seed of its
own, its own counts, request log and faults, and the server's other knobs unless set on it.
The root URL stays the one account it always was. Usage models are built when asked for and
only the most recently used are kept, so a thousand accounts cost little memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar, overload
from urllib.parse import parse_qs, urlsplit

from vuegraf.simulator import electrical
from vuegraf.simulator.model import (
    COMPUTED,
    FIXED_SECONDS,
    MAINS,
    SCALES,
    ChannelSpec,
    DeviceSpec,
    Scenario,
    UsageModel,
    account_seed,
    bucket_floor,
    bucket_next,
    bucket_starts,
)

logger = logging.getLogger(__name__)

# How far back each scale's data is kept (None: forever), as Emporia users report it.
RETENTION: dict[str, timedelta | None] = {
    "1S": timedelta(hours=3),
    "1MIN": timedelta(days=7),
    "15MIN": timedelta(days=366),
    "1H": None,
    "1D": None,
    "1W": None,
    "1MON": None,
    "1Y": None,
}
# Most buckets one getChartUsage call may cover.
MAX_CHART_BUCKETS = {
    "1S": 3600,
    "1MIN": 800,
    "15MIN": 800,
    "1H": 500,
    "1D": 500,
    "1W": 500,
    "1MON": 500,
    "1Y": 500,
}
# Nominal length per scale, only for the wording of the window-limit message.
_NOMINAL_SECONDS = {**FIXED_SECONDS, "1D": 86400, "1W": 7 * 86400, "1MON": 30 * 86400}
_NOMINAL_SECONDS["1Y"] = 365 * 86400

# Usage models a many-account server keeps built at once (see _Models).
MODELS_KEPT = 64

# The endpoint names of `stats()`, faults and `withdraw`.
ENDPOINTS = frozenset({
    "customers", "devices", "status", "channeltypes", "locationProperties",
    "getDeviceListUsages", "getChartUsage", "AppAPI",
})

_ACCOUNT_PATH = re.compile(r"^/account/(0|[1-9][0-9]*)(/.*)?$")
_INSTANT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z$")
_LOCATION = re.compile(r"^/devices/(\d+)/locationProperties$")
_GID_SPLIT = re.compile(r"[ +,]+")
_KWH = electrical.KWH
T = TypeVar("T")


class _HttpError(Exception):
    """Answered with `status` and this message."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


def parse_instant(text: str) -> datetime:
    """Emporia's instant: `2026-11-23T20:00:00Z`, optionally with fractional seconds.

    Offsets such as `+00:00` are refused, as Emporia refuses them.
    """
    m = _INSTANT.match(text)
    if not m:
        raise _HttpError(f"Invalid instant {text!r}: expected e.g. 2026-11-23T20:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micros = int((m.group(7) or "0").ljust(6, "0")[:6])
    try:
        return datetime(year, month, day, hour, minute, second, micros, tzinfo=UTC)
    except ValueError as exc:
        raise _HttpError(f"Invalid instant {text!r}: {exc}") from None


def parse_instant_arg(text: str) -> datetime:
    """A command-line instant: ISO 8601 with `Z` or an offset, as aware UTC."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 instant") from None
    if t.tzinfo is None:
        raise ValueError(f"{text!r} needs Z or a UTC offset")
    return t.astimezone(UTC)


def format_instant(t: datetime) -> str:
    """UTC with a `Z`, fractional seconds only when there are any."""
    t = t.astimezone(UTC).replace(tzinfo=None)
    return t.isoformat() + "Z"


def iso_duration(seconds: int) -> str:
    """Java's Duration.toString, the way Emporia words its limits (PT13H20M)."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    text += f"{secs}S" if secs else ""
    return text if text != "PT" else "PT0S"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def clock_from(start: datetime, frozen: bool = False) -> Callable[[], datetime]:
    """A `now` for the server that says `start` at once and then runs with the wall clock
    (or stays at `start` when `frozen`), so a run can be tried at any date, DST changes
    included. The client must be shifted the same way to agree on complete buckets."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    start = start.astimezone(UTC)
    if frozen:
        return lambda: start
    offset = start - _utc_now()
    return lambda: _utc_now() + offset


@dataclass(frozen=True)
class Fault:
    """What `set_fault` makes the server answer instead of the data."""

    status: int
    endpoints: frozenset[str] | None  # None: every endpoint
    retry_after: str | int | None = None


@dataclass(frozen=True)
class FaultWindow:
    """What `add_fault_window` makes the server answer from `start` to `end` (excluded) of
    the simulator's clock: `status`, with `Retry-After` when given."""

    status: int
    start: datetime
    end: datetime
    endpoints: frozenset[str] | None = None  # None: every endpoint
    retry_after: str | int | None = None

    def holds(self, endpoint: str, at: datetime) -> bool:
        """Whether a request for `endpoint` arriving at `at` is answered with this fault."""
        in_time = self.start <= at < self.end
        return in_time and (self.endpoints is None or endpoint in self.endpoints)

    def as_fault(self) -> Fault:
        return Fault(self.status, self.endpoints, self.retry_after)


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the server saw it (with `log_requests`)."""

    at: datetime  # the simulator's clock
    endpoint: str
    scale: str
    status: int
    query: dict[str, str]
    token: str | None  # the authtoken header
    client: str | None = None  # the user of simulatorUrl's user info (see account_url)


class _Inherited(Generic[T]):
    """A test knob of an account that, on one of a many-account server's accounts, is the
    server's until set on the account itself (None: the server's again)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.slot = f"_own_{name}"

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Inherited[T]: ...

    @overload
    def __get__(self, obj: SimulatedAccount, objtype: type | None = None) -> T: ...

    def __get__(
        self, obj: SimulatedAccount | None, objtype: type | None = None
    ) -> T | _Inherited[T]:
        if obj is None:
            return self
        value: T | None = obj.__dict__.get(self.slot)
        if value is None and obj.parent is not None:
            inherited: T = getattr(obj.parent, self.name)
            return inherited
        return value  # type: ignore[return-value]  # None only where T admits it

    def __set__(self, obj: SimulatedAccount, value: T) -> None:
        obj.__dict__[self.slot] = value


class _Models:
    """The usage models of a many-account server's accounts, at most `size` built at once:
    a model's caches grow with the buckets asked for, while rebuilding one costs about
    0.15 ms and gives the same numbers. Memory stays flat however many accounts there are."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._built: OrderedDict[int, SimulatedAccount] = OrderedDict()

    def get(self, account: SimulatedAccount) -> UsageModel:
        with self._lock:
            model = account._model
            if model is None:
                model = account._model = UsageModel(account.scenario, seed=account.seed)
            self._built[id(account)] = account
            self._built.move_to_end(id(account))
            while len(self._built) > self.size:
                _key, evicted = self._built.popitem(last=False)
                evicted._model = None
            return model

    def replace(self, account: SimulatedAccount, scenario: Scenario) -> None:
        with self._lock:
            account.scenario = scenario
            account._model = None  # built again from the new scenario when next asked


class SimulatedAccount:
    """One Emporia account as the simulator serves it: its scenario and usage model, its
    test knobs and its request counts and log.

    A `SimulatorServer` is one itself (the account served at its root URL); a server made
    with `accounts=N` also serves N more, each its own `SimulatedAccount` (`account(n)`)
    whose knobs are the server's until set on it.
    """

    latency_s = _Inherited[float]()
    error_rate = _Inherited[float]()
    timeout_rate = _Inherited[float]()
    timeout_s = _Inherited[float]()
    data_delay_s = _Inherited[float]()
    now = _Inherited[Callable[[], datetime]]()
    # token_check(id_token) -> False answers 401; None: any authtoken header is accepted.
    token_check = _Inherited[Callable[[str], bool] | None]()
    log_requests = _Inherited[bool]()  # record every API request in `request_log`
    # on_request(endpoint), called as each API request arrives, before a fault or token
    # check answers it: tests switch faults, or signal vuegraf, at an exact request.
    on_request = _Inherited[Callable[[str], None] | None]()
    # Emporia's breakages (see the module docstring): null values, stale day totals.
    none_rate = _Inherited[float]()
    none_burst_s = _Inherited[float]()
    stale_day_s = _Inherited[float]()

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        stopping: threading.Event,
        parent: SimulatedAccount | None = None,
        models: _Models | None = None,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.parent = parent
        self._models = models
        self._model: UsageModel | None = None if models is not None else UsageModel(
            scenario, seed=seed
        )
        self._stopping = stopping
        self.request_log: list[RequestRecord] = []
        self._fault: Fault | None = None
        self._windows: tuple[FaultWindow, ...] = ()
        self._withdrawn: frozenset[str] = frozenset()
        self._scenario_lock = threading.Lock()
        self._rng: random.Random | None = None  # made on the first request
        self._rng_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {}
        self._errors = 0
        self._timeouts = 0
        # energyUnit values answered 400 from now on (a unit Emporia withdrew): a test knob.
        self.refused_units: set[str] = set()
        # (device gid, channel number) answered null by getDeviceListUsages: a test knob.
        self.null_usage: set[tuple[int, str]] = set()

    @property
    def model(self) -> UsageModel:
        """The usage model of the scenario served now."""
        model = self._model
        if self._models is not None:
            return self._models.get(self)
        assert model is not None
        return model

    # -- stats ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Requests received per endpoint and scale ("-" when there is none)."""
        with self._stats_lock:
            requests = {ep: dict(by_scale) for ep, by_scale in self._counts.items()}
            total = sum(sum(by_scale.values()) for by_scale in requests.values())
            return {
                "requests": requests,
                "total": total,
                "errors": self._errors,
                "timeouts": self._timeouts,
            }

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._counts = {}
            self._errors = 0
            self._timeouts = 0

    def _count(self, endpoint: str, scale: str) -> None:
        with self._stats_lock:
            by_scale = self._counts.setdefault(endpoint, {})
            by_scale[scale] = by_scale.get(scale, 0) + 1

    def _roll(self) -> tuple[bool, bool]:
        """(answer 500, hold past the client's timeout) for one request."""
        with self._rng_lock:
            if self._rng is None:
                self._rng = random.Random(self.seed)
            error = self._rng.random() < self.error_rate
            stall = not error and self._rng.random() < self.timeout_rate
        with self._stats_lock:
            self._errors += error
            self._timeouts += stall
        return error, stall

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    # -- availability ---------------------------------------------------------------------

    def current_time(self) -> datetime:
        """The injected clock's now, as aware UTC (a naive value is taken to be UTC)."""
        t = self.now()
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)

    def _available(self, scale: str, start: datetime, now: datetime) -> bool:
        """Emporia knows a bucket once it is complete (plus a delay) and until retention ends."""
        end = bucket_next(scale, start, self.model.tz)
        if end + timedelta(seconds=self.data_delay_s) > now:
            return False
        keep = RETENTION[scale]
        return keep is None or start >= now - keep

    def _served(
        self, device_gid: int, scale: str, start: datetime, now: datetime
    ) -> dict[str, float | None]:
        if not self._available(scale, start, now):
            return dict.fromkeys(n for n, _, _ in self.model.device_channels(device_gid))
        return self.model.device_values(device_gid, scale, start)

    # -- faults, auth and scenario changes (test knobs) --------------------------------------

    def set_fault(
        self,
        status: int = 429,
        endpoints: Iterable[str] | None = None,
        retry_after: str | int | None = None,
    ) -> None:
        """From now on answer `status` (with `Retry-After` when given) to every request, or
        to those of `endpoints` (names as in `stats()`), until `clear_fault()`. On a
        many-account server, the server's fault holds for every account without one."""
        self._fault = Fault(
            status, frozenset(endpoints) if endpoints is not None else None, retry_after
        )

    def clear_fault(self) -> None:
        self._fault = None

    def add_fault_window(
        self,
        status: int,
        start: datetime,
        end: datetime,
        endpoints: Iterable[str] | None = None,
        retry_after: str | int | None = None,
    ) -> FaultWindow:
        """Answer `status` to every request (or those of `endpoints`) arriving from `start` to
        `end` (excluded) by the simulator's clock. Several windows may be set; `set_fault`
        goes first. On a many-account server, the server's windows hold for every account."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("a fault window needs timezone-aware instants")
        if end <= start:
            raise ValueError(f"fault window ends ({end}) before it starts ({start})")
        HTTPStatus(status)  # ValueError for a status HTTP does not know
        window = FaultWindow(
            status,
            start.astimezone(UTC),
            end.astimezone(UTC),
            frozenset(endpoints) if endpoints is not None else None,
            retry_after,
        )
        self._windows = (*self._windows, window)
        return window

    def clear_fault_windows(self) -> None:
        self._windows = ()

    @property
    def fault_windows(self) -> tuple[FaultWindow, ...]:
        """The windows set on this account (a many-account server's own are not included)."""
        return self._windows

    def withdraw(self, *endpoints: str) -> None:
        """These endpoints (names as in `stats()`) answer 404 from now on, as an endpoint
        Emporia has removed. On a many-account server, the server's hold for every account."""
        self._withdrawn = self._withdrawn | frozenset(endpoints)

    def restore(self, *endpoints: str) -> None:
        """Withdrawn endpoints answer again (no arguments: all of them)."""
        self._withdrawn = self._withdrawn - frozenset(endpoints) if endpoints else frozenset()

    def is_withdrawn(self, endpoint: str) -> bool:
        parent = self.parent
        return endpoint in self._withdrawn or (
            parent is not None and endpoint in parent._withdrawn
        )

    def _faulted(self, endpoint: str) -> Fault | None:
        fault = self._fault
        if fault is None and self.parent is not None:
            fault = self.parent._fault
        if fault is not None and (fault.endpoints is None or endpoint in fault.endpoints):
            return fault
        windows = self._windows + (self.parent._windows if self.parent is not None else ())
        if not windows:
            return None
        at = self.current_time()
        for window in windows:
            if window.holds(endpoint, at):
                return window.as_fault()
        return None

    def answers_null(self, device_gid: int, channel_num: str, scale: str, start: datetime) -> bool:
        """Whether getDeviceListUsages answers `null` for this channel's bucket at `start`
        (with `none_rate`), although the model has its value. A pure function of the seed,
        the channel, the scale and the burst block the bucket starts in. Channels without
        chart data (Balance, MainsFromGrid, MainsToGrid) are never null: nothing fills them."""
        rate = self.none_rate
        if rate <= 0.0 or channel_num in COMPUTED:
            return False
        burst = max(int(self.none_burst_s), 1)
        block = int(start.timestamp()) // burst
        key = f"{self.seed}|{device_gid}|{channel_num}|{scale}|{block}".encode()
        draw = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
        return draw / 2.0**64 < rate

    def stale_day(self, scale: str, start: datetime, now: datetime) -> datetime | None:
        """The previous day's start when a `1D` answer for the day at `start` is stale at
        `now` (within `stale_day_s` after that day's midnight), else None."""
        if scale != "1D" or self.stale_day_s <= 0:
            return None
        if not start <= now < start + timedelta(seconds=self.stale_day_s):
            return None
        return bucket_floor("1D", start - timedelta(seconds=1), self.model.tz)

    def _record(self, endpoint: str, scale: str, status: int, query: dict[str, str],
                token: str | None, client: str | None = None) -> None:
        if self.log_requests:
            record = RequestRecord(
                self.current_time(), endpoint, scale, status, query, token, client
            )
            with self._stats_lock:
                self.request_log.append(record)

    def requests_seen(self) -> list[RequestRecord]:
        """A copy of `request_log` (thread-safe)."""
        with self._stats_lock:
            return list(self.request_log)

    def set_scenario(self, scenario: Scenario) -> None:
        """Serve another scenario from now on (same seed: unchanged channels keep their values)."""
        if self._models is not None:
            self._models.replace(self, scenario)
            return
        model = UsageModel(scenario, seed=self.seed)
        with self._scenario_lock:
            self.scenario, self._model = scenario, model

    def add_device(self, device: DeviceSpec) -> None:
        """A device appears on the account (a new plug, a second panel)."""
        self.set_scenario(replace(self.scenario, devices=(*self.scenario.devices, device)))

    def remove_device(self, device_gid: int) -> None:
        """A device leaves the account, with the devices nested on it."""
        gone = {device_gid}
        for dev in self.scenario.devices:  # parents come before children in a scenario
            if dev.parent_gid in gone:
                gone.add(dev.device_gid)
        devices = tuple(d for d in self.scenario.devices if d.device_gid not in gone)
        self.set_scenario(replace(self.scenario, devices=devices))

    def add_circuit(self, device_gid: int, channel: ChannelSpec) -> None:
        """A circuit is added to a panel (after its others, so theirs keep their values)."""
        self._change_device(device_gid, lambda d: replace(d, channels=(*d.channels, channel)))

    def remove_circuit(self, device_gid: int, channel_num: str) -> None:
        """A circuit is removed from a panel."""
        self._change_device(
            device_gid,
            lambda d: replace(d, channels=tuple(
                c for c in d.channels if c.channel_num != channel_num)),
        )

    def _change_device(self, device_gid: int, change: Callable[[DeviceSpec], DeviceSpec]) -> None:
        self.scenario.device(device_gid)  # KeyError for an unknown device
        devices = tuple(
            change(d) if d.device_gid == device_gid else d for d in self.scenario.devices
        )
        self.set_scenario(replace(self.scenario, devices=devices))

    # -- JSON bodies ----------------------------------------------------------------------

    def customer_json(self) -> dict[str, Any]:
        c = self.scenario.customer
        return {
            "customerGid": c.customer_gid,
            "email": c.email,
            "firstName": c.first_name,
            "lastName": c.last_name,
            "createdAt": c.created_at,
        }

    def location_json(self, dev: DeviceSpec) -> dict[str, Any]:
        sc = self.scenario
        return {
            "deviceGid": dev.device_gid,
            "deviceName": dev.name,
            "displayName": dev.name,
            "zipCode": sc.zip_code,
            "timeZone": sc.timezone,
            "billingCycleStartDay": 1,
            "usageCentPerKwHour": 15.0,
            "peakDemandDollarPerKw": 0.0,
            "solar": dev.bidirectional,
            "utilityRateGid": None,
            "locationInformation": {
                "airConditioning": "true",
                "heatSource": "electricFurnace",
                "locationSqFt": "2100",
                "numElectricCars": "1",
                "locationType": "houseMultiLevel",
                "numPeople": "4",
                "swimmingPool": "false",
                "hotTub": "false",
            },
            "latitudeLongitude": {"latitude": sc.latitude, "longitude": sc.longitude},
        }

    def _connected_json(self, dev: DeviceSpec, now: datetime) -> dict[str, Any]:
        online = self.model.online(dev.device_gid, now)
        since = None if online else format_instant(bucket_floor("1MIN", now, self.model.tz))
        return {"deviceGid": dev.device_gid, "connected": online, "offlineSince": since}

    def _outlet_json(self, dev: DeviceSpec) -> dict[str, Any]:
        return {
            "deviceGid": dev.device_gid,
            "outletOn": True,
            "loadGid": dev.device_gid * 10,
            "schedules": [],
        }

    def _charger_json(self, dev: DeviceSpec, now: datetime) -> dict[str, Any]:
        charging = self.model.charging(dev.device_gid, now)
        return {
            "deviceGid": dev.device_gid,
            "loadGid": dev.device_gid * 10,
            "chargerOn": True,
            "message": "",
            "status": "Charging" if charging else "Standby",
            "icon": "CarCharging" if charging else "CarConnected",
            "iconLabel": "Charging" if charging else "Ready",
            "iconDetailText": "",
            "faultText": "",
            "chargingRate": 30,
            "maxChargingRate": 40,
            "offPeakSchedulesEnabled": False,
            "customSchedules": [],
            "debugCode": "",
            "proControlCode": "",
            "breakerPIN": "",
        }

    def _channel_json(
        self, dev: DeviceSpec, num: str, name: str | None, type_gid: int | None, mult: float
    ) -> dict[str, Any]:
        if num == MAINS:
            kind = "Main"
        elif any(c.channel_num == num and c.watts < 0 for c in dev.channels):
            kind = "FiftyAmpBidirectional"
        else:
            kind = "FiftyAmp"
        return {
            "deviceGid": dev.device_gid,
            "name": name,
            "channelNum": num,
            "channelMultiplier": mult,
            "channelTypeGid": type_gid,
            "type": kind,
            "parentChannelNum": None,
        }

    def device_json(self, dev: DeviceSpec, now: datetime) -> dict[str, Any]:
        """One entry of /customers/devices; a panel carries its circuits in a nameless twin."""
        body: dict[str, Any] = {
            "deviceGid": dev.device_gid,
            "manufacturerDeviceId": dev.manufacturer_id,
            "model": dev.model,
            "firmware": dev.firmware,
            "parentDeviceGid": dev.parent_gid,
            "parentChannelNum": dev.parent_channel,
            "locationProperties": self.location_json(dev),
            "outlet": self._outlet_json(dev) if dev.kind == "outlet" else None,
            "evCharger": self._charger_json(dev, now) if dev.kind == "charger" else None,
            "battery": None,
            "deviceConnected": self._connected_json(dev, now),
            # Emporia leaves the mains channel unnamed in this list ("Main" only in usages).
            "channels": [self._channel_json(dev, MAINS, None, None, 1.0)],
            "devices": [],
        }
        if dev.is_panel:
            body["devices"] = [
                {
                    "deviceGid": dev.device_gid,
                    "manufacturerDeviceId": dev.manufacturer_id,
                    "model": dev.model,
                    "firmware": dev.firmware,
                    "parentDeviceGid": None,
                    "parentChannelNum": None,
                    "deviceConnected": self._connected_json(dev, now),
                    "channels": [
                        self._channel_json(
                            dev, c.channel_num, c.name, c.channel_type_gid, c.multiplier
                        )
                        for c in dev.channels
                    ],
                    "devices": [],
                }
            ]
        return body

    def devices_json(self, now: datetime) -> dict[str, Any]:
        return {
            **self.customer_json(),
            "devices": [self.device_json(d, now) for d in self.scenario.devices],
        }

    def status_json(self, now: datetime) -> dict[str, Any]:
        devs = self.scenario.devices
        return {
            "devicesConnected": [self._connected_json(d, now) for d in devs],
            "outlets": [self._outlet_json(d) for d in devs if d.kind == "outlet"],
            "evChargers": [self._charger_json(d, now) for d in devs if d.kind == "charger"],
        }

    def channel_types_json(self) -> list[dict[str, Any]]:
        return [
            {
                "channelTypeGid": t.gid,
                "description": t.description,
                "selectable": t.selectable,
                "iconUrl": None,
            }
            for t in self.scenario.channel_types
        ]

    def device_list_usages(
        self, gids_text: str, instant_text: str, scale: str, unit: str = _KWH
    ) -> dict[str, Any]:
        """getDeviceListUsages: a requested child of a requested panel comes nested in it."""
        instant = parse_instant(instant_text)
        requested: list[int] = []
        for part in _GID_SPLIT.split(gids_text.strip()):
            if not part:
                continue
            if not part.isdigit():
                raise _HttpError(f"Invalid deviceGids {gids_text!r}")
            gid = int(part)
            if gid not in requested and any(d.device_gid == gid for d in self.scenario.devices):
                requested.append(gid)
        wanted = set(requested)
        tz = self.model.tz
        start = bucket_floor(scale, instant, tz)
        now = self.current_time()
        answered = instant
        previous = self.stale_day(scale, start, now)
        if previous is not None:
            start = answered = previous  # yesterday's total, under yesterday's instant
        nulls = self.none_rate > 0.0

        def entry(gid: int) -> dict[str, Any]:
            values = electrical.convert(
                self.seed, gid, start, self._served(gid, scale, start, now), unit
            )
            mains = values.get(MAINS)
            usages = []
            for num, name, _chart in self.model.device_channels(gid):
                usage = values.get(num)
                if nulls and usage is not None and self.answers_null(
                    gid, num, scale, start
                ):
                    usage = None
                if (gid, num) in self.null_usage:
                    usage = None
                if num == MAINS:
                    pct: float = 100.0
                elif usage is None or not mains:
                    pct = 0.0
                else:
                    pct = usage / mains * 100.0
                nested = [
                    entry(d.device_gid)
                    for d in self.scenario.devices
                    if d.parent_gid == gid and d.parent_channel == num and d.device_gid in wanted
                ]
                usages.append(
                    {
                        "name": name,
                        "usage": usage,
                        "deviceGid": gid,
                        "channelNum": num,
                        "percentage": pct,
                        "nestedDevices": nested,
                    }
                )
            return {"deviceGid": gid, "channelUsages": usages}

        top = [gid for gid in requested if self.scenario.device(gid).parent_gid not in wanted]
        return {
            "deviceListUsages": {
                "instant": format_instant(answered),
                "scale": scale,
                "devices": [entry(gid) for gid in top],
                "energyUnit": unit,
            }
        }

    def chart_usage(
        self, gid_text: str, channel: str, start_text: str, end_text: str, scale: str
    ) -> dict[str, Any]:
        """getChartUsage: one value per bucket from the one holding start to the one holding end."""
        start = parse_instant(start_text)
        end = parse_instant(end_text)
        if start > end:
            raise _HttpError(f"start {start_text} is after end {end_text}")
        tz = self.model.tz
        starts = bucket_starts(scale, start, end, tz, MAX_CHART_BUCKETS[scale])
        if starts is None:
            span = (end - start).total_seconds()
            limit = MAX_CHART_BUCKETS[scale] * _NOMINAL_SECONDS[scale]
            raise _HttpError(
                f"Requested time range of {iso_duration(int(span))} for scale {scale} is "
                f"larger than the allowed limit of {iso_duration(limit)}"
            )
        gid = int(gid_text) if gid_text.isdigit() else -1
        known = {(g, num) for g, num, _, _, chart in self.model.channels() if chart}
        if (gid, channel) not in known:
            return {"usageList": [], "firstUsageInstant": format_instant(start)}
        now = self.current_time()
        usage: list[float | None] = []
        if scale in FIXED_SECONDS:
            # Availability is a window of bucket starts; skip the per-bucket date arithmetic.
            step = FIXED_SECONDS[scale]
            newest = now - timedelta(seconds=self.data_delay_s + step)
            keep = RETENTION[scale]
            oldest = now - keep if keep is not None else None
            for s in starts:
                if s > newest or (oldest is not None and s < oldest):
                    usage.append(None)
                else:
                    usage.append(self.model.kwh(gid, channel, scale, s))
        else:
            for s in starts:
                ok = self._available(scale, s, now)
                usage.append(self.model.kwh(gid, channel, scale, s) if ok else None)
        return {"usageList": usage, "firstUsageInstant": format_instant(starts[0])}


class SimulatorServer(SimulatedAccount):
    """A threaded HTTP server answering pyemvue's Emporia calls; start(), stop(), or `with`.

    It serves one account at its root URL (`url`), and with `accounts=N` N more, account n
    under `account_url(n)` (`url` + `/account/n`): each with the scenario's household under
    ids of its own (`Scenario.for_account`) and usage of its own (`account_seed`), counted
    and logged apart (`account(n).stats()`, `account(n).requests_seen()`).
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        seed: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        timeout_s: float = 15.0,
        data_delay_s: float = 3.0,
        now: Callable[[], datetime] | None = None,
        accounts: int = 0,
        models_kept: int = MODELS_KEPT,
        none_rate: float = 0.0,
        none_burst_s: float = 300.0,
        stale_day_s: float = 0.0,
    ) -> None:
        scenario = scenario if scenario is not None else Scenario.default()
        super().__init__(scenario, seed, threading.Event())
        self.host = host
        self.port = port
        self.latency_s = latency_s
        self.error_rate = error_rate
        self.timeout_rate = timeout_rate
        self.timeout_s = timeout_s
        self.data_delay_s = data_delay_s
        self.now = now if now is not None else _utc_now
        self.token_check = None
        self.log_requests = False
        self.on_request = None
        self.none_rate = none_rate
        self.none_burst_s = none_burst_s
        self.stale_day_s = stale_day_s
        if accounts < 0:
            raise ValueError(f"accounts={accounts}: must not be negative")
        if accounts:
            scenario.for_account(0)  # a scenario whose gids cannot be shifted fails here
        self.accounts = accounts
        self._account_models = _Models(models_kept)
        self._accounts: dict[int, SimulatedAccount] = {}
        self._accounts_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- many accounts --------------------------------------------------------------------

    def account(self, number: int) -> SimulatedAccount:
        """Account `number` (0 .. accounts-1), made on first use; IndexError beyond."""
        if not 0 <= number < self.accounts:
            raise IndexError(f"account {number}: this simulator serves 0..{self.accounts - 1}")
        with self._accounts_lock:
            acct = self._accounts.get(number)
            if acct is None:
                acct = SimulatedAccount(
                    self.scenario.for_account(number),
                    account_seed(self.seed, number),
                    self._stopping,
                    parent=self,
                    models=self._account_models,
                )
                self._accounts[number] = acct
            return acct

    def account_url(self, number: int, client: str | None = None) -> str:
        """The `simulatorUrl` of account `number`. With `client`, requests through it carry
        that name (as HTTP Basic user info, which requests sends) into `RequestRecord.client`,
        so a test can tell which of several vuegraf processes asked."""
        self.account(number)  # IndexError for an account not served
        user = f"{client}:x@" if client is not None else ""
        return f"http://{user}{self.host}:{self.port}/account/{number}"

    def served_accounts(self) -> dict[int, SimulatedAccount]:
        """The accounts asked for so far, by number."""
        with self._accounts_lock:
            return dict(self._accounts)

    def route(self, path: str) -> tuple[SimulatedAccount | None, str]:
        """(the account a request path is for, the path within it); None: no such account."""
        m = _ACCOUNT_PATH.match(path)
        if m is None:
            return self, path
        number = int(m.group(1))
        if number >= self.accounts:
            return None, path
        return self.account(number), m.group(2) or "/"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> SimulatorServer:
        """Bind (port 0 picks a free one) and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.app = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"vuegraf-simulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests held by latency or a simulated timeout are released at once."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for a request held by a simulated timeout
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 drops SYNs under a burst: 1 s client retries
    app: SimulatorServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "vuegraf-simulator"
    protocol_version = "HTTP/1.0"
    # (endpoint, scale, query, authtoken) of the API request being answered, for request_log
    _request: tuple[str, str, dict[str, str], str | None] | None = None
    _account: SimulatedAccount | None = None  # the account the request is for (see route)

    @property
    def _app(self) -> SimulatedAccount:
        return self._account if self._account is not None else self.server.app

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: access lines go to debug logging, never to stderr."""
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        request = self._request
        if request is not None:
            endpoint, scale, query, token = request
            self._app._record(endpoint, scale, int(status), query, token, self._client())
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("client went away before the answer to %s", self.path)

    def _error(
        self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None
    ) -> None:
        body = {"error": status.phrase, "message": message, "status": int(status)}
        self._send(status, body, headers)

    def _refused(self, token: str, endpoint: str) -> bool:
        """Answer a refused token (401) or a set fault; True when answered."""
        app = self._app
        check = app.token_check
        if check is not None and not check(token):
            self._error(HTTPStatus.UNAUTHORIZED, "Unauthorized")
            return True
        fault = app._faulted(endpoint)
        if fault is None:
            return False
        status = HTTPStatus(fault.status)
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        self._error(status, f"Simulated {status.phrase}", headers)
        return True

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        app, path = self.server.app.route(parts.path.rstrip("/") or "/")
        if app is None:
            self._error(HTTPStatus.NOT_FOUND, f"No account at {parts.path}")
            return
        self._account = app
        if path.startswith("/simulator/"):
            self._simulator(method, path)
            return
        endpoint, scale = self._route(method, path, query)
        if endpoint is None:
            self._error(HTTPStatus.NOT_FOUND, f"No handler for {method} {parts.path}")
            return
        app._count(endpoint, scale)
        hook = app.on_request
        if hook is not None:
            hook(endpoint)
        token = self.headers.get("authtoken")
        self._request = (endpoint, scale, query, token)  # recorded by _send with its status
        if token is None:
            self._error(HTTPStatus.UNAUTHORIZED, "Missing authtoken header")
            return
        if app.is_withdrawn(endpoint):
            self._error(HTTPStatus.NOT_FOUND, "Not Found")
            return
        if self._refused(token, endpoint):
            return
        error, stall = app._roll()
        app._wait(app.latency_s)
        if stall:
            app._wait(app.timeout_s)
        if error:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "Simulated server error")
            return
        try:
            self._send(HTTPStatus.OK, self._answer(endpoint, path, query))
        except _HttpError as exc:
            self._error(exc.status, str(exc))
        except Exception:
            logger.exception("simulator failed on %s", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "Simulator bug")

    def _route(self, method: str, path: str, query: dict[str, str]) -> tuple[str | None, str]:
        """Which endpoint a request is, for the stats; None when it is not one."""
        if method != "GET":
            return None, "-"
        if path == "/customers":
            return "customers", "-"
        if path == "/customers/devices":
            return "devices", "-"
        if path == "/customers/devices/status":
            return "status", "-"
        if path == "/devices/channels/channeltypes":
            return "channeltypes", "-"
        if _LOCATION.match(path):
            return "locationProperties", "-"
        if path == "/AppAPI":
            method_name = query.get("apiMethod", "")
            if method_name in ("getDeviceListUsages", "getChartUsage"):
                return method_name, query.get("scale", "-") or "-"
            return "AppAPI", "-"
        return None, "-"

    def _client(self) -> str | None:
        """The user of HTTP Basic credentials, which requests sends for a URL's user info."""
        kind, _, value = (self.headers.get("Authorization") or "").partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            text = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return text.partition(":")[0] or None

    def _answer(self, endpoint: str, path: str, query: dict[str, str]) -> Any:
        app = self._app
        if endpoint == "customers":
            return app.customer_json()
        if endpoint == "devices":
            return app.devices_json(app.current_time())
        if endpoint == "status":
            return app.status_json(app.current_time())
        if endpoint == "channeltypes":
            return app.channel_types_json()
        if endpoint == "locationProperties":
            m = _LOCATION.match(path)
            gid = int(m.group(1)) if m else -1
            dev = next((d for d in app.scenario.devices if d.device_gid == gid), None)
            if dev is None:
                raise _HttpError(f"Unknown device {gid}", HTTPStatus.NOT_FOUND)
            return app.location_json(dev)
        if endpoint == "AppAPI":
            raise _HttpError(f"Unknown apiMethod {query.get('apiMethod', '')!r}")
        scale = _param(query, "scale")
        if scale not in SCALES:
            raise _HttpError(f"Invalid scale {scale!r}")
        unit = query.get("energyUnit") or _KWH
        if unit in app.refused_units:
            raise _HttpError(f"energyUnit {unit!r} is not supported")
        if endpoint == "getDeviceListUsages" and unit in electrical.UNITS:
            return app.device_list_usages(
                _param(query, "deviceGids"), _param(query, "instant"), scale, unit
            )
        if unit != _KWH:
            raise _HttpError(f"energyUnit {unit!r} is not simulated for {endpoint}")
        return app.chart_usage(
            _param(query, "deviceGid"),
            _param(query, "channel"),
            _param(query, "start"),
            _param(query, "end"),
            scale,
        )

    def _simulator(self, method: str, path: str) -> None:
        app = self._app
        if path == "/simulator/stats" and method == "GET":
            self._send(HTTPStatus.OK, app.stats())
        elif path == "/simulator/reset-stats" and method == "POST":
            app.reset_stats()
            self._send(HTTPStatus.OK, app.stats())
        else:
            self._error(HTTPStatus.NOT_FOUND, f"No handler for {method} {path}")


def _param(query: dict[str, str], name: str) -> str:
    value = query.get(name)
    if value is None or value == "":
        raise _HttpError(f"Missing parameter {name}")
    return value
