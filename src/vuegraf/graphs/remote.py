"""Graph readers for InfluxDB (1.x, 2.x, 3) and VictoriaMetrics, on the backfill's read path.

They ask through the same pieces as gap backfill (`vuegraf.sinks.readback`): the store's
`HttpEndpoint`, the InfluxQL and Prometheus readers' `run` (which classifies every failure),
and a `FirstOf` choice of API: InfluxQL first, then the Prometheus query API, kept once one
answers. Every answer is aggregated by the store: one query per call, a row per bucket.

- `InfluxQLGraphReader`: `GROUP BY time(step)` over `/query`; InfluxDB 2.x answers it through
  its 1.x compatibility API (bucket as database, token), InfluxDB 3 natively.
- `PrometheusGraphReader`: VictoriaMetrics' `/api/v1/query_range`, each bucket a rollup
  evaluated at its last second (see the class for VictoriaMetrics' own adjustments).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from vuegraf.config import InfluxV1Config, InfluxV2Config, TagConfig
from vuegraf.graphs.read import (
    Bucket,
    BucketMap,
    GraphReader,
    SeriesKey,
    bucket_points,
)
from vuegraf.model import FIELD, MEASUREMENT, Scale
from vuegraf.sinks.base import StoreReadError
from vuegraf.sinks.influx import read_apis
from vuegraf.sinks.readback import (
    FirstOf,
    HttpEndpoint,
    InfluxQLReader,
    PrometheusReader,
    influxql_ident,
    influxql_string,
    promql_string,
)

SeriesListing = dict[str, list[SeriesKey]]  # account -> its (station or "", channel) keys


class GraphReaderWithSeries(GraphReader, Protocol):
    """A graph reader that also lists the store's series (a layout when none was saved)."""

    def series(self) -> SeriesListing: ...


def _wanted(series: Sequence[SeriesKey] | None) -> set[SeriesKey] | None:
    return None if series is None else set(series)


# -- InfluxQL ----------------------------------------------------------------------------------


class InfluxQLGraphReader:
    """Buckets, sums and the newest point of each series through InfluxQL, with the backfill
    reader's database, credentials, error classification and series keys."""

    def __init__(self, influxql: InfluxQLReader) -> None:
        self.influxql = influxql
        self.name = influxql.name

    def _where(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> str:
        """Account, scale and window, and when `series` is given its channels (and stations:
        the exact keys are picked from the answer)."""
        tags = self.influxql.tags
        clause = (
            f'WHERE "account_name" = {influxql_string(account)} '
            f"AND {influxql_ident(tags.name)} = {influxql_string(tags.value(scale))} "
        )
        if series is None:
            return clause + f"AND time >= {start}s AND time < {end}s"
        channels = sorted({channel for _station, channel in series})
        clause += "AND (" + " OR ".join(f'"device_name" = {influxql_string(c)}' for c in channels)
        clause += ") "
        if self.influxql.add_station:
            stations = sorted({station for station, _channel in series})
            clause += "AND (" + " OR ".join(
                f'"station_name" = {influxql_string(s)}' for s in stations
            )
            clause += ") "
        return clause + f"AND time >= {start}s AND time < {end}s"

    def _group(self) -> str:
        return '"device_name", "station_name"' if self.influxql.add_station else '"device_name"'

    def _select(
        self,
        what: str,
        account: str,
        scale: Scale,
        series: Sequence[SeriesKey] | None,
        start: int,
        end: int,
        group: str = "",
        tail: str = "",
    ) -> list[tuple[SeriesKey, list[str], list[Any]]]:
        """(key, columns, rows) of each wanted series that has points in [start, end)."""
        if series is not None and not series:
            return []
        if end <= start:
            return []
        query = (
            f"SELECT {what} FROM {influxql_ident(MEASUREMENT)} "
            f"{self._where(account, scale, series, start, end)} "
            f"GROUP BY {group}{self._group()}{tail}"
        )
        wanted = _wanted(series)
        out = []
        for item in self.influxql.run(query):
            key = self.influxql.key(item)
            if wanted is None or key in wanted:
                out.append((key, list(item["columns"]), list(item.get("values") or [])))
        return out

    def buckets(
        self,
        account: str,
        scale: Scale,
        series: Sequence[SeriesKey] | None,
        start: int,
        end: int,
        step: int,
    ) -> BucketMap:
        f = influxql_ident(FIELD)
        if step <= scale.seconds:
            # A bucket per point (a day of minutes): the points themselves cost InfluxDB a
            # sixth of three aggregates, and each is its bucket's min, mean and max.
            raw = self._select(f"{f} AS value", account, scale, series, start, end)
            got: BucketMap = {}
            for key, columns, rows in raw:
                at, value = columns.index("time"), columns.index("value")
                points = [(int(r[at]), float(r[value])) for r in rows if r[value] is not None]
                if points:
                    got[key] = bucket_points(points, start, step)
            return got
        # Buckets start at `start`: InfluxDB aligns GROUP BY time to the epoch plus the offset.
        offset = start % step
        by_time = f"time({step}s, {offset}s), " if offset else f"time({step}s), "
        # No count(): each aggregate costs InfluxDB 1.x about as much as the rest together.
        answer = self._select(
            f"min({f}) AS low, mean({f}) AS mean, max({f}) AS high",
            account,
            scale,
            series,
            start,
            end,
            group=by_time,
            # Empty buckets are left out of the answer, not sent as rows of nulls.
            tail=" fill(none)",
        )
        out: BucketMap = {}
        for key, columns, rows in answer:
            at, low, mean, high = (columns.index(c) for c in ("time", "low", "mean", "high"))
            into = out.setdefault(key, {})
            for row in rows:
                if row[mean] is None:
                    continue
                into[int(row[at])] = Bucket(float(row[low]), float(row[mean]), float(row[high]))
        return out

    def sums(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> dict[SeriesKey, float]:
        answer = self._select(
            f"sum({influxql_ident(FIELD)}) AS total", account, scale, series, start, end
        )
        out: dict[SeriesKey, float] = {}
        for key, columns, rows in answer:
            at = columns.index("total")
            for row in rows:
                if row[at] is not None:
                    out[key] = out.get(key, 0.0) + float(row[at])
        return out

    def latest(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> dict[SeriesKey, tuple[int, float]]:
        answer = self._select(
            f"last({influxql_ident(FIELD)}) AS value", account, scale, series, start, end
        )
        out: dict[SeriesKey, tuple[int, float]] = {}
        for key, columns, rows in answer:
            at, value = columns.index("time"), columns.index("value")
            for row in rows:
                if row[value] is None:
                    continue
                t = int(row[at])
                if key not in out or t > out[key][0]:
                    out[key] = (t, float(row[value]))
        return out

    def series(self) -> SeriesListing:
        """Every account's series keys, from the store's series index (`SHOW SERIES`): no
        point is read."""
        query = f"SHOW SERIES FROM {influxql_ident(MEASUREMENT)}"
        answer = self.influxql.run(query, measurement=None)
        listing: dict[str, set[SeriesKey]] = {}
        for item in answer:
            columns = item["columns"]
            if "key" not in columns:
                # VictoriaMetrics answers every /query with its canned SHOW DATABASES reply.
                raise StoreReadError(
                    f"{self.name}: the answer is not a series listing ({columns})",
                    retryable=False,
                    unsupported=True,
                )
            at = columns.index("key")
            for row in item.get("values") or []:
                tags = _series_key_tags(str(row[at]))
                account = tags.get("account_name")
                if account is None or "device_name" not in tags:
                    continue
                station = tags.get("station_name", "") if self.influxql.add_station else ""
                listing.setdefault(account, set()).add((station, tags["device_name"]))
        return {account: sorted(keys) for account, keys in sorted(listing.items())}

    def close(self) -> None:
        self.influxql.http.close()


def _series_key_tags(key: str) -> dict[str, str]:
    """The tags of a SHOW SERIES key (`measurement,tag=value,...`, line protocol escaping)."""
    parts: list[str] = []
    current = ""
    i = 0
    while i < len(key):
        ch = key[i]
        if ch == "\\" and i + 1 < len(key):
            current += key[i + 1]
            i += 2
            continue
        if ch in ",=":
            parts.append(current)
            parts.append(ch)
            current = ""
        else:
            current += ch
        i += 1
    parts.append(current)
    # measurement , k = v , k = v ...
    tags: dict[str, str] = {}
    for j in range(2, len(parts) - 2, 4):
        if parts[j + 1] == "=":
            tags[parts[j]] = parts[j + 2]
    return tags


# -- Prometheus query API (VictoriaMetrics) ----------------------------------------------------

_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def metricsql_regex_literal(value: str) -> str:
    """`value` as a regex matching exactly it. Only the regex's special characters are escaped:
    the server's regex syntax (Go's RE2) refuses an escaped space or letter, which Python's
    `re.escape` would write."""
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in value)


def _alternatives(values: Iterable[str]) -> str:
    return promql_string("|".join(metricsql_regex_literal(v) for v in sorted(set(values))))


STAT_LABEL = "vuegraf_stat"  # tells the rollups of one query's answer apart
_BUCKET_STATS = (
    ("min_over_time", "low"),
    ("avg_over_time", "mean"),
    ("max_over_time", "high"),
)


def _labelled(functions: Sequence[tuple[str, str]], selector: str) -> str:
    """One query for several rollups of `selector`, each answer labelled with its name."""
    return " or ".join(
        f"label_set({function}({selector}), {promql_string(STAT_LABEL)}, {promql_string(stat)})"
        for function, stat in functions
    )


class PrometheusGraphReader:
    """MetricsQL rollups over VictoriaMetrics' Prometheus query API, with the backfill reader's
    endpoint, label checks and error classification.

    A rollup `f(sel[Ns])` evaluated at T covers the samples in (T - N, T]; at T = b + step - 1
    with N = step that is every whole second of [b, b + step): points are stored at whole
    seconds, so bucket b holds exactly what the other stores put in it. The three statistics
    come in one `query_range`, told apart by a label set on each.

    VictoriaMetrics' own adjustments, and why none applies: `nocache=1` (set by the backfill
    reader's `run`) keeps `start` and `end` where they are asked (it otherwise aligns them to
    the step for its cache, which would move every bucket) and an instant query's time off
    `-search.latencyOffset`; the substitution of the points within that offset of now by the
    previous point only happens for steps under `-search.maxStepForPointsAdjustment` (1 minute
    by default), and graph steps are 60 s or more; the `-search.maxPointsPerTimeseries` limit
    (30 000 by default) is far above a view's 1 440 buckets.
    """

    def __init__(self, prometheus: PrometheusReader) -> None:
        self.prometheus = prometheus
        self.name = "Prometheus API /api/v1/query_range"

    def _selector(self, account: str, scale: Scale, series: Sequence[SeriesKey] | None) -> str:
        tags = self.prometheus.tags
        matchers = [
            f"account_name={promql_string(account)}",
            f"{tags.name}={promql_string(tags.value(scale))}",
        ]
        if series is not None:
            matchers.append(f"device_name=~{_alternatives(c for _s, c in series)}")
            if self.prometheus.add_station:
                matchers.append(f"station_name=~{_alternatives(s for s, _c in series)}")
        return f"{MEASUREMENT}_{FIELD}{{{','.join(matchers)}}}"

    def _keyed(
        self, items: list[dict[str, Any]], series: Sequence[SeriesKey] | None
    ) -> list[tuple[SeriesKey, str, dict[str, Any]]]:
        wanted = _wanted(series)
        out = []
        for item in items:
            labels = item["metric"]
            key = self.prometheus.key(labels)
            if wanted is None or key in wanted:
                out.append((key, str(labels.get(STAT_LABEL, "")), item))
        return out

    def buckets(
        self,
        account: str,
        scale: Scale,
        series: Sequence[SeriesKey] | None,
        start: int,
        end: int,
        step: int,
    ) -> BucketMap:
        if (series is not None and not series) or end <= start:
            self.prometheus.check_labels()
            return {}
        full_end = start + (end - start) // step * step  # the whole buckets end here
        stats: dict[SeriesKey, dict[int, dict[str, float]]] = {}
        if full_end > start:
            selector = f"{self._selector(account, scale, series)}[{step}s]"
            params = {
                "query": _labelled(_BUCKET_STATS, selector),
                "start": str(start + step - 1),
                "end": str(full_end - 1),
                "step": f"{step}s",
            }
            for key, stat, item in self._keyed(
                self.prometheus.run("/api/v1/query_range", params, "matrix"), series
            ):
                into = stats.setdefault(key, {})
                for t, value in _samples(item, self.name):
                    into.setdefault(round(t) - step + 1, {})[stat] = value
        if full_end < end:
            # A last bucket cut short by `end`: its own window, or it would take points after.
            partial = self._instant(_BUCKET_STATS, account, scale, series, full_end, end)
            for key, got in partial.items():
                stats.setdefault(key, {})[full_end] = got
        out: BucketMap = {}
        for key, by_bucket in stats.items():
            for b, got in by_bucket.items():
                if len(got) == len(_BUCKET_STATS):
                    out.setdefault(key, {})[b] = Bucket(got["low"], got["mean"], got["high"])
        return out

    def _instant(
        self,
        functions: Sequence[tuple[str, str]],
        account: str,
        scale: Scale,
        series: Sequence[SeriesKey] | None,
        start: int,
        end: int,
    ) -> dict[SeriesKey, dict[str, float]]:
        """Each series' rollups over [start, end), evaluated at end - 1 as the backfill
        reader's `tlast_over_time` is."""
        if (series is not None and not series) or end <= start:
            self.prometheus.check_labels()
            return {}
        selector = f"{self._selector(account, scale, series)}[{end - start}s]"
        params = {"query": _labelled(functions, selector), "time": str(end - 1)}
        out: dict[SeriesKey, dict[str, float]] = {}
        for key, stat, item in self._keyed(
            self.prometheus.run("/api/v1/query", params, "vector"), series
        ):
            value = item.get("value")
            if not isinstance(value, list) or len(value) != 2:
                raise StoreReadError(f"{self.name}: unreadable sample {value!r}", retryable=False)
            out.setdefault(key, {})[stat] = _number(value[1], self.name)
        return out

    def sums(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> dict[SeriesKey, float]:
        got = self._instant([("sum_over_time", "total")], account, scale, series, start, end)
        return {key: stats["total"] for key, stats in got.items() if "total" in stats}

    def latest(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> dict[SeriesKey, tuple[int, float]]:
        # One query for both: a point written between two would pair one time with another value.
        got = self._instant(
            [("tlast_over_time", "time"), ("last_over_time", "value")],
            account,
            scale,
            series,
            start,
            end,
        )
        return {
            key: (round(stats["time"]), stats["value"])
            for key, stats in got.items()
            if "time" in stats and "value" in stats
        }

    def series(self) -> SeriesListing:
        """Every account's series keys, from the series API (start=1: VictoriaMetrics reads
        only the last five minutes when no start is given, and 0 means none)."""
        self.prometheus.check_labels()
        status, text = self.prometheus.http.get(
            "/api/v1/series",
            {"match[]": f"{MEASUREMENT}_{FIELD}", "start": "1", "nocache": "1"},
            self.name,
        )
        answer = _json_object(text)
        data = answer.get("data") if answer is not None else None
        if status != 200 or answer is None or answer.get("status") != "success" or not isinstance(
            data, list
        ):
            raise StoreReadError(
                f"/api/v1/series: HTTP {status}, not a series listing", retryable=status >= 500
            )
        listing: dict[str, set[SeriesKey]] = {}
        for labels in data:
            if isinstance(labels, dict) and "account_name" in labels and "device_name" in labels:
                listing.setdefault(str(labels["account_name"]), set()).add(
                    self.prometheus.key(labels)
                )
        return {account: sorted(keys) for account, keys in sorted(listing.items())}

    def close(self) -> None:
        self.prometheus.http.close()


def _number(value: object, reader: str) -> float:
    try:
        return float(str(value))
    except ValueError:
        raise StoreReadError(f"{reader}: unreadable value {value!r}", retryable=False) from None


def _samples(item: dict[str, Any], reader: str) -> list[tuple[float, float]]:
    values = item.get("values")
    if not isinstance(values, list):
        raise StoreReadError(f"{reader}: a series without values", retryable=False)
    out = []
    for sample in values:
        if not isinstance(sample, list) or len(sample) != 2:
            raise StoreReadError(f"{reader}: unreadable sample {sample!r}", retryable=False)
        out.append((_number(sample[0], reader), _number(sample[1], reader)))
    return out


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


# -- choosing --------------------------------------------------------------------------------


class RemoteGraphReader:
    """A graph reader for an InfluxDB sink's URL: InfluxQL first, then the Prometheus API,
    the first the server answers kept (as the backfill chooses)."""

    def __init__(self, store: str, http: HttpEndpoint, readers: Sequence[GraphReaderWithSeries]):
        self.http = http
        self.choice: FirstOf[GraphReaderWithSeries] = FirstOf(store, readers, "graphs read")
        self.name = store

    def buckets(
        self,
        account: str,
        scale: Scale,
        series: Sequence[SeriesKey] | None,
        start: int,
        end: int,
        step: int,
    ) -> BucketMap:
        return self.choice.ask(lambda r: r.buckets(account, scale, series, start, end, step))

    def sums(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> dict[SeriesKey, float]:
        return self.choice.ask(lambda r: r.sums(account, scale, series, start, end))

    def latest(
        self, account: str, scale: Scale, series: Sequence[SeriesKey] | None, start: int, end: int
    ) -> dict[SeriesKey, tuple[int, float]]:
        return self.choice.ask(lambda r: r.latest(account, scale, series, start, end))

    def series(self, account: str | None = None) -> SeriesListing:
        """`vuegraf.graphs.read.ListsSeries`: each account's (or only `account`'s) series."""
        listing = self.choice.ask(lambda r: r.series())
        return {name: keys for name, keys in listing.items() if account in (None, name)}

    def close(self) -> None:
        self.http.close()


def remote_reader(
    cfg: InfluxV1Config | InfluxV2Config, tags: TagConfig, add_station: bool
) -> RemoteGraphReader:
    http, influxql, prometheus = read_apis(cfg, tags, add_station)
    store = "influxdb-v1" if isinstance(cfg, InfluxV1Config) else "influxdb-v2"
    return RemoteGraphReader(
        store, http, [InfluxQLGraphReader(influxql), PrometheusGraphReader(prometheus)]
    )

