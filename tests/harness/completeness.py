"""What the Emporia simulator serves versus what reached InfluxDB 1.x, point by point.

For the "nothing lost, nothing leaked" tests: `expected_points` asks the simulator's usage
model (not vuegraf) for every non-null bucket of every chart channel; `stored_points` reads
one account and scale back from InfluxDB and notices a (channel, time) stored twice under
different tag sets; `compare` says what is missing, extra, wrong or duplicated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from vuegraf.config import Config
from vuegraf.model import Scale
from vuegraf.naming import channel_name
from vuegraf.schedule import bucket_start, next_bucket, point_time
from vuegraf.simulator import UsageModel

Key = tuple[str, int]  # (device_name tag, i.e. the channel name; epoch seconds)


def chart_channels(
    config: Config, model: UsageModel, account: int = 0, live_only_too: bool = False
) -> list[tuple]:
    """(device gid, channel number, written channel name) of every channel with chart data,
    and with `live_only_too` also Balance, MainsFromGrid and MainsToGrid (live values only)."""
    acct = config.accounts[account]
    return [
        (gid, num, channel_name(acct, dev, num, emporia, config.use_emporia_channel_names))
        for gid, num, dev, emporia, has_chart in model.channels()
        if has_chart or live_only_too
    ]


def expected_points(
    config: Config,
    model: UsageModel,
    scale: Scale,
    since: datetime,
    until: datetime,
    account: int = 0,
    live_only_too: bool = False,
) -> dict[Key, float]:
    """Watts of every non-null bucket starting in [since, until), chart channels only
    (unless `live_only_too`)."""
    zone = config.zone
    channels = chart_channels(config, model, account, live_only_too)
    result: dict[Key, float] = {}
    t = bucket_start(scale, since, zone)
    if t < since:
        t = next_bucket(scale, t, zone)
    while t < until:
        stamp = int(point_time(scale, t, zone).timestamp())
        by_device: dict[int, dict[str, float | None]] = {}
        for gid, num, name in channels:
            values = by_device.get(gid)
            if values is None:
                values = by_device[gid] = model.device_values(gid, scale.value, t)
            kwh = values[num]
            if kwh is not None:
                result[(name, stamp)] = kwh * scale.watts_per_kwh
        t = next_bucket(scale, t, zone)
    return result


@dataclass
class Stored:
    points: dict[Key, float] = field(default_factory=dict)
    duplicates: list[Key] = field(default_factory=list)  # one key in two tag sets


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stored_points(client, account: str, detailed: str, since: datetime, until: datetime) -> Stored:
    """One account's points with tag `detailed` and a time in [since, until), every tag set."""
    result = client.query(
        f"SELECT usage FROM energy_usage WHERE account_name = {_literal(account)} "
        f"AND detailed = {_literal(detailed)} AND time >= {int(since.timestamp())}s "
        f"AND time < {int(until.timestamp())}s GROUP BY *",
        epoch="s",
    )
    stored = Stored()
    for (_measurement, tags), rows in result.items():
        for row in rows:
            key = (tags["device_name"], int(row["time"]))
            if key in stored.points:
                stored.duplicates.append(key)
            stored.points[key] = row["usage"]
    return stored


@dataclass
class Comparison:
    what: str
    expected: int
    present: int  # expected keys stored with the right value
    missing: list[Key]
    wrong: list[tuple[Key, float, float]]  # (key, stored, expected)
    extra: list[Key]  # stored in the range for a chart channel, but the simulator has no value
    duplicates: list[Key]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong or self.extra or self.duplicates)

    def __str__(self) -> str:
        text = f"{self.what}: {self.present} of {self.expected} expected points present"
        for label, items in (
            ("missing", self.missing),
            ("wrong value", self.wrong),
            ("extra", self.extra),
            ("stored twice", self.duplicates),
        ):
            if items:
                text += f"; {len(items)} {label}, first {sorted(items)[:3]}"
        return text


def compare(what: str, stored: Stored, want: dict[Key, float]) -> Comparison:
    channels = {name for name, _t in want}
    missing, wrong = [], []
    for key, watts in want.items():
        got = stored.points.get(key)
        if got is None:
            missing.append(key)
        elif not math.isclose(got, watts, rel_tol=1e-9, abs_tol=1e-9):
            wrong.append((key, got, watts))
    times = [t for _name, t in want]
    first, last = (min(times), max(times)) if times else (0, -1)
    extra = [
        k for k in stored.points if k not in want and k[0] in channels and first <= k[1] <= last
    ]
    return Comparison(
        what=what,
        expected=len(want),
        present=len(want) - len(missing) - len(wrong),
        missing=missing,
        wrong=wrong,
        extra=extra,
        duplicates=list(stored.duplicates),
    )
