"""Config → the sinks to write to. The one place that knows which sink a config means."""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from pathlib import Path
from typing import TextIO

from vuegraf.clock import Clock
from vuegraf.config import Config, InfluxV1Config, InfluxV2Config, MqttConfig
from vuegraf.consistency import ConsistencyCheck, ConsistencySink
from vuegraf.energy import EnergyLedger, EnergySink, ledger_path
from vuegraf.shard import WHOLE, Shard
from vuegraf.sinks.base import SeriesStore, Sink
from vuegraf.sinks.dryrun import DryRunSink
from vuegraf.sinks.homeassistant import STILL_THERE, Directory, HomeAssistant, state_file
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


def wants_ledger(config: Config) -> bool:
    """Energy counters are kept when something shows them: Prometheus or Home Assistant."""
    home_assistant = config.mqtt is not None and config.mqtt.home_assistant is not None
    return config.prometheus is not None or home_assistant


def build_ledger(config: Config, clock: Clock | None = None, shard: Shard = WHOLE) -> EnergyLedger:
    """The energy counters, kept in the state directory (one file per replica)."""
    return EnergyLedger(ledger_path(config.state_dir, shard.file_suffix), clock)


def availability_topic(mqtt: MqttConfig, shard: Shard = WHOLE) -> str:
    """The configured topic, with `/<i>-of-<n>` for one replica of several: each replica has
    its own last will, so one that dies marks only its own entities unavailable."""
    if not shard.sharded:
        return mqtt.availability_topic
    return f"{mqtt.availability_topic}/{shard.index}-of-{shard.count}"


def build_sinks(
    config: Config,
    dryrun: bool = False,
    out: TextIO | None = None,
    stats: Stats | None = None,
    clock: Clock | None = None,
    queued: bool = True,
    mqtt: bool = True,
    shard: Shard = WHOLE,
    ledger: EnergyLedger | None = None,
    directory: Directory | None = None,
    owned: Collection[str] | None = None,
    check: ConsistencyCheck | None = None,
) -> list[Sink]:
    """The energy counters if `ledger` is given, then the store (behind a durable retry
    queue in the state directory), then MQTT if set, with Home Assistant discovery if set.

    A dry run replaces them all: nothing is written or published. `queued=False`
    for one-shot writers (history import, reset), which retry on their own. `directory`
    tells Home Assistant the accounts' devices; `owned`: the accounts this process collects.
    `check`: the consistency check, fed after the store with what it was handed.
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
    # The counters first: a minute is counted before it is stored (energy.py says why).
    sinks: list[Sink] = [] if ledger is None else [EnergySink(ledger)]
    sinks.append(store)
    if check is not None:
        sinks.append(ConsistencySink(check))
    if mqtt and config.mqtt is not None:
        available = availability_topic(config.mqtt, shard)
        home_assistant = None
        ha_config = config.mqtt.home_assistant
        if ha_config is not None:
            if ledger is None:
                raise ValueError("Home Assistant discovery needs the energy ledger")
            home_assistant = HomeAssistant(
                ha_config,
                topic_prefix=config.mqtt.topic_prefix,
                availability_topic=available,
                ledger=ledger,
                directory=directory if directory is not None else list,
                accounts=[a.name for a in config.accounts],
                owned=owned,
                update_interval_secs=config.update_interval_secs,
                state_path=state_file(config.state_dir, shard.file_suffix),
                gone_after=max(STILL_THERE, timedelta(seconds=2 * config.device_refresh_secs)),
            )
        sinks.append(
            MqttSink(
                config.mqtt,
                config.tags,
                station,
                stats,
                home_assistant=home_assistant,
                availability_topic=available,
            )
        )
    return sinks
