"""InfluxDB v1 and v2 behind the one sink contract, chosen once at start-up.

Both write the same line protocol (see lineproto.py) with second precision and
turn client exceptions into `SinkError(retryable=...)`: network trouble, 5xx,
429 and 401/403/404 are retryable, any other 4xx means bad data.

Both read back (`last_times`, for gap backfill) through the same readers
(readback.py): InfluxQL over `/query` first, which InfluxDB 1.x, 2.x (its 1.x
compatibility API) and 3 answer, then the Prometheus query API for
VictoriaMetrics. There is no Flux anywhere: one query text, run in the tests
against a real InfluxDB 1.x.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from vuegraf.config import InfluxV1Config, InfluxV2Config, TagConfig
from vuegraf.model import MEASUREMENT, Point, Scale
from vuegraf.sinks.base import SeriesStore, SinkError, StoreReadError, classify_status
from vuegraf.sinks.lineproto import encode_all
from vuegraf.sinks.readback import (
    DEFAULT_TIMEOUT_SECS,
    FirstAnswering,
    HttpEndpoint,
    InfluxQLReader,
    PrometheusReader,
)

if TYPE_CHECKING:
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write_api import WriteApi

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000
V2_CLIENT_TIMEOUT_MS = 10_000  # influxdb-client's own default


def _timeout_secs(timeout_ms: int | None) -> float:
    """The configured `timeout` (ms) in seconds, or the default: without a timeout, a host
    that never answers would hang the loop for ever."""
    return timeout_ms / 1000.0 if timeout_ms else DEFAULT_TIMEOUT_SECS


def _chunks(lines: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(lines), size):
        yield lines[i : i + size]


class InfluxV1Sink(SeriesStore):
    """InfluxDB 1.x through the `influxdb` client; creates the database on first write."""

    name = "influxdb-v1"

    def __init__(self, cfg: InfluxV1Config, tags: TagConfig, add_station: bool) -> None:
        self.cfg = cfg
        self.tags = tags
        self.add_station = add_station
        self._client: Any = None  # influxdb.InfluxDBClient (the package has no type hints)
        self._database_ready = False
        self._http: HttpEndpoint | None = None
        self._reader: FirstAnswering | None = None

    def open(self) -> None:
        import influxdb

        timeout = _timeout_secs(self.cfg.timeout_ms)
        self._http, influxql, prometheus = read_apis(self.cfg, self.tags, self.add_station)
        self._reader = FirstAnswering(self.name, [influxql, prometheus])
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
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("sink is not open")
        return self._client

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        lines = encode_all(points, self.tags, self.add_station)
        if not self._database_ready:
            self._create_database()
        with _v1_errors("the write"):
            for chunk in _chunks(lines, BATCH_SIZE):
                self.client.write_points(chunk, time_precision="s", protocol="line")

    def _create_database(self) -> None:
        """CREATE DATABASE when SHOW DATABASES does not list it, as upstream created it: a
        first start against a new InfluxDB just works. A user without admin rights may not
        create it, and need not when it exists: then it is a warning, not a failed write."""
        import influxdb.exceptions

        with _v1_errors("creating the database"):  # unreachable or 5xx: retried later
            try:
                listed = {str(d.get("name")) for d in self.client.get_list_database()}
                if self.cfg.database not in listed:
                    self.client.create_database(self.cfg.database)
                    logger.info("InfluxDB: created database %s", self.cfg.database)
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
        """One query per (account, scale): the newest point of each series (readback.py)."""
        if self._reader is None:
            raise RuntimeError("sink is not open")
        if not self._database_ready:
            # Created before the first read back too, so a first start reads an empty
            # database; not in open(), which must not wait on a host that does not answer.
            # Unreachable: the read would be too; the caller asks again later.
            try:
                self._create_database()
            except SinkError as err:
                raise StoreReadError(str(err), retryable=err.retryable) from None
        return self._reader.last_times(account, scale, since, until)

    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], list[datetime]]:
        """Every point's time per series (readback.py); never creates the database: one
        that does not exist yet holds nothing."""
        if self._reader is None:
            raise RuntimeError("sink is not open")
        return self._reader.stored_times(account, scale, since, until)

    def delete_all(self, now: datetime) -> int:
        """--resetdatabase: drop the energy_usage series; returns how many points they held."""
        with _v1_errors("the delete"):
            counted = self.client.query(f'SELECT count("usage") FROM "{MEASUREMENT}"')
            total = sum(int(row["count"]) for row in counted.get_points())
            self.client.delete_series(measurement=MEASUREMENT)
        return total

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        self._reader = None
        if self._client is not None:
            self._client.close()
            self._client = None


def read_apis(
    cfg: InfluxV1Config | InfluxV2Config, tags: TagConfig, add_station: bool
) -> tuple[HttpEndpoint, InfluxQLReader, PrometheusReader]:
    """The store's endpoint and its two read APIs, in the order they are tried: InfluxQL
    (InfluxDB 1.x, 2.x, 3), then the Prometheus API (VictoriaMetrics). The backfill and the
    graphs read through these same pieces."""
    timeout = _timeout_secs(cfg.timeout_ms)
    if isinstance(cfg, InfluxV1Config):
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        scheme = "https" if cfg.ssl_enable else "http"
        credentials = (
            (cfg.user, cfg.password) if cfg.user is not None and cfg.password is not None else None
        )
        http = HttpEndpoint(
            f"{scheme}://{host}:{cfg.port}",
            basic=credentials,
            verify=cfg.ssl_verify,
            timeout=timeout,
        )
        # A database that does not exist yet holds nothing: the v1 sink's write() creates it.
        influxql = InfluxQLReader(
            http, cfg.database, tags, add_station, missing_database_is_empty=True
        )
    else:
        http = HttpEndpoint(cfg.url, token=cfg.token, verify=cfg.ssl_verify, timeout=timeout)
        database, _, policy = cfg.bucket.partition("/")
        influxql = InfluxQLReader(
            http, database, tags, add_station, retention_policy=policy or None
        )
    return http, influxql, PrometheusReader(http, tags, add_station)


@contextmanager
def _v1_errors(what: str) -> Iterator[None]:
    """Translate influxdb/requests exceptions into SinkError; `what` failed ("the write")."""
    import influxdb.exceptions
    import requests

    try:
        yield
    except influxdb.exceptions.InfluxDBServerError as err:
        raise SinkError(
            f"InfluxDB server error on {what}: {_short(err)}", retryable=True
        ) from None
    except influxdb.exceptions.InfluxDBClientError as err:
        code = getattr(err, "code", None)
        raise SinkError(
            f"InfluxDB rejected {what} ({code}): {_short(err)}",
            retryable=classify_status(code),
        ) from None
    except (requests.exceptions.RequestException, OSError) as err:
        raise SinkError(f"InfluxDB unreachable: {type(err).__name__}", retryable=True) from None


class InfluxV2Sink(SeriesStore):
    """InfluxDB 2.x through `influxdb-client`, synchronous writes in batches."""

    name = "influxdb-v2"

    def __init__(self, cfg: InfluxV2Config, tags: TagConfig, add_station: bool) -> None:
        self.cfg = cfg
        self.tags = tags
        self.add_station = add_station
        self._client: InfluxDBClient | None = None
        self._write_api: WriteApi | None = None
        self._http: HttpEndpoint | None = None
        self._reader: FirstAnswering | None = None

    def open(self) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        client = InfluxDBClient(
            url=self.cfg.url,
            token=self.cfg.token,
            org=self.cfg.org,
            timeout=self.cfg.timeout_ms or V2_CLIENT_TIMEOUT_MS,
            verify_ssl=self.cfg.ssl_verify,
        )
        self._client = client
        self._write_api = client.write_api(write_options=SYNCHRONOUS)
        self._http, influxql, prometheus = read_apis(self.cfg, self.tags, self.add_station)
        self._reader = FirstAnswering(self.name, [influxql, prometheus])
        logger.info("InfluxDB v2 at %s, bucket %s", self.cfg.url, self.cfg.bucket)

    def write(self, points: Sequence[Point]) -> None:
        if not points:
            return
        if self._write_api is None:
            raise RuntimeError("sink is not open")
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        lines = encode_all(points, self.tags, self.add_station)
        for chunk in _chunks(lines, BATCH_SIZE):
            try:
                self._write_api.write(
                    bucket=self.cfg.bucket,
                    org=self.cfg.org,
                    record=chunk,
                    # WritePrecision.S is the string "s", typed str, not the class itself.
                    write_precision=cast(WritePrecision, WritePrecision.S),
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
        """One query per (account, scale): the newest point of each series (readback.py)."""
        if self._reader is None:
            raise RuntimeError("sink is not open")
        return self._reader.last_times(account, scale, since, until)

    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> dict[tuple[str, str], list[datetime]]:
        """Every point's time per series (readback.py)."""
        if self._reader is None:
            raise RuntimeError("sink is not open")
        return self._reader.stored_times(account, scale, since, until)

    def delete_all(self, now: datetime) -> int | None:
        """--resetdatabase: delete measurement energy_usage from the bucket (delete API).

        The delete API does not say how much it removed: returns None. Untested against a
        real InfluxDB 2 (none can run where the tests run; README, "Stores").
        """
        if self._client is None:
            raise RuntimeError("sink is not open")
        from influxdb_client.rest import ApiException

        try:
            self._client.delete_api().delete(
                start="1970-01-01T00:00:00Z",
                stop=_rfc3339(now),
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
        if self._http is not None:
            self._http.close()
            self._http = None
        self._reader = None
        if self._write_api is not None:
            self._write_api.close()
            self._write_api = None
        if self._client is not None:
            self._client.close()
            self._client = None


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(err: object) -> str:
    text = str(err).strip().replace("\n", " ")
    return text[:300]
