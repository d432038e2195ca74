"""A store that refuses the read back (403: a write-only InfluxDB user or token) costs the
filling of holes from before the start at most, never the holes made while running.

The daemon runs in virtual time against the Emporia simulator (real pyemvue over HTTP, the
simulator's clock tied to the FakeClock), with a store at the seam that keeps every point
written and answers the read back from them as a real one would (the newest point of each
channel in [since, until)), except while it refuses. Expected minutes come from the
simulator's model (tests/harness/oracle.py); times are literals or plain arithmetic.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness import oracle
from harness.completeness import compare
from harness.inprocess import simulator_config
from harness.stores import MemoryStore
from vuegraf.backfill import Tracker
from vuegraf.clock import FakeClock
from vuegraf.config import Config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.model import Point, Scale
from vuegraf.simulator import SimulatorServer, UsageModel
from vuegraf.simulator.server import RequestRecord
from vuegraf.sinks.base import StoreReadError
from vuegraf.stats import Stats

SEED = 3
T0 = datetime(2026, 11, 23, 10, 0, 20, tzinfo=UTC)
FIRST_LIVE_MINUTE = datetime(2026, 11, 23, 9, 59, tzinfo=UTC)  # the newest complete one at T0
MINUTES_ONLY = {"detailedDataHoursEnabled": False, "detailedDataDaysEnabled": False}
SETTLE = timedelta(minutes=5)  # a missed minute is filled within this (settle 2 min + ticks)
REFUSAL = (
    "InfluxQL /query: HTTP 403: error authorizing query: writer not authorized to execute "
    "statement 'SELECT ...', requires READ on \"vue\""
)


class RefusingStore(MemoryStore):
    """Keeps every point written; answers `last_times` from them, or refuses it (retryable, as
    vuegraf classes a 403) until `answers_from` (None: for ever)."""

    name = "refusing"

    def __init__(self, clock: FakeClock, answers_from: datetime | None) -> None:
        super().__init__()
        self.clock = clock
        self.answers_from = answers_from
        self.reads: list[tuple[datetime, bool]] = []  # (when, answered)

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]:
        now = self.clock.now()
        answered = self.answers_from is not None and now >= self.answers_from
        self.reads.append((now, answered))
        if not answered:
            raise StoreReadError(REFUSAL, retryable=True)
        return super().last_times(account, scale, since, until)

    def minutes(self) -> dict[oracle.Key, float]:
        return {(p.channel, int(p.time.timestamp())): p.watts
                for p in self.points if p.scale is Scale.MINUTE}


def minute_points(model: UsageModel, first: datetime, end: datetime) -> dict[oracle.Key, float]:
    """Every minute the simulator serves in [first, end), as vuegraf should write it."""
    return oracle.served(oracle.DEFAULT_NAMES, model, "1MIN", first, end, model.tz)


def missing_or_wrong(got: dict[oracle.Key, float], want: dict[oracle.Key, float]) -> list[str]:
    """Nothing missing, wrong or extra (the simulator has no value there) in want's window."""
    result = compare("minute points", got, want)
    return [] if result.ok else [str(result)]


def run(config: Config, clock: FakeClock, store: RefusingStore, sim: SimulatorServer,
        outage: tuple[datetime, datetime] | None = None) -> Stats:
    """One vuegraf process until the clock stops; Emporia answers 503 to everything for the
    cycles that follow one finished inside `outage`."""

    def emporia_mood(finished: datetime) -> None:
        if outage is not None and outage[0] <= finished < outage[1]:
            sim.set_fault(503)
        else:
            sim.clear_fault()

    stats = Stats()
    account = EmporiaAccount(config.accounts[0], config, clock, stats)
    Daemon(config, [account], [store], clock, stats=stats, on_cycle=[emporia_mood]).run()
    return stats


def chart_start(record: RequestRecord) -> datetime:
    return datetime.fromisoformat(record.query["start"].replace("Z", "+00:00"))


def instant(record: RequestRecord) -> datetime:
    return datetime.fromisoformat(record.query["instant"].replace("Z", "+00:00"))


def minute_charts(log: list[RequestRecord]) -> list[RequestRecord]:
    return [r for r in log if r.endpoint == "getChartUsage" and r.scale == "1MIN"]


def test_reads_refused_all_run_still_fill_an_emporia_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    end = T0 + timedelta(minutes=60)
    clock = FakeClock(T0, stop_after=end)
    store = RefusingStore(clock, answers_from=None)
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        config = simulator_config(tmp_path, sim.url)
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            run(config, clock, store, sim,
                outage=(T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)))
        log = sim.requests_seen()
        model = sim.model

    # Emporia was down for five cycles: the live minutes of those were never answered.
    failed = [r for r in log if r.status == 503]
    assert {r.endpoint for r in failed} == {"getDeviceListUsages"}
    assert len({r.at for r in failed}) >= 3
    # The store was asked again (backing off) and refused every time.
    assert len(store.reads) >= 4 and not any(answered for _when, answered in store.reads)

    # Every minute from the first live one until the settled end is stored, as the model
    # says, the outage's minutes included: they came from chart requests after it.
    settled = end.replace(second=0) - SETTLE
    want = minute_points(model, FIRST_LIVE_MINUTE, settled)
    assert len(want) > 28 * 50
    assert missing_or_wrong(store.minutes(), want) == []
    # They came from requests made after it for the minutes it missed: one usage request
    # per minute brings every channel's minute (Balance's only source).
    outage_fills = [r for r in log if r.status == 200 and r.endpoint == "getDeviceListUsages"
                    and r.scale == "1MIN" and r.at >= T0 + timedelta(minutes=10)
                    and FIRST_LIVE_MINUTE < instant(r) < T0 + timedelta(minutes=10)]
    assert len({instant(r) for r in outage_fills}) >= 3

    # Nothing from before this start was asked for: no marks, a store that cannot say, so
    # no 7-day refetch either.
    assert all(chart_start(r) >= FIRST_LIVE_MINUTE for r in minute_charts(log))
    assert min(p.time for p in store.points if p.scale is Scale.MINUTE) == FIRST_LIVE_MINUTE

    # The refusal was said once (a WARNING), not every time it was asked.
    read_warnings = [r.getMessage() for r in caplog.records
                     if r.levelno >= logging.WARNING and "read back" in r.getMessage()]
    assert read_warnings == [
        f"Account Home: cannot read back from refusing ({REFUSAL}); collecting live values "
        "meanwhile, holes from before this start are filled once it answers"
    ]


# The previous run's newest minute: vuegraf was down from 09:00 until T0.
PREVIOUS_MINUTE = datetime(2026, 11, 23, 8, 59, tzinfo=UTC)


def test_reads_refused_for_a_while_then_the_hole_before_the_start_is_filled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    end = T0 + timedelta(minutes=25)
    clock = FakeClock(T0, stop_after=end)
    store = RefusingStore(clock, answers_from=T0 + timedelta(minutes=5))
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        model = sim.model
        names = {gid: dev for gid, _num, dev, _name, _chart in model.channels()}
        store.points = [  # what the previous run left (an empty state directory: no marks)
            Point("Home", names[gid], name, Scale.MINUTE, PREVIOUS_MINUTE, 1.0)
            for gid, _num, name in oracle.channels(oracle.DEFAULT_NAMES)
        ]
        config = simulator_config(tmp_path, sim.url, MINUTES_ONLY)
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            stats = run(config, clock, store, sim)
        log = sim.requests_seen()

    answered = [when for when, ok in store.reads if ok]
    refused = [when for when, ok in store.reads if not ok]
    assert len(refused) >= 2 and len(answered) == 1, store.reads
    assert answered[0] >= T0 + timedelta(minutes=5) and answered[0] <= end - timedelta(minutes=10)

    # While it refused: no request for anything before this start (no 7-day refetch).
    early = [r for r in minute_charts(log) if r.at < answered[0]]
    assert all(chart_start(r) >= FIRST_LIVE_MINUTE for r in early), early
    # Once it answered: the hour between the previous run and this start, in one request
    # per channel (plus the gappy plug's retries), then every minute up to the settled end.
    late = [r for r in minute_charts(log) if r.at >= answered[0]]
    assert sum(chart_start(r) == PREVIOUS_MINUTE + timedelta(minutes=1) for r in late) >= 20
    assert len(minute_charts(log)) <= 28 + 10
    settled = end.replace(second=0) - SETTLE
    want = minute_points(model, PREVIOUS_MINUTE + timedelta(minutes=1), settled)
    assert missing_or_wrong(store.minutes(), want) == []
    assert stats.snapshot().failed_cycles == 0
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if m.startswith("Account Home: read back from refusing after ")
                and m.endswith(" failed attempts; filling holes")]) == 1, said


def test_reads_refused_in_two_runs_the_gap_between_them_is_filled_from_the_saved_marks(
    tmp_path: Path,
) -> None:
    end_a = T0 + timedelta(minutes=20)
    restart = end_a + timedelta(minutes=30)
    end_b = restart + timedelta(minutes=20)
    clocks = {"now": FakeClock(T0, stop_after=end_a)}
    store = RefusingStore(clocks["now"], answers_from=None)
    with SimulatorServer(seed=SEED, now=lambda: clocks["now"].now()) as sim:
        sim.log_requests = True
        config = simulator_config(tmp_path, sim.url, MINUTES_ONLY)
        run(config, clocks["now"], store, sim)
        clocks["now"] = store.clock = FakeClock(restart, stop_after=end_b)
        sim.request_log.clear()
        run(config, clocks["now"], store, sim)
        log_b = sim.requests_seen()
        model = sim.model

    # The second run knew from the marks the first one saved where that one ended: the 30
    # minutes vuegraf was down are filled, and nothing older is asked for.
    settled = end_b.replace(second=0) - SETTLE
    assert missing_or_wrong(store.minutes(), minute_points(model, FIRST_LIVE_MINUTE, settled)) == []
    starts = [chart_start(r) for r in minute_charts(log_b)]
    assert starts and min(starts) >= end_a - SETTLE
    assert len(starts) <= 28 + 10


def test_tracker_marks_only_move_back_to_the_store_and_never_past_the_lookback() -> None:
    now = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
    mark = datetime(2026, 11, 23, 11, 50, tzinfo=UTC)
    tracker = Tracker(Scale.MINUTE, UTC)
    series = [(1, "1"), (1, "2"), (1, "3"), (1, "4")]
    tracker.seed_from_marks(series, dict.fromkeys(series, mark), now)
    moved = tracker.lower_to_stored(
        series[:3],  # (1, "4") is not asked about: it keeps its mark
        {
            (1, "1"): datetime(2026, 11, 23, 10, 15, 59, tzinfo=UTC),  # older than the mark
            (1, "2"): datetime(2026, 11, 23, 11, 55, tzinfo=UTC),  # newer: stays
            # (1, "3"): nothing stored
        },
        now,
        lookback=timedelta(hours=2),
        stored_lookback=timedelta(days=1),
    )
    assert moved == 2
    assert tracker.marks() == {
        (1, "1"): datetime(2026, 11, 23, 10, 16, tzinfo=UTC),
        (1, "2"): mark,
        (1, "3"): datetime(2026, 11, 23, 10, 1, tzinfo=UTC),  # 2 h back, whole minutes
        (1, "4"): mark,
    }
    # A point stored before the stored lookback: the mark goes back no further than it.
    tracker.lower_to_stored([(1, "2")], {(1, "2"): datetime(2026, 11, 20, tzinfo=UTC)}, now,
                            stored_lookback=timedelta(days=1))
    assert tracker.marks()[(1, "2")] == datetime(2026, 11, 22, 12, 1, tzinfo=UTC)


class RefusingThenNoReadApi(RefusingStore):
    """Refuses the read (403) until `answers_from`, then turns out to offer no read API."""

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]:
        now = self.clock.now()
        self.reads.append((now, False))
        if self.answers_from is None or now < self.answers_from:
            raise StoreReadError(REFUSAL, retryable=True)
        raise StoreReadError("no read API answered: InfluxQL /query: HTTP 501", retryable=False)


def test_refused_then_no_read_api_fills_from_the_lookback_as_a_start_without_marks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    end = T0 + timedelta(minutes=12)
    clock = FakeClock(T0, stop_after=end)
    store = RefusingThenNoReadApi(clock, answers_from=T0 + timedelta(minutes=2))
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        config = simulator_config(tmp_path, sim.url, MINUTES_ONLY)
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            run(config, clock, store, sim)
        log = sim.requests_seen()

    # Asked at the first two ticks (refused), then at the fourth: no read API; not again.
    assert len(store.reads) == 3
    starts = [(r.at, chart_start(r)) for r in minute_charts(log)]
    second_read = store.reads[1][0]
    assert all(start >= FIRST_LIVE_MINUTE for at, start in starts if at <= second_read)
    # No marks saved by a last run: once the store can never say, the 7-day lookback.
    assert min(start for _at, start in starts) <= T0 - timedelta(days=6)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 2 and "cannot read back from refusing" in said[0]
    assert "backfill from the store is off" in said[1] and "the lookback" in said[1]
