"""Amps and volts (an account's `ampsVolts`): the config key, the line protocol, the SQLite
table, the retry queue and the Prometheus gauges (the request estimate: tests/test_schedule.py).

Expected values are literals or arithmetic written here; the end-to-end checks against the
simulator are in tests/integration/test_amps_volts_collect.py.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vuegraf.clock import FakeClock
from vuegraf.config import (
    AmpsVoltsConfig,
    ConfigError,
    PrometheusConfig,
    TagConfig,
    parse_config,
)
from vuegraf.energy import EnergyLedger
from vuegraf.exporter import ExporterServer, LatestValues, PrometheusSink, VuegrafCollector
from vuegraf.model import Point, Scale, Unit
from vuegraf.sinks.lineproto import encode
from vuegraf.sinks.mqtt import latest_minute_points
from vuegraf.sinks.queue import DurableQueue
from vuegraf.sinks.sqlite import SqliteSink

T = datetime(2026, 11, 30, 21, 45, tzinfo=UTC)  # a quarter-hour bucket start: 1796075100


def account(**extra: Any) -> dict[str, Any]:
    return {"name": "Home", "email": "me@example.com", "password": "pw", **extra}


def parse(**extra: Any) -> Any:
    return parse_config({"accounts": [account(**extra)]}, Path("/tmp/vuegraf.json"), environ={})


def point(unit: Unit, value: float, scale: Scale = Scale.QUARTER, channel: str = "Oven",
          time: datetime = T) -> Point:
    return Point("Home", "Main Panel", channel, scale, time, value, 1001, "1", unit=unit)


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (None, None),
        (False, None),
        (True, AmpsVoltsConfig(Scale.QUARTER)),
        ({}, AmpsVoltsConfig(Scale.QUARTER)),
        ({"scale": "15MIN"}, AmpsVoltsConfig(Scale.QUARTER)),
        ({"scale": "1H"}, AmpsVoltsConfig(Scale.HOUR)),
        ({"scale": "1h"}, AmpsVoltsConfig(Scale.HOUR)),
    ],
)
def test_amps_volts_config(written: object, expected: AmpsVoltsConfig | None) -> None:
    extra = {} if written is None else {"ampsVolts": written}
    assert parse(**extra).accounts[0].amps_volts == expected


@pytest.mark.parametrize(
    ("written", "key_path", "words"),
    [
        ({"scale": "1MIN"}, "accounts[0].ampsVolts.scale", "2880 requests a day"),
        ({"scale": "5MIN"}, "accounts[0].ampsVolts.scale", "must be one of 15MIN, 1H"),
        ({"scale": 15}, "accounts[0].ampsVolts.scale", "non-empty string"),
        ({"scael": "1H"}, "accounts[0].ampsVolts.scael", 'did you mean "scale"'),
        ("yes", "accounts[0].ampsVolts", "true, false or an object"),
    ],
)
def test_a_bad_amps_volts_key_is_named(written: object, key_path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(ampsVolts=written)
    assert caught.value.key_path == key_path
    assert words in caught.value.message


def test_the_cli_refuses_one_minute_amps_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "vuegraf.json"
    path.write_text('{"accounts": [{"name": "Home", "email": "e", "password": "s3cret-pw", '
                    '"ampsVolts": {"scale": "1MIN"}}]}')
    path.chmod(0o600)
    result = subprocess.run([sys.executable, "-m", "vuegraf", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "accounts[0].ampsVolts.scale: must be one of 15MIN, 1H (1MIN would cost 2880 requests "
        "a day, over Emporia's daily budget)"
    ]


def test_the_quarter_hour_tag_value_is_configurable_and_distinct() -> None:
    assert TagConfig().value(Scale.QUARTER) == "15Min"
    data: dict[str, Any] = {"accounts": [account()],
                            "influxDb": {"host": "h", "database": "d", "tagValue_15min": "Q"}}
    assert parse_config(data, Path("/tmp/v.json"), environ={}).tags.value(Scale.QUARTER) == "Q"
    data["influxDb"]["tagValue_15min"] = "Hour"
    with pytest.raises(ConfigError, match=r"^influxDb.tagValue_15min: must differ from"):
        parse_config(data, Path("/tmp/v.json"), environ={})


# --- what is written ------------------------------------------------------------------------


def test_line_protocol_usage_unchanged_amps_and_volts_fields_of_their_own() -> None:
    tags = TagConfig()
    usage = Point("Home", "Main Panel", "Oven", Scale.MINUTE, T, 1234.5)
    # The line upstream vuegraf and every earlier version wrote, byte for byte.
    assert encode(usage, tags, False) == (
        "energy_usage,account_name=Home,detailed=False,device_name=Oven usage=1234.5 1796075100"
    )
    assert encode(point(Unit.AMPS, 10.25), tags, False) == (
        "energy_usage,account_name=Home,detailed=15Min,device_name=Oven amps=10.25 1796075100"
    )
    assert encode(point(Unit.VOLTS, 120.5, Scale.HOUR), tags, True) == (
        "energy_usage,account_name=Home,detailed=Hour,device_name=Oven,"
        "station_name=Main\\ Panel volts=120.5 1796075100"
    )


def test_sqlite_keeps_amps_and_volts_apart_from_usage(tmp_path: Path) -> None:
    sink = SqliteSink(tmp_path / "v.sqlite", TagConfig(), False)
    sink.open()
    hour = T.replace(minute=0)
    sink.write([
        Point("Home", "Main Panel", "Oven", Scale.HOUR, hour, 900.0),
        point(Unit.AMPS, 7.5, Scale.HOUR, time=hour),
        point(Unit.AMPS, 8.0),
        point(Unit.VOLTS, 119.5),
    ])
    sink.write([point(Unit.VOLTS, 121.0, Scale.HOUR, time=hour)])  # joins the hour's amps
    sink.write([point(Unit.AMPS, 8.5)])  # a rewrite replaces the amps, keeps the volts
    with sqlite3.connect(tmp_path / "v.sqlite") as db:
        usage = db.execute("SELECT device_name, detailed, time, usage FROM energy_usage").fetchall()
        electrical = db.execute(
            "SELECT device_name, detailed, time, amps, volts FROM energy_amps_volts ORDER BY time"
        ).fetchall()
    assert usage == [("Oven", "Hour", int(hour.timestamp()), 900.0)]
    assert electrical == [
        ("Oven", "Hour", int(hour.timestamp()), 7.5, 121.0),
        ("Oven", "15Min", int(T.timestamp()), 8.5, 119.5),
    ]
    # The read back that backfill relies on sees the usage hour only.
    last = sink.last_times("Home", Scale.HOUR, hour - timedelta(days=1), hour + timedelta(days=1))
    assert last == {("", "Oven"): hour}
    assert sink.last_times("Home", Scale.QUARTER, T - timedelta(days=1), T + timedelta(1)) == {}
    assert sink.delete_all(T) == 3
    sink.close()


def test_the_retry_queue_keeps_the_unit(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q.sqlite", max_points=10)
    queue.open()
    points = [
        Point("Home", "Main Panel", "Oven", Scale.HOUR, T, 900.0),
        point(Unit.AMPS, 7.5, Scale.HOUR),
        point(Unit.VOLTS, 121.0, Scale.HOUR),
    ]
    queue.push(points)
    assert [(p.unit, p.watts) for p in queue.peek().points] == [
        (Unit.WATTS, 900.0), (Unit.AMPS, 7.5), (Unit.VOLTS, 121.0)
    ]
    queue.close()


def test_a_queue_file_of_schema_1_is_read_as_usage(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    with sqlite3.connect(path) as db:  # what vuegraf before amps and volts left behind
        db.executescript(
            "CREATE TABLE series (id INTEGER PRIMARY KEY, account TEXT NOT NULL, device TEXT "
            "NOT NULL, channel TEXT NOT NULL, scale TEXT NOT NULL, UNIQUE (account, device, "
            "channel, scale));"
            "CREATE TABLE points (id INTEGER PRIMARY KEY, series INTEGER NOT NULL REFERENCES "
            "series (id), time_us INTEGER NOT NULL, watts REAL NOT NULL);"
            "INSERT INTO series VALUES (1, 'Home', 'Main Panel', 'Oven', '1MIN');"
            f"INSERT INTO points VALUES (1, 1, {int(T.timestamp()) * 1_000_000}, 250.0);"
            "PRAGMA user_version=1;"
        )
    queue = DurableQueue(path, max_points=10)
    queue.open()
    queue.push([point(Unit.AMPS, 3.0)])
    assert queue.peek().points == [
        Point("Home", "Main Panel", "Oven", Scale.MINUTE, T, 250.0),
        point(Unit.AMPS, 3.0),
    ]
    queue.close()


def test_prometheus_gauges_hold_the_newest_amps_and_volts() -> None:
    clock = FakeClock(T + timedelta(minutes=15, seconds=5))
    latest = LatestValues(clock)
    sink = PrometheusSink(latest)
    sink.write([point(Unit.AMPS, 8.0, time=T - timedelta(minutes=15)), point(Unit.VOLTS, 119.0)])
    sink.write([point(Unit.AMPS, 9.5), point(Unit.AMPS, 1.5, channel="Fridge")])
    server = exporter_for(latest)
    samples = {
        (s.name, s.labels["channel"]): s.value
        for family in text_string_to_metric_families(server.metrics_text().decode())
        for s in family.samples
        if s.name in ("vuegraf_current_amps", "vuegraf_voltage_volts")
    }
    assert samples == {
        ("vuegraf_current_amps", "Oven"): 9.5,
        ("vuegraf_current_amps", "Fridge"): 1.5,
        ("vuegraf_voltage_volts", "Oven"): 119.0,
    }
    # Kept for two buckets (30 min) after the last write, then dropped.
    clock.advance(29 * 60)
    assert len(latest.electrical(Unit.AMPS)) == 2
    clock.advance(60)
    assert latest.electrical(Unit.AMPS) == []
    assert latest.snapshot() == []  # no usage channel came from them


def exporter_for(latest: LatestValues) -> ExporterServer:
    return ExporterServer(PrometheusConfig(port=0), VuegrafCollector(latest),
                          health=lambda: True, runtime_metrics=False)


def test_what_sums_usage_ignores_amps_and_volts(tmp_path: Path) -> None:
    minute_amps = point(Unit.AMPS, 5.0, Scale.MINUTE)
    usage = Point("Home", "Main Panel", "Oven", Scale.MINUTE, T, 600.0, 1001, "1")
    assert latest_minute_points([usage, minute_amps]) == [usage]
    ledger = EnergyLedger(None, FakeClock(T + timedelta(minutes=2)))
    assert ledger.add([minute_amps]) == set()
