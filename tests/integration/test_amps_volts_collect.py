"""Amps and volts end to end: simulator → real pyemvue → daemon → real InfluxDB 1.x / SQLite.

The expected values come from the simulator's model (kWh per bucket, a leg's volts) by
arithmetic written here: amps = amp-hours / 0.25 h for a 15-minute bucket, amp-hours =
kWh x 1000 / volts, volts as served. The daemon runs in virtual time without a start-up
backfill (amps and volts are collected live only), so a simulated day takes seconds.
"""

from __future__ import annotations

import queue
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness import oracle
from harness.subscriber import Subscriber, retained
from vuegraf.clock import FakeClock
from vuegraf.config import TagConfig, parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.energy import EnergyLedger
from vuegraf.model import Point, Unit
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.simulator.electrical import leg_volts
from vuegraf.sinks.base import Sink
from vuegraf.sinks.factory import build_sinks
from vuegraf.sinks.lineproto import encode_all
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 7
# 19:59:47: the first tick collects the 15-minute bucket of 19:30, each tick after a quarter
# hour (+ the 5 s lag) the one before it: 19:45, 20:00, 20:15, 20:30, 20:45 by 21:04:47.
START = datetime(2026, 11, 23, 19, 59, 47, tzinfo=UTC)
QUARTERS = [datetime(2026, 11, 23, 19, 30, tzinfo=UTC) + timedelta(minutes=15 * i)
            for i in range(6)]
RUN = timedelta(minutes=65)


def leg_of(channel_num: str) -> int:
    """The simulator's wiring, as its docstring states it: even circuits on leg B (1)."""
    return 1 if channel_num.isdigit() and int(channel_num) % 2 == 0 else 0


def expected_amps_volts(buckets: Sequence[datetime]) -> dict[tuple[str, int], tuple[float, float]]:
    """(written channel name, Unix seconds) -> (amps, volts) of every channel the simulator
    has a 15-minute value for."""
    model = UsageModel(Scenario.default(), seed=SEED)
    oracle.check_household(model)
    result = {}
    for bucket in buckets:
        for (gid, num), name in oracle.DEFAULT_NAMES.items():
            kwh = model.device_values(gid, "15MIN", bucket)[num]
            if kwh is None:
                continue
            volts = leg_volts(SEED, gid, leg_of(num), bucket)
            amp_hours = kwh * 1000.0 / volts
            result[(name, oracle.epoch(bucket))] = (amp_hours / 0.25, volts)
    return result


def config_for(sim_url: str, tmp_path: Path, amps_volts: Any, store: dict[str, Any]) -> Any:
    account: dict[str, Any] = {
        "name": "Home", "email": "me@example.com", "password": "pw", "simulatorUrl": sim_url,
    }
    if amps_volts is not None:
        account["ampsVolts"] = amps_volts
    return parse_config(
        {"accounts": [account], "timezone": "America/New_York", "stateDir": "state", **store},
        tmp_path / "vuegraf.json",
        environ={},
    )


def run(config: Any, sim: SimulatorServer, clock: FakeClock,
        sinks: Sequence[Sink] | None = None, count_from_second_cycle: bool = False,
        stats: Stats | None = None,
        on_cycle: Callable[[datetime], None] | None = None) -> None:
    """The daemon until the clock stops; with `count_from_second_cycle` the simulator's
    counts start after the start-up cycle (which also collects the bucket before it)."""
    cycles: list[datetime] = []

    def after_cycle(at: datetime) -> None:
        if not cycles and count_from_second_cycle:
            sim.reset_stats()
        cycles.append(at)
        if on_cycle is not None:
            on_cycle(at)

    accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
    Daemon(config, accounts, list(sinks) if sinks is not None else build_sinks(config), clock,
           stats=stats, backfill=False, on_cycle=[after_cycle]).run()


@pytest.mark.parametrize("store", ["influxdb", "sqlite"])
def test_amps_and_volts_written_equal_the_simulator_s_model(store, request, tmp_path, caplog):
    settings: dict[str, Any] = {"sqlitePath": str(tmp_path / "vue.sqlite")}
    if store == "influxdb":
        server, database = request.getfixturevalue("influxdb_v1_db")
        settings = {"influxDb": {"host": server.host, "port": server.port, "database": database}}
    clock = FakeClock(START, stop_after=START + RUN)
    with SimulatorServer(seed=SEED, now=clock.now) as sim:
        config = config_for(sim.url, tmp_path, True, settings)
        with caplog.at_level("INFO", logger="vuegraf"):
            run(config, sim, clock)
        stats = sim.stats()

    got: dict[tuple[str, int], tuple[float, float]] = {}
    if store == "influxdb":
        client = server.client(database)
        result = client.query(
            "SELECT amps, volts FROM energy_usage WHERE detailed = '15Min' GROUP BY *", epoch="s"
        )
        for (_measurement, tags), rows in result.items():
            assert tags["account_name"] == "Home"
            for row in rows:
                got[(tags["device_name"], row["time"])] = (row["amps"], row["volts"])
        # No usage at the 15-minute tag, no amps or volts under any usage tag.
        assert not list(client.query(
            "SELECT count(usage) FROM energy_usage WHERE detailed = '15Min'").get_points())
        assert not list(client.query(
            "SELECT count(amps) FROM energy_usage WHERE detailed <> '15Min'").get_points())
    else:
        with sqlite3.connect(tmp_path / "vue.sqlite") as db:
            rows = db.execute(
                "SELECT account_name, device_name, station_name, detailed, time, amps, volts "
                "FROM energy_amps_volts"
            ).fetchall()
            usage_tags = {t for (t,) in db.execute("SELECT DISTINCT detailed FROM energy_usage")}
        for account, channel, station, detailed, time, amps, volts in rows:
            assert (account, station, detailed) == ("Home", "", "15Min")
            got[(channel, time)] = (amps, volts)
        assert usage_tags == {"False", "Hour", "Day"}

    expected = expected_amps_volts(QUARTERS)
    assert len(expected) > 6 * 15  # every bucket, most channels
    assert set(got) == set(expected)
    for key, (amps, volts) in expected.items():
        assert got[key][0] == pytest.approx(amps, rel=1e-8, abs=1e-9), key
        assert got[key][1] == pytest.approx(volts, rel=1e-12), key
        assert 117.0 <= volts <= 123.0
    # Two requests per 15-minute bucket (AmpHours, Voltage), one attempt each.
    assert stats["requests"]["getDeviceListUsages"]["15MIN"] == 2 * len(QUARTERS)
    # The start-up budget line counts them: 192 a day for 15-minute buckets.
    budget = [r.getMessage() for r in caplog.records if "Emporia requests a day" in r.getMessage()]
    assert len(budget) == 1 and "amps_volts 192" in budget[0], budget
    assert not [r for r in caplog.records if "amps and volts" in r.getMessage()]


class Recording:
    """A sink that keeps every point written to it, in order."""

    name = "recording"

    def __init__(self) -> None:
        self.points: list[Point] = []

    def open(self) -> None:
        pass

    def write(self, points: Sequence[Point]) -> None:
        self.points.extend(points)

    def close(self) -> None:
        pass


def test_usage_written_is_byte_identical_with_amps_and_volts_on(tmp_path):
    """The same 40 minutes, with ampsVolts off and on: the usage points' line protocol is the
    same byte for byte, and the rest are amps and volts fields only."""
    lines = {}
    for amps_volts in (None, {"scale": "15MIN"}):
        clock = FakeClock(START, stop_after=START + timedelta(minutes=40))
        recording = Recording()
        with SimulatorServer(seed=SEED, now=clock.now) as sim:
            config = config_for(sim.url, tmp_path, amps_volts, {})
            run(config, sim, clock, [recording])
        usage = [p for p in recording.points if p.unit is Unit.WATTS]
        lines[amps_volts is not None] = encode_all(usage, TagConfig(), False)
        others = encode_all(
            [p for p in recording.points if p.unit is not Unit.WATTS], TagConfig(), False
        )
        assert bool(others) == (amps_volts is not None)
        assert all(" amps=" in line or " volts=" in line for line in others)
        assert all("detailed=15Min" in line for line in others)
    assert lines[False] and lines[True] == lines[False]


def test_a_simulated_day_costs_two_requests_a_bucket_more(tmp_path):
    """Requests the simulator saw over a quarter of a simulated day (the 360 ticks after the
    start-up one), with ampsVolts and without: 2 a 15-minute bucket, 48 in 6 hours, so
    192 a day. (A whole day costs a minute of CI for the same arithmetic.)"""
    scale, per_day = "15MIN", 48
    seen = {}
    for amps_volts in (None, {"scale": scale}):
        start = datetime(2026, 11, 24, 5, 0, 30, tzinfo=UTC)  # just after New York midnight
        clock = FakeClock(start, stop_after=start + timedelta(hours=6))
        with SimulatorServer(seed=SEED, now=clock.now) as sim:
            config = config_for(sim.url, tmp_path / str(amps_volts is not None), amps_volts, {})
            run(config, sim, clock, count_from_second_cycle=True)
            seen[amps_volts is not None] = sim.stats()
    assert seen[False]["requests"]["getDeviceListUsages"]["1MIN"] == 360
    without, with_ = seen[False], seen[True]
    assert with_["total"] - without["total"] == per_day
    assert with_["requests"]["getDeviceListUsages"][scale] - without["requests"][
        "getDeviceListUsages"
    ].get(scale, 0) == per_day
    assert {ep: n for ep, n in with_["requests"].items() if ep != "getDeviceListUsages"} == {
        ep: n for ep, n in without["requests"].items() if ep != "getDeviceListUsages"
    }


def test_a_refused_unit_is_said_once_and_usage_goes_on(tmp_path, caplog):
    """Emporia refuses AmpHours (HTTP 400) for the ticks of 20:15 and 20:30: those two
    buckets have neither amps nor volts, one line says so when it starts and one when it
    ends, and no cycle of usage fails."""
    refused = (
        datetime(2026, 11, 23, 20, 10, tzinfo=UTC),
        datetime(2026, 11, 23, 20, 35, tzinfo=UTC),
    )
    clock = FakeClock(START, stop_after=START + RUN)
    stats = Stats()
    with SimulatorServer(seed=SEED, now=clock.now) as sim:

        def switch(at: datetime) -> None:  # after each cycle: what the next one meets
            sim.refused_units = {"AmpHours"} if refused[0] <= at < refused[1] else set()

        config = config_for(sim.url, tmp_path, True, {"sqlitePath": str(tmp_path / "v.sqlite")})
        with caplog.at_level("INFO", logger="vuegraf"):
            run(config, sim, clock, stats=stats, on_cycle=switch)
        counts = sim.stats()["requests"]["getDeviceListUsages"]

    lost = {oracle.epoch(QUARTERS[2]), oracle.epoch(QUARTERS[3])}  # 20:00 and 20:15
    with sqlite3.connect(tmp_path / "v.sqlite") as db:
        times = {t for (t,) in db.execute("SELECT DISTINCT time FROM energy_amps_volts")}
        minutes = db.execute("SELECT COUNT(DISTINCT time) FROM energy_usage "
                             "WHERE detailed = 'False'").fetchone()[0]
    assert times == {oracle.epoch(b) for b in QUARTERS} - lost
    assert minutes == 66  # 19:58 to 21:03: every minute of usage
    assert stats.snapshot().failed_cycles == 0
    lines = [r for r in caplog.records if "amps and volts" in r.getMessage()]
    assert [(r.levelname, "not collected" in r.getMessage()) for r in lines] == [
        ("WARNING", True), ("INFO", False)
    ], [r.getMessage() for r in lines]
    assert "after 2 failed buckets" in lines[1].getMessage()
    assert counts["15MIN"] == 2 * len(QUARTERS) - len(lost)  # one attempt per bucket


def test_a_refused_voltage_keeps_the_amps_already_answered(tmp_path, caplog):
    """Emporia refuses Voltage (HTTP 400) for the ticks of 20:15 and 20:30, after AmpHours
    answered: those two buckets keep their amps (the request was paid for) without volts,
    the others have both, and the failure is said once and the recovery once."""
    refused = (
        datetime(2026, 11, 23, 20, 10, tzinfo=UTC),
        datetime(2026, 11, 23, 20, 35, tzinfo=UTC),
    )
    clock = FakeClock(START, stop_after=START + RUN)
    with SimulatorServer(seed=SEED, now=clock.now) as sim:

        def switch(at: datetime) -> None:  # after each cycle: what the next one meets
            sim.refused_units = {"Voltage"} if refused[0] <= at < refused[1] else set()

        config = config_for(sim.url, tmp_path, True, {"sqlitePath": str(tmp_path / "v.sqlite")})
        with caplog.at_level("INFO", logger="vuegraf"):
            run(config, sim, clock, on_cycle=switch)
        counts = sim.stats()["requests"]["getDeviceListUsages"]

    no_volts = {oracle.epoch(QUARTERS[2]), oracle.epoch(QUARTERS[3])}  # 20:00 and 20:15
    with sqlite3.connect(tmp_path / "v.sqlite") as db:
        rows = db.execute(
            "SELECT device_name, time, amps, volts FROM energy_amps_volts"
        ).fetchall()
    got = {(channel, t): (amps, volts) for channel, t, amps, volts in rows}
    expected = expected_amps_volts(QUARTERS)
    assert set(got) == set(expected)
    for key, (amps, volts) in expected.items():
        assert got[key][0] == pytest.approx(amps, rel=1e-8, abs=1e-9), key
        if key[1] in no_volts:
            assert got[key][1] is None, key
        else:
            assert got[key][1] == pytest.approx(volts, rel=1e-12), key
    lines = [r for r in caplog.records if "amps and volts" in r.getMessage()]
    assert [(r.levelname, "not collected" in r.getMessage()) for r in lines] == [
        ("WARNING", True), ("INFO", False)
    ], [r.getMessage() for r in lines]
    assert counts["15MIN"] == 2 * len(QUARTERS)  # both asked every bucket, once


def test_home_assistant_gets_current_and_voltage_and_the_upstream_topic_none(mosquitto, tmp_path):
    """Through a real broker: the mains of Main Panel get current and voltage sensors whose
    state holds the newest 15-minute bucket's values; the upstream JSON topic carries minute
    usage only."""
    base = f"av-{uuid.uuid4().hex[:10]}"
    mqtt = {
        "host": "127.0.0.1", "port": mosquitto.port, "topic": f"{base}/energy",
        "topicPrefix": f"{base}/vuegraf",
        "homeAssistant": {"discoveryPrefix": f"{base}/ha", "statusTopic": f"{base}/ha/status"},
    }
    clock = FakeClock(START, stop_after=START + timedelta(minutes=20))
    upstream = Subscriber(mosquitto.port, f"{base}/energy")
    try:
        with SimulatorServer(seed=SEED, now=clock.now) as sim:
            config = config_for(sim.url, tmp_path, True,
                                {"sqlitePath": str(tmp_path / "v.sqlite"), "mqtt": mqtt})
            accounts = [EmporiaAccount(a, config, clock) for a in config.accounts]
            sinks = build_sinks(
                config, clock=clock, ledger=EnergyLedger(None, clock),
                directory=lambda: [(a.name, a.catalog.devices) for a in accounts],
            )
            Daemon(config, accounts, sinks, clock, backfill=False).run()
        config_topic = f"{base}/ha/sensor/vuegraf_1001/1_2_3_current/config"
        current = retained(mosquitto.port, config_topic).json()
        voltage = retained(mosquitto.port, config_topic.replace("current", "voltage")).json()
        state = retained(mosquitto.port, f"{base}/vuegraf/homeassistant/1001/1_2_3").json()
        # The last minute collected: 20:18, at the tick of 20:19:05. One publisher, one topic,
        # QoS 1: once its messages are in, every earlier one is too.
        last = oracle.epoch(datetime(2026, 11, 23, 20, 18, tzinfo=UTC))
        last_channels = len(oracle.served(
            oracle.DEFAULT_NAMES, sim.model, "1MIN", datetime.fromtimestamp(last, UTC),
            datetime.fromtimestamp(last + 60, UTC), oracle.NEW_YORK, live_only_too=True))
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60.0
        while len([m for m in messages if m["epoch_s"] == last]) < last_channels:
            remaining = deadline - time.monotonic()
            try:
                messages.append(upstream.inbox.get(timeout=max(0.01, remaining)).json())
            except queue.Empty:
                raise AssertionError(f"the minute {last} not all received: {messages}") from None
    finally:
        upstream.close()
    assert (current["device_class"], current["unit_of_measurement"]) == ("current", "A")
    assert (voltage["device_class"], voltage["unit_of_measurement"]) == ("voltage", "V")
    assert current["state_topic"] == f"{base}/vuegraf/homeassistant/1001/1_2_3"
    newest = QUARTERS[2]  # 20:00, collected at 20:15:05, the last tick before 20:19:47
    (amps, volts) = expected_amps_volts([newest])[("Main Panel", oracle.epoch(newest))]
    assert state["current"] == round(amps, 3) and state["voltage"] == round(volts, 2)
    assert last_channels > 20 and max(m["epoch_s"] for m in messages) == last
    assert all(m["detailed"] == "False" and "usage_watts" in m for m in messages)
