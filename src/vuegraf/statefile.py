"""Files in the state directory replaced whole, so a reader or a kill -9 never finds half of one.

The marks, the day's request count and the health file are small and rewritten often; each is
written next to its place and renamed over it (a rename within a directory is atomic).
"""

from __future__ import annotations

import os
from pathlib import Path


def replace_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, making its directory first. OSError is the caller's
    to handle (a full disk is a warning for the marks, a crash for nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
