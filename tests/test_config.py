"""vuegraf.json → Config: upstream files load unchanged; every mistake names its key path."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from harness.testtime import TestTime
from servers import InfluxV1Server
from vuegraf.config import (
    AccountConfig,
    Config,
    ConfigError,
    DeviceConfig,
    InfluxV1Config,
    InfluxV2Config,
    MqttConfig,
    TagConfig,
    load_config,
    parse_config,
)
from vuegraf.model import Scale
from vuegraf.simulator import SimulatorServer

SAMPLE = Path(__file__).resolve().parents[1] / "vuegraf.json.sample"

# Distinctive so that a leak anywhere is easy to spot.
# The scales usage is written at (Scale.QUARTER is for amps and volts only).
USAGE_SCALES = (Scale.SECOND, Scale.MINUTE, Scale.HOUR, Scale.DAY)
SECRETS = ("s3cret-emporia-pw", "s3cret-influx-pw", "s3cret-mqtt-pw", "s3cret-v2-token")

VALID: dict[str, Any] = {
    "influxDb": {
        "host": "influx.local",
        "port": 8086,
        "user": "vue",
        "pass": "s3cret-influx-pw",
        "database": "vue",
    },
    "accounts": [
        {
            "name": "Home",
            "email": "me@example.com",
            "password": "s3cret-emporia-pw",
            "devices": [{"name": "Main Panel", "channels": ["Oven", "Dryer"]}],
        }
    ],
    "mqtt": {"host": "broker.local", "username": "vue", "password": "s3cret-mqtt-pw"},
}

V2 = {
    "version": 2,
    "url": "http://influx2.local:8086",
    "org": "home",
    "bucket": "vuegraf",
    "token": "s3cret-v2-token",
}


def valid() -> dict[str, Any]:
    return copy.deepcopy(VALID)


def write(tmp_path: Path, data: object, name: str = "vuegraf.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def parse(data: object, tmp_path: Path | None = None) -> Config:
    return parse_config(data, (tmp_path or Path("/etc/vuegraf")) / "vuegraf.json")


# --- what loads ----------------------------------------------------------------------------


def test_minimal_config_gets_upstream_defaults() -> None:
    cfg = parse({"accounts": [{"name": "A", "email": "a@x", "password": "pw"}]})

    assert cfg.accounts == (AccountConfig("A", "a@x", "pw"),)
    assert cfg.influx is None
    assert cfg.mqtt is None
    assert cfg.tags == TagConfig("detailed", "True", "False", "Hour", "Day")
    assert cfg.config_path == Path("/etc/vuegraf/vuegraf.json")
    assert cfg.sqlite_path == Path("/etc/vuegraf/vuegraf.sqlite")
    assert (cfg.update_interval_secs, cfg.lag_secs) == (60, 5)
    assert cfg.add_station_field is False
    assert cfg.detailed_data_enabled is False
    assert cfg.detailed_data_seconds_enabled is True
    assert cfg.detailed_data_hours_enabled is True
    assert cfg.detailed_data_days_enabled is True
    assert cfg.detailed_interval_secs == 3600
    assert cfg.timezone_name is None
    assert cfg.max_history_days == 720
    assert cfg.use_emporia_channel_names is False
    assert cfg.device_refresh_secs == 3600
    assert cfg.accounts[0].devices == ()
    assert cfg.accounts[0].simulator_url is None


def private_sample(tmp_path: Path) -> Path:
    """The sample as a user should keep it: mode 600 (a checkout's 644 draws a warning)."""
    path = tmp_path / SAMPLE.name
    path.write_bytes(SAMPLE.read_bytes())
    path.chmod(0o600)
    return path


def test_upstream_sample_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        cfg = load_config(private_sample(tmp_path))

    assert caplog.records == []  # "reset" is a known upstream key: no warning
    assert cfg.influx == InfluxV1Config(
        host="my.influxdb.hostname",
        database="vue",
        port=8086,
        user="root",
        password="root",
        ssl_enable=False,
        ssl_verify=True,
        reset=False,
    )
    assert cfg.update_interval_secs == 60
    (account,) = cfg.accounts
    assert account.name == "Primary Residence"
    assert [d.name for d in account.devices] == ["Right Panel", "Left Panel"]
    right = account.device("Right Panel")
    assert right is not None
    assert right.channels["1"] == "Air Conditioner"
    assert right.channels["8"] == "Office"
    assert account.device("Nope") is None
    assert cfg.sqlite_path == tmp_path / "vuegraf.sqlite"


def test_full_v1_and_every_top_level_key(tmp_path: Path) -> None:
    data = valid()
    data["influxDb"].update(
        version=1,
        ssl_enable=True,
        ssl_verify=False,
        timeout=2500,
        reset=True,
        tagName="scale",
        tagValue_second="s",
        tagValue_minute="m",
        tagValue_hour="h",
        tagValue_day="d",
    )
    data["mqtt"].update(port=8883, topic="home/energy")
    data.update(
        updateIntervalSecs=30,
        lagSecs=0,
        addStationField=True,
        detailedDataEnabled=True,
        detailedDataSecondsEnabled=False,
        detailedDataHoursEnabled=False,
        detailedDataDaysEnabled=False,
        detailedIntervalSecs=600,
        timezone="America/New_York",
        maxHistoryDays=30,
        sqlitePath="/var/lib/vuegraf/data.db",
        useEmporiaChannelNames=True,
        deviceRefreshSecs=60,
    )
    cfg = load_config(write(tmp_path, data))

    assert cfg.influx == InfluxV1Config(
        "influx.local", "vue", 8086, "vue", "s3cret-influx-pw", True, False, 2500, True
    )
    assert cfg.tags == TagConfig("scale", "s", "m", "h", "d")
    assert [cfg.tags.value(s) for s in USAGE_SCALES] == ["s", "m", "h", "d"]
    assert cfg.mqtt == MqttConfig("broker.local", 8883, "vue", "s3cret-mqtt-pw", "home/energy")
    assert cfg.update_interval_secs == 30
    assert cfg.lag_secs == 0
    assert cfg.add_station_field is True
    assert cfg.detailed_data_enabled is True
    assert cfg.detailed_data_seconds_enabled is False
    assert cfg.detailed_data_hours_enabled is False
    assert cfg.detailed_data_days_enabled is False
    assert cfg.detailed_interval_secs == 600
    assert cfg.timezone_name == "America/New_York"
    assert cfg.max_history_days == 30
    assert cfg.sqlite_path == Path("/var/lib/vuegraf/data.db")
    assert cfg.use_emporia_channel_names is True
    assert cfg.device_refresh_secs == 60


def test_tag_value_defaults_per_scale() -> None:
    tags = TagConfig()
    assert {s: tags.value(s) for s in USAGE_SCALES} == {
        Scale.SECOND: "True",
        Scale.MINUTE: "False",
        Scale.HOUR: "Hour",
        Scale.DAY: "Day",
    }


def test_influx_v2() -> None:
    data = valid()
    data["influxDb"] = dict(V2, ssl_verify=False, timeout=10_000, reset=False, tagName="res")
    cfg = parse(data)

    assert cfg.influx == InfluxV2Config(
        url="http://influx2.local:8086",
        org="home",
        bucket="vuegraf",
        token="s3cret-v2-token",
        ssl_verify=False,
        timeout_ms=10_000,
    )
    assert cfg.tags.name == "res"
    assert isinstance(cfg.influx, InfluxV2Config)


def test_v1_without_auth_from_upstream_empty_user_and_pass() -> None:
    # Upstream required both keys, so auth-less servers were configured with "" and "".
    data = valid()
    data["influxDb"].update(user="", **{"pass": ""})
    cfg = parse(data)
    assert isinstance(cfg.influx, InfluxV1Config)
    assert (cfg.influx.user, cfg.influx.password) == (None, None)


def test_channel_maps_list_and_dict() -> None:
    data = valid()
    data["accounts"][0]["devices"] = [
        {"name": "Left", "channels": ["Oven", "Dryer", "Washer"]},
        {"name": "Right", "channels": {"1": "Furnace", "97": "Merged AC", "98": "Merged Pool"}},
        {"name": "Plug"},
        {"name": "Nulls", "channels": None},
    ]
    devices = {d.name: d for d in parse(data).accounts[0].devices}

    assert dict(devices["Left"].channels) == {"1": "Oven", "2": "Dryer", "3": "Washer"}
    assert dict(devices["Right"].channels) == {
        "1": "Furnace",
        "97": "Merged AC",
        "98": "Merged Pool",
    }
    assert dict(devices["Plug"].channels) == {}
    assert dict(devices["Nulls"].channels) == {}


def test_config_is_immutable() -> None:
    cfg = parse(valid())
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lag_secs = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.accounts[0].devices[0].channels["1"] = "x"  # type: ignore[index]
    # Built by hand from a dict, the mapping is still read-only and detached from it.
    raw = {"1": "a"}
    dev = DeviceConfig("d", raw)
    raw["1"] = "b"
    assert dev.channels["1"] == "a"


@pytest.mark.parametrize("value", [None, "TZ", "tz", "Tz", "tZ"])
def test_timezone_system_zone(value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    data = valid()
    data["timezone"] = value
    cfg = parse(data)
    assert cfg.timezone_name is None
    # The system zone as a full IANA zone (DST history, midnight changes), not tzlocal().
    monkeypatch.setenv("TZ", "Australia/Adelaide")
    assert isinstance(cfg.zone, ZoneInfo) and cfg.zone.key == "Australia/Adelaide"


def test_timezone_valid_iana_zone() -> None:
    data = valid()
    data["timezone"] = "Europe/Berlin"
    cfg = parse(data)
    assert cfg.timezone_name == "Europe/Berlin"
    assert cfg.zone == ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("sqlite_path", "expected"),
    [
        (None, "conf/vuegraf.sqlite"),
        ("data.db", "conf/data.db"),
        ("sub/dir/data.db", "conf/sub/dir/data.db"),
        ("../elsewhere.db", "conf/../elsewhere.db"),
    ],
)
def test_sqlite_path_relative_to_config_dir(
    tmp_path: Path, sqlite_path: str | None, expected: str
) -> None:
    (tmp_path / "conf").mkdir()
    data = valid()
    del data["influxDb"]
    if sqlite_path is not None:
        data["sqlitePath"] = sqlite_path
    cfg = load_config(write(tmp_path / "conf", data))
    assert cfg.influx is None
    assert cfg.sqlite_path == tmp_path / expected


def test_sqlite_path_absolute_and_relative_config_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = valid()
    data["sqlitePath"] = str(tmp_path / "abs.db")
    assert parse(data).sqlite_path == tmp_path / "abs.db"

    # A relative config path is anchored now, so a later chdir cannot move the store.
    monkeypatch.chdir(tmp_path)
    del data["sqlitePath"]
    cfg = load_config(write(tmp_path, data, "rel.json").name)
    assert cfg.config_path == tmp_path / "rel.json"
    assert cfg.sqlite_path == tmp_path / "vuegraf.sqlite"


def test_simulator_url() -> None:
    data = valid()
    data["accounts"][0]["simulatorUrl"] = "http://127.0.0.1:8765"
    assert parse(data).accounts[0].simulator_url == "http://127.0.0.1:8765"


def test_unknown_keys_warned_once_by_key_path(caplog: pytest.LogCaptureFixture) -> None:
    data = valid()
    data["foo"] = 1
    data["my key"] = 2
    data["influxDb"]["reset"] = False  # known upstream key, accepted silently
    data["influxDb"]["retention"] = "1w"
    data["accounts"][0]["bar"] = True
    data["accounts"][0]["devices"][0]["gid"] = 123
    data["mqtt"]["qos"] = 1
    with caplog.at_level(logging.DEBUG, logger="vuegraf.config"):
        parse(data)

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].name == "vuegraf.config"
    message = warnings[0].getMessage()
    assert message.startswith("ignoring unknown config keys: ")
    named = message.removeprefix("ignoring unknown config keys: ").split(", ")
    assert sorted(named) == sorted(
        [
            "foo",
            '["my key"]',
            "influxDb.retention",
            "accounts[0].bar",
            "accounts[0].devices[0].gid",
            "mqtt.qos",
        ]
    )
    assert "reset" not in message


def test_v1_only_keys_in_v2_section_are_unknown(caplog: pytest.LogCaptureFixture) -> None:
    data = valid()
    data["influxDb"] = dict(V2, host="old-host", reset=True)
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        parse(data)
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring unknown config keys: influxDb.host"
    ]


def test_no_warning_when_all_keys_known(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        parse(valid())
    assert caplog.records == []


def test_secrets_absent_from_repr_and_log(caplog: pytest.LogCaptureFixture) -> None:
    data = valid()
    data["unknownThing"] = "s3cret-emporia-pw"  # a value, never logged: only key names are
    with caplog.at_level(logging.DEBUG, logger="vuegraf.config"):
        cfg_v1 = parse(data)
    data["influxDb"] = dict(V2)
    cfg_v2 = parse(data)

    text = repr(cfg_v1) + repr(cfg_v2) + str(cfg_v1) + caplog.text
    for secret in SECRETS:
        assert secret not in text
    # ...but they are there to be used.
    assert cfg_v1.accounts[0].password == "s3cret-emporia-pw"
    assert isinstance(cfg_v2.influx, InfluxV2Config)
    assert cfg_v2.influx.token == "s3cret-v2-token"
    assert cfg_v1.mqtt is not None and cfg_v1.mqtt.password == "s3cret-mqtt-pw"


def test_config_error_shape() -> None:
    err = ConfigError("accounts[0].password", "required")
    assert str(err) == "accounts[0].password: required"
    assert (err.key_path, err.message) == ("accounts[0].password", "required")
    again = pickle.loads(pickle.dumps(err))
    assert (again.key_path, again.message, str(again)) == (err.key_path, err.message, str(err))


def test_missing_key_hints_at_misspelt_one(caplog: pytest.LogCaptureFixture) -> None:
    data = valid()
    data["mqtt"]["hostname"] = data["mqtt"].pop("host")  # another word, not a slip of "host"
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        with pytest.raises(ConfigError) as info:
            parse(data)
    assert str(info.value) == 'mqtt.host: required (found unknown key "hostname")'
    assert caplog.records == []  # invalid config: the error is the one line the user sees


# --- unknown keys that are slips of known ones: errors, not warnings -------------------------


def rename(path: str, new_key: str) -> Mutation:
    """Move the value at `path` (dotted, list indexes as numbers) to `new_key` beside it."""

    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[new_key] = node.pop(last)

    return mutate


def add(path: str, key: str, value: object) -> Mutation:
    """Set `key` to `value` in the object at `path` ("" for the top level)."""

    def mutate(data: dict[str, Any]) -> None:
        node: Any = data
        for part in filter(None, path.split(".")):
            node = node[int(part)] if part.isdigit() else node[part]
        node[key] = value

    return mutate


def with_v2(data: dict[str, Any]) -> None:
    data["influxDb"] = dict(V2)


def with_prometheus(data: dict[str, Any]) -> None:
    data["prometheus"] = {"port": 9101}


SLIPS = [
    # case, `_` and `-` differences
    ("influxdb", [rename("influxDb", "influxdb")],
     'influxdb: unknown key; did you mean "influxDb"?'),
    ("update_interval_secs", [add("", "update_interval_secs", 30)],
     'update_interval_secs: unknown key; did you mean "updateIntervalSecs"?'),
    ("timeZone", [add("", "timeZone", "Europe/Paris")],
     'timeZone: unknown key; did you mean "timezone"?'),
    ("sslEnable", [add("influxDb", "sslEnable", True)],
     'influxDb.sslEnable: unknown key; did you mean "ssl_enable"?'),
    ("Version", [with_v2, rename("influxDb.version", "Version")],
     'influxDb.Version: unknown key; did you mean "version"?'),
    ("simulatorURL", [add("accounts.0", "simulatorURL", "http://127.0.0.1:9")],
     'accounts[0].simulatorURL: unknown key; did you mean "simulatorUrl"?'),
    ("e-mail", [rename("accounts.0.email", "e-mail")],
     'accounts[0]["e-mail"]: unknown key; did you mean "email"?'),
    ("topic_prefix", [add("mqtt", "topic_prefix", "home")],
     'mqtt.topic_prefix: unknown key; did you mean "topicPrefix"?'),
    ("password_file", [add("mqtt", "password_file", "secret.txt")],
     'mqtt.password_file: unknown key; did you mean "passwordFile"?'),
    # typos: a letter left out, added, replaced, two swapped
    ("infuxDb", [rename("influxDb", "infuxDb")], 'infuxDb: unknown key; did you mean "influxDb"?'),
    ("mqt", [rename("mqtt", "mqt")], 'mqt: unknown key; did you mean "mqtt"?'),
    ("acounts", [add("", "acounts", [])], 'acounts: unknown key; did you mean "accounts"?'),
    ("lagSec", [add("", "lagSec", 10)], 'lagSec: unknown key; did you mean "lagSecs"?'),
    ("historyRequestsPerSec", [add("", "historyRequestsPerSec", 5)],
     'historyRequestsPerSec: unknown key; did you mean "historyRequestsPerSecond"?'),
    ("databse", [add("influxDb", "databse", "other")],
     'influxDb.databse: unknown key; did you mean "database"?'),
    ("bukcet", [with_v2, add("influxDb", "bukcet", "other")],
     'influxDb.bukcet: unknown key; did you mean "bucket"?'),
    ("tagValue_minutes", [add("influxDb", "tagValue_minutes", "M")],
     'influxDb.tagValue_minutes: unknown key; did you mean "tagValue_minute"?'),
    ("emial", [add("accounts.0", "emial", "other@example.com")],
     'accounts[0].emial: unknown key; did you mean "email"?'),
    ("passwrd", [rename("accounts.0.password", "passwrd")],
     'accounts[0].passwrd: unknown key; did you mean "password"?'),
    ("devies", [rename("accounts.0.devices", "devies")],
     'accounts[0].devies: unknown key; did you mean "devices"?'),
    ("chanels", [rename("accounts.0.devices.0.channels", "chanels")],
     'accounts[0].devices[0].chanels: unknown key; did you mean "channels"?'),
    ("prot", [add("mqtt", "prot", 1884)], 'mqtt.prot: unknown key; did you mean "port"?'),
    ("tsl", [add("mqtt", "tsl", True)], 'mqtt.tsl: unknown key; did you mean "tls"?'),
    ("adress", [with_prometheus, add("prometheus", "adress", "0.0.0.0")],
     'prometheus.adress: unknown key; did you mean "address"?'),
    # a section's key written flat at the top level
    ("mqtt_host", [lambda d: d.pop("mqtt"), add("", "mqtt_host", "broker.local")],
     'mqtt_host: unknown key; did you mean "mqtt": {"host": ...}?'),
    ("mqttPort", [add("", "mqttPort", 1884)],
     'mqttPort: unknown key; did you mean "mqtt": {"port": ...}?'),
    ("influx_url", [add("", "influx_url", "http://influx.local:8086")],
     'influx_url: unknown key; did you mean "influxDb": {"url": ...}?'),
    ("prometheus-port", [add("", "prometheus-port", 9101)],
     '["prometheus-port"]: unknown key; did you mean "prometheus": {"port": ...}?'),
]


@pytest.mark.parametrize(("mutations", "message"), [pytest.param(m, e, id=i) for i, m, e in SLIPS])
def test_a_slip_of_a_known_key_is_an_error(
    mutations: list[Mutation], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = valid()
    for mutate in mutations:
        mutate(data)
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        with pytest.raises(ConfigError) as info:
            parse(data)
    assert str(info.value) == message
    assert caplog.records == []


def test_the_first_slip_in_file_order_is_named() -> None:
    data = valid()
    data["comment"] = "kept"
    data["lagSec"] = 10
    data["timeZone"] = "UTC"
    with pytest.raises(ConfigError, match='^lagSec: '):
        parse(data)


# Unknown keys that are no slip of a known one: warned about, never an error.
# (where, key, its key path in the warning)
NOT_SLIPS = [
    ("", "comment", "comment"),
    ("", "_notes", "_notes"),
    ("", "description", "description"),
    ("", "$schema", '["$schema"]'),
    ("", "_influxDb", "_influxDb"),  # a section set aside on purpose
    ("", "#mqtt", '["#mqtt"]'),
    ("", "influxDb2", "influxDb2"),  # a numbered copy kept beside the real one
    # Set aside by a trailing mark: upstream ignored them, and so does vuegraf.
    ("", "mqtt_", "mqtt_"),
    ("", "influxDb-", '["influxDb-"]'),
    ("accounts.0.devices.0", "channels_", "accounts[0].devices[0].channels_"),
    ("", "mqtt_disabled", "mqtt_disabled"),
    ("", "influxDbOld", "influxDbOld"),
    ("", "historyDays", "historyDays"),
    ("", "zone", "zone"),
    ("", "account_name", "account_name"),
    ("influxDb", "path", "influxDb.path"),  # one letter off "pass", but a word of its own
    ("influxDb", "timeout_ms", "influxDb.timeout_ms"),
    ("influxDb", "db", "influxDb.db"),
    ("influxDb", "verify_ssl", "influxDb.verify_ssl"),
    ("accounts.0", "notes", "accounts[0].notes"),
    ("accounts.0.devices.0", "gid", "accounts[0].devices[0].gid"),
    ("mqtt", "qos", "mqtt.qos"),
    ("mqtt", "retain", "mqtt.retain"),
    ("mqtt", "client_id", "mqtt.client_id"),
    ("mqtt", "ssl", "mqtt.ssl"),
    ("mqtt", "cert", "mqtt.cert"),
]


@pytest.mark.parametrize("copy", ["influxDB", "mqttx", "influxDbOld"])
def test_a_section_copied_beside_the_real_one_is_only_warned_about(
    copy: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`"influxDB": {...}` beside `"influxDb": {...}`: the real section is there and is used;
    the copy is one a user keeps on purpose (as upstream allowed), not a slip."""
    data = valid()
    data[copy] = {"host": "old.local"}
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        cfg = parse(data)
    assert caplog.messages == [f"ignoring unknown config keys: {copy}"]
    assert cfg.influx is not None and cfg.mqtt is not None
    # Alone, the same key is a slip: the data would go elsewhere.
    real = "influxDb" if copy.lower().startswith("influx") else "mqtt"
    if copy != "influxDbOld":
        del data[real]
        with pytest.raises(ConfigError, match=f'^{copy}: unknown key; did you mean "{real}"'):
            parse(data)


@pytest.mark.parametrize(("where", "key", "key_path"), NOT_SLIPS)
def test_an_unrelated_unknown_key_is_only_warned_about(
    where: str, key: str, key_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = valid()
    add(where, key, "x")(data)
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        parse(data)
    assert caplog.messages == [f"ignoring unknown config keys: {key_path}"]


# The keys of upstream vuegraf's vuegraf.json (docs/ARCHITECTURE.md, "Upstream compatibility").
UPSTREAM_KEYS = [
    "influxDb", "accounts", "mqtt", "updateIntervalSecs", "lagSecs", "addStationField",
    "detailedDataEnabled", "detailedDataSecondsEnabled", "detailedDataHoursEnabled",
    "detailedDataDaysEnabled", "detailedIntervalSecs", "timezone", "maxHistoryDays",
    "version", "url", "org", "bucket", "token", "host", "port", "database", "user", "pass",
    "ssl_enable", "ssl_verify", "timeout", "reset", "tagName", "tagValue_second",
    "tagValue_minute", "tagValue_hour", "tagValue_day", "name", "email", "password",
    "devices", "channels", "username", "topic",
]


@pytest.mark.parametrize("where", ["", "influxDb", "accounts.0", "accounts.0.devices.0", "mqtt"])
@pytest.mark.parametrize("version", [1, 2])
def test_no_upstream_key_is_taken_for_a_slip_anywhere(
    where: str, version: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Each of upstream's keys, set to null (not set) in every section where it is absent:
    at most a warning, whichever section it lands in (upstream's own sample keeps v1 and v2
    keys in one influxDb object)."""
    for key in UPSTREAM_KEYS:
        data = valid()
        if version == 2:
            with_v2(data)
        node: Any = data
        for part in filter(None, where.split(".")):
            node = node[int(part)] if part.isdigit() else node[part]
        if key in node:
            continue
        node[key] = None
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
            parse(data)  # raises on a false alarm
        assert all(m.startswith("ignoring unknown config keys: ") for m in caplog.messages)


# --- what does not load --------------------------------------------------------------------

FILE = "<the file path>"  # expected key_path placeholder for whole-file errors

Mutation = Callable[[dict[str, Any]], object]


def put(path: str, value: object) -> Mutation:
    """Set a dotted path ("accounts.0.password") in the valid config."""

    def mutate(data: dict[str, Any]) -> object:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return data

    return mutate


def drop(path: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> object:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]
        return data

    return mutate


def raw(text: str) -> str:
    return text


def second_account(name: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> object:
        data["accounts"].append({"name": name, "email": "b@x", "password": "s3cret-emporia-pw"})
        return data

    return mutate


def influx(section: dict[str, Any]) -> Mutation:
    return put("influxDb", section)


V2_NO_TOKEN = {k: v for k, v in V2.items() if k != "token"}
V1_NO_HOST = {"database": "vue"}
DEV = "accounts.0.devices.0"

BAD: list[tuple[str, str | Mutation, str, str]] = [
    ("bad-json", raw('{"accounts": [}'), FILE, "invalid JSON at line 1 column 15"),
    ("truncated-json", raw('{\n  "accounts": [\n'), FILE, "invalid JSON at line 3 column 1"),
    ("empty-file", raw(""), FILE, "invalid JSON at line 1 column 1"),
    ("root-list", raw("[1, 2]"), "(root)", "must be a JSON object"),
    ("root-string", raw('"hello"'), "(root)", "must be a JSON object"),
    ("missing-accounts", drop("accounts"), "accounts", "required"),
    ("null-accounts", put("accounts", None), "accounts", "required"),
    ("empty-accounts", put("accounts", []), "accounts", "must be a non-empty list"),
    ("accounts-object", put("accounts", {"name": "A"}), "accounts", "must be a non-empty list"),
    ("account-not-object", put("accounts.0", "Home"), "accounts[0]", "must be a JSON object"),
    ("account-no-password", drop("accounts.0.password"), "accounts[0].password", "required"),
    ("account-no-name", drop("accounts.0.name"), "accounts[0].name", "required"),
    (
        "email-wrong-type",
        put("accounts.0.email", 42),
        "accounts[0].email",
        "must be a non-empty string",
    ),
    ("password-empty", put("accounts.0.password", ""), "accounts[0].password", "non-empty"),
    (
        "duplicate-account",
        second_account("Home"),
        "accounts[1].name",
        "duplicate account name 'Home'",
    ),
    (
        "simulator-url-no-scheme",
        put("accounts.0.simulatorUrl", "localhost:8765"),
        "accounts[0].simulatorUrl",
        "must start with http:// or https://",
    ),
    ("devices-not-list", put("accounts.0.devices", {}), "accounts[0].devices", "must be a list"),
    ("device-no-name", drop(f"{DEV}.name"), "accounts[0].devices[0].name", "required"),
    (
        "channels-wrong-type",
        put(f"{DEV}.channels", "Oven"),
        "accounts[0].devices[0].channels",
        "must be a list or an object",
    ),
    (
        "channel-list-entry",
        put(f"{DEV}.channels", ["Oven", 7]),
        "accounts[0].devices[0].channels[1]",
        "must be a non-empty string",
    ),
    (
        "channel-key-blank",
        put(f"{DEV}.channels", {"1": "Oven", " ": "Pool"}),
        'accounts[0].devices[0].channels[" "]',
        "channel number",
    ),
    (
        "channel-value-empty",
        put(f"{DEV}.channels", {"3": ""}),
        'accounts[0].devices[0].channels["3"]',
        "must be a non-empty string",
    ),
    ("influx-not-object", put("influxDb", "influx.local"), "influxDb", "must be a JSON object"),
    ("influx-version-3", put("influxDb.version", 3), "influxDb.version", "must be 1 or 2"),
    ("influx-version-text", put("influxDb.version", "2"), "influxDb.version", "must be 1 or 2"),
    ("v2-missing-token", influx(V2_NO_TOKEN), "influxDb.token", "required"),
    ("v2-missing-url", influx({**V2, "url": None}), "influxDb.url", "required"),
    ("v2-url-no-scheme", influx({**V2, "url": "influx2:8086"}), "influxDb.url", "http://"),
    ("v1-missing-host", influx(V1_NO_HOST), "influxDb.host", "required"),
    ("v1-missing-database", drop("influxDb.database"), "influxDb.database", "required"),
    ("user-without-pass", drop("influxDb.pass"), "influxDb.pass", "required when user is set"),
    ("pass-without-user", drop("influxDb.user"), "influxDb.user", "required when pass is set"),
    ("pass-not-string", put("influxDb.pass", 1234), "influxDb.pass", "must be a string"),
    ("port-as-string", put("influxDb.port", "8086"), "influxDb.port", "must be an integer"),
    ("port-out-of-range", put("influxDb.port", 70000), "influxDb.port", "between 1 and 65535"),
    ("port-zero", put("influxDb.port", 0), "influxDb.port", "between 1 and 65535"),
    ("ssl-verify-yes", put("influxDb.ssl_verify", "yes"), "influxDb.ssl_verify", "true or false"),
    ("ssl-enable-1", put("influxDb.ssl_enable", 1), "influxDb.ssl_enable", "true or false"),
    ("reset-text", put("influxDb.reset", "no"), "influxDb.reset", "true or false"),
    ("timeout-zero", put("influxDb.timeout", 0), "influxDb.timeout", "must be >= 1"),
    ("timeout-float", put("influxDb.timeout", 2.5), "influxDb.timeout", "must be an integer"),
    ("tag-name-empty", put("influxDb.tagName", ""), "influxDb.tagName", "non-empty string"),
    (
        "tag-values-clash",
        put("influxDb.tagValue_hour", "False"),
        "influxDb.tagValue_hour",
        "must differ from tagValue_minute",
    ),
    ("interval-zero", put("updateIntervalSecs", 0), "updateIntervalSecs", "must be >= 1"),
    ("interval-true", put("updateIntervalSecs", True), "updateIntervalSecs", "must be an integer"),
    ("interval-float", put("updateIntervalSecs", 60.5), "updateIntervalSecs", "must be an integer"),
    ("interval-text", put("updateIntervalSecs", "60"), "updateIntervalSecs", "must be an integer"),
    ("lag-negative", put("lagSecs", -1), "lagSecs", "must be >= 0"),
    ("lag-fraction", put("lagSecs", 1.5), "lagSecs", "must be an integer"),
    ("detailed-interval-0", put("detailedIntervalSecs", 0), "detailedIntervalSecs", ">= 1"),
    ("history-days-zero", put("maxHistoryDays", 0), "maxHistoryDays", "must be >= 1"),
    ("device-refresh-59", put("deviceRefreshSecs", 59), "deviceRefreshSecs", "must be >= 60"),
    ("station-field-1", put("addStationField", 1), "addStationField", "must be true or false"),
    ("detailed-text", put("detailedDataEnabled", "true"), "detailedDataEnabled", "true or false"),
    ("emporia-names-0", put("useEmporiaChannelNames", 0), "useEmporiaChannelNames", "true or"),
    ("unknown-timezone", put("timezone", "Mars/Base"), "timezone", "unknown time zone 'Mars/Base'"),
    ("timezone-path", put("timezone", "../../etc/passwd"), "timezone", "unknown time zone"),
    ("timezone-number", put("timezone", 5), "timezone", "must be a non-empty string"),
    ("sqlite-path-empty", put("sqlitePath", ""), "sqlitePath", "must be a non-empty string"),
    ("mqtt-not-object", put("mqtt", []), "mqtt", "must be a JSON object"),
    ("mqtt-missing-host", drop("mqtt.host"), "mqtt.host", "required"),
    ("mqtt-user-no-pw", drop("mqtt.password"), "mqtt.password", "required when username is set"),
    ("mqtt-pw-no-user", drop("mqtt.username"), "mqtt.username", "required when password is set"),
    ("mqtt-port-zero", put("mqtt.port", 0), "mqtt.port", "between 1 and 65535"),
    ("mqtt-topic-wildcard", put("mqtt.topic", "vuegraf/#"), "mqtt.topic", "wildcards"),
]


@pytest.mark.parametrize(
    ("case", "expected_key", "fragment"),
    [pytest.param(case, key, fragment, id=name) for name, case, key, fragment in BAD],
)
def test_malformed_config(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str | Mutation,
    expected_key: str,
    fragment: str,
) -> None:
    content = case if isinstance(case, str) else case(valid())
    path = write(tmp_path, content)
    with caplog.at_level(logging.DEBUG, logger="vuegraf.config"):
        with pytest.raises(ConfigError) as info:
            load_config(path)

    err = info.value
    assert err.key_path == (str(path) if expected_key == FILE else expected_key)
    assert fragment in err.message
    assert str(err) == f"{err.key_path}: {err.message}"
    assert "\n" not in str(err)
    for secret in SECRETS:
        assert secret not in str(err)
    assert caplog.records == []


def test_malformed_table_is_large_enough() -> None:
    assert len(BAD) >= 24


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.key_path == str(missing)
    assert "No such file or directory" in info.value.message

    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)  # a directory
    assert info.value.key_path == str(tmp_path)
    assert "cannot read config file" in info.value.message


def test_not_utf8_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"accounts": "\xe9"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)

    # A BOM (Windows editors) is fine.
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(VALID).encode())
    assert load_config(path).accounts[0].name == "Home"


def test_secret_type_errors_do_not_echo_values() -> None:
    data = valid()
    data["accounts"][0]["password"] = ["s3cret-emporia-pw"]
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert str(info.value) == "accounts[0].password: must be a non-empty string, not a list"


def test_weird_key_paths_stay_on_one_line() -> None:
    data = valid()
    data["accounts"][0]["devices"][0]["channels"] = {"1\n2": 5}
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert info.value.key_path == 'accounts[0].devices[0].channels["1\\n2"]'
    assert len(str(info.value).splitlines()) == 1


# --- the CLI contract: one line on stderr, exit 2, no traceback ----------------------------
#
# The real command, `python -m vuegraf CONFIG`, in a child process.

CLI_DEADLINE_S = 120.0  # generous: a start-up on a loaded machine only takes longer


def run_cli(path: Path) -> subprocess.CompletedProcess[str]:
    """`vuegraf CONFIG` on a config it must refuse: it exits by itself."""
    return subprocess.run(
        [sys.executable, "-m", "vuegraf", str(path)],
        capture_output=True,
        text=True,
        timeout=CLI_DEADLINE_S,
    )


def wait_for_log(
    proc: subprocess.Popen[bytes], log: Path, done: Callable[[str], bool], deadline_s: float
) -> str:
    """Poll `log` until `done(text)`; fail with the log if the process ends or time runs out."""
    give_up = time.monotonic() + deadline_s
    while True:
        text = log.read_text(errors="replace")
        if done(text):
            return text
        assert proc.poll() is None, f"vuegraf exited with {proc.returncode}:\n{text}"
        assert time.monotonic() < give_up, f"no sign of collection in {deadline_s} s:\n{text}"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("case", "expected_key"),
    [
        pytest.param(raw("{not json"), FILE, id="bad-json"),
        pytest.param(None, FILE, id="missing-file"),
        pytest.param(drop("accounts.0.password"), "accounts[0].password", id="no-password"),
        pytest.param(influx(V2_NO_TOKEN), "influxDb.token", id="v2-no-token"),
        pytest.param(put("timezone", "Mars/Base"), "timezone", id="bad-zone"),
        pytest.param(put("lagSecs", 1.5), "lagSecs", id="lag-fraction"),
    ],
)
def test_cli_prints_one_line_and_exits_2(
    tmp_path: Path, case: str | Mutation | None, expected_key: str
) -> None:
    if case is None:
        path = tmp_path / "missing.json"
    else:
        path = write(tmp_path, case if isinstance(case, str) else case(valid()))

    result = run_cli(path)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{str(path) if expected_key == FILE else expected_key}: ")
    for secret in SECRETS:
        assert secret not in result.stderr
    assert result.stdout == ""


@pytest.mark.integration
def test_cli_accepts_the_sample_and_starts_collecting(
    tmp_path: Path, influxdb_v1_db: tuple[InfluxV1Server, str], test_time: TestTime
) -> None:
    """The upstream sample, pointed at a real InfluxDB 1.x and at the Emporia simulator
    instead of my.influxdb.hostname and Emporia: the real CLI takes it, collects with it,
    and SIGTERM ends it with exit 0."""
    server, database = influxdb_v1_db
    data = json.loads(SAMPLE.read_text(encoding="utf-8"))
    with SimulatorServer(now=test_time.now) as sim:
        data["influxDb"].update(host=server.host, port=server.port, database=database)
        data["accounts"][0]["simulatorUrl"] = sim.url
        path = write(tmp_path, data, SAMPLE.name)
        path.chmod(0o600)
        log = tmp_path / "vuegraf.log"
        with test_time.running(log, str(path)) as proc:
            wait_for_log(
                proc,
                log,
                lambda text: "Collecting every 60 s" in text and "Cycle at" in text,
                CLI_DEADLINE_S,
            )
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=CLI_DEADLINE_S)
    text = log.read_text(errors="replace")
    assert code == 0, text
    assert "Received SIGTERM; stopping" in text
    assert "Traceback" not in text and "| ERROR |" not in text, text
    assert "| vuegraf.config |" not in text, text  # not even a warning about the sample
    # The account of the sample wrote its points under its name.
    rows = server.client(database).query(
        "SELECT count(usage) FROM energy_usage WHERE account_name = 'Primary Residence'"
    )
    assert sum(row["count"] for row in rows.get_points()) > 0


# --- keys new in this project ------------------------------------------------------------


def test_new_keys_defaults(tmp_path: Path) -> None:
    cfg = parse_config(valid(), tmp_path / "vuegraf.json", environ={})
    assert cfg.state_dir == tmp_path / "vuegraf-state"
    assert cfg.history_concurrency == 4
    assert cfg.history_requests_per_sec == 30.0
    assert cfg.detailed_data_channels is None
    assert cfg.daily_request_budget == 2000
    assert cfg.health_failure_threshold == 3
    assert cfg.prometheus is None


def test_new_keys_set(tmp_path: Path) -> None:
    data = valid()
    data.update(
        stateDir="state",
        historyConcurrency=8,
        historyRequestsPerSecond=2.5,
        detailedDataChannels=["Kitchen", "Main Panel"],
        dailyRequestBudget=1500,
        healthFailureThreshold=5,
        prometheus={"port": 9123},
    )
    cfg = parse_config(data, tmp_path / "vuegraf.json", environ={})
    assert cfg.state_dir == tmp_path / "state"
    assert (cfg.history_concurrency, cfg.history_requests_per_sec) == (8, 2.5)
    assert cfg.detailed_data_channels == ("Kitchen", "Main Panel")
    assert (cfg.daily_request_budget, cfg.health_failure_threshold) == (1500, 5)
    assert cfg.prometheus is not None
    assert (cfg.prometheus.port, cfg.prometheus.address) == (9123, "127.0.0.1")


def test_state_dir_from_environment_unless_configured(tmp_path: Path) -> None:
    env = {"VUEGRAF_STATE_DIR": "/var/lib/vuegraf"}
    assert parse_config(valid(), tmp_path / "v.json", environ=env).state_dir == Path(
        "/var/lib/vuegraf"
    )
    data = valid()
    data["stateDir"] = "/srv/state"
    assert parse_config(data, tmp_path / "v.json", environ=env).state_dir == Path("/srv/state")


@pytest.mark.parametrize(
    ("key", "value", "key_path", "message"),
    [
        ("historyConcurrency", 0, "historyConcurrency", "between 1 and 32"),
        ("historyConcurrency", 2.5, "historyConcurrency", "integer"),
        ("historyRequestsPerSecond", 0, "historyRequestsPerSecond", "> 0"),
        ("historyRequestsPerSecond", "fast", "historyRequestsPerSecond", "number"),
        ("detailedDataChannels", [], "detailedDataChannels", "non-empty list"),
        ("detailedDataChannels", ["ok", 3], "detailedDataChannels[1]", "non-empty string"),
        ("dailyRequestBudget", 0, "dailyRequestBudget", ">= 1"),
        ("healthFailureThreshold", True, "healthFailureThreshold", "integer"),
        ("prometheus", {"address": "0.0.0.0"}, "prometheus.port", "required"),
        ("prometheus", {"port": 70000}, "prometheus.port", "between 1 and 65535"),
        ("stateDir", "", "stateDir", "non-empty string"),
    ],
)
def test_new_keys_malformed(tmp_path: Path, key, value, key_path, message) -> None:
    data = valid()
    data[key] = value
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path / "vuegraf.json", environ={})
    assert info.value.key_path == key_path
    assert message in info.value.message


# --- secrets from the environment and from files -----------------------------------------


def test_env_references_expand_anywhere(tmp_path: Path) -> None:
    data = valid()
    data["influxDb"] = dict(V2, token="${INFLUX_TOKEN}", url="http://${INFLUX_HOST}:8086")
    data["accounts"][0]["password"] = "${EMPORIA_PW}"
    data["accounts"][0]["devices"][0]["channels"] = ["${OVEN}", "Dryer"]
    data["mqtt"]["password"] = "pre-${MQTT_PW}-post"
    env = {
        "INFLUX_TOKEN": "s3cret-v2-token",
        "INFLUX_HOST": "influx.lan",
        "EMPORIA_PW": "s3cret-emporia-pw",
        "OVEN": "Oven",
        "MQTT_PW": "s3cret-mqtt-pw",
    }
    cfg = parse_config(data, tmp_path / "vuegraf.json", environ=env)
    assert isinstance(cfg.influx, InfluxV2Config)
    assert (cfg.influx.token, cfg.influx.url) == ("s3cret-v2-token", "http://influx.lan:8086")
    assert cfg.accounts[0].password == "s3cret-emporia-pw"
    assert cfg.accounts[0].devices[0].channels["1"] == "Oven"
    assert cfg.mqtt is not None and cfg.mqtt.password == "pre-s3cret-mqtt-pw-post"
    assert data["accounts"][0]["password"] == "${EMPORIA_PW}"  # the caller's data is untouched


def test_env_reference_escapes_and_leaves_other_dollars_alone(tmp_path: Path) -> None:
    data = valid()
    data["accounts"][0]["password"] = "a$${NOT_A_VAR}b$c$$d${X}"
    cfg = parse_config(data, tmp_path / "vuegraf.json", environ={"X": "$${Y}"})
    # $${ → ${ ; a lone $ stays; an expanded value is not expanded again.
    assert cfg.accounts[0].password == "a${NOT_A_VAR}b$c$$d$${Y}"


@pytest.mark.parametrize(
    ("path", "value", "key_path", "message"),
    [
        (
            ("influxDb", "pass"),
            "${INFLUX_PASS}",
            "influxDb.pass",
            "environment variable INFLUX_PASS is not set",
        ),
        (
            ("accounts", 0, "password"),
            "x${EMPORIA_PW}",
            "accounts[0].password",
            "environment variable EMPORIA_PW is not set",
        ),
        (("mqtt", "host"), "${broken", "mqtt.host", "malformed ${...}"),
        (("mqtt", "host"), "${BAD-NAME}", "mqtt.host", "malformed ${...}"),
        (
            ("accounts", 0, "devices", 0, "channels", 1),
            "${NOPE}",
            "accounts[0].devices[0].channels[1]",
            "environment variable NOPE is not set",
        ),
    ],
)
def test_env_reference_errors_name_the_key(
    tmp_path: Path, path: tuple[str | int, ...], value: str, key_path: str, message: str
) -> None:
    data = valid()
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path / "vuegraf.json", environ={})
    assert info.value.key_path == key_path
    assert message in info.value.message


def test_unset_variable_error_text(tmp_path: Path) -> None:
    data = valid()
    data["influxDb"] = dict(V2, token="${INFLUX_TOKEN}")
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path / "vuegraf.json", environ={})
    assert str(info.value) == "influxDb.token: environment variable INFLUX_TOKEN is not set"


def test_secrets_from_files(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "emporia").write_text("s3cret-emporia-pw\n")
    (secrets / "influx").write_text("s3cret-influx-pw\r\n")
    (secrets / "mqtt").write_text("s3cret-mqtt-pw  ")  # no newline; spaces are the secret's
    (secrets / "token").write_text("s3cret-v2-token\n\n")
    data = valid()
    data["accounts"][0]["passwordFile"] = str(secrets / "emporia")  # absolute
    del data["accounts"][0]["password"]
    data["influxDb"]["passFile"] = "secrets/influx"  # relative to the config file
    del data["influxDb"]["pass"]
    data["mqtt"]["passwordFile"] = "${SECRETS}/mqtt"  # and ${...} works in the path too
    del data["mqtt"]["password"]
    cfg = parse_config(data, tmp_path / "vuegraf.json", environ={"SECRETS": str(secrets)})
    assert cfg.accounts[0].password == "s3cret-emporia-pw"
    assert isinstance(cfg.influx, InfluxV1Config) and cfg.influx.password == "s3cret-influx-pw"
    assert cfg.mqtt is not None and cfg.mqtt.password == "s3cret-mqtt-pw  "

    data["influxDb"] = dict(V2, tokenFile=str(secrets / "token"))
    del data["influxDb"]["token"]
    cfg = parse_config(data, tmp_path / "vuegraf.json", environ={"SECRETS": str(secrets)})
    assert isinstance(cfg.influx, InfluxV2Config) and cfg.influx.token == "s3cret-v2-token"


def test_secret_file_keys_unknown_elsewhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = valid()
    data["accounts"][0]["passwordFile"] = None  # null: not set, and not "unknown" either
    data["influxDb"]["tokenFile"] = "x"  # a v1 section has no token
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        parse_config(data, tmp_path / "vuegraf.json", environ={})
    assert caplog.messages == ["ignoring unknown config keys: influxDb.tokenFile"]


@pytest.mark.parametrize(
    ("section", "key", "file_key", "content", "message"),
    [
        ("accounts", "password", "passwordFile", None, "cannot read"),
        ("accounts", "password", "passwordFile", "\n", "is empty"),
        ("accounts", "password", "passwordFile", b"\xff\xfe\x00", "not UTF-8"),
        ("influxDb", "pass", "passFile", "dir", "cannot read"),
        ("mqtt", "password", "passwordFile", "", "is empty"),
    ],
)
def test_secret_file_errors_name_the_key(
    tmp_path: Path,
    section: str,
    key: str,
    file_key: str,
    content: str | bytes | None,
    message: str,
) -> None:
    data = valid()
    target = data["accounts"][0] if section == "accounts" else data[section]
    del target[key]
    path = tmp_path / "secret"
    if content == "dir":
        path.mkdir()  # unreadable as a file, even for root
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    target[file_key] = str(path)
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path / "vuegraf.json", environ={})
    prefix = "accounts[0]" if section == "accounts" else section
    assert info.value.key_path == f"{prefix}.{file_key}"
    assert message in info.value.message
    assert str(path) in info.value.message


def test_secret_and_secret_file_together_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("other\n")
    data = valid()
    data["mqtt"]["passwordFile"] = "pw"
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path / "vuegraf.json", environ={})
    assert str(info.value) == "mqtt.passwordFile: give either password or passwordFile, not both"


def test_secret_errors_never_echo_the_value(tmp_path: Path) -> None:
    data = valid()
    data["accounts"][0]["password"] = "s3cret-emporia-pw${"
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path / "vuegraf.json", environ={})
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_config_readable_by_others_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    path = write(tmp_path, valid())
    path.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        load_config(path)
    (message,) = caplog.messages
    assert str(path) in message and f"chmod 600 {path}" in message
    for secret in SECRETS:
        assert secret not in message


def test_private_config_or_one_without_literal_secrets_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = write(tmp_path, valid(), "private.json")
    private.chmod(0o600)
    (tmp_path / "pw").write_text("s3cret-emporia-pw\n")
    data = valid()
    data["accounts"][0]["password"] = "${EMPORIA_PW}"
    data["influxDb"]["pass"] = "${INFLUX_PW}"
    del data["mqtt"]["password"]
    data["mqtt"]["passwordFile"] = "pw"
    shared = write(tmp_path, data, "shared.json")
    shared.chmod(0o644)  # nothing secret in it: the secrets come from elsewhere
    monkeypatch.setenv("EMPORIA_PW", "s3cret-emporia-pw")
    monkeypatch.setenv("INFLUX_PW", "s3cret-influx-pw")
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        load_config(private)
        cfg = load_config(shared)
    assert caplog.records == []
    assert cfg.accounts[0].password == "s3cret-emporia-pw"


def test_config_secrets_lists_every_secret_once(tmp_path: Path) -> None:
    data = valid()
    data["accounts"].append(
        {"name": "Cabin", "email": "c@example.com", "password": "s3cret-mqtt-pw"}
    )
    cfg = parse_config(data, tmp_path / "v.json", environ={})
    assert cfg.secrets() == ("s3cret-emporia-pw", "s3cret-mqtt-pw", "s3cret-influx-pw")
    data["influxDb"] = dict(V2)
    del data["mqtt"]
    cfg = parse_config(data, tmp_path / "v.json", environ={})
    assert cfg.secrets() == ("s3cret-emporia-pw", "s3cret-mqtt-pw", "s3cret-v2-token")
    data["influxDb"] = None
    assert parse_config(data, tmp_path / "v.json", environ={}).secrets() == (
        "s3cret-emporia-pw",
        "s3cret-mqtt-pw",
    )


# --- MQTT keys new in this project --------------------------------------------------------


def test_mqtt_new_keys_defaults(tmp_path: Path) -> None:
    cfg = parse_config(valid(), tmp_path / "v.json", environ={})
    assert cfg.mqtt == MqttConfig(host="broker.local", username="vue", password="s3cret-mqtt-pw")
    assert cfg.mqtt is not None
    assert (cfg.mqtt.port, cfg.mqtt.tls, cfg.mqtt.keepalive, cfg.mqtt.max_pending) == (
        1883,
        False,
        60,
        10_000,
    )
    assert (cfg.mqtt.per_channel_topics, cfg.mqtt.topic_prefix) == (False, "vuegraf")
    assert cfg.mqtt.availability_topic == "vuegraf/status"


def test_mqtt_new_keys_set(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("PEM")
    data = valid()
    data["mqtt"].update(
        tls=True,
        caFile="ca.pem",
        certFile=str(tmp_path / "client.pem"),
        keyFile="client.key",
        insecure=True,
        keepalive=30,
        maxPending=500,
        perChannelTopics=True,
        topicPrefix="home/energy/",
    )
    cfg = parse_config(data, tmp_path / "v.json", environ={})
    mqtt = cfg.mqtt
    assert mqtt is not None
    assert (mqtt.tls, mqtt.port, mqtt.insecure) == (True, 8883, True)  # TLS port by default
    assert (mqtt.ca_file, mqtt.cert_file, mqtt.key_file) == (
        tmp_path / "ca.pem",
        tmp_path / "client.pem",
        tmp_path / "client.key",
    )
    assert (mqtt.keepalive, mqtt.max_pending) == (30, 500)
    assert (mqtt.per_channel_topics, mqtt.topic_prefix) == (True, "home/energy")
    assert mqtt.availability_topic == "home/energy/status"  # follows the prefix by default
    # An upstream config whose message topic is the default availability topic still loads;
    # the availability topic moves aside.
    moved = parse_config({**data, "mqtt": {**data["mqtt"], "topic": "home/energy/status"}},
                         tmp_path / "v.json", environ={}).mqtt
    assert moved is not None and moved.availability_topic == "home/energy/availability"
    data["mqtt"]["availabilityTopic"] = "/bridges/vuegraf/state/"
    again = parse_config(data, tmp_path / "v.json", environ={}).mqtt
    assert again is not None and again.availability_topic == "bridges/vuegraf/state"
    data["mqtt"]["port"] = 1884
    assert parse_config(data, tmp_path / "v.json", environ={}).mqtt.port == 1884  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("keys", "key_path", "message"),
    [
        ({"caFile": "ca.pem"}, "mqtt.caFile", "only applies with tls: true"),
        ({"insecure": True}, "mqtt.insecure", "only applies with tls: true"),
        ({"tls": True, "caFile": "missing.pem"}, "mqtt.caFile", "no such file"),
        ({"tls": True, "certFile": "ca.pem"}, "mqtt.keyFile", "required when certFile is set"),
        ({"tls": True, "keyFile": "ca.pem"}, "mqtt.certFile", "required when keyFile is set"),
        ({"tls": "yes"}, "mqtt.tls", "true or false"),
        ({"keepalive": 0}, "mqtt.keepalive", "between 5 and 65535"),
        ({"maxPending": 0}, "mqtt.maxPending", "between 1 and"),
        ({"topicPrefix": "a/+/b"}, "mqtt.topicPrefix", "wildcards"),
        ({"topicPrefix": "//"}, "mqtt.topicPrefix", "wildcards"),
        ({"perChannelTopics": 1}, "mqtt.perChannelTopics", "true or false"),
        ({"availabilityTopic": "a/#"}, "mqtt.availabilityTopic", "wildcards"),
        ({"availabilityTopic": "/"}, "mqtt.availabilityTopic", "wildcards"),
        ({"availabilityTopic": ""}, "mqtt.availabilityTopic", "empty"),
        ({"availabilityTopic": 7}, "mqtt.availabilityTopic", "string"),
        # Online/offline on the upstream topic would break its JSON-only subscribers.
        (
            {"topic": "home/energy", "availabilityTopic": "home/energy"},
            "mqtt.availabilityTopic",
            "differ from mqtt.topic",
        ),
    ],
)
def test_mqtt_new_keys_malformed(
    tmp_path: Path, keys: dict[str, object], key_path: str, message: str
) -> None:
    (tmp_path / "ca.pem").write_text("PEM")
    data = valid()
    data["mqtt"].update(keys)
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path / "v.json", environ={})
    assert info.value.key_path == key_path
    assert message in info.value.message


@pytest.mark.parametrize(
    ("mqtt", "message"),
    [
        ({"homeAssistant": 1}, "mqtt.homeAssistant: must be true, false or an object, not an "
         "integer"),
        ({"homeAssistant": {"discoveryPrefix": "ha/#"}},
         "mqtt.homeAssistant.discoveryPrefix: must be a topic without the wildcards + or #"),
        ({"topicPrefix": "homeassistant", "homeAssistant": True},
         "mqtt.homeAssistant.statusTopic: homeassistant/status is also mqtt.availabilityTopic "
         "(by default <topicPrefix>/status): set either to another topic"),
    ],
)
def test_home_assistant_settings_that_cannot_work_are_refused_by_key(
    tmp_path: Path, mqtt: dict[str, Any], message: str
) -> None:
    data = {"accounts": [{"name": "a", "email": "e", "password": "p"}],
            "mqtt": {"host": "h", **mqtt}}
    with pytest.raises(ConfigError) as err:
        parse_config(data, tmp_path / "vuegraf.json")
    assert str(err.value) == message
