"""A new user's first start, through the real `vuegraf.cli.main` (in this process, in virtual
time, against the simulator sharing that time), read as the user reads it: the log.

- Against an InfluxDB 1.x whose database does not exist yet: vuegraf creates it before the
  first read back, no line is a WARNING or an ERROR, and the 7-day fill of the empty store says
  how far it has got, once a cycle: requests done of those needed, points, time left.
- `-v` does not list the fill's chart requests one by one (there are 60 a cycle); `-d` does.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.cli_in_process import main_state_restored
from harness.completeness import compare, expected_points, stored_points
from harness.inprocess import LockedClock
from vuegraf import cli
from vuegraf.config import load_config
from vuegraf.model import Scale
from vuegraf.simulator import SimulatorServer

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 15, 0, 20, tzinfo=UTC)
DATABASE = "first_start_db"  # not created by the test: vuegraf must
# A start on an empty store asks Emporia for each chart series' last 7 days of minutes
# (less the 10 minutes kept clear of the retention edge: 10 070 minutes), 720 minutes a
# request: 14 requests; hours and days: one request each. 60 chart requests a cycle.
REQUESTS_PER_SERIES = 14 + 1 + 1
PER_CYCLE = 60


def write_config(tmp_path: Path, sim: SimulatorServer, influx: dict[str, object] | None) -> Path:
    settings: dict[str, object] = {
        "accounts": [{"name": "Home", "email": "me@example.com", "password": "pw",
                      "simulatorUrl": sim.url}],
        "stateDir": "state",
        "timezone": "America/New_York",
    }
    if influx is not None:
        settings["influxDb"] = influx
    path = tmp_path / "vuegraf.json"
    path.write_text(json.dumps(settings))
    path.chmod(0o600)  # else a WARNING about a readable file with passwords, rightly
    return path


def log_lines(err: str, level: str | None = None) -> list[tuple[str, str, str]]:
    """(level, logger, message) of vuegraf's log lines, all or at `level`."""
    lines = []
    for line in err.splitlines():
        parts = line.split(" | ", 3)
        if len(parts) == 4 and (level is None or parts[1].strip() == level):
            lines.append((parts[1].strip(), parts[2], parts[3]))
    return lines


PROGRESS = re.compile(
    r"^Account Home: filling holes: (\d+) of (\d+) chart requests done \((\d+)%\), (\d+) points "
    r"so far, about (.+) left$"
)
DONE = re.compile(r"^Account Home: holes filled: (\d+) chart requests, (\d+) points in (.+)$")


def test_first_start_creates_the_database_and_shows_the_fills_progress(
    tmp_path, capsys, influxdb_v1
):
    client = influxdb_v1.client()
    assert DATABASE not in {d["name"] for d in client.get_list_database()}
    clocks: list[LockedClock] = []

    def one_run() -> LockedClock:
        clocks.append(LockedClock(T0, T0 + timedelta(minutes=12)))
        return clocks[-1]

    with SimulatorServer(seed=23, now=lambda: clocks[-1].now() if clocks else T0) as sim:
        config = write_config(tmp_path, sim, {
            "version": 1, "host": influxdb_v1.host, "port": influxdb_v1.ports[0],
            "database": DATABASE, "user": "", "pass": "",
        })
        chart_series = len([c for c in sim.model.channels() if c[4]])
        with main_state_restored():
            code = cli.main([str(config), "-v"], clock_factory=one_run)
        end = clocks[-1].now()
        model = sim.model
    err = capsys.readouterr().err

    assert code == 0
    # A first start is normal: nothing to warn about, nothing failed.
    troubles = log_lines(err, "WARNING") + log_lines(err, "ERROR")
    assert troubles == [], troubles
    assert DATABASE in {d["name"] for d in client.get_list_database()}
    messages = [m for _level, _logger, m in log_lines(err)]
    created = [m for m in messages if m == f"InfluxDB: created database {DATABASE}"]
    assert len(created) == 1, messages
    # Created before the store was first read back, so the read found a database.
    first_read = next(i for i, m in enumerate(messages) if "data stored for" in m)
    assert messages.index(created[0]) < first_read

    # Progress: one line a cycle while the fill lasts, then one line when it is done.
    needed = chart_series * REQUESTS_PER_SERIES
    cycles = [m for m in messages if m.startswith("Cycle at ")]
    progress = [PROGRESS.match(m) for m in messages if m.startswith("Account Home: filling")]
    assert all(progress), [m for m in messages if "filling" in m]
    steps = [(int(p[1]), int(p[2]), int(p[3]), int(p[4]), p[5]) for p in progress if p]
    full_cycles = needed // PER_CYCLE  # cycles that leave something for the next
    assert [s[0] for s in steps] == [PER_CYCLE * (i + 1) for i in range(full_cycles)]
    assert {s[1] for s in steps} == {needed}
    assert [s[2] for s in steps] == [100 * PER_CYCLE * (i + 1) // needed
                                    for i in range(full_cycles)]
    points = [s[3] for s in steps]
    assert points == sorted(points) and points[0] > 0
    # The time left at 60 requests a cycle, a cycle a minute.
    assert [s[4] for s in steps] == [
        f"{-(-(needed - PER_CYCLE * (i + 1)) // PER_CYCLE)} min" for i in range(full_cycles)
    ]
    done = [DONE.match(m) for m in messages if m.startswith("Account Home: holes filled")]
    assert len(done) == 1 and done[0] is not None, messages
    assert int(done[0][1]) == needed and int(done[0][2]) > points[-1]
    assert len(progress) + 1 <= len(cycles)
    # -v shows more, but not the fill's chart requests one by one.
    # (The simulator runs in this process: its request log is not vuegraf's.)
    debug = [line for line in log_lines(err, "DEBUG") if "simulator" not in line[1]]
    assert not [m for _lv, lg, m in debug if "collector.requests" in lg], debug[:3]
    assert len(debug) < 40, [m for _lv, _lg, m in debug]

    # And the fill is right: the last 6 hours of minutes are all stored, with the model's values.
    cfg = load_config(config)
    until = end.replace(second=0) - timedelta(minutes=1)
    since = until - timedelta(hours=6)
    want = expected_points(cfg, model, Scale.MINUTE, since, until)
    stored = stored_points(influxdb_v1.client(DATABASE), "Home", "False", since, until)
    result = compare("minutes", stored, want)
    assert result.ok, str(result)
    client.drop_database(DATABASE)


@pytest.mark.parametrize("flag, listed", [("-v", False), ("-d", True)])
def test_fill_requests_are_listed_with_d_only(tmp_path, capsys, flag, listed):
    clocks: list[LockedClock] = []

    def one_run() -> LockedClock:
        clocks.append(LockedClock(T0, T0 + timedelta(minutes=2)))
        return clocks[-1]

    with SimulatorServer(seed=29, now=lambda: clocks[-1].now() if clocks else T0) as sim:
        config = write_config(tmp_path, sim, None)  # the embedded SQLite store
        with main_state_restored():
            code = cli.main([str(config), flag], clock_factory=one_run)
    err = capsys.readouterr().err

    assert code == 0
    requests = [m for _lv, lg, m in log_lines(err, "DEBUG") if lg.strip().endswith("requests")]
    if listed:
        assert len(requests) >= PER_CYCLE, requests[:3]
        assert all(re.match(r"^Account Home: filled 1(MIN|H|D) of device \d+ channel ", m)
                   for m in requests), requests[:3]
    else:
        assert requests == []
    # Either way the progress line is there, at INFO.
    assert [m for m in log_lines(err, "INFO") if PROGRESS.match(m[2])]
