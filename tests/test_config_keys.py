"""What each object of vuegraf.json accepts, the zone looked up once, and defaults shared.

The keys are declared on the dataclass fields and the accepted sets derived from them;
the expectations here are written out by hand, so a key lost or gained by a change to the
declarations shows up as a difference (a new key is added to ACCEPTED below).
"""

from __future__ import annotations

import copy
import logging
import shutil
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from vuegraf import config
from vuegraf.config import (
    AccountConfig,
    Config,
    ConfigError,
    HomeAssistantConfig,
    InfluxV1Config,
    TagConfig,
    parse_config,
)
from vuegraf.stats import Stats

BASE: dict[str, Any] = {
    "influxDb": {"host": "influx.local", "database": "vue"},
    "accounts": [
        {
            "name": "Home",
            "email": "me@example.com",
            "password": "pw",
            "devices": [{"name": "Main Panel", "channels": ["Oven"]}],
            "ampsVolts": {},
        }
    ],
    "mqtt": {"host": "broker.local", "homeAssistant": {}},
    "prometheus": {"port": 9101},
    "web": {"port": 8765},
}
V2 = {"version": 2, "url": "http://influx2.local:8086", "org": "home", "bucket": "b", "token": "t"}

TAG_KEYS = {
    "tagName", "tagValue_second", "tagValue_minute", "tagValue_hour", "tagValue_day",
    "tagValue_15min",
}
# Every key each kind of object accepts (the `...File` keys are where a secret may come from).
ACCEPTED: dict[str, set[str]] = {
    "": {
        "influxDb", "accounts", "mqtt", "updateIntervalSecs", "lagSecs", "addStationField",
        "detailedDataEnabled", "detailedDataSecondsEnabled", "detailedDataHoursEnabled",
        "detailedDataDaysEnabled", "detailedIntervalSecs", "timezone", "maxHistoryDays",
        "sqlitePath", "useEmporiaChannelNames", "deviceRefreshSecs", "stateDir",
        "accountConcurrency", "historyConcurrency", "historyRequestsPerSecond",
        "detailedDataChannels", "dailyRequestBudget", "healthFailureThreshold", "prometheus",
        "web",
    },
    "influxDb v1": TAG_KEYS | {
        "version", "host", "port", "database", "user", "pass", "passFile", "ssl_enable",
        "ssl_verify", "timeout", "reset",
    },
    "influxDb v2": TAG_KEYS | {
        "version", "url", "org", "bucket", "token", "tokenFile", "ssl_verify", "timeout", "reset",
    },
    "accounts.0": {
        "name", "email", "password", "passwordFile", "devices", "simulatorUrl", "ampsVolts",
    },
    "accounts.0.devices.0": {"name", "channels"},
    "accounts.0.ampsVolts": {"scale"},
    "mqtt": {
        "host", "port", "username", "password", "passwordFile", "topic", "tls", "caFile",
        "certFile", "keyFile", "insecure", "keepalive", "maxPending", "perChannelTopics",
        "topicPrefix", "availabilityTopic", "homeAssistant",
    },
    "mqtt.homeAssistant": {"discoveryPrefix", "statusTopic"},
    "prometheus": {"port", "address"},
    "web": {"port", "address", "username", "password", "passwordFile"},
}
EVERY_KEY = set().union(*ACCEPTED.values())


def base(where: str) -> dict[str, Any]:
    """A copy of BASE, with a v2 influxDb object for "influxDb v2"."""
    data = copy.deepcopy(BASE)
    if where == "influxDb v2":
        data["influxDb"] = dict(V2)
    return data


def config_with(where: str, key: str) -> tuple[dict[str, Any], str] | None:
    """`base(where)` with `key` set to null (not set) in the object `where`, and the key
    path a warning names it by; None when the key is already there."""
    data = base(where)
    section = where.removesuffix(" v1").removesuffix(" v2")
    node: Any = data
    for part in filter(None, section.split(".")):
        node = node[int(part)] if part.isdigit() else node[part]
    if key in node:
        return None
    node[key] = None
    path = section.replace(".0", "[0]")
    return data, f"{path}.{key}" if path else key


def parse(data: object, tmp_path: Path) -> Config:
    return parse_config(data, tmp_path / "vuegraf.json", environ={})


def unknown_warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    prefix = "ignoring unknown config keys: "
    named: list[str] = []
    for message in caplog.messages:
        assert message.startswith(prefix), message
        named += message.removeprefix(prefix).split(", ")
    return named


def test_the_known_key_sets_are_derived_from_the_declarations() -> None:
    """The sets the parser checks keys against (and hints from) are exactly the keys
    declared on the fields: a key gained or lost anywhere fails here."""
    derived = {
        "": config._TOP.known,
        "influxDb v1": config._V1.known,
        "influxDb v2": config._V2.known,
        "accounts.0": config._ACCOUNT.known,
        "accounts.0.devices.0": config._DEVICE.known,
        "accounts.0.ampsVolts": config._AMPS_VOLTS.known,
        "mqtt": config._MQTT.known,
        "mqtt.homeAssistant": config._HOME_ASSISTANT.known,
        "prometheus": config._PROMETHEUS.known,
        "web": config._WEB.known,
    }
    assert derived == ACCEPTED
    assert config._EVERY_KEY == EVERY_KEY
    # Keys of a section written flat at the top level (`mqtt_host`) are looked up in these.
    assert {name: set(keys) for name, (keys, _) in config._TOP.flat.items()} == {
        "influxDb": ACCEPTED["influxDb v1"] | ACCEPTED["influxDb v2"],
        "mqtt": ACCEPTED["mqtt"],
        "prometheus": ACCEPTED["prometheus"],
        "web": ACCEPTED["web"],
    }


@pytest.mark.parametrize("where", sorted(ACCEPTED))
def test_every_object_accepts_exactly_its_keys(
    where: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each key accepted where it belongs; every key of another object only warned about
    (never refused, never taken silently)."""
    with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
        parse(base(where), tmp_path)
    assert caplog.messages == []  # the keys already there are accepted
    for key in sorted(EVERY_KEY):
        case = config_with(where, key)
        if case is None:
            continue
        data, key_path = case
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="vuegraf.config"):
            parse(data, tmp_path)
        expected = [] if key in ACCEPTED[where] else [key_path]
        assert unknown_warned(caplog) == expected, (where, key)


def test_a_declared_key_reaches_its_field_in_every_object(tmp_path: Path) -> None:
    """One value per key, distinct from its default, comes back out of the dataclass."""
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("PEM")
    data = copy.deepcopy(BASE)
    data["influxDb"].update(
        port=8087, user="u", ssl_enable=True, ssl_verify=False, timeout=900, reset=True,
        version=1, tagName="res", tagValue_second="s", tagValue_minute="m",
        tagValue_hour="h", tagValue_day="d",
    )
    data["influxDb"]["pass"] = "p"
    data["accounts"][0]["simulatorUrl"] = "http://127.0.0.1:1"
    data["mqtt"].update(
        port=1884, username="mu", password="mp", topic="a/b", tls=True, caFile="ca.pem",
        certFile="client.pem", keyFile="client.key", insecure=True, keepalive=30,
        maxPending=7, perChannelTopics=True, topicPrefix="pre", availabilityTopic="av",
    )
    data["mqtt"]["homeAssistant"].update(discoveryPrefix="ha", statusTopic="ha/birth")
    data["prometheus"]["address"] = "0.0.0.0"
    data.update(
        updateIntervalSecs=30, lagSecs=1, addStationField=True, detailedDataEnabled=True,
        detailedDataSecondsEnabled=False, detailedDataHoursEnabled=False,
        detailedDataDaysEnabled=False, detailedIntervalSecs=60, timezone="Asia/Tokyo",
        maxHistoryDays=9, sqlitePath="s.db", useEmporiaChannelNames=True,
        deviceRefreshSecs=61, stateDir="st", accountConcurrency=3, historyConcurrency=2,
        historyRequestsPerSecond=1.5, detailedDataChannels=["Oven"], dailyRequestBudget=99,
        healthFailureThreshold=4,
    )
    cfg = parse(data, tmp_path)

    assert cfg.influx == InfluxV1Config(
        "influx.local", "vue", 8087, "u", "p", True, False, 900, True
    )
    assert cfg.tags == TagConfig("res", "s", "m", "h", "d")
    (account,) = cfg.accounts
    assert account.simulator_url == "http://127.0.0.1:1"
    assert dict(account.devices[0].channels) == {"1": "Oven"}
    mqtt = cfg.mqtt
    assert mqtt is not None
    assert (mqtt.port, mqtt.username, mqtt.password, mqtt.topic, mqtt.tls) == (
        1884, "mu", "mp", "a/b", True,
    )
    assert (mqtt.ca_file, mqtt.cert_file, mqtt.key_file) == (
        tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key",
    )
    assert (mqtt.insecure, mqtt.keepalive, mqtt.max_pending, mqtt.per_channel_topics) == (
        True, 30, 7, True,
    )
    assert (mqtt.topic_prefix, mqtt.availability_topic) == ("pre", "av")
    assert mqtt.home_assistant == HomeAssistantConfig("ha", "ha/birth")
    assert cfg.prometheus is not None and cfg.prometheus.address == "0.0.0.0"
    assert (cfg.update_interval_secs, cfg.lag_secs, cfg.add_station_field) == (30, 1, True)
    assert (
        cfg.detailed_data_enabled, cfg.detailed_data_seconds_enabled,
        cfg.detailed_data_hours_enabled, cfg.detailed_data_days_enabled,
        cfg.detailed_interval_secs,
    ) == (True, False, False, False, 60)
    assert (cfg.timezone_name, cfg.max_history_days, cfg.sqlite_path) == (
        "Asia/Tokyo", 9, tmp_path / "s.db",
    )
    assert (cfg.use_emporia_channel_names, cfg.device_refresh_secs, cfg.state_dir) == (
        True, 61, tmp_path / "st",
    )
    assert (cfg.account_concurrency, cfg.history_concurrency) == (3, 2)
    assert cfg.history_requests_per_sec == 1.5
    assert (cfg.detailed_data_channels, cfg.daily_request_budget) == (("Oven",), 99)
    assert cfg.health_failure_threshold == 4


def test_a_v2_section_checks_reset_but_keeps_it_nowhere(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["influxDb"] = dict(V2, reset=True)
    assert parse(data, tmp_path).influx is not None
    data["influxDb"]["reset"] = "yes"
    with pytest.raises(ConfigError) as info:
        parse(data, tmp_path)
    assert str(info.value) == "influxDb.reset: must be true or false, not a string"


# --- defaults shared ------------------------------------------------------------------------


def test_the_daily_request_budget_default_is_one_value(tmp_path: Path) -> None:
    """The budget a parsed config gets, a hand-built one gets and `Stats` counts against
    when built without one are the same 2 000 requests."""
    parsed = parse({"accounts": [{"name": "A", "email": "a@x", "password": "pw"}]}, tmp_path)
    hand_built = Config((AccountConfig("A", "a@x", "pw"),), None, TagConfig(), None,
                        tmp_path / "s.db", tmp_path / "v.json")
    assert parsed.daily_request_budget == hand_built.daily_request_budget == 2000
    assert Stats().budget == 2000


# --- the zone, looked up once -----------------------------------------------------------------

WINTER = datetime(2025, 1, 15, 12, tzinfo=UTC)


def zone_file(name: str) -> Path:
    """The system's compiled file for zone `name` (the same tz database the tests use)."""
    for root in zoneinfo.TZPATH:
        path = Path(root) / name
        if path.is_file():
            return path
    raise AssertionError(f"no tz database file for {name} under {zoneinfo.TZPATH}")


def offset(cfg: Config) -> timedelta | None:
    return WINTER.astimezone(cfg.zone).utcoffset()


def test_the_system_zone_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file $TZ names is read at the first use of `zone` and not again: rewriting it
    changes nothing for this config (a newly read config does see the new zone)."""
    localtime = tmp_path / "localtime"
    shutil.copyfile(zone_file("Europe/Berlin"), localtime)
    monkeypatch.setenv("TZ", str(localtime))
    cfg = parse(copy.deepcopy(BASE), tmp_path)
    zone = cfg.zone
    assert offset(cfg) == timedelta(hours=1)

    shutil.copyfile(zone_file("Asia/Tokyo"), localtime)
    assert cfg.zone is zone
    assert offset(cfg) == timedelta(hours=1)
    assert offset(parse(copy.deepcopy(BASE), tmp_path)) == timedelta(hours=9)


def test_a_configured_zone_is_the_same_object_on_every_use(tmp_path: Path) -> None:
    data = copy.deepcopy(BASE)
    data["timezone"] = "Asia/Tokyo"
    cfg = parse(data, tmp_path)
    assert cfg.zone is cfg.zone
    assert offset(cfg) == timedelta(hours=9)


def test_an_unknown_zone_in_a_hand_built_config_fails_on_every_use(tmp_path: Path) -> None:
    """As before: the parser refuses the name; a config built by hand fails where the zone
    is used, each time (a failure is not kept as if it were the zone)."""
    cfg = Config((AccountConfig("A", "a@x", "pw"),), None, TagConfig(), None,
                 tmp_path / "s.db", tmp_path / "v.json", timezone_name="Mars/Base")
    for _ in range(2):
        with pytest.raises(zoneinfo.ZoneInfoNotFoundError):
            cfg.zone  # noqa: B018
