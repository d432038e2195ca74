"""Steady running: 24 simulated hours in virtual time, detailed (second) data on.

Prints Emporia requests per account per day by endpoint and scale (the minute
collection must be exactly 1 440 getDeviceListUsages), store queries made after
start-up (must be 0: holes are tracked in memory), and RSS each simulated hour
(must stay flat). Runs the real daemon, real pyemvue over HTTP, the bundled
simulator sharing the virtual clock, and the embedded SQLite store.

    .venv/bin/python bench/steady.py [--hours 24] [--none-rate 0.05]

With `--none-rate` the simulator answers that fraction of live values null (in 5-minute
bursts per channel, as Emporia does), and vuegraf fills them from chart data: the extra
requests per day that costs are printed beside the count Emporia saw. vuegraf asks pyemvue
for one attempt per live request, so a null costs chart requests, never repeated live ones.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.schedule import next_tick
from vuegraf.simulator import SimulatorServer
from vuegraf.sinks.base import SeriesStore
from vuegraf.sinks.factory import build_store
from vuegraf.stats import Stats

START = datetime(2026, 11, 20, 0, 0, 30, tzinfo=UTC)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize() / 1e6


class CountingStore(SeriesStore):
    """Wraps the store to count read-back queries; everything else passes through."""

    def __init__(self, inner, clock: FakeClock):
        self.wrapped = inner
        self.name = inner.name
        self.queries: list[datetime] = []
        self.clock = clock

    def open(self):
        self.wrapped.open()

    def write(self, points):
        self.wrapped.write(points)

    def close(self):
        self.wrapped.close()

    def last_times(self, account, scale, since, until):
        self.queries.append(self.clock.now())
        return self.wrapped.last_times(account, scale, since, until)

    def stored_times(self, account, scale, since, until):
        return self.wrapped.stored_times(account, scale, since, until)

    def delete_all(self, now):
        return self.wrapped.delete_all(now)


def _counted(stats: Stats) -> int:
    """Emporia API requests vuegraf counted (its logins are not API requests)."""
    return sum(n for (_a, endpoint, _o), n in stats.snapshot().requests.items()
               if endpoint != "login")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument(
        "--none-rate", type=float, default=0.0,
        help="fraction of live values the simulator answers null (default 0)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vuegraf-steady-"))
    clock = FakeClock(START)
    stats = Stats()
    samples: list[tuple[float, float]] = []
    with SimulatorServer(seed=1, now=clock.now) as sim:
        config = parse_config(
            {
                "accounts": [
                    {"name": "Home", "email": "e", "password": "p", "simulatorUrl": sim.url}
                ],
                "detailedDataEnabled": True,
                "sqlitePath": str(work / "steady.sqlite"),
                "timezone": "America/New_York",
            },
            work / "vuegraf.json",
        )
        store = CountingStore(build_store(config), clock)
        accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
        daemon = Daemon(config, accounts, [store], clock, stats=stats)
        assert daemon.store is not None and daemon.store.name == store.name

        def run_until(end: datetime, on_cycle=None) -> None:
            while True:
                now = clock.now()
                tick = next_tick(now, config.update_interval_secs, config.lag_secs)
                if tick >= end:
                    clock.advance((end - now).total_seconds())
                    return
                clock.advance((tick - now).total_seconds())
                daemon.run_cycle(tick)
                if on_cycle:
                    on_cycle()

        wall = time.monotonic()
        for sink_ in daemon.sinks:
            sink_.open()
        daemon.run_cycle()
        # Warm-up: the start-up fill (7 days of minutes, 3 h of seconds) is capped per tick
        # and finishes within the first simulated hour; steady running is measured after.
        run_until(START.replace(minute=0, second=0) + timedelta(hours=1))
        startup = sim.stats()["requests"]
        sim.reset_stats()
        counted_before = _counted(stats)
        sim.none_rate = args.none_rate  # after the warm-up, so only steady running sees it
        startup_wall = time.monotonic() - wall
        steady_start = clock.now()
        end = steady_start + timedelta(hours=args.hours)
        next_sample = [steady_start]

        def sample() -> None:
            if clock.now() >= next_sample[0]:
                samples.append(((clock.now() - steady_start).total_seconds() / 3600, rss_mb()))
                next_sample[0] += timedelta(hours=1)

        run_until(end, sample)
        for sink_ in daemon.sinks:
            sink_.close()
        steady = sim.stats()["requests"]
        seen_total = sim.stats()["total"]
        counted = _counted(stats) - counted_before
    wall = time.monotonic() - wall

    per_day = 24.0 / args.hours
    print(f"steady run: {args.hours:g} simulated hours, {daemon.cycles} cycles in all, "
          f"wall {wall:.1f} s (start-up and warm-up hour {startup_wall:.1f} s)")
    print("\nstart-up and warm-up hour requests (empty store: 7 days of minutes, 3 h of "
          "seconds, 7 days of hours and days):")
    for endpoint, by_scale in sorted(startup.items()):
        print(f"  {endpoint:<22} {dict(sorted(by_scale.items()))}")
    print("\nrequests per account per day after start-up, by endpoint and scale:")
    total = 0
    for endpoint, by_scale in sorted(steady.items()):
        for scale, n in sorted(by_scale.items()):
            print(f"  {endpoint:<22} {scale:<5} {n * per_day:8.0f}")
            total += n * per_day
    print(f"  {'total':<28} {total:8.0f}")
    print(f"\nwith {args.none_rate:.0%} of live values null: {seen_total * per_day:.0f} requests "
          f"per day seen by the simulator, {counted * per_day:.0f} counted by vuegraf "
          f"(target: equal)")
    minute = steady.get("getDeviceListUsages", {}).get("1MIN", 0) * per_day
    print(f"\nminute getDeviceListUsages per day: {minute:.0f} (target exactly 1440)")
    after = [q for q in store.queries if q > steady_start]
    print(f"store queries: {len(store.queries)} at start-up, {len(after)} after "
          f"(target 0 per cycle)")
    first, last = samples[0][1], samples[-1][1]
    peak = max(r for _, r in samples)
    print(f"RSS: {first:.1f} MB after the first hour, {last:.1f} MB at the end, peak {peak:.1f} MB")
    print("RSS by simulated hour: " + ", ".join(f"{h:.0f}h {r:.0f}" for h, r in samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
