"""`vuegraf --historydays 30` killed with SIGKILL half-way and run again ends with exactly the
hour and day points the simulator serves: nothing missing, nothing doubled.

The real command in a subprocess, real pyemvue to the simulator (with latency, so the kill
lands mid-import), real InfluxDB 1.x.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from harness.completeness import expected_points
from vuegraf.config import parse_config
from vuegraf.model import Scale
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel

pytestmark = pytest.mark.integration

ZONE = "America/New_York"


def hour_day_points(client):
    result = client.query(
        "SELECT usage FROM energy_usage WHERE detailed = 'Hour' OR detailed = 'Day' "
        "GROUP BY device_name, detailed",
        epoch="s",
    )
    got = {}
    for (_m, tags), rows in result.items():
        for row in rows:
            got[(tags["device_name"], tags["detailed"], row["time"])] = row["usage"]
    return got


def count_points(client):
    rows = list(client.query("SELECT count(usage) FROM energy_usage").get_points())
    return rows[0]["count"] if rows else 0


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def test_history_killed_half_way_then_rerun_is_complete(influxdb_v1_db, tmp_path, test_time):
    server, database = influxdb_v1_db
    client = server.client(database)
    with SimulatorServer(seed=5, latency_s=0.03, now=test_time.now) as sim:
        data = {
            "influxDb": {"host": server.host, "port": server.port, "database": database},
            "accounts": [{"name": "Home", "email": "e", "password": "p", "simulatorUrl": sim.url}],
            "timezone": ZONE,
            # 84 hour and day windows at 20 a second: the import takes seconds, whatever the
            # machine, and the kill below lands after a few of them.
            "historyRequestsPerSecond": 20,
        }
        cfg = tmp_path / "vuegraf.json"
        cfg.write_text(json.dumps(data))
        cfg.chmod(0o600)
        cmd = test_time.vuegraf(str(cfg), "--historydays", "30")

        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: count_points(client) >= 3000, 120, "3000 points from the import")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        partial = hour_day_points(client)

        log = tmp_path / "second.log"
        with log.open("w") as err:
            second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(lambda: "History of 30 days" in log.read_text() or second.poll() is not None,
                     300, "the end of the second import")
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        ended = test_time.now()
    text = log.read_text()
    assert "History of 30 days done" in text, text[-3000:]
    got = hour_day_points(client)

    # What the simulator serves for every chart channel over the imported span: hours up to
    # two before the end, days from 28 days back (whole local days) for 25 days.
    config = parse_config(data, cfg, environ={})
    model = UsageModel(Scenario.default(), seed=5)
    zone = ZoneInfo(ZONE)
    want = {}
    last_hour = ended.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    hours = expected_points(
        config, model, Scale.HOUR, last_hour - timedelta(days=29), last_hour + timedelta(hours=1)
    )
    want.update({(name, "Hour", t): watts for (name, t), watts in hours.items()})
    first_day = (ended - timedelta(days=28)).astimezone(zone).date()
    since = datetime(first_day.year, first_day.month, first_day.day, tzinfo=zone)
    days = expected_points(config, model, Scale.DAY, since, since + timedelta(days=25))
    want.update({(name, "Day", t): watts for (name, t), watts in days.items()})
    assert 0 < len(partial) < len(want), (len(partial), len(want))  # the kill was mid-import
    missing = set(want) - set(got)
    assert not missing, f"{len(missing)} of {len(want)} missing, e.g. {sorted(missing)[:3]}"
    for key, watts in want.items():
        assert got[key] == pytest.approx(watts, rel=1e-9, abs=1e-9), key
    # InfluxDB cannot hold a point twice per series and time; the store must not have grown
    # a second series either (same tags on both runs).
    assert {k[:2] for k in got} == {k[:2] for k in want} | {
        k[:2] for k in got if k[0].endswith(("Balance", "MainsFromGrid", "MainsToGrid"))
    }
