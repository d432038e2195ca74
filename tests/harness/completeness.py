"""What a store holds, read back directly, against what the simulator served.

The expected side always comes from tests/harness/oracle.py (`oracle.served`: the simulator's
usage model named, stamped and converted with literal tables, epoch and zoneinfo arithmetic and
the factors of README.md's "What is written"; nothing from vuegraf's schedule, naming or
model code).
`expected_points` and `chart_channels` apply it to an account config.

What an earlier run left, written into a store before a test starts vuegraf (`seed_store`):
`earlier_run_points`, its newest minute, hour and day with the simulator's values, or
`seed_minute`, a placeholder minute per channel where only the time matters (the start-up
fill reaches back to it, not 7 days).

The stored side: `stored_points` (InfluxDB 1.x, through InfluxQL), `victoria_points`
(VictoriaMetrics' export API) and `sqlite_points` (the embedded store) read one account and
scale tag, and notice a (channel, time) stored twice under different tag sets.

`compare` gives one verdict for both kinds of run:
- a run whose window the test knows exactly (virtual time): `compare(what, stored, want)`;
  every point of `want` must be stored with its value, and nothing else may be stored between
  its first and last time for its channels;
- a run on the wall clock, whose first and last buckets depend on when the test runs: `want`
  is the model over a generous window (`window`), `required` the interior the run surely
  covered. Every stored point in the window must be the model's (a bucket the model leaves
  empty must be absent), and every required point must be there.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from harness import oracle
from harness.oracle import Key
from vuegraf.config import Config
from vuegraf.model import Point, Scale
from vuegraf.simulator import UsageModel
from vuegraf.sinks.factory import build_store

# -- what should be stored ----------------------------------------------------------------------


def chart_channels(
    config: Config, model: UsageModel, account: int = 0, live_only_too: bool = False
) -> list[tuple[int, str, str]]:
    """(device gid, channel number, written channel name) of every channel with chart data,
    and with `live_only_too` also Balance, MainsFromGrid and MainsToGrid (live values only),
    from the literal names table of the account's `devices` (oracle.names_for)."""
    oracle.check_household(model)
    return oracle.channels(oracle.names_for(config.accounts[account]), live_only_too)


def expected_points(
    config: Config,
    model: UsageModel,
    scale: Scale,
    since: datetime,
    until: datetime,
    account: int = 0,
    live_only_too: bool = False,
) -> dict[Key, float]:
    """`oracle.served` for an account config: its literal names table (oracle.names_for) and
    the config's zone (America/New_York in every test config that writes day points)."""
    zone = config.zone
    assert isinstance(zone, ZoneInfo), zone
    return oracle.served(
        oracle.names_for(config.accounts[account]),
        model,
        scale.value,
        since,
        until,
        zone,
        live_only_too,
    )


def earlier_run_points(
    model: UsageModel,
    account: str,
    minute: datetime,
    hour: datetime,
    day: date,
    zone: ZoneInfo = oracle.NEW_YORK,
    names: Mapping[oracle.ChannelKey, str] = oracle.DEFAULT_NAMES,
    live_only_too: bool = False,
) -> list[Point]:
    """The newest points an earlier run would have left: the minute starting at `minute`, the
    hour starting at `hour` and the local day `day` of every chart channel (with
    `live_only_too` of Balance and the grid channels too, which an earlier run wrote live),
    where the simulator has a value (`oracle.served`)."""
    device = {name: oracle.DEVICE_NAMES[gid] for (gid, _num), name in names.items()}
    points = []
    for scale, start in (
        (Scale.MINUTE, minute),
        (Scale.HOUR, hour),
        (Scale.DAY, oracle.midnight(day, zone)),
    ):
        until = oracle.bucket_after(scale.value, start, zone)
        served = oracle.served(names, model, scale.value, start, until, zone, live_only_too)
        for (name, t), watts in served.items():
            points.append(Point(account, device[name], name, scale, oracle.utc(t), watts))
    assert points, "the simulator has no value for any of these buckets"
    return points


def seed_store(config: Config, points: Sequence[Point]) -> None:
    """Write `points` straight into the config's store (no queue), as an earlier run would
    have left them."""
    store = build_store(config)
    store.open()
    try:
        store.write(list(points))
    finally:
        store.close()


def seed_minute(config: Config, model: UsageModel, minute: datetime, account: int = 0) -> None:
    """A placeholder point (1 W) at `minute` for every chart channel of the account, named by
    its config's table (oracle.names_for), as if an earlier run had ended there."""
    name = config.accounts[account].name
    seed_store(
        config,
        [
            Point(name, "", channel, Scale.MINUTE, minute, 1.0)
            for _gid, _num, channel in chart_channels(config, model, account)
        ],
    )


# -- what is stored -----------------------------------------------------------------------------


@dataclass
class Stored:
    points: dict[Key, float] = field(default_factory=dict)
    duplicates: list[Key] = field(default_factory=list)  # one key in two tag sets

    def add(self, key: Key, watts: float) -> None:
        if key in self.points:
            self.duplicates.append(key)
        self.points[key] = watts


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stored_points(
    client: Any, account: str, detailed: str, since: datetime, until: datetime
) -> Stored:
    """One account's points in InfluxDB 1.x (an `InfluxDBClient` on the database) with scale
    tag `detailed` and a time in [since, until), every tag set."""
    result = client.query(
        f"SELECT usage FROM energy_usage WHERE account_name = {_literal(account)} "
        f"AND detailed = {_literal(detailed)} AND time >= {int(since.timestamp())}s "
        f"AND time < {int(until.timestamp())}s GROUP BY *",
        epoch="s",
    )
    stored = Stored()
    for (_measurement, tags), rows in result.items():
        for row in rows:
            stored.add((tags["device_name"], int(row["time"])), float(row["usage"]))
    return stored


def victoria_points(
    vm: Any, account: str, detailed: str, since: datetime, until: datetime
) -> Stored:
    """The same from VictoriaMetrics (`servers.VictoriaMetricsServer`; series
    energy_usage_usage), every label set. It keeps about 12 significant digits of a float,
    within `compare`'s tolerance.

    Unlike InfluxDB, VictoriaMetrics keeps a sample written again with the same series and
    time as a second sample: with the same value that is one point, as InfluxDB would hold it
    (vuegraf may write a minute as the live value and again as part of a fill); with another
    value it is counted as stored twice."""
    match = f'{{__name__="energy_usage_usage",account_name="{account}",detailed="{detailed}"}}'
    stored = Stored()
    for row in vm.export_now(match):
        name = row["metric"]["device_name"]
        series: dict[int, float] = {}
        for ms, value in zip(row["timestamps"], row["values"], strict=True):
            t, watts = ms // 1000, float(value)
            if not since.timestamp() <= t < until.timestamp():
                continue
            if t in series:
                if series[t] != watts:
                    stored.duplicates.append((name, t))
                continue
            series[t] = watts
            stored.add((name, t), watts)
    return stored


def sqlite_points(path: Path, account: str, detailed: str) -> Stored:
    """The same from the embedded SQLite store (every station), whatever the time."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        rows = db.execute(
            "SELECT device_name, time, usage FROM energy_usage "
            "WHERE account_name = ? AND detailed = ?",
            (account, detailed),
        ).fetchall()
    stored = Stored()
    for name, t, usage in rows:
        stored.add((name, int(t)), float(usage))
    return stored


# -- the verdict --------------------------------------------------------------------------------


@dataclass
class Comparison:
    what: str
    expected: int  # points that must be stored (`required`)
    present: int  # of those, stored with the simulator's value
    judged: int  # stored points judged: in the window, of a channel in `want`
    missing: list[Key]  # required, not stored
    wrong: list[tuple[Key, float, float]]  # (key, stored, simulator)
    extra: list[Key]  # judged, but the simulator has no value there
    duplicates: list[Key]  # stored twice, under two tag sets

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong or self.extra or self.duplicates)

    def __str__(self) -> str:
        text = (
            f"{self.what}: {self.present} of {self.expected} expected points present, "
            f"{self.judged} stored points judged"
        )
        for label, items in (
            ("missing", self.missing),
            ("wrong value", self.wrong),
            ("extra (the simulator has no value there)", self.extra),
            ("stored twice", self.duplicates),
        ):
            if items:
                text += f"; {len(items)} {label}, first {sorted(items)[:3]}"
        return text


def compare(
    what: str,
    stored: Stored | Mapping[Key, float],
    want: Mapping[Key, float],
    *,
    required: Collection[Key] | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> Comparison:
    """Stored points against the simulator's `want` (`oracle.served`).

    `required`: the keys that must be stored (all of `want` unless given; a part of it).
    `window`: the times [since, until) in which every stored point of a channel named in `want`
    is judged (unless given: from the first to the last time in `want`). A judged or required
    point must have want's value (else `wrong`); a judged point the simulator has no value for
    is `extra`; points outside the window or of other channels are not judged."""
    required = want.keys() if required is None else required
    outside = [key for key in required if key not in want]
    assert not outside, f"required points that are not in `want`: {sorted(outside)[:3]}"
    points, duplicates = (
        (stored.points, stored.duplicates) if isinstance(stored, Stored) else (stored, [])
    )
    channels = {name for name, _t in want}
    if window is not None:
        first, last = int(window[0].timestamp()), int(window[1].timestamp()) - 1
    else:
        times = [t for _name, t in want]
        first, last = (min(times), max(times)) if times else (0, -1)
    judged = {key for key in points if key[0] in channels and first <= key[1] <= last}
    wrong, extra = [], []
    for key in judged.union(points.keys() & required):
        watts = want.get(key)
        if watts is None:
            extra.append(key)
        elif not math.isclose(points[key], watts, rel_tol=1e-9, abs_tol=1e-9):
            wrong.append((key, points[key], watts))
    # In key order, as a report reads best (sorting only these, not every key checked).
    extra.sort()
    wrong.sort(key=lambda item: item[0])
    missing = [key for key in required if key not in points]
    wrong_keys = {key for key, _got, _want in wrong}
    return Comparison(
        what=what,
        expected=len(required),
        present=sum(1 for key in required if key in points and key not in wrong_keys),
        judged=len(judged),
        missing=missing,
        wrong=wrong,
        extra=extra,
        duplicates=list(duplicates),
    )
