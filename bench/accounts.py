"""Many accounts in one process: is every account's minute stored on time?

    .venv/bin/python bench/accounts.py [--accounts 100 300 1000] [--minutes 10] [--latency 0.1]

For each N, one fresh simulator child process serves N accounts (plus one more, the
reference below), each the bundled household with ids and usage of its own, and waits
`--latency` seconds before every answer. The household's smart plug is offline 3% of its
minutes; those gaps are taken out (`--gaps` keeps them), so every account makes the same
requests and each chart request is a minute vuegraf itself missed. A fresh vuegraf child
process collects the N accounts: the real `Daemon` on its account pool, a real
`EmporiaAccount` per account talking pyemvue over HTTP, and the embedded SQLite store behind
its durable retry queue, built the way `vuegraf.cli.run` builds them. The child is wired
here rather than run through the CLI because the measure needs two seams the CLI has no
reason to offer: a thin wrapper between the retry queue and the store that notes when each
account-minute was stored, and a hook after each cycle. Each N gets processes of its own, so
the RSS printed is that N's alone.

Clock. Both sides run on the wall clock (`--speed 1`, the default), so a 10-minute window
takes 10 real minutes per N. Emporia's latency is real time, and so are the CPU and the
waits for locks that make a minute late, so lateness is only honest in real time.
`--speed K` runs both sides' clocks K times faster from the start of the run (the daemon's
ticks and waits, the simulator's idea of which minute is complete) while latency and CPU
stay real: a tick then has K times less real time for the same work, so those figures are
not the issue's. It is there for quick checks (the test suite's smoke run).

Steady state, not a first start: before the daemon starts, the store is seeded with each
account's newest complete buckets as Emporia serves them (the last 3 minutes, 2 hours, 2
days: getDeviceListUsages through the same `EmporiaAccount`, which also logs in and reads
the devices). The daemon's one read of the store at start then finds every series up to
date, even if its first tick comes a minute or two after the seeding, so it fills no 7-day
hole. The warm-up lasts until `--warmup` cycles in a row were clean (see `CycleLog`); the
window then starts 40 s after a tick (when that tick's requests are done) and lasts
`--minutes`.

Printed per N:
- on time: the share of the window's account-minutes stored within 20 s of their tick. A
  minute's tick is when the daemon first asks for it (the minute's end plus lagSecs); the
  minute is stored when the write that brought the last of its points has returned from the
  store (points written again by a hole fill's window do not count). A minute never stored
  counts as late.
- p50/p99 lateness: that store time minus the tick.
- RSS: the vuegraf process's peak (ru_maxrss, seeding included) and that / N; also per
  account beyond the one-account process's own peak.
- requests per account-day: the simulator's own per-account counts between the start and
  the end of the window (read by this process when the child says the window starts and
  ends), x 1440 / minutes. Beside it, the same for ONE account collected by a third process
  against the same simulator over the same window (so both see the same hour rollovers).
  Requests made once an hour or once a day are counted only if the window holds one.
- CPU seconds per account-minute: the vuegraf process's user + system CPU in the window,
  / (N x minutes).

Targets (issue 11, for 1 000 accounts in one process): every minute within 20 s of its
tick, RSS under 300 MB, requests per account-day the same as with one account. The exit
status is 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any

from vuegraf.clock import Clock, SystemClock
from vuegraf.config import Config
from vuegraf.emporia import EmporiaAccount
from vuegraf.model import Point, Scale
from vuegraf.sinks.base import SeriesStore
from vuegraf.stats import Stats

ON_TIME_S = 20.0  # the "written within 20 s of its tick"
RSS_TARGET_MB = 300.0
MARK_AFTER_TICK_S = 40.0  # window edges: this long after a tick, when its requests are done
WARMUP_MAX_S = 900.0  # a warm-up that never settles ends here, and the window starts anyway
GRACE_S = 600.0  # after the window: real seconds the last minutes may still take to be stored
SAMPLE_S = 1.0  # RSS sampled this often (real seconds)
SEED_WORKERS = 64
SEED_BUCKETS = {Scale.MINUTE: 3, Scale.HOUR: 2, Scale.DAY: 2}
START = "window starts"
END = "window ends"


# -- the vuegraf child -------------------------------------------------------------------------


class ScaledClock:
    """The wall clock run `speed` times faster from `origin` (Unix seconds): every process of
    one run that is given the same origin and speed agrees on the time. `wait` is real time
    / speed, and ends early on `stop`, as `SystemClock`'s does."""

    def __init__(self, origin: float, speed: float) -> None:
        self._real = SystemClock()
        self._origin = datetime.fromtimestamp(origin, UTC)
        self._speed = speed

    def now(self) -> datetime:
        return self._origin + (self._real.now() - self._origin) * self._speed

    def wait(self, seconds: float) -> bool:
        return self._real.wait(seconds / self._speed)

    def stop(self) -> None:
        self._real.stop()

    @property
    def stopped(self) -> bool:
        return self._real.stopped


def make_clock(origin: float, speed: float) -> Clock:
    return SystemClock() if speed == 1 else ScaledClock(origin, speed)


class TimedStore(SeriesStore):
    """The real store, noting when each account-minute's points were first stored: the time
    the write that brought its last new point returned (a point written again, as a hole
    fill's window may do, changes nothing), and how many points it got. Only minutes from
    `since` on are noted (the window's), so the notes stay small beside what is measured.
    Writes come one at a time (the fan-out holds its lock around them), so the notes need no
    lock of their own."""

    def __init__(self, inner: SeriesStore, clock: Clock) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "store")
        self.clock = clock
        self.since = math.inf  # minute (Unix seconds) from which to take notes
        self.stored: dict[tuple[str, int], float] = {}  # (account, minute) -> time
        self.seen: dict[tuple[str, int], int] = {}  # (account, minute) -> points, as bits
        self._bits: dict[tuple[str, str], int] = {}  # (device, channel) -> its bit

    def points(self, key: tuple[str, int]) -> int:
        return self.seen.get(key, 0).bit_count()

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    def write(self, points: Sequence[Point]) -> None:
        self.inner.write(points)
        at = self.clock.now().timestamp()
        for p in points:
            if p.scale is not Scale.MINUTE or p.epoch_s < self.since:
                continue
            key = (p.account, p.epoch_s)
            bit = self._bits.setdefault((p.device, p.channel), 1 << len(self._bits))
            seen = self.seen.get(key, 0)
            if not seen & bit:
                self.seen[key] = seen | bit
                self.stored[key] = at

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]:
        return self.inner.last_times(account, scale, since, until)

    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], list[datetime]]:
        return self.inner.stored_times(account, scale, since, until)

    def delete_all(self, now: datetime) -> int | None:
        return self.inner.delete_all(now)


def recent_buckets(scale: Scale, newest: datetime, count: int, config: Config) -> list[datetime]:
    """`newest` and the `count - 1` buckets of `scale` before it."""
    from vuegraf.schedule import last_complete_bucket

    buckets = [newest]
    while len(buckets) < count:
        buckets.append(last_complete_bucket(scale, buckets[-1], 0, config.zone))
    return buckets


def seed_store(
    accounts: Sequence[EmporiaAccount], store: SeriesStore, config: Config, clock: Clock
) -> dict[str, int]:
    """Store each account's newest buckets (see the module docstring); returns how many
    minute points each account's newest minute had."""
    from vuegraf.schedule import last_complete_bucket, point_time

    scales = [Scale.MINUTE]
    if config.detailed_data_hours_enabled:
        scales.append(Scale.HOUR)
    if config.detailed_data_days_enabled:
        scales.append(Scale.DAY)
    now = clock.now()

    def one(account: EmporiaAccount) -> tuple[str, list[Point], int]:
        account.refresh_devices_if_due()
        points: list[Point] = []
        per_minute = 0
        for scale in scales:
            newest = last_complete_bucket(scale, now, config.lag_secs, config.zone)
            for bucket in recent_buckets(scale, newest, SEED_BUCKETS[scale], config):
                # A day is asked for by its middle, as the collector asks for it.
                instant = bucket + timedelta(hours=12) if scale is Scale.DAY else bucket
                got = account.points(scale, instant, point_time(scale, bucket, config.zone))
                if scale is Scale.MINUTE and bucket == newest:
                    per_minute = len(got)
                points += got
        return account.name, points, per_minute

    expected: dict[str, int] = {}
    with ThreadPoolExecutor(SEED_WORKERS, thread_name_prefix="seed") as pool:
        for name, points, per_minute in pool.map(one, accounts):
            store.write(points)
            expected[name] = per_minute
    return expected


class Meter:
    """The process's RSS, sampled, and its CPU time."""

    def __init__(self) -> None:
        self.peak_mb = 0.0

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 1e6

    def sample(self) -> None:
        self.peak_mb = max(self.peak_mb, self.rss_mb())

    @staticmethod
    def cpu_s() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    @staticmethod
    def max_rss_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Collect accounts `first`.. `first + count - 1` and measure (this process is fresh).

    Prints START and END on stdout as the window starts and ends (the parent reads the
    simulator's counts then). `minutes` 0: the window runs until SIGTERM, less its last
    minute (the reference process)."""
    from vuegraf.config import parse_config
    from vuegraf.daemon import Daemon
    from vuegraf.emporia import RateLimits
    from vuegraf.health import HealthFile
    from vuegraf.schedule import next_tick
    from vuegraf.simulator import Scenario
    from vuegraf.sinks.factory import build_store, queue_path
    from vuegraf.sinks.queue import DEFAULT_MAX_POINTS, DurableQueue, QueuedSink

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    ended = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        ended.set()

    signal.signal(signal.SIGTERM, on_term)
    clock = make_clock(args.origin, args.speed)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {
        "timezone": Scenario.default().timezone,
        "sqlitePath": str(work / "store.sqlite"),
        "stateDir": str(work / "state"),
        "accounts": [
            {
                "name": f"acct-{i:04d}",
                "email": f"acct-{i:04d}@example.com",
                "password": "pw",
                "simulatorUrl": f"{args.child}/account/{i}",
            }
            for i in range(args.first, args.first + args.count)
        ],
    }
    if args.concurrency is not None:
        raw["accountConcurrency"] = args.concurrency
    config = parse_config(raw, work / "vuegraf.json")
    meter = Meter()
    stats = Stats(budget=config.daily_request_budget)
    limits = RateLimits()
    accounts = [EmporiaAccount(a, config, clock, stats, limits=limits) for a in config.accounts]

    seeding = clock.now()
    seeder = build_store(config)
    seeder.open()
    try:
        expected = seed_store(accounts, seeder, config, clock)
    finally:
        seeder.close()
    seed_s = (clock.now() - seeding).total_seconds()

    store = TimedStore(build_store(config), clock)
    queue = DurableQueue(queue_path(config, store), DEFAULT_MAX_POINTS, stats, store.name)
    assert config.state_dir is not None
    health = HealthFile(
        config.state_dir, stats, config.health_failure_threshold, config.update_interval_secs
    )
    cycles = CycleLog(stats)
    daemon = Daemon(
        config,
        accounts,
        [QueuedSink(store, queue, stats, clock)],
        clock,
        stats=stats,
        on_cycle=[health.update, cycles.after],
    )
    running = threading.Thread(target=daemon.run, name="daemon")
    started = clock.now()
    running.start()

    def wait_until(t: datetime | None, done: Callable[[], bool] = lambda: False) -> bool:
        """Sample RSS until `t` (None: no end) or `done()`; False when SIGTERM came first."""
        while not done():
            left = math.inf if t is None else (t - clock.now()).total_seconds()
            if left <= 0:
                return True
            if ended.wait(min(left / args.speed, SAMPLE_S)):
                return False
            meter.sample()
        return True

    interval = timedelta(seconds=config.update_interval_secs)
    late: list[float | None] = []
    short = 0
    window: tuple[datetime, datetime] | None = None
    cpu = 0.0
    rss_start = 0.0
    try:
        settled = wait_until(
            started + timedelta(seconds=WARMUP_MAX_S), lambda: cycles.settled(args.warmup)
        )
        if ended.is_set():
            raise _Ended
        warmup_s = (clock.now() - started).total_seconds()
        mark = timedelta(seconds=MARK_AFTER_TICK_S)
        begin = next_tick(clock.now() - mark, config.update_interval_secs, config.lag_secs) + mark
        store.since = (begin - interval).timestamp()  # the window's first minute and later
        if not wait_until(begin):
            raise _Ended
        cpu, rss_start = meter.cpu_s(), meter.rss_mb()
        meter.peak_mb = rss_start
        print(START, flush=True)
        end = begin + args.minutes * interval if args.minutes else None
        if not wait_until(end):
            # SIGTERM: the window ends a whole number of minutes after it began, at least a
            # minute before now, so its last minute had time to be stored.
            whole = (clock.now() - begin - interval) // interval
            end = begin + max(whole, 0) * interval
        assert end is not None
        cpu = meter.cpu_s() - cpu
        print(END, flush=True)
        window = (begin, end)
        ticks = [
            next_tick(begin + k * interval, config.update_interval_secs, config.lag_secs)
            for k in range(round((end - begin) / interval))
        ]
        names = [a.name for a in config.accounts]
        minute = {t: int((t - interval - timedelta(seconds=config.lag_secs)).timestamp())
                  for t in ticks}
        wanted = [(name, minute[t]) for t in ticks for name in names]
        wait_until(
            end + timedelta(seconds=GRACE_S * args.speed),
            lambda: all(k in store.stored for k in wanted),
        )
        for t in ticks:
            for name in names:
                key = (name, minute[t])
                at = store.stored.get(key)
                late.append(None if at is None else at - t.timestamp())
                short += at is not None and store.points(key) < expected[name]
    except _Ended:
        settled, warmup_s = False, (clock.now() - started).total_seconds()
    finally:
        clock.stop()
        running.join()
    return {
        "accounts": args.count,
        "concurrency": config.account_concurrency,
        "window": [window[0].timestamp(), window[1].timestamp()] if window else None,
        "late": late,
        "short": short,
        "points_per_minute": sum(expected.values()) / max(len(expected), 1),
        "cpu_s": cpu,
        "rss_start_mb": rss_start,
        "rss_window_mb": meter.peak_mb,
        "rss_peak_mb": max(Meter.max_rss_mb(), meter.peak_mb),
        "seed_s": seed_s,
        "first_cycle_s": (cycles.log[0][0] - started).total_seconds() if cycles.log else None,
        "warmup_s": warmup_s,
        "settled": settled,
        "unclean": cycles.unclean(window),
    }


class CycleLog:
    """The daemon's cycles as they end (its `on_cycle` hook): when, and whether clean: every
    account collected (none still at work from a tick before, none failed) and no chart
    request made, so no hole being filled. The warm-up ends after `--warmup` clean cycles in
    a row: a first cycle that outlasts its minute leaves a hole, filled after the tracker's
    settling time, so a few cycles pass before the process is steady."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.log: list[tuple[datetime, bool]] = []
        self._failed = 0
        self._charts = 0

    def after(self, finished: datetime) -> None:
        snap = self.stats.snapshot()
        charts = sum(n for (_a, endpoint, _o), n in snap.requests.items()
                     if endpoint == "getChartUsage")
        clean = snap.failed_cycles == self._failed and charts == self._charts
        self._failed, self._charts = snap.failed_cycles, charts
        self.log.append((finished, clean))

    def settled(self, count: int) -> bool:
        """The last `count` cycles were clean (the first cycle, the start, never counts)."""
        log = self.log[1:]
        if not self.log or len(log) < count:
            return False
        return all(clean for _t, clean in log[len(log) - count:])

    def unclean(self, window: tuple[datetime, datetime] | None) -> int:
        """Cycles that ended in `window` and were not clean."""
        if window is None:
            return 0
        return sum(1 for t, clean in self.log if window[0] < t <= window[1] and not clean)


class _Ended(Exception):
    """SIGTERM before the window began."""


def serve(args: argparse.Namespace) -> int:
    """The simulator child: N accounts, `latency` s per answer, on the run's clock."""
    from vuegraf.simulator import Scenario, SimulatorServer

    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    scenario = Scenario.default()
    if not args.gaps:
        devices = tuple(replace(d, gap_rate=0.0) for d in scenario.devices)
        scenario = replace(scenario, devices=devices)
    clock = make_clock(args.origin, args.speed)
    with SimulatorServer(
        scenario, accounts=args.serve, latency_s=args.latency, now=clock.now
    ) as sim:
        print(sim.url, flush=True)
        stop.wait()
    return 0


# -- the parent: one run per N -----------------------------------------------------------------


def snapshot(url: str, count: int) -> list[dict[str, dict[str, int]]]:
    """Every account's request counts by endpoint and scale, as the simulator keeps them."""

    def one(i: int) -> dict[str, dict[str, int]]:
        with urllib.request.urlopen(f"{url}/account/{i}/simulator/stats", timeout=30) as r:
            counts: dict[str, dict[str, int]] = json.load(r)["requests"]
            return counts

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def requests_between(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, int]:
    """Requests made between two snapshots of one account, by `endpoint scale`."""
    result: dict[str, int] = {}
    for endpoint, by_scale in after.items():
        for scale, n in by_scale.items():
            made = n - before.get(endpoint, {}).get(scale, 0)
            if made:
                label = endpoint if scale == "-" else f"{endpoint} {scale}"
                result[label] = made
    return result


def lateness(late: Sequence[float | None], q: float) -> float:
    """The `q` quantile (nearest rank) of the lateness; a minute never stored is infinitely
    late."""
    ordered = sorted(math.inf if x is None else x for x in late)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(cmd: list[str], log: IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _last_json(text: str) -> dict[str, Any]:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError("the child printed no figures")
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def measure(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One simulator, one N-account vuegraf and one one-account vuegraf, all fresh."""
    origin = SystemClock().now().timestamp()
    common = ["--origin", repr(origin), "--speed", str(args.speed)]
    me = [sys.executable, str(Path(__file__).resolve())]
    logs = work / f"N{n}"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[str]] = []
    with (
        open(logs / "simulator.log", "w") as sim_log,
        open(logs / "vuegraf.log", "w") as big_log,
        open(logs / "reference.log", "w") as ref_log,
    ):
        try:
            serve = ["--serve", str(n + 1), "--latency", str(args.latency)]
            sim = _start(me + serve + (["--gaps"] if args.gaps else []) + common, sim_log)
            procs.append(sim)
            assert sim.stdout is not None
            url = sim.stdout.readline().strip()
            if not url.startswith("http"):
                raise RuntimeError(f"the simulator did not start (see {sim_log.name})")
            child_args = common + ["--warmup", str(args.warmup)]
            if args.concurrency is not None:
                child_args += ["--concurrency", str(args.concurrency)]
            ref = _start(me + ["--child", url, "--first", str(n), "--count", "1",
                               "--minutes", "0", "--work", str(logs / "reference")]
                         + child_args, ref_log)
            procs.append(ref)
            big = _start(me + ["--child", url, "--first", "0", "--count", str(n),
                               "--minutes", str(args.minutes), "--work", str(logs / "vuegraf")]
                         + child_args, big_log)
            procs.append(big)
            load = [os.getloadavg()]
            snaps = []
            out: list[str] = []
            assert big.stdout is not None
            sim_cpu = []
            for line in big.stdout:
                if line.strip() in (START, END):
                    sim_cpu.append(process_cpu_s(sim.pid))
                    snaps.append(snapshot(url, n + 1))
                    load.append(os.getloadavg())
                else:
                    out.append(line)
            if big.wait() != 0:
                raise RuntimeError(f"the {n}-account vuegraf failed (see {big_log.name})")
            figures = _last_json("".join(out))
            ref.send_signal(signal.SIGTERM)
            ref_out, _ = ref.communicate(timeout=120)
            reference = _last_json(ref_out)
        finally:
            for proc in reversed(procs):
                _stop(proc)
    if len(snaps) != 2:
        raise RuntimeError(f"the {n}-account vuegraf measured no window (see {big_log.name})")
    figures["requests"] = [requests_between(a, b) for a, b in zip(snaps[0], snaps[1], strict=True)]
    figures["reference"] = reference
    figures["simulator_cpu_s"] = sim_cpu[1] - sim_cpu[0]
    figures["load"] = load
    figures["warnings"] = sum(
        " WARNING " in line or " ERROR " in line for line in open(big_log.name)
    )
    figures["log"] = big_log.name
    return figures


def per_day(requests: dict[str, int], minutes: float) -> float:
    return sum(requests.values()) * 1440 / minutes


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> bool:
    """Each N's figures and the issue's targets, PASS or MISS; True when all passed."""
    checks: list[tuple[str, bool]] = []
    for r in rows:
        n = r["accounts"]
        begin, end = r["window"]
        minutes = (end - begin) / 60
        late = r["late"]
        on_time = sum(1 for x in late if x is not None and x <= ON_TIME_S)
        never = sum(1 for x in late if x is None)
        ref = r["reference"]
        by_account = [per_day(q, minutes) for q in r["requests"][:n]]
        mean = sum(by_account) / n
        ref_day = per_day(r["requests"][n], minutes)
        stamp = datetime.fromtimestamp(begin, UTC).strftime("%H:%M:%S")
        print(f"N={n}: {minutes:g} min window from {stamp} UTC, accountConcurrency "
              f"{r['concurrency']}, {r['points_per_minute']:g} points per account-minute; "
              f"seeding {r['seed_s']:.0f} s, first cycle {r['first_cycle_s']:.0f} s, warm-up "
              f"{r['warmup_s']:.0f} s" + ("" if r["settled"] else " (never settled: "
              f"{args.warmup} clean cycles in a row not seen)"))
        print(f"  cycles in the window with an account still at work, failed or filling "
              f"holes: {r['unclean']}")
        print("  load average (1, 5, 15 min) at start, window start, window end: "
              + "; ".join(" ".join(f"{x:.1f}" for x in triple) for triple in r["load"]))
        print(f"  on time (<= {ON_TIME_S:g} s after the tick): {on_time} of {len(late)} "
              f"account-minutes ({100 * on_time / max(len(late), 1):.1f}%); "
              f"{len(late) - never} of {len(late)} account-minutes stored, {r['short']} of "
              f"them with fewer points than the account's seeded minute")
        print(f"  lateness after the tick: p50 {lateness(late, 0.5):.1f} s, p99 "
              f"{lateness(late, 0.99):.1f} s, max {lateness(late, 1.0):.1f} s")
        extra = (r["rss_peak_mb"] - ref["rss_peak_mb"]) / max(n - 1, 1)
        print(f"  RSS: peak {r['rss_peak_mb']:.1f} MB = {r['rss_peak_mb'] / n:.2f} MB per "
              f"account ({extra:.2f} MB per account beyond the one-account process's "
              f"{ref['rss_peak_mb']:.1f} MB); in the window {r['rss_start_mb']:.1f} MB at its "
              f"start, {r['rss_window_mb']:.1f} MB at most")
        print(f"  requests per account-day: {mean:.1f} (accounts range {min(by_account):.1f}"
              f"..{max(by_account):.1f}); one account: {ref_day:.1f}")
        total: dict[str, int] = {}
        for q in r["requests"][:n]:
            for label, made in q.items():
                total[label] = total.get(label, 0) + made
        for label in sorted(set(total) | set(r["requests"][n])):
            print(f"    {label:<26} {total.get(label, 0) * 1440 / minutes / n:8.1f}   one "
                  f"account {r['requests'][n].get(label, 0) * 1440 / minutes:8.1f}")
        cpu = r["cpu_s"] / (n * minutes)
        real = (end - begin) / args.speed
        print(f"  CPU: {r['cpu_s']:.1f} s in the window, {cpu:.4f} s per account-minute; the "
              f"vuegraf process had {100 * r['cpu_s'] / real:.0f}% of one core, the simulator "
              f"{100 * r['simulator_cpu_s'] / real:.0f}%")
        ref_late = ref["late"]
        if ref_late:
            print(f"  one account alone: {len(ref_late)} minutes, lateness p50 "
                  f"{lateness(ref_late, 0.5):.1f} s, max {lateness(ref_late, 1.0):.1f} s")
        print(f"  vuegraf log: {r['warnings']} warnings or errors ({r['log']})")
        checks += [
            (f"N={n}: every account-minute within {ON_TIME_S:g} s of its tick "
             f"({on_time} of {len(late)})", on_time == len(late) > 0),
            (f"N={n}: peak RSS {r['rss_peak_mb']:.1f} MB < {RSS_TARGET_MB:g} MB",
             r["rss_peak_mb"] < RSS_TARGET_MB),
            (f"N={n}: requests per account-day {min(by_account):.1f}..{max(by_account):.1f} "
             f"= one account's {ref_day:.1f}",
             min(by_account) == max(by_account) == ref_day),
        ]
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    return all(ok for _, ok in checks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--minutes", type=int, default=10, help="window length (default 10)")
    parser.add_argument("--latency", type=float, default=0.1, help="simulator latency (s)")
    parser.add_argument("--concurrency", type=int, help="accountConcurrency (config default)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="clean cycles in a row that end the warm-up (default 3)")
    parser.add_argument("--speed", type=float, default=1.0, help="clock speed-up (quick checks)")
    parser.add_argument("--gaps", action="store_true",
                        help="keep the smart plug's offline minutes (3%%) of the household")
    parser.add_argument("--work", help="keep logs and stores here (default: a temp dir)")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--origin", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        return serve(args)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    if args.speed <= 0 or args.minutes < 1:
        parser.error("--speed must be > 0 and --minutes >= 1")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="vuegraf-accounts-"))
    rows = []
    for n in args.accounts:
        row = measure(n, args, work)
        print(f"N={n}: done", file=sys.stderr, flush=True)
        rows.append(row)
    print(f"latency {args.latency} s per request, speed {args.speed:g}, logs in {work}")
    return 0 if report(rows, args) else 1


if __name__ == "__main__":
    sys.exit(main())
