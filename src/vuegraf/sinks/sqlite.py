"""The embedded store used when the config has no `influxDb` section.

One row per point. The primary key is InfluxDB's series identity plus time
(measurement is implicit; station only when `addStationField` is on, as in
InfluxDB), so writing the same point again replaces it instead of duplicating.
Amps and volts (`ampsVolts`) have a table of their own, so no read of usage sees them.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from vuegraf.config import TagConfig
from vuegraf.model import Point, Scale, Unit
from vuegraf.sinks.base import SeriesStore, SinkError, StoreReadError, ceil_seconds
from vuegraf.sinks.lineproto import point_tags

logger = logging.getLogger(__name__)


SCHEMA = """
CREATE TABLE IF NOT EXISTS energy_usage (
    account_name TEXT NOT NULL,
    device_name  TEXT NOT NULL,   -- the channel (circuit), as in InfluxDB
    station_name TEXT NOT NULL,   -- the device; '' unless addStationField
    detailed     TEXT NOT NULL,   -- the scale tag value: True, False, Hour, Day
    time         INTEGER NOT NULL, -- Unix seconds, UTC
    usage        REAL NOT NULL,   -- watts (Wh for day points)
    PRIMARY KEY (account_name, device_name, station_name, detailed, time)
) WITHOUT ROWID;
-- Amps and volts (an account's ampsVolts) apart from usage: nothing that reads usage sees
-- them. One row per channel and bucket, as InfluxDB keeps the two fields of one point.
CREATE TABLE IF NOT EXISTS energy_amps_volts (
    account_name TEXT NOT NULL,
    device_name  TEXT NOT NULL,
    station_name TEXT NOT NULL,
    detailed     TEXT NOT NULL,   -- the scale tag value: 15Min or Hour
    time         INTEGER NOT NULL, -- Unix seconds, UTC: the bucket's start
    amps         REAL,            -- mean current over the bucket (A); NULL: not known
    volts        REAL,            -- voltage over the bucket (V); NULL: not known
    PRIMARY KEY (account_name, device_name, station_name, detailed, time)
) WITHOUT ROWID;
"""
# Amps and volts rows: one upsert per unit, each setting its own column only.
_KEY_COLUMNS = "account_name, device_name, station_name, detailed, time"
_UPSERT = {
    unit: f"INSERT INTO energy_amps_volts ({_KEY_COLUMNS}, {unit.field}) "
    f"VALUES (?, ?, ?, ?, ?, ?) "
    f"ON CONFLICT ({_KEY_COLUMNS}) DO UPDATE SET {unit.field} = excluded.{unit.field}"
    for unit in (Unit.AMPS, Unit.VOLTS)
}


class SqliteSink(SeriesStore):
    """SQLite file store; WAL mode so readers (the demo, sqlite3 CLI) never block writes."""

    name = "sqlite"

    def __init__(self, path: Path, tags: TagConfig, add_station: bool) -> None:
        self.path = Path(path)
        self.tags = tags
        self.add_station = add_station
        self._db: sqlite3.Connection | None = None
        # One connection for writes (the fan-out's thread of the moment) and reads (the
        # accounts' threads at start): one statement at a time on it.
        self._lock = threading.Lock()

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as err:
            message = f"cannot open SQLite store {self.path}: {err}"
            raise SinkError(message, retryable=True) from None
        self._db = db
        logger.info("Embedded SQLite store at %s", self.path)

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        if self._db is None:
            raise RuntimeError("sink is not open")
        rows: dict[Unit, list[tuple[str, str, str, str, int, float]]] = {}
        for p in points:
            tags = point_tags(p, self.tags, self.add_station)
            rows.setdefault(p.unit, []).append(
                (
                    p.account,
                    p.channel,
                    tags.get("station_name", ""),
                    tags[self.tags.name],
                    p.epoch_s,
                    p.watts,
                )
            )
        try:
            with self._lock, self._db:
                for unit, unit_rows in rows.items():
                    statement = (
                        "INSERT OR REPLACE INTO energy_usage VALUES (?, ?, ?, ?, ?, ?)"
                        if unit is Unit.WATTS
                        else _UPSERT[unit]
                    )
                    self._db.executemany(statement, unit_rows)
        except (sqlite3.IntegrityError, sqlite3.DataError) as err:
            # Bad data stays bad: retrying it would block the queue behind it forever.
            raise SinkError(f"SQLite rejected the write: {err}", retryable=False) from None
        except sqlite3.Error as err:  # locked, disk full, I/O: may pass later
            raise SinkError(f"SQLite write failed: {err}", retryable=True) from None

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]:
        if self._db is None:
            raise RuntimeError("sink is not open")
        try:
            with self._lock:
                rows = self._read_last(account, scale, since, until)
        except sqlite3.Error as err:  # e.g. locked by another process for too long
            raise StoreReadError(f"SQLite read failed: {err}", retryable=True) from None
        times: dict[tuple[str, str], datetime] = {}
        for station, channel, t in rows:
            # Rows written with addStationField on, read with it off: one series per channel.
            key = (station if self.add_station else "", channel)
            stamp = datetime.fromtimestamp(t, UTC)
            times[key] = max(stamp, times.get(key, stamp))
        return times

    def _read_last(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> list[tuple[str, str, int]]:
        assert self._db is not None
        return self._db.execute(
            "SELECT station_name, device_name, MAX(time) FROM energy_usage "
            "WHERE account_name = ? AND detailed = ? AND time >= ? AND time < ? "
            "GROUP BY station_name, device_name",
            (account, self.tags.value(scale), ceil_seconds(since), ceil_seconds(until)),
        ).fetchall()

    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], list[datetime]]:
        """Every point's time per series in [since, until). One query per series, naming the
        whole primary key: a query naming only the account would walk all of its rows, every
        day of every series, for each window asked."""
        if self._db is None:
            raise RuntimeError("sink is not open")
        window = (self.tags.value(scale), ceil_seconds(since), ceil_seconds(until))
        seen: dict[tuple[str, str], set[int]] = {}
        try:
            with self._lock:
                for channel, station in self._series(account):
                    rows = self._db.execute(
                        "SELECT time FROM energy_usage WHERE account_name = ? AND "
                        "device_name = ? AND station_name = ? AND detailed = ? AND time >= ? "
                        "AND time < ?",
                        (account, channel, station, *window),
                    ).fetchall()
                    if rows:
                        key = (station if self.add_station else "", channel)
                        seen.setdefault(key, set()).update(t for (t,) in rows)
        except sqlite3.Error as err:
            raise StoreReadError(f"SQLite read failed: {err}", retryable=True) from None
        return {
            key: [datetime.fromtimestamp(t, UTC) for t in sorted(ts)] for key, ts in seen.items()
        }

    def _series(self, account: str) -> list[tuple[str, str]]:
        """The account's (channel, station) pairs, each found by one seek of the primary key
        (the next name after the last), not by reading the rows."""
        assert self._db is not None
        db = self._db
        pairs: list[tuple[str, str]] = []
        channel = db.execute(
            "SELECT MIN(device_name) FROM energy_usage WHERE account_name = ?", (account,)
        ).fetchone()[0]
        while channel is not None:
            station = db.execute(
                "SELECT MIN(station_name) FROM energy_usage WHERE account_name = ? "
                "AND device_name = ?",
                (account, channel),
            ).fetchone()[0]
            while station is not None:
                pairs.append((channel, station))
                station = db.execute(
                    "SELECT MIN(station_name) FROM energy_usage WHERE account_name = ? "
                    "AND device_name = ? AND station_name > ?",
                    (account, channel, station),
                ).fetchone()[0]
            channel = db.execute(
                "SELECT MIN(device_name) FROM energy_usage WHERE account_name = ? "
                "AND device_name > ?",
                (account, channel),
            ).fetchone()[0]
        return pairs

    def delete_all(self, now: datetime) -> int:
        """--resetdatabase: remove every vuegraf row; returns how many."""
        if self._db is None:
            raise RuntimeError("sink is not open")
        with self._lock, self._db:
            usage = self._db.execute("DELETE FROM energy_usage").rowcount
            return usage + self._db.execute("DELETE FROM energy_amps_volts").rowcount

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
