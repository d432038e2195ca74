"""The durable retry queue and QueuedSink: order, durability, bounds, rejections, logging."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vuegraf.clock import FakeClock
from vuegraf.model import Point, Scale
from vuegraf.sinks.base import SinkError
from vuegraf.sinks.queue import DEFAULT_MAX_POINTS, DurableQueue, QueuedSink, QueueError
from vuegraf.stats import Stats

T0 = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
CHANNELS = ("Kitchen", "Dryer", "Panel")


def minute(i: int, channels: Sequence[str] = CHANNELS) -> list[Point]:
    """The minute points of minute `i` after T0, with values that tell them apart."""
    return [
        Point("Home", "Panel", ch, Scale.MINUTE, T0 + timedelta(minutes=i), i * 100.0 + n)
        for n, ch in enumerate(channels)
    ]


def minutes(first: int, last: int) -> list[Point]:
    return [p for i in range(first, last + 1) for p in minute(i)]


DOWN = SinkError("InfluxDB unreachable: ConnectionError", retryable=True)
BAD = SinkError("InfluxDB rejected the write (400): field type conflict", retryable=False)


class RecordingSink:
    """Stores what it is given; `fail` decides per batch whether (and how) a write fails."""

    name = "influxdb-v1"

    def __init__(self) -> None:
        self.batches: list[list[Point]] = []
        self.fail: Callable[[list[Point]], SinkError | None] = lambda _batch: None
        self.attempts = 0
        self.opened = self.closed = False

    def open(self) -> None:
        self.opened = True

    def write(self, points: Sequence[Point]) -> None:
        self.attempts += 1
        error = self.fail(list(points))
        if error is not None:
            raise error
        self.batches.append(list(points))

    def close(self) -> None:
        self.closed = True

    @property
    def points(self) -> list[Point]:
        return [p for batch in self.batches for p in batch]

    def down(self) -> None:
        self.fail = lambda _batch: DOWN

    def up(self) -> None:
        self.fail = lambda _batch: None


def queued_sink(
    path: Path,
    inner: RecordingSink | None = None,
    stats: Stats | None = None,
    clock: FakeClock | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    **kwargs: object,
) -> tuple[QueuedSink, RecordingSink, Stats, FakeClock]:
    inner = inner or RecordingSink()
    stats = stats or Stats()
    clock = clock or FakeClock(T0)
    queue = DurableQueue(path, max_points, stats, inner.name)
    sink = QueuedSink(inner, queue, stats, clock, **kwargs)  # type: ignore[arg-type]
    sink.open()
    return sink, inner, stats, clock


def everything(queue: DurableQueue) -> list[Point]:
    return queue.peek(10**9).points


# --- DurableQueue ------------------------------------------------------------------------


def test_fifo_round_trip_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "queue.sqlite"  # the state dir is created on demand
    odd = [
        Point("Ä cc", "Pa/nel #1", "Ch, 'x' = y", Scale.SECOND, T0, 0.1 + 0.2),
        Point("Home", "Panel", "Kitchen", Scale.HOUR, T0 + timedelta(microseconds=7), -1.5),
        Point("Home", "Panel", "Panel", Scale.DAY, T0 + timedelta(hours=3, seconds=59), 2e6),
    ]
    queue = DurableQueue(path, 1000, None, "influxdb-v1")
    queue.open()
    assert queue.push(minute(0)) == 0
    assert queue.push(odd) == 0
    assert queue.push(minute(1)) == 0
    queue.close()

    again = DurableQueue(path, 1000, None, "influxdb-v1")  # a process restart
    again.open()
    assert len(again) == 9
    assert everything(again) == minute(0) + odd + minute(1)  # exact values, times, order

    first = again.peek(4)
    assert first.points == minute(0) + odd[:1]
    again.remove(first)
    assert len(again) == 5
    assert everything(again) == odd[1:] + minute(1)
    again.remove(again.peek(100))
    assert len(again) == 0 and again.peek(10).points == []
    again.close()


def test_bounded_drops_oldest_counts_and_logs_once_per_episode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stats = Stats()
    queue = DurableQueue(tmp_path / "q.sqlite", 7, stats, "influxdb-v1")
    queue.open()
    with caplog.at_level(logging.INFO, logger="vuegraf.sinks.queue"):
        assert queue.push(minutes(0, 1)) == 0  # 6 points
        assert queue.push(minute(2)) == 2  # 9 > 7: the two oldest go
        assert queue.push(minute(3)) == 3
        assert everything(queue) == minutes(0, 3)[5:]
        assert len(queue) == 7
        big = minutes(10, 13)  # 12 points, more than the whole queue holds
        assert queue.push(big) == 5 + 7
        assert everything(queue) == big[5:]
    snap = stats.snapshot()
    assert snap.sink_points[("influxdb-v1", "dropped")] == 2 + 3 + 12
    assert snap.queue_depth["influxdb-v1"] == 7
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert [r.levelno for r in full] == [logging.ERROR]  # one episode, one line

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vuegraf.sinks.queue"):
        queue.remove(queue.peek(100))  # drained: the episode ends with a total
        queue.push(minutes(20, 22))  # 9 points: a new episode
    messages = [r.getMessage() for r in caplog.records]
    assert any("drained" in m and "17 of its oldest points" in m for m in messages)
    assert sum("is full" in m for m in messages) == 1
    assert stats.snapshot().queue_depth["influxdb-v1"] == 7
    queue.close()


def test_reports_depth_of_an_earlier_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "q.sqlite"
    first = DurableQueue(path, 100, None, "influxdb-v1")
    first.open()
    first.push(minutes(0, 2))
    first.close()
    stats = Stats()
    with caplog.at_level(logging.INFO, logger="vuegraf.sinks.queue"):
        second = DurableQueue(path, 100, stats, "influxdb-v1")
        second.open()
    assert stats.snapshot().queue_depth == {"influxdb-v1": 9}
    assert "holds 9 points from an earlier run" in caplog.text
    second.close()


def test_drained_queue_gives_its_disk_space_back(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    queue = DurableQueue(path, 10**6, None, "influxdb-v1")
    queue.open()
    for i in range(0, 3000, 100):
        queue.push([p for m in range(i, i + 100) for p in minute(m, [f"c{n}" for n in range(10)])])

    def on_disk() -> int:
        return sum(f.stat().st_size for f in tmp_path.iterdir())  # the file and its WAL

    full = on_disk()
    assert full > 500_000
    while len(queue):
        queue.remove(queue.peek(7000))
    assert on_disk() < full / 10
    queue.push(minute(0))  # still usable
    assert everything(queue) == minute(0)
    queue.close()


def test_open_failure_is_a_queue_error(tmp_path: Path) -> None:
    (tmp_path / "q.sqlite").mkdir()  # a directory where the file should be
    with pytest.raises(QueueError, match="cannot open retry queue"):
        DurableQueue(tmp_path / "q.sqlite", 100, None, "x").open()
    with pytest.raises(ValueError):
        DurableQueue(tmp_path / "other.sqlite", 0, None, "x")


def test_default_size_is_14_days_of_minutes_for_50_channels() -> None:
    assert DEFAULT_MAX_POINTS == 14 * 1440 * 50 == 1_008_000


# The child pushes batches as fast as it can and prints each batch number once push returned.
CHILD = """
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from vuegraf.model import Point, Scale
from vuegraf.sinks.queue import DurableQueue

queue = DurableQueue(Path(sys.argv[1]), 10**8, None, "influxdb-v1")
queue.open()
start = datetime(2026, 11, 23, 20, 0, tzinfo=timezone.utc)
i = 0
while True:
    t = start + timedelta(minutes=i)
    queue.push([Point("Home", "Panel", f"c{c}", Scale.MINUTE, t, i * 1000.0 + c)
                for c in range(200)])
    print(i, flush=True)
    i += 1
"""


def child_batch(i: int) -> list[Point]:
    t = T0 + timedelta(minutes=i)
    return [Point("Home", "Panel", f"c{c}", Scale.MINUTE, t, i * 1000.0 + c) for c in range(200)]


def test_kill_9_mid_queue_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acked: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while len(acked) < 30:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"child ended early: {child.stderr.read() if child.stderr else ''}")
            acked.append(int(line))
            assert time.monotonic() < deadline, "child too slow"
    finally:
        os.kill(child.pid, signal.SIGKILL)  # at any moment: likely inside a push
        rest, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    acked += [int(line) for line in rest.split()]  # printed before the kill: acknowledged too
    assert acked == list(range(len(acked)))

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    queue = DurableQueue(path, 10**8, None, "influxdb-v1")
    queue.open()
    stored = everything(queue)
    queue.close()
    batches = len(stored) // 200
    # Every acknowledged batch, in order; at most the one in flight besides, and never half of it.
    assert len(stored) % 200 == 0
    assert batches in (len(acked), len(acked) + 1)
    assert stored == [p for i in range(batches) for p in child_batch(i)]


# --- QueuedSink --------------------------------------------------------------------------


def test_passes_through_while_the_sink_is_up(tmp_path: Path) -> None:
    sink, inner, stats, _ = queued_sink(tmp_path / "q.sqlite")
    assert inner.opened
    sink.write(minute(0))
    sink.write([])
    sink.write(minute(1))
    assert inner.batches == [minute(0), minute(1)]
    assert sink.backlog == 0
    assert stats.snapshot().sink_points == {("influxdb-v1", "written"): 6}
    sink.close()
    assert inner.closed


def test_order_preserved_across_failures(tmp_path: Path) -> None:
    sink, inner, stats, clock = queued_sink(tmp_path / "q.sqlite", replay_chunk=4)
    sink.write(minute(0))
    inner.down()
    for i in range(1, 5):
        clock.advance(60)
        sink.write(minute(i))
    assert inner.points == minute(0)
    assert sink.backlog == 12
    assert inner.attempts == 1 + 4  # one attempt per write while down, not one per chunk
    inner.up()
    clock.advance(60)
    sink.write(minute(5))
    # The backlog first, oldest first, in chunks of 4; the new minute after it.
    assert inner.points == minutes(0, 5)
    assert [len(b) for b in inner.batches] == [3, 4, 4, 4, 3]
    assert sink.backlog == 0
    snap = stats.snapshot()
    assert snap.sink_points == {
        ("influxdb-v1", "written"): 6,
        ("influxdb-v1", "queued"): 12,
        ("influxdb-v1", "replayed"): 12,
    }
    assert snap.queue_depth == {"influxdb-v1": 0}
    sink.close()


def test_failure_mid_replay_keeps_the_rest_in_order(tmp_path: Path) -> None:
    sink, inner, _, clock = queued_sink(tmp_path / "q.sqlite", replay_chunk=3)
    inner.down()
    for i in range(4):
        sink.write(minute(i))
    calls = iter([None, DOWN])  # the first replayed chunk lands, then the sink fails again
    inner.fail = lambda _batch: next(calls, None)
    clock.advance(60)
    sink.write(minute(4))
    assert inner.points == minute(0)
    assert sink.backlog == 12
    clock.advance(60)
    sink.write(minute(5))
    assert inner.points == minutes(0, 5)


def test_survives_a_restart_and_replays_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "q.sqlite"
    sink, inner, _, _ = queued_sink(path)
    inner.down()
    sink.write(minute(0))
    sink.write(minute(1))
    sink.close()

    with caplog.at_level(logging.INFO, logger="vuegraf.sinks.queue"):
        sink2, inner2, stats2, _ = queued_sink(path)  # a new process: new objects, same file
        assert sink2.backlog == 6
        sink2.write(minute(2))
    assert inner2.points == minutes(0, 2)
    assert stats2.snapshot().sink_points == {
        ("influxdb-v1", "replayed"): 6,
        ("influxdb-v1", "written"): 3,
    }
    assert "replayed 6 points queued by an earlier run" in caplog.text
    sink2.close()


def test_rejected_points_are_counted_and_never_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink, inner, stats, _ = queued_sink(tmp_path / "q.sqlite")
    inner.fail = lambda _batch: BAD
    with caplog.at_level(logging.DEBUG, logger="vuegraf.sinks.queue"):
        sink.write(minute(0))
        sink.write(minute(1))  # same reason: not logged at ERROR again
    assert sink.backlog == 0
    inner.up()
    sink.write(minute(2))
    assert inner.points == minute(2)  # nothing of minutes 0 and 1 came back
    assert stats.snapshot().sink_points == {
        ("influxdb-v1", "rejected"): 6,
        ("influxdb-v1", "written"): 3,
    }
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        "influxdb-v1 rejected 3 points, dropping them: "
        "InfluxDB rejected the write (400): field type conflict"
    ]
    sink.close()


def test_a_rejected_chunk_does_not_block_the_backlog(tmp_path: Path) -> None:
    sink, inner, stats, clock = queued_sink(tmp_path / "q.sqlite", replay_chunk=3)
    inner.down()
    for i in range(3):
        sink.write(minute(i))
    # Back up, but minute 1 turns out to be bad data: dropped, the rest goes through.
    inner.fail = lambda batch: BAD if batch == minute(1) else None
    clock.advance(60)
    sink.write(minute(3))
    assert inner.points == minute(0) + minute(2) + minute(3)
    assert sink.backlog == 0
    assert stats.snapshot().sink_points[("influxdb-v1", "rejected")] == 3


def test_non_finite_values_are_rejected_not_queued(tmp_path: Path) -> None:
    sink, inner, stats, _ = queued_sink(tmp_path / "q.sqlite")
    inner.down()
    bad = Point("Home", "Panel", "Kitchen", Scale.MINUTE, T0, float("nan"))
    sink.write([bad, *minute(0)])
    assert sink.backlog == 3
    snap = stats.snapshot().sink_points
    assert (snap[("influxdb-v1", "rejected")], snap[("influxdb-v1", "queued")]) == (1, 3)


def test_outage_logged_once_and_recovery_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink, inner, _, clock = queued_sink(tmp_path / "q.sqlite")
    with caplog.at_level(logging.DEBUG, logger="vuegraf.sinks.queue"):
        sink.write(minute(0))
        inner.down()
        for i in range(1, 4):
            clock.advance(60)
            sink.write(minute(i))
        inner.up()
        clock.advance(60)
        sink.write(minute(4))
        clock.advance(60)
        sink.write(minute(5))
    loud = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert loud == [
        (
            "ERROR",
            "influxdb-v1: InfluxDB unreachable: ConnectionError; queuing points until it is back",
        ),
        (
            "INFO",
            "influxdb-v1: recovered after 3 failed writes (3 min 0 s); replayed 9 queued points",
        ),
    ]
    sink.close()


def test_replay_time_budget_keeps_collection_moving(tmp_path: Path) -> None:
    sink, inner, _, clock = queued_sink(tmp_path / "q.sqlite", replay_chunk=3, replay_seconds=25)
    inner.down()
    for i in range(6):
        sink.write(minute(i))

    def slow(_batch: list[Point]) -> None:
        clock.advance(10)  # every write takes 10 s of (virtual) time
        return None

    inner.fail = slow
    clock.advance(60)
    sink.write(minute(6))  # replays 3 chunks (30 s > 25 s), then queues minute 6 behind
    assert inner.points == minutes(0, 2)
    assert sink.backlog == 12
    assert sink.flush(max_seconds=15) is False  # two more chunks
    assert inner.points == minutes(0, 4)
    assert sink.flush(max_seconds=None) is True  # no limit: drains
    assert inner.points == minutes(0, 6)
    assert sink.flush() is True  # nothing to do


def test_no_new_attempt_right_after_a_failure(tmp_path: Path) -> None:
    sink, inner, stats, clock = queued_sink(tmp_path / "q.sqlite", retry_seconds=30)
    inner.down()
    sink.write(minute(0))  # fails (imagine a 10 s timeout)
    clock.advance(5)
    sink.write(minute(1))  # same cycle, moments later: straight to the queue
    clock.advance(5)
    sink.write(minute(2))
    assert inner.attempts == 1
    assert sink.backlog == 9
    inner.up()
    clock.advance(20)  # 30 s after the failure: try again
    sink.write(minute(3))
    assert inner.points == minutes(0, 3)
    assert stats.snapshot().sink_points[("influxdb-v1", "queued")] == 9


def test_flush_while_down_keeps_everything(tmp_path: Path) -> None:
    sink, inner, _, _ = queued_sink(tmp_path / "q.sqlite")
    inner.down()
    sink.write(minute(0))
    assert sink.flush() is False
    assert sink.backlog == 3
    inner.up()
    assert sink.flush() is True
    assert inner.points == minute(0)


def test_queue_write_failure_surfaces_as_sink_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, inner, stats, _ = queued_sink(tmp_path / "q.sqlite")
    inner.down()

    def disk_full(_points: Sequence[Point]) -> int:
        raise QueueError("cannot write retry queue q.sqlite: database or disk is full")

    monkeypatch.setattr(sink.queue, "push", disk_full)
    with pytest.raises(SinkError, match="disk is full") as info:
        sink.write(minute(0))
    assert info.value.retryable
    assert stats.snapshot().sink_points[("influxdb-v1", "dropped")] == 3


def test_open_failure_is_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "q.sqlite").mkdir()
    inner = RecordingSink()
    sink = QueuedSink(inner, DurableQueue(tmp_path / "q.sqlite", 10, None, inner.name))
    with pytest.raises(SinkError, match="cannot open retry queue"):
        sink.open()
    assert sink.name == "influxdb-v1"
