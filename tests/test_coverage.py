"""`vuegraf coverage`: the share of buckets stored and the verdict on every hole.

The verdict logic is tried on literal holes at a fixed `now`; the whole command on a store
with planted holes (SQLite here; real InfluxDB 1.x and VictoriaMetrics marked integration),
run in process with a fixed clock. Expected holes are the planted literals, and the share
is checked against a count of the store made here, not through vuegraf's reads.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from harness.cli_in_process import main_state_restored
from harness.completeness import seed_store
from vuegraf.backfill import Holes
from vuegraf.cli import main
from vuegraf.clock import FakeClock
from vuegraf.computed import ComputedHoles
from vuegraf.config import load_config
from vuegraf.coverage import Hole, SeriesFacts, Verdict, daemon_running, judge
from vuegraf.history import history_start
from vuegraf.marks import MarksFile
from vuegraf.model import Point, Scale
from vuegraf.sinks.factory import build_store

UTC_ZONE = ZoneInfo("UTC")
NY = ZoneInfo("America/New_York")  # UTC-5 all through the window (DST ended 2026-11-01)
NOW = datetime(2026, 11, 30, 17, 2, tzinfo=UTC)
# Emporia keeps minutes 7 days: from 2026-11-23 17:02; a computed channel's usage at an
# instant is asked for no further back than 10 minutes inside that: from 17:12.


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def hole(first: datetime, last: datetime, buckets: int, verdict: Verdict, why: str,
         days: int | None = None) -> Hole:
    return Hole(first, last, buckets, verdict, why, days)


GONE = "Emporia no longer keeps it"
LATER = "filled at the next start"
NOW_FILLING = "filling now"
TOO_OLD = "too near Emporia's edge for --historydays, and vuegraf does not know of it"
OUT_OF_REACH = "too near Emporia's edge for vuegraf to ask for it"


# -- the verdicts, on literal holes ---------------------------------------------------------


def test_a_chart_minute_hole_is_import_only_from_where_an_import_starts() -> None:
    """`--historydays` never asks for minutes older than KEPT less its margin: a hole between
    Emporia's edge and there is lost unless a mark covers it (and the daemon still reaches it:
    its trackers stop RETENTION back, 10 minutes inside KEPT)."""
    facts = SeriesFacts(computed=False, newest=at(30, 16, 59))
    import_from = history_start(Scale.MINUTE, 7, NOW, 5, UTC_ZONE)
    assert import_from == at(23, 18, 2)  # independent arithmetic: NOW - 7 d + 1 h
    got = judge(Scale.MINUTE, at(23, 16, 0), at(23, 18, 10), facts, NOW, False, UTC_ZONE)
    assert got == [
        hole(at(23, 16, 0), at(23, 17, 1), 62, Verdict.LOST, GONE),
        hole(at(23, 17, 2), at(23, 18, 1), 60, Verdict.LOST, TOO_OLD),
        hole(at(23, 18, 2), at(23, 18, 10), 9, Verdict.IMPORT,
             "vuegraf --historydays 7 brings it", 7),
    ]
    marks = Holes(((at(23, 17, 0), at(23, 18, 0)),), open_from=at(30, 17, 0))
    marked = SeriesFacts(computed=False, newest=at(30, 16, 59), marks=marks)
    got = judge(Scale.MINUTE, at(23, 16, 0), at(23, 18, 10), marked, NOW, False, UTC_ZONE)
    assert got == [
        hole(at(23, 16, 0), at(23, 17, 1), 62, Verdict.LOST, GONE),
        hole(at(23, 17, 2), at(23, 17, 11), 10, Verdict.LOST, OUT_OF_REACH),
        hole(at(23, 17, 12), at(23, 17, 59), 48, Verdict.FILLING, LATER),
        hole(at(23, 18, 0), at(23, 18, 1), 2, Verdict.LOST, TOO_OLD),
        hole(at(23, 18, 2), at(23, 18, 10), 9, Verdict.IMPORT,
             "vuegraf --historydays 7 brings it", 7),
    ]


def test_computed_hours_and_days_are_asked_for_from_the_partial_edge_bucket() -> None:
    """The daemon asks for a computed series' buckets from `ComputedHoles.floor`, which for
    hours and days is the bucket holding NOW - INSTANT_RETENTION (23rd 17:12): that bucket is
    filling, the one before it lost."""
    facts = SeriesFacts(computed=True, newest=at(23, 15),
                        marks=Holes((), open_from=at(23, 16)))
    assert ComputedHoles([Scale.HOUR], UTC_ZONE).floor(Scale.HOUR, NOW) == at(23, 17)
    assert judge(Scale.HOUR, at(23, 16), at(23, 18), facts, NOW, False, UTC_ZONE) == [
        hole(at(23, 16), at(23, 16), 1, Verdict.LOST, GONE),
        hole(at(23, 17), at(23, 18), 2, Verdict.FILLING, LATER),
    ]
    days = SeriesFacts(computed=True, newest=at(22, 5), marks=Holes((), open_from=at(23, 5)))
    floor = ComputedHoles([Scale.DAY], NY).floor(Scale.DAY, NOW)
    assert floor == at(23, 5)  # New York midnight of the 23rd
    assert judge(Scale.DAY, at(23, 5), at(24, 5), days, NOW, False, NY) == [
        hole(at(23, 5), at(24, 5), 2, Verdict.FILLING, LATER),
    ]


def test_marks_make_a_hole_filling_and_the_rest_of_it_stays_an_import() -> None:
    marks = Holes(((at(28, 8, 5), at(28, 8, 10)),), open_from=at(30, 17, 0))
    facts = SeriesFacts(computed=False, newest=at(30, 16, 59), marks=marks)
    got = judge(Scale.MINUTE, at(28, 8, 0), at(28, 8, 9), facts, NOW, False, UTC_ZONE)
    assert got == [
        hole(at(28, 8, 0), at(28, 8, 4), 5, Verdict.IMPORT, "vuegraf --historydays 3 brings it", 3),
        hole(at(28, 8, 5), at(28, 8, 9), 5, Verdict.FILLING, LATER),
    ]
    running = judge(Scale.MINUTE, at(28, 8, 5), at(28, 8, 9), facts, NOW, True, UTC_ZONE)
    assert running == [hole(at(28, 8, 5), at(28, 8, 9), 5, Verdict.FILLING, NOW_FILLING)]


def test_a_hole_after_the_newest_point_is_filling_with_or_without_marks() -> None:
    facts = SeriesFacts(computed=False, newest=at(30, 16, 50))
    got = judge(Scale.MINUTE, at(30, 16, 45), at(30, 16, 59), facts, NOW, False, UTC_ZONE)
    assert got == [
        hole(at(30, 16, 45), at(30, 16, 50), 6, Verdict.IMPORT,
             "vuegraf --historydays 1 brings it", 1),
        hole(at(30, 16, 51), at(30, 16, 59), 9, Verdict.FILLING, LATER),
    ]
    nothing = SeriesFacts(computed=False, newest=None)
    assert judge(Scale.HOUR, at(1, 0), at(30, 16), nothing, NOW, True, UTC_ZONE) == [
        hole(at(1, 0), at(30, 16), 29 * 24 + 17, Verdict.FILLING, NOW_FILLING)
    ]


def test_a_running_daemon_with_marks_fills_only_what_they_name() -> None:
    """The daemon runs and has saved marks: it fills what they name, not whatever follows
    the newest point (a plug it gave up on is not "filling now" for ever)."""
    marks = Holes(((at(30, 16, 40), at(30, 16, 45)),), open_from=at(30, 16, 58))
    facts = SeriesFacts(computed=False, newest=at(30, 16, 30), marks=marks, marks_only=True)
    got = judge(Scale.MINUTE, at(30, 16, 31), at(30, 16, 59), facts, NOW, True, UTC_ZONE)
    assert got == [
        hole(at(30, 16, 31), at(30, 16, 39), 9, Verdict.IMPORT,
             "vuegraf --historydays 1 brings it", 1),
        hole(at(30, 16, 40), at(30, 16, 44), 5, Verdict.FILLING, NOW_FILLING),
        hole(at(30, 16, 45), at(30, 16, 57), 13, Verdict.IMPORT,
             "vuegraf --historydays 1 brings it", 1),
        hole(at(30, 16, 58), at(30, 16, 59), 2, Verdict.FILLING, NOW_FILLING),
    ]
    computed = SeriesFacts(computed=True, newest=at(30, 16, 30), marks=None, marks_only=True)
    assert judge(Scale.MINUTE, at(30, 16, 31), at(30, 16, 59), computed, NOW, True,
                 UTC_ZONE) == [
        hole(at(30, 16, 31), at(30, 16, 59), 29, Verdict.LOST,
             "unknown to vuegraf, and a channel without chart history"),
    ]


@pytest.mark.parametrize("planted", ["sqlite"], indirect=True)  # not the store's part
def test_a_running_daemon_s_marks_override_the_newest_point(
    planted: Planted, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: Balance's minutes 16:57-16:59 follow its newest point, but the marks the
    running daemon saved open at 17:00: it will not ask for them."""
    state = planted.config.parent / "state"
    (state / "health.json").write_text(
        json.dumps({"updated": NOW.timestamp() - 30, "stale_after_secs": 180})
    )
    code, out = run_coverage(planted.config, capsys, "--days", "8", "--json")
    assert code == 1
    series = {(s["scale"], s["channel"]): s for s in json.loads(out)["series"]}
    assert [(h["first"], h["last"], h["verdict"]) for h in
            series[("minute", "Panel-Balance")]["holes"]][-1] == (
        "2026-11-30T11:57:00-05:00", "2026-11-30T11:59:00-05:00", "lost"
    )
    kitchen = series[("minute", "Kitchen")]["holes"]
    assert [(h["buckets"], h["verdict"], h["why"]) for h in kitchen] == [
        (8, "lost", GONE),
        (10, "import", "vuegraf --historydays 3 brings it"),
        (5, "filling", "filling now"),
    ]


def test_computed_channels_are_lost_past_the_instant_edge_at_every_scale() -> None:
    facts = SeriesFacts(computed=True, newest=at(30, 16, 59))
    # Minutes: lost before 17:12, the 10 minutes Emporia keeps beyond vuegraf's reach too.
    marks = Holes(((at(23, 17, 0), at(23, 17, 21)),), open_from=at(30, 17, 0))
    marked = SeriesFacts(computed=True, newest=at(30, 16, 59), marks=marks)
    got = judge(Scale.MINUTE, at(23, 17, 0), at(23, 17, 20), marked, NOW, False, UTC_ZONE)
    assert got == [
        hole(at(23, 17, 0), at(23, 17, 11), 12, Verdict.LOST, GONE),
        hole(at(23, 17, 12), at(23, 17, 20), 9, Verdict.FILLING, LATER),
    ]
    # Hours: a chart channel's are kept for years; a computed one's only as long.
    assert judge(Scale.HOUR, at(20, 3), at(20, 4), facts, NOW, False, UTC_ZONE) == [
        hole(at(20, 3), at(20, 4), 2, Verdict.LOST, GONE)
    ]
    chart = SeriesFacts(computed=False, newest=at(30, 16))
    assert judge(Scale.HOUR, at(20, 3), at(20, 4), chart, NOW, False, UTC_ZONE) == [
        hole(at(20, 3), at(20, 4), 2, Verdict.IMPORT, "vuegraf --historydays 11 brings it", 11)
    ]
    # Behind the newest point, unmarked: nothing asks Emporia for it (no chart to import).
    assert judge(Scale.MINUTE, at(29, 1, 0), at(29, 1, 0), facts, NOW, False, UTC_ZONE) == [
        hole(at(29, 1, 0), at(29, 1, 0), 1, Verdict.LOST,
             "unknown to vuegraf, and a channel without chart history")
    ]


def test_day_holes_count_local_days() -> None:
    """Local days in New York: 2026-11-01 has 25 hours; a day hole counts days, not 24 h."""
    facts = SeriesFacts(computed=False, newest=datetime(2026, 11, 29, 5, tzinfo=UTC))
    first = datetime(2026, 10, 31, 4, tzinfo=UTC)  # Oct 31, EDT midnight
    last = datetime(2026, 11, 2, 5, tzinfo=UTC)  # Nov 2, EST midnight
    assert judge(Scale.DAY, first, last, facts, NOW, False, NY) == [
        hole(first, last, 3, Verdict.IMPORT, "vuegraf --historydays 31 brings it", 31)
    ]


def test_the_daemon_runs_while_a_health_file_is_fresh(tmp_path: Path) -> None:
    assert not daemon_running(tmp_path, NOW)
    health = tmp_path / "health-shard-1-of-2.json"
    health.write_text(json.dumps({"updated": NOW.timestamp() - 200, "stale_after_secs": 300}))
    assert daemon_running(tmp_path, NOW)
    assert not daemon_running(tmp_path, NOW + timedelta(seconds=101))


# -- the command on a store with planted holes -----------------------------------------------

GID = 1001
LAYOUT = [
    {
        "name": "",  # set per test: the account's name
        "devices": [
            {
                "id": str(GID),
                "name": "Panel",
                "station": "",
                "parent": None,
                "channels": [
                    {"num": "1,2,3", "name": "Panel", "kind": "mains"},
                    {"num": "1", "name": "Kitchen", "kind": "circuit"},
                    {"num": "2", "name": "Dryer", "kind": "circuit"},  # never stored
                    {"num": "Balance", "name": "Panel-Balance", "kind": "computed"},
                ],
            }
        ],
    }
]
# The report's window with --days 8 at NOW (interval 60 s, lag 5 s): minutes from
# 11-22 17:02 to 11-30 16:59, hours from 11-22 18:00 to 11-30 16:00, New York days 11-23
# to 11-29 (day points are stamped 23:59:59 local).
WINDOW = {
    Scale.MINUTE: (at(22, 17, 2), at(30, 16, 59)),
    Scale.HOUR: (at(22, 18), at(30, 16)),
    Scale.DAY: (at(23, 5), at(29, 5)),
}
BUCKETS = {Scale.MINUTE: 8 * 1440 - 2, Scale.HOUR: 8 * 24 - 1, Scale.DAY: 7}
STORED = ("Panel", "Kitchen", "Panel-Balance")
GARAGE_FROM = at(28, 8, 0)  # a plug added then: minutes only, from then on
GARAGE_BUCKETS = 2 * 1440 + 9 * 60  # 28th 08:00 .. 30th 16:59


def minutes(first: datetime, last: datetime) -> set[datetime]:
    count = int((last - first).total_seconds()) // 60 + 1
    return {first + timedelta(minutes=n) for n in range(count)}


# What is not written, per (scale, channel).
PLANTED: dict[tuple[Scale, str], set[datetime]] = {
    (Scale.MINUTE, "Panel"): minutes(at(22, 20, 0), at(22, 20, 29))
    | minutes(at(23, 16, 0), at(23, 18, 0)),
    (Scale.MINUTE, "Kitchen"): minutes(at(22, 17, 2), at(22, 17, 9))
    | minutes(at(28, 8, 0), at(28, 8, 9))
    | minutes(at(29, 10, 0), at(29, 10, 4)),
    (Scale.MINUTE, "Panel-Balance"): minutes(at(23, 17, 0), at(23, 17, 20))
    | minutes(at(30, 16, 57), at(30, 16, 59)),
    (Scale.HOUR, "Kitchen"): {at(24, 3)},
    (Scale.HOUR, "Panel-Balance"): {at(22, 20), at(22, 21)},
    (Scale.DAY, "Panel"): {at(25, 5)},
}
# The holes the report must list: (first, last, buckets, verdict, --historydays N).
EXPECTED: dict[tuple[str, str], list[tuple[datetime, datetime, int, str, int | None]]] = {
    ("minute", "Panel"): [
        (at(22, 20, 0), at(22, 20, 29), 30, "lost", None),
        (at(23, 16, 0), at(23, 17, 1), 62, "lost", None),
        (at(23, 17, 2), at(23, 18, 0), 59, "lost", None),  # before an import's first minute
    ],
    ("minute", "Kitchen"): [
        # Leading, but a hole: a point is stored before the window (22nd 17:01).
        (at(22, 17, 2), at(22, 17, 9), 8, "lost", None),
        (at(28, 8, 0), at(28, 8, 9), 10, "import", 3),
        (at(29, 10, 0), at(29, 10, 4), 5, "filling", None),  # marked
    ],
    ("minute", "Panel-Balance"): [
        (at(23, 17, 0), at(23, 17, 11), 12, "lost", None),
        (at(23, 17, 12), at(23, 17, 20), 9, "filling", None),  # marked
        (at(30, 16, 57), at(30, 16, 59), 3, "filling", None),  # after the newest point
    ],
    # Nothing stored, ever: no holes, the series has not begun (nothing for vuegraf to fill).
    ("minute", "Dryer"): [],
    # Stored from the 28th 08:00 on only, nothing before: no hole, a series that began then.
    ("minute", "Garage"): [],
    ("hour", "Panel"): [],
    ("hour", "Kitchen"): [(at(24, 3), at(24, 3), 1, "import", 7)],
    ("hour", "Panel-Balance"): [(at(22, 20), at(22, 21), 2, "lost", None)],
    ("hour", "Dryer"): [],
    ("day", "Panel"): [(at(25, 5), at(25, 5), 1, "import", 6)],
    ("day", "Kitchen"): [],
    ("day", "Panel-Balance"): [],
    ("day", "Dryer"): [],
}


def day_stamp(start: datetime) -> datetime:
    """23:59:59 New York time of the local day starting at `start`."""
    local = start.astimezone(NY).date()
    return datetime.combine(local, time(23, 59, 59), tzinfo=NY).astimezone(UTC)


def planted_points(account: str) -> list[Point]:
    """A week+ of points of three channels, all but the planted holes (values: literals)."""
    points = []
    for channel in STORED:
        for m in minutes(*WINDOW[Scale.MINUTE]) - PLANTED.get((Scale.MINUTE, channel), set()):
            points.append(Point(account, "Panel", channel, Scale.MINUTE, m, 500.0))
        first, last = WINDOW[Scale.HOUR]
        hours = {first + timedelta(hours=n) for n in range(BUCKETS[Scale.HOUR])}
        for h in hours - PLANTED.get((Scale.HOUR, channel), set()):
            points.append(Point(account, "Panel", channel, Scale.HOUR, h, 400.0))
        days = {at(23 + n, 5) for n in range(7)} - PLANTED.get((Scale.DAY, channel), set())
        for d in days:
            points.append(Point(account, "Panel", channel, Scale.DAY, day_stamp(d), 9600.0))
        # Outside the window: before it, and the minute being collected now.
        points.append(Point(account, "Panel", channel, Scale.MINUTE, at(22, 17, 1), 1.0))
    for m in minutes(GARAGE_FROM, WINDOW[Scale.MINUTE][1]):
        points.append(Point(account, "Panel", "Garage", Scale.MINUTE, m, 80.0))
    return points


@dataclass
class Planted:
    """A store with the planted points, and a count of each series' points in the window made
    by the test itself (`count(scale) -> {channel: points}`)."""

    config: Path
    account: str
    count: Callable[[Scale], dict[str, int]]


def write_config(tmp_path: Path, account: str, extra: dict[str, Any]) -> Path:
    cfg = tmp_path / "vuegraf.json"
    cfg.write_text(json.dumps({
        "accounts": [{"name": account, "email": "me@example.com", "password": "pw-secret"}],
        "timezone": "America/New_York",
        "stateDir": "state",
        **extra,
    }))
    return cfg


def plant(cfg: Path, account: str, settle: Callable[[], None] = lambda: None) -> None:
    """Write the points through the configured store; the layout and the marks the daemon
    would have left in the state directory."""
    config = load_config(cfg)
    seed_store(config, planted_points(account))
    settle()
    assert config.state_dir is not None
    config.state_dir.mkdir(parents=True, exist_ok=True)
    layout = json.loads(json.dumps(LAYOUT))
    layout[0]["name"] = account
    (config.state_dir / "layout.json").write_text(json.dumps(layout))
    MarksFile(config.state_dir, account).save({
        Scale.MINUTE: {
            (GID, "1"): Holes(((at(29, 10, 0), at(29, 10, 5)),), open_from=at(30, 17, 0)),
            (GID, "Balance"): Holes(((at(23, 17, 0), at(23, 17, 21)),), open_from=at(30, 17, 0)),
        }
    })


BACKENDS = [
    "sqlite",
    pytest.param("influxdb-v1", marks=pytest.mark.integration),
    pytest.param("victoria-metrics", marks=pytest.mark.integration),
]


@pytest.fixture(params=BACKENDS)
def planted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Planted]:
    account = f"Mom's Home {uuid.uuid4().hex[:8]}"  # VictoriaMetrics is shared by the session
    kind: str = request.param

    def window_edges(scale: Scale) -> tuple[int, int]:
        """The window's stamps [first, last] in Unix seconds (days: 23:59:59 local)."""
        first, last = WINDOW[scale]
        if scale is Scale.DAY:
            first, last = day_stamp(first), day_stamp(last)
        return int(first.timestamp()), int(last.timestamp())

    if kind == "sqlite":
        import sqlite3

        cfg = write_config(tmp_path, account, {"sqlitePath": "data.db"})
        plant(cfg, account)

        def count(scale: Scale) -> dict[str, int]:
            first, last = window_edges(scale)
            with sqlite3.connect(tmp_path / "data.db") as db:
                rows = db.execute(
                    "SELECT device_name, COUNT(*) FROM energy_usage WHERE account_name = ? "
                    "AND detailed = ? AND time >= ? AND time <= ? GROUP BY device_name",
                    (account, {Scale.MINUTE: "False", Scale.HOUR: "Hour", Scale.DAY: "Day"}[scale],
                     first, last),
                ).fetchall()
            return dict(rows)

        yield Planted(cfg, account, count)
    elif kind == "influxdb-v1":
        server, database = request.getfixturevalue("influxdb_v1_db")
        cfg = write_config(tmp_path, account, {
            "influxDb": {"host": server.host, "port": server.port, "database": database}
        })
        plant(cfg, account)

        def count(scale: Scale) -> dict[str, int]:
            first, last = window_edges(scale)
            tag = {Scale.MINUTE: "False", Scale.HOUR: "Hour", Scale.DAY: "Day"}[scale]
            quoted = account.replace("'", "\\'")
            client = server.client(database)
            try:
                result = client.query(
                    f"SELECT count(\"usage\") FROM energy_usage WHERE account_name = '{quoted}' "
                    f"AND detailed = '{tag}' AND time >= {first}s AND time <= {last}s "
                    "GROUP BY device_name"
                )
            finally:
                client.close()
            return {
                tags["device_name"]: next(iter(points))["count"]
                for (_name, tags), points in result.items()
            }

        yield Planted(cfg, account, count)
    else:
        vm = request.getfixturevalue("victoria_metrics")
        cfg = write_config(tmp_path, account, {
            "influxDb": {"version": 2, "url": vm.url, "org": "home", "bucket": "vuegraf",
                         "token": "tok-secret"}
        })
        plant(cfg, account, vm.force_flush)

        def count(scale: Scale) -> dict[str, int]:
            first, last = window_edges(scale)
            tag = {Scale.MINUTE: "False", Scale.HOUR: "Hour", Scale.DAY: "Day"}[scale]
            selector = f'energy_usage_usage{{account_name="{account}",detailed="{tag}"}}'
            answer = requests.get(f"{vm.url}/api/v1/query", params={
                "query": f"count_over_time({selector}[{last - first + 1}s])",
                "time": str(last), "nocache": "1",
            }, timeout=10).json()
            return {
                item["metric"]["device_name"]: int(item["value"][1])
                for item in answer["data"]["result"]
            }

        yield Planted(cfg, account, count)


def run_coverage(cfg: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    with main_state_restored():
        code = main(["coverage", str(cfg), *flags], clock_factory=lambda: FakeClock(NOW))
    return code, capsys.readouterr().out


def test_planted_holes_are_listed_with_their_verdicts(
    planted: Planted, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_coverage(planted.config, capsys, "--days", "8", "--json")
    assert code == 1  # holes
    report = json.loads(out)
    assert report["running"] is False and report["complete"] is False
    series = {(s["scale"], s["channel"]): s for s in report["series"]}
    assert set(series) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        got = [
            (datetime.fromisoformat(h["first"]), datetime.fromisoformat(h["last"]), h["buckets"],
             h["verdict"], h["history_days"])
            for h in series[key]["holes"]
        ]
        assert got == expected, key
        assert series[key]["account"] == planted.account
        assert series[key]["computed"] is (key[1] == "Panel-Balance")
    # The share agrees with the store's own count of each series' points in the window.
    for scale, name in ((Scale.MINUTE, "minute"), (Scale.HOUR, "hour"), (Scale.DAY, "day")):
        counted = planted.count(scale)
        for channel in STORED:
            s = series[(name, channel)]
            assert s["buckets"] == BUCKETS[scale]
            assert s["present"] == counted.get(channel, 0), (name, channel)
            assert s["present"] + sum(h["buckets"] for h in s["holes"]) == s["buckets"]
            assert s["share"] == pytest.approx(100 * s["present"] / s["buckets"])
            assert s["since"] is None
        dryer = series[(name, "Dryer")]
        assert (dryer["buckets"], dryer["present"], dryer["share"], dryer["since"]) == (
            0, 0, None, None
        )
    garage = series[("minute", "Garage")]
    assert garage["since"] == "2026-11-28T03:00:00-05:00"
    assert (garage["buckets"], garage["present"], garage["share"]) == (
        GARAGE_BUCKETS, planted.count(Scale.MINUTE)["Garage"], 100.0
    )
    # Local times in the config's zone.
    assert series[("minute", "Kitchen")]["holes"][1]["first"] == "2026-11-28T03:00:00-05:00"


@pytest.mark.parametrize("planted", ["sqlite"], indirect=True)  # not the store's part
def test_text_report_and_a_running_daemon(
    planted: Planted, capsys: pytest.CaptureFixture[str]
) -> None:
    state = planted.config.parent / "state"
    (state / "health.json").write_text(
        json.dumps({"updated": NOW.timestamp() - 30, "stale_after_secs": 180})
    )
    code, out = run_coverage(planted.config, capsys, "--days", "8")
    assert code == 1
    lines = out.splitlines()
    assert "the daemon is running" in lines[0]
    # A complete series is one line; a hole a line under its series, in local time.
    panel_hours = next(i for i, line in enumerate(lines) if line.split()[:2] == ["hour", "Panel"])
    assert lines[panel_hours].split()[2:] == ["100.0", "%"]
    assert lines[panel_hours + 1].split()[0] == "hour"
    kitchen = [line for line in lines if "2026-11-29 05:00 .. 2026-11-29 05:04" in line]
    assert kitchen == [kitchen[0]] and kitchen[0].split()[-3:] == ["filling", "filling", "now"]
    assert any("import" in line and "--historydays 3" in line for line in lines)
    # A series that began inside the window says since when; one never stored says so.
    garage = next(line for line in lines if line.split()[:2] == ["minute", "Garage"])
    assert garage.split()[2:] == ["100.0", "%", "since", "2026-11-28", "03:00"]
    dryer = next(line for line in lines if line.split()[:2] == ["minute", "Dryer"])
    assert dryer.split()[2:] == ["nothing", "stored"]


def test_a_complete_store_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "Home", {
        "sqlitePath": "data.db", "detailedDataHoursEnabled": False,
        "detailedDataDaysEnabled": False,
    })
    store = build_store(load_config(cfg))
    store.open()
    store.write([Point("Home", "Panel", "Panel", Scale.MINUTE, m, 1.0)
                 for m in minutes(at(29, 17, 2), at(30, 16, 59))])
    store.close()
    code, out = run_coverage(cfg, capsys, "--days", "1", "--json")
    report = json.loads(out)
    assert code == 0 and report["complete"] is True
    assert [(s["scale"], s["channel"], s["present"], s["holes"]) for s in report["series"]] == [
        ("minute", "Panel", 1438, [])
    ]


def test_a_bad_config_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "vuegraf.json"
    cfg.write_text(json.dumps({"accounts": [{"name": "Home", "email": "me@example.com"}]}))
    with main_state_restored():
        code = main(["coverage", str(cfg)], clock_factory=lambda: FakeClock(NOW))
    err = capsys.readouterr().err
    assert code == 2
    assert "accounts[0].password" in err and len(err.strip().splitlines()) == 1


def test_no_sqlite_store_yet_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "Home", {"sqlitePath": "data.db"})
    with main_state_restored():
        code = main(["coverage", str(cfg)], clock_factory=lambda: FakeClock(NOW))
    captured = capsys.readouterr()
    assert code == 3 and captured.out == ""
    assert "no SQLite store" in captured.err


def test_help_names_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with main_state_restored(), pytest.raises(SystemExit) as stop:
        main(["coverage", "--help"])
    assert stop.value.code == 0
    said = " ".join(capsys.readouterr().out.split())
    for status in ("0 when nothing is missing", "1 when a hole is", "2 for a bad",
                   "3 when the store cannot be read"):
        assert status in said, status


def test_a_store_that_cannot_be_read_is_one_line_and_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens on the store's port: the report cannot be made, and says so in one
    line instead of calling the data complete, with an exit status of its own (3) so a
    script tells "no answer" from "holes" (1)."""
    with socket.socket() as free:  # a port just free, nothing listening on it
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    cfg = write_config(tmp_path, "Home", {
        "influxDb": {"host": "127.0.0.1", "port": port, "database": "vuegraf"}
    })
    with main_state_restored():
        code = main(["coverage", str(cfg)], clock_factory=lambda: FakeClock(NOW))
    captured = capsys.readouterr()
    assert code == 3 and captured.out == ""
    said = [line for line in captured.err.splitlines() if line.startswith("coverage:")]
    assert len(said) == 1 and "cannot read influxdb-v1" in said[0] and "unreachable" in said[0]
