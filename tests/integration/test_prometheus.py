"""End to end on real parts: simulator → pyemvue → daemon → exporter → a real Prometheus.

The daemon runs on the system clock in a thread, as in production, while a real
Prometheus scrapes the exporter every second; PromQL answers must equal what the
simulator served. A real `vuegraf CONFIG` child process is scraped too, for the standard
process, platform and GC families: they must describe that process, and its whole /metrics
must pass `promtool check metrics`. The sample configuration and alert rules in prometheus/
are checked, and the alerts unit-tested, with the real promtool.
"""

from __future__ import annotations

import math
import platform
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.inprocess import write_simulator_config
from harness.metrics import RUNTIME_FAMILIES
from servers import PrometheusServer, free_ports, poll_until, require_binary
from vuegraf import __version__
from vuegraf.config import parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.exporter import (
    SUGGESTED_PORT,
    ExporterServer,
    LatestValues,
    PrometheusSink,
    VuegrafCollector,
)
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

UTC = timezone.utc
REPO = Path(__file__).resolve().parents[2]
SAMPLE_CONFIG = REPO / "prometheus" / "prometheus.yml"
ALERTS = REPO / "prometheus" / "alerts.yml"
SEED = 5
MAINS_NAME = "Main Panel"
MAINS = "1,2,3"  # Emporia's channel number of a device's mains


def served_minute_watts(device: str, channel_num: str, bucket: datetime) -> float | None:
    """The watts the simulator serves for one channel's minute (kWh × 60 000)."""
    model = UsageModel(Scenario.default(), seed=SEED)
    [gid] = [g for g, num, dev, _n, _c in model.channels() if dev == device and num == channel_num]
    kwh = model.kwh(gid, channel_num, "1MIN", bucket)
    return None if kwh is None else kwh * 60_000


def test_prometheus_reads_the_watts_the_simulator_served(tmp_path, test_time):
    prometheus_binary = require_binary("prometheus")
    clock = test_time.clock()
    stats = Stats()
    latest = LatestValues(clock)
    with SimulatorServer(seed=SEED, now=test_time.now) as sim:
        config = parse_config(
            {
                "prometheus": {"port": SUGGESTED_PORT},
                "accounts": [
                    {
                        "name": "Primary Residence",
                        "email": "me@example.com",
                        "password": "secret-pw",
                        "simulatorUrl": sim.url,
                    }
                ],
            },
            tmp_path / "vuegraf.json",
        )
        assert config.prometheus is not None
        # The config accepts ports 1-65535; the test binds port 0 so it never clashes.
        exporter_config = replace(config.prometheus, port=0)
        accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
        daemon = Daemon(config, accounts, [PrometheusSink(latest)], clock, stats=stats)
        collector = VuegrafCollector(latest, stats, health=lambda: True)
        runner = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        runner.start()
        try:
            with (
                ExporterServer(exporter_config, collector, health=lambda: True) as exporter,
                PrometheusServer(
                    prometheus_binary, targets=[f"127.0.0.1:{exporter.port}"]
                ) as prometheus,
            ):
                selector = f'{{job="vuegraf", account="Primary Residence", channel="{MAINS_NAME}"}}'
                prometheus.query_until(f"vuegraf_power_watts{selector}")
                # One evaluation instant for all queries: they read the same scrape, and one
                # scrape reads one snapshot, so watts, its minute and the energy belong together.
                at = time.time()
                [power] = prometheus.query(f"vuegraf_power_watts{selector}", at)
                [stamp] = prometheus.query(f"vuegraf_power_timestamp_seconds{selector}", at)
                [energy] = prometheus.query(f"vuegraf_energy_joules_total{selector}", at)
                [up] = prometheus.query('up{job="vuegraf"}', at)
                [requests] = prometheus.query(
                    'vuegraf_emporia_requests_total{endpoint="getDeviceListUsages",outcome="ok"}',
                    at,
                )
                [info] = prometheus.query("vuegraf_build_info", at)
                [cycles] = prometheus.query('vuegraf_cycles_total{outcome="ok"}', at)
                [written] = prometheus.query(
                    'vuegraf_sink_points_total{sink="prometheus",outcome="written"}', at
                )
        finally:
            clock.stop()
            runner.join(timeout=60)
    assert not runner.is_alive()

    assert power["metric"]["device"] == MAINS_NAME
    bucket = datetime.fromtimestamp(float(stamp["value"][1]), UTC)
    assert bucket.second == 0
    expected = served_minute_watts(MAINS_NAME, MAINS, bucket)
    assert expected is not None and expected > 0
    assert float(power["value"][1]) == pytest.approx(expected, rel=1e-12)

    # Energy: the minutes collected so far (one per cycle, consecutive, ending at `bucket`),
    # each counted once as watts × 60 s.
    got_joules = float(energy["value"][1])
    sums = []
    for count in range(1, 4):
        minutes = [bucket - timedelta(minutes=i) for i in range(count)]
        served = [served_minute_watts(MAINS_NAME, MAINS, m) for m in minutes]
        assert None not in served, (minutes, served)  # the mains of a panel never drop out
        sums.append(sum(w * 60 for w in served if w is not None))
    assert any(math.isclose(got_joules, s, rel_tol=1e-12) for s in sums), (got_joules, sums)

    assert up["value"][1] == "1"
    assert float(requests["value"][1]) >= 1
    assert info["metric"]["version"] == __version__
    assert float(cycles["value"][1]) >= 1
    assert float(written["value"][1]) > 0


def metrics_body(url: str) -> str:
    """The /metrics text, or "" while nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return ""


def test_process_and_python_metrics_describe_the_real_vuegraf_process(tmp_path, test_time):
    prometheus_binary = require_binary("prometheus")
    (port,) = free_ports(1)
    log = tmp_path / "vuegraf.log"
    with SimulatorServer(seed=SEED, now=test_time.now) as sim:
        config = write_simulator_config(tmp_path, sim.url, {"prometheus": {"port": port}})
        spawned = time.time()
        with test_time.running(log, str(config)) as proc:
            body = poll_until(
                lambda: metrics_body(f"http://127.0.0.1:{port}/metrics"),
                lambda text: "vuegraf_up" in text and proc.poll() is None,
                120,
                0.1,
                lambda _text: f"no /metrics from vuegraf (exit code {proc.poll()}):\n"
                + log.read_text(errors="replace"),
            )
            scraped = time.time()
            with PrometheusServer(prometheus_binary, targets=[f"127.0.0.1:{port}"]) as prometheus:
                [stored_start] = prometheus.query_until('process_start_time_seconds{job="vuegraf"}')
                [stored_info] = prometheus.query_until('python_info{job="vuegraf"}')
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0, log.read_text(errors="replace")

    got = {f.name: f for f in text_string_to_metric_families(body)}
    for name, kind in RUNTIME_FAMILIES.items():
        assert name in got and got[name].type == kind, (name, sorted(got))

    def value(name: str) -> float:
        [sample] = got[name].samples
        return float(sample.value)

    # The child's start: after the test spawned it and before its first answer, give or take
    # the rounding of /proc (the boot time there is in whole seconds), with a margin.
    start = value("process_start_time_seconds")
    assert spawned - 2 <= start <= scraped + 2, (spawned, start, scraped)
    assert float(stored_start["value"][1]) == pytest.approx(start, abs=1e-6)
    assert value("process_resident_memory_bytes") > 1_000_000
    assert value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes")
    assert 3 <= value("process_open_fds") <= value("process_max_fds")
    assert value("process_cpu_seconds") > 0  # it logged in and collected: not idle
    [info] = got["python_info"].samples
    # The child runs this test's interpreter (sys.executable).
    assert info.labels["implementation"] == platform.python_implementation()
    assert (info.labels["major"], info.labels["minor"], info.labels["patchlevel"]) == tuple(
        str(part) for part in sys.version_info[:3]
    )
    assert stored_info["metric"]["version"] == info.labels["version"]
    assert stored_info["metric"]["version"].startswith(".".join(map(str, sys.version_info[:3])))
    generations = {s.labels["generation"] for s in got["python_gc_collections"].samples}
    assert generations == {"0", "1", "2"}

    # Prometheus's own linter on the whole body, vuegraf's families and the standard ones.
    lint = subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=body, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout + lint.stderr == ""


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool")
    return subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=REPO
    )


def test_sample_config_and_alert_rules_pass_promtool():
    rules = run_promtool("check", "rules", ALERTS)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 3 rules found" in rules.stdout
    config = run_promtool("check", "config", SAMPLE_CONFIG)  # also checks its rule_files
    assert config.returncode == 0, config.stdout + config.stderr


# promtool's rule unit tests: input series in, the alerts that must (not) fire out.
ALERT_TESTS = """\
rule_files:
  - {alerts}
evaluation_interval: 1m
tests:
  # Cycles keep failing from minute 5 on: no successful cycle for 10 minutes at 15m.
  - interval: 1m
    input_series:
      - series: 'up{{job="vuegraf", instance="h:9852"}}'
        values: '1x30'
      - series: 'vuegraf_up{{job="vuegraf", instance="h:9852"}}'
        values: '1x30'
      - series: 'vuegraf_last_success_timestamp_seconds{{job="vuegraf", instance="h:9852"}}'
        values: '0+60x5 300x25'
      - series: '{main}'
        values: '1000x30'
      - series: '{balance}'
        values: '10x30'
    alert_rule_test:
      - eval_time: 15m
        alertname: VuegrafNoData
        exp_alerts: []
      - eval_time: 16m
        alertname: VuegrafNoData
        exp_alerts:
          - exp_labels: {{severity: warning, reason: cycles_failing, job: vuegraf,
                          instance: "h:9852"}}
            exp_annotations:
              summary: "vuegraf on h:9852: no successful collection for 10 minutes"
              description: "The last fully successful cycle ended 11m 0s ago. Check the
                vuegraf log: Emporia login or requests, or a sink (InfluxDB) failing."
      - eval_time: 16m
        alertname: VuegrafMainsZero
        exp_alerts: []

  # vuegraf stops answering scrapes at minute 3: up is 0, its own series go stale.
  - interval: 1m
    input_series:
      - series: 'up{{job="vuegraf", instance="h:9852"}}'
        values: '1 1 1 0x20'
      - series: 'vuegraf_up{{job="vuegraf", instance="h:9852"}}'
        values: '1 1 1'
      - series: 'vuegraf_last_success_timestamp_seconds{{job="vuegraf", instance="h:9852"}}'
        values: '0+60x2'
      - series: '{main}'
        values: '1000 1000 1000'
    alert_rule_test:
      - eval_time: 12m
        alertname: VuegrafNoData
        exp_alerts: []
      - eval_time: 13m
        alertname: VuegrafNoData
        exp_alerts:
          - exp_labels: {{severity: warning, reason: no_data, job: vuegraf,
                          instance: "h:9852"}}
            exp_annotations: &no_data
              summary: "vuegraf on h:9852: no data for 10 minutes"
              description: "Prometheus cannot scrape vuegraf, or vuegraf has no successful
                cycle or no channel values to export."

  # Running and scraped, but no cycle has succeeded since it started.
  - interval: 1m
    input_series:
      - series: 'up{{job="vuegraf", instance="h:9852"}}'
        values: '1x20'
      - series: 'vuegraf_up{{job="vuegraf", instance="h:9852"}}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 9m
        alertname: VuegrafNoData
        exp_alerts: []
      - eval_time: 10m
        alertname: VuegrafNoData
        exp_alerts:
          - exp_labels: {{severity: warning, reason: no_data, job: vuegraf,
                          instance: "h:9852"}}
            exp_annotations: *no_data

  # Mains at 0 W from minute 2; a smart plug idling at 0 W the whole time is not mains.
  - interval: 1m
    input_series:
      - series: 'up{{job="vuegraf", instance="h:9852"}}'
        values: '1x20'
      - series: 'vuegraf_up{{job="vuegraf", instance="h:9852"}}'
        values: '1x20'
      - series: 'vuegraf_last_success_timestamp_seconds{{job="vuegraf", instance="h:9852"}}'
        values: '0+60x20'
      - series: '{main}'
        values: '800 800 0x18'
      - series: '{balance}'
        values: '0x20'
      - series: '{plug}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 6m
        alertname: VuegrafMainsZero
        exp_alerts: []
      - eval_time: 7m
        alertname: VuegrafMainsZero
        exp_alerts:
          - exp_labels: {{severity: critical, job: vuegraf, instance: "h:9852",
                          account: Home, device: Main Panel, channel: Main Panel}}
            exp_annotations:
              summary: "Main Panel (Home): mains power 0 W for 5 minutes"
              description: "Power cut, tripped main breaker, or a current clamp come loose."
      - eval_time: 7m
        alertname: VuegrafNoData
        exp_alerts: []
"""


def power_series(device: str, channel: str) -> str:
    return (
        f'vuegraf_power_watts{{job="vuegraf", instance="h:9852", account="Home", '
        f'device="{device}", channel="{channel}"}}'
    )


def test_alert_rules_fire_when_and_only_when_they_should(tmp_path):
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(
        ALERT_TESTS.format(
            alerts=ALERTS,
            main=power_series("Main Panel", "Main Panel"),
            balance=power_series("Main Panel", "Main Panel-Balance"),
            plug=power_series("Office Plug", "Office Plug"),
        )
    )
    result = run_promtool("test", "rules", tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
