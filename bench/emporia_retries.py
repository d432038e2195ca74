"""What pyemvue's own 5xx retries cost: a tick's length, SIGTERM latency, the day's request count.

pyemvue's production `Auth.request` retries a 5xx answer itself: 5 attempts, sleeping 0.5, 1,
2, 4 and 8 s with `time.sleep` (also after the last attempt). This bench runs vuegraf's real
daemon and `EmporiaAccount` through that real path (pyemvue's `Auth`, with only AWS Cognito
stood in for, see vuegraf.simulator.cognito) against the simulator answering 503, in three
configurations:

- "pyemvue as is": pyemvue's Auth left alone (how vuegraf ran it before it adopted the Auth);
- "5 attempts, clock waits": vuegraf runs pyemvue's loop with pyemvue's attempt count, but
  waits between attempts through its clock (a stop ends the wait), none after the last;
- "vuegraf default": `RetryPolicy()`, the production setting.

Part 1 (real time) prints, per configuration, how long one tick takes while every request
answers 503 (its live minute, hour and day requests each fail), how many requests it makes,
and how long a stop (SIGTERM) requested 0.2 s after the tick's first 503 takes to end the
tick. Part 2 (virtual time, pyemvue's sleeps skipped) runs a day with two hours of 503s in
its middle and prints the requests the simulator saw, what vuegraf counted, and what counting
one per call (vuegraf before) would have said.

    .venv/bin/python bench/emporia_retries.py [--hours 24] [--outage-hours 2]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyemvue.auth
from pyemvue import PyEmVue

from vuegraf.clock import Clock, FakeClock, SystemClock
from vuegraf.config import Config, parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount, RetryPolicy
from vuegraf.simulator import SimulatorServer
from vuegraf.simulator.cognito import CognitoStandIn, patch_pyemvue
from vuegraf.simulator.server import RequestRecord
from vuegraf.sinks.factory import build_store
from vuegraf.stats import Stats

EMAIL = "bench@example.com"
PASSWORD = "bench-password"
DAY_START = datetime(2026, 11, 20, 0, 0, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Setup:
    name: str
    factory: Callable[[], PyEmVue] | None  # None: vuegraf's own (adopts pyemvue's Auth)
    retry: RetryPolicy


SETUPS = [
    Setup("pyemvue as is", PyEmVue, RetryPolicy()),
    Setup("5 attempts, clock waits", None, RetryPolicy(attempts=5, max_delay_s=8.0)),
    Setup("vuegraf default", None, RetryPolicy()),
]


def make_config(work: Path) -> Config:
    return parse_config(
        {
            "accounts": [{"name": "Home", "email": EMAIL, "password": PASSWORD}],
            "stateDir": str(work / "state"),
            "sqlitePath": str(work / "bench.sqlite"),
            "timezone": "America/New_York",
        },
        work / "vuegraf.json",
        environ={},
    )


def make_account(setup: Setup, config: Config, clock: Clock, stats: Stats) -> EmporiaAccount:
    return EmporiaAccount(
        config.accounts[0], config, clock, stats, vue_factory=setup.factory, retry=setup.retry
    )


@contextmanager
def cloud(now: Callable[[], datetime] | None = None) -> Iterator[SimulatorServer]:
    with CognitoStandIn(users={EMAIL: PASSWORD}) as cognito, SimulatorServer(now=now) as sim:
        sim.token_check = cognito.check_token
        sim.log_requests = True
        with patch_pyemvue(cognito, sim.url):
            yield sim


def wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("bench: condition not met in time")
        time.sleep(0.01)


def one_failing_tick(setup: Setup, stop_after_first_503: float | None) -> tuple[float, int, float]:
    """(tick seconds, requests in the tick, seconds from the stop to the tick's end)."""
    work = Path(tempfile.mkdtemp(prefix="vuegraf-retries-"))
    config = make_config(work)
    with cloud() as sim:
        clock = SystemClock()
        account = make_account(setup, config, clock, Stats())
        daemon = Daemon(config, [account], [], clock, backfill=False)
        account.refresh_devices()  # log in and read the devices while all is well
        sim.set_fault(503)
        seen = len(sim.requests_seen())
        stopped_at: list[float] = []

        def stopper() -> None:
            wait_for(lambda: any(r.status == 503 for r in sim.requests_seen()[seen:]))
            time.sleep(stop_after_first_503 or 0.0)
            stopped_at.append(time.monotonic())
            clock.stop()

        thread = threading.Thread(target=stopper, daemon=True)
        if stop_after_first_503 is not None:
            thread.start()
        began = time.monotonic()
        daemon.run_cycle()
        ended = time.monotonic()
        requests = len(sim.requests_seen()) - seen
    latency = ended - stopped_at[0] if stopped_at else float("nan")
    return ended - began, requests, latency


class _NoSleep:
    """Stands in for the `time` module inside pyemvue.auth: its retry sleeps return at once."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(_seconds: float) -> None:
        return None


def a_day(setup: Setup, hours: float, outage_hours: float) -> tuple[int, int, int]:
    """(requests the simulator saw, vuegraf's count for the budget, one-per-call count)."""
    work = Path(tempfile.mkdtemp(prefix="vuegraf-retries-day-"))
    config = make_config(work)
    clock = FakeClock(DAY_START, stop_after=DAY_START + timedelta(hours=hours))
    outage_from = DAY_START + timedelta(hours=max(hours - outage_hours, 0) / 2)
    outage_until = outage_from + timedelta(hours=outage_hours)
    stats = Stats()
    with cloud(now=clock.now) as sim:

        def switch(now: datetime) -> None:
            if outage_from <= now < outage_until:
                sim.set_fault(503)
            else:
                sim.clear_fault()

        account = make_account(setup, config, clock, stats)
        daemon = Daemon(config, [account], [build_store(config)], clock, stats=stats,
                        on_cycle=[switch])
        saved = pyemvue.auth.time
        pyemvue.auth.time = _NoSleep()
        try:
            daemon.run()
        finally:
            pyemvue.auth.time = saved
        log = sim.requests_seen()
    counted = sum(n for (_a, endpoint, _o), n in stats.snapshot().requests.items()
                  if endpoint != "login")  # logins are Cognito's, not Emporia API requests
    return len(log), counted, len(log) - repeats(log)


def repeats(log: list[RequestRecord]) -> int:
    """Requests that repeat the one before after a 5xx: pyemvue's retries (and its
    re-request after a 401), which counting one per call never saw."""
    n = 0
    for before, this in zip(log, log[1:], strict=False):
        if before.status >= 500 or before.status == 401:
            n += (before.endpoint, before.query) == (this.endpoint, this.query)
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated day length")
    parser.add_argument("--outage-hours", type=float, default=2.0)
    parser.add_argument("--skip-real-time", action="store_true", help="only part 2")
    args = parser.parse_args()
    logging.getLogger("vuegraf").setLevel(logging.CRITICAL)  # the failures are the point here

    if not args.skip_real_time:
        print("Part 1: one tick while Emporia answers 503 to everything (real time)")
        print(f"  {'configuration':<26} {'tick s':>7} {'requests':>9} {'stop -> end s':>14}")
        for setup in SETUPS:
            tick, requests, _ = one_failing_tick(setup, None)
            _, _, latency = one_failing_tick(setup, 0.2)
            print(f"  {setup.name:<26} {tick:7.2f} {requests:9d} {latency:14.2f}")
        print("  (stop requested 0.2 s after the tick's first 503, as a SIGTERM would)")

    print(f"\nPart 2: {args.hours:g} simulated hours, Emporia answering 503 for "
          f"{args.outage_hours:g} of them (virtual time; pyemvue's sleeps skipped)")
    print(f"  {'configuration':<26} {'simulator saw':>14} {'vuegraf counted':>16} "
          f"{'one per call':>13}")
    for setup in SETUPS:
        seen, counted, per_call = a_day(setup, args.hours, args.outage_hours)
        print(f"  {setup.name:<26} {seen:14d} {counted:16d} {per_call:13d}")
    print("  (pyemvue as is: vuegraf cannot see pyemvue's retries, so it counts nothing; "
          "'one per call' is what it counted before)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
