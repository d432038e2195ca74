"""Prometheus exporter in the vuegraf process: /metrics over what was last stored.

A scrape never talks to Emporia. `PrometheusSink` is one more sink: the daemon
writes each cycle's points to it as to InfluxDB, and it keeps only the newest
minute per channel plus running energy counters in `LatestValues`. At scrape
time `VuegrafCollector` builds fresh metric families from that store, from a
`Stats` snapshot and from the optional device/health callables, all of which
only read state already in memory. `ExporterServer` serves them on its own
`CollectorRegistry`, so nothing else registered globally leaks in, together with
prometheus_client's standard process (`process_*`, Linux only), platform
(`python_info`) and garbage collector (`python_gc_*`) collectors, registered in
that same registry.

Energy counters and solar export. Prometheus counters must never go down
(a decrease is read as a restart), yet a channel's watts go negative when it
feeds energy back (solar, mains exporting to the grid). Clamping would hide
exported energy, so each channel has two counters that both only rise:
`vuegraf_energy_joules_total` (energy drawn: positive minutes) and
`vuegraf_energy_exported_joules_total` (energy fed back: the magnitude of
negative minutes). Net energy is the difference of their `increase()`s.
The counters are the energy ledger's (energy.py), the same numbers Home Assistant is
given: each minute counted once, a revision followed without a counter ever falling,
kept across restarts in the state directory.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from prometheus_client.exposition import generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from vuegraf import __version__
from vuegraf.budget import SHED_ORDER
from vuegraf.clock import Clock, SystemClock
from vuegraf.config import PrometheusConfig
from vuegraf.emporia.errors import ACCOUNT_STATES
from vuegraf.energy import DEFAULT_WINDOW, ChannelId, EnergyLedger, Totals
from vuegraf.httpserve import BackgroundServer, Handler, Response
from vuegraf.model import Point, Scale, Unit
from vuegraf.stats import Stats, StatsSnapshot

logger = logging.getLogger(__name__)

#: Channels not written for this long stop being exported (a removed circuit, an unplugged plug).
DEFAULT_STALE_AFTER = timedelta(minutes=15)
#: The sample port in prometheus/prometheus.yml and docs/prometheus.md.
SUGGESTED_PORT = 9852
#: Text exposition format 0.0.4: what every Prometheus 2.x understands. All vuegraf names are
#: plain [a-zA-Z_:] names, so the body is the same as the newer 1.0.0 text format.
CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"

SINK_OUTCOMES = ("written", "queued", "replayed", "dropped", "rejected")
_NO_ENERGY = Totals(0.0, 0.0)

ChannelKey = tuple[str, str, str]  # (account, device, channel)
DeviceState = tuple[str, str, bool]  # (account, device, connected)


class _Channel:
    """Mutable per-channel state inside `LatestValues` (guarded by its lock)."""

    __slots__ = ("watts", "time", "seen", "energy_key")

    def __init__(self, point: Point, seen: datetime) -> None:
        self.watts = point.watts
        self.time = point.time
        self.seen = seen
        self.energy_key = ChannelId.of(point)


@dataclass(frozen=True, slots=True)
class _Electrical:
    """A channel's newest amps or volts, its bucket's time, and when it goes stale."""

    value: float
    time: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class ChannelValue:
    """What a scrape exports for one channel: newest minute's watts, its time, energy so far."""

    account: str
    device: str
    channel: str
    watts: float
    time: datetime
    imported_joules: float
    exported_joules: float


class LatestValues:
    """Newest minute watts and energy counters per channel; safe to use from any thread.

    Written by `PrometheusSink` from the collection loop, read by scrapes from
    HTTP threads. A channel not written for `stale_after` (by the clock, not by
    point time, so a lagging Emporia does not hide channels) is dropped.

    Energy comes from `ledger`: one fed by the daemon's `EnergySink` (shared with Home
    Assistant), or, when none is given, one of its own that `update` feeds.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        stale_after: timedelta = DEFAULT_STALE_AFTER,
        energy_window: timedelta = DEFAULT_WINDOW,
        ledger: EnergyLedger | None = None,
    ) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self.stale_after = stale_after
        self._own_ledger = ledger is None
        self.ledger = (
            ledger if ledger is not None else EnergyLedger(None, self._clock, energy_window)
        )
        self._lock = threading.Lock()
        self._channels: dict[ChannelKey, _Channel] = {}
        # Amps and volts (ampsVolts): (account, device, channel, unit) -> the newest value
        self._electrical: dict[tuple[str, str, str, Unit], _Electrical] = {}

    def update(self, points: Iterable[Point]) -> int:
        """Store the minute points (other scales are ignored); returns how many were minutes."""
        batch = points if isinstance(points, Sequence) else list(points)
        now = self._clock.now()
        used = 0
        with self._lock:
            for point in batch:
                if point.unit is not Unit.WATTS:
                    self._newest_electrical(point, now)
                    continue
                if point.scale is not Scale.MINUTE:
                    continue
                used += 1
                key = (point.account, point.device, point.channel)
                state = self._channels.get(key)
                if state is None:
                    state = self._channels[key] = _Channel(point, now)
                state.seen = now
                if point.time >= state.time:
                    state.watts = point.watts
                    state.time = point.time
                    state.energy_key = ChannelId.of(point)
            self._drop_stale(now)
        if self._own_ledger:
            self.ledger.add(batch)
        return used

    def _newest_electrical(self, point: Point, now: datetime) -> None:
        """Keep a channel's newest amps or volts (lock held). Kept for two of its buckets at
        least: a 15-minute value must not go stale just before the next one comes."""
        key = (point.account, point.device, point.channel, point.unit)
        kept = max(self.stale_after, timedelta(seconds=2 * point.scale.seconds))
        old = self._electrical.get(key)
        if old is None or point.time >= old.time:
            self._electrical[key] = _Electrical(point.watts, point.time, now + kept)
        else:
            self._electrical[key] = _Electrical(old.value, old.time, now + kept)

    def electrical(self, unit: Unit) -> list[tuple[ChannelKey, float]]:
        """Each channel's newest value of `unit` (amps or volts), sorted by channel."""
        now = self._clock.now()
        with self._lock:
            for key in [k for k, e in self._electrical.items() if now >= e.until]:
                del self._electrical[key]
            return sorted(
                ((k[0], k[1], k[2]), e.value) for k, e in self._electrical.items() if k[3] is unit
            )

    def forget(self, account: str, device: str | None = None, channel: str | None = None) -> int:
        """Stop exporting an account's channels (of one device, or one channel); returns count."""
        with self._lock:
            doomed = [
                key
                for key in self._channels
                if key[0] == account
                and (device is None or key[1] == device)
                and (channel is None or key[2] == channel)
            ]
            for key in doomed:
                del self._channels[key]
        return len(doomed)

    def snapshot(self) -> list[ChannelValue]:
        """Every live channel, sorted by (account, device, channel)."""
        with self._lock:
            self._drop_stale(self._clock.now())
            channels = sorted(self._channels.items())
        values = []
        for key, s in channels:
            totals = self.ledger.totals(s.energy_key) or _NO_ENERGY
            values.append(
                ChannelValue(
                    key[0], key[1], key[2], s.watts, s.time, totals.imported, totals.exported
                )
            )
        return values

    def _drop_stale(self, now: datetime) -> None:
        stale = [k for k, s in self._channels.items() if now - s.seen >= self.stale_after]
        for key in stale:
            del self._channels[key]
        if stale:
            logger.info(
                "Prometheus: %d channel(s) not seen for %s dropped", len(stale), self.stale_after
            )


class PrometheusSink:
    """The sink the daemon writes to; it only updates `LatestValues` and never fails.

    The sink contract (sinks/base.py) holds trivially: a rewrite of a minute
    replaces the gauge value and is not counted into energy twice.
    """

    name = "prometheus"

    def __init__(self, latest: LatestValues) -> None:
        self.latest = latest

    def open(self) -> None:
        """Nothing to connect to."""

    def write(self, points: Sequence[Point]) -> None:
        self.latest.update(points)

    def close(self) -> None:
        """Values stay exported until the process ends: the last scrape still sees them."""


class VuegrafCollector(Collector):
    """Builds every vuegraf metric family afresh at each scrape, with no timestamps.

    `devices` and `health` are called at scrape time, so they must only read
    state already in memory (never call Emporia). Families whose source is not
    given (`stats`, `devices`) are left out.
    """

    def __init__(
        self,
        latest: LatestValues,
        stats: Stats | None = None,
        devices: Callable[[], Iterable[DeviceState]] | None = None,
        health: Callable[[], bool] | None = None,
        version: str = __version__,
    ) -> None:
        self.latest = latest
        self.stats = stats
        self.devices = devices
        self.health = health
        self.version = version

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "vuegraf_build_info", "vuegraf version running; always 1", labels=["version"]
        )
        info.add_metric([self.version], 1)
        yield info
        yield GaugeMetricFamily(
            "vuegraf_up",
            "1 when vuegraf reports itself healthy (the same check as /healthz), else 0",
            value=1 if self._healthy() else 0,
        )
        yield from self._channel_families()
        if self.devices is not None:
            yield self._device_family(self.devices)
        if self.stats is not None:
            yield from _stats_families(self.stats)
        yield from self._amps_volts_families()

    def _healthy(self) -> bool:
        if self.health is None:
            return True
        try:
            return bool(self.health())
        except Exception:
            logger.exception("health check failed")
            return False

    def _channel_families(self) -> Iterator[Metric]:
        labels = ["account", "device", "channel"]
        power = GaugeMetricFamily(
            "vuegraf_power_watts",
            "Average power over the newest complete minute Emporia served; negative when "
            "the channel feeds energy back",
            labels=labels,
        )
        stamp = GaugeMetricFamily(
            "vuegraf_power_timestamp_seconds",
            "Start (Unix time) of the minute vuegraf_power_watts averages; shows data lag",
            labels=labels,
        )
        imported = CounterMetricFamily(
            "vuegraf_energy_joules_total",
            "Energy drawn through the channel since vuegraf started (sum of positive minutes)",
            labels=labels,
        )
        exported = CounterMetricFamily(
            "vuegraf_energy_exported_joules_total",
            "Energy fed back through the channel since vuegraf started (negative minutes, "
            "as a positive amount)",
            labels=labels,
        )
        for value in self.latest.snapshot():
            key = [value.account, value.device, value.channel]
            power.add_metric(key, value.watts)
            stamp.add_metric(key, value.time.timestamp())
            imported.add_metric(key, value.imported_joules)
            exported.add_metric(key, value.exported_joules)
        yield from (power, stamp, imported, exported)

    def _amps_volts_families(self) -> Iterator[Metric]:
        """Current and voltage of the accounts with ampsVolts on; a family is left out while
        it has no value (no account has ampsVolts on, or none collected yet)."""
        labels = ["account", "device", "channel"]
        for unit, name, text in (
            (
                Unit.AMPS,
                "vuegraf_current_amps",
                "Mean current over the newest amps bucket Emporia served (ampsVolts)",
            ),
            (
                Unit.VOLTS,
                "vuegraf_voltage_volts",
                "Voltage over the newest volts bucket Emporia served (ampsVolts)",
            ),
        ):
            values = self.latest.electrical(unit)
            if not values:
                continue
            family = GaugeMetricFamily(name, text, labels=labels)
            for key, value in values:
                family.add_metric(list(key), value)
            yield family

    @staticmethod
    def _device_family(devices: Callable[[], Iterable[DeviceState]]) -> Metric:
        family = GaugeMetricFamily(
            "vuegraf_device_connected",
            "1 when Emporia last reported the device connected, else 0",
            labels=["account", "device"],
        )
        try:
            states = sorted(devices())
        except Exception:
            logger.exception("reading device connectivity failed")
            states = []
        for account, device, connected in states:
            family.add_metric([account, device], 1 if connected else 0)
        return family


def _stats_families(stats: Stats) -> Iterator[Metric]:
    """Self-metrics from one consistent `Stats` snapshot."""
    snap = stats.snapshot()
    requests = CounterMetricFamily(
        "vuegraf_emporia_requests_total",
        "Requests to the Emporia cloud by account, endpoint and outcome",
        labels=["account", "endpoint", "outcome"],
    )
    for (account, endpoint, outcome), count in sorted(snap.requests.items()):
        requests.add_metric([account, endpoint, outcome], count)
    yield requests

    today = GaugeMetricFamily(
        "vuegraf_emporia_requests_today",
        "Requests to Emporia by account during the current UTC day (compare with the budget)",
        labels=["account"],
    )
    for account, count in sorted(snap.requests_today.items()):
        today.add_metric([account], count)
    yield today
    yield GaugeMetricFamily(
        "vuegraf_emporia_daily_budget_requests",
        "Requests per account per day Emporia asks API clients to stay under",
        value=snap.budget,
    )

    cycles = CounterMetricFamily(
        "vuegraf_cycles_total", "Collection cycles by outcome", labels=["outcome"]
    )
    cycles.add_metric(["ok"], snap.cycles - snap.failed_cycles)
    cycles.add_metric(["failed"], snap.failed_cycles)
    yield cycles
    duration = GaugeMetricFamily(
        "vuegraf_cycle_duration_seconds", "How long the last collection cycle took"
    )
    if snap.last_cycle_seconds is not None:
        duration.add_metric([], snap.last_cycle_seconds)
    yield duration
    success = GaugeMetricFamily(
        "vuegraf_last_success_timestamp_seconds",
        "When (Unix time) the last fully successful collection cycle ended",
    )
    if snap.last_success is not None:
        success.add_metric([], snap.last_success.timestamp())
    yield success

    points = CounterMetricFamily(
        "vuegraf_sink_points_total",
        "Points handled by each sink, by outcome (written, queued, replayed, dropped, rejected)",
        labels=["sink", "outcome"],
    )
    # Every outcome of every known sink, zeros included, so increase() sees the first event.
    sinks = sorted({sink for sink, _ in snap.sink_points} | set(snap.queue_depth))
    for sink in sinks:
        for outcome in SINK_OUTCOMES:
            points.add_metric([sink, outcome], snap.sink_points.get((sink, outcome), 0))
    yield points
    depth = GaugeMetricFamily(
        "vuegraf_queue_depth_points",
        "Points waiting in a sink's retry queue",
        labels=["sink"],
    )
    for sink, count in sorted(snap.queue_depth.items()):
        depth.add_metric([sink], count)
    yield depth
    mqtt = GaugeMetricFamily(
        "vuegraf_mqtt_connected", "1 while connected to the MQTT broker, else 0 (absent: no MQTT)"
    )
    if snap.mqtt_connected is not None:
        mqtt.add_metric([], 1 if snap.mqtt_connected else 0)
    yield mqtt
    shedding = GaugeMetricFamily(
        "vuegraf_budget_shedding",
        "1 while the daily request budget makes the account leave this out (second data, "
        "then hole fills spread over the day, then live minutes), else 0",
        labels=["account", "what"],
    )
    for account, level in sorted(snap.shedding.items()):
        shed = SHED_ORDER[: SHED_ORDER.index(level) + 1] if level else ()
        for what in SHED_ORDER:
            shedding.add_metric([account, what], 1 if what in shed else 0)
    if snap.shedding:  # absent, not zero, where no collector runs (a history import alone)
        yield shedding
    if snap.account_states:  # absent until an account's first tick ended
        yield _account_state_family(snap.account_states)
    yield from _consistency_families(snap)
    yield _lost_family(snap)


def _lost_family(snap: StatsSnapshot) -> Metric:
    """`vuegraf_lost_points_total{account,scale,channel,reason}`: values vuegraf gave up for
    good, so that "nothing lost" is a number. Reasons: `retention` (older than Emporia keeps
    them before they could be filled), `no_value` (Emporia answered none once settled),
    `shed` (second data the request budget left out)."""
    family = CounterMetricFamily(
        "vuegraf_lost_points_total",
        "Values that can never be filled: retention (Emporia no longer keeps them), no_value "
        "(Emporia answered none), shed (second data left out for the request budget)",
        labels=["account", "scale", "channel", "reason"],
    )
    for key, count in sorted(snap.lost.items()):
        family.add_metric(list(key), count)
    return family


def _account_state_family(states: dict[str, tuple[str, str]]) -> Metric:
    """`vuegraf_account_state{account,state}`: 1 for each account's current state, 0 for the
    others, so an alert tells a refused password (auth_failed: the user's side) from an
    Emporia outage (emporia_down, rate_limited) or an API change (api_changed)."""
    family = GaugeMetricFamily(
        "vuegraf_account_state",
        "1 for the account's current state, else 0: ok, auth_failed (Emporia refused the "
        "login: check the password), emporia_down or rate_limited (Emporia's side), "
        "api_changed (vuegraf needs an update)",
        labels=["account", "state"],
    )
    for account, (current, _reason) in sorted(states.items()):
        for state in ACCOUNT_STATES:
            family.add_metric([account, state], 1 if state == current else 0)
    return family


def _consistency_families(snap: StatsSnapshot) -> Iterator[Metric]:
    """The consistency check (vuegraf.consistency): buckets judged and those whose finer
    buckets did not add up to them, per account and scale of the bucket (1H, 1D). Absent
    until the first bucket is judged, as other values not known yet are."""
    if not snap.checked:
        return
    checked = CounterMetricFamily(
        "vuegraf_consistency_checked_total",
        "Buckets written whose finer buckets were compared with them (1H: minutes, 1D: hours)",
        labels=["account", "scale"],
    )
    disagreements = CounterMetricFamily(
        "vuegraf_consistency_disagreements_total",
        "Buckets written that their finer buckets did not add up to, within Emporia's rounding",
        labels=["account", "scale"],
    )
    # Every pair judged, zeros included, so increase() sees the first disagreement.
    for key, count in sorted(snap.checked.items()):
        checked.add_metric(list(key), count)
        disagreements.add_metric(list(key), snap.disagreements.get(key, 0))
    yield checked
    yield disagreements


def register_runtime_collectors(registry: CollectorRegistry) -> None:
    """prometheus_client's process, platform and GC collectors, in `registry` only.

    Their families: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
    `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
    `process_start_time_seconds` (read from /proc, so absent elsewhere), `python_info`
    and `python_gc_objects_collected_total`, `python_gc_objects_uncollectable_total`,
    `python_gc_collections_total` (CPython). Each collector registers itself on creation.
    """
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class ExporterServer(BackgroundServer):
    """/metrics, /healthz and a landing page on `config.address:config.port` (0: any free port).

    `/metrics` has `collector`'s families and, unless `runtime_metrics` is False,
    the standard process, platform and GC families (`register_runtime_collectors`).
    """

    thread_name = "vuegraf-exporter"

    def __init__(
        self,
        config: PrometheusConfig,
        collector: Collector,
        health: Callable[[], bool],
        *,
        runtime_metrics: bool = True,
    ) -> None:
        super().__init__(config.address, config.port)
        self.config = config
        self.health = health
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        if runtime_metrics:
            register_runtime_collectors(self.registry)

    def start(self) -> ExporterServer:
        super().start()
        logger.info("Prometheus metrics on %s/metrics", self.url)
        return self

    def metrics_text(self) -> bytes:
        """The /metrics body, built now."""
        return generate_latest(self.registry)

    def healthy(self) -> bool:
        try:
            return bool(self.health())
        except Exception:
            logger.exception("health check failed")
            return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class ExporterHandler(Handler):
            def respond(self) -> Response:
                status, content_type, body = exporter._route(urlsplit(self.path).path)
                return status, content_type, body, {}

            def log_access(self, line: str) -> None:
                logger.debug("exporter %s", line)

        return ExporterHandler

    def _route(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            try:
                return 200, CONTENT_TYPE_TEXT, self.metrics_text()
            except Exception:
                logger.exception("building /metrics failed")
                return 500, "text/plain; charset=utf-8", b"error building metrics\n"
        if path == "/healthz":
            if self.healthy():
                return 200, "text/plain; charset=utf-8", b"ok\n"
            return 503, "text/plain; charset=utf-8", b"unhealthy\n"
        if path == "/":
            return 200, "text/html; charset=utf-8", _landing_page()
        return 404, "text/plain; charset=utf-8", b"not found\n"


def _landing_page() -> bytes:
    version = html.escape(__version__)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>vuegraf</title></head>\n'
        f"<body><h1>vuegraf {version}</h1>\n<ul>\n"
        '<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>\n'
        '<li><a href="/healthz">/healthz</a>: health (200 ok, 503 unhealthy)</li>\n'
        "</ul></body></html>\n"
    ).encode()
