"""No configured secret ever reaches stdout or stderr, in any of its usual encodings.

`python -m vuegraf CONFIG -d` (debug: every point and every error path) runs against the
Emporia simulator, an InfluxDB 1.x with authentication and a Mosquitto broker with a
password, plus an account pointing at a dead URL so the Emporia error path logs each cycle:
- with the right InfluxDB and MQTT passwords, plus SIGHUPs with broken configs that hold the
  secrets (invalid JSON; a password where a port belongs), whose rejections are logged;
- with wrong ones (InfluxDB answers 401 to the read back and to every write, Mosquitto refuses
  the connection);
- with InfluxDB 2 (a token; VictoriaMetrics) and a password from the environment;
then `--dryrun`, and config errors printed before logging is even set up. Every line of
every output is searched for every secret as written, URL-encoded (both ways), JSON-escaped
and inside an HTTP Basic credential; none may be found. Nor in the files of the state dir.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from harness.completeness import seed_minute
from harness.testtime import TestTime
from servers import InfluxV1Server, MosquittoServer, free_ports, require_binary
from vuegraf.config import parse_config
from vuegraf.simulator import Scenario, SimulatorServer, UsageModel

pytestmark = pytest.mark.integration

SEED = 71
DATABASE = "vue"
INFLUX_USER = "vueadmin"
INFLUX_PASS = "Infl/ux p@ss+w&rd=9"
WRONG_INFLUX_PASS = "Wr0ng/infl ux+pass&x=1"
MQTT_USER = "vuegraf"
MQTT_PASS = "mq#tt pa$$:word/7"
WRONG_MQTT_PASS = "n0t/the mq+tt?pass"
EMPORIA_PASS = "Em/poria p@ss+1&=x"
DEAD_ACCOUNT_PASS = "Dead#Acct pw%20?y"
INFLUX_TOKEN = "tok/en+v2 s3cr3t=="
ENV_SECRET = "fr0m-the/env ir+onment"
SECRETS = {
    "influxDb.pass": INFLUX_PASS,
    "influxDb.pass (wrong)": WRONG_INFLUX_PASS,
    "mqtt.password": MQTT_PASS,
    "mqtt.password (wrong)": WRONG_MQTT_PASS,
    "accounts[0].password": EMPORIA_PASS,
    "accounts[1].password": DEAD_ACCOUNT_PASS,
    "influxDb.token": INFLUX_TOKEN,
    "${VUEGRAF_TEST_SECRET}": ENV_SECRET,
}
USERS = {
    INFLUX_PASS: INFLUX_USER,
    WRONG_INFLUX_PASS: INFLUX_USER,
    MQTT_PASS: MQTT_USER,
    WRONG_MQTT_PASS: MQTT_USER,
    EMPORIA_PASS: "me@example.com",
    DEAD_ACCOUNT_PASS: "dead@example.com",
}


def forms(secret: str) -> set[str]:
    """The secret as it could show up in a log line."""
    found = {
        secret,
        urllib.parse.quote(secret),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
        base64.b64encode(secret.encode()).decode(),
    }
    user = USERS.get(secret)
    if user is not None:  # an Authorization: Basic header
        found.add(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return found


def leaks(text: str) -> list[str]:
    """'<secret name> as <form> in line N: ...' for every secret found in `text`."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for name, secret in SECRETS.items():
            for form in forms(secret):
                if form in line:
                    found.append(f"{name} as {form!r} in line {number}: {line[:200]}")
    return found


def assert_no_leak(what: str, *texts: str) -> None:
    found = [leak for text in texts for leak in leaks(text)]
    assert not found, f"{what}: {len(found)} leaks:\n" + "\n".join(found[:10])


@pytest.fixture
def influx_auth() -> Iterator[InfluxV1Server]:
    with InfluxV1Server(
        require_binary("influxd"), auth=True, username=INFLUX_USER, password=INFLUX_PASS
    ) as server:
        server.client().create_database(DATABASE)
        yield server


@pytest.fixture
def mosquitto_auth() -> Iterator[MosquittoServer]:
    with MosquittoServer(require_binary("mosquitto"), users={MQTT_USER: MQTT_PASS}) as server:
        yield server


class Running:
    """`python -m vuegraf ...` with stdout and stderr read into lists as they come."""

    def __init__(self, test_time: TestTime, *args: str) -> None:
        self.proc = subprocess.Popen(
            test_time.vuegraf(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**_environ(), "VUEGRAF_TEST_SECRET": ENV_SECRET},
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self.out.extend, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self.err.extend, args=(self.proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"exited before {what}:\n{self.stderr[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{self.stderr[-3000:]}"
            time.sleep(0.05)

    def cycles(self) -> int:
        return self.stderr.count("Cycle at ")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(10)
        return code


def _environ() -> dict[str, str]:
    return dict(os.environ)


def write_config(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def base_config(sim_url: str, dead_url: str) -> dict:
    return {
        "accounts": [
            {
                "name": "Home",
                "email": "me@example.com",
                "password": EMPORIA_PASS,
                "simulatorUrl": sim_url,
            },
            {
                "name": "Dead",
                "email": "dead@example.com",
                "password": DEAD_ACCOUNT_PASS,
                "simulatorUrl": dead_url,
            },
        ],
        "stateDir": "state",
        "updateIntervalSecs": 2,
        "maxHistoryDays": 1,
        "timezone": "UTC",
    }


def seed_recent_minutes(path: Path, model: UsageModel, now: datetime) -> None:
    """One stored minute a few minutes ago per channel, so the start-up fill (logged point by
    point under -d) is minutes long, not seven days."""
    environ = {**os.environ, "VUEGRAF_TEST_SECRET": ENV_SECRET}
    config = parse_config(json.loads(path.read_text()), path, environ)
    seed_minute(config, model, now.replace(second=0, microsecond=0) - timedelta(minutes=3))


def test_no_secret_in_any_output(
    influx_auth, mosquitto_auth, victoria_metrics, tmp_path, test_time
):
    model = UsageModel(Scenario.default(), seed=SEED)
    (dead_port,) = free_ports(1)
    dead_url = f"http://127.0.0.1:{dead_port}"
    outputs: dict[str, tuple[str, str]] = {}
    with SimulatorServer(seed=SEED, now=test_time.now) as sim:
        data = base_config(sim.url, dead_url)
        data["influxDb"] = {
            "host": influx_auth.host,
            "port": influx_auth.port,
            "database": DATABASE,
            "user": INFLUX_USER,
            "pass": INFLUX_PASS,
        }
        data["mqtt"] = {
            "host": mosquitto_auth.host,
            "port": mosquitto_auth.port,
            "username": MQTT_USER,
            "password": MQTT_PASS,
        }
        good = write_config(tmp_path / "good.json", data)
        seed_recent_minutes(good, model, test_time.now())

        # 1. Everything right; the dead account fails every cycle. Then a SIGHUP with a
        #    broken config that holds every secret, which is rejected and logged.
        run = Running(test_time, str(good), "-d")
        run.wait_for(lambda: run.cycles() >= 3, 120, "three cycles")
        assert "Account Dead" in run.stderr and "MQTT connected" in run.stderr
        good_text = good.read_text()
        broken = [
            # Invalid JSON: a string left open right after a password.
            good_text.replace(MQTT_PASS + '"', MQTT_PASS),
            # Valid JSON, invalid config: a secret where a port belongs.
            json.dumps({**data, "mqtt": {**data["mqtt"], "port": MQTT_PASS}}),
        ]
        for n, text in enumerate(broken, 1):
            good.write_text(text)
            cycles = run.cycles()
            run.proc.send_signal(signal.SIGHUP)

            def next_cycle(before: int = cycles) -> bool:
                return run.cycles() > before

            run.wait_for(next_cycle, 30, "a cycle after the reload")
            assert run.stderr.count("New config rejected") == n
        assert "mqtt.port: must be an integer" in run.stderr
        good.write_text(good_text)
        assert run.stop() == 0, run.stderr[-3000:]
        outputs["right passwords"] = (run.stdout, run.stderr)
        assert " point Point(" in run.stderr  # -d really logged the points

        # 2. Wrong InfluxDB and MQTT passwords: 401 on read-back and writes, CONNACK refused.
        data["influxDb"]["pass"] = WRONG_INFLUX_PASS
        data["mqtt"]["password"] = WRONG_MQTT_PASS
        wrong = write_config(tmp_path / "wrong.json", {**data, "stateDir": "state-wrong"})
        run = Running(test_time, str(wrong), "-d")
        run.wait_for(
            lambda: run.cycles() >= 2 and "refused the connection" in run.stderr,
            120,
            "two cycles and the MQTT refusal",
        )
        assert run.stop() == 0, run.stderr[-3000:]
        assert "401" in run.stderr, run.stderr[-3000:]
        outputs["wrong passwords"] = (run.stdout, run.stderr)

        # 3. InfluxDB 2 with a token (VictoriaMetrics takes the writes and answers the read
        #    back through its Prometheus API, which is logged); the Emporia password from
        #    the environment.
        v2 = {
            **base_config(sim.url, dead_url),
            "stateDir": "state-v2",
            "influxDb": {
                "version": 2,
                "url": victoria_metrics.url,
                "org": "o",
                "bucket": "b",
                "token": INFLUX_TOKEN,
            },
        }
        v2["accounts"][0] = {
            **v2["accounts"][0],
            "name": "NoLeaks",
            "password": "${VUEGRAF_TEST_SECRET}",
        }
        v2_path = write_config(tmp_path / "v2.json", v2)
        seed_recent_minutes(v2_path, model, test_time.now())  # account "NoLeaks"
        victoria_metrics.force_flush()
        run = Running(test_time, str(v2_path), "-d")
        run.wait_for(lambda: run.cycles() >= 2, 120, "two cycles")
        assert run.stop() == 0, run.stderr[-3000:]
        assert "reading back through Prometheus API" in run.stderr, run.stderr[-3000:]
        outputs["token"] = (run.stdout, run.stderr)

        # 4. --dryrun, with every secret configured.
        run = Running(test_time, str(good), "--dryrun", "-d")
        run.wait_for(lambda: len(run.out) >= 20 and run.cycles() >= 1, 120, "dry-run output")
        assert run.stop() == 0, run.stderr[-3000:]
        assert run.out[0].startswith("energy_usage,")
        outputs["--dryrun"] = (run.stdout, run.stderr)

    for n, (what, (out, err)) in enumerate(outputs.items(), 1):
        (tmp_path / f"run{n}.stdout").write_text(out)  # kept for a look after a failure
        (tmp_path / f"run{n}.stderr").write_text(err)
        print(
            f"{what}: {len(out.splitlines())} stdout and {len(err.splitlines())} "
            "stderr lines searched"
        )
        assert_no_leak(what, out, err)
    for name in ("state", "state-wrong", "state-v2"):
        for file in (tmp_path / name).rglob("*"):
            if file.is_file():
                assert_no_leak(str(file), file.read_bytes().decode("latin-1"))


@pytest.mark.parametrize(
    ("data", "key_path"),
    [
        # A password without its user.
        ({"influxDb": {"host": "h", "database": "d", "pass": INFLUX_PASS}}, "influxDb.user"),
        ({"mqtt": {"host": "h", "password": MQTT_PASS}}, "mqtt.username"),
        # The secret in the wrong place or of the wrong kind.
        ({"influxDb": {"host": "h", "database": "d", "port": INFLUX_PASS}}, "influxDb.port"),
        (
            {"influxDb": {"version": 2, "url": "http://h:1", "org": "o", "token": INFLUX_TOKEN}},
            "influxDb.bucket",
        ),
        (
            {
                "influxDb": {
                    "version": 2,
                    "url": INFLUX_TOKEN,
                    "org": "o",
                    "bucket": "b",
                    "token": INFLUX_TOKEN,
                }
            },
            "influxDb.url",
        ),
        # A malformed ${...} inside the secret itself.
        ({"mqtt": {"host": "h", "username": "u", "password": MQTT_PASS + "${"}}, "mqtt.password"),
        # An error elsewhere while the secret came from the environment.
        (
            {"accounts": [{"name": "Home", "password": "${VUEGRAF_TEST_SECRET}"}]},
            "accounts[0].email",
        ),
    ],
)
def test_config_errors_never_show_the_secret(tmp_path, data, key_path):
    config = {"accounts": [{"name": "Home", "email": "e@example.com", "password": EMPORIA_PASS}]}
    config.update(data)
    path = write_config(tmp_path / "vuegraf.json", config)
    out = subprocess.run(
        [sys.executable, "-m", "vuegraf", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**_environ(), "VUEGRAF_TEST_SECRET": ENV_SECRET},
    )
    assert out.returncode == 2
    assert out.stderr.startswith(key_path + ": "), out.stderr
    assert_no_leak("config error", out.stdout, out.stderr)


def test_invalid_json_error_never_shows_the_secret(tmp_path):
    text = json.dumps(
        {
            "accounts": [{"name": "Home", "email": "e", "password": EMPORIA_PASS}],
            "influxDb": {"host": "h", "database": "d", "user": "u", "pass": INFLUX_PASS},
        }
    )
    path = tmp_path / "vuegraf.json"
    path.write_text(text.replace(INFLUX_PASS + '"', INFLUX_PASS))  # an unterminated string
    out = subprocess.run(
        [sys.executable, "-m", "vuegraf", str(path)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 2
    assert "invalid JSON" in out.stderr
    assert_no_leak("invalid JSON", out.stdout, out.stderr)
