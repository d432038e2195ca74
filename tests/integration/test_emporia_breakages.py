"""vuegraf under Emporia's known breakages, replayed by the simulator: a withdrawn endpoint,
null bursts in live values (with 5xx answers among them), a stale day total after midnight.

Real pyemvue over HTTP to the simulator, the embedded SQLite store, virtual time shared by
vuegraf and the simulator. What is stored is judged against the simulator's model through
tests/harness/oracle.py; the request counts against what the simulator received.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import oracle
from harness.completeness import compare, earlier_run_points, seed_store, sqlite_points
from harness.emporia_cloud import cognito_cloud, cognito_config
from vuegraf.clock import FakeClock
from vuegraf.config import Config, PrometheusConfig, parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.emporia.session import RetryPolicy
from vuegraf.energy import ChannelId, EnergyLedger, EnergySink
from vuegraf.exporter import ExporterServer, LatestValues, VuegrafCollector
from vuegraf.model import Point, Scale
from vuegraf.simulator import SimulatorServer, UsageModel, bucket_floor
from vuegraf.simulator.server import RequestRecord, parse_instant
from vuegraf.sinks.base import Sink
from vuegraf.sinks.factory import build_sinks
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

NEW_YORK = oracle.NEW_YORK
CATALOG = "vuegraf.emporia.catalog"
RETRY = RetryPolicy(attempts=3, first_delay_s=0.0, max_delay_s=0.0)


class Recorder:
    """A sink that keeps what it is given (no store: it does not decide what is read back)."""

    name = "recorder"

    def __init__(self) -> None:
        self.points: list[Point] = []

    def open(self) -> None:
        pass

    def write(self, points: Sequence[Point]) -> None:
        self.points.extend(points)

    def close(self) -> None:
        pass


def make_config(sim: SimulatorServer, tmp_path: Path) -> Config:
    return parse_config(
        {
            "accounts": [{"name": "Home", "email": "e", "password": "p",
                          "simulatorUrl": sim.url}],
            "sqlitePath": str(tmp_path / "vuegraf.sqlite"),
            "timezone": "America/New_York",
        },
        tmp_path / "vuegraf.json",
    )


def seed_earlier_run(config: Config, model: UsageModel, start: datetime) -> datetime:
    """An earlier run's newest minute, hour and day, so the start-up fill is short; returns
    the minute it left."""
    minute = start.replace(second=0) - timedelta(minutes=2)
    hour = minute.replace(minute=0) - timedelta(hours=1)
    day = (start.astimezone(NEW_YORK) - timedelta(days=1)).date()
    seed_store(config, earlier_run_points(model, "Home", minute, hour, day))
    return minute


def run(config: Config, clock: FakeClock, stats: Stats, sinks: list[Sink] | None = None) -> None:
    """The daemon until the clock stops it; pyemvue tries a 5xx answer 3 times."""
    accounts = [EmporiaAccount(a, config, clock, stats, retry=RETRY) for a in config.accounts]
    Daemon(config, accounts, sinks if sinks is not None else build_sinks(config), clock,
           stats=stats).run()


def scraped(stats: Stats) -> dict[str, list[tuple[dict[str, str], float]]]:
    """vuegraf's own /metrics families, as Prometheus parses them: name -> samples."""
    server = ExporterServer(PrometheusConfig(port=0), VuegrafCollector(LatestValues(), stats),
                            health=lambda: True, runtime_metrics=False)
    text = server.metrics_text().decode()
    return {
        family.name: [(s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def missing_lines_expected(sim: SimulatorServer, records: list[RequestRecord]) -> int:
    """The lines of "no value yet" state changes the live answers received must make: per
    scale, one when channels start missing and one when some come back, worked out from the
    simulator's model and its null draws for every getDeviceListUsages answered 200."""
    model = sim.model
    before: dict[str, frozenset[str]] = {}
    lines = 0
    for r in records:
        if r.endpoint != "getDeviceListUsages" or r.status != 200:
            continue
        start = bucket_floor(r.scale, parse_instant(r.query["instant"]), model.tz)
        missing = frozenset(
            name
            for (gid, num), name in oracle.DEFAULT_NAMES.items()
            if model.device_values(gid, r.scale, start).get(num) is None
            or sim.answers_null(gid, num, r.scale, start)
        )
        old = before.get(r.scale, frozenset())
        lines += bool(missing - old) + bool(old - missing)
        before[r.scale] = missing
    return lines


def test_a_day_of_null_bursts_and_5xx_counts_every_request_and_leaves_no_hole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """24 simulated hours with 5 % of live values null (in 5-minute bursts) and 3 % of
    requests answered 500 (pyemvue's Auth tries each up to 3 times): vuegraf's request
    count (Stats and
    /metrics) is the simulator's exactly, and every minute and hour of every chart channel
    is stored with the model's value."""
    seed = 44
    t0 = datetime(2026, 11, 20, 14, 0, 20, tzinfo=UTC)
    end = t0 + timedelta(hours=24)
    clock = FakeClock(t0, stop_after=end)
    stats = Stats()
    # pyemvue's production path (Cognito login, its Auth that retries a 5xx), with the
    # Cognito stand-in: the simulator's own login path has no retry loop to count.
    with cognito_cloud(seed=seed, now=clock.now, none_rate=0.05, error_rate=0.03) as (_c, sim):
        # 5 % nulls cost ~800 chart requests a day beyond the ~2 200 of steady running: over
        # the default budget the guard (vuegraf.budget, its own tests) would leave holes to
        # the next UTC day. Counting and filling are this test's subject: a budget above it.
        config = cognito_config(tmp_path, sqlitePath=str(tmp_path / "vuegraf.sqlite"),
                                timezone="America/New_York", dailyRequestBudget=5000)
        seeded = seed_earlier_run(config, sim.model, t0)
        with caplog.at_level(logging.INFO):
            run(config, clock, stats)
        seen = sim.stats()
        records = sim.requests_seen()
        model = sim.model
        expected_lines = missing_lines_expected(sim, records)

    # The breakages happened: nulls in live answers, 500s that pyemvue asked again.
    assert seen["errors"] > 20, seen
    null_minutes = sum(
        sim.answers_null(gid, num, "1MIN", parse_instant(r.query["instant"]))
        for r in records
        if r.endpoint == "getDeviceListUsages" and r.scale == "1MIN" and r.status == 200
        for gid, num, _name in oracle.channels(oracle.DEFAULT_NAMES)
    )
    assert null_minutes > 500, null_minutes
    # Every request Emporia saw is counted, pyemvue's retries included: in Stats, ...
    snap = stats.snapshot()
    counted = Counter[str]()
    for (account, endpoint, _outcome), n in snap.requests.items():
        if endpoint != "login":  # the login itself is no API request: its /customers is
            counted[account] += n
    assert counted == {"Home": seen["total"]}, (counted, seen)
    # ... in /metrics, all told and since UTC midnight by the simulator's own clock ...
    families = scraped(stats)
    total = sum(v for labels, v in families["vuegraf_emporia_requests"]
                if labels["endpoint"] != "login")
    assert total == seen["total"]
    utc_midnight = end.replace(hour=0, minute=0, second=0, microsecond=0)
    since_midnight = sum(1 for r in records if r.at >= utc_midnight)
    assert families["vuegraf_emporia_requests_today"] == [({"account": "Home"}, since_midnight)]
    # Each 500 is one of them, and most were ridden over by pyemvue's own retry: the calls
    # that failed after every attempt are far fewer than the 500s.
    assert sum(n for (_a, _e, outcome), n in snap.requests.items()
               if outcome == "http_500") == seen["errors"]
    failed_calls = [r for r in caplog.records if "failed: Emporia answered HTTP 500" in
                    r.getMessage()]
    assert len(failed_calls) < seen["errors"] / 5, (len(failed_calls), seen["errors"])
    # Every minute and hour of every chart channel: stored, with the model's value.
    db = tmp_path / "vuegraf.sqlite"
    for scale, tag, first in ((Scale.MINUTE, "False", seeded + timedelta(minutes=1)),
                              (Scale.HOUR, "Hour", t0.replace(minute=0))):
        # Buckets complete, and their nulls filled, well before the end.
        settled = end - timedelta(seconds=scale.seconds) - timedelta(minutes=10)
        want = oracle.served(oracle.DEFAULT_NAMES, model, scale.value, first, settled, NEW_YORK)
        result = compare(f"{tag} points", sqlite_points(db, "Home", tag), want)
        assert result.ok, str(result)
        assert result.expected > 0.9 * (settled - first) / timedelta(
            seconds=scale.seconds) * len(oracle.channels(oracle.DEFAULT_NAMES))
    # One line per state change of the nulls, none per bucket or retry.
    lines = [r for r in caplog.records if r.name == CATALOG and r.levelno == logging.INFO
             and (" no " in r.getMessage() or "answered again" in r.getMessage())]
    assert expected_lines > 20 and len(lines) == expected_lines


def test_a_withdrawn_endpoint_is_never_asked_and_collection_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """locationProperties answers 404 for good (as since December 2025): vuegraf starts,
    never asks it, says nothing about it, and stores every minute."""
    t0 = datetime(2026, 12, 3, 9, 0, 20, tzinfo=UTC)
    end = t0 + timedelta(minutes=20)
    clock = FakeClock(t0, stop_after=end)
    stats = Stats()
    with SimulatorServer(seed=12, now=clock.now) as sim:
        sim.withdraw("locationProperties")
        config = make_config(sim, tmp_path)
        seeded = seed_earlier_run(config, sim.model, t0)
        with caplog.at_level(logging.INFO):
            run(config, clock, stats)
        seen = sim.stats()
        model = sim.model
    assert "locationProperties" not in seen["requests"]
    assert seen["requests"]["getDeviceListUsages"]["1MIN"] >= 20
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    want = oracle.served(oracle.DEFAULT_NAMES, model, "1MIN", seeded + timedelta(minutes=1),
                         end - timedelta(minutes=1), NEW_YORK, live_only_too=False)
    result = compare("minutes", sqlite_points(tmp_path / "vuegraf.sqlite", "Home", "False"),
                     want)
    assert result.ok and result.expected >= 20 * 28, str(result)


def test_a_stale_day_after_midnight_writes_no_wrong_day_and_counters_do_not_jump(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """For an hour after local midnight Emporia answers a day asked for in the new day with
    the previous day's total. Across that midnight, every day point stored is the model's
    for its own day, none is stored for the new day, and the energy counters rise only by
    the new minutes (the new day starts from what the old one ended at, no spike, no
    reset)."""
    today = date(2026, 11, 26)
    midnight = oracle.midnight(today, NEW_YORK)
    t0 = midnight - timedelta(minutes=30) + timedelta(seconds=20)
    end = midnight + timedelta(minutes=90)
    clock = FakeClock(t0, stop_after=end)
    stats = Stats()
    ledger = EnergyLedger(None, clock)
    seen: list[tuple[datetime, dict[ChannelId, float], dict[str, set[datetime]]]] = []
    with SimulatorServer(seed=17, now=clock.now, stale_day_s=3600, none_rate=0.05) as sim:
        sim.log_requests = True
        config = make_config(sim, tmp_path)
        seeded = seed_earlier_run(config, sim.model, t0)
        memory = Recorder()
        sinks: list[Sink] = [EnergySink(ledger), memory, *build_sinks(config)]
        accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]

        def record(now: datetime) -> None:
            stored: dict[str, set[datetime]] = {}
            for p in memory.points:
                if p.scale is Scale.MINUTE:
                    stored.setdefault(p.channel, set()).add(p.time)
            totals = {k: t.imported - t.exported for k, t in ledger.channels().items()}
            seen.append((now, totals, stored))

        with caplog.at_level(logging.INFO):
            Daemon(config, accounts, sinks, clock, stats=stats, on_cycle=[record]).run()
        model = sim.model
        days_asked = [r for r in sim.requests_seen()
                      if r.endpoint == "getDeviceListUsages" and r.scale == "1D"]
    db = tmp_path / "vuegraf.sqlite"
    # The day that ended at midnight (asked for after it) and the week before it (the
    # start-up fill): each stored with the model's total for its own day.
    yesterday = oracle.midnight(today - timedelta(days=1), NEW_YORK)
    week = oracle.midnight(today - timedelta(days=8), NEW_YORK)
    want = oracle.served(oracle.DEFAULT_NAMES, model, "1D", week, midnight, NEW_YORK)
    required = oracle.served(oracle.DEFAULT_NAMES, model, "1D", yesterday, midnight, NEW_YORK)
    stored_days = sqlite_points(db, "Home", "Day")
    result = compare("day points", stored_days, want, required=required.keys(),
                     window=(week, end + timedelta(days=2)))
    assert result.ok and result.expected == 28, str(result)
    assert days_asked and all(r.status == 200 for r in days_asked)
    # vuegraf asked for that day in the stale hour, by an instant of the day itself (so the
    # stale answer, for an instant of the new day, never reaches it).
    assert any(midnight <= r.at < midnight + timedelta(hours=1) for r in days_asked)
    assert all(parse_instant(r.query["instant"]) < midnight for r in days_asked)
    # None for the new day, which is not complete.
    newest = max(t for _name, t in stored_days.points)
    assert newest == oracle.epoch(oracle.day_stamp(today - timedelta(days=1), NEW_YORK))
    # Minutes on both sides of midnight, each the model's.
    minutes = oracle.served(oracle.DEFAULT_NAMES, model, "1MIN", seeded + timedelta(minutes=1),
                            end - timedelta(minutes=10), NEW_YORK)
    result = compare("minutes", sqlite_points(db, "Home", "False"), minutes)
    assert result.ok, str(result)
    # The energy counters after every cycle: the model's energy of exactly the minutes
    # stored so far (the minutes after the earlier run's), whatever the time of day:
    # a stale day total, a reset or a spike at midnight would break it at that cycle.
    assert len(seen) > 100 and any(now > midnight for now, _t, _s in seen)
    for now, totals, stored in seen:
        for gid, num, name in oracle.channels(oracle.DEFAULT_NAMES, live_only_too=True):
            expected = sum((model.kwh(gid, num, "1MIN", m) or 0.0) * 3_600_000.0
                           for m in stored.get(name, set()))
            assert totals.get(ChannelId(gid, num), 0.0) == pytest.approx(
                expected, rel=1e-9, abs=1e-6), (now, gid, num)



class OneDayBehind(SimulatorServer):
    """An Emporia whose day rollover lags further than the simulator's stale hour: for
    `stale_day_s` after midnight even the day that just ended is answered with the totals
    (and instant) of the day before it. Only the day `live` collection asks for is changed."""

    def stale_day(self, scale: str, start: datetime, now: datetime) -> datetime | None:
        if scale != "1D":
            return None
        ended = bucket_floor("1D", now, self.model.tz)  # the midnight just passed
        if now - ended >= timedelta(seconds=self.stale_day_s):
            return None
        if start == bucket_floor("1D", ended - timedelta(seconds=1), self.model.tz):
            return bucket_floor("1D", start - timedelta(seconds=1), self.model.tz)
        return super().stale_day(scale, start, now)


def test_a_live_day_answered_for_another_day_is_filled_from_the_chart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The live day request after midnight is answered with the day before's totals under
    that day's instant: nothing of it is written, it is said once, and the hole filler
    stores the model's total of every chart channel for it meanwhile."""
    today = date(2026, 11, 26)
    midnight = oracle.midnight(today, NEW_YORK)
    t0 = midnight - timedelta(minutes=5) + timedelta(seconds=20)
    end = midnight + timedelta(minutes=20)
    clock = FakeClock(t0, stop_after=end)
    with OneDayBehind(seed=23, now=clock.now, stale_day_s=3600) as sim:
        sim.log_requests = True
        config = make_config(sim, tmp_path)
        seed_earlier_run(config, sim.model, t0)
        with caplog.at_level(logging.INFO):
            run(config, clock, Stats())
        model = sim.model
        records = sim.requests_seen()
    yesterday = oracle.midnight(today - timedelta(days=1), NEW_YORK)
    live = [r for r in records if r.endpoint == "getDeviceListUsages" and r.scale == "1D"
            and r.at >= midnight]
    # Asked for again every 5 minutes while misdated (see the next test): 4 in 20 minutes,
    # each for the day that ended.
    assert len(live) == 4, [r.at for r in live]
    assert all(yesterday < parse_instant(r.query["instant"]) < midnight for r in live)
    charts = [r for r in records if r.endpoint == "getChartUsage" and r.scale == "1D"
              and r.at >= live[0].at]
    assert len(charts) == 28, len(charts)  # one per chart channel, after the live answer
    # The day that ended, every chart channel with its own total, not the day before's;
    # nothing yet for the live-only channels (they have no chart: they wait for a live
    # answer for the day), nothing for the new day.
    want = oracle.served(oracle.DEFAULT_NAMES, model, "1D", yesterday, midnight, NEW_YORK)
    stored = sqlite_points(tmp_path / "vuegraf.sqlite", "Home", "Day")
    result = compare("day points", stored, want, window=(yesterday, end + timedelta(days=2)))
    assert result.ok and result.expected == 28, str(result)
    live_only = {oracle.DEFAULT_NAMES[k] for k in oracle.LIVE_ONLY}
    stamp = oracle.epoch(oracle.day_stamp(today - timedelta(days=1), NEW_YORK))
    assert not [k for k in stored.points if k[0] in live_only and k[1] == stamp]
    said = [r.getMessage() for r in caplog.records
            if r.name == CATALOG and "with the values of" in r.getMessage()]
    assert said == [
        "Account Home: Emporia answered the 1D request for 2026-11-25T00:00:00-05:00 with "
        "the values of 2026-11-24T00:00:00-05:00 (Emporia's side): not written; the bucket "
        "is asked for again later"
    ]


def test_a_misdated_live_day_is_asked_again_until_every_channel_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The live day after midnight is answered with the day before's for an hour: vuegraf
    asks for it again every 5 minutes (not every tick) until Emporia answers for it, then
    writes every channel's day total, the live-only ones (no chart data to fill them from)
    included. Said once when it starts and once when it ends."""
    today = date(2026, 11, 26)
    midnight = oracle.midnight(today, NEW_YORK)
    t0 = midnight - timedelta(minutes=5) + timedelta(seconds=20)
    stale_until = midnight + timedelta(hours=1)
    end = stale_until + timedelta(minutes=20)
    clock = FakeClock(t0, stop_after=end)
    with OneDayBehind(seed=23, now=clock.now, stale_day_s=3600) as sim:
        sim.log_requests = True
        config = make_config(sim, tmp_path)
        seed_earlier_run(config, sim.model, t0)
        with caplog.at_level(logging.INFO):
            run(config, clock, Stats())
        model = sim.model
        records = sim.requests_seen()
    yesterday = oracle.midnight(today - timedelta(days=1), NEW_YORK)
    live = [r.at for r in records if r.endpoint == "getDeviceListUsages" and r.scale == "1D"
            and r.at >= midnight]
    # Asked again 5 minutes apart (a tick is a minute: at most one late) while misdated; the
    # first ask after the stale hour is answered for the day, and nothing is asked after it.
    gaps = [b - a for a, b in zip(live, live[1:], strict=False)]
    assert gaps and all(timedelta(minutes=5) <= g <= timedelta(minutes=6) for g in gaps), live
    assert live[-2] < stale_until <= live[-1], live
    # The day that ended: every channel, live-only ones included, with its own total.
    want = oracle.served(oracle.DEFAULT_NAMES, model, "1D", yesterday, midnight, NEW_YORK,
                         live_only_too=True)
    stored = sqlite_points(tmp_path / "vuegraf.sqlite", "Home", "Day")
    result = compare("day points", stored, want, window=(yesterday, end + timedelta(days=2)))
    assert result.ok and result.expected == len(oracle.DEFAULT_NAMES), str(result)
    said = [r.getMessage() for r in caplog.records if r.name == CATALOG
            and ("with the values of" in r.getMessage() or "asked for again" in r.getMessage())]
    assert said == [
        "Account Home: Emporia answered the 1D request for 2026-11-25T00:00:00-05:00 with "
        "the values of 2026-11-24T00:00:00-05:00 (Emporia's side): not written; the bucket "
        "is asked for again later",
        "Account Home: Emporia's 1D answers are for the bucket asked for again",
    ]
