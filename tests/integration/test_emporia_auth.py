"""pyemvue's production request path, end to end: `PyEmVue.login` and `pyemvue.auth.Auth` (token
decoding against a JWKS, refresh on expiry and on 401, 5xx retries), driven by vuegraf's real
`EmporiaAccount`, over HTTP to the simulator, which checks every id token. Only AWS Cognito is
stood in for (vuegraf.simulator.cognito: real RS256 tokens, JWKS over HTTP).

- a password login keeps its tokens in the state dir (0600); a token the API stops accepting
  (401) and a token pyemvue sees expire are both renewed, and the file follows, still 0600;
- a restart logs in with the stored tokens, not the password;
- 5xx answers: pyemvue's retries happen (3 attempts, not its default 5) and each one is
  counted; vuegraf's request count equals what the simulator saw, per endpoint and in total;
- a stop during the retries ends them without another request;
- after RELOGIN_AFTER_FAILURES failed calls the session is replaced by a new login (counted),
  and a revoked refresh token falls back to the password.
"""

from __future__ import annotations

import json
import stat
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from harness.emporia_cloud import cognito_cloud, cognito_config
from vuegraf.clock import FakeClock
from vuegraf.emporia import (
    RELOGIN_AFTER_FAILURES,
    EmporiaAccount,
    EmporiaError,
    EmporiaServerError,
    EmporiaStopped,
    RetryPolicy,
)
from vuegraf.model import Scale
from vuegraf.simulator import SimulatorServer
from vuegraf.stats import Stats

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 15, 7, 30, tzinfo=UTC)
MINUTE = datetime(2026, 11, 24, 15, 6, tzinfo=UTC)  # the last complete minute at NOW


def account_for(tmp_path: Path, clock: FakeClock, stats: Stats | None = None,
                **kw: Any) -> EmporiaAccount:
    config = cognito_config(tmp_path)
    return EmporiaAccount(config.accounts[0], config, clock, stats, **kw)


def stored_tokens(account: EmporiaAccount) -> dict[str, str]:
    assert account.token_file is not None
    return json.loads(account.token_file.read_text())


def mode(path: Path | None) -> int:
    assert path is not None
    return stat.S_IMODE(path.stat().st_mode)


def statuses(sim: SimulatorServer, endpoint: str | None = None) -> list[int]:
    return [r.status for r in sim.requests_seen() if endpoint in (None, r.endpoint)]


def vuegraf_counts(stats: Stats) -> Counter[str]:
    """Requests vuegraf counted per endpoint, every outcome, logins (not API requests) apart."""
    counts: Counter[str] = Counter()
    for (_account, endpoint, _outcome), n in stats.snapshot().requests.items():
        if endpoint != "login":
            counts[endpoint] += n
    return counts


def simulator_counts(sim: SimulatorServer) -> Counter[str]:
    return Counter({ep: sum(by_scale.values()) for ep, by_scale in sim.stats()["requests"].items()})


def test_tokens_are_stored_private_and_renewed_on_401_and_on_expiry(tmp_path):
    with cognito_cloud(now=lambda: NOW) as (cognito, sim):
        account = account_for(tmp_path, FakeClock(NOW))
        account.refresh_devices()
        assert (cognito.password_logins, cognito.renewals) == (1, 1)  # pyemvue: auth + renew
        assert mode(account.token_file) == 0o600
        first = stored_tokens(account)
        assert cognito.check_token(first["id_token"])
        assert account.token_file is not None
        assert "password" not in first and "Cogn1to" not in account.token_file.read_text()
        assert statuses(sim) == [200, 200]  # customers (in login), devices

        # The API stops accepting the id token: 401, pyemvue renews and asks again.
        cognito.revoke_id_tokens()
        account.usage(Scale.MINUTE, MINUTE)
        assert statuses(sim, "getDeviceListUsages") == [401, 200]
        assert (cognito.password_logins, cognito.renewals) == (1, 2)
        second = stored_tokens(account)
        assert second["id_token"] != first["id_token"] and cognito.check_token(second["id_token"])
        assert mode(account.token_file) == 0o600

        # pyemvue sees its access token expire and renews before asking (no 401 first).
        cognito.token_lifetime_s = 1
        cognito.api_leeway_s = 300  # the API would still take it: only pyemvue's check acts
        cognito.revoke_id_tokens()
        account.usage(Scale.MINUTE, MINUTE)
        short = stored_tokens(account)
        cognito.token_lifetime_s = 3600
        exp = jwt.decode(short["access_token"], options={"verify_signature": False})["exp"]
        deadline = time.monotonic() + 60
        while time.time() <= exp + 0.05:  # wait for the clock to pass exp, not a fixed time
            assert time.monotonic() < deadline
            time.sleep(0.05)
        renewals = cognito.renewals
        account.usage(Scale.MINUTE, MINUTE)
        assert cognito.renewals == renewals + 1
        assert statuses(sim, "getDeviceListUsages")[-1:] == [200]
        assert statuses(sim, "getDeviceListUsages").count(401) == 2  # none for the expiry
        third = stored_tokens(account)
        assert third["id_token"] != short["id_token"] and cognito.check_token(third["id_token"])
        assert mode(account.token_file) == 0o600
        assert cognito.jwks_fetches >= 1  # pyemvue read the exp through the JWKS

        # A restart uses the stored tokens: no password login.
        restarted = account_for(tmp_path, FakeClock(NOW))
        restarted.refresh_devices()
        assert cognito.password_logins == 1
        assert stored_tokens(restarted)["id_token"] != third["id_token"]


def test_5xx_retries_are_pyemvues_and_every_one_is_counted(tmp_path):
    stats = Stats()
    with cognito_cloud(now=lambda: NOW) as (_cognito, sim):
        account = account_for(tmp_path, FakeClock(NOW), stats, retry=RetryPolicy(attempts=3))
        account.refresh_devices()
        sim.set_fault(503, endpoints={"getDeviceListUsages", "getChartUsage"})
        for _ in range(2):
            with pytest.raises(EmporiaServerError, match="HTTP 503 \\(3 attempts\\)"):
                account.points(Scale.MINUTE, MINUTE, MINUTE)
        with pytest.raises(EmporiaServerError):
            account.chart(1001, "1", Scale.HOUR, MINUTE - timedelta(hours=5), MINUTE)
        sim.clear_fault()
        assert account.points(Scale.MINUTE, MINUTE, MINUTE)

        assert statuses(sim, "getDeviceListUsages") == [503] * 6 + [200]
        assert statuses(sim, "getChartUsage") == [503] * 3
        # vuegraf's count is the simulator's, per endpoint and for the day's budget.
        assert vuegraf_counts(stats) == simulator_counts(sim)
        assert account.requests == sim.stats()["total"] == 1 + 1 + 7 + 3
        snap = stats.snapshot().requests
        assert snap[("Home", "getDeviceListUsages", "http_503")] == 6
        assert snap[("Home", "login", "ok")] == 1


def test_pyemvue_defaults_would_make_five_attempts_each_counted(tmp_path):
    """The same with pyemvue's own attempt count: what the daily count would have missed."""
    stats = Stats()
    with cognito_cloud(now=lambda: NOW) as (_cognito, sim):
        policy = RetryPolicy(attempts=5, first_delay_s=0.0)
        account = account_for(tmp_path, FakeClock(NOW), stats, retry=policy)
        account.refresh_devices()
        sim.set_fault(500, endpoints={"getDeviceListUsages"})
        with pytest.raises(EmporiaServerError, match="5 attempts"):
            account.points(Scale.MINUTE, MINUTE, MINUTE)
        assert statuses(sim, "getDeviceListUsages") == [500] * 5
        assert vuegraf_counts(stats) == simulator_counts(sim)


def test_a_stop_during_the_retry_wait_sends_nothing_more(tmp_path):
    clock = FakeClock(NOW)
    with cognito_cloud(now=lambda: NOW) as (_cognito, sim):
        policy = RetryPolicy(attempts=5, first_delay_s=8, max_delay_s=8)
        account = account_for(tmp_path, clock, retry=policy)
        account.refresh_devices()
        sim.set_fault(503)
        clock.stop_after = clock.now() + timedelta(seconds=1)  # SIGTERM during the first wait
        with pytest.raises(EmporiaStopped, match="cut short by a stop"):
            account.points(Scale.MINUTE, MINUTE, MINUTE)
        assert statuses(sim, "getDeviceListUsages") == [503]
        assert clock.waits == [8.0]  # the wait was the clock's (a SIGTERM ends it at once)
        with pytest.raises(EmporiaStopped, match="not sent"):
            account.chart(1001, "1", Scale.HOUR, MINUTE - timedelta(hours=2), MINUTE)
        assert statuses(sim, "getChartUsage") == []


def test_repeated_failures_replace_the_session_with_a_counted_new_login(tmp_path):
    stats = Stats()
    with cognito_cloud(now=lambda: NOW) as (cognito, sim):
        account = account_for(tmp_path, FakeClock(NOW), stats,
                              retry=RetryPolicy(attempts=1))
        account.refresh_devices()
        token_before = stored_tokens(account)["id_token"]
        sim.set_fault(502, endpoints={"getDeviceListUsages"})
        for _ in range(RELOGIN_AFTER_FAILURES):
            with pytest.raises(EmporiaServerError):
                account.points(Scale.MINUTE, MINUTE, MINUTE)
        assert stats.snapshot().requests[("Home", "login", "ok")] == 1
        sim.clear_fault()
        renewals = cognito.renewals
        assert account.points(Scale.MINUTE, MINUTE, MINUTE)

        # A new login happened, with the stored tokens (renewed, no password), counted.
        assert stats.snapshot().requests[("Home", "login", "ok")] == 2
        assert cognito.renewals == renewals + 1 and cognito.password_logins == 1
        assert sim.stats()["requests"]["customers"] == {"-": 2}
        used = [r.token for r in sim.requests_seen() if r.endpoint == "getDeviceListUsages"]
        assert used[-1] != token_before and used[:-1] == [token_before] * RELOGIN_AFTER_FAILURES
        assert vuegraf_counts(stats) == simulator_counts(sim)


def test_a_revoked_session_falls_back_to_the_password(tmp_path, caplog):
    stats = Stats()
    with cognito_cloud(now=lambda: NOW) as (cognito, sim):
        account = account_for(tmp_path, FakeClock(NOW), stats)
        account.refresh_devices()
        cognito.revoke_refresh_tokens()
        cognito.revoke_id_tokens()
        with pytest.raises(EmporiaError, match="NotAuthorized"):
            account.points(Scale.MINUTE, MINUTE, MINUTE)  # 401, and the renewal is refused
        assert account.points(Scale.MINUTE, MINUTE, MINUTE)
        assert cognito.password_logins == 2 and cognito.refused_renewals == 2
        assert "stored tokens did not work" in caplog.text
        assert "Cogn1to" not in caplog.text
        snap = stats.snapshot().requests
        assert snap[("Home", "login", "ok")] == 2 and snap[("Home", "login", "error")] == 1
        assert statuses(sim, "getDeviceListUsages") == [401, 200]
        assert vuegraf_counts(stats) == simulator_counts(sim)
