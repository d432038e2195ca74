"""The only module that talks to pyemvue: login, device metadata, usage → points.

One `EmporiaAccount` per configured account. Device metadata is read at start
and again on a timer or when a usage answer names a device we do not know; the
per-minute path costs exactly one `getDeviceListUsages` request per account.

Every HTTP request pyemvue sends goes through `EmporiaAccount._send` (pyemvue's
`Auth` is adopted the moment `login` creates it), which is where vuegraf:
- counts each request, pyemvue's own retries included, so the daily count is what
  Emporia saw;
- runs pyemvue's 5xx retries on its terms: fewer attempts, and the waits between
  them through the clock, so SIGTERM ends them at once (pyemvue itself would sleep
  0.5 + 1 + 2 + 4 + 8 s, uninterruptibly, for one failing request);
- honours HTTP 429: no request to Emporia before its `Retry-After` (or an own
  back-off when it gives none).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pyemvue import PyEmVue
from pyemvue.auth import Auth, SimulatedAuth
from pyemvue.device import VueDeviceChannel
from requests import Response

from vuegraf.clock import Clock
from vuegraf.config import AccountConfig, Config
from vuegraf.model import Point, Scale, point_from_kwh
from vuegraf.naming import NO_CHART_CHANNELS, channel_name, device_name
from vuegraf.schedule import bucket_starts, point_time
from vuegraf.stats import Stats

logger = logging.getLogger(__name__)

# pyemvue retries getDeviceListUsages with 2-30 s sleeps whenever any channel is
# null; an offline plug would stall every cycle for a minute. One attempt: a
# missing value is logged, counted and filled later from chart data.
USAGE_ATTEMPTS = 1
# Requests failing in a row before the session is thrown away and a new login made.
RELOGIN_AFTER_FAILURES = 5
# Without a Retry-After, a 429 stops requests for this long, doubling while it lasts.
RATE_LIMIT_WAIT = timedelta(minutes=1)
RATE_LIMIT_MAX_WAIT = timedelta(minutes=30)
# A Retry-After longer than this is taken as this (a wrong header must not stop us for weeks).
RETRY_AFTER_CAP = timedelta(hours=6)


@dataclass(frozen=True)
class RetryPolicy:
    """pyemvue's own retries of a 5xx answer, as vuegraf runs them.

    pyemvue's defaults are 5 attempts with sleeps of 0.5, 1, 2, 4 and 8 s (the last one
    after the final attempt, for nothing): one failing request holds a tick, and a
    SIGTERM, for 15.5 s and costs 5 requests. A quick second try still rides over a
    blip; a longer outage is vuegraf's to handle (the next tick, then back-off, and the
    holes filled afterwards). Tests set the delays to zero.
    """

    attempts: int = 3
    first_delay_s: float = 0.5
    max_delay_s: float = 4.0

    def delay(self, failed_attempts: int) -> float:
        """Wait after the `failed_attempts`-th 5xx answer, before the next attempt."""
        return min(self.first_delay_s * 2.0 ** (failed_attempts - 1), self.max_delay_s)


class EmporiaError(Exception):
    """A failed Emporia request or login; the cycle is retried at the next tick."""


class EmporiaServerError(EmporiaError):
    """Emporia answered 5xx to every attempt pyemvue made."""


class EmporiaRateLimited(EmporiaError):
    """Emporia answered 429 (or did so recently): no request before `not_before`."""

    def __init__(self, message: str, not_before: datetime) -> None:
        super().__init__(message)
        self.not_before = not_before


class EmporiaStopped(EmporiaError):
    """A stop was requested: the request was not sent (or its retries were cut short)."""


class _AdoptingVue(PyEmVue):  # type: ignore[misc]  # pyemvue has no type hints
    """PyEmVue that hands each `Auth` it creates (inside `login`) to `on_auth` before that
    Auth sends anything, so the login's own requests are configured and counted too."""

    def __init__(self, on_auth: Callable[[Auth], None]) -> None:
        super().__init__()
        self._on_auth = on_auth
        self._auth: Auth | None = None

    @property
    def auth(self) -> Auth:
        if self._auth is None:
            raise AttributeError("auth")
        return self._auth

    @auth.setter
    def auth(self, value: Auth) -> None:
        self._on_auth(value)
        self._auth = value


@dataclass
class DeviceInfo:
    """What vuegraf needs to know of one Emporia device (the twin entries merged)."""

    gid: int
    name: str
    channels: dict[str, str] = field(default_factory=dict)  # channel number -> Emporia name
    parent_gid: int | None = None
    parent_channel: str | None = None
    connected: bool | None = None  # as Emporia last said (deviceConnected), None: not told


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
        for chan in getattr(dev, "channels", None) or []:
            info.channels.setdefault(str(chan.channel_num), chan.name or "")
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


class EmporiaAccount:
    """One configured account: its pyemvue session, device metadata and usage reads."""

    def __init__(
        self,
        account: AccountConfig,
        config: Config,
        clock: Clock,
        stats: Stats | None = None,
        vue_factory: Callable[[], PyEmVue] | None = None,
        timeouts: tuple[float, float] = (6.03, 10.03),
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        """`timeouts` are pyemvue's (connect, read) seconds per request; pyemvue itself
        retries 5xx answers (as `retry` says), so vuegraf adds no retry loop of its own
        per request. `vue_factory` replaces pyemvue in tests; its requests are counted
        only when it is pyemvue's (a fake has no HTTP to count)."""
        self.account = account
        self.config = config
        self.clock = clock
        self.stats = stats if stats is not None else Stats()
        self._vue_factory: Callable[[], PyEmVue] = (
            vue_factory if vue_factory is not None else lambda: _AdoptingVue(self._adopt)
        )
        self.timeouts = timeouts
        self.retry = retry
        self._vue: PyEmVue | None = None
        self.devices: dict[int, DeviceInfo] = {}
        self._devices_read_at: datetime | None = None
        self._refresh_wanted = True
        self.missing_values = 0
        self._failures_in_a_row = 0
        self._limit_lock = threading.Lock()
        self._not_before: datetime | None = None  # after a 429: no request before this
        self._rate_wait = RATE_LIMIT_WAIT
        self._server_errors = threading.local()  # 5xx answers so far in one pyemvue request

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def token_file(self) -> Path | None:
        """Where this account's Cognito tokens are kept (mode 0600), so a restart needs no
        password login. One file per account, named by a digest of the e-mail address."""
        if self.config.state_dir is None:
            return None
        digest = hashlib.sha256(self.account.email.lower().encode()).hexdigest()[:16]
        return self.config.state_dir / f"emporia-tokens-{digest}.json"

    def _session(self) -> PyEmVue:
        if self._vue is None:
            if self.account.simulator_url:
                vue = self._login("simulator", lambda v: v.login_simulator(
                    self.account.simulator_url, username=self.account.email))
            else:
                vue = self._login_cognito()
            logger.info("Account %s: logged in", self.name)
            self._vue = vue
        return self._vue

    def _login(self, how: str, fn: Callable[[PyEmVue], bool]) -> PyEmVue:
        """One login; counted as `login` (not an Emporia API request: its API request,
        /customers, is counted by `_send` like any other)."""
        vue = self._vue_factory()
        vue.connect_timeout, vue.read_timeout = self.timeouts
        try:
            ok = fn(vue)
            auth = getattr(vue, "auth", None)
            if auth is not None:  # SimulatedAuth ignores the PyEmVue settings
                auth.connect_timeout, auth.read_timeout = self.timeouts
        except EmporiaError as err:  # raised by _send: already worded
            self._count("login", "error", budgeted=False)
            raise type(err)(f"{how} login failed: {err}", *_extra(err)) from None
        except Exception as err:  # pyemvue raises botocore/requests errors of many kinds
            self._count("login", "error", budgeted=False)
            raise EmporiaError(f"{how} login failed: {type(err).__name__}: {_short(err)}") from None
        self._count("login", "ok" if ok else "error", budgeted=False)
        if not ok:
            raise EmporiaError(f"{how} login failed: Emporia did not accept the credentials")
        return vue

    def _login_cognito(self) -> PyEmVue:
        """Stored tokens first (refreshed by pyemvue as needed); the password when they fail.

        Emporia failing (5xx, 429) or a stop is no reason to doubt the tokens: then the
        password login is not tried (it would fail the same way, at twice the cost).
        """
        token_file = self.token_file
        if token_file is not None and token_file.exists():
            try:
                return self._login("token", lambda v: v.login(
                    username=self.account.email, token_storage_file=str(token_file)))
            except (EmporiaServerError, EmporiaRateLimited, EmporiaStopped):
                raise
            except EmporiaError as err:
                logger.warning(
                    "Account %s: stored tokens did not work (%s); logging in with the password",
                    self.name,
                    err,
                )
        if token_file is not None:
            _private_file(token_file)
        return self._login("password", lambda v: v.login(
            username=self.account.email,
            password=self.account.password,
            token_storage_file=str(token_file) if token_file else None,
        ))

    @property
    def requests(self) -> int:
        """Requests this account made today (UTC), for the daily budget."""
        return self.stats.requests_today(self.name)

    def _count(self, endpoint: str, outcome: str, budgeted: bool = True) -> None:
        today = self.stats.count_request(
            self.name, endpoint, outcome, self.clock.now(), budgeted=budgeted
        )
        if budgeted and today == self.stats.budget + 1:
            logger.warning(
                "Account %s: %d Emporia requests today, over the ~%d a day Emporia asks for",
                self.name,
                today,
                self.stats.budget,
            )

    def _call(self, what: str, fn: Callable[[PyEmVue], Any]) -> Any:
        """One pyemvue call (its requests are counted by `_send`), errors as EmporiaError."""
        self._check_rate_limit(what)
        vue = self._session()
        try:
            result = fn(vue)
        except (EmporiaRateLimited, EmporiaStopped) as err:
            # Not the session's fault: no re-login for these.
            raise type(err)(f"{what} failed: {err}", *_extra(err)) from None
        except Exception as err:
            self._failures_in_a_row += 1
            if _looks_like_auth(err) or self._failures_in_a_row >= RELOGIN_AFTER_FAILURES:
                # A revoked or expired session never heals by itself: log in afresh next time.
                self._vue = None
                self._failures_in_a_row = 0
            if isinstance(err, EmporiaError):
                raise type(err)(f"{what} failed: {err}") from None
            raise EmporiaError(f"{what} failed: {type(err).__name__}: {_short(err)}") from None
        self._failures_in_a_row = 0
        return result

    # -- every HTTP request pyemvue sends -------------------------------------------------

    def _adopt(self, auth: Auth) -> None:
        """Take over a new pyemvue Auth before its first request: timeouts, retries, and
        every request through `_send`. SimulatedAuth has no retry loop (one attempt)."""
        auth.connect_timeout, auth.read_timeout = self.timeouts
        attempts = 1
        if not isinstance(auth, SimulatedAuth):
            attempts = max(self.retry.attempts, 1)
            auth.max_retry_attempts = attempts
            # pyemvue sleeps these itself (uninterruptibly): zero, _send waits instead.
            auth.initial_retry_delay = 0.0
            auth.max_retry_delay = 0.0
        send = auth._do_request
        request = auth.request
        local = self._server_errors

        def counted_request(method: str, path: str, **kwargs: Any) -> Response:
            local.count = 0
            response: Response = request(method, path, **kwargs)
            return response

        def counted_send(method: str, path: str, **kwargs: Any) -> Response:
            return self._send(send, attempts, method, path, **kwargs)

        auth.request = counted_request
        auth._do_request = counted_send

    def _send(
        self,
        send: Callable[..., Response],
        attempts: int,
        method: str,
        path: str,
        **kwargs: Any,
    ) -> Response:
        """One HTTP request of pyemvue's: counted, refused while rate limited or stopping,
        and, after a 5xx, the wait before pyemvue's next attempt (or the end of them)."""
        endpoint = _endpoint(path)
        if self.clock.stopped:
            raise EmporiaStopped(f"{endpoint} not sent: vuegraf is stopping")
        self._check_rate_limit(endpoint)
        try:
            response = send(method, path, **kwargs)
        except Exception:
            self._count(endpoint, "error")  # sent, no answer (timeout, connection reset)
            raise
        status = response.status_code
        self._count(endpoint, "ok" if status < 400 else f"http_{status}")
        if status == 429:
            raise self._rate_limited(response.headers.get("Retry-After"))
        if status < 400:
            with self._limit_lock:
                self._rate_wait = RATE_LIMIT_WAIT
        if status >= 500:
            failed = getattr(self._server_errors, "count", 0) + 1
            self._server_errors.count = failed
            if failed >= attempts:
                raise EmporiaServerError(
                    f"Emporia answered HTTP {status} ({failed} attempt{'s' if failed > 1 else ''})"
                )
            if self.clock.wait(self.retry.delay(failed)):
                raise EmporiaStopped(f"Emporia answered HTTP {status}; retry cut short by a stop")
        return response

    def _rate_limited(self, retry_after: str | None) -> EmporiaRateLimited:
        """Note a 429: no request before its Retry-After, or an own doubling back-off."""
        now = self.clock.now()
        given = _retry_after(retry_after, now)
        with self._limit_lock:
            if given is None:
                wait = self._rate_wait
                self._rate_wait = min(wait * 2, RATE_LIMIT_MAX_WAIT)
                why = "no Retry-After given"
            else:
                wait = min(given, RETRY_AFTER_CAP)
                why = f"Retry-After {retry_after}"
            until = now + wait
            self._not_before = max(self._not_before or until, until)
            not_before = self._not_before
        return EmporiaRateLimited(
            "Emporia answered HTTP 429 (too many requests); next request after "
            f"{not_before.strftime('%Y-%m-%d %H:%M:%S')} UTC ({why})",
            not_before,
        )

    def _check_rate_limit(self, what: str) -> None:
        with self._limit_lock:
            not_before = self._not_before
        if not_before is not None and self.clock.now() < not_before:
            raise EmporiaRateLimited(
                f"{what} not sent: Emporia asked to wait until "
                f"{not_before.strftime('%Y-%m-%d %H:%M:%S')} UTC (HTTP 429)",
                not_before,
            )

    @property
    def not_before(self) -> datetime | None:
        """After a 429: the earliest time Emporia may be asked again (None: any time)."""
        with self._limit_lock:
            return self._not_before

    def refresh_devices_if_due(self) -> None:
        """Re-read device metadata at start, on the refresh timer, or after an unknown device."""
        now = self.clock.now()
        due = (
            self._refresh_wanted
            or self._devices_read_at is None
            or now - self._devices_read_at >= timedelta(seconds=self.config.device_refresh_secs)
        )
        if due:
            self.refresh_devices()

    def refresh_devices(self) -> None:
        vue_devices = self._call("get_devices", lambda vue: vue.get_devices())
        self.devices = merge_devices(vue_devices)
        self._devices_read_at = self.clock.now()
        self._refresh_wanted = False
        logger.info(
            "Account %s: %d devices, %d channels",
            self.name,
            len(self.devices),
            sum(len(d.channels) for d in self.devices.values()),
        )

    def usage(self, scale: Scale, instant: datetime) -> list[UsageReading]:
        """One getDeviceListUsages request for every device of the account."""
        self.refresh_devices_if_due()
        gids = sorted(self.devices)
        if not gids:
            return []
        answer = self._call(
            "getDeviceListUsages",
            lambda vue: vue.get_device_list_usage(
                deviceGids=gids,
                instant=instant,
                scale=scale.value,
                max_retry_attempts=USAGE_ATTEMPTS,
            ),
        )
        if not answer:
            # pyemvue answers {} instead of raising when Emporia returns an error status.
            raise EmporiaError("getDeviceListUsages failed: Emporia sent no usage data")
        return flatten_usage(answer.values())

    def points(self, scale: Scale, bucket_start: datetime, stamp: datetime) -> list[Point]:
        """Every channel's usage for the bucket at `bucket_start`, as points stamped `stamp`."""
        points: list[Point] = []
        missing: list[str] = []
        for reading in self.usage(scale, bucket_start):
            dev = self.devices.get(reading.device_gid)
            if dev is None:
                self._refresh_wanted = True
                dev_name = device_name(None, reading.device_gid)
            else:
                dev_name = dev.name
            chan = channel_name(
                self.account,
                dev_name,
                reading.channel_num,
                reading.emporia_name,
                self.config.use_emporia_channel_names,
            )
            if reading.kwh is None:
                missing.append(chan)
                continue
            points.append(point_from_kwh(self.name, dev_name, chan, scale, stamp, reading.kwh))
        if missing:
            self.missing_values += len(missing)
            logger.info(
                "Account %s: no %s value yet for %s at %s",
                self.name,
                scale.value,
                ", ".join(missing),
                bucket_start.isoformat(),
            )
        if self._refresh_wanted:
            logger.info("Account %s: unknown device in usage answer; re-reading devices", self.name)
        return points

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
            self.config.use_emporia_channel_names,
        )
        return dev_name, chan

    def chart(
        self, device_gid: int, channel_num: str, scale: Scale, first: datetime, last: datetime
    ) -> list[tuple[datetime, float | None]]:
        """getChartUsage for buckets `first`..`last` (inclusive): (bucket start, kWh or None)."""
        channel = VueDeviceChannel(gid=device_gid, channelNum=channel_num)
        usage, instant = self._call(
            "getChartUsage",
            lambda vue: vue.get_chart_usage(channel, first, last, scale=scale.value),
        )
        if not usage:
            return []
        start = instant if instant is not None else first
        starts = bucket_starts(scale, start, len(usage), self.config.zone)
        return [
            (t, None if kwh is None else float(kwh)) for t, kwh in zip(starts, usage, strict=True)
        ]

    def chart_points(
        self, device_gid: int, channel_num: str, scale: Scale, first: datetime, last: datetime
    ) -> tuple[list[Point], list[datetime]]:
        """Chart data as points, plus the bucket starts that had no value."""
        values = self.chart(device_gid, channel_num, scale, first, last)
        missing = [start for start, kwh in values if kwh is None]
        return self.chart_values_to_points(device_gid, channel_num, scale, values), missing

    def chart_values_to_points(
        self,
        device_gid: int,
        channel_num: str,
        scale: Scale,
        values: Iterable[tuple[datetime, float | None]],
    ) -> list[Point]:
        """Named, stamped points for the buckets of a chart answer that have a value."""
        dev_name, chan = self.series_name(device_gid, channel_num)
        zone = self.config.zone
        return [
            point_from_kwh(self.name, dev_name, chan, scale, point_time(scale, start, zone), kwh)
            for start, kwh in values
            if kwh is not None
        ]


_ENDPOINTS = {
    "customers": "customers",
    "customers/devices": "devices",
    "customers/devices/status": "status",
    "devices/channels/channeltypes": "channeltypes",
}


def _endpoint(path: str) -> str:
    """The API endpoint a pyemvue path is, named as in the simulator's stats."""
    parts = urlsplit(path)
    route = parts.path.strip("/")
    if route == "AppAPI":
        return parse_qs(parts.query).get("apiMethod", ["AppAPI"])[-1]
    if route.startswith("devices/") and route.endswith("/locationProperties"):
        return "locationProperties"
    return _ENDPOINTS.get(route, route or "other")


def _retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A Retry-After header (seconds, or an HTTP date) as a wait from `now`."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - now, timedelta(0))


def _extra(err: EmporiaError) -> tuple[Any, ...]:
    """The constructor arguments after the message, to re-raise `err` with a new one."""
    return (err.not_before,) if isinstance(err, EmporiaRateLimited) else ()


def _looks_like_auth(err: Exception) -> bool:
    text = f"{type(err).__name__} {err}"
    return any(word in text for word in ("NotAuthorized", "401", "Unauthorized", "expired"))


def _private_file(path: Path) -> None:
    """Create `path` readable by its owner only, before pyemvue writes tokens into it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _short(err: object) -> str:
    return str(err).strip().replace("\n", " ")[:300]
