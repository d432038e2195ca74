"""Devices and circuits that come and go while vuegraf runs.

The real daemon in virtual time against the simulator (sharing the clock, recording every
request), the embedded SQLite store. Five minutes in, the account changes while being served:
a plug is installed, a circuit is added to the garage panel, the EV charger and one circuit of
the main panel are removed. At the next device refresh (every 10 minutes here) vuegraf must
collect the new series and fill their past (compared with the simulator's model, minute by
minute), stop asking for the removed ones, and do all of it without errors or warnings.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from harness import oracle
from harness.completeness import compare, seed_minute, sqlite_points
from harness.inprocess import run_daemon, simulator_config
from vuegraf.clock import FakeClock
from vuegraf.simulator import SimulatorServer
from vuegraf.simulator.model import ChannelSpec
from vuegraf.simulator.server import RequestRecord
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 47
T0 = datetime(2026, 11, 23, 14, 0, 20, tzinfo=UTC)
CHANGE_AT = T0 + timedelta(minutes=5)
END = T0 + timedelta(minutes=40)
NEW_CIRCUIT = ChannelSpec("9", "Workshop", "daytime", 420.0)
REMOVED_DEVICE = 3001  # the EV charger, nested on the garage panel
REMOVED_CIRCUIT = (1001, "16")
# Stored names, by upstream's rule: a plug carries its device's name, a circuit `<panel>-<n>`.
NEW_SERIES = {(4001, "1,2,3"): "Shed Plug", (1002, "9"): "Garage Panel-9"}
# The household after the change, as oracle.py's tables spell it.
CHANGED_NAMES = {
    **{
        key: name
        for key, name in oracle.DEFAULT_NAMES.items()
        if key[0] != REMOVED_DEVICE and key != REMOVED_CIRCUIT
    },
    **NEW_SERIES,
}


def gids_asked(record: RequestRecord) -> set[tuple[int, str | None]]:
    """(gid, channel or None for all) a usage or chart request asked for."""
    if record.endpoint == "getDeviceListUsages":
        text = record.query.get("deviceGids", "")  # "1+2", decoded by the server as "1 2"
        return {(int(g), None) for g in re.split(r"[ +,]+", text) if g}
    if record.endpoint == "getChartUsage":
        return {(int(record.query["deviceGid"]), record.query["channel"])}
    return set()


def test_added_and_removed_devices_and_circuits_are_picked_up_at_the_refresh(tmp_path, caplog):
    clock = FakeClock(T0, stop_after=END)
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        sim.log_requests = True
        config = simulator_config(
            tmp_path,
            sim.url,
            {
                "deviceRefreshSecs": 600,
                "detailedDataHoursEnabled": False,
                "detailedDataDaysEnabled": False,
            },
        )
        # The series known at start have their minutes stored up to just before T0.
        seed_minute(config, sim.model, T0.replace(second=0) - timedelta(minutes=2))

        def change(now: datetime) -> None:
            if now >= CHANGE_AT and not changed:
                sim.add_device(oracle.SHED_PLUG)
                sim.add_circuit(1002, NEW_CIRCUIT)
                sim.remove_device(REMOVED_DEVICE)
                sim.remove_circuit(*REMOVED_CIRCUIT)
                changed.append(now)

        changed: list[datetime] = []
        stats = Stats()
        with caplog.at_level(logging.INFO, logger="vuegraf"):
            run_daemon(config, clock, stats, [change])
        log = sim.requests_seen()
        model = sim.model  # the changed account's model

    assert changed
    refreshes = [r.at for r in log if r.endpoint == "devices" and r.at > changed[0]]
    assert refreshes, "no device refresh after the change"
    refreshed = refreshes[0]
    assert refreshed <= changed[0] + timedelta(minutes=11)

    # The removed device and circuit are not asked for after the refresh.
    after = [r for r in log if r.at >= refreshed]
    asked = set().union(*(gids_asked(r) for r in after))
    assert (REMOVED_DEVICE, None) not in asked
    assert not {k for k in asked if k[0] == REMOVED_DEVICE}
    assert REMOVED_CIRCUIT not in asked
    before = [r for r in log if changed[0] < r.at < refreshed]
    gone_before = [r for r in before if (REMOVED_DEVICE, "1,2,3") in gids_asked(r)]
    assert len(gone_before) <= 2  # at most a fill or two, answered empty, then backed off
    # The new device is in every usage request after the refresh.
    usage_after = [r for r in after if r.endpoint == "getDeviceListUsages"]
    assert usage_after and all((4001, None) in gids_asked(r) for r in usage_after)

    # No error storm: not one warning or error, every cycle good.
    loud = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    assert loud == []
    snap = stats.snapshot()
    assert snap.failed_cycles == 0 and snap.cycles >= 40
    assert all(r.status == 200 for r in log)

    # The new series: live minutes since the refresh and their past filled, equal to the model.
    first = (T0 - timedelta(days=6, hours=23)).replace(second=0)  # inside Emporia's 7 days
    last = END.replace(second=0) - timedelta(minutes=5)
    new_series = compare(
        "minute points of the new series",
        sqlite_points(tmp_path / "vuegraf.sqlite", "Home", "False"),
        oracle.served(
            CHANGED_NAMES,
            model,
            "1MIN",
            first,
            last + timedelta(minutes=1),
            oracle.NEW_YORK,
            only=NEW_SERIES.values(),
        ),
    )
    print(f"changed at {changed[0]:%H:%M:%S}, refreshed at {refreshed:%H:%M:%S}; "
          f"{len(gone_before)} requests for the removed device in between; {new_series}; "
          f"{len(log)} requests in all")
    assert new_series.expected > 2 * 9000
    assert new_series.ok, str(new_series)
    logged = " ".join(r.message for r in caplog.records)
    for text in ("new channel 1,2,3 of device 4001", "new channel 9 of device 1002",
                 "channel 1,2,3 of device 3001 is gone", "channel 16 of device 1001 is gone"):
        assert text in logged
