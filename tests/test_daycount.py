"""The day's Emporia request count outlives the process (vuegraf.daycount): a restart in the
afternoon goes on from the requests the morning spent, not from 0; a file of an earlier UTC
day, or one that cannot be read, counts nothing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vuegraf.daycount import DayCountFile
from vuegraf.stats import Stats

MORNING = datetime(2026, 12, 1, 9, 30, 0, tzinfo=UTC)


def counted(stats: Stats, account: str, n: int, when: datetime) -> None:
    for _ in range(n):
        stats.count_request(account, "getChartUsage", "ok", when)


def test_a_restart_goes_on_from_the_days_count(tmp_path: Path) -> None:
    before = Stats()
    counted(before, "Home", 1900, MORNING)
    counted(before, "Cabin", 7, MORNING)
    before.count_request("Home", "login", "ok", MORNING, budgeted=False)
    DayCountFile(tmp_path).save(before)

    after = Stats()  # the next process
    later = MORNING + timedelta(hours=2)
    DayCountFile(tmp_path).load(after, later)
    assert after.requests_today("Home", later) == 1900
    assert after.requests_today("Cabin", later) == 7
    assert after.count_request("Home", "getDeviceListUsages", "ok", later) == 1901
    # The next UTC day starts from 0 as always.
    assert after.requests_today("Home", datetime(2026, 12, 2, 0, 0, 20, tzinfo=UTC)) == 0


def test_a_count_of_an_earlier_day_is_not_taken(tmp_path: Path) -> None:
    before = Stats()
    counted(before, "Home", 1900, MORNING)
    DayCountFile(tmp_path).save(before)
    after = Stats()
    tomorrow = MORNING + timedelta(days=1)
    DayCountFile(tmp_path).load(after, tomorrow)
    assert after.requests_today("Home", tomorrow) == 0


def test_a_reload_reading_it_again_counts_nothing_twice(tmp_path: Path) -> None:
    stats = Stats()
    counted(stats, "Home", 40, MORNING)
    file = DayCountFile(tmp_path)
    file.save(stats)
    counted(stats, "Home", 2, MORNING)
    file.load(stats, MORNING)  # the same process, after a SIGHUP
    assert stats.requests_today("Home", MORNING) == 42


def test_replicas_of_a_shard_keep_their_own_file(tmp_path: Path) -> None:
    one, two = Stats(), Stats()
    counted(one, "Home", 5, MORNING)
    counted(two, "Cabin", 9, MORNING)
    DayCountFile(tmp_path, "-0-of-2").save(one)
    DayCountFile(tmp_path, "-1-of-2").save(two)
    back = Stats()
    DayCountFile(tmp_path, "-0-of-2").load(back, MORNING)
    assert back.snapshot().requests_today == {"Home": 5}


def test_an_unreadable_file_counts_nothing_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = DayCountFile(tmp_path)
    assert file.path is not None
    file.path.write_text("{not json")
    stats = Stats()
    with caplog.at_level(logging.WARNING, logger="vuegraf"):
        file.load(stats, MORNING)
    assert stats.requests_today("Home", MORNING) == 0
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert str(file.path) in caplog.records[0].getMessage()


def test_without_a_state_directory_nothing_is_kept(tmp_path: Path) -> None:
    stats = Stats()
    counted(stats, "Home", 3, MORNING)
    DayCountFile(None).save(stats)
    DayCountFile(None).load(stats, MORNING)
    assert list(tmp_path.iterdir()) == []
