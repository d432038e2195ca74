"""The graphs page: a read-only HTTP server over the configured store.

It serves the page's static files (plain JS with a vendored uPlot: no network needed) and a
small JSON API the page draws from; every number in it is read from the store through a
`GraphReader` at request time, reduced by the store to the graph's width. It runs a stdlib
ThreadingHTTPServer on a daemon thread, like the Prometheus exporter: a slow browser never
holds up collection.

Exposure: it binds 127.0.0.1 unless the config names another address, and answers 401 to
every request without the configured basic-auth user and password (compared in constant
time). Responses carry only series names and numbers: no config value but the account,
device and channel names is ever sent.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
import json
import logging
import mimetypes
import threading
from collections.abc import Callable
from datetime import tzinfo
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vuegraf import __version__
from vuegraf.clock import Clock
from vuegraf.graphs.data import read_graph, read_now, read_totals, totals_json
from vuegraf.graphs.layout import AccountEntry, DeviceEntry, Layout, find, to_json
from vuegraf.graphs.read import GraphReader
from vuegraf.graphs.views import VIEWS, zone_name
from vuegraf.httpserve import BackgroundServer, Handler, Response
from vuegraf.sinks.base import StoreReadError

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
JSON_TYPE = "application/json"
# The page and its scripts come from this server only; nothing inline, no other origin.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
}


# Requests answered at once; more get 503 at once (a Pi must not spawn threads without end).
MAX_REQUESTS = 8
# Seconds a connection may take to send its request: an idle one must not hold a thread.
REQUEST_TIMEOUT_SECS = 30.0
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(address: str) -> bool:
    """Whether binding `address` keeps the page on this host."""
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address.lower() == "localhost"


class _NotFound(Exception):
    pass


@functools.cache
def _static_files() -> dict[str, Path]:
    """The page's files by name: the package's static/ folder, listed once."""
    return {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}


class WebServer(BackgroundServer):
    """The page and its API on `address:port` (0: any free port)."""

    thread_name = "vuegraf-web"

    def __init__(
        self,
        address: str,
        port: int,
        reader: GraphReader,
        layout: Callable[[], Layout],
        zone: tzinfo,
        clock: Clock,
        auth: tuple[str, str] | None = None,
        request_timeout: float = REQUEST_TIMEOUT_SECS,
    ) -> None:
        super().__init__(address, port)
        self.request_timeout = request_timeout
        self.reader = reader
        self.layout = layout
        self.zone = zone
        self.clock = clock
        self._auth = auth
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)
        # Without a password, a page on loopback answers only requests addressed to loopback
        # names: a web site that points a name of its own at 127.0.0.1 (DNS rebinding) gets
        # nothing from the browser of the user who visits it.
        self._hosts: frozenset[str] | None = None
        if auth is None and is_loopback(address):
            self._hosts = LOOPBACK_NAMES | {address.strip("[]").lower()}

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> WebServer:
        super().start()
        logger.info("Graphs page on %s/", self.url)
        return self

    def stop(self) -> None:
        super().stop()
        self.reader.close()

    # -- requests ------------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if self._auth is None:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, password = self._auth
        expected = f"{user}:{password}".encode()
        return hmac.compare_digest(given, expected)

    def host_allowed(self, header: str | None) -> bool:
        if self._hosts is None:
            return True
        if not header:
            return False
        host = urlsplit(f"//{header.strip()}").hostname
        return host is not None and host.lower() in self._hosts

    def route(self, target: str) -> Response:
        parts = urlsplit(target)
        path = parts.path
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/") :])
            if path == "/api/layout":
                return _json(200, self._layout_json())
            if path == "/api/graph":
                return _json(200, self._graph(query))
            if path == "/api/totals":
                return _json(200, self._totals(query))
            if path == "/api/now":
                return _json(200, self._now(query))
        except _NotFound as err:
            return _json(404, {"error": str(err)})
        except StoreReadError as err:
            logger.warning("Graphs page: %s", err)
            return _json(503, {"error": f"the store did not answer: {err}"})
        return _json(404, {"error": "not found"})

    def _static(self, name: str) -> Response:
        # Only a file directly in static/: no path of the request reaches the file system.
        path = _static_files().get(name)
        if path is None:
            raise _NotFound(f"no file {name!r}")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "text/javascript"):
            kind += "; charset=utf-8"
        return 200, kind, path.read_bytes(), {"Cache-Control": "no-cache"}

    def _layout_json(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "timezone": zone_name(self.zone),
            "views": [{"name": v.name, "span": v.span, "step": v.step} for v in VIEWS.values()],
            "accounts": to_json(self.layout()),
        }

    def _device(self, query: dict[str, str]) -> tuple[AccountEntry, DeviceEntry]:
        account = find(self.layout(), query.get("account", ""))
        if account is None:
            raise _NotFound("no such account")
        device = account.device(query.get("device", ""))
        if device is None:
            raise _NotFound("no such device")
        return account, device

    def _graph(self, query: dict[str, str]) -> dict[str, Any]:
        account, device = self._device(query)
        view = VIEWS.get(query.get("view", "day"))
        if view is None:
            raise _NotFound("no such view")
        channels = None
        if "channel" in query:
            if device.channel(query["channel"]) is None:
                raise _NotFound("no such channel")
            channels = [query["channel"]]
        graph = read_graph(self.reader, account.name, device, view, self.clock.now(), channels)
        return graph.to_json()

    def _totals(self, query: dict[str, str]) -> dict[str, Any]:
        account, device = self._device(query)
        spans, rows = read_totals(self.reader, account.name, device, self.clock.now(), self.zone)
        return totals_json(account.name, device, spans, rows)

    def _now(self, query: dict[str, str]) -> dict[str, Any]:
        now = self.clock.now()
        accounts = []
        for account in self.layout():
            if "account" in query and account.name != query["account"]:
                continue
            channels = read_now(self.reader, account.name, list(account.devices), now)
            accounts.append({"name": account.name, "channels": channels})
        return {"now": int(now.timestamp()), "accounts": accounts}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        web = self

        class WebHandler(Handler):
            timeout = web.request_timeout
            # A year of a panel is ~150 kB of JSON; a Pi on Wi-Fi sends a fifth of it.
            compress = True
            headers_always = SECURITY_HEADERS

            def log_access(self, line: str) -> None:
                logger.debug("web %s", line)

            def respond(self) -> Response:
                if not web._slots.acquire(blocking=False):
                    return _json(503, {"error": "busy: too many requests at once"})
                try:
                    return self._answer()
                finally:
                    web._slots.release()

            def _answer(self) -> Response:
                if not web.host_allowed(self.headers.get("Host")):
                    return _json(421, {"error": "this page answers only to localhost"})
                if not web.authorized(self.headers.get("Authorization")):
                    return (
                        401,
                        "text/plain; charset=utf-8",
                        b"authentication required\n",
                        {"WWW-Authenticate": 'Basic realm="vuegraf", charset="UTF-8"'},
                    )
                try:
                    return web.route(self.path)
                except Exception:
                    logger.exception("Graphs page: %s failed", urlsplit(self.path).path)
                    return _json(500, {"error": "internal error (see vuegraf's log)"})

        return WebHandler


def _json(status: int, body: dict[str, Any]) -> Response:
    text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    return status, JSON_TYPE, text.encode(), {"Cache-Control": "no-store"}
