"""The loop tells whose side an account's failure is on: one ERROR line when the state
changes (none per retry), one on recovery, the state in Stats, `/metrics` and the health
check, and a refused login asked again only after a long back-off.

A scripted collector stands in for `AccountCollector` at the daemon's seam: its live half
fails with the exception Emporia's script gives for the virtual time (the classes are
vuegraf's own, as the session raises them). The daemon, the health file and the exporter
are the real ones; the clock is virtual.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vuegraf.clock import FakeClock
from vuegraf.collector import TickResult
from vuegraf.config import PrometheusConfig, parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAuthFailed, EmporiaError, EmporiaServerError
from vuegraf.exporter import ExporterServer, LatestValues, VuegrafCollector
from vuegraf.health import HEALTH_FILE, HealthFile, check
from vuegraf.stats import Stats

T0 = datetime(2026, 11, 23, 20, 0, 30, tzinfo=UTC)
OUTAGE = (T0 + timedelta(minutes=10), T0 + timedelta(minutes=40))  # Emporia answers 503
REFUSED_FROM = T0 + timedelta(minutes=60)  # the password was changed on Emporia's side
END = REFUSED_FROM + timedelta(hours=4)


class Scripted:
    """One account whose live half fails as `failure(now)` says (None: it works)."""

    name = "Home"

    def __init__(self, failure: Callable[[datetime], EmporiaError | None]) -> None:
        self.failure = failure
        self.lives: list[datetime] = []

    def live(self, now: datetime) -> TickResult:
        self.lives.append(now)
        result = TickResult()
        err = self.failure(now)
        if err is not None:
            result.live_failed("start-up", err)
        return result

    def fill(self, now: datetime, result: TickResult, until: object = None) -> None:
        raise AssertionError("no fill is due")


def emporia(now: datetime) -> EmporiaError | None:
    if OUTAGE[0] <= now < OUTAGE[1]:
        return EmporiaServerError(
            "usage request failed: Emporia answered HTTP 503 (3 attempts)",
            "HTTP 503 at getDeviceListUsages",
        )
    if now >= REFUSED_FROM:
        return EmporiaAuthFailed("token login failed: Emporia did not accept the credentials",
                                 "the login service refused them")
    return None


def account_states(text: str) -> dict[str, float]:
    return {
        s.labels["state"]: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "vuegraf_account_state"
        for s in family.samples
    }


def test_an_outage_and_a_refused_login_are_told_apart(tmp_path: Path, caplog) -> None:
    config = parse_config({"accounts": [{"name": "Home", "email": "a@b.c", "password": "pw"}]},
                          tmp_path / "vuegraf.json")
    stats = Stats()
    health = HealthFile(tmp_path, stats, threshold=5, interval_secs=60)
    collector = Scripted(emporia)
    clock = FakeClock(T0, stop_after=END)
    seen: list[tuple[datetime, str, bool, str]] = []  # (time, state, healthy, reason)
    exporter = ExporterServer(PrometheusConfig(port=0), VuegrafCollector(LatestValues(), stats),
                              health=health.healthy, runtime_metrics=False)

    def after_cycle(now: datetime) -> None:
        health.update(now)
        state = stats.snapshot().account_states["Home"][0]
        assert account_states(exporter.metrics_text().decode()) == {
            s: (1.0 if s == state else 0.0)
            for s in ("ok", "auth_failed", "emporia_down", "rate_limited", "api_changed")
        }
        ok, why = check(tmp_path / HEALTH_FILE, now.timestamp())
        seen.append((now, state, ok, why))

    daemon = Daemon(config, [], [], clock, stats=stats, collectors=[collector],
                    on_cycle=[after_cycle])
    with caplog.at_level(logging.DEBUG, logger="vuegraf"):
        daemon.run()

    # The states, in order, each once: ok, Emporia's outage, ok again, the refused login.
    changes = [state for i, (_t, state, _ok, _w) in enumerate(seen)
               if i == 0 or seen[i - 1][1] != state]
    assert changes == ["ok", "emporia_down", "ok", "auth_failed"]
    # One ERROR line per state change, none per retry; one recovery line.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        "Account Home: start-up: usage request failed: Emporia answered HTTP 503 (3 attempts); "
        "Emporia is failing (its side, HTTP 503 at getDeviceListUsages); retrying with "
        "back-off, holes are filled once it answers",
        "Account Home: start-up: token login failed: Emporia did not accept the credentials; "
        "Emporia refused the login (your side: check email and password in vuegraf.json; "
        "SIGHUP reloads it); asking again in 15 min",
    ]
    recoveries = [r.getMessage() for r in caplog.records if "recovered after" in r.getMessage()]
    assert len(recoveries) == 1 and recoveries[0].startswith("Account Home: recovered after ")
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]

    # Health: an outage counts against the threshold (5 failed cycles in a row) and says whose
    # side it is; a refused login is unhealthy at once.
    down = [(ok, why) for t, state, ok, why in seen if state == "emporia_down"]
    assert down[0] == (True, "healthy (account Home: Emporia is failing (HTTP 503 at "
                             "getDeviceListUsages))")
    assert down[-1] == (False, f"unhealthy: {len(down)} failed cycles in a row; account Home: "
                               "Emporia is failing (HTTP 503 at getDeviceListUsages)")
    refused = [(ok, why) for t, state, ok, why in seen if state == "auth_failed"]
    assert set(refused) == {(False, "unhealthy: account Home: Emporia refused the login "
                                    "(check email and password in vuegraf.json)")}
    assert all(ok for t, state, ok, _w in seen if state == "ok" and t > OUTAGE[1])

    # A refused login is asked again after 15, 30, 60, 120 min (each from the tick that
    # failed, at the first tick at or after it): 5 logins in 4 hours, not 240.
    tries = [t for t in collector.lives if t >= REFUSED_FROM]
    gaps = [round((b - a).total_seconds() / 60) for a, b in zip(tries, tries[1:], strict=False)]
    assert len(tries) == 5, tries
    assert [g >= want for g, want in zip(gaps, (15, 30, 60, 120), strict=True)] == [True] * 4
    assert all(g <= want + 1 for g, want in zip(gaps, (15, 30, 60, 120), strict=True)), gaps
    # During Emporia's 30 minutes the usual back-off: tries at 0, +1, then 1, 3 and 7 ticks
    # skipped, each stretched by 0.8..1.2 at random: 5 or 6 tries (4 to 7 allowed).
    assert 4 <= len([t for t in collector.lives if OUTAGE[0] <= t < OUTAGE[1]]) <= 7


def test_a_reload_forgets_the_state_of_an_account_it_removed(tmp_path: Path) -> None:
    config = parse_config({"accounts": [{"name": "Home", "email": "a@b.c", "password": "pw"}]},
                          tmp_path / "vuegraf.json")
    stats = Stats()
    stats.set_account_state("Old name", "auth_failed", "Emporia refused the login")
    health = HealthFile(tmp_path, stats, threshold=5, interval_secs=60)
    assert not health.healthy()
    clock = FakeClock(T0, stop_after=T0 + timedelta(minutes=2))
    Daemon(config, [], [], clock, stats=stats, collectors=[Scripted(lambda _now: None)]).run()
    assert stats.snapshot().account_states == {"Home": ("ok", "")}
    assert health.healthy()


@pytest.mark.parametrize("threshold", [1, 3])
def test_health_file_lists_each_accounts_state(tmp_path: Path, threshold: int) -> None:
    stats = Stats()
    stats.set_account_state("Home", "ok", "")
    stats.set_account_state("Cabin", "rate_limited", "Emporia asks for fewer requests (HTTP 429)")
    stats.count_cycle(False, 1.0, T0)
    health = HealthFile(tmp_path, stats, threshold=threshold, interval_secs=60)
    health.update(T0)
    ok, why = check(tmp_path / HEALTH_FILE, T0.timestamp())
    cabin = "account Cabin: Emporia asks for fewer requests (HTTP 429)"
    if threshold == 1:
        assert (ok, why) == (False, f"unhealthy: 1 failed cycles in a row; {cabin}")
    else:
        assert (ok, why) == (True, f"healthy ({cabin})")


def test_a_refused_login_after_a_long_outage_waits_its_own_first_15_min(tmp_path: Path,
                                                                       caplog) -> None:
    """The refused login's doubling counts refusals, not every failed cycle of the outage
    before it: after two hours of 503s, the first refusal waits 15 min, not 4 h."""
    config = parse_config({"accounts": [{"name": "Home", "email": "a@b.c", "password": "pw"}]},
                          tmp_path / "vuegraf.json")
    refused_from = T0 + timedelta(hours=2)

    def outage_then_refused(now: datetime) -> EmporiaError | None:
        if now < refused_from:
            return EmporiaServerError("usage request failed: Emporia answered HTTP 503",
                                      "HTTP 503 at getDeviceListUsages")
        return EmporiaAuthFailed("password login failed: Emporia did not accept the "
                                 "credentials", "the login service refused them")

    collector = Scripted(outage_then_refused)
    clock = FakeClock(T0, stop_after=refused_from + timedelta(hours=3))
    daemon = Daemon(config, [], [], clock, stats=Stats(), collectors=[collector])
    with caplog.at_level(logging.INFO, logger="vuegraf"):
        daemon.run()

    assert len([t for t in collector.lives if t < refused_from]) >= 8  # a long outage
    tries = [t for t in collector.lives if t >= refused_from]
    gaps = [round((b - a).total_seconds() / 60) for a, b in zip(tries, tries[1:], strict=False)]
    # 15, 30, 60 min (each from the tick that failed, at the first tick at or after it).
    assert len(gaps) >= 3, gaps
    assert all(want <= g <= want + 1 for g, want in zip(gaps[:3], (15, 30, 60), strict=True)), gaps
    refused = [r.getMessage() for r in caplog.records if "asking again in" in r.getMessage()]
    assert len(refused) == 1 and refused[0].endswith("asking again in 15 min"), refused
