"""The day's Emporia request count, kept in the state directory so that a restart goes on
from it: the budget guard must see what a morning's `--historydays` import (or the run before
a crash) already spent, not 0.

One JSON file per process (`requests-today<shard suffix>.json`, so replicas sharing a state
directory keep their own), replaced atomically, rewritten only when it changed:

    {"day": "2026-12-01", "requests": {"Home": 1900, "Cabin": 12}}

`day` is the UTC day the counts are for; a file of an earlier day is ignored.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path

from vuegraf.statefile import replace_file
from vuegraf.stats import Stats

logger = logging.getLogger(__name__)

FILE_NAME = "requests-today"


class DayCountFile:
    """Loads and saves the day's request count per account; without a state directory,
    neither."""

    def __init__(self, state_dir: Path | None, file_suffix: str = "") -> None:
        self.path = None if state_dir is None else state_dir / f"{FILE_NAME}{file_suffix}.json"
        self._saved_text = ""  # what the file holds, as this process last wrote it

    def load(self, stats: Stats, now: datetime) -> None:
        """Give `stats` the counts the file holds for `now`'s UTC day (none for another day,
        or an unreadable file: said once, at WARNING)."""
        path = self.path
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            day = date.fromisoformat(data["day"])
            counts = {str(a): int(n) for a, n in data["requests"].items()}
        except (OSError, ValueError, TypeError, AttributeError, KeyError) as err:
            logger.warning("ignoring unreadable %s: %s", path, err)
            return
        if day == now.astimezone(UTC).date():
            stats.resume_today(day, counts)

    def save(self, stats: Stats) -> None:
        """Write the day's counts atomically (a kill -9 leaves the old file or the new one); a
        failure is a WARNING, and the next save tries again."""
        path = self.path
        day, counts = stats.today()
        if path is None or day is None:
            return
        text = json.dumps({"day": day.isoformat(), "requests": counts}, sort_keys=True)
        if text == self._saved_text:
            return
        try:
            replace_file(path, text)
            self._saved_text = text
        except OSError as err:
            logger.warning("cannot save %s: %s", path, err)
