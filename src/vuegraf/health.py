"""Health for Docker's HEALTHCHECK: a small JSON file the daemon rewrites every cycle.

`vuegraf-health` (the container's HEALTHCHECK command) exits 0 while the last
`healthFailureThreshold` cycles did not all fail and the file is fresh, 1
otherwise. A file instead of an HTTP endpoint: no port to open, works with
`--network none`, and survives the daemon being wedged (the file goes stale).

The file also has each account's state and reason (ok, or whose side a failure is on), and
`vuegraf-health` prints them. A refused login (the wrong password: the user's side) makes the
container unhealthy at once: it will not heal by itself, and waiting for the threshold would
only hide it longer; an Emporia outage counts against the threshold as any failure does, since
it heals by itself and vuegraf fills the holes afterwards.

Each replica of a shard (`--shard`/`VUEGRAF_SHARD`) writes a file of its own, so replicas
may share a state directory; `vuegraf-health` reads the same variable (or `--shard`) to
check its own replica's file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from vuegraf.config import DEFAULT_STATE_DIR_NAME, STATE_DIR_ENV
from vuegraf.shard import SHARD_ENV, WHOLE, Shard, ShardError, resolve_shard
from vuegraf.statefile import replace_file
from vuegraf.stats import Stats, StatsSnapshot

HEALTH_FILE = "health.json"


def health_file_name(shard: Shard = WHOLE) -> str:
    """`health.json`, or `health-shard-I-of-N.json` for replica I of N."""
    stem, dot, ext = HEALTH_FILE.partition(".")
    return f"{stem}{shard.file_suffix}{dot}{ext}"


class HealthFile:
    def __init__(
        self,
        state_dir: Path,
        stats: Stats,
        threshold: int,
        interval_secs: int,
        shard: Shard = WHOLE,
    ) -> None:
        self.path = Path(state_dir) / health_file_name(shard)
        self.stats = stats
        self.threshold = threshold
        self.interval_secs = interval_secs

    def healthy(self) -> bool:
        return _healthy(self.stats.snapshot(), self.threshold)

    def update(self, now: datetime) -> None:
        """Write atomically (rename), so a reader never sees half a file."""
        snap = self.stats.snapshot()
        data = {
            "status": "healthy" if _healthy(snap, self.threshold) else "unhealthy",
            "accounts": {
                name: {"state": state, "reason": reason}
                for name, (state, reason) in sorted(snap.account_states.items())
            },
            "consecutive_failed_cycles": snap.consecutive_failed_cycles,
            "threshold": self.threshold,
            "cycles": snap.cycles,
            "last_success": snap.last_success.timestamp() if snap.last_success else None,
            "updated": now.timestamp(),
            "stale_after_secs": max(3 * self.interval_secs, 300),
            "pid": os.getpid(),
        }
        replace_file(self.path, json.dumps(data) + "\n")


# The account state of a refused login (vuegraf.emporia.errors.AUTH_FAILED; not imported:
# `vuegraf-health` runs every 30 s and must not load pyemvue).
AUTH_FAILED = "auth_failed"


def _healthy(snap: StatsSnapshot, threshold: int) -> bool:
    """Fewer failed cycles in a row than `threshold`, and no login refused (see above)."""
    refused = any(state == AUTH_FAILED for state, _ in snap.account_states.values())
    return snap.consecutive_failed_cycles < threshold and not refused


def _failing_accounts(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(state, "account Home: <reason>") of every account not ok in a health file's data."""
    accounts = data.get("accounts")
    if not isinstance(accounts, dict):
        return []
    said = []
    for name, entry in sorted(accounts.items()):
        if isinstance(entry, dict) and entry.get("state") not in (None, "ok"):
            state = str(entry.get("state"))
            said.append((state, f"account {name}: {entry.get('reason') or state}"))
    return said


def check(path: Path, now: float) -> tuple[bool, str]:
    """(healthy, reason) for the health file at `path`."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return False, f"{path}: no health file yet"
    except (OSError, ValueError) as err:
        return False, f"{path}: unreadable: {err}"
    age = now - float(data.get("updated", 0))
    if age > float(data.get("stale_after_secs", 300)):
        return False, f"stale: last cycle {age:.0f} s ago"
    failing = _failing_accounts(data)
    said = [text for _state, text in failing]
    if data.get("status") != "healthy":
        refused = [text for state, text in failing if state == AUTH_FAILED]
        if refused:  # unhealthy at once: the reason is the refused login, not the count
            return False, "unhealthy: " + "; ".join(refused)
        cycles = f"{data.get('consecutive_failed_cycles')} failed cycles in a row"
        return False, "unhealthy: " + "; ".join([cycles, *said])
    return True, "healthy" + (f" ({'; '.join(said)})" if said else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vuegraf-health", description=__doc__.splitlines()[0])
    parser.add_argument(
        "state_dir",
        nargs="?",
        help=f"state directory (default: ${STATE_DIR_ENV}, else ./{DEFAULT_STATE_DIR_NAME})",
    )
    parser.add_argument(
        "--shard",
        metavar="I/N",
        help=f"the replica to check, as given to vuegraf (default: ${SHARD_ENV}, else none)",
    )
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR_NAME)
    try:
        shard = resolve_shard(args.shard, os.environ)
    except ShardError as err:
        print(err)
        return 1  # Docker's HEALTHCHECK reserves 2: a bad value is "unhealthy"
    ok, reason = check(state_dir / health_file_name(shard), time.time())
    print(reason)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
