"""The start-up line about Emporia's daily request budget names the setting behind the largest
share of the requests: a user over budget because of device refreshes is not told to cut
second data."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.stores import MemoryStore
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.simulator import SimulatorServer
from vuegraf.stats import Stats

T0 = datetime(2026, 11, 23, 10, 0, 20, tzinfo=UTC)


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
def test_over_budget_advice_names_the_biggest_share(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, settings: dict[str, Any], advice: str
) -> None:
    clock = FakeClock(T0, stop_after=T0 + timedelta(seconds=1))
    stats = Stats()
    with SimulatorServer(seed=5, now=clock.now) as sim:
        config = parse_config(
            {
                "accounts": [{"name": "Home", "email": "e@x", "password": "pw",
                              "simulatorUrl": sim.url}],
                "timezone": "UTC",
                "stateDir": "state",
                **settings,
            },
            tmp_path / "vuegraf.json",
        )
        accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            Daemon(config, accounts, [MemoryStore()], clock, stats=stats).run()
    over = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "requests a day" in r.getMessage()]
    assert len(over) == 1, over
    assert over[0].endswith(f"over the 2000 Emporia asks clients to stay under; {advice}")
