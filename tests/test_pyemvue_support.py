"""vuegraf adopts pyemvue's `Auth` (its `_do_request`, its retry settings, `login` assigning
`self.auth`): internals a new pyemvue may change without notice. setup.py pins the releases
this was written for, and a pyemvue without one of them is refused in one line that names its
version and says the installation is at fault, once at start, instead of an AttributeError at
every login. The pyemvue used is the installed one; "a pyemvue without X" is that one with X
taken away for the test."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pytest
from pyemvue import PyEmVue
from pyemvue.auth import Auth, SimulatedAuth

from harness.cli_in_process import main_state_restored
from vuegraf import cli
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.emporia import (
    SUPPORTED_PYEMVUE,
    EmporiaAccount,
    PyemvueUnsupported,
    pyemvue_problem,
)
from vuegraf.simulator import SimulatorServer

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = version("pyemvue")
NOW = datetime(2026, 11, 24, 15, 7, 30, tzinfo=UTC)
REFUSED = f"pyemvue {INSTALLED} is not supported by this vuegraf: it has no "


def test_setup_py_pins_the_supported_releases():
    assert SUPPORTED_PYEMVUE == ">=0.18.9,<0.19"
    setup = (ROOT / "setup.py").read_text()
    assert re.findall(r'"(pyemvue[^"]*)"', setup) == ["pyemvue>=0.18.9,<0.19"]


def test_the_installed_pyemvue_has_what_vuegraf_uses():
    assert pyemvue_problem() is None


def test_a_pyemvue_without_do_request_is_refused_in_one_line(monkeypatch):
    monkeypatch.delattr(Auth, "_do_request")
    problem = pyemvue_problem()
    assert problem is not None and "\n" not in problem
    assert problem.startswith(REFUSED + "Auth._do_request ")
    assert f"needs pyemvue{SUPPORTED_PYEMVUE}" in problem


def test_an_auth_without_the_retry_settings_is_refused():
    class OldAuth:
        def __init__(self, host: str, username: str | None = None) -> None:
            self.host = host

        def request(self, method: str, path: str) -> None: ...

        def _do_request(self, method: str, path: str) -> None: ...

    problem = pyemvue_problem(PyEmVue, OldAuth)
    assert problem is not None and problem.startswith(REFUSED)
    for name in ("max_retry_attempts", "initial_retry_delay", "max_retry_delay"):
        assert f"Auth({name}=...)" in problem


def account_on(sim: SimulatorServer, tmp_path: Path) -> EmporiaAccount:
    config = parse_config(
        {"accounts": [{"name": "Home", "email": "me@example.com", "password": "pw",
                       "simulatorUrl": sim.url}]},
        tmp_path / "vuegraf.json",
        environ={},
    )
    return EmporiaAccount(config.accounts[0], config, FakeClock(NOW))


def test_an_account_refuses_the_login_in_one_line_and_sends_nothing(tmp_path, monkeypatch):
    with SimulatorServer(now=lambda: NOW) as sim:
        account = account_on(sim, tmp_path)
        monkeypatch.delattr(Auth, "_do_request")
        for _ in range(2):
            with pytest.raises(PyemvueUnsupported) as refused:
                account.refresh_devices()
            assert str(refused.value).startswith(REFUSED + "Auth._do_request")
        assert sim.stats()["total"] == 0
        monkeypatch.undo()
        account.refresh_devices()  # the same account, with a pyemvue that has it
        assert sim.stats()["requests"]["devices"] == {"-": 1}


def test_a_login_that_no_longer_assigns_auth_is_refused(tmp_path, monkeypatch):
    def login_simulator(self: PyEmVue, host: str, username: str | None = None,
                        password: str | None = None) -> bool:
        self.session_auth = SimulatedAuth(host=host, username=username)
        return True

    monkeypatch.setattr(PyEmVue, "login_simulator", login_simulator)
    with SimulatorServer(now=lambda: NOW) as sim:
        account = account_on(sim, tmp_path)
        with pytest.raises(PyemvueUnsupported, match=re.escape(REFUSED)
                           + "PyEmVue.login assigning self.auth"):
            account.refresh_devices()


def test_vuegraf_refuses_to_start_with_one_line(tmp_path, monkeypatch, capsys):
    config = tmp_path / "vuegraf.json"
    config.write_text(json.dumps({"accounts": [
        {"name": "Home", "email": "me@example.com", "password": "pw",
         "simulatorUrl": "http://127.0.0.1:9"}]}))
    monkeypatch.delattr(Auth, "_do_request")
    with main_state_restored():
        code = cli.main([str(config)])
    assert code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "| ERROR |" in line]
    assert len(lines) == 1
    assert lines[0].split(" | ")[-1].startswith(REFUSED + "Auth._do_request")
