"""Emporia's known breakages, and vuegraf telling whose side each one is on.

Each test replays one breakage the public record shows: `/customers` answering 400 for five
hours (logins failed), the Cognito login answering 502 (at a login, and at a token renewal
mid-run), a maintenance hour (every endpoint 503), an endpoint answering 404 (an API change),
and a wrong password. vuegraf must keep running; log one ERROR line when the account's
state changes and one INFO line on recovery, none per retry; show the state in Stats, in
`/metrics` and in the health check, during the breakage and after; keep its requests bounded
(back-off); keep stored tokens through Emporia's failures (never fall back to the password
for them); and afterwards store every minute, hour and day of the breakage with the
simulator's value (tests/harness/oracle.py, through tests/harness/completeness.py).

Real pyemvue (its production `login` and `Auth`) against the Cognito stand-in and the
simulator, the embedded SQLite store, virtual time shared by vuegraf and the simulator.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import oracle
from harness.completeness import compare, earlier_run_points, seed_store, sqlite_points
from harness.emporia_cloud import EMAIL, PASSWORD, cognito_cloud, cognito_config
from harness.inprocess import run_daemon
from vuegraf.clock import FakeClock
from vuegraf.config import Config, PrometheusConfig, parse_config
from vuegraf.exporter import ExporterServer, LatestValues, VuegrafCollector
from vuegraf.health import HEALTH_FILE, HealthFile, check
from vuegraf.simulator import SimulatorServer
from vuegraf.simulator.cognito import CognitoStandIn
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

SEED = 47
ZONE = oracle.NEW_YORK
# 20:00 in New York: a breakage of five hours spans the local midnight (05:00 UTC), so the
# day that ends during it must be stored afterwards with the right value.
T0 = datetime(2026, 11, 22, 1, 0, 20, tzinfo=UTC)
STATES = ("ok", "auth_failed", "emporia_down", "rate_limited", "api_changed")


@dataclass
class Seen:
    """What an observer saw after one cycle."""

    at: datetime
    state: str
    reason: str
    healthy: bool
    health_says: str
    metric_state: str  # the one state whose vuegraf_account_state sample is 1


class Observer:
    """After every cycle: the account's state in Stats, in `/metrics` (the exporter's real
    collector) and in the health file `vuegraf-health` reads."""

    def __init__(self, tmp_path: Path, stats: Stats, threshold: int) -> None:
        self.stats = stats
        self.dir = tmp_path / "observed"
        self.health = HealthFile(self.dir, stats, threshold, 60)
        self.exporter = ExporterServer(
            PrometheusConfig(port=0), VuegrafCollector(LatestValues(), stats),
            health=self.health.healthy, runtime_metrics=False,
        )
        self.seen: list[Seen] = []

    def __call__(self, now: datetime) -> None:
        self.health.update(now)
        state, reason = self.stats.snapshot().account_states.get("Home", ("", ""))
        healthy, says = check(self.dir / HEALTH_FILE, now.timestamp())
        samples = [
            s for family in text_string_to_metric_families(self.exporter.metrics_text().decode())
            if family.name == "vuegraf_account_state" for s in family.samples
            if s.labels["account"] == "Home"
        ]
        assert sorted(s.labels["state"] for s in samples) == sorted(STATES)
        (current,) = [s.labels["state"] for s in samples if s.value == 1.0]
        self.seen.append(Seen(now, state, reason, healthy, says, current))

    def changes(self) -> list[str]:
        """The states one after the other, each change once."""
        out: list[str] = []
        for seen in self.seen:
            assert seen.metric_state == seen.state  # /metrics agrees with Stats every cycle
            if not out or out[-1] != seen.state:
                out.append(seen.state)
        return out

    def during(self, since: datetime, until: datetime) -> list[Seen]:
        return [s for s in self.seen if since <= s.at < until]


class Shared:
    """Virtual time for the simulator across vuegraf's runs (each run has its own clock)."""

    def __init__(self) -> None:
        self.clock = FakeClock(T0)

    def now(self) -> datetime:
        return self.clock.now()

    def run(self, config: Config, start: datetime, until: datetime, stats: Stats,
            hooks: list[Callable[[datetime], None]]) -> None:
        """One vuegraf process from `start` to `until` (a restart begins a new one)."""
        self.clock = FakeClock(start, stop_after=until)
        run_daemon(config, self.clock, stats, hooks)


@pytest.fixture
def cloud() -> Iterator[tuple[CognitoStandIn, SimulatorServer, Shared]]:
    shared = Shared()
    with cognito_cloud(seed=SEED, now=shared.now) as (cognito, sim):
        yield cognito, sim, shared


def config_for(tmp_path: Path, password: str = PASSWORD) -> Config:
    """The Cognito stand-in's account in New York time (the household's zone), with
    `password` (the right one unless given)."""
    if password == PASSWORD:
        return cognito_config(tmp_path, timezone="America/New_York")
    data: dict[str, Any] = {
        "accounts": [{"name": "Home", "email": EMAIL, "password": password}],
        "stateDir": "state", "timezone": "America/New_York",
    }
    return parse_config(data, tmp_path / "vuegraf.json", environ={})


def seed(config: Config, sim: SimulatorServer) -> None:
    """What an earlier run left: the minute, hour and local day just before T0, so the
    start-up fills reach back to them (not a week)."""
    minute = T0.replace(second=0) - timedelta(minutes=2)
    hour = T0.replace(minute=0, second=0) - timedelta(hours=1)
    day = oracle.local_date(T0, ZONE) - timedelta(days=1)
    seed_store(config, earlier_run_points(sim.model, "Home", minute, hour, day, ZONE))


def assert_everything_stored(tmp_path: Path, sim: SimulatorServer, end: datetime) -> None:
    """Every minute, hour and local day from before T0 to the end of the run (less what
    Emporia has not settled yet) is stored with the simulator's value, nothing else."""
    db = tmp_path / "vuegraf.sqlite"
    settled = end - timedelta(minutes=5)
    first_minute = T0.replace(second=0) - timedelta(minutes=2)
    first_hour = T0.replace(minute=0, second=0) - timedelta(hours=1)
    first_day = oracle.day_start(T0, ZONE) - timedelta(days=1)
    results = []
    for scale, tag, since, until in (
        ("1MIN", "False", first_minute, oracle.floor_to(settled, 60)),
        ("1H", "Hour", first_hour, oracle.floor_to(settled, 3600)),
        ("1D", "Day", first_day, oracle.day_start(settled, ZONE)),
    ):
        want = oracle.served(oracle.DEFAULT_NAMES, sim.model, scale, since, until, ZONE)
        results.append(compare(f"{scale} points", sqlite_points(db, "Home", tag), want))
    print(*results, sep="\n")
    for result in results:
        assert result.ok and result.expected > 0, str(result)


def counted_equals_seen(stats: Stats, sim: SimulatorServer) -> int:
    """vuegraf's request count per endpoint equals the simulator's; returns the total."""
    counted: Counter[str] = Counter()
    for (_a, endpoint, _outcome), n in stats.snapshot().requests.items():
        if endpoint != "login":
            counted[endpoint] += n
    seen = Counter(r.endpoint for r in sim.requests_seen())
    assert counted == seen
    return sum(seen.values())


def account_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and r.getMessage().startswith("Account Home:")]


def recoveries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in account_lines(caplog, logging.INFO) if "recovered after" in m]


def stored_tokens(tmp_path: Path) -> dict[str, str]:
    (path,) = (tmp_path / "state").glob("emporia-tokens-*.json")
    tokens: dict[str, str] = json.loads(path.read_text())
    return tokens


# -- /customers answering 400 for five hours (September 2026) -----------------------------------


def test_customers_400_for_five_hours_is_emporias_side_and_keeps_the_tokens(
    tmp_path: Path, cloud: tuple[CognitoStandIn, SimulatorServer, Shared],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cognito, sim, shared = cloud
    config = config_for(tmp_path)
    seed(config, sim)
    stats = Stats()
    observer = Observer(tmp_path, stats, config.health_failure_threshold)
    broken = (T0 + timedelta(minutes=10), T0 + timedelta(hours=5, minutes=10))
    end = broken[1] + timedelta(minutes=40)

    def emporia(now: datetime) -> None:
        if broken[0] <= now < broken[1]:
            sim.set_fault(400, endpoints={"customers"})
        else:
            sim.clear_fault()

    with caplog.at_level(logging.INFO, logger="vuegraf"):
        shared.run(config, T0, broken[0], stats, [emporia, observer])
        assert cognito.password_logins == 1
        tokens_before = stored_tokens(tmp_path)
        emporia(broken[0])
        # vuegraf restarts (an upgrade, a reboot) while /customers refuses: a new login.
        shared.run(config, broken[0], end, stats, [emporia, observer])

    # Emporia's side: the stored tokens were used (renewed), never the password.
    assert cognito.password_logins == 1 and cognito.refused_logins == 0
    assert cognito.renewals > 1
    assert stored_tokens(tmp_path)["refresh_token"] == tokens_before["refresh_token"]
    assert cognito.check_token(stored_tokens(tmp_path)["id_token"])
    assert "stored tokens did not work" not in caplog.text
    # One line when it began (saying whose side), one when it ended, none per retry.
    assert account_lines(caplog, logging.ERROR) == [
        f"Account Home: start-up: token login failed: HTTPError: 400 Client Error: Bad Request "
        f"for url: {sim.url}/customers; Emporia is failing (its side, HTTP 400 at customers "
        "after the credentials were accepted); retrying with back-off, holes are filled once "
        "it answers"
    ]
    assert len(recoveries(caplog)) == 1
    assert not account_lines(caplog, logging.WARNING)
    # The state everywhere, during and after.
    assert observer.changes() == ["ok", "emporia_down", "ok"]
    during = observer.during(broken[0], broken[1])
    assert {s.state for s in during} == {"emporia_down"}
    assert during[-1].reason == ("Emporia is failing (HTTP 400 at customers after the "
                                 "credentials were accepted)")
    assert not during[-1].healthy
    assert during[-1].health_says.endswith(
        "failed cycles in a row; account Home: Emporia is failing (HTTP 400 at customers "
        "after the credentials were accepted)")
    assert observer.seen[-1].state == "ok" and observer.seen[-1].healthy
    # Bounded: a login tried at most every 16 ticks once the back-off is at its longest.
    logins = [r for r in sim.requests_seen() if r.endpoint == "customers" and r.status == 400]
    # 5 h at one try per 16 ticks x 0.8..1.2 (jitter), after 5 tries of the ramp: 20 to 28.
    assert 5 < len(logins) <= 300 // 12 + 8, len(logins)
    total = counted_equals_seen(stats, sim)
    print(f"{len(logins)} refused logins, {total} requests in {end - T0}")
    assert_everything_stored(tmp_path, sim, end)


# -- Cognito answering 502 -------------------------------------------------------------------


@pytest.mark.parametrize("stored", [True, False], ids=["stored-tokens", "first-start"])
def test_the_login_service_502_is_emporias_side_and_never_costs_the_tokens(
    tmp_path: Path, cloud: tuple[CognitoStandIn, SimulatorServer, Shared],
    caplog: pytest.LogCaptureFixture, stored: bool,
) -> None:
    cognito, sim, shared = cloud
    config = config_for(tmp_path)
    seed(config, sim)
    stats = Stats()
    observer = Observer(tmp_path, stats, config.health_failure_threshold)
    broken = (T0 + timedelta(minutes=10), T0 + timedelta(minutes=70))
    end = broken[1] + timedelta(minutes=30)

    def login_service(now: datetime) -> None:
        cognito.failing_status = 502 if broken[0] <= now < broken[1] else None

    with caplog.at_level(logging.INFO, logger="vuegraf"):
        if stored:
            shared.run(config, T0, broken[0], stats, [login_service, observer])
            tokens_before = stored_tokens(tmp_path)
        login_service(broken[0])
        shared.run(config, broken[0], end, stats, [login_service, observer])

    how = "token" if stored else "password"
    assert account_lines(caplog, logging.ERROR) == [
        f"Account Home: start-up: {how} login failed: ClientError: An error occurred (502) "
        "when calling the InitiateAuth operation (reached max retries: 4): Bad Gateway; "
        "Emporia is failing (its side, HTTP 502 from the login service); retrying with "
        "back-off, holes are filled once it answers"
    ]
    assert len(recoveries(caplog)) == 1
    assert "stored tokens did not work" not in caplog.text
    if stored:
        # The tokens were kept and used afterwards: no password login at all after the first.
        assert cognito.password_logins == 1
        assert stored_tokens(tmp_path)["refresh_token"] == tokens_before["refresh_token"]
        assert observer.changes() == ["ok", "emporia_down", "ok"]
    else:
        assert cognito.password_logins == 1  # the one that worked, after the outage
        assert observer.changes() == ["emporia_down", "ok"]
    assert cognito.refused_logins == 0
    during = observer.during(broken[0], broken[1])
    assert {s.state for s in during} == {"emporia_down"}
    assert during[0].reason == "Emporia is failing (HTTP 502 from the login service)"
    assert observer.seen[-1].state == "ok" and observer.seen[-1].healthy
    # Bounded: one login tried per back-off step (each one call to Cognito), 60 minutes.
    assert 3 <= cognito.failed_calls <= 12, cognito.failed_calls
    counted_equals_seen(stats, sim)
    assert_everything_stored(tmp_path, sim, end)


def test_a_token_renewal_502_mid_run_is_emporias_side_and_keeps_the_session_tokens(
    tmp_path: Path, cloud: tuple[CognitoStandIn, SimulatorServer, Shared],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cognito, sim, shared = cloud
    # Every token pyemvue holds has expired by its next request (a lifetime of 0 s), so each
    # request renews first, as a long-running vuegraf does once an hour; the API still takes
    # the tokens (leeway), so only the renewal can fail.
    cognito.token_lifetime_s = 0
    cognito.api_leeway_s = 24 * 3600
    config = config_for(tmp_path)
    seed(config, sim)
    stats = Stats()
    observer = Observer(tmp_path, stats, config.health_failure_threshold)
    broken = (T0 + timedelta(minutes=10), T0 + timedelta(minutes=50))
    end = broken[1] + timedelta(minutes=30)

    def login_service(now: datetime) -> None:
        cognito.failing_status = 502 if broken[0] <= now < broken[1] else None

    with caplog.at_level(logging.INFO, logger="vuegraf"):
        shared.run(config, T0, end, stats, [login_service, observer])

    errors = account_lines(caplog, logging.ERROR)
    assert errors == [
        "Account Home: 1MIN: usage request failed: ClientError: An error occurred (502) when "
        "calling the InitiateAuth operation (reached max retries: 4): Bad Gateway; Emporia is "
        "failing (its side, HTTP 502 from the login service); retrying with back-off, holes "
        "are filled once it answers"
    ]
    assert len(recoveries(caplog)) == 1
    # The renewals failed, the session was replaced from the stored tokens (their renewal
    # failing too), and never by the password.
    # (5 failed tries in 25 minutes at most, jitter included, then a new login: 40 minutes
    # hold at least one.)
    assert cognito.failed_calls >= 6
    assert stats.snapshot().requests[("Home", "login", "error")] >= 1
    assert cognito.password_logins == 1 and cognito.refused_logins == 0
    assert "stored tokens did not work" not in caplog.text
    assert observer.changes() == ["ok", "emporia_down", "ok"]
    during = observer.during(broken[0] + timedelta(minutes=1), broken[1])
    assert {s.reason for s in during} == {"Emporia is failing (HTTP 502 from the login service)"}
    counted_equals_seen(stats, sim)
    assert_everything_stored(tmp_path, sim, end)


# -- A session Emporia no longer accepts (its refresh token expired or was revoked) -----------


def test_a_session_no_longer_accepted_logs_in_again_and_is_no_refused_password(
    tmp_path: Path, cloud: tuple[CognitoStandIn, SimulatorServer, Shared],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cognito, sim, shared = cloud
    config = config_for(tmp_path)
    seed(config, sim)
    stats = Stats()
    observer = Observer(tmp_path, stats, config.health_failure_threshold)
    revoked_at = T0 + timedelta(minutes=20)
    end = revoked_at + timedelta(minutes=40)
    revoked: list[datetime] = []

    def expire(now: datetime) -> None:
        """Once: the API refuses the session's id token (401) and Cognito its refresh token,
        as when Emporia ends a session; the password is still right."""
        if now >= revoked_at and not revoked:
            cognito.revoke_refresh_tokens()
            cognito.revoke_id_tokens()
            revoked.append(now)

    with caplog.at_level(logging.INFO, logger="vuegraf"):
        shared.run(config, T0, end, stats, [expire, observer])

    # Not the user's side: no ERROR, never "check email and password", never unhealthy.
    assert account_lines(caplog, logging.ERROR) == []
    assert "check email and password" not in caplog.text
    expired = [m for m in account_lines(caplog, logging.WARNING) if "no longer accepts" in m]
    assert len(expired) == 1, account_lines(caplog, logging.WARNING)
    assert "logging in again at the next tick" in expired[0]
    assert "auth_failed" not in observer.changes()
    assert all(s.healthy for s in observer.seen)
    # The next tick logged in again (the stored tokens refused, then the password).
    assert cognito.password_logins == 2 and cognito.refused_logins == 0
    failed = [s for s in observer.seen if s.state != "ok"]
    assert len(failed) == 1 and failed[0].reason.startswith(
        "Emporia no longer accepts the session"), failed
    assert len(recoveries(caplog)) == 1
    counted_equals_seen(stats, sim)
    assert_everything_stored(tmp_path, sim, end)


# -- A maintenance hour: every endpoint 503 ---------------------------------------------------


def test_a_maintenance_hour_is_one_line_then_every_point_is_filled(
    tmp_path: Path, cloud: tuple[CognitoStandIn, SimulatorServer, Shared],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cognito, sim, shared = cloud
    config = config_for(tmp_path)
    seed(config, sim)
    stats = Stats()
    observer = Observer(tmp_path, stats, config.health_failure_threshold)
    broken = (T0 + timedelta(minutes=10), T0 + timedelta(minutes=70))
    end = broken[1] + timedelta(minutes=30)

    def maintenance(now: datetime) -> None:
        if broken[0] <= now < broken[1]:
            sim.set_fault(503)
        else:
            sim.clear_fault()

    with caplog.at_level(logging.INFO, logger="vuegraf"):
        shared.run(config, T0, end, stats, [maintenance, observer])

    errors = account_lines(caplog, logging.ERROR)
    assert len(errors) == 1, errors
    assert errors[0].startswith("Account Home: 1MIN: usage request failed: Emporia answered "
                                "HTTP 503 (3 attempts); Emporia is failing (its side, HTTP 503 "
                                "at getDeviceListUsages); retrying with back-off")
    assert len(recoveries(caplog)) == 1
    assert observer.changes() == ["ok", "emporia_down", "ok"]
    during = observer.during(broken[0] + timedelta(minutes=1), broken[1])
    assert {s.state for s in during} == {"emporia_down"}
    assert not during[-1].healthy and "Emporia is failing (HTTP 503" in during[-1].health_says
    # The session was replaced after failures in a row, by the stored tokens: no password.
    assert cognito.password_logins == 1 and cognito.refused_logins == 0
    # Bounded: pyemvue's 3 attempts per try, tries spaced by the back-off (at most every 16
    # ticks): far below a try every minute (60 x 3).
    failed = [r for r in sim.requests_seen() if r.status == 503]
    assert len(failed) <= 3 * 14, len(failed)
    counted_equals_seen(stats, sim)
    assert_everything_stored(tmp_path, sim, end)


# -- A wrong password ---------------------------------------------------------------------------


def test_a_wrong_password_is_the_users_side_asked_rarely_until_fixed(
    tmp_path: Path, cloud: tuple[CognitoStandIn, SimulatorServer, Shared],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cognito, sim, shared = cloud
    wrong = config_for(tmp_path, password="not-the-Cogn1to-password")
    seed(wrong, sim)
    stats = Stats()
    observer = Observer(tmp_path, stats, wrong.health_failure_threshold)
    fixed_at = T0 + timedelta(hours=3)
    end = fixed_at + timedelta(minutes=30)

    with caplog.at_level(logging.INFO, logger="vuegraf"):
        shared.run(wrong, T0, fixed_at, stats, [observer])
        refused_while_wrong = cognito.refused_logins
        asked_while_wrong = len(sim.requests_seen())
        # The user corrects vuegraf.json; SIGHUP builds the loop again with it.
        shared.run(config_for(tmp_path), fixed_at, end, stats, [observer])

    assert account_lines(caplog, logging.ERROR) == [
        "Account Home: start-up: password login failed: Emporia did not accept the "
        "credentials; Emporia refused the login (your side: check email and password in "
        "vuegraf.json; SIGHUP reloads it); asking again in 15 min"
    ]
    assert "not-the-Cogn1to-password" not in caplog.text and PASSWORD not in caplog.text
    assert len(recoveries(caplog)) == 1
    # Asked again after 15, 30, 60 min (and then 120): 4 logins in 3 hours, not 180; Emporia's
    # API never asked while the login is refused.
    assert refused_while_wrong == 4
    assert asked_while_wrong == 0
    # The user's side, at once: unhealthy from the first cycle, saying what to check.
    assert observer.changes() == ["auth_failed", "ok"]
    wrong_cycles = observer.during(T0, fixed_at)
    assert {(s.healthy, s.health_says) for s in wrong_cycles} == {
        (False, "unhealthy: account Home: Emporia refused the login (check email and password "
                "in vuegraf.json)")}
    assert observer.seen[-1].healthy
    counted_equals_seen(stats, sim)
    assert_everything_stored(tmp_path, sim, end)


# -- An endpoint withdrawn: Emporia changed its API ----------------------------------------------


def test_an_endpoint_answering_404_is_an_api_change_not_an_outage(
    tmp_path: Path, cloud: tuple[CognitoStandIn, SimulatorServer, Shared],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cognito, sim, shared = cloud
    config = config_for(tmp_path)
    seed(config, sim)
    stats = Stats()
    observer = Observer(tmp_path, stats, config.health_failure_threshold)
    broken = (T0 + timedelta(minutes=10), T0 + timedelta(minutes=40))
    end = broken[1] + timedelta(minutes=30)

    def withdrawn(now: datetime) -> None:
        if broken[0] <= now < broken[1]:
            sim.set_fault(404, endpoints={"getDeviceListUsages"})
        else:
            sim.clear_fault()  # (put back: an API change Emporia undid)

    with caplog.at_level(logging.INFO, logger="vuegraf"):
        shared.run(config, T0, end, stats, [withdrawn, observer])

    # pyemvue answers a 404 of the usage request with an empty result; the status _send saw
    # says what it was.
    assert account_lines(caplog, logging.ERROR) == [
        "Account Home: 1MIN: usage request failed: Emporia sent HTTP 404 with no usage data; "
        "Emporia's API has changed (neither your side nor an outage: HTTP 404 at "
        "getDeviceListUsages: the endpoint is gone); this vuegraf needs an update; retrying "
        "with back-off"
    ]
    assert observer.changes() == ["ok", "api_changed", "ok"]
    during = observer.during(broken[0] + timedelta(minutes=1), broken[1])
    assert {s.metric_state for s in during} == {"api_changed"}
    assert len(recoveries(caplog)) == 1
    counted_equals_seen(stats, sim)
    assert_everything_stored(tmp_path, sim, end)


# -- The chart endpoint withdrawn: live values work, no hole can be filled -----------------------


def test_a_withdrawn_chart_endpoint_shows_in_the_state_until_fills_work_again(
    tmp_path: Path, cloud: tuple[CognitoStandIn, SimulatorServer, Shared],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cognito, sim, shared = cloud
    config = config_for(tmp_path)
    seed(config, sim)
    stats = Stats()
    observer = Observer(tmp_path, stats, config.health_failure_threshold)
    restored_at = T0 + timedelta(minutes=40)
    # A series' fills back off up to 1 h (vuegraf.backoff.FILL_ERROR): 2 h see them work.
    end = restored_at + timedelta(hours=2)
    sim.withdraw("getChartUsage")

    def restore(now: datetime) -> None:
        if now >= restored_at:
            sim.restore("getChartUsage")

    with caplog.at_level(logging.INFO, logger="vuegraf"):
        shared.run(config, T0, end, stats, [restore, observer])

    # One WARNING for the fills, in the words that say whose side it is; no live failure.
    assert account_lines(caplog, logging.ERROR) == []
    fills = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
             and r.getMessage().startswith("Account Home, filling holes:")]
    assert len(fills) == 1, fills
    assert fills[0].endswith(
        "Emporia's API has changed (neither your side nor an outage: HTTP 404 at "
        "getChartUsage: the endpoint is gone); this vuegraf needs an update; retrying with "
        "back-off"), fills
    # /metrics and the health check say so from the first failed fill until fills work.
    assert observer.changes() == ["api_changed", "ok"]
    broken = observer.during(T0, restored_at)
    assert {s.reason for s in broken} == {
        "filling holes: Emporia's API has changed (HTTP 404 at getChartUsage: the endpoint is "
        "gone); vuegraf needs an update"}
    assert {s.health_says for s in broken} == {
        "healthy (account Home: filling holes: Emporia's API has changed (HTTP 404 at "
        "getChartUsage: the endpoint is gone); vuegraf needs an update)"}
    assert observer.seen[-1].state == "ok"
    assert len([m for m in caplog.messages
                if m.startswith("Account Home, filling holes: recovered after ")]) == 1
    counted_equals_seen(stats, sim)
    assert_everything_stored(tmp_path, sim, end)
