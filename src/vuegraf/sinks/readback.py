"""Reading back where each series ends (for gap backfill): one reader per read API.

vuegraf asks the store once per account and scale at start-up for the newest stored time of
each series (`SeriesStore.last_times`); `vuegraf coverage` asks the same readers for every
stored time of each series, a bounded window at a time (`SeriesStore.stored_times`).
Which API can answer depends on the server behind the URL, not on anything the user
configures, so the InfluxDB sinks try the readers in order and keep the first that answers:

1. `InfluxQLReader`: InfluxQL over the InfluxDB 1.x `/query` API. InfluxDB 1.x serves it;
   InfluxDB 2.x serves it as its 1.x compatibility API (2.7+ maps every bucket to a virtual
   database named after the bucket, or "db/rp" split at the slash); InfluxDB 3 Core and
   Enterprise serve it natively. The same query text for every one of them: the v1 sink
   authenticates with user and password (HTTP Basic), the v2 sink with its token
   (`Authorization: Token ...`).
2. `PrometheusReader`: MetricsQL `tlast_over_time` over the Prometheus query API
   (`/api/v1/query`); for `stored_times`, the bare range selector, whose raw samples an
   instant query answers. This is for VictoriaMetrics, which takes InfluxDB writes (field
   `usage` of `energy_usage` becomes metric `energy_usage_usage`, tags become labels) but
   answers any `/query` with a canned SHOW DATABASES reply.

`FirstAnswering` passes a reader over only when the server shows it does not offer that API
(`StoreReadError.unsupported`): 404, 405 or 501, a 400 saying the path is unsupported, or a
200 that is not that API's answer (VictoriaMetrics' canned reply, a web UI's page). Any other
failure (unreachable, 5xx, 401/403) is the store's answer and is raised as it is; retryable
ones are simply asked again later. When no reader answers, the error is non-retryable: the
caller turns backfill from the store off and keeps collecting.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import requests

from vuegraf.config import TagConfig
from vuegraf.model import FIELD, MEASUREMENT, Scale
from vuegraf.sinks.base import StoreReadError, ceil_seconds, classify_status

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECS = 30.0

LastTimes = dict[tuple[str, str], datetime]
StoredTimes = dict[tuple[str, str], list[datetime]]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


R = TypeVar("R", bound=_Named)
T = TypeVar("T")


class StoreReader(Protocol):
    """One read API: the newest stored time of each series of one account and scale in
    [since, until), keyed by (station name or "" when `add_station` is off, channel name),
    and every stored time of each (`stored_times`, for `vuegraf coverage`)."""

    name: str

    def last_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> LastTimes: ...

    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> StoredTimes: ...


class HttpEndpoint:
    """A server's base URL with its credentials: HTTP Basic (`basic`) or a token header."""

    def __init__(
        self,
        base_url: str,
        *,
        basic: tuple[str, str] | None = None,
        token: str | None = None,
        verify: bool = True,
        timeout: float = DEFAULT_TIMEOUT_SECS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.verify = verify
        self.timeout = timeout
        self._basic = basic
        self._headers = {"Authorization": f"Token {token}"} if token is not None else {}
        self._session: requests.Session | None = None

    def get(self, path: str, params: Mapping[str, str], reader: str) -> tuple[int, str]:
        """(status, body) of a GET; unreachable, timeouts and TLS failures are retryable."""
        if self._session is None:
            self._session = requests.Session()
            self._session.headers.update(self._headers)
            if self._basic is not None:
                self._session.auth = self._basic
        try:
            response = self._session.get(
                self.base_url + path, params=params, timeout=self.timeout, verify=self.verify
            )
        except (requests.exceptions.RequestException, OSError) as err:
            # The exception's text holds the URL with the query; the type says enough.
            raise StoreReadError(
                f"{reader}: store unreachable ({type(err).__name__})", retryable=True
            ) from None
        return response.status_code, response.text

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


# -- InfluxQL ----------------------------------------------------------------------------------


def influxql_string(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_ident(value: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxQLReader:
    """`SELECT last("usage") ... GROUP BY "device_name"[, "station_name"]` over `/query`.

    `missing_database_is_empty`: the v1 sink creates its database on the first write, so a
    database that does not exist yet simply holds nothing. For InfluxDB 2/3 a missing
    database means the bucket has no (virtual) mapping: that read cannot work, and is
    reported as such (non-retryable).
    """

    name = "InfluxQL /query"

    def __init__(
        self,
        http: HttpEndpoint,
        database: str,
        tags: TagConfig,
        add_station: bool,
        *,
        retention_policy: str | None = None,
        missing_database_is_empty: bool = False,
    ) -> None:
        self.http = http
        self.database = database
        self.retention_policy = retention_policy
        self.tags = tags
        self.add_station = add_station
        self.missing_database_is_empty = missing_database_is_empty

    def query(
        self, account: str, scale: Scale, since: datetime, until: datetime, every: bool = False
    ) -> str:
        """`last("usage")` per series; `every`: each point's "usage" (its time is the answer)."""
        group = '"device_name", "station_name"' if self.add_station else '"device_name"'
        field = influxql_ident(FIELD) if every else f"last({influxql_ident(FIELD)})"
        return (
            f"SELECT {field} FROM {influxql_ident(MEASUREMENT)} "
            f'WHERE "account_name" = {influxql_string(account)} '
            f"AND {influxql_ident(self.tags.name)} = {influxql_string(self.tags.value(scale))} "
            f"AND time >= {ceil_seconds(since)}s AND time < {ceil_seconds(until)}s "
            f"GROUP BY {group}"
        )

    def last_times(self, account: str, scale: Scale, since: datetime, until: datetime) -> LastTimes:
        times: LastTimes = {}
        for item in self.run(self.query(account, scale, since, until)):
            columns = item["columns"]
            if "time" not in columns:
                raise _not_this_api(self.name, str(item))
            at = columns.index("time")
            key = self.key(item)
            for row in item.get("values") or []:
                if not isinstance(row, list) or len(row) <= at or row[at] is None:
                    continue
                t = _parse_time(row[at], self.name)
                times[key] = max(t, times.get(key, t))
        return times

    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> StoredTimes:
        seen: dict[tuple[str, str], set[datetime]] = {}
        for item in self.run(self.query(account, scale, since, until, every=True)):
            columns = item["columns"]
            if "time" not in columns:
                raise _not_this_api(self.name, str(item))
            at = columns.index("time")
            times = seen.setdefault(self.key(item), set())
            for row in item.get("values") or []:
                if isinstance(row, list) and len(row) > at and row[at] is not None:
                    times.add(_parse_time(row[at], self.name))
        return {key: sorted(times) for key, times in seen.items()}

    def key(self, item: Mapping[str, Any]) -> tuple[str, str]:
        """The (station or "", channel) of one answered series, from its GROUP BY tags."""
        tags = item.get("tags") or {}
        station = str(tags.get("station_name") or "") if self.add_station else ""
        return station, str(tags.get("device_name") or "")

    def run(self, query: str, *, measurement: str | None = MEASUREMENT) -> list[dict[str, Any]]:
        """The series of a one-statement InfluxQL answer, each with a `columns` list; every
        failure classified (missing database, not InfluxQL, the store's own refusal).

        `measurement`: the name every answered series must carry (VictoriaMetrics answers
        every `/query` with its canned SHOW DATABASES reply); None for SHOW statements.
        """
        params = {"db": self.database, "q": query, "epoch": "s"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        status, text = self.http.get("/query", params, self.name)
        answer = _json(text)
        error = _influxql_error(answer)
        if error is not None and any(words in error.lower() for words in _NO_DATABASE):
            if self.missing_database_is_empty:
                logger.debug("%s: database %s does not exist yet", self.name, self.database)
                return []
            raise StoreReadError(
                f"{self.name}: no database {self.database!r} ({_short(error)}); InfluxDB 2 maps "
                "a bucket to a database from 2.7 on, older ones need a DBRP mapping",
                retryable=False,
            )
        if status != 200:
            raise _status_error(self.name, status, error or text)
        if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
            raise StoreReadError(
                f"{self.name}: the answer is not InfluxQL's ({_short(text)})",
                retryable=False,
                unsupported=True,
            )
        if error is not None:
            retryable = any(word in error.lower() for word in ("timeout", "timed out", "authoriz"))
            raise StoreReadError(f"{self.name}: {_short(error)}", retryable=retryable)
        results = answer["results"]
        first = results[0] if results else {}
        series = (first.get("series") or []) if isinstance(first, dict) else None
        if not isinstance(series, list):
            raise _not_this_api(self.name, text)
        for item in series:
            if (
                not isinstance(item, dict)
                or (measurement is not None and item.get("name") != measurement)
                or not isinstance(item.get("columns"), list)
            ):
                raise _not_this_api(self.name, text)
        if isinstance(first, dict) and first.get("partial"):
            # The server cut the answer short (InfluxDB 1.x: max-row-limit): a graph drawn
            # from it would show a gap that is not in the store.
            raise StoreReadError(
                f"{self.name}: the store sent a partial answer (a row limit)", retryable=False
            )
        return series


# How InfluxDB 1.x/3 ("database not found: x") and 2.x ("no dbrp mapping for database ...")
# say that the database asked for does not exist.
_NO_DATABASE = ("database not found", "no dbrp mapping", "bucket not found")


def _influxql_error(answer: object) -> str | None:
    """The error of an InfluxQL answer: top level (`{"error": ...}`, InfluxDB 2's
    `{"code": ..., "message": ...}`) or of the statement."""
    if not isinstance(answer, dict):
        return None
    if isinstance(answer.get("error"), str):
        return str(answer["error"])
    if isinstance(answer.get("code"), str) and isinstance(answer.get("message"), str):
        return str(answer["message"])
    results = answer.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):
        error = results[0].get("error")
        if isinstance(error, str):
            return error
    return None


# -- Prometheus query API (VictoriaMetrics) ----------------------------------------------------

_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def promql_string(value: str) -> str:
    """A PromQL/MetricsQL string literal (Go syntax, which JSON's escapes are a subset of)."""
    return json.dumps(value, ensure_ascii=False)


class PrometheusReader:
    """MetricsQL `tlast_over_time(energy_usage_usage{...}[window])` at `until - 1 s`.

    A range selector at time T covers (T - window, T]; with T = until - 1 s and window =
    until - since, that is every whole second in [since, until). The answer's value is the
    time of each series' newest sample. `nocache=1`: VictoriaMetrics may otherwise answer
    from a cache that predates points written (or backfilled) since.
    """

    name = "Prometheus API /api/v1/query"

    def __init__(self, http: HttpEndpoint, tags: TagConfig, add_station: bool) -> None:
        self.http = http
        self.tags = tags
        self.add_station = add_station

    def query(
        self, account: str, scale: Scale, since: datetime, until: datetime, every: bool = False
    ) -> str:
        """`tlast_over_time` of the range; `every`: the bare range selector, whose answer at
        an instant is every raw sample in it (a matrix), as in Prometheus."""
        window = ceil_seconds(until) - ceil_seconds(since)
        selector = (
            f"{MEASUREMENT}_{FIELD}{{account_name={promql_string(account)},"
            f"{self.tags.name}={promql_string(self.tags.value(scale))}}}"
        )
        if every:
            return f"{selector}[{window}s]"
        return f"tlast_over_time({selector}[{window}s])"

    def last_times(self, account: str, scale: Scale, since: datetime, until: datetime) -> LastTimes:
        if ceil_seconds(until) <= ceil_seconds(since):
            self.check_labels()
            return {}
        params = {
            "query": self.query(account, scale, since, until),
            "time": str(ceil_seconds(until) - 1),
        }
        times: LastTimes = {}
        for item in self.run("/api/v1/query", params, "vector"):
            try:
                t = _parse_time(float(item["value"][1]), self.name)
            except (KeyError, IndexError, TypeError, ValueError):
                raise _not_this_api(self.name, str(item)) from None
            key = self.key(item["metric"])
            times[key] = max(t, times.get(key, t))
        return times

    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> StoredTimes:
        if ceil_seconds(until) <= ceil_seconds(since):
            self.check_labels()
            return {}
        params = {
            "query": self.query(account, scale, since, until, every=True),
            "time": str(ceil_seconds(until) - 1),
        }
        seen: dict[tuple[str, str], set[datetime]] = {}
        for item in self.run("/api/v1/query", params, "matrix"):
            samples = item.get("values")
            if not isinstance(samples, list):
                raise _not_this_api(self.name, str(item))
            times = seen.setdefault(self.key(item["metric"]), set())
            for sample in samples:
                try:
                    times.add(_parse_time(float(sample[0]), self.name))
                except (IndexError, TypeError, ValueError):
                    raise _not_this_api(self.name, str(item)) from None
        return {key: sorted(times) for key, times in seen.items()}

    def key(self, labels: Mapping[str, Any]) -> tuple[str, str]:
        """The (station or "", channel) of one answered series, from its labels."""
        station = str(labels.get("station_name", "")) if self.add_station else ""
        return station, str(labels.get("device_name", ""))

    def check_labels(self) -> None:
        if not _LABEL.match(self.tags.name):
            raise StoreReadError(
                f"{self.name}: tag name {self.tags.name!r} is not a label name",
                retryable=False,
                unsupported=True,
            )

    def run(
        self, path: str, params: Mapping[str, str], result_type: str
    ) -> list[dict[str, Any]]:
        """The `result` list of a query API answer of `result_type` ("vector", "matrix"),
        each item with a `metric` mapping; every failure classified as for `/query`."""
        self.check_labels()
        status, text = self.http.get(path, {**params, "nocache": "1"}, self.name)
        answer = _json(text)
        if status in (400, 422):
            # VictoriaMetrics: "unsupported path"; a Prometheus: no tlast_over_time.
            message = answer.get("error") if isinstance(answer, dict) else None
            raise StoreReadError(
                f"{self.name}: HTTP {status}: {_short(message or text)}",
                retryable=False,
                unsupported=True,
            )
        if status != 200:
            raise _status_error(self.name, status, text)
        data = answer.get("data") if isinstance(answer, dict) else None
        if (
            not isinstance(answer, dict)
            or answer.get("status") != "success"
            or not isinstance(data, dict)
            or data.get("resultType") != result_type
            or not isinstance(data.get("result"), list)
        ):
            raise _not_this_api(self.name, text)
        result: list[object] = data["result"]
        items: list[dict[str, Any]] = []
        for item in result:
            if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
                raise _not_this_api(self.name, text)
            items.append(item)
        return items


# -- choosing --------------------------------------------------------------------------------


class FirstOf(Generic[R]):
    """Asks through the first of `readers` the server offers, and remembers which.

    Readers found unsupported are not asked again; nor is anything once none answered.
    `what` says in the log what the chosen reader is used for. The choosing is done under a
    lock: the graphs page asks from several request threads at once, and two threads passing
    over the same reader must not pass over the next one too.
    """

    def __init__(self, store: str, readers: Sequence[R], what: str = "reading back") -> None:
        self.store = store
        self.readers = list(readers)
        self.what = what
        self.chosen: R | None = None
        self._passed_over: list[str] = []
        self._choosing = threading.Lock()

    def ask(self, question: Callable[[R], T]) -> T:
        chosen = self.chosen
        if chosen is not None:
            return question(chosen)
        with self._choosing:
            chosen = self.chosen
            if chosen is not None:  # another thread chose while this one waited
                return question(chosen)
            while self.readers:
                reader = self.readers[0]
                try:
                    answer = question(reader)
                except StoreReadError as err:
                    if not err.unsupported:
                        raise
                    self.readers.remove(reader)
                    self._passed_over.append(str(err))
                    logger.info("%s: %s", self.store, err)
                    continue
                self.chosen = reader
                logger.info("%s: %s through %s", self.store, self.what, reader.name)
                return answer
            raise StoreReadError(
                "no read API answered: " + "; ".join(self._passed_over), retryable=False
            )


class FirstAnswering(FirstOf[StoreReader]):
    """The backfill's read back through the first read API the server answers."""

    def last_times(self, account: str, scale: Scale, since: datetime, until: datetime) -> LastTimes:
        return self.ask(lambda reader: reader.last_times(account, scale, since, until))

    def stored_times(
        self, account: str, scale: Scale, since: datetime, until: datetime
    ) -> StoredTimes:
        return self.ask(lambda reader: reader.stored_times(account, scale, since, until))


# -- helpers ---------------------------------------------------------------------------------


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _parse_time(value: object, reader: str) -> datetime:
    if isinstance(value, bool):
        raise StoreReadError(f"{reader}: unreadable time {value!r}", retryable=False)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(math.floor(value), UTC)
    if isinstance(value, str):  # RFC 3339, when a server ignores epoch=s
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.astimezone(UTC).replace(microsecond=0)
    raise StoreReadError(f"{reader}: unreadable time {value!r}", retryable=False)


def _status_error(reader: str, status: int, text: str) -> StoreReadError:
    """A non-200 answer: the API missing, or the store's own (retryable or not) refusal."""
    message = f"{reader}: HTTP {status}: {_short(text)}"
    if status in (404, 405, 501) or (status == 400 and "unsupported path" in text.lower()):
        return StoreReadError(message, retryable=False, unsupported=True)
    return StoreReadError(message, retryable=classify_status(status))


def _not_this_api(reader: str, text: str) -> StoreReadError:
    return StoreReadError(
        f"{reader}: the answer is not this API's ({_short(text)})",
        retryable=False,
        unsupported=True,
    )


def _short(text: object) -> str:
    """One line of at most 300 characters, HTML tags (an error page's) left out."""
    return " ".join(re.sub(r"<[^>]*>", " ", str(text)).split())[:300]
