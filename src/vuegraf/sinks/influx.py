"""InfluxDB v1 and v2 behind the one sink contract, chosen once at start-up.

Both write the same line protocol (see lineproto.py) with second precision and
turn client exceptions into `SinkError(retryable=...)`: network trouble, 5xx
and 429 are retryable, any other 4xx means bad data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vuegraf.config import InfluxV1Config, InfluxV2Config, TagConfig
from vuegraf.model import MEASUREMENT, Point, Scale
from vuegraf.sinks.base import SinkError, classify_status
from vuegraf.sinks.lineproto import encode_all

if TYPE_CHECKING:
    import influxdb
    from influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import WriteApi

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000
DEFAULT_TIMEOUT_SECS = 30.0


def _chunks(lines: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(lines), size):
        yield lines[i : i + size]


class InfluxV1Sink:
    """InfluxDB 1.x through the `influxdb` client; creates the database on first write."""

    name = "influxdb-v1"

    def __init__(self, cfg: InfluxV1Config, tags: TagConfig, add_station: bool) -> None:
        self.cfg = cfg
        self.tags = tags
        self.add_station = add_station
        self._client: influxdb.InfluxDBClient | None = None
        self._database_ready = False

    def open(self) -> None:
        import influxdb

        # Without a timeout a host that never answers would hang the loop for ever.
        timeout = self.cfg.timeout_ms / 1000.0 if self.cfg.timeout_ms else DEFAULT_TIMEOUT_SECS
        self._client = influxdb.InfluxDBClient(
            host=self.cfg.host,
            port=self.cfg.port,
            username=self.cfg.user or "root",
            password=self.cfg.password or "root",
            database=self.cfg.database,
            ssl=self.cfg.ssl_enable,
            verify_ssl=self.cfg.ssl_verify,
            timeout=timeout,
            retries=1,  # the durable queue retries; the client's own 3 would stall a stop
        )
        logger.info(
            "InfluxDB v1 at %s:%s, database %s", self.cfg.host, self.cfg.port, self.cfg.database
        )

    @property
    def client(self) -> influxdb.InfluxDBClient:
        if self._client is None:
            raise RuntimeError("sink is not open")
        return self._client

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        lines = encode_all(points, self.tags, self.add_station)
        if not self._database_ready:
            self._create_database()
        with _v1_errors():
            for chunk in _chunks(lines, BATCH_SIZE):
                self.client.write_points(chunk, time_precision="s", protocol="line")

    def _create_database(self) -> None:
        """CREATE DATABASE once, as upstream did; a user without admin rights may not, and
        need not when the database exists: then it is a warning, not a failed write."""
        import influxdb.exceptions

        with _v1_errors():  # unreachable or 5xx: a retryable failure of this write
            try:
                self.client.create_database(self.cfg.database)
            except influxdb.exceptions.InfluxDBClientError as err:
                logger.warning(
                    "InfluxDB: cannot create database %s (%s); writing to it anyway",
                    self.cfg.database,
                    _short(err),
                )
        self._database_ready = True

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]:
        """One InfluxQL query per (account, scale): the newest point of each series."""
        query = (
            f'SELECT last("usage") FROM "{MEASUREMENT}" '
            f"WHERE \"account_name\" = {_lit(account)} "
            f"AND {_ident(self.tags.name)} = {_lit(self.tags.value(scale))} "
            f"AND time >= {int(since.timestamp())}s AND time < {int(until.timestamp())}s "
            'GROUP BY "device_name", "station_name"'
        )
        with _v1_errors():
            result = self.client.query(query, epoch="s")
        times: dict[tuple[str, str], datetime] = {}
        for (_measurement, tags), rows in result.items():
            tags = tags or {}
            station = tags.get("station_name", "") if self.add_station else ""
            for row in rows:
                key = (station, tags.get("device_name", ""))
                t = datetime.fromtimestamp(row["time"], UTC)
                times[key] = max(t, times.get(key, t))
        return times

    def delete_all(self, now: datetime) -> int:
        """--resetdatabase: drop the energy_usage series; returns how many points they held."""
        with _v1_errors():
            counted = self.client.query(f'SELECT count("usage") FROM "{MEASUREMENT}"')
            total = sum(int(row["count"]) for row in counted.get_points())
            self.client.delete_series(measurement=MEASUREMENT)
        return total

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _quote(value: str, quote: str) -> str:
    """A string literal (quote ') or identifier (quote ") for InfluxQL and Flux."""
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def _lit(value: str) -> str:
    """InfluxQL string literal."""
    return _quote(value, "'")


def _ident(value: str) -> str:
    """InfluxQL identifier, or Flux string literal (both double-quoted)."""
    return _quote(value, '"')


@contextmanager
def _v1_errors() -> Iterator[None]:
    """Translate influxdb/requests exceptions into SinkError."""
    import influxdb.exceptions
    import requests

    try:
        yield
    except influxdb.exceptions.InfluxDBServerError as err:
        raise SinkError(f"InfluxDB server error: {_short(err)}", retryable=True) from None
    except influxdb.exceptions.InfluxDBClientError as err:
        code = getattr(err, "code", None)
        raise SinkError(
            f"InfluxDB rejected the write ({code}): {_short(err)}",
            retryable=classify_status(code),
        ) from None
    except (requests.exceptions.RequestException, OSError) as err:
        raise SinkError(f"InfluxDB unreachable: {type(err).__name__}", retryable=True) from None


class InfluxV2Sink:
    """InfluxDB 2.x through `influxdb-client`, synchronous writes in batches."""

    name = "influxdb-v2"

    def __init__(self, cfg: InfluxV2Config, tags: TagConfig, add_station: bool) -> None:
        self.cfg = cfg
        self.tags = tags
        self.add_station = add_station
        self._client: InfluxDBClient | None = None
        self._write_api: WriteApi | None = None

    def open(self) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        kwargs: dict[str, Any] = {"timeout": self.cfg.timeout_ms} if self.cfg.timeout_ms else {}
        self._client = InfluxDBClient(
            url=self.cfg.url,
            token=self.cfg.token,
            org=self.cfg.org,
            verify_ssl=self.cfg.ssl_verify,
            **kwargs,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        logger.info("InfluxDB v2 at %s, bucket %s", self.cfg.url, self.cfg.bucket)

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        if self._write_api is None:
            raise RuntimeError("sink is not open")
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException

        lines = encode_all(points, self.tags, self.add_station)
        for chunk in _chunks(lines, BATCH_SIZE):
            try:
                self._write_api.write(
                    bucket=self.cfg.bucket,
                    org=self.cfg.org,
                    record=chunk,
                    # The client annotates an enum class whose members are plain str.
                    write_precision=WritePrecision.S,  # type: ignore[arg-type]
                )
            except ApiException as err:
                raise SinkError(
                    f"InfluxDB rejected the write ({err.status}): {_short(err.reason)}",
                    retryable=classify_status(err.status),
                ) from None
            except Exception as err:  # urllib3 connection/timeout errors of several types
                raise SinkError(
                    f"InfluxDB unreachable: {type(err).__name__}", retryable=True
                ) from None

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], datetime]:
        """One Flux query per (account, scale): the newest point of each series."""
        if self._client is None:
            raise RuntimeError("sink is not open")
        from influxdb_client.rest import ApiException

        query = (
            f"from(bucket: {_ident(self.cfg.bucket)})"
            f" |> range(start: {_flux_time(since)}, stop: {_flux_time(until)})"
            f' |> filter(fn: (r) => r._measurement == "{MEASUREMENT}" and r._field == "usage"'
            f" and r.account_name == {_ident(account)}"
            f" and r[{_ident(self.tags.name)}] == {_ident(self.tags.value(scale))})"
            ' |> group(columns: ["device_name", "station_name"])'
            " |> last()"
        )
        try:
            tables = self._client.query_api().query(query, org=self.cfg.org)
        except ApiException as err:
            raise SinkError(
                f"InfluxDB query failed ({err.status}): {_short(err.reason)}",
                retryable=classify_status(err.status),
            ) from None
        except Exception as err:
            raise SinkError(f"InfluxDB unreachable: {type(err).__name__}", retryable=True) from None
        times: dict[tuple[str, str], datetime] = {}
        for table in tables:
            for record in table.records:
                station = (record.values.get("station_name") or "") if self.add_station else ""
                key = (station, record.values.get("device_name") or "")
                t = record.get_time().astimezone(UTC)
                times[key] = max(t, times.get(key, t))
        return times

    def delete_all(self, now: datetime) -> int | None:
        """--resetdatabase: delete measurement energy_usage from the bucket (delete API).

        The delete API does not say how much it removed: returns None.
        """
        if self._client is None:
            raise RuntimeError("sink is not open")
        from influxdb_client.rest import ApiException

        try:
            self._client.delete_api().delete(
                start="1970-01-01T00:00:00Z",
                stop=_flux_time(now),
                predicate=f'_measurement="{MEASUREMENT}"',
                bucket=self.cfg.bucket,
                org=self.cfg.org,
            )
            return None
        except ApiException as err:
            raise SinkError(
                f"InfluxDB delete failed ({err.status}): {_short(err.reason)}",
                retryable=classify_status(err.status),
            ) from None

    def close(self) -> None:
        if self._write_api is not None:
            self._write_api.close()
            self._write_api = None
        if self._client is not None:
            self._client.close()
            self._client = None


def _flux_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(err: object) -> str:
    text = str(err).strip().replace("\n", " ")
    return text[:300]
