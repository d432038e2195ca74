"""What a tracker gives up for good is counted, by series and reason, exactly once: holes
that fall out of Emporia's retention, buckets Emporia answers without a value once they have
settled, and windows the budget sheds. Nothing else is.

Times are literals or plain arithmetic on them; Emporia's answers are made up here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vuegraf.backfill import NO_VALUE, RETENTION_LOST, SHED, FillRequest, Holes, Tracker
from vuegraf.model import Scale

NOW = datetime(2026, 11, 23, 20, 0, 5, tzinfo=UTC)
NEWEST = datetime(2026, 11, 23, 19, 59, tzinfo=UTC)  # the newest complete minute at NOW
# The oldest minute asked for at NOW: 7 days less 10 minutes, rounded up to a whole minute.
EDGE = datetime(2026, 11, 16, 20, 11, tzinfo=UTC)
A = (1001, "1")
B = (1001, "2")


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def test_nothing_is_lost_when_every_value_comes() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    t.seed([A], {A: NEWEST - minutes(30)}, NOW)
    request = t.due(NOW, NEWEST)[0]
    values = [(request.first + minutes(i), 5.0) for i in range(30)]
    t.answered(request, values, NOW)
    assert t.take_lost() == ({}, None)
    assert t.marks()[A] == NEWEST + minutes(1)


def test_settled_nulls_are_lost_once_and_young_ones_wait() -> None:
    t = Tracker(Scale.MINUTE, UTC, settle_secs=120)
    t.seed([A], {A: NEWEST - minutes(10)}, NOW)  # 19:50..19:59 missing
    request = t.due(NOW, NEWEST)[0]
    assert (request.first, request.last) == (NEWEST - minutes(9), NEWEST)
    # 19:52 and 19:53 null (settled), 19:58 and 19:59 null (too young: ends within 2 min).
    nulls = {NEWEST - minutes(7), NEWEST - minutes(6), NEWEST - minutes(1), NEWEST}
    values = [(request.first + minutes(i), None if request.first + minutes(i) in nulls else 1.0)
              for i in range(10)]
    t.answered(request, values, NOW)
    lost, span = t.take_lost()
    assert lost == {(A, NO_VALUE): 2}
    assert span == (NEWEST - minutes(7), NEWEST - minutes(5))
    # The young ones are still missing and asked again; nothing is counted twice.
    assert t.marks()[A] == NEWEST - minutes(1)
    assert t.take_lost() == ({}, None)


def test_a_bucket_absent_from_the_answer_counts_like_a_null_but_a_stored_one_does_not() -> None:
    t = Tracker(Scale.MINUTE, UTC, settle_secs=0)
    first = NEWEST - minutes(20)
    # Stored up to `first`, a closed hole 19:45..19:49 (19:50 stored), then missing from 19:51.
    t.seed([A], {A: NEWEST - minutes(9)}, NOW,
           saved_marks={A: Holes(((NEWEST - minutes(14), NEWEST - minutes(9)),),
                                 NEWEST - minutes(8))})
    request = FillRequest(A, Scale.MINUTE, first, NEWEST)
    # Emporia answers only the buckets from 19:47 on (a shorter list), with values.
    values = [(NEWEST - minutes(12) + minutes(i), 2.0) for i in range(13)]
    t.answered(request, values, NOW)
    lost, _span = t.take_lost()
    # 19:45 and 19:46 were missing and got nothing; 19:39..19:44 were stored: not lost.
    assert lost == {(A, NO_VALUE): 2}


def test_holes_older_than_retention_are_lost_when_the_edge_passes_them() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    # A closed hole of 30 minutes starting 5 minutes after the edge, and B caught up.
    start = EDGE + minutes(5)
    t.seed([A, B], {A: NEWEST, B: NEWEST}, NOW,
           saved_marks={A: Holes(((start, start + minutes(30)),), NEWEST + minutes(1))})
    t.expire(NOW)
    assert t.take_lost() == ({}, None)
    # 20 minutes later the edge has moved 20 minutes: 15 of the hole's minutes are gone.
    t.expire(NOW + minutes(20))
    lost, span = t.take_lost()
    assert lost == {(A, RETENTION_LOST): 15}
    assert span == (start, start + minutes(15))
    # Later still: the rest, once; the series' holes no longer hold it.
    t.expire(NOW + timedelta(hours=2))
    assert t.take_lost()[0] == {(A, RETENTION_LOST): 15}
    assert t.holes()[A] == Holes((), NEWEST + minutes(1))
    t.expire(NOW + timedelta(hours=3))
    assert t.take_lost() == ({}, None)


def test_a_store_older_than_retention_loses_the_minutes_in_between() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    newest_stored = EDGE - minutes(61)  # the bucket after it is EDGE - 60 min
    t.seed([A], {A: newest_stored}, NOW)
    lost, span = t.take_lost()
    assert lost == {(A, RETENTION_LOST): 60}
    assert span == (EDGE - minutes(60), EDGE)
    assert t.marks()[A] == EDGE


def test_a_series_never_stored_loses_nothing() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    t.seed([A], {}, NOW)
    assert t.take_lost() == ({}, None)


def test_shed_windows_are_counted_with_their_reason() -> None:
    t = Tracker(Scale.SECOND, UTC, settle_secs=0)
    t.seed([A], {A: NOW - timedelta(seconds=61)}, NOW)
    request = t.due(NOW, NOW - timedelta(seconds=2))[0]
    t.give_up(request, SHED)
    lost, _span = t.take_lost()
    seconds = int((request.last - request.first).total_seconds()) + 1
    assert lost == {(A, SHED): seconds}
    # An import's give-up without a reason counts nothing.
    t2 = Tracker(Scale.SECOND, UTC, settle_secs=0)
    t2.seed([A], {A: NOW - timedelta(seconds=61)}, NOW)
    t2.give_up(t2.due(NOW, NOW - timedelta(seconds=2))[0])
    assert t2.take_lost() == ({}, None)


def test_hours_are_kept_for_years_so_never_expire() -> None:
    t = Tracker(Scale.HOUR, UTC)
    old = datetime(2026, 1, 1, tzinfo=UTC)
    t.seed([A], {A: old}, NOW, stored_lookback=timedelta(days=400))
    t.expire(NOW + timedelta(days=30))
    assert t.take_lost() == ({}, None)
    assert t.marks()[A] == old + timedelta(hours=1)


def test_nulls_before_a_first_value_and_windows_without_any_are_not_lost() -> None:
    """A device newer than the lookback answers nulls before its first value (it did not
    exist), an unplugged one a window of nulls only: neither is lost. A null between values
    is."""
    t = Tracker(Scale.MINUTE, UTC, settle_secs=0)
    t.seed([A], {}, NOW)  # nothing stored: filled from the lookback
    first = t.due(NOW, NEWEST)[0]
    born = first.first + minutes(100)
    values = [(first.first + minutes(i), None if first.first + minutes(i) < born else 1.0)
              for i in range(720)]
    t.answered(first, values, NOW)
    assert t.take_lost() == ({}, None)
    unplugged = t.due(NOW, NEWEST)[0]
    t.answered(unplugged, [(unplugged.first + minutes(i), None) for i in range(720)], NOW)
    assert t.take_lost() == ({}, None)
    third = t.due(NOW, NEWEST)[0]
    gap = third.first + minutes(7)
    t.answered(third, [(third.first + minutes(i), None if third.first + minutes(i) == gap
                        else 2.0) for i in range(720)], NOW)
    assert t.take_lost()[0] == {(A, NO_VALUE): 1}


def test_a_stop_longer_than_the_lookback_loses_the_holes_saved_before_the_floor() -> None:
    """The store holds nothing of the series in the last 7 days, the last run's marks say it
    lacked everything from an hour before the edge on: that hour is lost (and counted)."""
    t = Tracker(Scale.MINUTE, UTC)
    t.seed([A], {}, NOW, saved_marks={A: Holes((), EDGE - minutes(60))})
    assert t.take_lost()[0] == {(A, RETENTION_LOST): 60}
    assert t.marks()[A] == EDGE


def test_a_late_store_answer_does_not_count_a_lost_hole_twice() -> None:
    """Started while the store could not be read: the saved hole older than the edge was
    counted when the series was clipped. When the store answers, with a newest point older
    still, only the buckets between that point and the saved hole are counted in addition."""
    t = Tracker(Scale.MINUTE, UTC)
    saved = Holes(((EDGE - minutes(30), EDGE + minutes(30)),), NEWEST + minutes(1))
    t.seed_from_marks([A], {A: saved}, NOW)
    assert t.take_lost()[0] == {(A, RETENTION_LOST): 30}
    t.lower_to_stored([A], {A: EDGE - minutes(41)}, NOW)
    assert t.take_lost()[0] == {(A, RETENTION_LOST): 10}  # EDGE - 40 .. EDGE - 31
