"""What the Emporia simulator serves versus what reached InfluxDB 1.x, point by point.

For the "nothing lost, nothing leaked" tests: `served` (or `expected_points`, given a config)
asks the simulator's usage model for every non-null bucket of every chart channel and names,
stamps and converts it with tests/harness/oracle.py (literal name tables, epoch and zoneinfo
arithmetic, DATA-MODEL.md's factors; nothing from vuegraf's schedule, naming or model code).
`stored_points` reads one account and scale back from InfluxDB and notices a (channel, time)
stored twice under different tag sets; `compare` says what is missing, extra, wrong or
duplicated.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from harness import oracle
from vuegraf.config import Config
from vuegraf.model import Scale
from vuegraf.simulator import UsageModel

Key = tuple[str, int]  # (device_name tag, i.e. the channel name; epoch seconds)


def served(
    names: Mapping[oracle.ChannelKey, str],
    model: UsageModel,
    scale: str,
    since: datetime,
    until: datetime,
    zone: ZoneInfo,
    live_only_too: bool = False,
    only: Collection[str] | None = None,
) -> dict[Key, float]:
    """Watts of every non-null `scale` bucket ("1S", "1MIN", "1H", "1D") starting in
    [since, until), keyed by written name and time; chart channels only (unless
    `live_only_too`), and only the channels named in `only` when given."""
    return {
        (name, oracle.epoch(written)): watts
        for _gid, _num, name, written, watts in oracle.served_points(
            names, model, scale, since, until, zone, live_only_too
        )
        if only is None or name in only
    }


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
    """`served` for an account config: its literal names table (oracle.names_for) and the
    config's zone (America/New_York in every test config that writes day points)."""
    zone = config.zone
    assert isinstance(zone, ZoneInfo), zone
    return served(
        oracle.names_for(config.accounts[account]),
        model,
        scale.value,
        since,
        until,
        zone,
        live_only_too,
    )


@dataclass
class Stored:
    points: dict[Key, float] = field(default_factory=dict)
    duplicates: list[Key] = field(default_factory=list)  # one key in two tag sets


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stored_points(
    client: Any, account: str, detailed: str, since: datetime, until: datetime
) -> Stored:
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
