"""Command line and wiring: the one place that builds config, accounts, sinks and the loop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from vuegraf import __version__, coverage
from vuegraf.clock import Clock, SystemClock
from vuegraf.config import Config, ConfigError, load_config
from vuegraf.consistency import ConsistencyCheck
from vuegraf.daemon import Daemon
from vuegraf.daycount import DayCountFile
from vuegraf.emporia import EmporiaAccount, RateLimits, pyemvue_problem
from vuegraf.energy import EnergyLedger
from vuegraf.exporter import ExporterServer, LatestValues, PrometheusSink, VuegrafCollector
from vuegraf.graphs import layout as graph_layout
from vuegraf.graphs.store import reader_for
from vuegraf.health import HealthFile
from vuegraf.history import make_progress, run_history
from vuegraf.logformat import (
    DEFAULT_LOG_FORMAT,
    add_log_format_option,
    chosen_log_format,
    log_uncaught,
    make_formatter,
    say_error,
)
from vuegraf.redact import install_redaction
from vuegraf.shard import SHARD_ENV, WHOLE, Shard, ShardError, resolve_shard
from vuegraf.sinks.base import SinkError
from vuegraf.sinks.factory import (
    build_ledger,
    build_sinks,
    build_store,
    queue_path,
    wants_ledger,
)
from vuegraf.stats import Stats
from vuegraf.web.server import WebServer, is_loopback

logger = logging.getLogger("vuegraf")

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vuegraf",
        description="Reads energy usage from the Emporia Vue cloud and stores it in your own "
        "InfluxDB (1.x or 2.x) or an embedded SQLite file.",
        epilog="vuegraf coverage CONFIG [--days N] [--json]: is the stored data complete? "
        "Which holes vuegraf still fills, which --historydays brings, which are lost "
        "(see vuegraf coverage --help).",
    )
    parser.add_argument("configFilename", metavar="CONFIG", help="JSON config file (vuegraf.json)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="more detail about each collection"
    )
    parser.add_argument(
        "-d",
        "--debug",
        action="store_true",
        help="debug output, including every chart request made for a hole and every point",
    )
    parser.add_argument(
        "--historydays",
        type=int,
        default=0,
        metavar="N",
        help="first import N days of hour and day history, and the minutes still inside "
        "Emporia's 7-day retention (capped by maxHistoryDays), then keep collecting",
    )
    parser.add_argument(
        "--resetdatabase",
        action="store_true",
        help="delete all vuegraf data before starting. USE WITH CAUTION",
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help=f"be replica I of N sharing this config: collect only the accounts whose name "
        f"hashes to I (default: ${SHARD_ENV}, else all accounts)",
    )
    parser.add_argument(
        "--dryrun",
        action="store_true",
        help="read from Emporia and print line protocol to stdout; write nothing",
    )
    add_log_format_option(parser)
    parser.add_argument("--version", action="version", version=f"vuegraf {__version__}")
    return parser


def setup_logging(verbose: bool, debug: bool, log_format: str = DEFAULT_LOG_FORMAT) -> None:
    """One handler on stderr for every logger, in `log_format`; exceptions nothing caught
    and Python's warnings go through it too, so they are masked and formatted alike."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.captureWarnings(True)
    log_uncaught()
    root.setLevel(logging.WARNING)
    logging.getLogger("vuegraf").setLevel(logging.DEBUG if (verbose or debug) else logging.INFO)
    # A line per chart request for a hole: only -d; -v would drown in a start-up fill's.
    logging.getLogger("vuegraf.collector.requests").setLevel(
        logging.DEBUG if debug else logging.INFO
    )


def reset_database(config: Config, clock: Clock) -> None:
    """--resetdatabase: delete every vuegraf point from the store, and the retry queue
    (or queued points would come back), saying what went."""
    store = build_store(config)
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
    if config.state_dir is not None:
        path = queue_path(config, store)
        for suffix in ("", "-wal", "-shm"):
            leftover = path.with_name(path.name + suffix)
            if leftover.exists():
                leftover.unlink()
                logger.warning("--resetdatabase: deleted the retry queue %s", leftover)


def _joined_shard(argv: Sequence[str]) -> list[str]:
    """`--shard V` as `--shard=V`: argparse takes a value such as `-1/2` for an option and
    answers with its usage; joined, the value reaches the check and its one-line error."""
    out: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "--":
            out += [arg, *rest]
            break
        if arg == "--shard":
            value = next(rest, None)
            out.append(arg if value is None else f"--shard={value}")
        else:
            out.append(arg)
    return out


def main(
    argv: Sequence[str] | None = None, clock_factory: Callable[[], Clock] = SystemClock
) -> int:
    """`vuegraf CONFIG [flags]`. `clock_factory` makes the clock of each run (one per reload);
    tests pass a clock set to another date, so the same runs can be tried at any date.
    `vuegraf coverage CONFIG [--days N] [--json]`: the coverage report (`coverage_main`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["coverage"]:
        return coverage_main(argv[1:], clock_factory)
    parser = build_parser()
    args = parser.parse_args(_joined_shard(argv))
    log_format = chosen_log_format(parser, args.log_format, os.environ)
    setup_logging(args.verbose, args.debug, log_format)

    def refuse(message: str) -> int:
        say_error(log_format, message)
        return EXIT_USAGE
    if args.historydays < 0:
        return refuse("--historydays: must be >= 0")
    try:
        shard = resolve_shard(args.shard, os.environ)
    except ShardError as err:
        return refuse(str(err))
    if args.resetdatabase and shard.sharded:
        # The store is shared: a reset by one replica would delete every replica's points.
        return refuse(f"--resetdatabase: refused with {shard.source} {shard.label} (it deletes "
                      "every replica's data); run it once without sharding")
    try:
        config = load_config(args.configFilename)
    except ConfigError as err:
        return refuse(str(err))
    masked = set(config.secrets())
    install_redaction(masked)
    if args.resetdatabase and args.dryrun:
        return refuse("--resetdatabase: refused together with --dryrun (a dry run deletes "
                      "nothing)")

    logger.info("vuegraf %s starting with %s", __version__, config.config_path)
    problem = pyemvue_problem()
    if problem is not None:
        logger.error("%s", problem)
        return EXIT_FATAL
    clock = clock_factory()
    reload_asked = False
    stop_asked = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal reload_asked, stop_asked
        logger.info("Received %s; stopping", signal.Signals(signum).name)
        reload_asked = False  # a stop wins over a reload asked for just before
        stop_asked = True
        clock.stop()

    def request_reload(_signum: int, _frame: object) -> None:
        nonlocal reload_asked
        logger.info("Received SIGHUP; reloading %s", config.config_path)
        reload_asked = True
        clock.stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)

    stats = Stats(budget=config.daily_request_budget)
    limits = RateLimits()  # Emporia's 429s outlive a reload, as the counters do
    history_days = args.historydays
    reset = args.resetdatabase
    while True:
        code = run(config, args, clock, stats, history_days, reset, limits, shard, log_format)
        history_days, reset = 0, False  # once per process, not per reload
        if not reload_asked or code != EXIT_OK:
            return code
        reload_asked = False
        try:
            new_config = load_config(args.configFilename)
            # Before anything is logged with it; the old secrets stay masked too.
            masked |= set(new_config.secrets())
            install_redaction(masked)
            config = new_config
            logger.info("Config reloaded")
        except ConfigError as err:
            logger.error("New config rejected, keeping the running one: %s", err)
        clock = clock_factory()
        # A signal that came while reloading found the old clock already done.
        if stop_asked:
            logger.info("Stopped during the reload")
            return EXIT_OK
        if reload_asked:
            clock.stop()  # another SIGHUP: this run ends at once and the config is read again


def coverage_main(argv: Sequence[str], clock_factory: Callable[[], Clock] = SystemClock) -> int:
    """`vuegraf coverage`: the report on stdout; 0 complete, 1 a hole, 2 a bad argument or
    config, 3 the store cannot be read (a script tells "no answer" from "holes"). Reads the
    store and the state directory, nothing else."""
    parser = coverage.build_parser()
    args = parser.parse_args(argv)
    setup_logging(False, False)
    logging.getLogger("vuegraf").setLevel(logging.WARNING)  # stdout is the report
    if args.days < 1:
        print("--days: must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args.configFilename)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return EXIT_USAGE
    install_redaction(set(config.secrets()))
    if config.influx is None and not config.sqlite_path.exists():
        print(f"coverage: no SQLite store at {config.sqlite_path} yet", file=sys.stderr)
        return coverage.EXIT_NO_ANSWER
    store = build_store(config)
    try:
        store.open()
        complete = coverage.run(
            config, store, clock_factory().now(), args.days, args.json, sys.stdout
        )
    except SinkError as err:  # StoreReadError included: one line, no traceback
        print(f"coverage: cannot read {store.name}: {err}", file=sys.stderr)
        return coverage.EXIT_NO_ANSWER
    finally:
        store.close()
    return EXIT_OK if complete else EXIT_FATAL


def run(
    config: Config,
    args: argparse.Namespace,
    clock: Clock,
    stats: Stats,
    history_days: int,
    reset: bool,
    limits: RateLimits | None = None,
    shard: Shard = WHOLE,
    log_format: str = DEFAULT_LOG_FORMAT,
) -> int:
    """Build everything from `config` and collect until the clock is stopped.

    `limits` holds what Emporia's 429 answers asked; `main` passes the same one to every
    run, so the first tick after a reload does not ask Emporia before a Retry-After.
    `shard`: only the accounts it owns are collected (and imported with --historydays).
    `log_format`: an import draws its progress bar on a terminal only in the text format."""
    if clock.stopped:  # a stop that came during a reload: start nothing
        return EXIT_OK
    limits = limits if limits is not None else RateLimits()
    owned = shard.owned(config.accounts)
    if shard.sharded:
        log_owned(shard, len(owned), len(config.accounts))
    # The day's request count goes on from what the last process spent (a morning import).
    day_count = DayCountFile(None if args.dryrun else config.state_dir, shard.file_suffix)
    day_count.load(stats, clock.now())
    accounts = [EmporiaAccount(a, config, clock, stats, limits=limits) for a in owned]
    if reset:
        try:
            reset_database(config, clock)
        except SinkError as err:
            logger.error("--resetdatabase failed: %s", err)
            return EXIT_FATAL
    ledger = None if args.dryrun or not wants_ledger(config) else build_ledger(config, clock, shard)
    # What is written is checked to add up (minutes to hours, hours to days); a dry run
    # writes nothing. One check for the import and collection: a day imported is judged
    # when collection brings its last hours.
    check = None if args.dryrun else ConsistencyCheck(config.zone, stats, clock)
    if history_days:
        try:
            imported = import_history(
                config, accounts, history_days, args.dryrun, clock, stats, ledger, shard,
                bar=log_format == "text", check=check,
            )
        except SinkError as err:
            logger.error("--historydays: %s", err)
            return EXIT_FATAL
        finally:
            day_count.save(stats)  # the import's requests count against today's budget
        if not imported:
            return EXIT_FATAL
        if clock.stopped:
            return EXIT_OK

    sinks = build_sinks(
        config,
        dryrun=args.dryrun,
        stats=stats,
        clock=clock,
        shard=shard,
        ledger=ledger,
        directory=lambda: [(a.name, a.catalog.devices) for a in accounts],
        owned=[a.name for a in accounts],
        check=check,
    )
    health = HealthFile(
        config.state_dir or config.config_path.parent,
        stats,
        config.health_failure_threshold,
        config.update_interval_secs,
        shard,
    )
    exporter = None
    if config.prometheus is not None:
        latest = LatestValues(clock, ledger=ledger)
        sinks.append(PrometheusSink(latest))
        collector = VuegrafCollector(
            latest,
            stats,
            devices=lambda: [state for a in accounts for state in a.device_states()],
            health=health.healthy,
        )
        exporter = ExporterServer(config.prometheus, collector, health.healthy)
        try:
            exporter.start()
        except OSError as err:
            logger.error(
                "prometheus: cannot listen on %s:%d: %s",
                config.prometheus.address,
                config.prometheus.port,
                err,
            )
            return EXIT_FATAL
    saved_layout = None if config.state_dir is None else graph_layout.load(config.state_dir)

    def layout() -> graph_layout.Layout:
        live = graph_layout.from_catalogs([a.catalog for a in accounts], config.add_station_field)
        return graph_layout.with_fallback(live, saved_layout)

    def save_layout(_now: object) -> None:
        if config.state_dir is not None and not args.dryrun:
            graph_layout.save(config.state_dir, layout(), shard.file_suffix)

    web = None if config.web is None else start_web(config, layout, clock)
    daemon = Daemon(
        config,
        accounts,
        sinks,
        clock,
        dump_points=args.debug,
        stats=stats,
        on_cycle=[health.update, save_layout, lambda _now: day_count.save(stats)],
    )
    try:
        daemon.run()
    except SinkError as err:
        # A sink that cannot start (its file locked by another process...): one line; an
        # outage that escaped the sinks' own handling is a bug: with its traceback.
        logger.error("%s", err, exc_info=err.retryable)
        return EXIT_FATAL
    except Exception:
        logger.exception("fatal error")
        return EXIT_FATAL
    finally:
        day_count.save(stats)
        if exporter is not None:
            exporter.stop()
        if web is not None:
            web.stop()
    return EXIT_OK


def start_web(
    config: Config, layout: Callable[[], graph_layout.Layout], clock: Clock
) -> WebServer | None:
    """The graphs page, or None when its address cannot be bound: the page is optional and
    read-only, so collecting goes on without it (one error line says why)."""
    web = config.web
    assert web is not None
    auth = None
    if web.username is not None and web.password is not None:
        auth = (web.username, web.password)
    elif not is_loopback(web.address):
        logger.warning(
            "web: the graphs page on %s has no username and password: anyone who can reach "
            "this host can read it",
            web.address,
        )
    server = WebServer(web.address, web.port, reader_for(config), layout, config.zone, clock, auth)
    try:
        return server.start()
    except OSError as err:
        logger.error(
            "web: cannot listen on %s:%d (%s); collecting without the graphs page",
            web.address,
            web.port,
            err,
        )
        server.reader.close()
        return None


def log_owned(shard: Shard, owned: int, total: int) -> None:
    """Say at start which share of the config this replica collects. Owning none is a
    warning, not an error: a StatefulSet with more replicas than accounts must not
    crash-loop, and a config that grows gives it accounts at the next reload."""
    if owned:
        logger.info(
            "Shard %s: this replica collects %d of the config's %d accounts",
            shard.label, owned, total,
        )
    else:
        logger.warning(
            "Shard %s: none of the config's %d accounts is this replica's; running without "
            "collecting anything",
            shard.label, total,
        )


def import_history(
    config: Config,
    accounts: Sequence[EmporiaAccount],
    days: int,
    dryrun: bool,
    clock: Clock,
    stats: Stats,
    ledger: EnergyLedger | None = None,
    shard: Shard = WHOLE,
    bar: bool = True,
    check: ConsistencyCheck | None = None,
) -> bool:
    """--historydays: hour and day points for N days (minutes inside retention), streamed.

    `bar`: a progress bar on a terminal (else log lines); off in logfmt and json, whose
    every line on stderr must be a record.

    MQTT is left out: old windows are not news for subscribers. The energy counters are not:
    a minute the import stores is one no later fill brings again, so it is counted here (the
    ledger's origin keeps minutes from before a channel's counter began out). `check`, the
    consistency check, sees every point imported.
    """
    sinks = build_sinks(
        config,
        dryrun=dryrun,
        stats=stats,
        clock=clock,
        queued=False,
        mqtt=False,
        shard=shard,
        ledger=ledger,
        check=check,
    )
    for sink in sinks:
        sink.open()
    progress = make_progress(sys.stderr, clock, bar=bar)
    try:
        result = run_history(accounts, sinks, days, config, clock, stats, progress)
    finally:
        progress.finish()
        for sink in sinks:
            sink.close()
    by_scale = ", ".join(
        f"{scale.name.lower()} {result.points[scale]} points/{result.requests[scale]} requests"
        for scale in sorted(result.requests, key=lambda s: s.seconds, reverse=True)
    )
    logger.info(
        "History of %d days %s in %.0f s: %s; %d windows failed, %d left after HTTP 429",
        result.days,
        "stopped" if result.stopped else "done",
        result.seconds,
        by_scale,
        result.failed_windows,
        result.left_windows,
    )
    if result.stopped and clock.stopped:
        # SIGTERM, or SIGHUP: a reload starts collection with the new config, not the import.
        logger.warning(
            "History import cut short by a stop or reload after %d of %d windows (a reload "
            "does not resume it); run --historydays %d again for the rest (windows already "
            "stored are written again, unchanged)",
            result.done,
            result.jobs,
            result.days,
        )
    if result.failed_accounts and len(result.failed_accounts) == len(accounts):
        logger.error("History import failed: no account could be read")
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
