"""`vuegraf --historydays 30` killed with SIGKILL half-way and run again ends with exactly the
hour and day points the simulator serves: nothing missing, nothing doubled.

The real command in a subprocess, real pyemvue to the simulator (with latency, so the kill
lands mid-import), real InfluxDB 1.x.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from vuegraf.config import parse_config
from vuegraf.model import Scale
from vuegraf.naming import channel_name
from vuegraf.schedule import next_bucket, point_time
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


def test_history_killed_half_way_then_rerun_is_complete(influxdb_v1_db, tmp_path):
    server, database = influxdb_v1_db
    client = server.client(database)
    with SimulatorServer(seed=5, latency_s=0.03) as sim:
        data = {
            "influxDb": {"host": server.host, "port": server.port, "database": database},
            "accounts": [{"name": "Home", "email": "e", "password": "p", "simulatorUrl": sim.url}],
            "timezone": ZONE,
            "historyRequestsPerSecond": 20,
        }
        cfg = tmp_path / "vuegraf.json"
        cfg.write_text(json.dumps(data))
        cfg.chmod(0o600)
        cmd = [sys.executable, "-m", "vuegraf", str(cfg), "--historydays", "30"]

        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while count_points(client) < 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        partial = hour_day_points(client)

        second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
        assert second.stderr is not None
        log = []
        deadline = time.monotonic() + 120
        for line in second.stderr:
            log.append(line)
            if "History of 30 days" in line or time.monotonic() > deadline:
                break
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=20)
        ended = datetime.now(UTC)
    assert any("History of 30 days done" in line for line in log), "".join(log[-20:])
    got = hour_day_points(client)

    # What the simulator serves for every chart channel over the imported span.
    config = parse_config(data, cfg, environ={})
    zone = ZoneInfo(ZONE)
    model = UsageModel(Scenario.default(), seed=5)
    account = config.accounts[0]
    want = {}
    last_hour = ended.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    for gid, num, dev, ename, has_chart in model.channels():
        if not has_chart:
            continue
        name = channel_name(account, dev, num, ename)
        t = last_hour - timedelta(days=29)
        while t <= last_hour:
            kwh = model.kwh(gid, num, "1H", t)
            if kwh is not None:
                want[(name, "Hour", int(t.timestamp()))] = kwh * 1000
            t += timedelta(hours=1)
        day = datetime.combine((ended - timedelta(days=28)).astimezone(zone).date(),
                               datetime.min.time(), tzinfo=zone).astimezone(UTC)
        for _ in range(25):
            kwh = model.kwh(gid, num, "1D", day)
            if kwh is not None:
                want[(name, "Day", int(point_time(Scale.DAY, day, zone).timestamp()))] = kwh * 1000
            day = next_bucket(Scale.DAY, day, zone)
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
