"""The computed channels' holes (Balance and the like): where a series is followed from when
first seen, which past buckets are asked for (newest first, settled, not older than Emporia's
minute retention, one request for every series at once), and what is counted as lost.

Times are literals or plain arithmetic on them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from vuegraf.backfill import NO_VALUE, RETENTION_LOST, Holes
from vuegraf.computed import RETRY_AFTER, ComputedHoles
from vuegraf.model import Scale

NOW = datetime(2026, 11, 23, 20, 0, 5, tzinfo=UTC)
NEWEST = datetime(2026, 11, 23, 19, 59, tzinfo=UTC)
# 7 days less 10 minutes before NOW, rounded up to a whole minute.
FLOOR = datetime(2026, 11, 16, 20, 11, tzinfo=UTC)
BAL1 = (1001, "Balance")
BAL2 = (1002, "Balance")
TO_GRID = (1002, "MainsToGrid")
M = Scale.MINUTE


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def holes() -> ComputedHoles:
    return ComputedHoles([M, Scale.HOUR], UTC, settle_secs=120)


def test_a_series_with_nothing_stored_begins_where_it_is_first_seen() -> None:
    c = holes()
    c.follow(M, BAL1, NEWEST, NOW)
    c.stored(M, BAL1, NEWEST)
    assert list(c.due(M, NOW, NEWEST)) == []
    assert c.backlog(NOW, {M: NEWEST, Scale.HOUR: NEWEST.replace(minute=0)}) == 0
    assert c.floor(M, NOW) == FLOOR


def test_after_a_restart_the_minutes_since_the_newest_stored_are_asked_newest_first() -> None:
    c = holes()
    # Stored up to 19:49 (a 10-minute restart); the first live minute is 19:59.
    c.follow(M, BAL1, NEWEST, NOW, stored=NEWEST - minutes(10))
    c.follow(M, BAL2, NEWEST, NOW, stored=NEWEST - minutes(4))
    c.stored(M, BAL1, NEWEST)
    c.stored(M, BAL2, NEWEST)
    due = list(c.due(M, NOW, NEWEST))
    # 19:50..19:58 for one or both series: one request per minute, newest first; 19:58
    # is too young (it ends within the 2-minute settle time) and waits.
    assert due == [NEWEST - minutes(n) for n in range(2, 10)]
    assert c.backlog(NOW, {M: NEWEST, Scale.HOUR: NEWEST.replace(minute=0)}) == 8


def test_an_answer_stores_the_series_with_a_value_and_loses_the_null_ones() -> None:
    c = holes()
    for key in (BAL1, BAL2, TO_GRID):
        c.follow(M, key, NEWEST, NOW, stored=NEWEST - minutes(5))
        c.stored(M, key, NEWEST)
    bucket = NEWEST - minutes(3)
    c.answered(M, bucket, {BAL1, BAL2}, NOW)  # MainsToGrid answered null
    lost, span = c.trackers[M].take_lost()
    assert lost == {(TO_GRID, NO_VALUE): 1}
    assert span == (bucket, bucket + minutes(1))
    assert bucket not in list(c.due(M, NOW, NEWEST))
    assert list(c.due(M, NOW, NEWEST)) == [NEWEST - minutes(2), NEWEST - minutes(4)]


def test_a_failed_bucket_waits_and_the_others_go_on() -> None:
    c = holes()
    c.follow(M, BAL1, NEWEST, NOW, stored=NEWEST - minutes(6))
    c.stored(M, BAL1, NEWEST)
    c.failed(M, NEWEST - minutes(2), NOW)
    assert list(c.due(M, NOW, NEWEST)) == [NEWEST - minutes(n) for n in (3, 4, 5)]
    later = NOW + RETRY_AFTER
    assert NEWEST - minutes(2) in list(c.due(M, later, NEWEST))


def test_holes_older_than_the_floor_are_lost_not_asked() -> None:
    c = holes()
    # The store's newest Balance minute is 8 days old.
    stored = NEWEST - timedelta(days=8)
    c.follow(M, BAL1, NEWEST, NOW, stored=stored)
    lost, span = c.trackers[M].take_lost()
    gone = int((FLOOR - (stored + minutes(1))).total_seconds()) // 60
    assert lost == {(BAL1, RETENTION_LOST): gone}
    assert span == (stored + minutes(1), FLOOR)
    c.stored(M, BAL1, NEWEST)
    due = list(c.due(M, NOW, NEWEST))
    assert due[0] == NEWEST - minutes(2) and due[-1] == FLOOR
    assert len(due) == int((NEWEST - minutes(1) - FLOOR).total_seconds()) // 60
    # An hour later the floor has moved an hour: those 60 minutes are lost in turn.
    c.expire(NOW + timedelta(hours=1))
    assert c.trackers[M].take_lost()[0] == {(BAL1, RETENTION_LOST): 60}


def test_saved_holes_are_kept_and_a_store_behind_them_opens_the_end() -> None:
    c = holes()
    saved = Holes(((NEWEST - minutes(30), NEWEST - minutes(25)),), NEWEST - minutes(10))
    c.follow(M, BAL1, NEWEST, NOW, stored=NEWEST - minutes(15), saved=saved)
    c.stored(M, BAL1, NEWEST)
    due = set(c.due(M, NOW, NEWEST))
    want = {NEWEST - minutes(n) for n in range(26, 31)} | {NEWEST - minutes(n) for n in
                                                           range(2, 15)}
    assert due == want


def test_hours_and_days_step_by_their_own_buckets_across_dst() -> None:
    zone = ZoneInfo("America/New_York")
    # DST ends in New York on 2026-11-01: that local day has 25 hours (04:00 to 05:00 UTC).
    now = datetime(2026, 11, 3, 12, 0, 5, tzinfo=UTC)
    c = ComputedHoles([Scale.DAY], zone, settle_secs=120)
    newest = datetime(2026, 11, 2, 5, 0, tzinfo=UTC)  # Nov 2, the newest complete local day
    day_before = datetime(2026, 10, 30, 4, 0, tzinfo=UTC)  # Oct 30's point, stored
    c.follow(Scale.DAY, BAL1, newest, now, stored=day_before)
    c.stored(Scale.DAY, BAL1, newest)
    assert list(c.due(Scale.DAY, now, newest)) == [
        datetime(2026, 11, 1, 4, 0, tzinfo=UTC),
        datetime(2026, 10, 31, 4, 0, tzinfo=UTC),
    ]


def test_a_device_gone_is_no_longer_asked_for() -> None:
    c = holes()
    c.follow(M, BAL1, NEWEST, NOW, stored=NEWEST - minutes(6))
    c.follow(M, BAL2, NEWEST, NOW, stored=NEWEST - minutes(6))
    c.retire({1002})
    assert set(c.trackers[M].series) == {BAL1}
    assert c.holes()[M].keys() == {BAL1}


def test_a_store_answering_late_asks_only_for_what_this_run_did_not_write() -> None:
    """The store could not be read at the start: Balance was followed from this run's first
    live minute. When the store answers, the minutes between its newest point and that first
    minute become a hole; the ones this run wrote do not."""
    c = holes()
    first = NEWEST - minutes(5)
    c.follow(M, BAL1, first, NOW)
    for n in range(6):
        c.stored(M, BAL1, first + minutes(n))
    assert list(c.due(M, NOW, NEWEST)) == []
    assert c.lower_to_stored(M, {BAL1: first - minutes(20)}, NOW) == 1
    assert list(c.due(M, NOW, NEWEST)) == [first - minutes(n) for n in range(1, 20)]


def test_a_bucket_that_keeps_failing_waits_twice_as_long_each_time() -> None:
    c = holes()
    c.follow(M, BAL1, NEWEST, NOW, stored=NEWEST - minutes(4))
    c.stored(M, BAL1, NEWEST)
    bucket = NEWEST - minutes(3)
    at = NOW
    for wait in (RETRY_AFTER, 2 * RETRY_AFTER, 4 * RETRY_AFTER):
        c.failed(M, bucket, at)
        assert bucket not in list(c.due(M, at + wait - timedelta(seconds=1), NEWEST))
        assert bucket in list(c.due(M, at + wait, NEWEST))
        at += wait
