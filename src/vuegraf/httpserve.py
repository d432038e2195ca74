"""The small HTTP servers vuegraf runs beside collecting: Prometheus' /metrics and the graphs
page. Each is a stdlib ThreadingHTTPServer on a daemon thread, so a slow client never holds up
collection and the process still exits if `stop()` is forgotten.
"""

from __future__ import annotations

import gzip
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

from vuegraf import __version__

# (status, content type, body, extra headers)
Response = tuple[int, str, bytes, dict[str, str]]
GZIP_ABOVE = 1024  # bytes


class BackgroundServer:
    """Serves `_handler()`'s requests on `address:port` (0: any free port) until stopped."""

    thread_name = "vuegraf-http"

    def __init__(self, address: str, port: int) -> None:
        self.address = address
        self.requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        """Bind and serve; raises OSError when the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        server_class = _IPv6Server if ":" in self.address else ThreadingHTTPServer
        self._server = server_class((self.address, self.requested_port), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class Handler(BaseHTTPRequestHandler):
    """GET and HEAD only, answered by `respond`; bodies over 1 kB gzipped for a client that
    takes it when `compress` is set; access lines to `log` at debug level, not stderr."""

    server_version = f"vuegraf/{__version__}"
    compress = False
    headers_always: dict[str, str] = {}

    def respond(self) -> Response:
        raise NotImplementedError

    def log_access(self, line: str) -> None:
        """Where an access line goes (a debug log line)."""

    def do_GET(self) -> None:  # the stdlib's name
        self._send(head=False)

    def do_HEAD(self) -> None:
        self._send(head=True)

    def _send(self, head: bool) -> None:
        status, content_type, body, headers = self.respond()
        if (
            self.compress
            and len(body) > GZIP_ABOVE
            and "gzip" in self.headers.get("Accept-Encoding", "")
        ):
            body = gzip.compress(body, compresslevel=5)
            headers = headers | {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (self.headers_always | headers).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        self.log_access(f"{self.address_string()}: " + format % args)
