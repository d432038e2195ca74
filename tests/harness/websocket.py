"""A small blocking WebSocket client (RFC 6455) over a plain socket, for test harnesses.

The test venv has no WebSocket library, and the harness needs only request/answer exchanges
of JSON text messages with a local server: no TLS, no extensions (no compression is offered,
so the server sends none), no subprotocols. Frames from the client are masked as the RFC
requires; fragmented messages are joined; pings are answered; a close frame ends the
connection with ``WebSocketClosed``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from typing import Any, Self

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketClosed(ConnectionError):
    """The server closed the connection (a close frame, or the socket ended)."""


class WebSocket:
    """One connection to ``ws://host:port/path``; use as a context manager."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = b""
        try:
            self._handshake(host, port, path)
        except BaseException:
            self._sock.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._send_frame(_CLOSE, struct.pack("!H", 1000))
        except OSError:
            pass
        self._sock.close()

    def send_json(self, message: Any) -> None:
        self._send_frame(_TEXT, json.dumps(message).encode())

    def receive_json(self, timeout: float | None = None) -> Any:
        """The next text message, parsed; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        parts: list[bytes] = []
        while True:
            fin, opcode, payload = self._read_frame(deadline)
            if opcode == _PING:
                self._send_frame(_PONG, payload)
            elif opcode == _CLOSE:
                raise WebSocketClosed(f"server closed the connection: {payload[2:]!r}")
            elif opcode in (_TEXT, _BINARY, _CONTINUATION):
                parts.append(payload)
                if fin:
                    return json.loads(b"".join(parts))

    # -- internals ---------------------------------------------------------------------------

    def _handshake(self, host: str, port: int, path: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self._sock.sendall(request.encode())
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in self._buffer:
            self._fill(deadline)
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if lines[0].split(" ")[1:2] != ["101"]:
            raise ConnectionError(f"WebSocket upgrade refused: {lines[0]!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        expected = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            raise ConnectionError("WebSocket upgrade answered with a wrong Sec-WebSocket-Accept")

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        length = len(payload)
        if length < 126:
            header += bytes([0x80 | length])
        elif length < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", length)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(header + mask + masked)

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no WebSocket message in time")
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no WebSocket message in time") from None
        if not chunk:
            raise WebSocketClosed("the server ended the connection")
        self._buffer += chunk

    def _take(self, count: int, deadline: float) -> bytes:
        while len(self._buffer) < count:
            self._fill(deadline)
        taken, self._buffer = self._buffer[:count], self._buffer[count:]
        return taken

    def _read_frame(self, deadline: float) -> tuple[bool, int, bytes]:
        first, second = self._take(2, deadline)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._take(2, deadline))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._take(8, deadline))
        mask = self._take(4, deadline) if second & 0x80 else b""
        payload = self._take(length, deadline)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(first & 0x80), first & 0x0F, payload
