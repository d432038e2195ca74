"""--historydays without servers: the plan, the rate limit in virtual time, streaming, retries."""

from __future__ import annotations

import io
import math
import threading
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from harness import oracle
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.emporia import EmporiaError
from vuegraf.emporia.limits import MAX_BUCKETS
from vuegraf.history import (
    HistoryJob,
    make_progress,
    plan_history,
    run_history,
)
from vuegraf.model import Point, Scale
from vuegraf.pool import RateLimiter
from vuegraf.sinks.base import SinkError

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
# 15:17 local on 23 Nov 2026: 30 days back crosses the autumn change (1 Nov 2026).
NOW = datetime(2026, 11, 23, 20, 17, 31, tzinfo=UTC)
HOUR_DAY = {Scale.HOUR, Scale.DAY}


def make_config(tmp_path, **keys):
    data = {
        "accounts": [{"name": "Home", "email": "me@example.com", "password": "pw"}],
        "timezone": "America/New_York",
        **keys,
    }
    return parse_config(data, tmp_path / "vuegraf.json")


class FakeAccount:
    """Serves a deterministic value per bucket; `fail(job)` says how many tries to refuse."""

    def __init__(self, name="Home", channels=28, zone=NY, fail=None, on_fetch=None):
        self.name = name
        self.zone = zone
        self._channels = [(1000 + i // 16, str(i % 16 + 1)) for i in range(channels)]
        self._fail = fail or (lambda key: 0)
        self._on_fetch = on_fetch
        self._tries: dict[tuple, int] = {}
        self._lock = threading.Lock()
        self.fetches: list[tuple] = []

    def refresh_devices_if_due(self):
        return None

    def chart_channels(self):
        return list(self._channels)

    def chart(self, gid, num, scale, first, last):
        """A value for every bucket from `first` to `last`, (bucket start, kWh)."""
        key = (gid, num, scale, first, last)
        with self._lock:
            self._tries[key] = self._tries.get(key, 0) + 1
            tries = self._tries[key]
            self.fetches.append(key)
            if self._on_fetch is not None:
                self._on_fetch(len(self.fetches))
        if tries <= self._fail(key):
            raise EmporiaError("getChartUsage failed: HTTPError: 503")
        values = []
        t = first
        while t <= last:
            values.append((t, (gid + int(num) + t.timestamp() / 3600) % 7))
            t = oracle.bucket_after(scale.value, t, self.zone)
        return values

    def chart_values_to_points(self, gid, num, scale, values):
        """Stamped and converted as EmporiaAccount does per README.md "What is written"
        (with the test's own arithmetic, tests/harness/oracle.py)."""
        return [
            Point(
                self.name,
                str(gid),
                num,
                scale,
                oracle.stamp(scale.value, t, self.zone),
                oracle.watts(scale.value, kwh),
            )
            for t, kwh in values
            if kwh is not None
        ]


class RecordingSink:
    name = "recording"

    def __init__(self, on_write=None):
        self.batches: list[list[Point]] = []
        self._on_write = on_write
        self._writing = False

    def open(self):
        return None

    def write(self, points):
        assert not self._writing, "two writes at once: sinks are single-writer"
        self._writing = True
        try:
            self.batches.append(list(points))
            if self._on_write is not None:
                self._on_write(len(self.batches))
        finally:
            self._writing = False

    def close(self):
        return None


def buckets_of(job: HistoryJob, zone: ZoneInfo) -> list[datetime]:
    """Starts of the buckets a window asks for, from `first` to `last` inclusive."""
    out, t = [], job.first
    while t <= job.last:
        out.append(t)
        t = oracle.bucket_after(job.scale.value, t, zone)
    return out


# --- planning ----------------------------------------------------------------------------


@pytest.mark.parametrize("days", [30, 365, 720])
def test_hour_and_day_windows_per_channel(tmp_path, days):
    config = make_config(tmp_path)
    jobs = plan_history([FakeAccount(channels=28)], days, NOW, config, scales=HOUR_DAY)
    assert len(jobs) == 28 * (math.ceil(days / 20) + math.ceil(days / 480))
    if days == 365:
        assert len(jobs) == 560
    for job in jobs:
        assert len(buckets_of(job, NY)) <= MAX_BUCKETS[job.scale]


def test_hours_cover_n_days_up_to_the_last_complete_hour_once(tmp_path):
    config = make_config(tmp_path)
    jobs = plan_history([FakeAccount(channels=1)], 30, NOW, config, scales={Scale.HOUR})
    hours = sorted(t for job in jobs for t in buckets_of(job, NY))
    last = datetime(2026, 11, 23, 19, tzinfo=UTC)
    assert hours == [last - timedelta(hours=i) for i in reversed(range(30 * 24))]


def test_order_days_then_hours_then_minutes_each_series_oldest_first(tmp_path):
    # Each series is filled oldest first at every scale (the trackers' order; a stopped
    # import's newest hours are the daemon's backfill after it, from the store's newest
    # point): minutes first of all near Emporia's retention edge.
    config = make_config(tmp_path)
    jobs = plan_history([FakeAccount(channels=2)], 60, NOW, config)
    scales = [j.scale for j in jobs]
    assert scales == sorted(scales, key=[Scale.DAY, Scale.HOUR, Scale.MINUTE].index)
    for scale in (Scale.DAY, Scale.HOUR, Scale.MINUTE):
        for series in {(j.gid, j.channel_num) for j in jobs}:
            firsts = [
                j.first for j in jobs if j.scale is scale and (j.gid, j.channel_num) == series
            ]
            assert firsts == sorted(firsts) and len(firsts) == len(set(firsts))


@pytest.mark.parametrize("days", [30, 720])
def test_minute_windows_only_inside_retention(tmp_path, days):
    config = make_config(tmp_path)
    jobs = plan_history([FakeAccount(channels=28)], days, NOW, config, scales={Scale.MINUTE})
    per_channel = [j for j in jobs if (j.gid, j.channel_num) == (1000, "1")]
    assert len(jobs) == 28 * len(per_channel)
    assert len(per_channel) == 14  # 7 days less the margin, 12 h a window
    minutes = sorted(t for job in per_channel for t in buckets_of(job, NY))
    assert minutes[0] >= NOW - timedelta(days=7)
    assert minutes[0] <= NOW - timedelta(days=7) + timedelta(hours=2)
    assert minutes[-1] == datetime(2026, 11, 23, 20, 16, tzinfo=UTC)
    assert len(minutes) == len(set(minutes))
    assert all(b - a == timedelta(minutes=1) for a, b in zip(minutes, minutes[1:], strict=False))
    assert all(len(buckets_of(j, NY)) <= 720 for j in per_channel)


def test_minute_windows_for_a_short_import_cover_only_its_days(tmp_path):
    config = make_config(tmp_path)
    jobs = plan_history([FakeAccount(channels=1)], 1, NOW, config, scales={Scale.MINUTE})
    minutes = [t for job in jobs for t in buckets_of(job, NY)]
    assert len(jobs) == 2 and len(minutes) == 24 * 60


def test_days_are_capped_by_max_history_days(tmp_path, caplog):
    config = make_config(tmp_path, maxHistoryDays=100)
    account = FakeAccount(channels=3)
    with caplog.at_level("WARNING", logger="vuegraf.history"):
        capped = plan_history([account], 1000, NOW, config, scales=HOUR_DAY)
    assert "maxHistoryDays" in caplog.text
    assert capped == plan_history([account], 100, NOW, config, scales=HOUR_DAY)
    days = {t for j in capped if j.scale is Scale.DAY for t in buckets_of(j, NY)}
    assert len(days) == 100


def test_disabled_hours_or_days_are_not_fetched(tmp_path):
    account = FakeAccount(channels=2)
    no_hours = make_config(tmp_path, detailedDataHoursEnabled=False)
    assert {j.scale for j in plan_history([account], 30, NOW, no_hours)} == {
        Scale.DAY,
        Scale.MINUTE,
    }
    no_days = make_config(tmp_path, detailedDataDaysEnabled=False)
    assert {j.scale for j in plan_history([account], 30, NOW, no_days)} == {
        Scale.HOUR,
        Scale.MINUTE,
    }


def test_zero_days_plans_nothing(tmp_path):
    assert plan_history([FakeAccount()], 0, NOW, make_config(tmp_path)) == []


@pytest.mark.parametrize(
    "now",
    [
        NOW,  # autumn change inside the range
        datetime(2026, 3, 9, 4, 30, tzinfo=UTC),  # 23:30 local on 8 Mar, the spring change day
        datetime(2026, 11, 2, 5, 30, tzinfo=UTC),  # 00:30 local on 2 Nov, just after autumn
    ],
)
@pytest.mark.parametrize("days", [30, 720])
def test_day_windows_across_dst_cover_every_local_day_exactly_once(tmp_path, now, days):
    """Upstream's stale UTC offset ended a window crossing autumn DST one day early."""
    config = make_config(tmp_path)
    jobs = plan_history([FakeAccount(channels=1)], days, now, config, scales={Scale.DAY})
    starts = [t for job in jobs for t in buckets_of(job, NY)]
    dates = sorted(t.astimezone(NY).date() for t in starts)
    yesterday = now.astimezone(NY).date() - timedelta(days=1)
    assert dates == [yesterday - timedelta(days=i) for i in reversed(range(days))]
    for t in starts:
        local = t.astimezone(NY)
        assert (local.hour, local.minute) == (0, 0)  # each bucket starts at local midnight
    # The newest window ends with yesterday, however many DST changes lie between.
    newest = max(jobs, key=lambda j: j.last)
    assert newest.last.astimezone(NY).date() == yesterday


def test_day_points_across_autumn_dst_are_stamped_at_local_end_of_day(tmp_path):
    config = make_config(tmp_path)
    sink = RecordingSink()
    run_history([FakeAccount(channels=1)], [sink], 30, config, FakeClock(NOW), scales={Scale.DAY})
    stamps = sorted(p.time for batch in sink.batches for p in batch)
    assert len(stamps) == 30
    local = [t.astimezone(NY) for t in stamps]
    assert all((t.hour, t.minute, t.second) == (23, 59, 59) for t in local)
    assert date(2026, 11, 1) in {t.date() for t in local}
    assert len({t.date() for t in local}) == 30


# --- rate limit ----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "rate", "burst"), [(300, 30.0, 1), (100, 4.0, 1), (300, 30.0, 4)])
def test_rate_limiter_takes_n_over_r_virtual_seconds(n, rate, burst):
    clock = FakeClock(NOW)
    limiter = RateLimiter(rate, clock, burst=burst)
    for _ in range(n):
        assert limiter.acquire()
    elapsed = (clock.now() - NOW).total_seconds()
    assert elapsed == pytest.approx((n - burst) / rate, abs=1e-3)


def test_rate_limiter_after_a_pause_grants_a_burst_then_the_rate():
    clock = FakeClock(NOW)
    limiter = RateLimiter(10.0, clock, burst=3)
    clock.advance(60)
    start = clock.now()
    for _ in range(3 + 10):
        limiter.acquire()
    assert (clock.now() - start).total_seconds() == pytest.approx(1.0, abs=1e-3)


def test_rate_limiter_returns_false_once_stopped():
    clock = FakeClock(NOW)
    limiter = RateLimiter(1.0, clock)
    assert limiter.acquire()
    clock.stop()
    assert not limiter.acquire()


def test_import_requests_are_paced_by_the_configured_rate(tmp_path):
    config = make_config(tmp_path, historyConcurrency=1, historyRequestsPerSecond=5)
    clock = FakeClock(NOW)
    result = run_history(
        [FakeAccount(channels=10)], [RecordingSink()], 30, config, clock, scales=HOUR_DAY
    )
    requests = sum(result.requests.values())
    assert requests == 10 * (2 + 1)
    assert result.seconds == pytest.approx((requests - 1) / 5, abs=1e-3)


# --- streaming, retries, stop ----------------------------------------------------------------


def test_each_window_is_written_once_as_it_arrives(tmp_path):
    config = make_config(tmp_path, historyConcurrency=3)
    sink = RecordingSink()
    writes_before_fetch: list[int] = []

    def on_fetch(_n):
        writes_before_fetch.append(len(sink.batches))

    account = FakeAccount(channels=12, on_fetch=on_fetch)
    clock = FakeClock(NOW)
    jobs = plan_history([account], 45, NOW, config)
    result = run_history([account], [sink], 45, config, clock)

    assert result.ok and result.done == result.jobs == len(jobs)
    assert len(sink.batches) == len(jobs)  # one write per window
    for batch in sink.batches:
        assert len({(p.channel, p.scale) for p in batch}) == 1  # a write holds one window
    assert sum(len(b) for b in sink.batches) == sum(result.points.values())
    expected = sum(len(buckets_of(j, NY)) for j in jobs)
    assert sum(result.points.values()) == expected
    # Streaming: when window i is fetched, all but the few in flight were already written.
    in_flight = 2 * config.history_concurrency
    assert all(w >= i - in_flight for i, w in enumerate(writes_before_fetch))
    assert result.requests == Counter(j.scale for j in jobs)  # one request per window


def test_import_twice_writes_the_same_points(tmp_path):
    config = make_config(tmp_path)
    runs = []
    for _ in range(2):
        sink = RecordingSink()
        run_history([FakeAccount(channels=4)], [sink], 10, config, FakeClock(NOW))
        runs.append(
            sorted((p.channel, p.scale.value, p.time, p.watts) for b in sink.batches for p in b)
        )
    assert runs[0] == runs[1]
    assert len(runs[0]) == len(set(runs[0]))


def test_a_failing_window_is_retried_then_succeeds(tmp_path):
    config = make_config(tmp_path)
    bad = None

    def fail(key):
        nonlocal bad
        if bad is None:
            bad = key
        return 2 if key == bad else 0

    account = FakeAccount(channels=3, fail=fail)
    clock = FakeClock(NOW)
    result = run_history(
        [account], [RecordingSink()], 10, config, clock, scales=HOUR_DAY, retry_delays=(2.0, 8.0)
    )
    assert result.ok and not result.failed
    assert bad is not None, "no window was fetched"
    assert account.fetches.count(bad) == 3
    assert sum(result.requests.values()) == result.jobs + 2
    assert 2.0 in clock.waits and 8.0 in clock.waits


def test_a_window_failing_every_try_is_counted_and_the_rest_imported(tmp_path, caplog):
    config = make_config(tmp_path)

    def fail(key):
        return 99 if key[:3] == (1000, "2", Scale.HOUR) else 0

    account = FakeAccount(channels=3, fail=fail)
    sink = RecordingSink()
    with caplog.at_level("WARNING", logger="vuegraf.history"):
        result = run_history([account], [sink], 30, config, FakeClock(NOW), scales=HOUR_DAY)
    assert result.failed_windows == 2  # the channel's two hour windows
    assert {(j.gid, j.channel_num, j.scale) for j in result.failed} == {(1000, "2", Scale.HOUR)}
    assert result.done == result.jobs == 9
    assert len(sink.batches) == 7
    assert result.requests[Scale.HOUR] == 4 + 2 * 3
    assert not result.ok
    assert "failed 3 times" in caplog.text


def test_stop_ends_the_import_promptly(tmp_path):
    config = make_config(tmp_path, historyConcurrency=2)
    clock = FakeClock(NOW)
    sink = RecordingSink(on_write=lambda n: clock.stop() if n == 5 else None)
    account = FakeAccount(channels=28)
    result = run_history([account], [sink], 365, config, clock)
    assert result.stopped and not result.ok
    # Only what was already in flight (at most 2 × workers) ran after the stop.
    assert len(account.fetches) <= 5 + 2 * 2
    assert result.done < result.jobs


def test_a_sink_that_keeps_failing_stops_the_import(tmp_path, caplog):
    class DownSink(RecordingSink):
        name = "down"

        def write(self, points):
            raise SinkError("InfluxDB unreachable: ConnectionError", retryable=True)

    config = make_config(tmp_path, historyConcurrency=1)
    account = FakeAccount(channels=28)
    with caplog.at_level("ERROR", logger="vuegraf.history"):
        result = run_history([account], [DownSink()], 365, config, FakeClock(NOW))
    assert result.failed_writes >= 1 and not result.ok
    assert len(account.fetches) <= 3  # not 1 000 requests into a sink that cannot store them
    assert "no sink can store points" in caplog.text


def test_an_account_that_cannot_log_in_is_skipped(tmp_path):
    class Broken(FakeAccount):
        def refresh_devices_if_due(self):
            raise EmporiaError("login failed: Emporia did not accept the credentials")

    config = make_config(tmp_path)
    sink = RecordingSink()
    good = FakeAccount(name="Good", channels=1)
    result = run_history(
        [Broken(name="Bad"), good], [sink], 5, config, FakeClock(NOW), scales=HOUR_DAY
    )
    assert result.failed_accounts == ["Bad"]
    assert {p.account for b in sink.batches for p in b} == {"Good"}


# --- progress ----------------------------------------------------------------------------------


class TtyStream(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_draws_one_line_with_percent_and_eta(tmp_path):
    config = make_config(tmp_path)
    clock = FakeClock(NOW)
    stream = TtyStream()
    run_history(
        [FakeAccount(channels=2)],
        [RecordingSink()],
        30,
        config,
        clock,
        progress=make_progress(stream, clock),
    )
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert "100.0%" in text and "ETA" in text
    assert "\r[" in text


def test_progress_elsewhere_logs_at_most_every_ten_seconds_and_at_the_end(tmp_path, caplog):
    config = make_config(tmp_path, historyConcurrency=1, historyRequestsPerSecond=2)
    clock = FakeClock(NOW)
    stream = io.StringIO()
    with caplog.at_level("INFO", logger="vuegraf.history"):
        result = run_history(
            [FakeAccount(channels=2)],
            [RecordingSink()],
            30,
            config,
            clock,
            progress=make_progress(stream, clock),
        )
    assert stream.getvalue() == ""
    lines = [r for r in caplog.records if "windows (" in r.getMessage() and "ETA" in r.getMessage()]
    # 34 windows at 2 a second: about 17 virtual seconds, so a start line, one or two more,
    # and the final one.
    assert 3 <= len(lines) <= 4
    assert f"{result.jobs}/{result.jobs} windows (100%)" in lines[-1].getMessage()
