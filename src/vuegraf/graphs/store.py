"""The `GraphReader` for the store a config writes to."""

from __future__ import annotations

from vuegraf.config import Config
from vuegraf.graphs.read import GraphReader, SqliteGraphReader


def reader_for(config: Config) -> GraphReader:
    """The embedded SQLite file, or the InfluxDB/VictoriaMetrics server the config names."""
    if config.influx is None:
        return SqliteGraphReader(config.sqlite_path, config.tags)
    raise NotImplementedError("InfluxDB graphs: vuegraf.graphs.remote")
