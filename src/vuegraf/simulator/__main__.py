"""`vuegraf-simulator` or `python -m vuegraf.simulator`: serve the simulator until stopped.

Prints one line, `vuegraf-simulator listening on http://HOST:PORT`, so a parent process (or a
person) can point `simulatorUrl` at it; SIGINT and SIGTERM stop it cleanly with exit status 0.
With `--accounts N` it also serves N accounts at `http://HOST:PORT/account/0` .. `/account/N-1`.

Emporia's known breakages (the options hold for every account):

    --withdraw locationProperties     the endpoint answers 404 for good (repeatable)
    --fault STATUS[:ENDPOINT,...][@START/DURATION]
                                      answer STATUS (400, 429, 502, 503, ...) to every
                                      endpoint or those listed, from START for DURATION by the
                                      simulator's clock; without @, from start on (repeatable)
    --retry-after SECONDS             429 and 503 faults carry this Retry-After
    --none-rate 0.05                  that fraction of live values answered null, in bursts
                                      of --none-burst seconds (default 300)
    --stale-day SECONDS               a day asked for in the first SECONDS after local
                                      midnight answers the previous day's total

START is an instant (2026-09-14T13:00:00Z) or `+DURATION` after the simulator's start;
DURATION is e.g. `90s`, `30m`, `5h`, `1h30m`, `2d`. Endpoint names are those of
`/simulator/stats`: customers, devices, status, channeltypes, locationProperties,
getDeviceListUsages, getChartUsage. The cases on record:

    --fault 400:customers@2026-09-14T13:00:00Z/5h   (logins failing for five hours)
    --fault 503@+10m/1h                             (a maintenance hour)
    --fault 429:getChartUsage --retry-after 60      (rate limited, told when to come back)
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from types import FrameType

from vuegraf.simulator.model import Scenario, ScenarioError
from vuegraf.simulator.server import (
    ENDPOINTS,
    SimulatorServer,
    clock_from,
    parse_instant_arg,
)


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be between 0 and 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must not be negative")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must not be negative")
    return value


def _instant(text: str) -> datetime:
    try:
        return parse_instant_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_FAULT = re.compile(r"^(\d{3})(?::([A-Za-z,]+))?(?:@([^/]+)/(.+))?$")
# A fault without @ holds from before any instant served to after it.
_ALWAYS = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


def parse_duration(text: str, zero: bool = False) -> timedelta:
    """`90s`, `30m`, `5h`, `1h30m`, `2d`: a positive duration (or nothing, with `zero`)."""
    m = _DURATION.match(text.strip())
    if not m or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 5h, 1h30m or 2d")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if value <= timedelta(0) and not zero:
        raise ValueError(f"{text!r}: must be longer than nothing")
    return value


@dataclass(frozen=True)
class FaultArg:
    """One `--fault`: the start is absolute, or an offset from the simulator's start."""

    status: int
    endpoints: frozenset[str] | None
    start: datetime | timedelta | None  # None: always
    duration: timedelta | None

    def window(self, started: datetime) -> tuple[datetime, datetime]:
        """(start, end) on a simulator whose clock said `started` when it began."""
        if self.start is None or self.duration is None:
            return _ALWAYS
        start = started + self.start if isinstance(self.start, timedelta) else self.start
        return start, start + self.duration


def parse_fault(text: str) -> FaultArg:
    """`STATUS[:ENDPOINT,...][@START/DURATION]`, e.g. `400:customers@+1h/5h` or `503`."""
    m = _FAULT.match(text.strip())
    if not m:
        raise ValueError(
            f"{text!r}: expected STATUS[:ENDPOINT,...][@START/DURATION], e.g. "
            "400:customers@2026-09-14T13:00:00Z/5h or 503@+10m/1h"
        )
    status_text, endpoints_text, start_text, duration_text = m.groups()
    status = int(status_text)
    try:
        HTTPStatus(status)
    except ValueError:
        raise ValueError(f"{text!r}: {status} is no HTTP status") from None
    endpoints = None
    if endpoints_text:
        endpoints = frozenset(e for e in endpoints_text.split(",") if e)
    start: datetime | timedelta | None = None
    duration = None
    if start_text is not None:
        if start_text.startswith("+"):
            start = parse_duration(start_text[1:], zero=True)
        else:
            start = parse_instant_arg(start_text)
        duration = parse_duration(duration_text)
    return FaultArg(status, endpoints, start, duration)


def _fault(text: str) -> FaultArg:
    try:
        return parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vuegraf-simulator",
        description="Serve a simulated Emporia cloud API for PyEmVue.login_simulator().",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (default 8080)")
    parser.add_argument("--scenario", help="scenario JSON (default: the bundled two-panel house)")
    parser.add_argument("--seed", type=int, default=1, help="usage model seed (default 1)")
    parser.add_argument(
        "--accounts",
        type=_count,
        default=0,
        metavar="N",
        help="also serve N accounts, each at URL/account/0 .. URL/account/N-1 (default 0)",
    )
    parser.add_argument("--latency", type=_seconds, default=0.0, help="seconds before each answer")
    parser.add_argument("--error-rate", type=_rate, default=0.0, help="fraction answered HTTP 500")
    parser.add_argument(
        "--timeout-rate", type=_rate, default=0.0, help="fraction held past the client's timeout"
    )
    parser.add_argument(
        "--timeout-secs", type=_seconds, default=15.0, help="how long a held request waits"
    )
    parser.add_argument(
        "--data-delay", type=_seconds, default=3.0, help="seconds after a bucket ends until known"
    )
    parser.add_argument(
        "--now",
        type=_instant,
        metavar="INSTANT",
        help="pretend it is INSTANT (e.g. 2027-03-14T06:50:00Z) at start; time then runs on",
    )
    parser.add_argument(
        "--frozen", action="store_true", help="with --now: time stays at INSTANT"
    )
    breakages = parser.add_argument_group("Emporia's known breakages")
    breakages.add_argument(
        "--withdraw",
        action="append",
        default=[],
        metavar="ENDPOINT",
        help="ENDPOINT answers 404 for good, e.g. locationProperties (repeatable)",
    )
    breakages.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="STATUS[:ENDPOINT,...][@START/DURATION]",
        help="answer STATUS to every endpoint or those listed, from START (an instant or "
        "+DURATION after start) for DURATION, e.g. 400:customers@+1h/5h (repeatable)",
    )
    breakages.add_argument(
        "--retry-after",
        type=_count,
        metavar="SECONDS",
        help="429 and 503 faults send Retry-After: SECONDS (default: none)",
    )
    breakages.add_argument(
        "--none-rate", type=_rate, default=0.0, help="fraction of live values answered null"
    )
    breakages.add_argument(
        "--none-burst",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="a channel's nulls come in bursts this long (default 300)",
    )
    breakages.add_argument(
        "--stale-day",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="a day asked for this long after local midnight answers the previous day's "
        "total (default 0: never; Emporia has done it for about 3600)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frozen and args.now is None:
        parser.error("--frozen needs --now")
    named = set(args.withdraw).union(*(f.endpoints or () for f in args.fault))
    if named - ENDPOINTS:
        parser.error(
            f"unknown endpoint {', '.join(sorted(named - ENDPOINTS))}; "
            f"known: {', '.join(sorted(ENDPOINTS))}"
        )
    try:
        scenario = Scenario.load(args.scenario) if args.scenario else Scenario.default()
        if args.accounts:
            scenario.for_account(0)  # gids a server of many accounts cannot shift: say so here
    except (OSError, ScenarioError) as exc:
        print(f"vuegraf-simulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sim = SimulatorServer(
        scenario,
        seed=args.seed,
        host=args.host,
        port=args.port,
        latency_s=args.latency,
        error_rate=args.error_rate,
        timeout_rate=args.timeout_rate,
        timeout_s=args.timeout_secs,
        data_delay_s=args.data_delay,
        now=clock_from(args.now, args.frozen) if args.now is not None else None,
        accounts=args.accounts,
        none_rate=args.none_rate,
        none_burst_s=args.none_burst,
        stale_day_s=args.stale_day,
    )
    if args.withdraw:
        sim.withdraw(*args.withdraw)
    started = sim.current_time()
    for fault in args.fault:
        start, end = fault.window(started)
        retry_after = args.retry_after if fault.status in (429, 503) else None
        sim.add_fault_window(fault.status, start, end, fault.endpoints, retry_after)
    try:
        sim.start()
    except OSError as exc:
        print(
            f"vuegraf-simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    try:
        print(f"vuegraf-simulator listening on {sim.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
