"""A stand-in InfluxDB 2 in front of a real server, for the v2 sink's tests.

No InfluxDB 2 or 3 can run where the tests run, and Debian's InfluxDB 1.6.7 has no
`/api/v2/write` (1.8+ has). This small HTTP server on a free loopback port takes the InfluxDB 2
write API and hands every line to a real server, so what the v2 sink writes lands in real
storage; how it answers reads is the test's choice:

- ``writes="v1"``: ``POST /api/v2/write?bucket=B&precision=P`` becomes InfluxDB 1.x
  ``POST /write?db=B&precision=P`` (a bucket ``db/rp`` becomes ``db=db&rp=rp``, as InfluxDB
  2.7's virtual DBRP mapping reads it). ``writes="v2"`` forwards the request as it is (to
  VictoriaMetrics, which speaks the v2 write API).
- ``reads="pass"``: ``/query`` is passed to the real server unchanged (query string and body):
  the InfluxDB 1.x API that InfluxDB 2's compatibility layer and InfluxDB 3 serve. Anything
  else is 404. ``reads="501"``: every request but a write answers ``501 Not Implemented``, as a
  store without a read API may (InfluxDB 3 among them).

Every request must carry ``Authorization: Token <token>`` (401 otherwise), so a test through
it proves the sink sends the token on writes and reads. Requests are recorded as
``(method, path)`` in ``requests``.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Self

_HOP_HEADERS = ("Content-Type", "Content-Encoding")


class Influx2Proxy:
    def __init__(
        self,
        upstream: str,
        token: str,
        *,
        writes: Literal["v1", "v2"] = "v1",
        reads: Literal["pass", "501"] = "pass",
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.token = token
        self.writes = writes
        self.reads = reads
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def paths(self) -> list[str]:
        with self._lock:
            return [path for _method, path in self.requests]

    def start(self) -> Self:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                proxy._handle(self)

            def do_POST(self) -> None:  # noqa: N802
                proxy._handle(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- one request ---------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(request.path)
        with self._lock:
            self.requests.append((request.command, url.path))
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        if request.headers.get("Authorization") != f"Token {self.token}":
            self._answer(request, 401, b'{"code":"unauthorized","message":"unauthorized access"}')
            return
        if request.command == "POST" and url.path == "/api/v2/write":
            self._forward(request, self._write_target(url), body, "POST")
        elif self.reads == "501":
            self._answer(request, 501, b'{"code":"not implemented","message":"no reads here"}')
        elif url.path == "/query":
            target = f"{self.upstream}/query" + (f"?{url.query}" if url.query else "")
            self._forward(request, target, body if request.command == "POST" else None,
                          request.command)
        else:
            self._answer(request, 404, b"404 page not found")

    def _write_target(self, url: urllib.parse.SplitResult) -> str:
        if self.writes == "v2":
            return f"{self.upstream}{url.path}?{url.query}"
        query = urllib.parse.parse_qs(url.query)
        database, _, policy = query["bucket"][0].partition("/")
        params = {"db": database, "precision": query.get("precision", ["ns"])[0]}
        if policy:
            params["rp"] = policy
        return f"{self.upstream}/write?{urllib.parse.urlencode(params)}"

    def _forward(
        self, request: BaseHTTPRequestHandler, target: str, body: bytes | None, method: str
    ) -> None:
        headers = {h: request.headers[h] for h in _HOP_HEADERS if request.headers.get(h)}
        upstream = urllib.request.Request(target, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(upstream, timeout=30) as response:
                status, content = response.status, response.read()
                kind = response.headers.get("Content-Type")
        except urllib.error.HTTPError as err:
            status, content, kind = err.code, err.read(), err.headers.get("Content-Type")
        except OSError as err:
            self._answer(request, 503, f"upstream unreachable: {err}".encode())
            return
        self._answer(request, status, content, kind)

    @staticmethod
    def _answer(
        request: BaseHTTPRequestHandler, status: int, content: bytes, kind: str | None = None
    ) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind or "application/json")
        request.send_header("Content-Length", str(len(content)))
        request.end_headers()
        if content:
            request.wfile.write(content)
