"""The `GraphReader` for the store a config writes to."""

from __future__ import annotations

from vuegraf.config import Config
from vuegraf.graphs.read import GraphReader, SqliteGraphReader
from vuegraf.graphs.remote import remote_reader


def reader_for(config: Config) -> GraphReader:
    """The embedded SQLite file, or the InfluxDB/VictoriaMetrics server the config names
    (whichever read API it answers, as the backfill chooses)."""
    if config.influx is None:
        return SqliteGraphReader(config.sqlite_path, config.tags)
    return remote_reader(config.influx, config.tags, config.add_station_field)
