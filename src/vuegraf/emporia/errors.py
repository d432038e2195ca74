"""What a failed Emporia request or login becomes, whose side it is on, and how it is worded.

Callers decide by type alone: every failure is an `EmporiaError`, and its class says whose
side the failure is on, which is what a user needs to know first:
- the user's (`EmporiaAuthFailed`: Emporia's login service refused the e-mail or password,
  or `EmporiaLoginChallenge`: it asks for a new password or a second factor; it will not
  heal by itself, so it is asked again only after a long back-off);
- Emporia's (`EmporiaDown`: 5xx, no answer, the login service failing, `/customers`
  refusing a login whose credentials were accepted, a 200 that is no JSON: a gateway's
  page or a body cut short; `EmporiaSessionExpired`: a session that worked is no longer
  accepted, so the next call logs in again; `EmporiaRateLimited`: 429); retried
  with the usual back-off, the stored tokens kept, the holes filled once it answers;
- Emporia changed its API (`EmporiaApiChanged`: an endpoint vuegraf uses answers 404, or
  an answer pyemvue cannot read): vuegraf (or pyemvue) needs an update.
Each class's `state` is the account state `Stats.set_account_state` shows, and `plainly`
says the failure in the words of the one log line. A connection that failed is told in a
few words with its host (`describe_unreachable`), never as a traceback.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
import ssl
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import requests
import urllib3
from urllib3.exceptions import NameResolutionError

# The account states of `Stats.set_account_state`, one per side.
OK = "ok"
AUTH_FAILED = "auth_failed"  # the user's side
EMPORIA_DOWN = "emporia_down"  # Emporia's side
RATE_LIMITED = "rate_limited"  # Emporia's side: it asked for fewer requests
API_CHANGED = "api_changed"  # Emporia changed its API: vuegraf needs an update
ACCOUNT_STATES = (OK, AUTH_FAILED, EMPORIA_DOWN, RATE_LIMITED, API_CHANGED)

# Cognito error codes that mean "these credentials are refused" (the user's side).
_REFUSED_CODES = frozenset({
    "NotAuthorizedException", "UserNotFoundException", "PasswordResetRequiredException",
    "UserNotConfirmedException",
})
# Cognito error codes that mean "the login service is failing or busy" (Emporia's side).
_BUSY_CODES = frozenset({
    "InternalErrorException", "TooManyRequestsException", "LimitExceededException",
    "ServiceUnavailable", "ThrottlingException",
})


class EmporiaError(Exception):
    """A failed Emporia request or login; the cycle is retried at the next tick.

    `why` is the failure in a few words for the one log line ("HTTP 502 from the login
    service"); the message says what failed in full. A failure no subclass claims is taken
    as Emporia's (retried with the usual back-off)."""

    state: ClassVar[str] = EMPORIA_DOWN

    def __init__(self, message: str, why: str = "") -> None:
        super().__init__(message)
        self.why = why


class EmporiaDown(EmporiaError):
    """Emporia's side: it answered with an error, or did not answer. Never a reason to
    doubt the session's credentials or the stored tokens."""


class EmporiaUnreachable(EmporiaDown):
    """No answer: the connection was refused, the host name did not resolve, the request
    timed out, TLS failed. Never a reason to doubt the session or the stored tokens."""


class EmporiaServerError(EmporiaDown):
    """Emporia (or its login service) answered 5xx to every attempt made."""


class EmporiaRateLimited(EmporiaDown):
    """Emporia answered 429 (or did so recently): no request before `not_before`.

    `sent` is False when vuegraf itself held the request back (an earlier 429's wait is not
    over): Emporia saw nothing, so it is no failed attempt of anything."""

    state: ClassVar[str] = RATE_LIMITED

    def __init__(
        self, message: str, not_before: datetime, sent: bool = True, why: str = "HTTP 429"
    ) -> None:
        super().__init__(message, why)
        self.not_before = not_before
        self.sent = sent


class EmporiaAuthFailed(EmporiaError):
    """The user's side: Emporia's login service refused the e-mail or the password."""

    state: ClassVar[str] = AUTH_FAILED


class EmporiaLoginChallenge(EmporiaAuthFailed):
    """The user's side: the login service asks for more than the password (a new password,
    a second factor), which vuegraf cannot give; `why` says what the user must do."""


class EmporiaSessionExpired(EmporiaDown):
    """A session that worked is no longer accepted (its refresh token expired or was
    revoked): no sign of a wrong password, so the next call logs in afresh (stored tokens,
    then the password); only a refused password login is `EmporiaAuthFailed`."""


class EmporiaApiChanged(EmporiaError):
    """Emporia changed its API: an endpoint vuegraf uses is gone (404), or an answer is
    in a shape pyemvue cannot read. Retrying does not help until vuegraf is updated."""

    state: ClassVar[str] = API_CHANGED


class PyemvueUnsupported(EmporiaApiChanged):
    """The installed pyemvue lacks an internal vuegraf relies on (see `pyemvue_problem`)."""


class EmporiaStopped(EmporiaError):
    """A stop was requested: the request was not sent (or its retries were cut short)."""


def reworded(err: EmporiaError, failed: str) -> EmporiaError:
    """`err` again, of the same class and with the same details, its message led by `failed`
    (what failed)."""
    if isinstance(err, EmporiaRateLimited):
        return EmporiaRateLimited(f"{failed}: {err}", err.not_before, err.sent, err.why)
    return type(err)(f"{failed}: {err}", err.why)


def reason(err: EmporiaError) -> str:
    """Whose side `err` is on, in a few words: the reason the health check and `/metrics`
    show ("Emporia refused the login (check email and password in vuegraf.json)")."""
    why = err.why or short(err)
    if isinstance(err, EmporiaLoginChallenge):
        return f"Emporia's login needs you ({why})"
    if isinstance(err, EmporiaAuthFailed):
        return "Emporia refused the login (check email and password in vuegraf.json)"
    if isinstance(err, EmporiaSessionExpired):
        return f"Emporia no longer accepts the session ({why}); logging in again"
    if isinstance(err, PyemvueUnsupported):
        return "the installed pyemvue is not the one this vuegraf needs (reinstall vuegraf)"
    if isinstance(err, EmporiaApiChanged):
        return f"Emporia's API has changed ({why}); vuegraf needs an update"
    if isinstance(err, EmporiaRateLimited):
        return f"Emporia asks for fewer requests ({why})"
    if isinstance(err, EmporiaUnreachable):
        return f"Emporia cannot be reached ({why})"
    return f"Emporia is failing ({why})"


def plainly(err: EmporiaError) -> str:
    """The one log line's words for `err`: whose side it is on and what vuegraf does now
    (for a refused login the caller says when it asks again)."""
    why = err.why or short(err)
    if isinstance(err, EmporiaLoginChallenge):
        return f"Emporia's login needs you (your side: {why}; SIGHUP reloads it)"
    if isinstance(err, EmporiaSessionExpired):
        return (
            f"Emporia no longer accepts the session ({why}); logging in again at the next "
            "tick, holes are filled afterwards"
        )
    if isinstance(err, EmporiaAuthFailed):
        return (
            "Emporia refused the login (your side: check email and password in vuegraf.json; "
            "SIGHUP reloads it)"
        )
    if isinstance(err, PyemvueUnsupported):
        return f"this vuegraf cannot talk to Emporia ({why})"
    if isinstance(err, EmporiaApiChanged):
        return (
            f"Emporia's API has changed (neither your side nor an outage: {why}); this "
            "vuegraf needs an update; retrying with back-off"
        )
    if isinstance(err, EmporiaRateLimited):
        return (
            f"Emporia asks for fewer requests (its side, {why}); waiting as it asks, holes "
            "are filled afterwards"
        )
    if isinstance(err, EmporiaUnreachable):
        # The message before this says which host and why; whose side is not known for sure.
        return (
            "Emporia cannot be reached (its side, or the network's); retrying with back-off, "
            "holes are filled once it answers"
        )
    return (
        f"Emporia is failing (its side, {why}); retrying with back-off, holes are filled "
        "once it answers"
    )


def for_status(message: str, status: int, endpoint: str = "", login: bool = False) -> EmporiaError:
    """An error answer of Emporia's API (after pyemvue's retries), classified by status:
    404 is an endpoint gone (its API changed), 5xx and any other refusal Emporia's side
    (`/customers` answered 400 for five hours in September 2026, while logins were fine)."""
    at = f" at {endpoint}" if endpoint else ""
    if status == 404:
        return EmporiaApiChanged(message, f"HTTP 404{at}: the endpoint is gone")
    if status >= 500:
        return EmporiaServerError(message, f"HTTP {status}{at}")
    accepted = " after the credentials were accepted" if login else ""
    return EmporiaDown(message, f"HTTP {status}{at}{accepted}")


def _route(url: str) -> str:
    """The endpoint of an API URL, as a message names it (`customers`, `getChartUsage`)."""
    parts = urlsplit(url)
    route = parts.path.strip("/")
    if route == "AppAPI":
        return parse_qs(parts.query).get("apiMethod", [route])[-1]
    return route


def _client_error(causes: list[BaseException]) -> tuple[str, int | None, str] | None:
    """(code, HTTP status, message) of a botocore `ClientError` (the login service, AWS
    Cognito) among `causes`; None when there is none. Read by shape, not type, so the
    Cognito stand-in's errors and botocore's are read alike."""
    for exc in causes:
        response: Any = getattr(exc, "response", None)
        if isinstance(response, dict) and isinstance(response.get("Error"), dict):
            error = response["Error"]
            meta = response.get("ResponseMetadata") or {}
            status = meta.get("HTTPStatusCode")
            return (
                str(error.get("Code") or ""),
                status if isinstance(status, int) else None,
                str(error.get("Message") or ""),
            )
    return None


def classified(failed: str, err: BaseException, host: str, login: bool = False) -> EmporiaError:
    """A library's exception (pyemvue, requests, botocore) as one short `EmporiaError`
    led by `failed` (what failed), of the class that says whose side it is on. `host` names
    the API in a message when the exception does not; `login` is True inside a login."""
    causes = _causes(err)
    unreachable = describe_unreachable(err)
    if unreachable is not None:
        why, at = unreachable
        return EmporiaUnreachable(f"{failed}: {at or host}: {why}", f"{at or host}: {why}")
    text = f"{type(err).__name__}: {short(err)}"
    message = f"{failed}: {text}"
    boto = _client_error(causes)
    if boto is not None:
        code, status, said = boto
        if code in _REFUSED_CODES:
            return EmporiaAuthFailed(message, f"the login service refused them: {code}")
        if (status is not None and status >= 500) or code in _BUSY_CODES or status == 429:
            shown = f"HTTP {status}" if status is not None else code
            return EmporiaServerError(message, f"{shown} from the login service")
        return EmporiaApiChanged(message, f"the login service answered {code}: {short(said)}")
    if any("NotAuthorized" in f"{type(e).__name__} {e}" for e in causes):
        return EmporiaAuthFailed(message, "the login service refused them")
    for exc in causes:
        answer = getattr(exc, "response", None)
        if isinstance(exc, requests.HTTPError) and isinstance(answer, requests.Response):
            return for_status(message, answer.status_code, _route(answer.url or ""), login)
    if any(isinstance(e, ValueError) and "Not authenticated" in str(e) for e in causes):
        return EmporiaAuthFailed(message, "no tokens and no password accepted")
    challenge = _challenge(causes)
    if challenge is not None:
        return EmporiaLoginChallenge(message, challenge)
    if any(isinstance(e, json.JSONDecodeError) for e in causes):
        # A 200 with a gateway's HTML page or a body cut short: an outage or a proxy, not a
        # new shape of Emporia's answers (that would still be JSON).
        return EmporiaDown(message, "an answer that is not JSON (an HTML page, or cut short)")
    if any(isinstance(e, (ValueError, KeyError, TypeError, AttributeError, IndexError))
           for e in causes):
        return EmporiaApiChanged(message, f"an answer pyemvue cannot read: {text[:120]}")
    return EmporiaError(message)


# pycognito's exceptions (plain Exceptions, read by class name, as botocore's are by shape)
# for a login that asks for more than the password, and what the user must do then.
_CHALLENGES = {
    "ForceChangePasswordException": (
        "the login service asks for a new password: set one in the Emporia app, then in "
        "vuegraf.json"
    ),
    "MFAChallengeException": (
        "the login service asks for a second factor (MFA), which vuegraf cannot give: turn "
        "MFA off for this account"
    ),
}


def _challenge(causes: list[BaseException]) -> str | None:
    """What the user must do when `causes` hold a login challenge vuegraf cannot answer."""
    for exc in causes:
        for cls in type(exc).__mro__:
            if cls.__name__ in _CHALLENGES:
                return _CHALLENGES[cls.__name__]
    return None


def short(err: object) -> str:
    """An error's text on one line and not too long, for a log line."""
    return str(err).strip().replace("\n", " ")[:300]


# Socket errors that mean "no way to the host" (not a file vuegraf or pyemvue failed to open).
_NETWORK_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL,
     errno.ECONNABORTED}
)


def _causes(err: BaseException) -> list[BaseException]:
    """`err` and every exception inside it: raised from or while handling, and what
    requests, urllib3 and botocore wrap as an argument or a `reason`."""
    found: list[BaseException] = []
    todo = [err]
    while todo:
        exc = todo.pop(0)
        if any(exc is seen for seen in found):
            continue
        found.append(exc)
        inner = [exc.__cause__, exc.__context__, getattr(exc, "reason", None), *exc.args]
        todo.extend(e for e in inner if isinstance(e, BaseException))
    return found


def _reason(causes: list[BaseException]) -> str | None:
    """Why a connection failed, in a few words; None when `causes` show no connection failure."""

    def has(*types: type[BaseException]) -> BaseException | None:
        return next((e for e in causes if isinstance(e, types)), None)

    if has(socket.gaierror, NameResolutionError):
        return "name not resolved"
    if has(ConnectionRefusedError):
        return "connection refused"
    if has(TimeoutError, requests.exceptions.Timeout, urllib3.exceptions.TimeoutError):
        return "timed out"
    tls = has(ssl.SSLError)
    if tls is not None:
        if isinstance(tls, ssl.SSLCertVerificationError) and tls.verify_message:
            return f"TLS error: certificate verify failed ({tls.verify_message})"
        detail = str(getattr(tls, "reason", "") or "").lower().replace("_", " ")
        return f"TLS error ({detail})" if detail else "TLS error"
    if has(requests.exceptions.SSLError, urllib3.exceptions.SSLError):
        return "TLS error"
    if has(http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if has(ConnectionResetError):
        return "connection reset"
    for exc in causes:
        if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
            return os.strerror(exc.errno).lower()  # "network is unreachable", ...
    if has(requests.exceptions.ConnectionError, urllib3.exceptions.NewConnectionError,
           urllib3.exceptions.ProtocolError, ConnectionError):
        return "connection failed"
    return None


def host_of(url: str | None) -> str | None:
    """`host` or `host:port` of a URL (never its user, password, path or query)."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def describe_unreachable(err: BaseException) -> tuple[str, str | None] | None:
    """(why, host) when `err` is a connection that failed (refused, name not resolved, timed
    out, TLS); None for any other error. `host` is the one the request went to, when the
    exception says (requests' and botocore's do)."""
    causes = _causes(err)
    reason = _reason(causes)
    if reason is None:
        return None
    for exc in causes:
        request = getattr(exc, "request", None)
        host = host_of(getattr(request, "url", None))
        if host is None:  # botocore (AWS Cognito, the login)
            endpoint = (getattr(exc, "kwargs", None) or {}).get("endpoint_url")
            host = host_of(endpoint) if isinstance(endpoint, str) else None
        if host is not None:
            return reason, host
    return reason, None
