"""The marks file: one account's holes, per scale and series, kept in the state directory.

The store can say where each series ends, not which holes lie behind that point; a
restart in the middle of a fill would otherwise forget them. One JSON file per account
(`marks-<hash of the name>.json`), replaced atomically, rewritten only when it changed:

    {"account": "Home",
     "marks": {"1MIN": {"1001|1": 1764000000.0, ...}, ...},
     "holes": {"1MIN": {"1001|1": {"closed": [[start, end], ...], "open_from": t}, ...}, ...}}

Times are Unix seconds; a hole is the buckets [start, end). `marks` (each series' oldest
missing bucket: everything before it is stored) is all that versions before the holes
wrote; a file without `holes` is read from it, and it is still written, so going back to
such a version loses nothing (it asks for more again).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vuegraf.backfill import Holes, SeriesKey
from vuegraf.model import Scale
from vuegraf.statefile import replace_file

logger = logging.getLogger(__name__)

SavedHoles = dict[Scale, dict[SeriesKey, Holes]]


class MarksFile:
    """Loads and saves one account's holes; without a state directory, neither."""

    def __init__(self, state_dir: Path | None, account: str) -> None:
        self.account = account
        self.path: Path | None = None
        if state_dir is not None:
            digest = hashlib.sha256(account.encode()).hexdigest()[:16]
            self.path = state_dir / f"marks-{digest}.json"
        self._saved_text = ""  # what the file holds, as this process last wrote it

    def load(self) -> SavedHoles:
        """What the last run saved; nothing if there is no file or it cannot be read (that
        costs a larger fill, never collection: said once, at WARNING)."""
        path = self.path
        if path is None or not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            return _parse(data)
        except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
            logger.warning("Account %s: ignoring unreadable %s: %s", self.account, path, err)
            return {}

    def save(self, holes: Mapping[Scale, Mapping[SeriesKey, Holes]]) -> None:
        """Write `holes` atomically (a kill -9 leaves the old file or the new one); a failure
        is a WARNING, and the next save tries again."""
        path = self.path
        if path is None:
            return
        data = {
            "account": self.account,
            "marks": {
                scale.value: {_key(k): h.first.timestamp() for k, h in series.items()}
                for scale, series in holes.items()
            },
            "holes": {
                scale.value: {
                    _key(k): {
                        "closed": [[s.timestamp(), e.timestamp()] for s, e in h.closed],
                        "open_from": h.open_from.timestamp(),
                    }
                    for k, h in series.items()
                }
                for scale, series in holes.items()
            },
        }
        text = json.dumps(data, sort_keys=True)
        if text == self._saved_text:
            return
        try:
            replace_file(path, text)
            self._saved_text = text
        except OSError as err:
            logger.warning("Account %s: cannot save %s: %s", self.account, path, err)


def _key(key: SeriesKey) -> str:
    return f"{key[0]}|{key[1]}"


def _series(text: str) -> SeriesKey:
    gid, num = text.split("|", 1)
    return int(gid), num


def _time(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a time: {value!r}")
    return datetime.fromtimestamp(value, UTC)


def _parse(data: Any) -> SavedHoles:
    """The file's content: `holes` where a series has them, else its mark in `marks` (all
    that older versions wrote). Scales this version does not know, or does not track holes
    of (15 minutes: amps and volts only), are left out."""
    result: SavedHoles = {}
    marks = data.get("marks", {})
    holes = data.get("holes", {})
    for scale_text in {*marks, *holes}:
        try:
            scale = Scale(scale_text)
        except ValueError:
            continue
        if scale is Scale.QUARTER:
            continue
        series: dict[SeriesKey, Holes] = {}
        for text, mark in marks.get(scale_text, {}).items():
            series[_series(text)] = Holes((), _time(mark))
        for text, saved in holes.get(scale_text, {}).items():
            closed = tuple((_time(s), _time(e)) for s, e in saved["closed"])
            series[_series(text)] = Holes(closed, _time(saved["open_from"]))
        result[scale] = series
    return result
