"""Command line and wiring: the one place that builds config, accounts, sinks and the loop."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Sequence

from vuegraf import __version__
from vuegraf.clock import SystemClock
from vuegraf.config import ConfigError, load_config
from vuegraf.daemon import Daemon, find_store
from vuegraf.emporia import EmporiaAccount
from vuegraf.sinks.base import Sink, SinkError
from vuegraf.sinks.factory import build_sinks

logger = logging.getLogger("vuegraf")

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vuegraf",
        description="Reads energy usage from the Emporia Vue cloud and stores it in your own "
        "InfluxDB (1.x or 2.x) or an embedded SQLite file.",
    )
    parser.add_argument("configFilename", metavar="CONFIG", help="JSON config file (vuegraf.json)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="more detail about each collection"
    )
    parser.add_argument(
        "-d", "--debug", action="store_true", help="debug output, including every point collected"
    )
    parser.add_argument(
        "--historydays",
        type=int,
        default=0,
        metavar="N",
        help="first import N days of hour and day history (capped by maxHistoryDays)",
    )
    parser.add_argument(
        "--resetdatabase",
        action="store_true",
        help="delete all vuegraf data before starting. USE WITH CAUTION",
    )
    parser.add_argument(
        "--dryrun",
        action="store_true",
        help="read from Emporia and print line protocol to stdout; write nothing",
    )
    parser.add_argument("--version", action="version", version=f"vuegraf {__version__}")
    return parser


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime


def setup_logging(verbose: bool, debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UTCFormatter("%(asctime)s | %(levelname)-5s | %(name)s | %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("vuegraf").setLevel(logging.DEBUG if (verbose or debug) else logging.INFO)


def reset_database(sinks: Sequence[Sink], clock: SystemClock) -> None:
    """--resetdatabase: delete every vuegraf point from the store, saying what went."""
    store = find_store(sinks)
    if store is None:
        raise SinkError("no store to reset", retryable=False)
    store.open()
    try:
        deleted = store.delete_all(clock.now())
    finally:
        store.close()
    if deleted is None:
        logger.warning("--resetdatabase: deleted measurement energy_usage from %s", store.name)
    else:
        logger.warning(
            "--resetdatabase: deleted %d points of measurement energy_usage from %s",
            deleted,
            store.name,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.debug)
    if args.historydays < 0:
        print("--historydays: must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args.configFilename)
    except ConfigError as err:
        print(str(err), file=sys.stderr)
        return EXIT_USAGE
    if args.historydays:
        print("--historydays: not yet supported in this version", file=sys.stderr)
        return EXIT_USAGE
    if args.resetdatabase and args.dryrun:
        print("--resetdatabase: refused together with --dryrun (a dry run deletes nothing)",
              file=sys.stderr)
        return EXIT_USAGE

    logger.info("vuegraf %s starting with %s", __version__, config.config_path)
    clock = SystemClock()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("Received %s; stopping", signal.Signals(signum).name)
        clock.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    sinks = build_sinks(config, dryrun=args.dryrun)
    if args.resetdatabase:
        try:
            reset_database(sinks, clock)
        except SinkError as err:
            logger.error("--resetdatabase failed: %s", err)
            return EXIT_FATAL
    accounts = [EmporiaAccount(a, config, clock) for a in config.accounts]
    daemon = Daemon(config, accounts, sinks, clock, dump_points=args.debug)
    try:
        daemon.run()
    except Exception:
        logger.exception("fatal error")
        return EXIT_FATAL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
