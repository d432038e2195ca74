"""Points a real vuegraf run stored, checked against the simulator's model.

For runs on the wall clock, where the exact first and last buckets depend on when the test
runs: every stored point must be the model's value for its bucket (nothing wrong, nothing
where the model has no value), and every bucket of a window the test knows must be covered
(an interior window, well inside what the run was asked to do) must be there when the model
has a value for it. A bucket the model leaves empty (the gappy plug) is expected to be absent,
so the verdict does not depend on which hours a run happens to cover.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

Key = tuple[str, int]  # (channel name, epoch seconds)


def sqlite_points(path: Path, account: str, tag: str) -> dict[Key, float]:
    """One account's points with scale tag `tag` from the embedded SQLite store."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        rows = db.execute(
            "SELECT device_name, time, usage FROM energy_usage "
            "WHERE account_name = ? AND detailed = ?",
            (account, tag),
        ).fetchall()
    return {(name, int(t)): float(usage) for name, t, usage in rows}


@dataclass
class Check:
    what: str
    stored: int = 0
    required: int = 0
    missing: list[Key] = field(default_factory=list)  # required, model has a value, not stored
    wrong: list[tuple[Key, float, float]] = field(default_factory=list)  # (key, stored, model)
    unknown: list[Key] = field(default_factory=list)  # stored, model has no value there

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong or self.unknown)

    def __str__(self) -> str:
        text = f"{self.what}: {self.stored} stored, {self.required} required"
        for label, items in (
            ("missing", self.missing),
            ("wrong value", self.wrong),
            ("not in the model", self.unknown),
        ):
            if items:
                text += f"; {len(items)} {label}, first {sorted(items)[:3]}"
        return text


def check(
    what: str,
    stored: dict[Key, float],
    model: dict[Key, float],
    required: dict[Key, float],
    judged: range,
) -> Check:
    """`model`: every value the simulator serves for the channels and times in `judged` (epoch
    seconds); `required`: the part of it that must be stored. Stored points outside `judged`
    or of channels the model does not cover are not judged."""
    names = {name for name, _t in model} | {name for name, _t in required}
    result = Check(what, required=len(required))
    for key, watts in stored.items():
        name, t = key
        if name not in names or t not in judged:
            continue
        result.stored += 1
        want = model.get(key)
        if want is None:
            result.unknown.append(key)
        elif not math.isclose(watts, want, rel_tol=1e-9, abs_tol=1e-9):
            result.wrong.append((key, watts, want))
    result.missing = [key for key in required if key not in stored]
    return result
