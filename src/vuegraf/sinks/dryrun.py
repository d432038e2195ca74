"""`--dryrun`: print the line protocol that would be written, write nothing."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from vuegraf.config import TagConfig
from vuegraf.model import Point
from vuegraf.sinks.lineproto import encode_all


class DryRunSink:
    name = "dryrun"

    def __init__(self, tags: TagConfig, add_station: bool, out: TextIO | None = None) -> None:
        self.tags = tags
        self.add_station = add_station
        self.out = out

    def open(self) -> None:
        return None

    def write(self, points: Sequence[Point]) -> None:
        out = self.out or sys.stdout
        for line in encode_all(points, self.tags, self.add_station):
            out.write(line + "\n")
        out.flush()

    def close(self) -> None:
        return None
