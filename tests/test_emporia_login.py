"""Login and stored tokens. AWS Cognito cannot run here, so PyEmVue's `login` is replaced by
a fake that behaves like it: with a password it "authenticates" and writes the token file;
without one it reads the token file and fails when the tokens are refused."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime

import pytest

from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.emporia import EmporiaAccount, EmporiaError

SECRET = "correct-horse-battery"


class FakeVue:
    calls: list[str] = []
    refuse_tokens = False

    def login(self, username=None, password=None, token_storage_file=None):
        if password is None:
            FakeVue.calls.append("token")
            data = json.loads(open(token_storage_file).read())
            if FakeVue.refuse_tokens or data.get("refresh_token") != "r-1":
                raise RuntimeError("NotAuthorizedException: Refresh Token has been revoked")
            return True
        FakeVue.calls.append("password")
        if password != SECRET:
            return False
        with open(token_storage_file, "w") as f:
            json.dump({"id_token": "i", "access_token": "a", "refresh_token": "r-1",
                       "username": username}, f)
        return True

    def get_devices(self):
        return []


@pytest.fixture(autouse=True)
def reset_fake():
    FakeVue.calls = []
    FakeVue.refuse_tokens = False


def make_account(tmp_path, password=SECRET):
    config = parse_config(
        {"accounts": [{"name": "Home", "email": "Me@Example.com", "password": password}],
         "stateDir": "state"},
        tmp_path / "vuegraf.json",
        environ={},
    )
    return EmporiaAccount(config.accounts[0], config, FakeClock(datetime(2026, 1, 1, tzinfo=UTC)),
                          vue_factory=FakeVue)


def test_first_login_uses_password_and_keeps_tokens_private(tmp_path):
    account = make_account(tmp_path)
    account.refresh_devices()
    assert FakeVue.calls == ["password"]
    token_file = account.token_file
    assert token_file is not None and token_file.parent == tmp_path / "state"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert SECRET not in token_file.read_text()


def test_restart_uses_stored_tokens_without_the_password(tmp_path):
    make_account(tmp_path).refresh_devices()
    FakeVue.calls = []
    make_account(tmp_path).refresh_devices()
    assert FakeVue.calls == ["token"]


def test_refused_tokens_fall_back_to_a_password_login(tmp_path, caplog):
    make_account(tmp_path).refresh_devices()
    FakeVue.calls = []
    FakeVue.refuse_tokens = True
    make_account(tmp_path).refresh_devices()
    assert FakeVue.calls == ["token", "password"]
    assert "stored tokens did not work" in caplog.text


def test_wrong_password_is_an_emporia_error_without_the_secret(tmp_path):
    account = make_account(tmp_path, password="wrong-one-xyz")
    with pytest.raises(EmporiaError) as info:
        account.refresh_devices()
    assert "did not accept the credentials" in str(info.value)
    assert "wrong-one-xyz" not in str(info.value)
    assert account.stats.snapshot().requests[("Home", "login", "error")] == 1
