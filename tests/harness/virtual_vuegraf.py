"""vuegraf in virtual time, as a child process a test can SIGKILL.

    python tests/harness/virtual_vuegraf.py CONFIG CLOCK_FILE [--ms-per-minute 30]
        [--stop-after-minutes N] [--follow NAME] [--shard I/N] [-v]

Wires exactly what `vuegraf CONFIG` wires: the config is loaded with `load_config`, secrets
are redacted from the log, and `vuegraf.cli.run` builds the Emporia accounts, the sinks (the
store behind the durable retry queue in the state dir), the health file and the Daemon. The
only difference is the clock: a `FakeClock` whose `wait()` sleeps a little real time per
simulated minute, then advances virtual time and publishes it to CLOCK_FILE (a Unix timestamp,
replaced atomically). The test process reads that file as the Emporia simulator's `now`, so
both sides agree on which buckets are complete.

The start time is read from CLOCK_FILE, so a restarted child continues where the killed one
left off (or later: the parent may move the file forward to simulate time spent down).

SIGTERM and SIGINT stop the clock, as in the CLI; with `--stop-after-minutes` the run also
ends by itself (exit 0) once that much virtual time has passed.

With `--follow NAME` the child does not move time itself: it follows CLOCK_FILE, which the
test moves (tests/harness/lockstep.py), and says in a park file of its own when it waits,
so several children (replicas of a shard: `--shard`, or VUEGRAF_SHARD as `vuegraf` reads
it) run in one virtual time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vuegraf.cli import run, setup_logging
from vuegraf.clock import Clock, FakeClock
from vuegraf.config import ConfigError, load_config
from vuegraf.redact import install_redaction
from vuegraf.shard import ShardError, resolve_shard
from vuegraf.stats import Stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, run as a script
from harness.lockstep import FollowedClock  # noqa: E402


def read_clock(path: Path) -> datetime:
    return datetime.fromtimestamp(float(path.read_text()), UTC)


def write_clock(path: Path, now: datetime) -> None:
    """Atomically: a reader sees the old or the new time, never half a number."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(repr(now.timestamp()))
    os.replace(tmp, path)


class SharedVirtualClock(FakeClock):
    """Virtual time that passes at `real_per_minute` real seconds per simulated minute,
    published to `path` after every wait."""

    def __init__(
        self,
        path: Path,
        real_per_minute: float,
        stop_after: datetime | None = None,
    ) -> None:
        super().__init__(read_clock(path), stop_after)
        self.path = path
        self.real_per_minute = real_per_minute
        self._wake = threading.Event()

    def wait(self, seconds: float) -> bool:
        if seconds > 0 and not self.stopped:
            self._wake.wait(seconds / 60.0 * self.real_per_minute)
        stopped = super().wait(seconds)
        write_clock(self.path, self.now())
        return stopped

    def stop(self) -> None:
        super().stop()
        self._wake.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("clock_file", type=Path)
    parser.add_argument("--ms-per-minute", type=float, default=30.0)
    parser.add_argument("--stop-after-minutes", type=float, default=None)
    parser.add_argument("--follow", metavar="NAME", help="follow CLOCK_FILE as the test moves it")
    parser.add_argument("--shard", metavar="I/N", help="as vuegraf's --shard")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    setup_logging(args.verbose, False)
    try:
        shard = resolve_shard(args.shard, os.environ)
        config = load_config(args.config)
    except (ConfigError, ShardError) as err:
        print(str(err), file=sys.stderr)
        return 2
    install_redaction(config.secrets())

    start = read_clock(args.clock_file)
    stop_after = (
        None
        if args.stop_after_minutes is None
        else start + timedelta(minutes=args.stop_after_minutes)
    )
    clock: Clock
    if args.follow is not None:
        clock = FollowedClock(args.clock_file, args.follow)
    else:
        clock = SharedVirtualClock(args.clock_file, args.ms_per_minute / 1000.0, stop_after)

    def request_stop(_signum: int, _frame: object) -> None:
        clock.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print(f"virtual vuegraf {os.getpid()} starting at {start.isoformat()}", file=sys.stderr)
    cli_args = argparse.Namespace(dryrun=False, debug=False)
    stats = Stats(budget=config.daily_request_budget)
    return run(config, cli_args, clock, stats, 0, False, shard=shard)


if __name__ == "__main__":
    sys.exit(main())
