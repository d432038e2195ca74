"""The fill's progress line counts what is worked through tick by tick (minutes, hours, days):
second data, fetched once every detailedIntervalSecs, never keeps a fill looking unfinished."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.completeness import chart_channels
from harness.stores import MemoryStore
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.model import Point, Scale
from vuegraf.simulator import SimulatorServer
from vuegraf.stats import Stats

T0 = datetime(2026, 11, 23, 10, 0, 20, tzinfo=UTC)


def test_a_fill_with_second_data_on_ends_with_one_done_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0, stop_after=T0 + timedelta(minutes=6))
    stats = Stats()
    store = MemoryStore()
    with SimulatorServer(seed=7, now=clock.now) as sim:
        config = parse_config(
            {
                "accounts": [{"name": "Home", "email": "e@x", "password": "pw",
                              "simulatorUrl": sim.url}],
                "timezone": "UTC",
                "stateDir": "state",
                "detailedDataEnabled": True,
                "detailedDataHoursEnabled": False,
                "detailedDataDaysEnabled": False,
            },
            tmp_path / "vuegraf.json",
        )
        channels = chart_channels(config, sim.model)
        # An earlier run stopped 30 hours ago: 1 800 minutes to fill, 3 requests of 720 each
        # per channel. Second data: none stored, so its 3 hours (less 2 minutes at the
        # retention edge), 3 requests of 3 600 s per channel, at the first tick.
        last = T0.replace(second=0) - timedelta(hours=30)
        store.write([Point("Home", "", name, Scale.MINUTE, last, 1.0) for _g, _n, name in channels])
        accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            Daemon(config, accounts, [store], clock, stats=stats).run()

    n = len(channels)
    total = 3 * n + 3 * n
    first_tick = 3 * n + 60  # all of the second data, then 60 chart requests for minutes
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    progress = [m for m in infos if m.startswith("Account Home: filling holes")]
    done = [m for m in infos if m.startswith("Account Home: holes filled")]
    assert progress == [
        f"Account Home: filling holes: {first_tick} of {total} chart requests done "
        f"({100 * first_tick // total}%), {progress_points(progress)} points so far, "
        "about 1 min left"
    ]
    assert len(done) == 1 and done[0].startswith(f"Account Home: holes filled: {total} chart "
                                                  "requests, ")


def progress_points(lines: list[str]) -> str:
    """The points figure of the one progress line (checked for its shape, not its value)."""
    assert len(lines) == 1, lines
    return lines[0].split("), ", 1)[1].split(" points", 1)[0]
