"""`vuegraf-simulator` or `python -m vuegraf.simulator`: serve the simulator until stopped.

Prints one line, `vuegraf-simulator listening on http://HOST:PORT`, so a parent process (or a
person) can point `simulatorUrl` at it; SIGINT and SIGTERM stop it cleanly with exit status 0.
With `--accounts N` it also serves N accounts at `http://HOST:PORT/account/0` .. `/account/N-1`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import datetime
from types import FrameType

from vuegraf.simulator.model import Scenario, ScenarioError
from vuegraf.simulator.server import SimulatorServer, clock_from, parse_instant_arg


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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frozen and args.now is None:
        parser.error("--frozen needs --now")
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
    )
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
