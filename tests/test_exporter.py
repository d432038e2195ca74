"""The Prometheus exporter: what a scrape sees, parsed back with the reference parser.

Points go in through `PrometheusSink` (the seam the daemon uses); the assertions are on
the exposition text, read with `prometheus_client.parser`, and on real HTTP answers.
"""

from __future__ import annotations

import platform
import re
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from harness.metrics import RUNTIME_FAMILIES
from vuegraf import __version__
from vuegraf.clock import FakeClock
from vuegraf.config import PrometheusConfig
from vuegraf.exporter import (
    ExporterServer,
    LatestValues,
    PrometheusSink,
    VuegrafCollector,
)
from vuegraf.model import Point, Scale
from vuegraf.stats import Stats

UTC = timezone.utc
T0 = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)  # a minute start
NOW = T0 + timedelta(minutes=2, seconds=5)
LOOPBACK_ANY_PORT = PrometheusConfig(port=0)
CHANNEL = ("account", "device", "channel")


def minute(channel: str, offset: int, watts: float, device: str = "Main Panel") -> Point:
    return Point("Home", device, channel, Scale.MINUTE, T0 + timedelta(minutes=offset), watts)


def scrape(collector: VuegrafCollector) -> str:
    """vuegraf's own families only: the standard process, platform and GC families (tested
    below and in tests/integration/test_prometheus.py) depend on the test process."""
    server = ExporterServer(LOOPBACK_ANY_PORT, collector, health=lambda: True,
                            runtime_metrics=False)
    return server.metrics_text().decode()


def families(text: str) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """{family name: (type, [(sample name, labels, value), ...])}, as the parser reads it."""
    result = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in result, f"family {family.name} twice"
        samples = [(s.name, s.labels, s.value) for s in family.samples]
        assert all(s.timestamp is None for s in family.samples), "no timestamps are set"
        result[family.name] = (family.type, samples)
    return result


def chan(name: str, device: str = "Main Panel") -> dict[str, str]:
    return {"account": "Home", "device": device, "channel": name}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def latest(clock: FakeClock) -> LatestValues:
    return LatestValues(clock)


@pytest.fixture
def stats() -> Stats:
    stats = Stats(budget=2000)
    when = T0 + timedelta(seconds=3)
    stats.count_request("Home", "login", "ok", when)
    for _ in range(3):
        stats.count_request("Home", "getDeviceListUsages", "ok", when)
    stats.count_request("Home", "getDeviceListUsages", "error", when)
    stats.count_cycle(True, 0.75, T0 + timedelta(minutes=1, seconds=6))
    stats.count_cycle(False, 2.5, T0 + timedelta(minutes=2, seconds=5))
    stats.count_points("influxdb", "written", 40)
    stats.count_points("influxdb", "queued", 5)
    stats.set_queue_depth("influxdb", 5)
    stats.set_mqtt_connected(True)
    stats.count_lost("Home", "1MIN", "Main Panel-Balance", "retention", 3)
    stats.count_lost("Home", "1MIN", "Main Panel-Balance", "retention", 4)
    stats.count_lost("Home", "1MIN", "Solar", "no_value", 0)  # nothing: no sample
    return stats


def test_exposition_of_known_points_and_stats_parses_back_exactly(latest, stats):
    sink = PrometheusSink(latest)
    sink.open()
    sink.write(
        [
            minute("Main Panel", 0, 1000.0),
            minute("Solar", 0, -350.25),
            minute("Main Panel", 1, 1234.5),
            minute("Solar", 1, -400.0),
            minute("Fridge", 1, 0.0),
            # Hour points are not minutes: neither the gauge nor the energy sees them.
            Point("Home", "Main Panel", "Main Panel", Scale.HOUR, T0, 99999.0),
        ]
    )
    sink.close()
    collector = VuegrafCollector(
        latest,
        stats,
        devices=lambda: [("Home", "Main Panel", True), ("Home", "Office Plug", False)],
        health=lambda: True,
    )

    got = families(scrape(collector))

    t1 = (T0 + timedelta(minutes=1)).timestamp()
    fridge, main, solar = chan("Fridge"), chan("Main Panel"), chan("Solar")
    assert got == {
        "vuegraf_build_info": ("gauge", [("vuegraf_build_info", {"version": __version__}, 1.0)]),
        "vuegraf_up": ("gauge", [("vuegraf_up", {}, 1.0)]),
        "vuegraf_power_watts": (
            "gauge",
            [
                ("vuegraf_power_watts", fridge, 0.0),
                ("vuegraf_power_watts", main, 1234.5),
                ("vuegraf_power_watts", solar, -400.0),
            ],
        ),
        "vuegraf_power_timestamp_seconds": (
            "gauge",
            [
                ("vuegraf_power_timestamp_seconds", fridge, t1),
                ("vuegraf_power_timestamp_seconds", main, t1),
                ("vuegraf_power_timestamp_seconds", solar, t1),
            ],
        ),
        # The parser names a counter family without its _total; the samples keep it.
        "vuegraf_energy_joules": (
            "counter",
            [
                ("vuegraf_energy_joules_total", fridge, 0.0),
                ("vuegraf_energy_joules_total", main, (1000.0 + 1234.5) * 60),
                ("vuegraf_energy_joules_total", solar, 0.0),
            ],
        ),
        "vuegraf_energy_exported_joules": (
            "counter",
            [
                ("vuegraf_energy_exported_joules_total", fridge, 0.0),
                ("vuegraf_energy_exported_joules_total", main, 0.0),
                ("vuegraf_energy_exported_joules_total", solar, (350.25 + 400.0) * 60),
            ],
        ),
        "vuegraf_device_connected": (
            "gauge",
            [
                ("vuegraf_device_connected", {"account": "Home", "device": "Main Panel"}, 1.0),
                ("vuegraf_device_connected", {"account": "Home", "device": "Office Plug"}, 0.0),
            ],
        ),
        "vuegraf_emporia_requests": (
            "counter",
            [
                (
                    "vuegraf_emporia_requests_total",
                    {"account": "Home", "endpoint": "getDeviceListUsages", "outcome": "error"},
                    1.0,
                ),
                (
                    "vuegraf_emporia_requests_total",
                    {"account": "Home", "endpoint": "getDeviceListUsages", "outcome": "ok"},
                    3.0,
                ),
                (
                    "vuegraf_emporia_requests_total",
                    {"account": "Home", "endpoint": "login", "outcome": "ok"},
                    1.0,
                ),
            ],
        ),
        "vuegraf_emporia_requests_today": (
            "gauge",
            [("vuegraf_emporia_requests_today", {"account": "Home"}, 5.0)],
        ),
        "vuegraf_emporia_daily_budget_requests": (
            "gauge",
            [("vuegraf_emporia_daily_budget_requests", {}, 2000.0)],
        ),
        "vuegraf_cycles": (
            "counter",
            [
                ("vuegraf_cycles_total", {"outcome": "ok"}, 1.0),
                ("vuegraf_cycles_total", {"outcome": "failed"}, 1.0),
            ],
        ),
        "vuegraf_cycle_duration_seconds": (
            "gauge",
            [("vuegraf_cycle_duration_seconds", {}, 2.5)],
        ),
        "vuegraf_last_success_timestamp_seconds": (
            "gauge",
            [
                (
                    "vuegraf_last_success_timestamp_seconds",
                    {},
                    (T0 + timedelta(minutes=1, seconds=6)).timestamp(),
                )
            ],
        ),
        "vuegraf_lost_points": (
            "counter",
            [
                (
                    "vuegraf_lost_points_total",
                    {"account": "Home", "scale": "1MIN", "channel": "Main Panel-Balance",
                     "reason": "retention"},
                    7.0,
                )
            ],
        ),
        "vuegraf_sink_points": (
            "counter",
            [
                ("vuegraf_sink_points_total", {"sink": "influxdb", "outcome": "written"}, 40.0),
                ("vuegraf_sink_points_total", {"sink": "influxdb", "outcome": "queued"}, 5.0),
                ("vuegraf_sink_points_total", {"sink": "influxdb", "outcome": "replayed"}, 0.0),
                ("vuegraf_sink_points_total", {"sink": "influxdb", "outcome": "dropped"}, 0.0),
                ("vuegraf_sink_points_total", {"sink": "influxdb", "outcome": "rejected"}, 0.0),
            ],
        ),
        "vuegraf_queue_depth_points": (
            "gauge",
            [("vuegraf_queue_depth_points", {"sink": "influxdb"}, 5.0)],
        ),
        "vuegraf_mqtt_connected": ("gauge", [("vuegraf_mqtt_connected", {}, 1.0)]),
    }


def test_unknown_values_are_absent_not_zero(latest):
    # Before the first cycle: no duration, no success time, no MQTT state are known.
    got = families(scrape(VuegrafCollector(latest, Stats(), health=lambda: False)))
    for name in (
        "vuegraf_cycle_duration_seconds",
        "vuegraf_last_success_timestamp_seconds",
        "vuegraf_mqtt_connected",
        "vuegraf_power_watts",
        "vuegraf_sink_points",
    ):
        assert got[name][1] == [], name
    assert got["vuegraf_up"] == ("gauge", [("vuegraf_up", {}, 0.0)])
    assert "vuegraf_device_connected" not in got  # no source wired


# Base units of the naming guidelines plus the countable things vuegraf names.
UNIT_SUFFIXES = ("_watts", "_joules", "_seconds", "_points", "_requests", "_info", "_connected")
BARE_NAMES = {"vuegraf_up", "vuegraf_emporia_requests_today", "vuegraf_cycles"}
NON_BASE_UNITS = ("percent", "kwh", "kilowatt", "milli", "minutes", "hours", "bytes_kb")


def test_every_family_follows_the_naming_guidelines(latest, stats):
    latest.update([minute("Main Panel", 0, 500.0), minute("Solar", 0, -20.0)])
    collector = VuegrafCollector(latest, stats, devices=lambda: [("Home", "Main Panel", True)])
    text = scrape(collector)
    seen = families(text)
    assert len(seen) == 17
    for name, (kind, samples) in seen.items():
        assert re.fullmatch(r"vuegraf_[a-z0-9_]+", name), name
        assert kind in ("counter", "gauge"), (name, kind)
        lowered = name.lower()
        assert not any(bad in lowered for bad in NON_BASE_UNITS), name
        assert name.endswith(UNIT_SUFFIXES) or name in BARE_NAMES, name
        for sample_name, labels, _value in samples:
            if kind == "counter":
                assert sample_name == name + "_total", sample_name
            else:
                assert not sample_name.endswith("_total"), sample_name
            assert all(re.fullmatch(r"[a-z][a-z_]*", label) for label in labels), labels
    # The raw text: every counter TYPE line names a *_total metric.
    for line in text.splitlines():
        if line.startswith("# TYPE ") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total"), line


def test_a_channel_not_seen_for_the_stale_time_is_no_longer_exported(clock):
    latest = LatestValues(clock, stale_after=timedelta(minutes=15))
    latest.update([minute("Main Panel", 0, 100.0), minute("Garage", 0, 50.0)])
    for step in range(1, 15):
        clock.advance(60)
        latest.update([minute("Main Panel", step, 100.0)])  # the garage circuit went silent
    assert [v.channel for v in latest.snapshot()] == ["Garage", "Main Panel"]  # 14 min: kept

    clock.advance(60)  # 15 minutes since the garage was last written
    got = families(scrape(VuegrafCollector(latest)))
    assert [s[1]["channel"] for s in got["vuegraf_power_watts"][1]] == ["Main Panel"]
    assert [s[1]["channel"] for s in got["vuegraf_energy_joules"][1]] == ["Main Panel"]


def test_forget_stops_exporting_a_channel_a_device_or_an_account(latest):
    latest.update(
        [
            minute("Main Panel", 0, 1.0),
            minute("Kitchen", 0, 2.0),
            minute("Office Plug", 0, 3.0, device="Office Plug"),
            Point("Cabin", "Cabin Vue", "Cabin Vue", Scale.MINUTE, T0, 4.0),
        ]
    )
    assert latest.forget("Home", "Main Panel", "Kitchen") == 1
    assert latest.forget("Home", "Nowhere") == 0
    assert {(v.account, v.channel) for v in latest.snapshot()} == {
        ("Home", "Main Panel"),
        ("Home", "Office Plug"),
        ("Cabin", "Cabin Vue"),
    }
    assert latest.forget("Home", "Office Plug") == 1
    assert latest.forget("Cabin") == 1
    got = families(scrape(VuegrafCollector(latest)))
    assert got["vuegraf_power_watts"][1] == [("vuegraf_power_watts", chan("Main Panel"), 1.0)]


def energy(latest: LatestValues, channel: str = "Main Panel") -> tuple[float, float]:
    [value] = [v for v in latest.snapshot() if v.channel == channel]
    return value.imported_joules, value.exported_joules


def test_a_rewritten_minute_is_counted_once_with_its_last_value(latest):
    sink = PrometheusSink(latest)
    sink.write([minute("Main Panel", 0, 600.0), minute("Main Panel", 1, 300.0)])
    # The next cycle writes minute 1 again (Emporia revised it) and a new minute 2.
    sink.write([minute("Main Panel", 1, 330.0), minute("Main Panel", 2, 120.0)])
    sink.write([minute("Main Panel", 2, 120.0)])  # and the very same point once more

    # The store holds 330 for minute 1 now; the counter agrees with it.
    assert energy(latest) == ((600.0 + 330.0 + 120.0) * 60, 0.0)
    [value] = latest.snapshot()
    assert (value.watts, value.time) == (120.0, T0 + timedelta(minutes=2))


def test_a_rewrite_of_the_newest_minute_updates_the_gauge_and_the_counter(latest):
    latest.update([minute("Main Panel", 0, 600.0)])
    latest.update([minute("Main Panel", 0, 660.0)])
    [value] = latest.snapshot()
    assert value.watts == 660.0
    assert energy(latest) == (660.0 * 60, 0.0)
    # A revision down never lowers the counter: it is taken from the next minute.
    latest.update([minute("Main Panel", 0, 600.0)])
    assert energy(latest) == (660.0 * 60, 0.0)
    latest.update([minute("Main Panel", 1, 100.0)])
    assert energy(latest) == ((600.0 + 100.0) * 60, 0.0)


def test_a_late_older_minute_counts_once_and_leaves_the_gauge_on_the_newest(latest):
    latest.update([minute("Main Panel", 0, 100.0), minute("Main Panel", 3, 400.0)])
    latest.update([minute("Main Panel", 1, 200.0), minute("Main Panel", 2, 300.0)])  # backfill
    latest.update([minute("Main Panel", 1, 200.0)])
    [value] = latest.snapshot()
    assert (value.watts, value.time) == (400.0, T0 + timedelta(minutes=3))
    assert energy(latest) == ((100.0 + 200.0 + 300.0 + 400.0) * 60, 0.0)


def test_solar_export_counts_up_a_counter_of_its_own_and_no_counter_decreases(latest):
    watts = [-500.0, -250.0, 0.0, 800.0, -100.0]
    seen: list[tuple[float, float]] = []
    for offset, value in enumerate(watts):
        latest.update([minute("Solar", offset, value)])
        seen.append(energy(latest, "Solar"))
    assert seen == [
        (0.0, 30000.0),
        (0.0, 45000.0),
        (0.0, 45000.0),
        (48000.0, 45000.0),
        (48000.0, 51000.0),
    ]
    imported = [s[0] for s in seen]
    exported = [s[1] for s in seen]
    assert imported == sorted(imported) and exported == sorted(exported)


def test_minutes_older_than_the_energy_window_are_not_counted(clock):
    latest = LatestValues(clock, energy_window=timedelta(hours=1))
    latest.update([minute("Main Panel", 120, 10.0)])
    latest.update([minute("Main Panel", 60, 20.0)])  # exactly one hour back: counted
    latest.update([minute("Main Panel", 59, 40.0)])  # older: history, not counted
    assert energy(latest) == ((10.0 + 20.0) * 60, 0.0)


# -- standard process, platform and GC families ------------------------------------------------



def test_the_exporter_adds_the_standard_families_in_its_own_registry_only(latest):
    global_before = {family.name for family in REGISTRY.collect()}
    # Two exporters in one process (a reload makes a new one): the collectors of each live in
    # its own registry, so neither clashes with the other nor with the global registry.
    first = ExporterServer(LOOPBACK_ANY_PORT, VuegrafCollector(latest), health=lambda: True)
    second = ExporterServer(LOOPBACK_ANY_PORT, VuegrafCollector(latest), health=lambda: True)
    assert {family.name for family in REGISTRY.collect()} == global_before
    for server in (first, second):
        got = families(server.metrics_text().decode())
        assert {name: got[name][0] for name in RUNTIME_FAMILIES} == RUNTIME_FAMILIES
        assert "vuegraf_up" in got
        assert set(got) == set(RUNTIME_FAMILIES) | set(families(scrape(VuegrafCollector(latest))))
    [(_, labels, value)] = got["python_info"][1]
    assert value == 1.0
    assert labels["implementation"] == platform.python_implementation()
    assert (labels["major"], labels["minor"], labels["patchlevel"]) == tuple(
        str(part) for part in sys.version_info[:3]
    )
    [(_, _, rss)] = got["process_resident_memory_bytes"][1]
    assert rss > 1_000_000  # this Python process, with pytest loaded, is far larger
    generations = {labels["generation"] for _, labels, _ in got["python_gc_collections"][1]}
    assert generations == {"0", "1", "2"}


# -- HTTP -----------------------------------------------------------------------------------


def http_get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_healthz_follows_health_and_the_landing_page_links_both(latest):
    healthy = [True]
    collector = VuegrafCollector(latest, health=lambda: healthy[0])
    with ExporterServer(LOOPBACK_ANY_PORT, collector, health=lambda: healthy[0]) as server:
        assert server.port > 0
        base = f"http://127.0.0.1:{server.port}"

        assert http_get(f"{base}/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
        healthy[0] = False
        assert http_get(f"{base}/healthz")[:2] == (503, "text/plain; charset=utf-8")

        status, content_type, body = http_get(f"{base}/")
        assert (status, content_type) == (200, "text/html; charset=utf-8")
        assert '<a href="/metrics">' in body and '<a href="/healthz">' in body

        status, content_type, body = http_get(f"{base}/metrics?x=1")
        assert status == 200
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        assert families(body)["vuegraf_up"] == ("gauge", [("vuegraf_up", {}, 0.0)])

        assert http_get(f"{base}/nothing")[0] == 404
        request = urllib.request.Request(f"{base}/metrics", method="HEAD")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200 and response.read() == b""
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{base}/healthz", timeout=30)
    server.stop()  # a second stop is harmless


def test_a_failing_health_check_answers_503_and_a_failing_scrape_500(latest):
    def broken() -> bool:
        raise RuntimeError("boom")

    def no_devices():
        raise RuntimeError("device list not loaded")

    collector = VuegrafCollector(latest, devices=no_devices)
    with ExporterServer(LOOPBACK_ANY_PORT, collector, health=broken) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert http_get(f"{base}/healthz")[0] == 503
        # A failing device source empties its family; the rest of the scrape still works.
        got = families(http_get(f"{base}/metrics")[2])
        assert got["vuegraf_device_connected"] == ("gauge", [])

    class Exploding(VuegrafCollector):
        def collect(self):
            raise RuntimeError("boom")

    with ExporterServer(LOOPBACK_ANY_PORT, Exploding(latest), health=lambda: True) as server:
        assert http_get(f"http://127.0.0.1:{server.port}/metrics")[0] == 500
