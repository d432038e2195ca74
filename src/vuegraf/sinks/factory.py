"""Config → the sinks to write to. The one place that knows which sink a config means."""

from __future__ import annotations

from typing import TextIO

from vuegraf.config import Config, InfluxV1Config, InfluxV2Config
from vuegraf.sinks.base import Sink
from vuegraf.sinks.dryrun import DryRunSink
from vuegraf.sinks.influx import InfluxV1Sink, InfluxV2Sink
from vuegraf.sinks.sqlite import SqliteSink


def build_sinks(config: Config, dryrun: bool = False, out: TextIO | None = None) -> list[Sink]:
    """InfluxDB v1 or v2 when configured, else the embedded SQLite store; dry run replaces all."""
    station = config.add_station_field
    if dryrun:
        return [DryRunSink(config.tags, station, out)]
    if isinstance(config.influx, InfluxV2Config):
        return [InfluxV2Sink(config.influx, config.tags, station)]
    if isinstance(config.influx, InfluxV1Config):
        return [InfluxV1Sink(config.influx, config.tags, station)]
    return [SqliteSink(config.sqlite_path, config.tags, station)]
