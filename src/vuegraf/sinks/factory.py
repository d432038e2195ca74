"""Config → the sinks to write to. The one place that knows which sink a config means."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from vuegraf.clock import Clock
from vuegraf.config import Config, InfluxV1Config, InfluxV2Config
from vuegraf.shard import WHOLE, Shard
from vuegraf.sinks.base import SeriesStore, Sink
from vuegraf.sinks.dryrun import DryRunSink
from vuegraf.sinks.influx import InfluxV1Sink, InfluxV2Sink
from vuegraf.sinks.mqtt import MqttSink
from vuegraf.sinks.queue import DEFAULT_MAX_POINTS, DurableQueue, QueuedSink
from vuegraf.sinks.sqlite import SqliteSink
from vuegraf.stats import Stats


def build_store(config: Config) -> SeriesStore:
    """InfluxDB v1 or v2 when configured, else the embedded SQLite store."""
    station = config.add_station_field
    if isinstance(config.influx, InfluxV2Config):
        return InfluxV2Sink(config.influx, config.tags, station)
    if isinstance(config.influx, InfluxV1Config):
        return InfluxV1Sink(config.influx, config.tags, station)
    return SqliteSink(config.sqlite_path, config.tags, station)


def queue_path(config: Config, store: Sink, shard: Shard = WHOLE) -> Path:
    """The durable retry queue's file for `store`, in the state directory: one per process,
    so each replica of a shard has its own (`Shard.file_suffix`)."""
    assert config.state_dir is not None
    return config.state_dir / f"queue-{store.name}{shard.file_suffix}.sqlite"


def build_sinks(
    config: Config,
    dryrun: bool = False,
    out: TextIO | None = None,
    stats: Stats | None = None,
    clock: Clock | None = None,
    queued: bool = True,
    mqtt: bool = True,
    shard: Shard = WHOLE,
) -> list[Sink]:
    """The store (behind a durable retry queue in the state directory), plus MQTT if set.

    A dry run replaces them all: nothing is written or published. `queued=False`
    for one-shot writers (history import, reset), which retry on their own.
    """
    station = config.add_station_field
    if dryrun:
        return [DryRunSink(config.tags, station, out)]
    store: Sink = build_store(config)
    if queued and config.state_dir is not None:
        queue = DurableQueue(
            queue_path(config, store, shard), DEFAULT_MAX_POINTS, stats, store.name
        )
        store = QueuedSink(store, queue, stats, clock)
    sinks = [store]
    if mqtt and config.mqtt is not None:
        sinks.append(MqttSink(config.mqtt, config.tags, station, stats))
    return sinks
