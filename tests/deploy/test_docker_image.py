"""The Docker image, built with `make docker` and run on a Docker engine the test starts.

What a user of Debian 12 with Debian's Docker (the docker.io package, 20.10) does, for real:

- `make docker` builds the image with the classic builder (Docker 20.10's default, and what
  docker-compose 1.x uses) and, while the test waits for a minute to end, with BuildKit; each
  image has `vuegraf` and `vuegraf-health` on PATH, its version label, and no pip, setuptools,
  wheel files or source tree;
- a container collects from the Emporia simulator into a real InfluxDB 1.x as uid and gid 1012,
  with a read-only root file system and no tmpfs (vuegraf writes only into its state volume);
  the image's HEALTHCHECK (`vuegraf-health`) turns healthy (`--health-interval` is shortened so
  the test need not wait 60 s for the first check; the command is the image's);
- `docker stop -t 5` ends it with exit code 0 (it handled SIGTERM; a SIGKILL after the 5 s
  would be 137); the named state volume outlives `docker rm`;
- once a minute has ended that the removed container never collected, a new container on the
  same volume starts while InfluxDB is away (a TcpProxy between them is cut): it collects that
  minute (its newest complete one, so as its live value) and whatever else is new, and it all
  waits in the queue in the volume. InfluxDB back, `docker stop -t 5` ends it with exit code 0,
  the queue empty: every minute of every chart channel, from the first one the test asked for
  to the newest complete one, is stored once with the simulator's value.

Expected values come from tests/harness/oracle.py (through harness/completeness.py), never from
vuegraf's own code. A placeholder minute written before the first start stands for an earlier
run, so the start-up fill reaches back to it rather than 7 days (and the queue holds a few
minutes' points, which the 3 s flush at shutdown delivers whatever the machine's load).

How it runs:

- The engine: `servers.DockerEngine`, dockerd started as a child process with its data root,
  exec root, pid file and socket in a temp dir, no bridge and no iptables rules; builds and
  containers use `--network host`, so they reach the loopback servers and PyPI. It is stopped
  (it stops its containers and its containerd) and its dir removed when the module ends. The
  client is Debian's /usr/bin/docker where installed (`servers.docker_client`): the same version
  as the engine, and what a Debian 12 user runs, even where a newer `docker` comes first on PATH.
- The base image: no registry is reachable where the tests run, so python:3.11-slim-bookworm
  cannot be pulled. debootstrap makes a minimal Debian 12 with Debian's python3 and python3-venv,
  `docker import` turns it into an image, and the Dockerfile's BASE_IMAGE build argument builds
  on it. The host's CA bundle replaces the base's and PIP_CERT names it: where the tests run,
  PyPI may be reached through a TLS-inspecting proxy that only the host's CA list trusts, and pip
  trusts its own list unless told. HTTP(S)_PROXY and NO_PROXY are passed on to the builds.
- One test function. Steps in separate test functions could be given to both workers of
  `pytest -n 2`, each then starting an engine, a debootstrap and the builds of its own;
  pytest-xdist's `xdist_group` mark with `--dist loadgroup` is meant to keep such tests on one
  worker, but does not group them with pytest 9.2.
- Not marked realclock: vuegraf runs on the wall clock inside the container, where
  VUEGRAF_TEST_START cannot move it. The verdict does not depend on the hour: every wait is on a
  condition with a deadline of minutes, and the minutes judged are those of the run.

The time each phase took is printed (`pytest -s` shows it); nothing is asserted about it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness import oracle
from harness.completeness import Stored, compare, expected_points, seed_minute, stored_points
from harness.tcpproxy import TcpProxy
from servers import (
    DockerEngine,
    docker_client,
    poll_until,
    require_binary,
    require_root,
    unmount_under,
)
from vuegraf import __version__
from vuegraf.config import Config, parse_config
from vuegraf.model import Scale
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
SEED = 29
ACCOUNT = "Home"
UID = 1012
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE = "vuegraf-test-base:bookworm"
IMAGE = "vuegraf:test-classic"
BUILDKIT_IMAGE = "vuegraf:test-buildkit"
VOLUME = "vuegraf-state"
STATE_DIR = "/opt/vuegraf/state"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's, in the base image
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
MINUTE = timedelta(minutes=1)
# vuegraf collects a minute lagSecs (5 s by default) after it ends; the simulator knows it 3 s
# after it ends. A minute counts as complete for the test this long after its end.
SETTLE = timedelta(seconds=10)
DEADLINE = 180.0  # seconds any one condition may take: ticks are a minute apart
BUILD_DEADLINE = 900.0  # seconds a build may take (it downloads from PyPI)


# -- timing -----------------------------------------------------------------------------------


class Phases:
    """The wall time of each phase, printed as it ends."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - started
            self.times.append((name, took))
            print(f"[docker test] {name}: {took:.1f} s", flush=True)

    def report(self) -> str:
        width = max((len(name) for name, _ in self.times), default=0)
        return "\n".join(f"  {name:<{width}}  {took:6.1f} s" for name, took in self.times)


@pytest.fixture(scope="module")
def phases() -> Iterator[Phases]:
    timings = Phases()
    yield timings
    print("\nDocker image test, time per phase:\n" + timings.report(), flush=True)


# -- the engine, the base image, the image ------------------------------------------------------


@pytest.fixture(scope="module")
def engine(phases: Phases) -> Iterator[DockerEngine]:
    dockerd = require_binary("dockerd")
    require_root("dockerd (the Docker engine)")
    with phases("dockerd: start"):
        docker = DockerEngine(dockerd, client=docker_client()).start()
    try:
        yield docker
    finally:
        with phases("dockerd: stop, unmount, remove its dir"):
            docker.stop()


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine's HTTPS clients are told to use, else Debian's."""
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(name, "")
        if value and Path(value).is_file():
            return Path(value)
    return Path(CA_BUNDLE) if Path(CA_BUNDLE).is_file() else None


@pytest.fixture(scope="module")
def base_image(engine: DockerEngine, phases: Phases, tmp_path_factory) -> str:
    """A Debian 12 minbase with Debian's python3 and python3-venv, as the image BASE."""
    debootstrap = require_binary("debootstrap")
    work = tmp_path_factory.mktemp("debian")
    rootfs = work / "rootfs"
    log = work / "debootstrap.log"
    env = {**os.environ, "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"}
    try:
        with phases("debootstrap: Debian 12 minbase with python3, python3-venv"):
            with log.open("w") as out:
                bootstrap = subprocess.run(
                    [
                        debootstrap,
                        "--variant=minbase",
                        "--include=python3,python3-venv",
                        "bookworm",
                        str(rootfs),
                        DEBIAN_MIRROR,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=900,
                )
            assert bootstrap.returncode == 0, f"debootstrap failed:\n{tail(log)}"
        changes = []
        bundle = host_ca_bundle()
        if bundle is not None:
            target = rootfs / CA_BUNDLE.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            shutil.copyfile(bundle, target)
            changes = ["--change", f"ENV PIP_CERT={CA_BUNDLE}"]
        with phases("docker import of the base"):
            tar = ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."]
            docker = [engine.client, "import", *changes, "-", BASE]
            imported = subprocess.run(
                ["bash", "-o", "pipefail", "-c", f"{shlex.join(tar)} | {shlex.join(docker)}"],
                capture_output=True,
                text=True,
                env=engine.environ(),
                timeout=600,
            )
            assert imported.returncode == 0, imported.stdout + imported.stderr
    finally:
        unmount_under(rootfs)
        shutil.rmtree(rootfs, ignore_errors=True)
    return BASE


def make_docker(
    engine: DockerEngine, base: str, tag: str, *, buildkit: bool, log: Path
) -> subprocess.Popen[bytes]:
    """`make docker` as a user would run it, with the classic builder or BuildKit."""
    options = ["--network", "host", "--build-arg", f"BASE_IMAGE={base}"]
    for name in PROXY_VARIABLES:
        if name in os.environ:
            options += ["--build-arg", f"{name}={os.environ[name]}"]
    command = [
        require_binary("make"),
        "-C",
        str(ROOT),
        "docker",
        f"DOCKER={engine.client}",
        f"DOCKER_IMAGE={tag}",
        f"DOCKER_BUILD_OPTS={shlex.join(options)}",
    ]
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=engine.environ({"DOCKER_BUILDKIT": "1" if buildkit else "0"}),
        )


def finish_build(build: subprocess.Popen[bytes], log: Path) -> None:
    try:
        code = build.wait(timeout=BUILD_DEADLINE)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert code == 0, f"make docker failed:\n{tail(log)}"


@pytest.fixture(scope="module")
def image(engine: DockerEngine, base_image: str, phases: Phases, tmp_path_factory) -> str:
    log = tmp_path_factory.mktemp("build") / "classic.log"
    with phases("make docker, classic builder (DOCKER_BUILDKIT=0)"):
        finish_build(make_docker(engine, base_image, IMAGE, buildkit=False, log=log), log)
    return IMAGE


# What the image holds, seen from inside (as root, to see everywhere).
IMAGE_PROBE = r"""
import importlib.util, json, os, shutil, subprocess, sys
base = os.path.join(sys.base_prefix, "bin", "python3")  # the base image's own python3
print(json.dumps({
    "pip_commands": [c for c in ("pip", "pip3") if shutil.which(c)],
    "base_modules": {m: subprocess.run([base, "-c", f"import {m}"],
                                       capture_output=True).returncode == 0
                     for m in ("pip", "setuptools", "wheel")},
    "prefix": sys.prefix,
    "commands": {c: shutil.which(c) for c in ("vuegraf", "vuegraf-health")},
    "modules": {m: importlib.util.find_spec(m) is not None
                for m in ("vuegraf", "pyemvue", "pip", "setuptools", "wheel")},
    "leftovers": [p for p in ("/src", "/wheels", "/root/.cache/pip") if os.path.exists(p)],
    "wheel_files": [os.path.join(d, f) for d, _, fs in os.walk("/opt") for f in fs
                    if f.endswith(".whl")],
    "venv_owner": os.stat("/opt/venv/lib").st_uid,
}))
"""


def check_image(engine: DockerEngine, tag: str, base: str) -> None:
    inspect = engine.docker("image", "inspect", "--format", "{{json .Config}}", tag)
    config = json.loads(inspect.stdout)
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.base.name"] == base
    assert config["User"] == f"{UID}:{UID}"
    assert config["Healthcheck"]["Test"] == ["CMD", "vuegraf-health"]
    probe = engine.docker(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "python3", tag,
        "-c", IMAGE_PROBE,
    )
    seen = json.loads(probe.stdout)
    assert seen["prefix"] == "/opt/venv"
    assert seen["commands"] == {
        "vuegraf": "/opt/venv/bin/vuegraf",
        "vuegraf-health": "/opt/venv/bin/vuegraf-health",
    }
    assert seen["modules"] == {
        "vuegraf": True, "pyemvue": True, "pip": False, "setuptools": False, "wheel": False,
    }
    # Nor in the base image's python3 (python:3.11-slim brings all three).
    assert seen["pip_commands"] == []
    assert seen["base_modules"] == {"pip": False, "setuptools": False, "wheel": False}
    assert seen["leftovers"] == [] and seen["wheel_files"] == []
    assert seen["venv_owner"] == 0, "the venv belongs to root: vuegraf cannot change it"
    # The ENTRYPOINT, as the image's user.
    version = engine.docker("run", "--rm", "--network", "none", tag, "--version").stdout
    assert version.strip() == f"vuegraf {__version__}"


# -- containers -----------------------------------------------------------------------------


class Container:
    """A vuegraf container of the test's image, with the config dir and the state volume."""

    def __init__(self, engine: DockerEngine, name: str) -> None:
        self.engine = engine
        self.name = name

    @classmethod
    def run(cls, engine: DockerEngine, image: str, name: str, conf_dir: Path) -> Container:
        engine.docker(
            "run", "--detach", "--name", name,
            "--network", "host",
            "--read-only",
            "--health-interval", "2s",
            "--volume", f"{conf_dir}:/opt/vuegraf/conf:ro",
            "--volume", f"{VOLUME}:{STATE_DIR}",
            image,
        )
        return cls(engine, name)

    def inspect(self, template: str) -> str:
        return self.engine.docker("inspect", "--format", template, self.name).stdout.strip()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.inspect("{{json .State}}"))
        return state

    def logs(self) -> str:
        result = self.engine.docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def wait_for(
        self, condition: Callable[[], bool], what: str, timeout: float = DEADLINE
    ) -> None:
        """Until `condition()` holds, while the container runs."""
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.state()["Running"]:
                raise AssertionError(f"{self.name} stopped before {what}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self, phases: Phases) -> dict[str, Any]:
        """`docker stop -t 5`; the container's state after it."""
        with phases(f"{self.name}: docker stop -t 5"):
            self.engine.docker("stop", "-t", "5", self.name, timeout=60)
        state = self.state()
        assert not state["Running"]
        return state


def volume_dir(engine: DockerEngine) -> Path:
    mountpoint = engine.docker("volume", "inspect", "--format", "{{.Mountpoint}}", VOLUME).stdout
    return Path(mountpoint.strip())


def queued(state_dir: Path, scratch: Path) -> list[tuple[str, str, int]] | None:
    """(channel, scale, Unix seconds) of every point in the state dir's queues, or None when a
    queue could not be read just now (it was being written).

    The files are read from copies: opening them where they are, as root, could leave -wal and
    -shm files the container's user could not open."""
    scratch.mkdir(exist_ok=True)
    rows: list[tuple[str, str, int]] = []
    for db in sorted(state_dir.glob("queue-*.sqlite")):
        copy = scratch / db.name
        for suffix in ("", "-wal"):
            source, target = Path(f"{db}{suffix}"), Path(f"{copy}{suffix}")
            target.unlink(missing_ok=True)
            if source.exists():
                shutil.copyfile(source, target)
        try:
            with closing(sqlite3.connect(copy)) as queue:
                found = queue.execute(
                    "SELECT series.channel, series.scale, points.time_us FROM points "
                    "JOIN series ON series.id = points.series"
                ).fetchall()
        except sqlite3.DatabaseError:
            return None
        rows += [(channel, scale, time_us // 1_000_000) for channel, scale, time_us in found]
    return rows


def floor_minute(t: datetime) -> datetime:
    return oracle.floor_to(t, 60)


def newest_complete_minute(t: datetime) -> datetime:
    """The start of the newest minute that surely was complete for vuegraf at `t`."""
    return floor_minute(t - SETTLE) - MINUTE


def write_config(conf_dir: Path, sim_url: str, influx_port: int, database: str) -> Config:
    data = {
        "influxDb": {"host": "127.0.0.1", "port": influx_port, "database": database},
        "accounts": [
            {
                "name": ACCOUNT,
                "email": "me@example.com",
                "password": "pw-in-docker",
                "simulatorUrl": sim_url,
            }
        ],
        "timezone": "America/New_York",
    }
    conf_dir.mkdir()
    path = conf_dir / "vuegraf.json"
    path.write_text(json.dumps(data, indent=2))
    # As docs/docker.md says: private, and readable by the container's user.
    os.chown(path, UID, UID)
    path.chmod(0o600)
    return parse_config(data, path, environ={})


# -- the test ---------------------------------------------------------------------------------


def test_image_collects_stops_cleanly_and_a_new_container_fills_the_gap(
    engine: DockerEngine, base_image: str, image: str, influxdb_v1_db, tmp_path, phases: Phases
):
    server, database = influxdb_v1_db
    client = server.client(database)
    model = UsageModel(Scenario.default(), seed=SEED)
    scratch = tmp_path / "queue-copy"
    buildkit_log = tmp_path / "buildkit.log"
    buildkit: subprocess.Popen[bytes] | None = None

    def minutes(since: datetime, until: datetime) -> Stored:
        return stored_points(client, ACCOUNT, "False", since, until)

    try:
        with phases("image checks (classic build)"):
            check_image(engine, image, base_image)

        with SimulatorServer(seed=SEED) as sim, TcpProxy(server.port) as proxy:
            config = write_config(tmp_path / "conf", sim.url, proxy.port, database)
            conf_dir = config.config_path.parent
            engine.docker("volume", "create", VOLUME)
            state_dir = volume_dir(engine)

            # An earlier run stored up to `first` - 1 minute; the first container must store
            # from `first` on: by its start-up fill, then live. The missed minutes are a few
            # minutes old, so vuegraf need not wait to see whether they still arrive live.
            newest = newest_complete_minute(datetime.now(UTC))
            first = newest - 3 * MINUTE
            seed_minute(config, model, first - MINUTE)

            # -- container 1: collecting, healthy, as uid 1012 on a read-only root -------------
            with phases("vuegraf-1: start until its first minutes are stored"):
                one = Container.run(engine, image, "vuegraf-1", conf_dir)
                want = expected_points(config, model, Scale.MINUTE, first, newest + MINUTE)
                assert want
                one.wait_for(
                    lambda: compare("minutes", minutes(first, newest + MINUTE), want).ok,
                    f"minutes {first:%H:%M} to {newest:%H:%M} in InfluxDB",
                )
            with phases("vuegraf-1: until the health check says healthy"):
                one.wait_for(
                    lambda: one.state().get("Health", {}).get("Status") == "healthy",
                    "healthy status",
                )
            health = one.state()["Health"]
            assert health["Log"][-1]["ExitCode"] == 0, health
            assert health["Log"][-1]["Output"].strip() == "healthy", health
            # The check is the image's; only its interval was shortened.
            assert json.loads(one.inspect("{{json .Config.Healthcheck.Test}}")) == [
                "CMD", "vuegraf-health",
            ]

            pid = int(one.inspect("{{.State.Pid}}"))
            status = Path(f"/proc/{pid}/status").read_text()
            for field in ("Uid", "Gid"):
                m = re.search(rf"^{field}:\s+(.*)$", status, re.M)
                assert m and set(m.group(1).split()) == {str(UID)}, f"{field}: {m and m.group(1)}"
            assert one.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
            assert json.loads(one.inspect("{{json .HostConfig.Tmpfs}}")) in (None, {})
            for path in ("/opt/vuegraf/probe", "/tmp/probe"):
                touch = engine.docker("exec", "vuegraf-1", "touch", path, check=False)
                assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch
            assert (state_dir / "health.json").is_file()

            # -- docker stop, docker rm: exit 0, the volume stays -------------------------------
            state = one.stop(phases)
            logs = one.logs()
            assert state["ExitCode"] == 0 and not state["OOMKilled"], f"{state}\n{one.log_tail()}"
            assert "Received SIGTERM; stopping" in logs
            assert "Traceback" not in logs and "| ERROR |" not in logs, logs
            assert queued(state_dir, scratch) == []
            stored = minutes(first, datetime.now(UTC) + MINUTE)
            last = oracle.utc(max(t for _name, t in stored.points))
            result = compare(
                "minutes of vuegraf-1",
                minutes(first, last + MINUTE),
                expected_points(config, model, Scale.MINUTE, first, last + MINUTE),
            )
            assert result.ok, str(result)
            engine.docker("rm", "vuegraf-1")
            assert engine.docker("ps", "--all", "--quiet").stdout.strip() == ""
            assert VOLUME in engine.docker("volume", "ls", "--quiet").stdout.split()
            assert (state_dir / "health.json").is_file() and list(state_dir.glob("marks-*.json"))

            # BuildKit builds the same Dockerfile while the next minute ends.
            buildkit = make_docker(
                engine, base_image, BUILDKIT_IMAGE, buildkit=True, log=buildkit_log
            )

            # -- a minute nobody collected --------------------------------------------------
            hole = last + MINUTE
            with phases("wait until the minute after vuegraf-1's last one is complete"):
                poll_until(
                    lambda: datetime.now(UTC),
                    lambda now: newest_complete_minute(now) >= hole,
                    timeout=DEADLINE,
                    interval=0.5,
                    describe=lambda now: f"the minute {hole} not complete at {now}",
                )
            assert minutes(hole, hole + MINUTE).points == {}, "the minute was stored already"
            until = newest_complete_minute(datetime.now(UTC)) + MINUTE
            want = expected_points(config, model, Scale.MINUTE, first, until)
            since_last = {key for key in want if key[1] >= oracle.epoch(hole)}
            assert {t for _name, t in since_last} >= {oracle.epoch(hole)}

            # -- container 2 on the same volume, InfluxDB away: the queue fills -----------------
            # It cannot read InfluxDB back (it goes by the marks vuegraf-1 left in the volume);
            # what it collects waits in the volume's queue.
            proxy.cut()
            with phases("vuegraf-2 (InfluxDB away): start until the queue holds every new minute"):
                two = Container.run(engine, image, "vuegraf-2", conf_dir)
                rows: list[tuple[str, str, int]] = []

                def queue_holds_the_new_minutes() -> bool:
                    nonlocal rows
                    rows = queued(state_dir, scratch) or []
                    return since_last <= {(name, t) for name, scale, t in rows if scale == "1MIN"}

                two.wait_for(queue_holds_the_new_minutes, "every minute since vuegraf-1's last "
                             "in the queue")
            by_scale = Counter(scale for _name, scale, _t in rows)
            oldest = oracle.utc(min(t for _name, scale, t in rows if scale == "1MIN"))
            print(f"queued while InfluxDB was away: {len(rows)} points {dict(by_scale)}, "
                  f"minutes from {oldest:%H:%M}; vuegraf-1's last minute was {last:%H:%M}")

            # -- InfluxDB back, docker stop: exit 0, the queue delivered -----------------------
            proxy.forward()
            state = two.stop(phases)
            logs = two.logs()
            assert state["ExitCode"] == 0 and not state["OOMKilled"], f"{state}\n{two.log_tail()}"
            assert "Traceback" not in logs, logs
            print("vuegraf-2's log from the stop on:\n" + logs[logs.index("Received SIGTERM"):])
            assert queued(state_dir, scratch) == [], "the queue was not delivered at the stop"
            stored = minutes(first, datetime.now(UTC) + MINUTE)
            queued_minutes = {(name, t) for name, scale, t in rows if scale == "1MIN"}
            undelivered = queued_minutes - stored.points.keys()
            assert not undelivered, f"queued, then neither queued nor stored: {sorted(undelivered)}"

        result = compare("minutes of both containers", minutes(first, until), want)
        print(result)
        assert result.ok and result.expected > 0, str(result)

        with phases("make docker with BuildKit: the rest after the minute's wait"):
            finish_build(buildkit, buildkit_log)
        with phases("image checks (BuildKit build)"):
            check_image(engine, BUILDKIT_IMAGE, base_image)
    finally:
        if buildkit is not None and buildkit.poll() is None:
            buildkit.kill()
            buildkit.wait()
        client.close()
