"""Trackers: where each series' holes are, in virtual time, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from vuegraf.backfill import BACKOFF_START, Tracker
from vuegraf.model import Scale

NOW = datetime(2026, 11, 23, 20, 0, 5, tzinfo=UTC)
NEWEST = datetime(2026, 11, 23, 19, 59, tzinfo=UTC)
ZONE = ZoneInfo("America/New_York")
A = (1001, "1")
B = (1001, "2")


def minutes(n):
    return timedelta(minutes=n)


def test_empty_store_counts_as_seven_days_missing_clipped_to_retention():
    t = Tracker(Scale.MINUTE, ZONE)
    t.seed([A], {}, NOW)
    first = t.series[A].filled
    assert NOW - first <= timedelta(days=7)
    assert NOW - first >= timedelta(days=7) - minutes(11)
    assert first.second == 0
    reqs = t.due(NOW, NEWEST)
    assert len(reqs) == 1 and reqs[0].first == first
    assert reqs[0].last == first + minutes(719)  # 12 h window


def test_seeded_after_last_stored_and_caught_up_series_not_due():
    t = Tracker(Scale.MINUTE, ZONE)
    t.seed([A, B], {A: NEWEST - minutes(1), B: NEWEST - minutes(30)}, NOW)
    assert t.series[A].filled == NEWEST
    t.stored(A, NEWEST)  # the live value for the newest minute
    assert t.series[A].filled == NEWEST + minutes(1)
    reqs = t.due(NOW, NEWEST)
    assert [(r.series, r.first, r.last) for r in reqs] == [(B, NEWEST - minutes(29), NEWEST)]


def test_single_missed_minute_is_filled_after_it_settles():
    t = Tracker(Scale.MINUTE, ZONE, settle_secs=120)
    t.seed([A], {A: NEWEST - minutes(1)}, NOW)
    # The live value for NEWEST was null: no write, the mark stays.
    assert t.due(NOW, NEWEST) == []  # may still arrive: too young to ask
    later = NOW + minutes(2)
    t.stored(A, NEWEST + minutes(2))  # later live values do not move the mark past the hole
    reqs = t.due(later, NEWEST + minutes(2))
    assert [(r.first, r.last) for r in reqs] == [(NEWEST, NEWEST + minutes(2))]
    values = [(NEWEST, 0.01), (NEWEST + minutes(1), 0.02), (NEWEST + minutes(2), 0.03)]
    t.answered(reqs[0], values, later)
    assert t.series[A].filled == NEWEST + minutes(3)
    assert t.due(later, NEWEST + minutes(2)) == []


def test_empty_answers_back_off_instead_of_asking_every_cycle():
    t = Tracker(Scale.MINUTE, ZONE)
    t.seed([A], {A: NEWEST - minutes(10)}, NOW)
    req = t.due(NOW, NEWEST)[0]
    t.answered(req, [(req.first + minutes(i), None) for i in range(10)], NOW)
    # Old nulls are given up (the mark passes them) ...
    assert t.series[A].filled > NEWEST - minutes(3)
    # ... and a series that answered nothing waits before it is asked again.
    now = NOW + minutes(3)
    assert t.due(now, NEWEST + minutes(3)) == []
    assert t.due(NOW + BACKOFF_START, NEWEST + minutes(5)) != []


def test_young_nulls_stay_pending():
    t = Tracker(Scale.SECOND, ZONE, settle_secs=120)
    start = NOW - timedelta(hours=1)
    t.seed([A], {A: start}, NOW)
    req = t.due(NOW, NOW - timedelta(seconds=6))[0]
    n = int((req.last - req.first).total_seconds()) + 1
    values: list[tuple[datetime, float | None]] = [
        (req.first + timedelta(seconds=i), 0.001) for i in range(n - 60)
    ]
    values += [(req.first + timedelta(seconds=i), None) for i in range(n - 60, n)]
    t.answered(req, values, NOW)
    assert t.series[A].filled == req.first + timedelta(seconds=n - 60)


def test_day_marks_follow_local_days_across_dst():
    t = Tracker(Scale.DAY, ZONE)
    now = datetime(2026, 11, 3, 12, tzinfo=UTC)
    # Stored day point for Nov 1 (the 25-hour day) at 23:59:59 EST = 04:59:59 UTC Nov 2.
    t.seed([A], {A: datetime(2026, 11, 2, 4, 59, 59, tzinfo=UTC)}, now)
    assert t.series[A].filled == datetime(2026, 11, 2, 5, tzinfo=UTC)  # local midnight Nov 2
    req = t.due(now, datetime(2026, 11, 2, 5, tzinfo=UTC))[0]
    assert (req.first, req.last) == (
        datetime(2026, 11, 2, 5, tzinfo=UTC),
        datetime(2026, 11, 2, 5, tzinfo=UTC),
    )


def test_saved_marks_keep_a_hole_the_store_cannot_show():
    t = Tracker(Scale.MINUTE, ZONE)
    hole = NEWEST - minutes(20)
    # The store's newest point is recent, but the previous run still had a hole at `hole`.
    t.seed([A, B], {A: NEWEST - minutes(1), B: NEWEST - minutes(1)}, NOW,
           saved_marks={A: hole, B: NEWEST + minutes(5)})
    assert t.series[A].filled == hole
    assert t.series[B].filled == NEWEST  # a saved mark never skips what the store lacks


def test_backlog_counts_the_requests_a_fill_still_needs():
    minute = Tracker(Scale.MINUTE, ZONE)
    # A: 7 days behind, clipped to 10 070 minutes: 14 windows of 720. B: a 30-minute hole.
    minute.seed([A, B], {B: NEWEST - minutes(31)}, NOW)
    assert minute.backlog(NOW, NEWEST) == 14 + 1
    # Asked once: one window of A done, 13 left.
    first = minute.due(NOW, NEWEST)[0]
    minute.answered(first, [(first.first, 1.0)], NOW)
    assert minute.backlog(NOW, NEWEST) == 13 + 1
    # A series backing off after an empty answer (an offline plug) is not being worked through.
    hole_b = next(r for r in minute.due(NOW, NEWEST) if r.series == B)
    minute.answered(hole_b, [(hole_b.first, None)], NOW)
    assert minute.series[B].retry_at is not None
    assert minute.backlog(NOW, NEWEST) == 13


def test_backlog_of_days_counts_local_days_across_dst():
    day = Tracker(Scale.DAY, ZONE)
    # New York's days from 2026-11-01 (the 25-hour day) to 2026-11-23: 23 days, one request.
    start = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # local midnight, EDT
    day.seed([A], {A: start - timedelta(hours=1)}, NOW, stored_lookback=timedelta(days=800))
    assert day.series[A].filled == start
    newest = datetime(2026, 11, 23, 5, 0, tzinfo=UTC)  # local midnight, EST
    assert day._buckets(start, newest) == 23
    assert day.backlog(NOW, newest) == 1


def test_backlog_still_counts_a_series_backing_off_after_a_failed_request():
    minute = Tracker(Scale.MINUTE, ZONE)
    minute.seed([A], {A: NEWEST - minutes(31)}, NOW)
    request = minute.due(NOW, NEWEST)[0]
    minute.failed(request, NOW)  # Emporia answered 5xx: the hole is still there
    assert minute.series[A].retry_at is not None
    assert minute.backlog(NOW, NEWEST) == 1
