"""Config → the sinks to write to. The one place that knows which sink a config means."""

from __future__ import annotations

from typing import TextIO

from vuegraf.config import Config, InfluxV1Config, InfluxV2Config
from vuegraf.sinks.base import Sink
from vuegraf.sinks.dryrun import DryRunSink
from vuegraf.sinks.influx import InfluxV1Sink, InfluxV2Sink
from vuegraf.sinks.mqtt import MqttSink
from vuegraf.sinks.sqlite import SqliteSink


def build_sinks(config: Config, dryrun: bool = False, out: TextIO | None = None) -> list[Sink]:
    """InfluxDB v1 or v2 when configured, else the embedded SQLite store, plus MQTT if set.

    A dry run replaces them all: nothing is written or published.
    """
    station = config.add_station_field
    if dryrun:
        return [DryRunSink(config.tags, station, out)]
    sinks: list[Sink]
    if isinstance(config.influx, InfluxV2Config):
        sinks = [InfluxV2Sink(config.influx, config.tags, station)]
    elif isinstance(config.influx, InfluxV1Config):
        sinks = [InfluxV1Sink(config.influx, config.tags, station)]
    else:
        sinks = [SqliteSink(config.sqlite_path, config.tags, station)]
    if config.mqtt is not None:
        sinks.append(MqttSink(config.mqtt, config.tags, station))
    return sinks
