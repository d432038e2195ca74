"""One account's pyemvue session: login, token files, every request counted, 429s honoured.

Every HTTP request pyemvue sends goes through `EmporiaSession._send` (pyemvue's `Auth` is
adopted the moment `login` creates it), which is where vuegraf:
- counts each request, pyemvue's own retries included, so the daily count is what
  Emporia saw;
- runs pyemvue's 5xx retries on its terms: fewer attempts, and the waits between
  them through the clock, so SIGTERM ends them at once (pyemvue itself would sleep
  0.5 + 1 + 2 + 4 + 8 s, uninterruptibly, for one failing request);
- honours HTTP 429: no request to Emporia before its `Retry-After` (or an own
  back-off when it gives none). That state is kept per Emporia account in `RateLimits`,
  which `cli.main` builds once, so a reload's new sessions remember it.

A session that keeps failing, or that Emporia no longer accepts (`EmporiaSessionExpired`:
its tokens expired or were revoked), is thrown away and the next call logs in afresh, with
the stored tokens, then the password (the re-login rule, `_call_failed`). Only a refused
password login is `EmporiaAuthFailed`, the user's side.

Adopting pyemvue's `Auth` relies on pyemvue internals (`Auth._do_request`, its retry
settings, `login` assigning `self.auth`), so setup.py pins pyemvue to `SUPPORTED_PYEMVUE`
and `pyemvue_problem` says in one line when the installed pyemvue lacks one of them.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pyemvue import PyEmVue
from pyemvue.auth import Auth, SimulatedAuth
from pyemvue.pyemvue import API_ROOT
from requests import Response

from vuegraf import __version__, backoff
from vuegraf.clock import Clock
from vuegraf.config import AccountConfig
from vuegraf.emporia.errors import (
    EmporiaAuthFailed,
    EmporiaDown,
    EmporiaError,
    EmporiaRateLimited,
    EmporiaServerError,
    EmporiaSessionExpired,
    EmporiaStopped,
    PyemvueUnsupported,
    classified,
    describe_unreachable,
    for_status,
    host_of,
    reworded,
    short,
)
from vuegraf.stats import Stats

logger = logging.getLogger(__name__)

# The back-off rules of this module live in vuegraf.backoff, with every other one.
RELOGIN_AFTER_FAILURES = backoff.RELOGIN_AFTER_FAILURES
RATE_LIMIT_WAIT = backoff.RATE_LIMITED.first
RETRY_AFTER_CAP = backoff.RETRY_AFTER_CAP
# The pyemvue releases whose internals `_adopt` is written for (setup.py pins the same range).
SUPPORTED_PYEMVUE = ">=0.18.9,<0.19"
# What vuegraf uses beyond pyemvue's documented calls.
_VUE_METHODS = ("login", "login_simulator", "get_devices", "get_device_list_usage",
                "get_chart_usage")
_AUTH_METHODS = ("request", "_do_request")
_AUTH_RETRY_SETTINGS = ("max_retry_attempts", "initial_retry_delay", "max_retry_delay")


@dataclass(frozen=True)
class RetryPolicy:
    """pyemvue's own retries of a 5xx answer, as vuegraf runs them.

    pyemvue's defaults are 5 attempts with sleeps of 0.5, 1, 2, 4 and 8 s (the last one
    after the final attempt, for nothing): one failing request holds a tick, and a
    SIGTERM, for 15.5 s and costs 5 requests. A quick second try still rides over a
    blip; a longer outage is vuegraf's to handle (the next tick, then back-off, and the
    holes filled afterwards). Tests set the delays to zero.
    """

    attempts: int = backoff.EMPORIA_ATTEMPTS
    first_delay_s: float = backoff.EMPORIA_RETRY.first.total_seconds()
    max_delay_s: float = backoff.EMPORIA_RETRY.most.total_seconds()

    def delay(self, failed_attempts: int) -> float:
        """Wait after the `failed_attempts`-th 5xx answer, before the next attempt."""
        return min(self.first_delay_s * 2.0 ** (failed_attempts - 1), self.max_delay_s)


def pyemvue_version() -> str:
    try:
        return package_version("pyemvue")
    except PackageNotFoundError:
        return "(version unknown)"


def pyemvue_problem(vue_cls: type[Any] = PyEmVue, auth_cls: type[Any] = Auth) -> str | None:
    """One line saying what of pyemvue's internals this vuegraf needs and the installed
    pyemvue lacks; None when everything is there. Checked once at start (`cli.main`) and at
    an account's first login, so a pyemvue outside `SUPPORTED_PYEMVUE` fails with this line
    instead of an AttributeError at every login."""
    missing = [f"PyEmVue.{n}" for n in _VUE_METHODS if not callable(getattr(vue_cls, n, None))]
    missing += [f"Auth.{n}" for n in _AUTH_METHODS if not callable(getattr(auth_cls, n, None))]
    params: Collection[str]
    try:
        params = inspect.signature(auth_cls.__init__).parameters
    except (TypeError, ValueError):
        params = ()  # no signature to read: every setting counts as missing
    missing += [f"Auth({n}=...)" for n in _AUTH_RETRY_SETTINGS if n not in params]
    return _unsupported(missing) if missing else None


def _unsupported(missing: Iterable[str]) -> str:
    return (
        f"pyemvue {pyemvue_version()} is not supported by this vuegraf: it has no "
        f"{', '.join(missing)} (vuegraf {__version__} needs pyemvue{SUPPORTED_PYEMVUE}; "
        "reinstall vuegraf with its pinned dependencies)"
    )


@dataclass
class _Limit:
    not_before: datetime | None = None
    wait: timedelta = RATE_LIMIT_WAIT  # the next own back-off when a 429 has no Retry-After


class RateLimits:
    """What Emporia's 429 answers asked, per Emporia account (by e-mail), for the process.

    Built once in `cli.main` (like `Stats`) and handed to every run's accounts: a SIGHUP
    reload builds new `EmporiaAccount` objects, and they must not ask Emporia again before
    a Retry-After the old ones were given. Thread-safe (history's workers share it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limits: dict[str, _Limit] = {}

    @staticmethod
    def key(account: AccountConfig) -> str:
        return account.email.strip().lower()

    def not_before(self, key: str) -> datetime | None:
        with self._lock:
            limit = self._limits.get(key)
            return None if limit is None else limit.not_before

    def limited(self, key: str, now: datetime, given: timedelta | None) -> datetime:
        """Note a 429 answered at `now`; `given` is its Retry-After (None: none given, use
        the own back-off, doubling while 429s go on). Returns the new `not_before`."""
        with self._lock:
            limit = self._limits.setdefault(key, _Limit())
            if given is None and limit.not_before is not None and now < limit.not_before:
                # Sent before the last 429 came back (history's workers): the same episode,
                # not a reason to back off further.
                return limit.not_before
            if given is None:
                wait = limit.wait
                limit.wait = backoff.RATE_LIMITED.doubled(wait)
            else:
                wait = min(given, RETRY_AFTER_CAP)
            until = now + wait
            limit.not_before = max(limit.not_before or until, until)
            return limit.not_before

    def answered(self, key: str) -> None:
        """Emporia answered a request (not with an error): the own back-off starts over."""
        with self._lock:
            limit = self._limits.get(key)
            if limit is not None:
                limit.wait = RATE_LIMIT_WAIT


class _AdoptingVue(PyEmVue):  # type: ignore[misc]  # pyemvue has no type hints
    """PyEmVue that hands each `Auth` it creates (inside `login`) to `on_auth` before that
    Auth sends anything, so the login's own requests are configured and counted too."""

    def __init__(self, on_auth: Callable[[Auth], None]) -> None:
        super().__init__()
        self._on_auth = on_auth
        self._auth: Auth | None = None

    @property
    def adopted(self) -> bool:
        """True once pyemvue assigned `self.auth` (and `on_auth` took it over)."""
        return self._auth is not None

    @property
    def auth(self) -> Auth:
        if self._auth is None:
            raise AttributeError("auth")
        return self._auth

    @auth.setter
    def auth(self, value: Auth) -> None:
        self._on_auth(value)
        self._auth = value


class EmporiaSession:
    """One configured account's way to Emporia: a pyemvue session made on first use, every
    request through it counted and held back while a 429's wait lasts, and replaced by a
    new login when it keeps failing. What the requests ask and mean is the catalogue's."""

    def __init__(
        self,
        account: AccountConfig,
        clock: Clock,
        stats: Stats | None = None,
        state_dir: Path | None = None,
        vue_factory: Callable[[], PyEmVue] | None = None,
        timeouts: tuple[float, float] = (6.03, 10.03),
        retry: RetryPolicy = RetryPolicy(),
        limits: RateLimits | None = None,
    ) -> None:
        """`timeouts` are pyemvue's (connect, read) seconds per request; pyemvue itself
        retries 5xx answers (as `retry` says), so vuegraf adds no retry loop of its own
        per request. `state_dir` keeps the login tokens (None: no token file). `vue_factory`
        replaces pyemvue in tests; its requests are counted only when it is pyemvue's (a
        fake has no HTTP to count). `limits` keeps 429 waits beyond this object's life (a
        reload); by default this account's own."""
        self.account = account
        self.clock = clock
        self.stats = stats if stats is not None else Stats()
        self.state_dir = state_dir
        self._vue_factory: Callable[[], PyEmVue] = (
            vue_factory if vue_factory is not None else lambda: _AdoptingVue(self._adopt)
        )
        self.timeouts = timeouts
        self.retry = retry
        # History's workers share this account: one of them logs in while the others wait,
        # and the re-login decision and the failure count are made under the same lock.
        self._session_lock = threading.Lock()
        self._vue: PyEmVue | None = None
        self._failures_in_a_row = 0
        self._pyemvue_checked = False
        self._limits = limits if limits is not None else RateLimits()
        self._limit_key = RateLimits.key(account)
        self._request = threading.local()  # one pyemvue request: its 5xx answers, last status

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def token_file(self) -> Path | None:
        """Where this account's Cognito tokens are kept (mode 0600), so a restart needs no
        password login. One file per account, named by a digest of the e-mail address."""
        if self.state_dir is None:
            return None
        digest = hashlib.sha256(self.account.email.lower().encode()).hexdigest()[:16]
        return self.state_dir / f"emporia-tokens-{digest}.json"

    @property
    def last_status(self) -> int | None:
        """The HTTP status of the last request this thread sent (None: none answered), for
        the pyemvue calls that answer an error status with an empty result."""
        status: int | None = getattr(self._request, "status", None)
        return status

    def _session(self) -> PyEmVue:
        """The current pyemvue session, logging in first when there is none. One thread
        logs in; others that need the session meanwhile wait for it, and use it."""
        with self._session_lock:
            if self._vue is None:
                if not self._pyemvue_checked:
                    problem = pyemvue_problem()
                    if problem is not None:
                        raise PyemvueUnsupported(problem)
                    self._pyemvue_checked = True
                if self.account.simulator_url:
                    vue = self._login("simulator", lambda v: v.login_simulator(
                        self.account.simulator_url, username=self.account.email))
                else:
                    vue = self._login_cognito()
                logger.info("Account %s: logged in", self.name)
                self._vue = vue
                self._failures_in_a_row = 0
            return self._vue

    def _call_failed(self, vue: PyEmVue, err: Exception, expired: bool = False) -> None:
        """Count a failed call made with session `vue`; drop the session after
        RELOGIN_AFTER_FAILURES in a row (or one auth failure), so the next call logs in.

        A call made with a session another thread has already replaced counts for nothing:
        the new session has not failed yet."""
        with self._session_lock:
            if self._vue is not vue:
                return
            self._failures_in_a_row += 1
            if (expired or _looks_like_auth(err)
                    or self._failures_in_a_row >= RELOGIN_AFTER_FAILURES):
                # A revoked or expired session never heals by itself: log in afresh next time.
                self._vue = None
                self._failures_in_a_row = 0

    def _call_succeeded(self, vue: PyEmVue) -> None:
        with self._session_lock:
            if self._vue is vue:
                self._failures_in_a_row = 0

    def _login(self, how: str, fn: Callable[[PyEmVue], bool]) -> PyEmVue:
        """One login; counted as `login` (not an Emporia API request: its API request,
        /customers, is counted by `_send` like any other)."""
        vue = self._vue_factory()
        vue.connect_timeout, vue.read_timeout = self.timeouts
        try:
            ok = fn(vue)
            if isinstance(vue, _AdoptingVue) and not vue.adopted:
                # pyemvue's login no longer assigns `self.auth`: nothing would be counted.
                raise PyemvueUnsupported(_unsupported(["PyEmVue.login assigning self.auth"]))
        except PyemvueUnsupported:
            raise
        except EmporiaError as err:  # raised by _send: already worded
            self._count("login", "error", budgeted=False)
            raise reworded(err, f"{how} login failed") from None
        except Exception as err:  # pyemvue raises botocore/requests errors of many kinds
            self._count("login", "error", budgeted=False)
            raise self._translated(f"{how} login failed", err, login=True) from None
        self._count("login", "ok" if ok else "error", budgeted=False)
        if not ok:
            tokens = getattr(getattr(vue, "auth", None), "tokens", None)
            if tokens:
                # pyemvue says False for a refused password and for an empty /customers
                # answer alike; with tokens in hand it was the latter: Emporia's side.
                raise EmporiaDown(
                    f"{how} login failed: Emporia sent no customer record",
                    "no customer record after the credentials were accepted",
                )
            raise EmporiaAuthFailed(
                f"{how} login failed: Emporia did not accept the credentials",
                "the login service refused them",
            )
        return vue

    def _login_cognito(self) -> PyEmVue:
        """Stored tokens first (refreshed by pyemvue as needed); the password when they fail.

        Emporia failing (its side: 5xx, 429, no answer, the login service's 502, a 400 of
        `/customers`) or a stop is no reason to doubt the tokens: then the password login is
        not tried (it would fail the same way, at twice the cost) and the file is kept.
        """
        token_file = self.token_file
        # Empty: made (0600) for a password login that failed; no tokens to try.
        if token_file is not None and token_file.exists() and token_file.stat().st_size:
            try:
                return self._login("token", lambda v: v.login(
                    username=self.account.email, token_storage_file=str(token_file)))
            except (EmporiaDown, EmporiaStopped):
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

    def call(self, what: str, fn: Callable[[PyEmVue], Any]) -> Any:
        """One pyemvue call (its requests are counted by `_send`), errors as EmporiaError
        led by `what` (the request, as a log line names it)."""
        self._check_rate_limit(what)
        vue = self._session()
        try:
            result = fn(vue)
        except (EmporiaRateLimited, EmporiaStopped) as err:
            # Not the session's fault: no re-login for these.
            raise reworded(err, f"{what} failed") from None
        except Exception as err:
            status = self.last_status
            if type(err) is EmporiaError and status is not None and status >= 400:
                # Raised by the caller for an error status pyemvue turned into an empty
                # answer: the status says whose side it is.
                err = for_status(str(err), status, getattr(self._request, "endpoint", ""))
            failed = (
                reworded(err, f"{what} failed") if isinstance(err, EmporiaError)
                else self._translated(f"{what} failed", err)
            )
            if isinstance(failed, EmporiaAuthFailed):
                # A session that worked (pyemvue renews its tokens inside the call) is no
                # longer accepted: expired or revoked, no sign of a wrong password. Dropped
                # below; the next call logs in again, and only a refused password login
                # there is the user's side.
                failed = EmporiaSessionExpired(str(failed), "its tokens were refused")
            self._call_failed(vue, err, expired=isinstance(failed, EmporiaSessionExpired))
            raise failed from None
        self._call_succeeded(vue)
        return result

    def _translated(self, failed: str, err: Exception, login: bool = False) -> EmporiaError:
        """A library's exception as one short line of the class that says whose side it is
        on (`classified`): `failed` (what failed), and for a connection that failed, the
        host and why (its full text only at DEBUG: -d)."""
        if describe_unreachable(err) is not None:
            logger.debug("Account %s: %s: %s: %s", self.name, failed, type(err).__name__, err)
        return classified(failed, err, self._api_host(), login)

    def _api_host(self) -> str:
        """The host this account's API requests go to, for messages."""
        return host_of(self.account.simulator_url or API_ROOT) or API_ROOT

    # -- every HTTP request pyemvue sends -------------------------------------------------

    def _adopt(self, auth: Auth) -> None:
        """Take over a new pyemvue Auth before its first request: timeouts, retries, and
        every request through `_send`. SimulatedAuth has no retry loop (one attempt)."""
        missing = [f"Auth.{n}" for n in _AUTH_METHODS if not callable(getattr(auth, n, None))]
        if not isinstance(auth, SimulatedAuth):
            missing += [f"Auth.{n}" for n in _AUTH_RETRY_SETTINGS if not hasattr(auth, n)]
        if missing:
            raise PyemvueUnsupported(_unsupported(missing))
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
        local = self._request

        def counted_request(method: str, path: str, **kwargs: Any) -> Response:
            local.count = 0
            local.status = None
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
        self._request.status = status
        self._request.endpoint = endpoint
        self._count(endpoint, "ok" if status < 400 else f"http_{status}")
        if status == 429:
            raise self._rate_limited(response.headers.get("Retry-After"))
        if status < 400:
            self._limits.answered(self._limit_key)
        if status >= 500:
            failed = getattr(self._request, "count", 0) + 1
            self._request.count = failed
            if failed >= attempts:
                raise EmporiaServerError(
                    f"Emporia answered HTTP {status} ({failed} attempt{'s' if failed > 1 else ''})",
                    f"HTTP {status} at {endpoint}",
                )
            if self.clock.wait(self.retry.delay(failed)):
                raise EmporiaStopped(f"Emporia answered HTTP {status}; retry cut short by a stop")
        return response

    def _rate_limited(self, retry_after: str | None) -> EmporiaRateLimited:
        """Note a 429: no request before its Retry-After, or an own doubling back-off."""
        now = self.clock.now()
        given = _retry_after(retry_after, now)
        not_before = self._limits.limited(self._limit_key, now, given)
        if given is None:
            why = "no Retry-After given"
        else:
            why = f"Retry-After {short(retry_after)[:40]}"
        return EmporiaRateLimited(
            "Emporia answered HTTP 429 (too many requests); next request after "
            f"{not_before.strftime('%Y-%m-%d %H:%M:%S')} UTC ({why})",
            not_before,
        )

    def _check_rate_limit(self, what: str) -> None:
        not_before = self._limits.not_before(self._limit_key)
        if not_before is not None and self.clock.now() < not_before:
            raise EmporiaRateLimited(
                f"{what} not sent: Emporia asked to wait until "
                f"{not_before.strftime('%Y-%m-%d %H:%M:%S')} UTC (HTTP 429)",
                not_before,
                sent=False,
            )

    @property
    def not_before(self) -> datetime | None:
        """After a 429: the earliest time Emporia may be asked again (None: any time)."""
        return self._limits.not_before(self._limit_key)


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
    if text.isascii() and text.isdigit():
        # Capped before the timedelta is built: a huge number would overflow it.
        return timedelta(seconds=min(int(text), int(RETRY_AFTER_CAP.total_seconds())))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(when - now, timedelta(0)), RETRY_AFTER_CAP)


def _looks_like_auth(err: Exception) -> bool:
    if describe_unreachable(err) is not None:
        return False  # "port=401" in a connection error is no expired session
    text = f"{type(err).__name__} {err}"
    return any(word in text for word in ("NotAuthorized", "401", "Unauthorized", "expired"))


def _private_file(path: Path) -> None:
    """Create `path` readable by its owner only, before pyemvue writes tokens into it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
