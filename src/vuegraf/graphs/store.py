"""The `GraphReader` for the store a config writes to."""

from __future__ import annotations

from vuegraf.config import Config
from vuegraf.graphs.read import GraphReader
from vuegraf.graphs.remote import build_reader


def reader_for(config: Config) -> GraphReader:
    """The embedded SQLite file, or the InfluxDB/VictoriaMetrics server the config names
    (whichever read API it answers, as the backfill chooses)."""
    return build_reader(config)
