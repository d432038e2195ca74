"""Reading a window of stored series back, already reduced by the store to the graph's width.

A `GraphReader` answers three questions about one account's series (keyed like the store's
tags: station name or "" when `addStationField` is off, and channel name):

- `buckets`: min, mean and max of each series per `step`-second bucket of one scale (the
  store aggregates, so a year of a panel is a few thousand rows, not millions);
- `sums`: the sum of each series' values over a window (energy totals);
- `latest`: the newest value of each series in a window (the live watts).

`SqliteGraphReader` reads the embedded store. The InfluxDB (InfluxQL `/query`, which InfluxDB
2 and 3 answer through their 1.x API) and VictoriaMetrics (Prometheus query API) readers sit
beside the backfill readers in `vuegraf.sinks.readback`'s manner, in `vuegraf.graphs.remote`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from vuegraf.config import TagConfig
from vuegraf.model import Scale
from vuegraf.sinks.base import StoreReadError

SeriesKey = tuple[str, str]  # (station name or "", channel name)


@dataclass(frozen=True, slots=True)
class Bucket:
    """One series' values inside one bucket: the min, mean and max of its points."""

    low: float
    mean: float
    high: float


def bucket_points(points: Iterable[tuple[int, float]], start: int, step: int) -> dict[int, Bucket]:
    """Buckets of a series' (time, value) points, in Python: for a view whose buckets hold
    one point each (a day of minutes), reading the points is cheaper for every store than
    having it aggregate them."""
    groups: dict[int, list[float]] = {}
    for t, value in points:
        groups.setdefault(start + (t - start) // step * step, []).append(value)
    return {
        b: Bucket(values[0], values[0], values[0])
        if len(values) == 1
        else Bucket(min(values), sum(values) / len(values), max(values))
        for b, values in groups.items()
    }


BucketMap = dict[SeriesKey, dict[int, Bucket]]  # series -> bucket start -> values

# One series' points of one scale in a window: the whole primary key, in its order.
_ONE_SERIES = (
    "FROM energy_usage WHERE account_name = ? AND device_name = ? AND station_name = ? "
    "AND detailed = ? AND time >= ? AND time < ?"
)


class GraphReader(Protocol):
    """One store's read API for graphs. `series` limits the answer to those series (None: all
    of the account's); times are Unix seconds, windows [start, end)."""

    name: str

    def buckets(
        self,
        account: str,
        scale: Scale,
        series: Sequence[SeriesKey] | None,
        start: int,
        end: int,
        step: int,
    ) -> BucketMap: ...

    def sums(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> dict[SeriesKey, float]: ...

    def latest(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> dict[SeriesKey, tuple[int, float]]: ...

    def close(self) -> None: ...


@runtime_checkable
class ListsSeries(Protocol):
    """A reader that can also list the series it holds: what `vuegraf-graph` groups by when
    the daemon left no `layout.json`."""

    def series(self, account: str | None = None) -> dict[str, list[SeriesKey]]:
        """Each account's (or only `account`'s) series, sorted."""
        ...


class SqliteGraphReader:
    """The embedded store, read through a connection of its own (read-only, WAL: the daemon's
    writes are never blocked by a page being drawn).

    Every query names account, channel, station, scale and a time range, which is the whole
    primary key in order: SQLite walks exactly the rows of the window.
    """

    name = "sqlite"

    def __init__(self, path: Path, tags: TagConfig) -> None:
        self.path = Path(path)
        self.tags = tags
        # One connection, one statement at a time: the web server's request threads come and
        # go, and a connection per thread would outlive them.
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.exists():
                raise StoreReadError(f"SQLite store {self.path} does not exist yet", retryable=True)
            try:
                self._conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro", uri=True, timeout=10.0, check_same_thread=False
                )
            except sqlite3.Error as err:
                raise StoreReadError(f"cannot read SQLite store: {err}", retryable=True) from None
        return self._conn

    def _where(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> tuple[str, list[object]]:
        args: list[object] = [account]
        clause = "account_name = ?"
        if series is not None:
            channels = sorted({channel for _station, channel in series})
            stations = sorted({station for station, _channel in series})
            clause += f" AND device_name IN ({','.join('?' * len(channels))})"
            clause += f" AND station_name IN ({','.join('?' * len(stations))})"
            args += channels + stations
        clause += " AND detailed = ? AND time >= ? AND time < ?"
        args += [self.tags.value(scale), start, end]
        return clause, args

    def _rows(self, sql: str, args: Sequence[object]) -> list[Any]:
        try:
            with self._lock:
                return self._db().execute(sql, args).fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                return []
            raise StoreReadError(f"SQLite read failed: {err}", retryable=True) from None
        except sqlite3.Error as err:
            raise StoreReadError(f"SQLite read failed: {err}", retryable=True) from None

    def buckets(
        self,
        account: str,
        scale: Scale,
        series: Sequence[SeriesKey] | None,
        start: int,
        end: int,
        step: int,
    ) -> BucketMap:
        if series is not None and not series:
            return {}
        if series is None:
            where, args = self._where(account, scale, None, start, end)
            rows = self._rows(
                "SELECT station_name, device_name, (time - ?) / ? AS b, "
                "MIN(usage), AVG(usage), MAX(usage) "
                f"FROM energy_usage WHERE {where} GROUP BY station_name, device_name, b",
                [start, step, *args],
            )
            out: BucketMap = {}
            for station, channel, b, low, mean, high in rows:
                out.setdefault((str(station), str(channel)), {})[start + b * step] = Bucket(
                    low, mean, high
                )
            return out
        # One query per series: each groups one primary-key range, which SQLite sorts for its
        # GROUP BY far faster than one query over all of them (a year of a panel: 150 ms,
        # not 260 ms, for 158 000 hour points).
        tag = self.tags.value(scale)
        out = {}
        for station, channel in dict.fromkeys(series):
            one = [account, channel, station, tag, start, end]
            if step <= scale.seconds:
                points = self._rows(f"SELECT time, usage {_ONE_SERIES}", one)
                if points:
                    out[(station, channel)] = bucket_points(points, start, step)
                continue
            rows = self._rows(
                f"SELECT (time - ?) / ? AS b, MIN(usage), AVG(usage), MAX(usage) {_ONE_SERIES} "
                "GROUP BY b",
                [start, step, *one],
            )
            if rows:
                out[(station, channel)] = {
                    start + b * step: Bucket(low, mean, high) for b, low, mean, high in rows
                }
        return out

    def _per_series(
        self,
        what: str,
        account: str,
        scale: Scale,
        series: Sequence[SeriesKey] | None,
        start: int,
        end: int,
    ) -> list[tuple[SeriesKey, tuple[Any, ...]]]:
        """(key, values) of each wanted series: `what` over its points in the window."""
        if series is not None and not series:
            return []
        where, args = self._where(account, scale, series, start, end)
        rows = self._rows(
            f"SELECT station_name, device_name, {what} FROM energy_usage "
            f"WHERE {where} GROUP BY station_name, device_name",
            args,
        )
        wanted = None if series is None else set(series)
        out = []
        for station, channel, *values in rows:
            key = (str(station), str(channel))
            if wanted is None or key in wanted:
                out.append((key, tuple(values)))
        return out

    def sums(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> dict[SeriesKey, float]:
        found = self._per_series("SUM(usage)", account, scale, series, start, end)
        return {key: float(total) for key, (total,) in found}

    def latest(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> dict[SeriesKey, tuple[int, float]]:
        # SQLite takes the bare column's value from the row that holds MAX(time).
        found = self._per_series("MAX(time), usage", account, scale, series, start, end)
        return {key: (int(t), float(v)) for key, (t, v) in found}

    def series(self, account: str | None = None) -> dict[str, list[SeriesKey]]:
        # One index seek per series (the primary key starts with account, channel, station)
        # rather than a DISTINCT over every row: a store of years of minutes has millions.
        out: dict[str, list[SeriesKey]] = {}
        after: tuple[str, str, str] = (account or "", "", "")
        rows = self._rows(
            "SELECT account_name, device_name, station_name FROM energy_usage "
            "WHERE account_name >= ? ORDER BY 1, 2, 3 LIMIT 1",
            [after[0]],
        )
        while rows:
            name, channel, station = (str(v) for v in rows[0])
            if account is not None and name != account:
                break
            out.setdefault(name, []).append((station, channel))
            after = (name, channel, station)
            rows = self._rows(
                "SELECT account_name, device_name, station_name FROM energy_usage "
                "WHERE (account_name, device_name, station_name) > (?, ?, ?) "
                "ORDER BY 1, 2, 3 LIMIT 1",
                list(after),
            )
        return {name: sorted(keys) for name, keys in out.items()}

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
