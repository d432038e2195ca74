"""What a new user sees when the config does not fit their account or Emporia cannot be
reached, through the real `vuegraf.cli.main` (in this process, in virtual time, against the
Emporia simulator sharing that time; its log lines read from the captured stderr).

- A `devices[].name` that names no Emporia device: one WARNING per such name listing the
  names Emporia has, not one per device-list refresh; again when Emporia's names change.
- Emporia (here: the simulator's address) unreachable: one ERROR line per outage saying what
  failed, the host and why in a few words; the library's full text only with -d.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from harness import oracle
from harness.cli_in_process import main_state_restored
from vuegraf import cli
from vuegraf.clock import FakeClock
from vuegraf.config import parse_config
from vuegraf.emporia import (
    EmporiaAccount,
    EmporiaUnreachable,
    RetryPolicy,
    describe_unreachable,
)
from vuegraf.simulator import SimulatorServer

T0 = datetime(2026, 11, 23, 15, 0, 20, tzinfo=UTC)
SECRET = "hunter2-very-secret"
URL_SECRET = "url-s3cret"  # a password in simulatorUrl's user part: never in a message
# What a requests/urllib3 exception says, which only -d may show.
# What the one ERROR line of an unreachable Emporia says after what failed: whose side, and
# what vuegraf does now.
UNREACHABLE = ("; Emporia cannot be reached (its side, or the network's); retrying with "
               "back-off, holes are filled once it answers")
LIBRARY_TEXT = ("HTTPConnectionPool", "Max retries exceeded", "urllib3", "NewConnectionError",
                "NameResolutionError", "Errno", "Traceback")


class ScriptedClock(FakeClock):
    """Virtual time that runs each `(at, action)` of `events` once it has reached `at`."""

    def __init__(self, start: datetime, stop_after: datetime,
                 events: list[tuple[datetime, Callable[[], object]]] | None = None) -> None:
        super().__init__(start, stop_after)
        self.events = list(events or [])

    def wait(self, seconds: float) -> bool:
        stopped = super().wait(seconds)
        while self.events and self.now() >= self.events[0][0]:
            self.events.pop(0)[1]()
        return stopped


def run_main(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: dict[str, Any],
             clock: FakeClock, *flags: str) -> tuple[int, str, str]:
    """`vuegraf CONFIG FLAGS` with `data` as the config, until `clock` stops: (exit, out, err)."""
    path = tmp_path / "vuegraf.json"
    path.write_text(json.dumps({"stateDir": "state", "timezone": "America/New_York", **data}))
    path.chmod(0o600)
    with main_state_restored():
        code = cli.main([str(path), *flags], clock_factory=lambda: clock)
    out, err = capsys.readouterr()
    return code, out, err


def account(url: str, **extra: object) -> dict[str, object]:
    return {"name": "Home", "email": "me@example.com", "password": SECRET, "simulatorUrl": url,
            **extra}


def log_lines(err: str, level: str) -> list[str]:
    """The messages of vuegraf's log lines at `level` ("time | LEVEL | logger | message")."""
    return [line.split(" | ", 3)[3] for line in err.splitlines()
            if line.count(" | ") >= 3 and line.split(" | ")[1].strip() == level]


def quoted(names: list[str]) -> str:
    return ", ".join(f'"{name}"' for name in sorted(names))


# --- device names ---------------------------------------------------------------------------


def test_a_device_name_emporia_does_not_have_is_warned_once_with_emporias_names(
    tmp_path, capsys
):
    clock = ScriptedClock(T0, T0 + timedelta(minutes=20))
    with SimulatorServer(seed=5, now=clock.now) as sim:
        sim.log_requests = True
        clock.events.append((T0 + timedelta(minutes=10), lambda: sim.add_device(oracle.SHED_PLUG)))
        devices = [
            {"name": "Right Panel", "channels": ["Air Conditioner"]},  # not in this account
            {"name": "Main Panel", "channels": ["Oven"]},
            {"name": "garage panel", "channels": ["Dryer"]},  # Emporia's is "Garage Panel"
        ]
        code, out, err = run_main(
            tmp_path, capsys,
            # Devices read every minute (over the daily budget that way: raised, so that the
            # budget warning is not among the lines compared below).
            {"accounts": [account(sim.url, devices=devices)], "deviceRefreshSecs": 60,
             "dailyRequestBudget": 5000, "detailedDataHoursEnabled": False,
             "detailedDataDaysEnabled": False},
            clock, "--dryrun",
        )
        refreshes = [r for r in sim.requests_seen() if r.endpoint == "devices"]
    assert code == 0, err
    assert len(refreshes) >= 15  # read again every minute: the warning is not repeated each time
    before = list(oracle.DEVICE_NAMES.values())
    after = [*before, "Shed Plug"]
    right = ('Account Home: devices[0].name "Right Panel" matches no Emporia device, so its '
             "channel names are not used; Emporia's devices: ")
    garage = ('Account Home: devices[2].name "garage panel" matches no Emporia device, so its '
              'channel names are not used (did you mean "Garage Panel"?); Emporia\'s devices: ')
    assert log_lines(err, "WARNING") == [
        right + quoted(before),
        garage + quoted(before),
        # Emporia's names changed (a plug was added): said again, with the new list.
        right + quoted(after),
        garage + quoted(after),
    ]
    # The matching entry is used, the others are not.
    assert "device_name=Oven " in out
    assert "Conditioner" not in out and "Dryer" not in out
    assert "device_name=Garage\\ Panel-1 " in out


# --- Emporia unreachable --------------------------------------------------------------------


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so no other test takes it) but not
    listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("where", ["closed-port", "unresolvable"])
def test_emporia_unreachable_is_one_short_error_line(tmp_path, capsys, where, debug):
    with refusing_port() as port:
        if where == "closed-port":
            url = f"http://vue:{URL_SECRET}@127.0.0.1:{port}"
            line = f"Account Home: start-up: simulator login failed: 127.0.0.1:{port}: " \
                   "connection refused" + UNREACHABLE
            library = "Connection refused"
        else:
            url = "http://nonexistent.invalid:1"  # .invalid never resolves (RFC 6761)
            line = "Account Home: start-up: simulator login failed: nonexistent.invalid:1: " \
                   "name not resolved" + UNREACHABLE
            library = "Failed to resolve 'nonexistent.invalid'"
        clock = FakeClock(T0, stop_after=T0 + timedelta(minutes=15))
        flags = ["-d"] if debug else []
        code, _out, err = run_main(tmp_path, capsys, {"accounts": [account(url)]}, clock, *flags)

    assert code == 0, err
    # One line for the whole outage, though every cycle tried again.
    assert log_lines(err, "ERROR") == [line]
    assert len([m for m in log_lines(err, "INFO") if m.startswith("Cycle at ")]) >= 4
    assert SECRET not in err and URL_SECRET not in err
    if debug:
        # The full text, for whoever asks: at DEBUG, next to the short line.
        full = [m for m in log_lines(err, "DEBUG")
                if m.startswith("Account Home: simulator login failed: ConnectionError: ")]
        assert full, err
        assert "HTTPConnectionPool" in full[0] and "Max retries exceeded" in full[0]
        assert library in full[0]
        assert any("Account Home still failing" in m for m in log_lines(err, "DEBUG"))
    else:
        for text in LIBRARY_TEXT:
            assert text not in err, text
        assert library not in err


def test_an_outage_mid_run_is_one_error_line_then_one_recovery_line(tmp_path, capsys):
    clock = ScriptedClock(T0, T0 + timedelta(minutes=30))
    with SimulatorServer(seed=6, now=clock.now) as sim:
        port = sim.port
        clock.events += [(T0 + timedelta(minutes=5), sim.stop),  # Emporia goes away...
                         (T0 + timedelta(minutes=15), sim.start)]  # ...and comes back
        code, _out, err = run_main(
            tmp_path, capsys,
            {"accounts": [account(sim.url)], "detailedDataHoursEnabled": False,
             "detailedDataDaysEnabled": False},
            clock, "--dryrun",
        )
        assert sim.port == port  # back on the same address
    assert code == 0, err
    assert log_lines(err, "ERROR") == [
        f"Account Home: 1MIN: usage request failed: 127.0.0.1:{port}: connection refused"
        + UNREACHABLE
    ]
    recovered = [m for m in log_lines(err, "INFO") if "recovered after" in m]
    assert len(recovered) == 1 and recovered[0].startswith("Account Home: recovered after ")
    for text in LIBRARY_TEXT:
        assert text not in err, text


def test_tls_to_a_plain_http_server_is_a_tls_error_line(tmp_path, capsys):
    clock = FakeClock(T0, stop_after=T0 + timedelta(minutes=3))
    with SimulatorServer(now=clock.now) as sim:  # speaks plain HTTP
        url = f"https://127.0.0.1:{sim.port}"
        code, _out, err = run_main(tmp_path, capsys, {"accounts": [account(url)]}, clock)
    assert code == 0, err
    (line,) = log_lines(err, "ERROR")
    # The TLS library's own words follow in brackets (OpenSSL: "wrong version number").
    assert line.startswith(
        f"Account Home: start-up: simulator login failed: 127.0.0.1:{sim.port}: TLS error"
    ), line
    assert "SSLError" not in err and "Max retries exceeded" not in err


def test_no_answer_in_time_is_timed_out(tmp_path):
    """Below the CLI (whose timeouts are pyemvue's 6 and 10 s): a server that holds every
    request past the client's read timeout."""
    clock = FakeClock(T0)
    with SimulatorServer(now=clock.now, timeout_rate=1.0, timeout_s=5.0) as sim:
        config = parse_config({"accounts": [account(sim.url)]}, tmp_path / "vuegraf.json")
        emporia = EmporiaAccount(config.accounts[0], config, clock, timeouts=(1.0, 0.3),
                                 retry=RetryPolicy(first_delay_s=0.0))
        with pytest.raises(EmporiaUnreachable) as info:
            emporia.refresh_devices()
    assert str(info.value) == f"simulator login failed: 127.0.0.1:{sim.port}: timed out"


def test_only_a_failed_connection_counts_as_unreachable():
    with refusing_port() as port, pytest.raises(requests.ConnectionError) as refused:
        requests.get(f"http://127.0.0.1:{port}/customers", timeout=5)
    assert describe_unreachable(refused.value) == ("connection refused", f"127.0.0.1:{port}")
    # pyemvue opening a token file that is gone, or refusing to send without tokens.
    assert describe_unreachable(FileNotFoundError(2, "No such file or directory")) is None
    assert describe_unreachable(ValueError("Not authenticated")) is None
