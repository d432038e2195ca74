"""Trackers with several holes per series, in virtual time, without a database: which hole is
asked for first (the retention edge, then what was just lost, then the rest oldest first),
what a request covers, and what is kept for the next start.

Times are literals or plain arithmetic on them; Emporia's answers are made up here (a value
for every bucket asked for, or none where a device did not exist yet).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from vuegraf.backfill import MAX_HOLES, FillRequest, Holes, Tracker
from vuegraf.model import Scale

NOW = datetime(2026, 11, 23, 20, 0, 5, tzinfo=UTC)
NEWEST = datetime(2026, 11, 23, 19, 59, tzinfo=UTC)  # the newest complete minute at NOW
# Emporia's 7 days of minutes, less the 10 kept clear of its edge (20:10:05): the oldest whole
# minute asked for.
EDGE = datetime(2026, 11, 16, 20, 11, tzinfo=UTC)
A = (1001, "1")
B = (1001, "2")


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def every_minute(
    request: FillRequest, value: float | None = 1.0
) -> list[tuple[datetime, float | None]]:
    """Emporia's answer to a minute chart request: `value` for every minute asked for."""
    count = int((request.last - request.first).total_seconds()) // 60 + 1
    return [(request.first + minutes(i), value) for i in range(count)]


def test_the_retention_edge_is_where_this_file_says() -> None:
    assert Tracker(Scale.MINUTE, UTC).earliest(NOW) == EDGE


def restarted(tracker: Tracker, keys: list[tuple[int, str]], fill_reached: datetime,
              first_live: datetime, stopped: datetime, now: datetime) -> None:
    """A second start in the middle of the first start's 7-day fill: the first run had filled
    up to `fill_reached` and written live minutes from `first_live` until `stopped`; the
    store's newest minute is the one before `stopped`. This run's first live minute is `now`'s
    newest."""
    saved = Holes(((fill_reached, first_live),), stopped)
    tracker.seed(keys, dict.fromkeys(keys, stopped - minutes(1)), now,
                 saved_marks=dict.fromkeys(keys, saved))


def test_the_minutes_lost_to_a_restart_come_before_the_week_still_being_filled() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    keys = [(1001, str(n)) for n in range(1, 29)]
    stopped = NEWEST - minutes(10)  # down for ten minutes
    restarted(t, keys, NEWEST - timedelta(days=4), NEWEST - minutes(200), stopped, NOW)
    for key in keys:
        t.stored(key, NEWEST)  # this run's first live minute
        assert t.holes()[key] == Holes(
            ((NEWEST - timedelta(days=4), NEWEST - minutes(200)), (stopped, NEWEST)),
            NEWEST + minutes(1),
        )
    # One request per series, each for the minutes just lost (up to the newest), none for
    # the week: 28 requests, well inside one cycle's 60.
    due = t.due(NOW, NEWEST)
    assert [(r.series, r.first, r.last) for r in due] == [(k, stopped, NEWEST) for k in keys]
    for request in due:
        assert t.answered(request, every_minute(request), NOW)
    # Then the week goes on where it was, oldest first.
    due = t.due(NOW, NEWEST)
    assert [(r.first, r.last) for r in due] == [
        (NEWEST - timedelta(days=4), NEWEST - timedelta(days=4) + minutes(719))
    ] * len(keys)


def test_a_recent_hole_of_one_series_comes_before_old_windows_of_others() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    old = NEWEST - timedelta(days=3)
    t.seed([A, B], {A: old - minutes(1), B: NEWEST - minutes(6)}, NOW)
    t.stored(A, NEWEST)
    t.stored(B, NEWEST)
    due = t.due(NOW, NEWEST)
    assert [(r.series, r.first, r.last) for r in due] == [
        (B, NEWEST - minutes(5), NEWEST),  # one request fills it up to now: first
        (A, old, old + minutes(719)),  # a 3-day hole: after it
    ]


def test_at_the_retention_edge_a_long_hole_comes_before_any_recent_one() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    keys = [(2000 + n, "1") for n in range(100)]
    # A: nothing stored; the others: a 5-minute hole just now.
    t.seed([A], {}, NOW)
    t.seed(keys, dict.fromkeys(keys, NEWEST - minutes(6)), NOW)
    due = t.due(NOW, NEWEST)
    assert (due[0].series, due[0].first, due[0].last) == (A, EDGE, EDGE + minutes(719))
    assert {r.first for r in due[1:]} == {NEWEST - minutes(5)}


def test_old_holes_are_fetched_before_they_leave_retention_while_recent_ones_take_the_budget():
    """100 series whose live minutes all go missing (with no settle time, every series wants a
    request every cycle for what was just lost: 100, more than the 60 allowed), each with a
    day-long hole that starts 2 h 10 min inside Emporia's retention. Recent holes alone would
    take every request for ever; the edge rule asks for each old hole before its first minute
    is gone, and only then."""
    t = Tracker(Scale.MINUTE, UTC, settle_secs=0)
    keys = [(2000 + n, "1") for n in range(100)]
    old = EDGE + minutes(130)
    saved = Holes(((old, old + timedelta(days=1)),), NEWEST - minutes(1))
    t.seed(keys, dict.fromkeys(keys, NEWEST - minutes(2)), NOW,
           saved_marks=dict.fromkeys(keys, saved))
    asked: dict[tuple[int, str], datetime] = {}  # when each old hole's first minute was asked
    recent_asked = 0
    cycles = 40
    for cycle in range(cycles):
        now = NOW + minutes(cycle)
        newest = NEWEST + minutes(cycle)
        due = t.due(now, newest)[:60]
        for request in due:
            if request.first == old:
                asked[request.series] = now
            else:
                assert request.last == newest
                recent_asked += 1
            t.answered(request, every_minute(request), now)
    assert set(asked) == set(keys)
    # Each was asked while its first minute was still inside retention (the edge moves a
    # minute a cycle) ...
    assert all(t.earliest(when) <= old for when in asked.values())
    assert all(when >= NOW + minutes(10) for when in asked.values())  # ... not before needed
    assert recent_asked == cycles * 60 - len(keys)  # every other request: what was just lost


def test_windows_before_a_device_existed_are_given_up_without_backing_off() -> None:
    """A device installed 2 days ago: a 7-day fill finds nothing in its first windows. With a
    live minute after them, those empty answers are history, not an offline plug: the next
    window is asked at once, and the whole week is done within one cycle's requests."""
    t = Tracker(Scale.MINUTE, UTC)
    installed = NEWEST - timedelta(days=2)
    t.seed([A], {}, NOW)
    t.stored(A, NEWEST)
    requests = 0
    while due := t.due(NOW, NEWEST):
        request = due[0]
        answer = [(start, value if start >= installed else None)
                  for start, value in every_minute(request)]
        t.answered(request, answer, NOW)
        assert t.series[A].retry_at is None
        requests += 1
    assert requests == 14
    assert t.holes()[A] == Holes((), NEWEST + minutes(1))


def test_an_empty_answer_up_to_the_newest_minute_still_backs_off() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    t.seed([A], {A: NEWEST - minutes(30)}, NOW)  # an offline plug: no live minute since
    request = t.due(NOW, NEWEST)[0]
    t.answered(request, every_minute(request, None), NOW)
    assert t.series[A].retry_at == NOW + minutes(5)
    assert t.due(NOW + minutes(1), NEWEST + minutes(1)) == []


def test_hours_missing_longer_than_the_lookback_are_asked_for_from_the_last_stored_one() -> None:
    t = Tracker(Scale.HOUR, UTC)
    last = datetime(2026, 11, 13, 7, 0, tzinfo=UTC)  # ten days before NOW
    t.seed([A], {A: last}, NOW, lookback=timedelta(days=7), stored_lookback=timedelta(days=720))
    newest = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
    request = t.due(NOW, newest)[0]
    assert (request.first, request.last) == (last + timedelta(hours=1), newest)
    assert t.backlog(NOW, newest) == 1


def test_one_request_covers_several_holes_within_its_window() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    t.seed([A], {A: NEWEST - minutes(101)}, NOW)  # the open end: NEWEST - 100
    for n in (*range(95, 85, -1), *range(80, 0, -1)):  # missed: NEWEST - 100..96, 85..81, 0
        t.stored(A, NEWEST - minutes(n))
    assert t.holes()[A] == Holes(
        ((NEWEST - minutes(100), NEWEST - minutes(95)),
         (NEWEST - minutes(85), NEWEST - minutes(80))),
        NEWEST,
    )
    assert t.backlog(NOW + minutes(3), NEWEST) == 1
    request = t.due(NOW + minutes(3), NEWEST)[0]
    assert (request.first, request.last) == (NEWEST - minutes(100), NEWEST)
    t.answered(request, every_minute(request), NOW + minutes(3))
    assert t.holes()[A] == Holes((), NEWEST + minutes(1))
    assert t.backlog(NOW + minutes(3), NEWEST) == 0


def test_holes_further_apart_than_a_window_need_a_request_each() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    far = NEWEST - timedelta(days=2)
    t.seed([A], {A: NEWEST - minutes(1)}, NOW,
           saved_marks={A: Holes(((far, far + minutes(10)),), NEWEST - minutes(20))})
    t.stored(A, NEWEST)
    assert t.holes()[A] == Holes(((far, far + minutes(10)), (NEWEST - minutes(20), NEWEST)),
                                 NEWEST + minutes(1))
    assert t.backlog(NOW, NEWEST) == 2
    assert [(r.first, r.last) for r in t.due(NOW, NEWEST)] == [(NEWEST - minutes(20), NEWEST)]


def test_many_holes_are_joined_never_forgotten() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    span = 2 * (MAX_HOLES + 50)  # more one-minute holes than are kept apart
    start = NEWEST - minutes(span)
    t.seed([A], {A: start - minutes(1)}, NOW)
    for n in range(1, span, 2):  # every other minute written live: one-minute holes
        t.stored(A, start + minutes(n))
    holes = t.holes()[A]
    assert len(holes.closed) == MAX_HOLES
    missing = {start + minutes(n) for n in range(0, span, 2)}
    assert all(any(s <= m < e for s, e in holes.closed) for m in missing)
    assert holes.open_from == NEWEST  # NEWEST - span + span - 1 was the last written


def test_the_store_says_where_the_open_end_is_when_it_holds_less_than_the_run_saved() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    hole = (NEWEST - minutes(300), NEWEST - minutes(200))
    saved = Holes((hole,), NEWEST - minutes(10))
    t.seed([A, B], {A: NEWEST - minutes(50), B: NEWEST - minutes(5)}, NOW,
           saved_marks={A: saved, B: saved})
    # A: the store ends 40 minutes before the saved open end (points that never arrived).
    assert t.holes()[A] == Holes((hole,), NEWEST - minutes(49))
    # B: the store holds more than was saved: the saved open end stands (a hole it cannot see).
    assert t.holes()[B] == Holes((hole,), NEWEST - minutes(10))
    # The store ends inside the saved hole: everything from the hole's start is missing.
    t.seed([A], {A: NEWEST - minutes(250)}, NOW, saved_marks={A: saved})
    assert t.holes()[A] == Holes((), NEWEST - minutes(300))


def test_saved_holes_that_left_retention_are_not_asked_for() -> None:
    t = Tracker(Scale.MINUTE, UTC)
    gone = (EDGE - timedelta(days=1), EDGE - minutes(1))
    partly = (EDGE - minutes(30), EDGE + minutes(30))
    t.seed_from_marks([A], {A: Holes((gone, partly), NEWEST - minutes(5))}, NOW)
    assert t.holes()[A] == Holes(((EDGE, EDGE + minutes(30)),), NEWEST - minutes(5))
    assert t.series[A].filled == EDGE
    request = t.due(NOW, NEWEST)[0]
    assert (request.first, request.last) == (EDGE, EDGE + minutes(719))


def test_marks_move_back_to_the_store_as_a_hole_of_their_own() -> None:
    """The store answers late (it refused the read at start-up): the buckets it lacks before
    the run's oldest hole are joined to it; the live minutes written since stay stored."""
    t = Tracker(Scale.MINUTE, UTC)
    first_live = NEWEST - minutes(10)
    hole = (NEWEST - minutes(40), NEWEST - minutes(30))
    t.seed_from_marks([A], {A: Holes((hole,), first_live)}, NOW)
    t.stored(A, first_live)
    t.stored(A, first_live + minutes(1))
    assert t.lower_to_stored([A], {A: NEWEST - minutes(60)}, NOW) == 1
    assert t.holes()[A] == Holes(((NEWEST - minutes(59), NEWEST - minutes(30)),),
                                 first_live + minutes(2))
