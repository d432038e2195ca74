"""What a failed Emporia request or login becomes, and how a failed connection is worded.

Callers decide by type alone: every failure is an `EmporiaError`; its subclasses say whether
Emporia was reached at all, answered 5xx or 429, or vuegraf was stopping. A connection that
failed is told in a few words with its host (`describe_unreachable`), never as a traceback.
"""

from __future__ import annotations

import errno
import http.client
import os
import socket
import ssl
from datetime import datetime
from urllib.parse import urlsplit

import requests
import urllib3
from urllib3.exceptions import NameResolutionError


class EmporiaError(Exception):
    """A failed Emporia request or login; the cycle is retried at the next tick."""


class EmporiaUnreachable(EmporiaError):
    """No answer: the connection was refused, the host name did not resolve, the request
    timed out, TLS failed. Never a reason to doubt the session or the stored tokens."""


class EmporiaServerError(EmporiaError):
    """Emporia answered 5xx to every attempt pyemvue made."""


class EmporiaRateLimited(EmporiaError):
    """Emporia answered 429 (or did so recently): no request before `not_before`.

    `sent` is False when vuegraf itself held the request back (an earlier 429's wait is not
    over): Emporia saw nothing, so it is no failed attempt of anything."""

    def __init__(self, message: str, not_before: datetime, sent: bool = True) -> None:
        super().__init__(message)
        self.not_before = not_before
        self.sent = sent


class PyemvueUnsupported(EmporiaError):
    """The installed pyemvue lacks an internal vuegraf relies on (see `pyemvue_problem`)."""


class EmporiaStopped(EmporiaError):
    """A stop was requested: the request was not sent (or its retries were cut short)."""


def reworded(err: EmporiaError, failed: str) -> EmporiaError:
    """`err` again, of the same class and with the same details, its message led by `failed`
    (what failed)."""
    extra = (err.not_before, err.sent) if isinstance(err, EmporiaRateLimited) else ()
    return type(err)(f"{failed}: {err}", *extra)


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
