"""The energy ledger: each minute counted once, never a fall, kept across restarts."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vuegraf.clock import FakeClock
from vuegraf.energy import ChannelId, EnergyLedger, EnergySink, MinuteSet, Totals, ledger_path
from vuegraf.model import Point, Scale
from vuegraf.sinks.base import SinkError

T0 = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)  # a minute start
GID, NUM = 1001, "1,2,3"
KEY = ChannelId(GID, NUM)


def minute(offset: int, watts: float, *, name: str = "Main Panel", num: str = NUM) -> Point:
    return Point(
        "Home", "Main Panel", name, Scale.MINUTE, T0 + timedelta(minutes=offset), watts, GID, num
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 + timedelta(seconds=65))  # the live minute is T0


def counted(ledger: EnergyLedger, key: ChannelId = KEY) -> Totals:
    totals = ledger.totals(key)
    assert totals is not None
    return totals


def joules(*watts: float) -> float:
    return sum(watts) * 60


def test_each_minute_counts_once_in_any_order_and_splits_drawn_from_fed_back(clock):
    ledger = EnergyLedger(None, clock)
    ledger.add([minute(0, 500.0), minute(3, -200.0)])
    ledger.add([minute(1, 100.0), minute(2, -50.0), minute(1, 100.0)])  # a fill, once again
    totals = ledger.totals(KEY)
    assert totals is not None
    assert (totals.imported, totals.exported) == (joules(500.0, 100.0), joules(200.0, 50.0))
    assert totals.imported_kwh == pytest.approx(joules(500.0, 100.0) / 3.6e6)


def test_minutes_before_the_counter_existed_are_history_not_energy(clock):
    ledger = EnergyLedger(None, clock)
    # First cycle: the live minute, then the first start's backfill of the day before.
    ledger.add([minute(0, 1000.0)])
    ledger.add([minute(-m, 1000.0) for m in range(1, 1440)])
    # The live minute and the one before it (two minutes of slack behind the clock, at
    # T0 + 65 s) count; the other 1438 minutes of the day before do not.
    assert counted(ledger, KEY).imported == joules(1000.0, 1000.0)
    assert ledger.origin(KEY) == int(T0.timestamp()) // 60 - 1


def test_minutes_older_than_the_window_behind_the_newest_do_not_count(clock):
    ledger = EnergyLedger(None, clock, window=timedelta(hours=1))
    ledger.add([minute(0, 10.0), minute(120, 20.0)])
    ledger.add([minute(60, 40.0)])  # exactly the window back: counted
    ledger.add([minute(59, 80.0)])  # older: nobody can know whether it was counted
    assert counted(ledger, KEY).imported == joules(10.0, 20.0, 40.0)


def test_a_revision_moves_the_counter_by_the_difference_and_a_fall_is_owed(clock):
    ledger = EnergyLedger(None, clock)
    seen = []
    for batch in (
        [minute(0, 600.0)],
        [minute(0, 660.0)],  # up: +60 W x 60 s at once
        [minute(0, 500.0)],  # down by 160: owed, the counter stays
        [minute(1, 100.0)],  # pays 100 of the 160 owed
        [minute(2, 100.0)],  # pays the last 60, 40 is new
        [minute(3, -30.0)],  # fed back: the other counter, which owes nothing
    ):
        ledger.add(batch)
        totals = counted(ledger)
        seen.append((totals.imported, totals.exported))
    assert seen == [
        (joules(600.0), 0.0),
        (joules(660.0), 0.0),
        (joules(660.0), 0.0),
        (joules(660.0), 0.0),
        (joules(700.0), 0.0),
        (joules(700.0), joules(30.0)),
    ]
    # Once the debt is paid the counter is the sum of the minutes' last values.
    assert seen[-2][0] == joules(500.0, 100.0, 100.0)
    # A minute that changes sign moves both counters.
    ledger.add([minute(3, 30.0)])
    assert (counted(ledger, KEY).imported, counted(ledger, KEY).exported) == (
        joules(700.0, 30.0),
        joules(30.0),
    )


def test_counters_and_what_was_counted_survive_a_restart(tmp_path, clock):
    path = ledger_path(tmp_path, "-shard-0-of-2")
    assert path == tmp_path / "energy-shard-0-of-2.sqlite"
    first = EnergyLedger(path, clock)
    first.open()
    first.add([minute(0, 100.0), minute(1, 200.0), minute(5, 300.0)])
    first.add([minute(5, 250.0)])  # owes 50
    first.close()  # or a kill -9: every batch was committed

    clock.advance(7200)  # the origin of a new counter would be much later
    second = EnergyLedger(path, clock)
    second.open()
    assert counted(second, KEY).imported == joules(100.0, 200.0, 300.0)
    second.add([minute(1, 200.0), minute(2, 400.0)])  # minute 1 again: counted before
    assert counted(second, KEY).imported == joules(100.0, 200.0, 300.0, 400.0 - 50.0)
    assert second.origin(KEY) == int(T0.timestamp()) // 60 - 1
    second.close()


def test_names_follow_a_rename_but_the_counter_stays_the_channels(clock):
    ledger = EnergyLedger(None, clock)
    ledger.add([minute(0, 100.0, name="Main Panel")])
    ledger.add([minute(1, 100.0, name="House")])
    assert list(ledger.channels()) == [KEY]
    assert counted(ledger, KEY).imported == joules(100.0, 100.0)


def test_points_without_ids_are_counted_by_their_names(clock):
    ledger = EnergyLedger(None, clock)
    plain = Point("Home", "Plug", "Plug", Scale.MINUTE, T0, 50.0)
    ledger.add([plain, plain])
    [key] = ledger.channels()
    assert key.device_gid is None and ChannelId.parse(key.text) == key
    assert counted(ledger, key).imported == joules(50.0)


def test_other_scales_never_count(clock):
    ledger = EnergyLedger(None, clock)
    hour = Point("Home", "Main Panel", "Main Panel", Scale.HOUR, T0, 5000.0, GID, NUM)
    assert ledger.add([hour]) == set()
    assert ledger.channels() == {}


def test_an_unreadable_file_is_set_aside_and_counting_starts_again(tmp_path, clock, caplog):
    path = tmp_path / "energy.sqlite"
    path.write_bytes(b"this is no database" * 100)
    ledger = EnergyLedger(path, clock)
    ledger.open()
    [aside] = tmp_path.glob("energy.sqlite.unreadable-*")
    assert aside.read_bytes().startswith(b"this is no")
    assert "cannot be read" in caplog.text
    ledger.add([minute(0, 10.0)])
    assert counted(ledger, KEY).imported == joules(10.0)
    ledger.close()


def test_readers_see_only_what_was_committed(tmp_path, clock):
    path = tmp_path / "energy.sqlite"
    sink = EnergySink(EnergyLedger(path, clock))
    sink.open()
    sink.write([minute(0, 100.0)])
    # Another connection holds the write lock: the next commit fails, as on a full disk.
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    sink.ledger._db.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
    with pytest.raises(SinkError) as failed:
        sink.write([minute(1, 100.0)])
    assert failed.value.retryable
    assert counted(sink.ledger, KEY).imported == joules(100.0)  # not the uncommitted minute
    blocker.rollback()
    blocker.close()
    sink.write([minute(2, 100.0)])  # the next batch commits both
    assert counted(sink.ledger, KEY).imported == joules(100.0, 100.0, 100.0)
    sink.close()
    reopened = EnergyLedger(path, clock)
    reopened.open()
    assert counted(reopened, KEY).imported == joules(100.0, 100.0, 100.0)
    reopened.close()


def test_the_set_of_counted_minutes_stays_small_for_contiguous_data():
    counted = MinuteSet()
    for m in range(0, 3 * 1440, 2):  # every other minute of three days ...
        assert counted.add(m)
    for m in range(1, 3 * 1440, 2):  # ... then the gaps are filled
        assert counted.add(m)
    assert len(counted) == 1
    assert not counted.add(1000)
    counted.forget_before(3 * 1440)
    assert len(counted) == 0
    assert counted.add(5) and counted.add(7) and counted.add(6) and len(counted) == 1
    assert MinuteSet([(5, 8), (1, 3), (2, 4)]).ranges() == [(1, 4), (5, 8)]


def test_a_state_directory_is_made_when_missing(tmp_path: Path, clock):
    ledger = EnergyLedger(tmp_path / "new" / "energy.sqlite", clock)
    ledger.open()
    ledger.add([minute(0, 1.0)])
    ledger.close()
    assert (tmp_path / "new" / "energy.sqlite").is_file()


def test_a_counters_file_another_process_holds_is_refused_not_reset(tmp_path, clock):
    path = tmp_path / "energy.sqlite"
    first = EnergyLedger(path, clock)
    first.open()
    first.add([minute(0, 100.0)])
    second = EnergyLedger(path, clock)
    with pytest.raises(SinkError, match="in use by another vuegraf process") as refused:
        second.open()
    assert not refused.value.retryable
    first.close()
    second.open()  # free again: the counts are there
    assert counted(second).imported == joules(100.0)
    second.close()


def test_a_counters_file_that_cannot_be_opened_now_is_refused_not_set_aside(tmp_path, clock):
    path = tmp_path / "energy.sqlite"
    first = EnergyLedger(path, clock)
    first.open()
    first.add([minute(0, 100.0)])
    first.close()
    # Another program holds the database itself (not vuegraf's lock): "database is locked".
    blocker = sqlite3.connect(path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    ledger = EnergyLedger(path, clock)
    with pytest.raises(SinkError, match="cannot open the energy counters"):
        ledger.open()
    blocker.rollback()
    blocker.close()
    assert not list(tmp_path.glob("*unreadable*"))
    ledger.open()
    assert counted(ledger).imported == joules(100.0)
    ledger.close()
