"""Energy counters across local midnight, on DST days and in odd zones: no spike, no reset.

The daemon runs in virtual time against the simulator (its day buckets in the same zone)
from 12 minutes before a local midnight to 15 minutes after, with the energy ledger first
among its sinks and a memory store after it, as `vuegraf` wires them. After every cycle, each
channel's counter must equal the simulator model's energy over exactly the minutes the store
holds since the start: a midnight that added a day total, reset to zero or counted a minute
twice would break the equality at that cycle.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from harness import oracle
from harness.stores import MemoryStore
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.energy import ChannelId, EnergyLedger, EnergySink
from vuegraf.model import Point, Scale
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.sinks.base import Sink

SEED = 21
CASES = [
    ("America/New_York", date(2027, 3, 14)),  # 23-hour day
    ("America/New_York", date(2027, 11, 7)),  # 25-hour day
    ("Europe/Berlin", date(2027, 3, 28)),
    ("Asia/Kolkata", date(2027, 6, 1)),  # UTC+05:30: midnight on a half hour of UTC
    ("Australia/Lord_Howe", date(2027, 4, 4)),  # a DST change of half an hour
]


@pytest.mark.parametrize(("zone_name", "day"), CASES)
def test_counters_equal_the_models_minutes_at_every_cycle_across_midnight(
    tmp_path, zone_name, day
):
    zone = ZoneInfo(zone_name)
    midnight = oracle.midnight(day + timedelta(days=1), zone)
    start = midnight - timedelta(minutes=12) + timedelta(seconds=20)
    clock = FakeClock(start, stop_after=midnight + timedelta(minutes=15))
    scenario = dataclasses.replace(Scenario.default(), timezone=zone_name)
    model = UsageModel(scenario, seed=SEED)
    names = oracle.DEFAULT_NAMES
    oracle.check_household(model)
    ledger = EnergyLedger(None, clock)
    store = MemoryStore()
    # Minutes stored up to a few minutes before the start (their values are not the
    # model's: they never pass the ledger), so the run fills a short hole, not a week.
    seeded_until = start.replace(second=0) - timedelta(minutes=3)
    store.points = [
        Point("Home", oracle.DEVICE_NAMES[gid], name, Scale.MINUTE, seeded_until, 1.0)
        for gid, _num, name in oracle.channels(names, live_only_too=True)
    ]
    seen: list[tuple[datetime, dict[ChannelId, float], dict[tuple[str, str], set[datetime]]]] = []

    def record(now: datetime) -> None:
        stored: dict[tuple[str, str], set[datetime]] = {}
        for p in store.points:
            if p.scale is Scale.MINUTE and p.time > seeded_until:
                stored.setdefault((p.device, p.channel), set()).add(p.time)
        totals = {key: t.imported - t.exported for key, t in ledger.channels().items()}
        seen.append((now, totals, stored))

    with SimulatorServer(scenario=scenario, seed=SEED, now=clock.now) as sim:
        config = parse_config(
            {
                "accounts": [
                    {"name": "Home", "email": "h@example.com", "password": "pw",
                     "simulatorUrl": sim.url}
                ],
                "timezone": zone_name,
            },
            tmp_path / "vuegraf.json",
        )
        accounts = [EmporiaAccount(a, config, clock) for a in config.accounts]
        sinks: list[Sink] = [EnergySink(ledger), store]
        Daemon(config, accounts, sinks, clock, on_cycle=[record]).run()

    assert len(seen) >= 25
    crossed = [now for now, _t, _s in seen if now > midnight]
    assert crossed and crossed[0] < midnight + timedelta(minutes=2)
    for now, totals, stored in seen:
        checked = 0
        for gid, num, name in oracle.channels(names, live_only_too=True):
            minutes = stored.get((oracle.DEVICE_NAMES[gid], name), set())
            expected = sum(
                (model.kwh(gid, num, "1MIN", m) or 0.0) * 3_600_000.0 for m in minutes
            )
            got = totals.get(ChannelId(gid, num), 0.0)
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-6), (now, gid, num)
            checked += bool(minutes)
        assert checked == len(names), now
    # The last cycle holds every minute from the first hole to the last complete minute.
    _now, _totals, stored = seen[-1]
    mains = stored[("Main Panel", "Main Panel")]
    assert min(mains) == seeded_until + timedelta(minutes=1)
    assert max(mains) >= midnight + timedelta(minutes=13)
    assert len(mains) == (max(mains) - min(mains)) // timedelta(minutes=1) + 1
