"""The `GraphReader` of the store a config names: the one choice of store for graphs."""

from __future__ import annotations

import importlib
from typing import cast

from vuegraf.config import Config
from vuegraf.graphs.read import GraphReader, SqliteGraphReader
from vuegraf.sinks.base import StoreReadError

REMOTE = "vuegraf.graphs.remote"


def reader_for(config: Config) -> GraphReader:
    """The embedded SQLite store unless InfluxDB is configured (as `build_store` chooses).

    The InfluxDB readers are imported only when asked for: drawing a SQLite store's graphs
    needs none of their code."""
    if config.influx is None:
        return SqliteGraphReader(config.sqlite_path, config.tags)
    try:
        remote = importlib.import_module(REMOTE)
    except ModuleNotFoundError as err:
        if err.name != REMOTE:
            raise
        raise StoreReadError(
            "graphs from InfluxDB are not in this version of vuegraf", retryable=False,
            unsupported=True,
        ) from None
    return cast(GraphReader, remote.build_reader(config))
