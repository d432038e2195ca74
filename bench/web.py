"""Benchmark the graphs page: server time, bytes sent and points drawn per view and per store.

    python bench/web.py [--days 365] [--stores sqlite influxdb] [--rounds 20]

Each store is filled by the real daemon: `vuegraf CONFIG --historydays N` as a child process
against the bundled simulator (default household, no latency), stopped once the import is done
and the daemon has saved its device layout. The requests are then timed here, in-process, by
calling `WebServer.route(target)` on a reader of that store (`reader_for(config)`), so the
figure is the server's work (store query, assembly, JSON) without the network or a browser.

The memory the page adds is read from two daemons that made the same import (SQLite, the
Raspberry Pi case): one with `web`, after every view of every device was requested once over
HTTP, one without, both after the same number of collection cycles.

The targets are printed beside the figures; the exit status is 0 whether they pass or not.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test servers' launcher

from servers import InfluxV1Server, ServerStartError  # noqa: E402
from vuegraf.clock import FakeClock  # noqa: E402
from vuegraf.config import parse_config  # noqa: E402
from vuegraf.graphs import layout as graph_layout  # noqa: E402
from vuegraf.graphs.store import reader_for  # noqa: E402
from vuegraf.graphs.views import VIEWS  # noqa: E402
from vuegraf.httpserve import GZIP_ABOVE  # noqa: E402
from vuegraf.simulator import Scenario, SimulatorServer  # noqa: E402
from vuegraf.web.server import WebServer  # noqa: E402

ACCOUNT = "Bench"
DATABASE = "vuegraf_bench"
IMPORT_END = re.compile(
    r"History of \d+ days (done|stopped) in (\d+) s: (.*); (\d+) windows failed"
)
IMPORT_FAILED = "History import failed"
CYCLE = re.compile(r"vuegraf\.daemon \| Cycle at ")
CYCLE_TIMEOUT = 180.0  # s: a cycle comes each minute (5 s after it); this is a generous bound
PANEL_TARGET_MS = 300.0
VIEW_TARGET_MS = 1000.0
GZIP_LEVEL = 5  # the server's


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    directory: Path,
    simulator_url: str,
    influx: InfluxV1Server | None = None,
    web_port: int | None = None,
) -> Path:
    """A config for the default household: SQLite, or InfluxDB 1.x when `influx` is given."""
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "timezone": Scenario.default().timezone,
        "accounts": [
            {
                "name": ACCOUNT,
                "email": "bench@example.com",
                "password": "not-a-real-password",
                "simulatorUrl": simulator_url,
            }
        ],
        "historyRequestsPerSecond": 1000,  # the simulator answers at once: no pacing
        "sqlitePath": "vuegraf.sqlite",
    }
    if influx is not None:
        config["influxDb"] = {"host": influx.host, "port": influx.port, "database": DATABASE}
    if web_port is not None:
        config["web"] = {"port": web_port}
    path = directory / "vuegraf.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


class Daemon:
    """`vuegraf CONFIG -v --historydays N` as a child process, its log read as it grows."""

    def __init__(self, config_path: Path, days: int) -> None:
        self.config_path = config_path
        self.log_path = config_path.parent / "vuegraf.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vuegraf", str(config_path), "-v", "--historydays", str(days)],
            stdout=self._log,
            stderr=self._log,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: re.Pattern[str], count: int, timeout: float) -> list[re.Match[str]]:
        """The first `count` matches of `pattern` in the log, once there are that many."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            found = list(pattern.finditer(text))
            if len(found) >= count:
                return found[:count]
            if IMPORT_FAILED in text or self.process.poll() is not None:
                raise RuntimeError(f"vuegraf stopped or failed; its log ends:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no {pattern.pattern!r} x{count} in {timeout:.0f} s; log:\n{text[-3000:]}"
                )
            time.sleep(0.2)

    def rss_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in kB from /proc: now, and the peak."""
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
        return fields["VmRSS"], fields["VmHWM"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@dataclass
class Imported:
    """One store filled by one daemon."""

    store: str
    config_path: Path
    seconds: float  # wall time from the child's start to the import's end line
    said: str  # the end line's own figures
    failed_windows: int
    rows: int = 0
    stopped_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def import_into(
    store: str, config_path: Path, days: int, cycles: int
) -> tuple[Daemon, Imported]:
    """Start the daemon, wait for the import's end and then `cycles` collection cycles (the
    first one writes layout.json); the daemon is left running for the caller to stop."""
    daemon = Daemon(config_path, days)
    try:
        end = daemon.wait_for(IMPORT_END, 1, timeout=1800 + 20 * days)[0]
        seconds = time.perf_counter() - daemon.started
        daemon.wait_for(CYCLE, cycles, timeout=CYCLE_TIMEOUT * cycles)
    except BaseException:
        daemon.stop()
        raise
    said = f"{end.group(1)} in {end.group(2)} s: {end.group(3)}"
    return daemon, Imported(store, config_path, seconds, said, int(end.group(4)))


def sqlite_rows(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return int(db.execute("SELECT COUNT(*) FROM energy_usage").fetchone()[0])


def influx_rows(server: InfluxV1Server) -> int:
    query = urllib.parse.urlencode({"db": DATABASE, "q": "SELECT COUNT(usage) FROM energy_usage"})
    with urllib.request.urlopen(f"{server.url}/query?{query}", timeout=120) as answer:
        body = json.load(answer)
    series = body["results"][0].get("series") or [{"values": [[0, 0]]}]
    return int(series[0]["values"][0][1])


def load_layout(config_path: Path) -> graph_layout.Layout:
    config = parse_config(json.loads(config_path.read_text()), config_path)
    assert config.state_dir is not None
    layout = graph_layout.load(config.state_dir)
    if layout is None:
        raise RuntimeError(f"no layout.json in {config.state_dir} after a cycle")
    return layout


def chosen_devices(layout: graph_layout.Layout) -> list[graph_layout.DeviceEntry]:
    """The device with the most channels (the whole panel) and one with a single channel
    (the fewest, if none has one)."""
    devices = [d for a in layout if a.name == ACCOUNT for d in a.devices]
    panel = max(devices, key=lambda d: len(d.channels))
    single = min(devices, key=lambda d: len(d.channels))
    return [panel] if single is panel else [panel, single]


def targets(device: graph_layout.DeviceEntry | None) -> list[tuple[str, str]]:
    """(label, request target): every view of `device`, its totals; or /api/now."""
    if device is None:
        return [("now", "/api/now?" + urllib.parse.urlencode({"account": ACCOUNT}))]
    query = {"account": ACCOUNT, "device": device.id}
    out = [
        (f"graph {view:<5}", "/api/graph?" + urllib.parse.urlencode(query | {"view": view}))
        for view in VIEWS
    ]
    out.append(("totals", "/api/totals?" + urllib.parse.urlencode(query)))
    return out


def points_in(body: dict[str, Any]) -> int:
    """The numbers a response gives the page to draw: non-null buckets over every series,
    channel totals, or live watts."""
    if "series" in body:
        return sum(v is not None for s in body["series"] for v in s["mean"])
    if "channels" in body:
        return sum(c[p] is not None for c in body["channels"] for p in ("today", "month", "year"))
    return sum(c["watts"] is not None for a in body["accounts"] for c in a["channels"])


@dataclass
class Timing:
    store: str
    label: str
    device: str
    cold_ms: float
    warm_ms: list[float]
    cpu_ms: list[float]  # this thread's CPU time per request, every round
    json_bytes: int
    gzip_bytes: int
    points: int

    @property
    def p50(self) -> float:
        return statistics.median(self.warm_ms) if self.warm_ms else self.cold_ms

    @property
    def p95(self) -> float:
        if len(self.warm_ms) < 2:
            return self.p50
        return statistics.quantiles(self.warm_ms, n=20, method="inclusive")[18]

    @property
    def cpu_p50(self) -> float:
        return statistics.median(self.cpu_ms)


def time_store(imported: Imported, rounds: int) -> list[Timing]:
    """Every target `rounds` times on a fresh reader; the first round is the cold one."""
    config = parse_config(json.loads(imported.config_path.read_text()), imported.config_path)
    layout = load_layout(imported.config_path)
    reader = reader_for(config)
    # The clock stands where the daemon stopped: the live watts are still live and every
    # round asks the same windows.
    web = WebServer("127.0.0.1", 0, reader, lambda: layout, config.zone,
                    FakeClock(imported.stopped_at))
    plan: list[tuple[str, str, str]] = [("", label, t) for label, t in targets(None)]
    for device in chosen_devices(layout):
        name = f"{device.name} ({len(device.channels)} ch)"
        plan += [(name, label, t) for label, t in targets(device)]
    seen: dict[str, Timing] = {}
    try:
        for _ in range(rounds):
            for device_name, label, target in plan:
                started, cpu = time.perf_counter(), time.thread_time()
                status, _kind, body, _headers = web.route(target)
                ms = (time.perf_counter() - started) * 1000
                cpu_ms = (time.thread_time() - cpu) * 1000
                if status != 200:
                    raise RuntimeError(f"{target}: HTTP {status}: {body[:300]!r}")
                timing = seen.get(target)
                if timing is None:
                    zipped = gzip.compress(body, compresslevel=GZIP_LEVEL)
                    seen[target] = Timing(
                        imported.store,
                        label,
                        device_name,
                        ms,
                        [],
                        [cpu_ms],
                        len(body),
                        len(zipped) if len(body) > GZIP_ABOVE else len(body),
                        points_in(json.loads(body)),
                    )
                else:
                    timing.warm_ms.append(ms)
                    timing.cpu_ms.append(cpu_ms)
    finally:
        reader.close()
    return list(seen.values())


def request_every_view(url: str, layout: graph_layout.Layout) -> int:
    """Every view of every device, its totals, and the live watts, once over HTTP (gzip
    asked, as a browser does); the number of requests."""
    done = 0
    devices = [d for a in layout for d in a.devices]
    for _label, target in [t for d in [None, *devices] for t in targets(d)]:
        request = urllib.request.Request(url + target, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            answer.read()
        done += 1
    return done


@dataclass
class Memory:
    with_web_kb: tuple[int, int]
    without_web_kb: tuple[int, int]
    requests: int
    cycles: int


def fill_sqlite(
    sim_url: str, work: Path, days: int, memory: bool, cycles: int = 2
) -> tuple[Imported, Memory | None]:
    """The SQLite store through a daemon serving the page; with `memory`, a second daemon
    without `web` makes the same import for the RSS baseline."""
    port = free_port()
    config_path = write_config(work / "sqlite", sim_url, web_port=port)
    daemon, imported = import_into("sqlite", config_path, days, 1)
    try:
        requests = 0
        with_web = (0, 0)
        if memory:
            requests = request_every_view(f"http://127.0.0.1:{port}", load_layout(config_path))
            daemon.wait_for(CYCLE, cycles, timeout=CYCLE_TIMEOUT * cycles)
            with_web = daemon.rss_kb()
    finally:
        imported.stopped_at = datetime.now(UTC)
        daemon.stop()
    imported.rows = sqlite_rows(config_path.parent / "vuegraf.sqlite")
    if not memory:
        return imported, None
    base_path = write_config(work / "sqlite-no-web", sim_url)
    baseline, _ = import_into("sqlite (no web)", base_path, days, cycles)
    try:
        without_web = baseline.rss_kb()
    finally:
        baseline.stop()
    return imported, Memory(with_web, without_web, requests, cycles)


def fill_influx(sim_url: str, work: Path, days: int, influx: InfluxV1Server) -> Imported:
    config_path = write_config(work / "influxdb", sim_url, influx=influx)
    daemon, imported = import_into("influxdb", config_path, days, 1)
    imported.stopped_at = datetime.now(UTC)
    daemon.stop()
    imported.rows = influx_rows(influx)
    return imported


@contextmanager
def influx_server() -> Iterator[InfluxV1Server | None]:
    """A private InfluxDB 1.x on a free port, as the tests start it; None when it cannot run."""
    try:
        server = InfluxV1Server()
        server.start()
    except (ServerStartError, OSError) as err:
        print(f"influxdb: not benched, the server did not start: {err}")
        yield None
        return
    try:
        yield server
    finally:
        server.stop()


def print_table(rows: list[Timing], rounds: int) -> None:
    head = (
        f"{'store':<9} {'request':<12} {'device':<24} {'cold ms':>8} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'CPU ms':>7} {'JSON B':>9} {'gzip B':>8} {'points':>7}"
    )
    print(f"\nserver time of WebServer.route(): the first round (cold), then p50/p95 of "
          f"{max(rounds - 1, 1)} more; CPU ms: the median CPU time of this thread (SQLite's "
          "work, not InfluxDB's: it runs in another process), which a busy machine inflates "
          "less than wall time")
    print(head)
    print("-" * len(head))
    for t in rows:
        print(
            f"{t.store:<9} {t.label:<12} {t.device:<24} {t.cold_ms:8.1f} {t.p50:8.1f} "
            f"{t.p95:8.1f} {t.cpu_p50:7.1f} {t.json_bytes:9d} {t.gzip_bytes:8d} {t.points:7d}"
        )


def print_targets(rows: list[Timing], panel: str | None) -> None:
    print()
    year = [t for t in rows if t.store == "sqlite" and t.label.strip() == "graph year"
            and t.device == panel]
    if year:
        t = year[0]
        verdict = "PASS" if t.p95 < PANEL_TARGET_MS else "MISS"
        print(f"{verdict}  year view of the whole panel ({t.device}) on SQLite: p95 "
              f"{t.p95:.1f} ms (cold {t.cold_ms:.1f} ms) < {PANEL_TARGET_MS:.0f} ms")
    graphs = [t for t in rows if t.label.startswith("graph")]
    if graphs:
        slow = max(graphs, key=lambda t: max(t.p95, t.cold_ms))
        worst = max(slow.p95, slow.cold_ms)
        verdict = "PASS" if worst < VIEW_TARGET_MS else "MISS"
        print(f"{verdict}  every view under {VIEW_TARGET_MS:.0f} ms, cold or p95: slowest "
              f"{slow.store} {slow.label.strip()} {slow.device}: {worst:.1f} ms")


def print_memory(memory: Memory) -> None:
    rss_web, rss_base = memory.with_web_kb[0], memory.without_web_kb[0]
    print(
        f"\nmemory (SQLite, after the import and {memory.cycles} cycles; with web: after "
        f"{memory.requests} page requests, every view of every device):"
    )
    for what, (rss, hwm) in (("with web", memory.with_web_kb), ("without web",
                                                                memory.without_web_kb)):
        print(f"  vuegraf {what:<12} VmRSS {rss / 1024:6.1f} MB  (peak {hwm / 1024:.1f} MB)")
    print(f"  the web part adds    {(rss_web - rss_base) / 1024:6.1f} MB of RSS")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365, help="history imported (days)")
    parser.add_argument("--stores", nargs="+", choices=("sqlite", "influxdb"),
                        default=["sqlite", "influxdb"])
    parser.add_argument("--rounds", type=int, default=20, help="requests per target (>= 1)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the RSS comparison (a second import and two minutes)")
    args = parser.parse_args(argv)
    rounds = max(args.rounds, 1)
    imports: list[Imported] = []
    memory = None
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-web-")))
        sim = stack.enter_context(SimulatorServer(latency_s=0))
        if "sqlite" in args.stores:
            imported, memory = fill_sqlite(sim.url, work, args.days, not args.no_memory)
            imports.append(imported)
        influx = stack.enter_context(influx_server()) if "influxdb" in args.stores else None
        if influx is not None:
            imports.append(fill_influx(sim.url, work, args.days, influx))
        print(f"history import of {args.days} days, default simulator household, latency 0:")
        for imp in imports:
            print(f"  {imp.store:<9} {imp.seconds:7.1f} s wall, {imp.rows:9d} rows stored "
                  f"(vuegraf: {imp.said}; {imp.failed_windows} windows failed)")
        rows: list[Timing] = []
        panel = None
        for imp in imports:
            try:
                rows += time_store(imp, rounds)
            except NotImplementedError as err:
                print(f"{imp.store}: not timed, this vuegraf has no reader for it ({err})")
            if panel is None:
                panel_entry = chosen_devices(load_layout(imp.config_path))[0]
                panel = f"{panel_entry.name} ({len(panel_entry.channels)} ch)"
    print_table(rows, rounds)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"(load average {load} on {os.cpu_count()} CPUs when the timing ended: "
          "other work on the machine shows in these figures)")
    print_targets(rows, panel)
    if memory is not None:
        print_memory(memory)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
