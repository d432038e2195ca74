"""The device catalogue under Emporia's null bursts and stale day totals: real pyemvue over
HTTP to the simulator, on a fake clock the simulator shares."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from harness import oracle
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.emporia import EmporiaAccount
from vuegraf.model import Scale
from vuegraf.simulator import SimulatorServer

NEW_YORK = ZoneInfo("America/New_York")
MIDNIGHT = datetime(2026, 11, 25, tzinfo=NEW_YORK)
YESTERDAY = MIDNIGHT - timedelta(days=1)
LOGGER = "vuegraf.emporia.catalog"


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[SimulatorServer, EmporiaAccount, FakeClock]]:
    clock = FakeClock(MIDNIGHT + timedelta(minutes=20))
    with SimulatorServer(seed=5, now=clock.now, stale_day_s=3600) as sim:
        config = parse_config(
            {
                "accounts": [{"name": "Home", "email": "e", "password": "p",
                              "simulatorUrl": sim.url}],
                "timezone": "America/New_York",
            },
            tmp_path / "vuegraf.json",
        )
        yield sim, EmporiaAccount(config.accounts[0], config, clock), clock


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_an_answer_for_another_day_is_not_written_and_said_once(
    setup: tuple[SimulatorServer, EmporiaAccount, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    sim, account, clock = setup
    stamp = datetime(2026, 11, 26, 4, 59, 59, tzinfo=UTC)  # 23:59:59 of the new day
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        # Twice in the stale hour: Emporia answers yesterday's total for today. Nothing.
        assert account.points(Scale.DAY, MIDNIGHT + timedelta(minutes=5), stamp) == []
        assert account.points(Scale.DAY, MIDNIGHT + timedelta(minutes=15), stamp) == []
        warnings = messages(caplog, logging.WARNING)
        assert len(warnings) == 1, warnings
        assert "1D request for 2026-11-25T00:00:00-05:00 with the values of " \
               "2026-11-24T00:00:00-05:00" in warnings[0]
        assert "Emporia's side" in warnings[0]
        assert len(messages(caplog, logging.DEBUG)) == 1  # the repeat, at DEBUG
        # Yesterday asked for by its middle, as the collector does: its own complete total.
        stamp = datetime(2026, 11, 25, 4, 59, 59, tzinfo=UTC)
        points = account.points(Scale.DAY, YESTERDAY + timedelta(hours=12), stamp)
    got = {p.channel: p.watts for p in points}
    want = {
        name: watts
        for (name, _t), watts in oracle.served(
            oracle.DEFAULT_NAMES, sim.model, "1D", YESTERDAY, MIDNIGHT, NEW_YORK, True
        ).items()
    }
    assert got == pytest.approx(want, rel=1e-9) and len(got) == len(oracle.DEFAULT_NAMES)
    assert all(p.time == stamp for p in points)
    assert messages(caplog, logging.INFO)[-1] == (
        "Account Home: Emporia's 1D answers are for the bucket asked for again"
    )


def test_nulls_are_said_when_they_start_and_when_they_end(
    setup: tuple[SimulatorServer, EmporiaAccount, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    sim, account, clock = setup
    minute = (MIDNIGHT + timedelta(minutes=10)).astimezone(UTC)
    chart = [name for _g, _n, name in oracle.channels(oracle.DEFAULT_NAMES)]
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert len(account.points(Scale.MINUTE, minute, minute)) == len(oracle.DEFAULT_NAMES)
        sim.none_rate = 1.0  # every chart channel null from now on
        for i in (1, 2, 3):
            at = minute + timedelta(minutes=i)
            points = account.points(Scale.MINUTE, at, at)
            assert {p.channel for p in points} == {
                oracle.DEFAULT_NAMES[k] for k in oracle.LIVE_ONLY
            }
        sim.none_rate = 0.0
        at = minute + timedelta(minutes=4)
        assert len(account.points(Scale.MINUTE, at, at)) == len(oracle.DEFAULT_NAMES)
    info = [m for m in messages(caplog, logging.INFO) if "value" in m]
    assert len(info) == 2, info
    assert info[0].startswith("Account Home: Emporia has no 1MIN value yet for ")
    assert all(name in info[0] for name in chart)
    assert info[1].startswith("Account Home: 1MIN values for ")
    assert info[1].endswith(" are answered again") and all(name in info[1] for name in chart)
    assert len([m for m in messages(caplog, logging.DEBUG) if "no 1MIN value" in m]) == 3
    assert account.catalog.missing_values == 3 * len(chart)
