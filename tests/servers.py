"""Real servers for integration tests: InfluxDB 1.x, VictoriaMetrics, Mosquitto, Prometheus and
a Docker engine.

Each class starts one server as a child process, bound to 127.0.0.1 on a free port, with its
data, config and log in a private temp dir, and waits until it answers. Each class's
`_prepare` writes its configuration, with a comment where a setting avoids a trap.

Life cycle, the same for every server:

- ``start()`` starts the process and waits until it is ready. The first start picks free ports
  and makes the temp dir; a start after ``kill()`` reuses both, so the server comes back with
  its data on the same port.
- ``restart()`` stops the process (SIGTERM) and starts it again on the same port(s) with the same
  data dir: for tests that take a server away mid-run.
- ``kill()`` sends SIGKILL and leaves the data dir in place: for outage tests. ``start()`` or
  ``restart()`` brings the server back.
- ``stop()`` stops the process (SIGTERM, then SIGKILL after a grace period) and removes the temp
  dir. A later ``start()`` is a fresh server on new ports.
- Used as a context manager, ``with`` starts and ``stop()`` ends.

If a server does not come up in ``startup_timeout`` seconds (or exits), ``ServerStartError`` is
raised with the tail of its log. If its port was taken between picking it and binding it, the
start is retried on other ports (first start only; a restart insists on its own port).
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import pytest

LOOPBACK = "127.0.0.1"

#: The Debian package that brings each binary, for skip/fail messages.
DEBIAN_PACKAGES = {
    "influxd": "influxdb",
    "victoria-metrics": "victoria-metrics",
    "mosquitto": "mosquitto",
    "mosquitto_passwd": "mosquitto",
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "debootstrap": "debootstrap",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}

# Daemons often live in sbin, which is not on every user's PATH.
_EXTRA_BIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def in_ci() -> bool:
    """True when running under CI (``CI`` is ``true`` or ``1``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require_binary(name: str) -> str:
    """Return the path of binary ``name``, or skip the test when it is not installed.

    In CI (``CI=true`` or ``CI=1``) a missing binary fails the test instead: an integration test
    that silently skips there would hide a broken CI setup.
    """
    path = shutil.which(name)
    if path is None:
        extra = os.pathsep.join(_EXTRA_BIN_DIRS)
        path = shutil.which(name, path=extra)
    if path is not None:
        return path
    package = DEBIAN_PACKAGES.get(name, name)
    reason = (
        f"{name!r} not found on PATH or in {', '.join(_EXTRA_BIN_DIRS)}; "
        f"install it with `apt-get install -y --no-install-recommends {package}`"
    )
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing server is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def require_root(what: str) -> None:
    """Skip the test unless it runs as root (``what`` says what needs it); under CI, fail."""
    if os.geteuid() == 0:
        return
    reason = f"{what} needs root; this test runs as uid {os.geteuid()}"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a test that cannot run is a failure)", pytrace=False)
    pytest.skip(reason)


def poll_until(
    fetch: Callable[[], Any],
    predicate: Callable[[Any], bool],
    timeout: float,
    interval: float,
    describe: Callable[[Any], str],
) -> Any:
    """Call ``fetch`` until ``predicate`` holds on its answer; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = fetch()
        if predicate(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(describe(answer))
        time.sleep(interval)


def free_ports(count: int = 1) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    The sockets are held open together so the ports differ; they are closed before returning, so
    another process may still take one: callers retry on "address already in use".
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerStartError(RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Resolved once here, in the parent: the child of a fork must not dlopen (another thread may
# have held the loader lock at fork time).
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it when the test process dies.

    Best effort: it keeps servers from outliving a pytest that was killed. (A server that changes
    its user, as Mosquitto does when started as root, loses this setting.)
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url``; return (status, body). HTTP errors are returned, network errors raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _http_post(
    url: str, data: bytes = b"", timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """POST ``data`` to ``url``; return (status, body). HTTP errors are returned."""
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class _ServerProcess:
    """What every server shares: temp dir, ports, process, readiness, stop/restart/kill.

    Subclasses set ``name`` and ``port_count`` and implement ``_prepare`` (write config files once
    the ports and dir are known), ``_command`` and ``_is_ready``; ``_after_first_start`` is an
    optional hook run once, after the first successful start.
    """

    name = "server"
    port_count = 1
    #: Log lines that mean a port was taken between picking and binding it.
    _PORT_TAKEN_MARKERS = ("address already in use",)

    def __init__(
        self,
        binary: str,
        *,
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
        bind_attempts: int = 3,
    ) -> None:
        self.binary = binary
        self.host = LOOPBACK
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.bind_attempts = bind_attempts
        self.ports: list[int] = []
        self.dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._started_once = False

    # -- public life cycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The main port clients connect to."""
        if not self.ports:
            raise RuntimeError(f"{self.name} has no port yet: call start() first")
        return self.ports[0]

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def log_path(self) -> Path:
        if self.dir is None:
            raise RuntimeError(f"{self.name} has no directory yet: call start() first")
        return self.dir / "server.log"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it is ready. Returns self."""
        if self.is_running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        fresh = self.dir is None
        if fresh:
            self.dir = Path(tempfile.mkdtemp(prefix=f"vuegraf-{self.name}-"))
        try:
            if self.ports:
                self._start_on_same_ports()
            else:
                self._start_on_new_ports()
            if not self._started_once:
                self._after_first_start()
                self._started_once = True
        except BaseException:
            if fresh:
                self.stop()  # nothing of a failed first start is left behind
            raise
        return self

    def restart(self) -> None:
        """Stop the process and start it again on the same port(s) with the same data."""
        self._stop_process()
        self.start()

    def kill(self) -> None:
        """SIGKILL the process (an outage); the data dir and ports are kept for start()."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close_log()

    def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``stop_timeout``) and remove its temp dir."""
        try:
            self._stop_process()
        finally:
            self._remove_dir()
            self.ports = []
            self._started_once = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, max_lines: int = 40) -> str:
        """The last lines the server printed (stdout and stderr together)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except (OSError, RuntimeError):
            return "(no log)"
        return "\n".join(lines[-max_lines:]) or "(empty log)"

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.ports or '-'} pid={self.pid} {state}>"

    # -- subclass hooks ----------------------------------------------------------------------

    def _prepare(self) -> None:
        """Write config files; ``self.dir`` and ``self.ports`` are set. Called before each start."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _after_first_start(self) -> None:
        """Run once after the first successful start (e.g. create the first user)."""

    # -- internals ---------------------------------------------------------------------------

    def _start_on_new_ports(self) -> None:
        for attempt in range(1, self.bind_attempts + 1):
            self.ports = free_ports(self.port_count)
            try:
                self._spawn_and_wait()
                return
            except _PortTaken:
                if attempt == self.bind_attempts:
                    self.ports = []
                    raise ServerStartError(
                        f"{self.name}: ports were taken on {self.bind_attempts} attempts\n"
                        f"--- log tail ({self.log_path}) ---\n{self.log_tail()}"
                    ) from None
        raise AssertionError("unreachable")

    def _start_on_same_ports(self) -> None:
        # A restart must keep its port; a port can take a moment to be released, so retry
        # within the start-up timeout.
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                self._spawn_and_wait()
                return
            except _PortTaken:
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{self.name}: port(s) {self.ports} still in use after "
                        f"{self.startup_timeout:.0f}s\n--- log tail ---\n{self.log_tail()}"
                    ) from None
                time.sleep(0.2)

    def _spawn_and_wait(self) -> None:
        self._prepare()
        self._close_log()
        self._log_file = open(self.log_path, "ab")  # closed in _close_log
        self._log_file.write(f"--- starting {self.name} on {self.ports} ---\n".encode())
        self._log_file.flush()
        self.process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            preexec_fn=_die_with_parent if _PRCTL is not None else None,
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            exit_code = self.process.poll()
            if exit_code is not None:
                self._close_log()
                tail = self.log_tail()
                if any(marker in tail.lower() for marker in self._PORT_TAKEN_MARKERS):
                    raise _PortTaken()
                raise ServerStartError(
                    f"{self.name} exited with code {exit_code} before it was ready "
                    f"(command: {' '.join(self._command())})\n"
                    f"--- log tail ({self.log_path}) ---\n{tail}"
                )
            try:
                if self._is_ready():
                    return
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                self._stop_process()
                raise ServerStartError(
                    f"{self.name} was not ready within {self.startup_timeout:.0f}s on "
                    f"{self.host}:{self.ports} (command: {' '.join(self._command())})\n"
                    f"--- log tail ({self.log_path}) ---\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _stop_process(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _remove_dir(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class _PortTaken(Exception):
    """The server exited because a port was taken (a bind race): retry."""


class InfluxV1Server(_ServerProcess):
    """InfluxDB 1.x (``influxd``) with HTTP and RPC on loopback and no ``_internal`` database.

    ``auth=True`` turns on authentication and creates the admin user ``username`` /
    ``password`` (anonymously, as InfluxDB allows for the first user).
    """

    name = "influxd"
    port_count = 2  # HTTP, RPC (backup/restore)

    def __init__(
        self,
        binary: str = "influxd",
        *,
        auth: bool = False,
        username: str = "admin",
        password: str = "admin-password",
        **kwargs: Any,
    ) -> None:
        super().__init__(binary, **kwargs)
        self.auth = auth
        self.username = username if auth else None
        self.password = password if auth else None

    @property
    def rpc_port(self) -> int:
        return self.ports[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "influxdb.conf"

    def client(self, database: str | None = None, **kwargs: Any):
        """An ``influxdb.InfluxDBClient`` for this server (with the admin user under auth)."""
        from influxdb import InfluxDBClient  # only the InfluxDB tests need this package

        kwargs.setdefault("timeout", 10)
        if self.auth:
            kwargs.setdefault("username", self.username)
            kwargs.setdefault("password", self.password)
        return InfluxDBClient(host=self.host, port=self.port, database=database, **kwargs)

    def admin(self, statement: str, timeout: float = 30.0) -> None:
        """Run one InfluxQL statement (``CREATE USER``, ``GRANT``, ...) as the admin user, over
        ``POST /query``; raise AssertionError with InfluxDB's answer if it says no."""
        headers = {}
        if self.auth:
            credentials = f"{self.username}:{self.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        status, body = _http_post(
            f"{self.url}/query?" + urllib.parse.urlencode({"q": statement}),
            timeout=timeout,
            headers=headers,
        )
        assert status == 200 and b'"error"' not in body, f"{statement}: {status} {body!r}"

    def _prepare(self) -> None:
        assert self.dir is not None
        self.config_path.write_text(
            f"""\
reporting-enabled = false
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{self.dir / "meta"}"

[data]
  dir = "{self.dir / "data"}"
  wal-dir = "{self.dir / "wal"}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  bind-address = "{self.host}:{self.port}"
  log-enabled = false
  auth-enabled = {"true" if self.auth else "false"}

[logging]
  level = "warn"
  suppress-logo = true
"""
        )

    def _command(self) -> list[str]:
        return [self.binary, "-config", str(self.config_path)]

    def _is_ready(self) -> bool:
        request = urllib.request.Request(f"{self.url}/ping")
        with urllib.request.urlopen(request, timeout=1.0) as response:
            # The version header tells it is InfluxDB answering, not whoever else took the port.
            return response.status == 204 and "X-Influxdb-Version" in response.headers

    def _after_first_start(self) -> None:
        if not self.auth:
            return
        query = f"CREATE USER {self.username} WITH PASSWORD '{self.password}' WITH ALL PRIVILEGES"
        status, body = _http_post(f"{self.url}/query?" + urllib.parse.urlencode({"q": query}))
        if status != 200 or b'"error"' in body:
            raise ServerStartError(
                f"{self.name}: could not create the admin user: {status} {body!r}"
            )


class VictoriaMetricsServer(_ServerProcess):
    """VictoriaMetrics single node: accepts the InfluxDB 2 write API (``/api/v2/write``).

    A field ``f`` of measurement ``m`` becomes the series ``m_f``. Read back with ``export()``.
    """

    name = "victoria-metrics"
    DEFAULT_MATCH = '{__name__=~"energy_usage.*"}'

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        assert self.dir is not None
        return [
            self.binary,
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.dir / 'data'}",
            "-retentionPeriod=100y",  # else points older than a month are dropped
            "-search.latencyOffset=0s",
            "-loggerLevel=WARN",
        ]

    def _is_ready(self) -> bool:
        status, _ = _http_get(f"{self.url}/health", timeout=1.0)
        return status == 200

    def force_flush(self) -> None:
        """Make recently written points searchable."""
        status, body = _http_get(f"{self.url}/internal/force_flush", timeout=10.0)
        if status != 200:
            raise RuntimeError(f"force_flush answered {status}: {body!r}")

    def export_now(self, match: str = DEFAULT_MATCH) -> list[dict[str, Any]]:
        """One flush and one ``/api/v1/export``: the series matching ``match``, as parsed JSON.

        Each item is ``{"metric": {"__name__": ..., tag: value}, "values": [...],
        "timestamps": [ms, ...]}``.
        """
        self.force_flush()
        query = urllib.parse.urlencode({"match[]": match})
        status, body = _http_get(f"{self.url}/api/v1/export?{query}", timeout=10.0)
        if status != 200:
            raise RuntimeError(f"export answered {status}: {body!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def export_until(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 10.0,
        match: str = DEFAULT_MATCH,
    ) -> list[dict[str, Any]]:
        """Poll ``export_now(match)`` until ``predicate(rows)`` holds; return those rows.

        Raises ``AssertionError`` with the last rows seen when ``timeout`` passes.
        """
        return poll_until(
            lambda: self.export_now(match),
            predicate,
            timeout,
            0.1,
            lambda rows: (
                f"VictoriaMetrics export of {match} did not satisfy the condition "
                f"within {timeout}s; last answer: {rows!r}"
            ),
        )

    def export(self, match: str = DEFAULT_MATCH, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The series matching ``match``, waiting until there is at least one."""
        return self.export_until(bool, timeout=timeout, match=match)

    def delete_series(self, match: str = '{__name__=~".+"}') -> None:
        """Delete every series matching ``match`` (all of them by default)."""
        query = urllib.parse.urlencode({"match[]": match})
        status, body = _http_post(f"{self.url}/api/v1/admin/tsdb/delete_series?{query}")
        if status not in (200, 204):
            raise RuntimeError(f"delete_series answered {status}: {body!r}")


class MosquittoServer(_ServerProcess):
    """Mosquitto 2.x MQTT broker on one loopback listener, without persistence.

    ``anonymous=True`` (the default when no users are given) lets anyone in; ``users`` (a
    ``{name: password}`` dict) turns anonymous access off and writes a password file with
    ``mosquitto_passwd``.

    The config is built from listener blocks (``_listener_lines``) so a TLS listener can be
    added later as one more block with its own port.
    """

    name = "mosquitto"

    def __init__(
        self,
        binary: str = "mosquitto",
        *,
        users: dict[str, str] | None = None,
        anonymous: bool | None = None,
        passwd_binary: str = "mosquitto_passwd",
        **kwargs: Any,
    ) -> None:
        super().__init__(binary, **kwargs)
        self.users = dict(users or {})
        self.anonymous = (not self.users) if anonymous is None else anonymous
        if not self.anonymous and not self.users:
            raise ValueError("MosquittoServer: anonymous=False needs users")
        self.passwd_binary = passwd_binary

    @property
    def config_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "mosquitto.conf"

    @property
    def password_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "passwd"

    def _prepare(self) -> None:
        assert self.dir is not None
        # Started as root, mosquitto drops to user "mosquitto", which must read these files.
        self.dir.chmod(0o755)
        lines = ["persistence false", "log_dest stdout", "log_type error", "log_type warning"]
        lines += [f"allow_anonymous {'true' if self.anonymous else 'false'}"]
        if self.users:
            self._write_password_file()
            lines.append(f"password_file {self.password_path}")
        lines += self._listener_lines()
        self.config_path.write_text("\n".join(lines) + "\n")
        self.config_path.chmod(0o644)

    def _listener_lines(self) -> list[str]:
        """The ``listener`` blocks; one plain MQTT listener on ``self.port`` for now."""
        return [f"listener {self.port} {self.host}"]

    def _write_password_file(self) -> None:
        path = self.password_path
        if path.exists():
            path.unlink()
        for index, (user, password) in enumerate(self.users.items()):
            create = ["-c"] if index == 0 else []
            subprocess.run(
                [self.passwd_binary, "-b", *create, str(path), user, password],
                check=True,
                capture_output=True,
                timeout=30,
            )
        path.chmod(0o644)

    def _command(self) -> list[str]:
        return [self.binary, "-c", str(self.config_path)]

    # MQTT 3.1.1 CONNECT with an empty client id and a clean session, then DISCONNECT.
    _PROBE_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x00\x00\x00"
    _PROBE_DISCONNECT = b"\xe0\x00"

    def _is_ready(self) -> bool:
        # An MQTT handshake, not just a TCP connect: whoever else holds the port (a bind race)
        # would accept a connection too. Any CONNACK counts, even "not authorized".
        with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
            sock.sendall(self._PROBE_CONNECT)
            connack = sock.recv(4)
            if connack[:2] != b"\x20\x02":
                return False
            sock.sendall(self._PROBE_DISCONNECT)
            return True


# Prometheus ships promtool in the same Debian package.
DEBIAN_PACKAGES.setdefault("prometheus", "prometheus")
DEBIAN_PACKAGES.setdefault("promtool", "prometheus")


class PrometheusServer(_ServerProcess):
    """Prometheus 2.x scraping ``targets`` (``host:port`` strings) every ``scrape_interval``.

    The targets form one job, ``job`` (default ``vuegraf``), scraped at ``/metrics``. Storage
    is in the temp dir; ``rule_files`` (absolute paths) are loaded as given. Query it with
    ``query()`` / ``query_until()`` (the HTTP API's instant queries).
    """

    name = "prometheus"

    def __init__(
        self,
        binary: str = "prometheus",
        *,
        targets: list[str] | tuple[str, ...] = (),
        job: str = "vuegraf",
        scrape_interval: str = "1s",
        rule_files: list[str] | tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(binary, **kwargs)
        self.targets = list(targets)
        self.job = job
        self.scrape_interval = scrape_interval
        self.rule_files = list(rule_files)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "prometheus.yml"

    def _prepare(self) -> None:
        # JSON is YAML: no YAML library needed to write the config.
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": self.rule_files,
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")

    def _command(self) -> list[str]:
        assert self.dir is not None
        return [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--log.level=warn",
        ]

    def _is_ready(self) -> bool:
        status, body = _http_get(f"{self.url}/-/ready", timeout=1.0)
        # The body names Prometheus, not whoever else may hold the port.
        return status == 200 and b"Prometheus" in body

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (at Unix time ``at``, default now): the ``result`` vector."""
        params = {"query": promql}
        if at is not None:
            params["time"] = repr(at)
        status, body = _http_get(
            f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10.0
        )
        answer = json.loads(body) if body else {}
        if status != 200 or answer.get("status") != "success":
            raise RuntimeError(f"query {promql!r} answered {status}: {body!r}")
        return answer["data"]["result"]

    def query_until(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 30.0,
    ) -> list[dict[str, Any]]:
        """Poll ``query(promql)`` until ``predicate(result)`` holds; return that result.

        The first scrape is queryable about 5 s after start. Raises ``AssertionError`` with the
        last result (and the log tail) when ``timeout`` passes.
        """
        return poll_until(
            lambda: self.query(promql),
            predicate,
            timeout,
            0.2,
            lambda result: (
                f"Prometheus query {promql!r} did not satisfy the condition within "
                f"{timeout}s; last answer: {result!r}\n--- log tail ---\n{self.log_tail()}"
            ),
        )


class MosquittoTlsServer(MosquittoServer):
    """Mosquitto with a second listener, TLS on ``tls_port``, besides the plain one.

    ``cafile``, ``certfile`` and ``keyfile`` (PEM) are copied into the server's dir, where the
    ``mosquitto`` user can read them. ``require_certificate=True`` makes clients present a
    certificate signed by ``cafile``.
    """

    port_count = 2  # plain MQTT (readiness probe), TLS

    def __init__(
        self,
        binary: str = "mosquitto",
        *,
        cafile: Path,
        certfile: Path,
        keyfile: Path,
        require_certificate: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(binary, **kwargs)
        self.tls_sources = {"ca.crt": cafile, "server.crt": certfile, "server.key": keyfile}
        self.require_certificate = require_certificate

    @property
    def tls_port(self) -> int:
        return self.ports[1]

    def _prepare(self) -> None:
        assert self.dir is not None
        tls_dir = self.dir / "tls"
        tls_dir.mkdir(exist_ok=True)
        tls_dir.chmod(0o755)
        for name, source in self.tls_sources.items():
            shutil.copyfile(source, tls_dir / name)
            (tls_dir / name).chmod(0o644)  # a throwaway test key: readable by "mosquitto"
        super()._prepare()

    def _listener_lines(self) -> list[str]:
        assert self.dir is not None
        tls_dir = self.dir / "tls"
        return [
            *super()._listener_lines(),
            f"listener {self.tls_port} {self.host}",
            f"cafile {tls_dir / 'ca.crt'}",
            f"certfile {tls_dir / 'server.crt'}",
            f"keyfile {tls_dir / 'server.key'}",
            f"require_certificate {'true' if self.require_certificate else 'false'}",
        ]


# -- Docker -----------------------------------------------------------------------------------

#: The Docker client of Debian's docker.io package. Another `docker` may come first on PATH (a
#: newer client installed by hand, as /usr/local/bin/docker is on some machines): the tests call
#: this one when it is there, so that they run what a Debian 12 user has, a client of the same
#: version as Debian's engine, whose `docker build` uses the classic builder unless told.
DEBIAN_DOCKER_CLIENT = "/usr/bin/docker"


def docker_client() -> str:
    """Debian's ``docker`` when installed, else whichever ``docker`` is found (a skip or, under
    CI, a failure when there is none)."""
    if os.access(DEBIAN_DOCKER_CLIENT, os.X_OK):
        return DEBIAN_DOCKER_CLIENT
    return require_binary("docker")


def _unescape_mount_point(field: str) -> str:
    # /proc/self/mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: Path) -> list[str]:
    """The mount points at or below ``path``, the most recently mounted first."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            point = _unescape_mount_point(line.split()[4])
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return found[::-1]


def unmount_under(path: Path) -> None:
    """Lazily unmount whatever is still mounted at or below ``path``: dockerd leaves its network
    namespace file mounted, and a debootstrap that failed half-way its /proc, so a plain rmtree
    would fail or reach into them."""
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def containerd_namespace(name: str) -> str:
    """A containerd namespace made from a unique temp dir name.

    containerd takes only letters and digits joined by single '.', '_' or '-'; mkdtemp's
    random part may start or end with '_' or hold two in a row ("vuegraf-dockerd-_jqwz0w4"),
    which dockerd then refuses at the first build.
    """
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


class DockerEngine(_ServerProcess):
    """A Docker engine of the test's own: ``dockerd`` with its data root, exec root, pid file,
    API socket and daemon.json in the temp dir, so it shares nothing with a Docker engine the
    machine may run (nor reads its /etc/docker/daemon.json), and a containerd namespace of its
    own in case dockerd finds a system containerd to use rather than starting its own.

    No bridge and no iptables rules: it changes nothing in the host's network, and builds and
    containers run with ``--network host``, which also lets them reach servers on the host's
    loopback. ``stop()`` sends SIGTERM (dockerd then stops its containers and the containerd it
    started), unmounts what is left mounted and removes the temp dir. Needs root.

    ``docker(*args)`` runs the client ``client`` against it; in ``environ()`` any ``docker`` (and
    so ``make docker``) talks to it, with a client config dir of its own.
    """

    name = "dockerd"
    port_count = 0  # the API is a unix socket in the temp dir

    def __init__(
        self,
        binary: str = "dockerd",
        *,
        client: str = "docker",
        startup_timeout: float = 60.0,
        stop_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            binary, startup_timeout=startup_timeout, stop_timeout=stop_timeout, **kwargs
        )
        self.client = client

    @property
    def socket_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """This process's environment, pointed at this engine."""
        assert self.dir is not None
        env = {**os.environ, "DOCKER_HOST": self.url, "DOCKER_CONFIG": str(self.dir / "client")}
        env.update(extra or {})
        return env

    def docker(
        self,
        *args: str,
        timeout: float = 120.0,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` against this engine; with ``check`` a non-zero exit raises
        AssertionError with the command's output."""
        result = subprocess.run(
            [self.client, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environ(env),
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited with {result.returncode}\n"
                f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
            )
        return result

    def _prepare(self) -> None:
        assert self.dir is not None
        (self.dir / "daemon.json").write_text("{}\n")
        (self.dir / "client").mkdir(exist_ok=True)

    def _command(self) -> list[str]:
        assert self.dir is not None
        namespace = containerd_namespace(self.dir.name)
        return [
            self.binary,
            f"--config-file={self.dir / 'daemon.json'}",
            f"--data-root={self.dir / 'data'}",
            f"--exec-root={self.dir / 'exec'}",
            f"--pidfile={self.dir / 'dockerd.pid'}",
            f"--host={self.url}",
            f"--containerd-namespace={namespace}",
            f"--containerd-plugins-namespace={namespace}-plugins",
            "--bridge=none",
            "--iptables=false",
        ]

    def _is_ready(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(self.socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        status, _, rest = answer.partition(b"\r\n")
        return status.split(b" ")[1:2] == [b"200"] and rest.endswith(b"\r\n\r\nOK")

    def _remove_dir(self) -> None:
        if self.dir is not None:
            unmount_under(self.dir)
        super()._remove_dir()
