"""A TCP proxy on loopback that a test can cut, hold or restore: network trouble on demand.

    with TcpProxy(upstream_port) as proxy:   # clients connect to proxy.port
        proxy.cut()       # drop every connection; new ones are refused (RST)
        proxy.hold()      # accept new connections but never pass a byte (a silent peer)
        proxy.forward()   # back to normal

The server behind it stays up the whole time, so a subscriber on the real server never
misses what arrives once the proxy forwards again: the test, not the scheduler, decides
when the client can reconnect.
"""

from __future__ import annotations

import select
import socket
import threading
from typing import Self

FORWARD, HOLD, REFUSE = "forward", "hold", "refuse"


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.mode = FORWARD
        self.accepted = 0  # connections accepted, in any mode
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        self._listen()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._close_listener()
        self._drop_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- modes --------------------------------------------------------------------------

    def cut(self) -> None:
        """Every open connection closed; the port refuses new ones until `forward()`."""
        with self._lock:
            self.mode = REFUSE
        self._close_listener()
        self._drop_all()

    def hold(self) -> None:
        """New connections are accepted and then never answered (open ones are dropped)."""
        with self._lock:
            self.mode = HOLD
        self._drop_all()
        if self._listener is None:
            self._listen()

    def forward(self) -> None:
        with self._lock:
            self.mode = FORWARD
        if self._listener is None:
            self._listen()

    # -- internals ----------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _close_listener(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _addr = listener.accept()
            except OSError:
                return  # the listener was closed: cut() or stop()
            with self._lock:
                self.accepted += 1
                mode = self.mode
                self._sockets.add(client)
            if mode != FORWARD:
                continue  # held: open, silent, until dropped
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                self._discard(client)
                continue
            with self._lock:
                self._sockets.add(server)
            thread = threading.Thread(target=self._pump, args=(client, server), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([a, b], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return  # dropped by cut(): the sockets are closed under us
        finally:
            self._discard(a)
            self._discard(b)

    def _discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        try:
            sock.close()
        except OSError:
            pass
