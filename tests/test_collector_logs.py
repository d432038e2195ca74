"""What the collector tells a user at INFO and WARNING, through the real loop (the simulator,
the production sinks, virtual time):

- the start-up line about Emporia's daily request budget names the setting behind what pushed
  an account over: a user over budget because of device refreshes is not told to cut second
  data;
- the fill's progress line counts what is worked through tick by tick (minutes, hours, days):
  second data, fetched once every detailedIntervalSecs, never keeps a fill looking unfinished.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.completeness import chart_channels, seed_minute
from harness.inprocess import run_daemon, simulator_config
from vuegraf.clock import FakeClock
from vuegraf.simulator import SimulatorServer

T0 = datetime(2026, 11, 23, 10, 0, 20, tzinfo=UTC)


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


@pytest.mark.parametrize(
    "settings, advice",
    [
        # 1 440 minutes + 24 hours + 1 day + 1 440 device reads = 2 905.
        ({"deviceRefreshSecs": 60}, "raise deviceRefreshSecs"),
        # 2 880 minute requests + 24 + 1 + 24 device reads = 2 929.
        ({"updateIntervalSecs": 30}, "raise updateIntervalSecs"),
        # Second data for every chart channel, hourly: 24 x 28 = 672 more, over a budget of 2 000.
        ({"detailedDataEnabled": True},
         "restrict second data with detailedDataChannels or raise detailedIntervalSecs"),
    ],
)
def test_over_budget_advice_names_what_pushed_it_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, settings: dict[str, Any], advice: str
) -> None:
    clock = FakeClock(T0, stop_after=T0 + timedelta(seconds=1))
    with SimulatorServer(seed=5, now=clock.now) as sim:
        config = simulator_config(tmp_path, sim.url, settings)
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            run_daemon(config, clock)
    over = [m for m in messages(caplog, logging.WARNING) if "requests a day" in m]
    assert len(over) == 1, over
    assert over[0].endswith(f"over the 2000 Emporia asks clients to stay under; {advice}")


def test_a_fill_with_second_data_on_ends_with_one_done_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0, stop_after=T0 + timedelta(minutes=6))
    with SimulatorServer(seed=7, now=clock.now) as sim:
        config = simulator_config(tmp_path, sim.url, {
            "detailedDataEnabled": True,
            "detailedDataHoursEnabled": False,
            "detailedDataDaysEnabled": False,
        })
        n = len(chart_channels(config, sim.model))
        # An earlier run stopped 30 hours ago: 1 800 minutes to fill, 3 requests of 720 each
        # per channel. Second data: none stored, so its 3 hours (less 2 minutes at the
        # retention edge), 3 requests of 3 600 s per channel, at the first tick.
        seed_minute(config, sim.model, T0.replace(second=0) - timedelta(hours=30))
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            run_daemon(config, clock)

    total = 3 * n + 3 * n
    first_tick = 3 * n + 60  # all of the second data, then 60 chart requests for minutes
    infos = messages(caplog, logging.INFO)
    progress = [m for m in infos if m.startswith("Account Home: filling holes")]
    done = [m for m in infos if m.startswith("Account Home: holes filled")]
    assert len(progress) == 1, progress
    head, tail = progress[0].split(" points so far, ")
    assert head.startswith(
        f"Account Home: filling holes: {first_tick} of {total} chart requests done "
        f"({100 * first_tick // total}%), "
    )
    assert tail == "about 1 min left"
    assert len(done) == 1, done
    assert done[0].startswith(f"Account Home: holes filled: {total} chart requests, ")
