"""A store whose read back fails for a while: collection goes on, the read is asked again.

The daemon runs in virtual time against the Emporia simulator (real pyemvue over HTTP), with
a recording store at the seam whose `last_times` fails (retryable) the first three times.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.stores import MemoryStore
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.model import Scale
from vuegraf.simulator import SimulatorServer
from vuegraf.sinks.base import StoreReadError
from vuegraf.stats import Stats

T0 = datetime(2026, 11, 23, 10, 0, 20, tzinfo=UTC)


class FlakyStore(MemoryStore):
    """Records every point written and every read; the first `failures` reads fail, the
    others answer as an empty store would."""

    name = "flaky"

    def __init__(self, clock: FakeClock, failures: int) -> None:
        super().__init__()
        self.clock = clock
        self.failures = failures
        self.reads: list[tuple[datetime, Scale, datetime]] = []  # (when, scale, until)

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]:
        self.reads.append((self.clock.now(), scale, until))
        if self.failures > 0:
            self.failures -= 1
            raise StoreReadError("flaky: HTTP 503: overloaded", retryable=True)
        return {}


def test_failed_reads_are_asked_again_backing_off_and_never_fail_a_cycle(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0, stop_after=T0 + timedelta(minutes=10))
    store = FlakyStore(clock, failures=3)
    stats = Stats()
    with SimulatorServer(seed=3, now=clock.now) as sim:
        config = parse_config(
            {
                "accounts": [{"name": "Home", "email": "e@x", "password": "pw",
                              "simulatorUrl": sim.url}],
                "timezone": "UTC",
                "stateDir": "state",
            },
            tmp_path / "vuegraf.json",
        )
        accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            Daemon(config, accounts, [store], clock, stats=stats).run()

    # Ticks at 10:00:20, then 10:01:05, 10:02:05, ...: asked at the first two ticks, then
    # after skipping one tick and three ticks; the fourth time it answers, once per scale.
    ticks = [T0] + [datetime(2026, 11, 23, 10, m, 5, tzinfo=UTC) for m in range(1, 11)]
    assert [(when, scale) for when, scale, _until in store.reads] == [
        (ticks[0], Scale.MINUTE),
        (ticks[1], Scale.MINUTE),
        (ticks[3], Scale.MINUTE),
        (ticks[7], Scale.MINUTE),
        (ticks[7], Scale.HOUR),
        (ticks[7], Scale.DAY),
    ]
    # Every read stops before the first live point this process wrote, however late it came:
    # the 09:59 minute, the 09:00 hour, the day that ended at midnight (stamped 23:59:59).
    untils = {scale: until for _when, scale, until in store.reads}
    assert untils == {
        Scale.MINUTE: datetime(2026, 11, 23, 9, 59, tzinfo=UTC),
        Scale.HOUR: datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        Scale.DAY: datetime(2026, 11, 22, 23, 59, 59, tzinfo=UTC),
    }
    assert {until for _when, scale, until in store.reads if scale is Scale.MINUTE} == {
        datetime(2026, 11, 23, 9, 59, tzinfo=UTC)
    }
    # Live minutes every cycle, from the first on; no cycle failed.
    minutes = {p.time for p in store.points if p.scale is Scale.MINUTE and p.time >= ticks[0]
               - timedelta(minutes=2)}
    assert minutes == {datetime(2026, 11, 23, 9, 59, tzinfo=UTC) + timedelta(minutes=n)
                       for n in range(11)}
    snapshot = stats.snapshot()
    assert snapshot.cycles == 11 and snapshot.consecutive_failed_cycles == 0
    cycle_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Cycle")]
    assert len(cycle_lines) == 11
    assert all("from 1 account(s)" in line for line in cycle_lines)
    # Said once when it began, once when it ended.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "Account Home: cannot read back from flaky (flaky: HTTP 503: overloaded); collecting "
        "live values meanwhile, holes from before this start are filled once it answers"
    ]
    assert "Account Home: read back from flaky after 3 failed attempts; filling holes" in (
        caplog.text
    )
    # Once it answered (nothing stored), the lookback is filled: minutes a day old arrive.
    assert any(p.scale is Scale.MINUTE and p.time < T0 - timedelta(days=1) for p in store.points)
