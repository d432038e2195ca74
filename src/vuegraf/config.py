"""The upstream `vuegraf.json`, read once into validated, frozen dataclasses.

The file format is upstream's, unchanged, so an existing config keeps working;
a few optional keys are new (`simulatorUrl`, `sqlitePath`,
`useEmporiaChannelNames`, `deviceRefreshSecs`). Any problem raises one
`ConfigError` naming the key path, so the CLI can print one line and exit 2
instead of a traceback. Unknown keys are not errors (upstream ignored them);
they are named in one warning. A JSON `null` means "not set", exactly like an
absent key. Secrets are `repr=False` and never echoed in messages.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import tz

from vuegraf.model import Scale

logger = logging.getLogger(__name__)

DEFAULT_SQLITE_NAME = "vuegraf.sqlite"
DEFAULT_MQTT_TOPIC = "vuegraf/energy_usage"


class ConfigError(Exception):
    """One bad key: str(err) == f"{key_path}: {message}", e.g. "accounts[0].password: required"."""

    def __init__(self, key_path: str, message: str) -> None:
        super().__init__(f"{key_path}: {message}")
        self.key_path = key_path
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call ConfigError(str) and fail: keep it picklable.
        return (type(self), (self.key_path, self.message))


@dataclass(frozen=True)
class TagConfig:
    """The scale tag as the user named it; only sinks translate a `Scale` through this."""

    name: str = "detailed"
    second: str = "True"
    minute: str = "False"
    hour: str = "Hour"
    day: str = "Day"

    def value(self, scale: Scale) -> str:
        """The tag value written for points of `scale`."""
        return {
            Scale.SECOND: self.second,
            Scale.MINUTE: self.minute,
            Scale.HOUR: self.hour,
            Scale.DAY: self.day,
        }[scale]


@dataclass(frozen=True)
class InfluxV1Config:
    """`influxDb` with `version` 1 or absent."""

    host: str
    database: str
    port: int = 8086
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_enable: bool = False
    ssl_verify: bool = True
    timeout_ms: int | None = None
    reset: bool = False


@dataclass(frozen=True)
class InfluxV2Config:
    """`influxDb` with `version` 2."""

    url: str
    org: str
    bucket: str
    token: str = field(repr=False)
    ssl_verify: bool = True
    timeout_ms: int | None = None


@dataclass(frozen=True)
class DeviceConfig:
    """An account's `devices[]` entry: channel number as text -> circuit name."""

    name: str
    channels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A frozen dataclass still holds a mutable dict; make the mapping read-only too.
        object.__setattr__(self, "channels", MappingProxyType(dict(self.channels)))


@dataclass(frozen=True)
class AccountConfig:
    """One Emporia login; `name` becomes the `account_name` tag, hence unique."""

    name: str
    email: str
    password: str = field(repr=False)
    devices: tuple[DeviceConfig, ...] = ()
    simulator_url: str | None = None

    def device(self, name: str) -> DeviceConfig | None:
        """The first `devices[]` entry named `name` (upstream used the first match too)."""
        for dev in self.devices:
            if dev.name == name:
                return dev
        return None


@dataclass(frozen=True)
class MqttConfig:
    """Where the newest minute point of each channel is published."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    topic: str = DEFAULT_MQTT_TOPIC


@dataclass(frozen=True)
class PrometheusConfig:
    """Optional /metrics listener; loopback unless the user opens it up."""

    port: int
    address: str = "127.0.0.1"


@dataclass(frozen=True)
class Config:
    """Everything `vuegraf.json` says, validated; built by `load_config`/`parse_config`."""

    accounts: tuple[AccountConfig, ...]
    influx: InfluxV1Config | InfluxV2Config | None
    tags: TagConfig
    mqtt: MqttConfig | None
    sqlite_path: Path
    config_path: Path
    update_interval_secs: int = 60
    lag_secs: int = 5
    add_station_field: bool = False
    detailed_data_enabled: bool = False
    detailed_data_seconds_enabled: bool = True
    detailed_data_hours_enabled: bool = True
    detailed_data_days_enabled: bool = True
    detailed_interval_secs: int = 3600
    timezone_name: str | None = None
    max_history_days: int = 720
    use_emporia_channel_names: bool = False
    device_refresh_secs: int = 3600
    # New keys (none of them upstream's):
    state_dir: Path | None = None  # "stateDir"; None only in hand-built configs
    history_concurrency: int = 4  # "historyConcurrency": chart requests in flight at once
    history_requests_per_sec: float = 30.0  # "historyRequestsPerSecond": rate limit
    detailed_data_channels: tuple[str, ...] | None = None  # "detailedDataChannels": 1S only these
    daily_request_budget: int = 2000  # "dailyRequestBudget": warn above this per account
    health_failure_threshold: int = 3  # "healthFailureThreshold": failed cycles → unhealthy
    prometheus: PrometheusConfig | None = None

    @property
    def zone(self) -> tzinfo:
        """The zone whose midnight ends a day point: the configured one, else the system's."""
        if self.timezone_name is None:
            return tz.tzlocal()
        return ZoneInfo(self.timezone_name)


# --- reading JSON objects with key paths --------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JSON_TYPES = {
    bool: "true/false",
    int: "an integer",
    float: "a decimal number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _child(path: str, key: str) -> str:
    """JSON-path style: `a.b` for plain keys, `a["3"]` for others, `b` at the top."""
    if _IDENT.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _kind(value: object) -> str:
    """What the user wrote, by JSON type only: values may be secrets and are never echoed."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _non_empty(value: object, key_path: str) -> str:
    """Names become tag values and hosts get dialled: blank would only fail later."""
    if not isinstance(value, str):
        raise ConfigError(key_path, f"must be a non-empty string, not {_kind(value)}")
    if not value.strip():
        raise ConfigError(key_path, "must be a non-empty string")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Section:
    """One JSON object under validation: knows its key path and which keys it accepts."""

    def __init__(self, data: object, path: str, known: frozenset[str]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "(root)", "must be a JSON object")
        self.data: dict[str, object] = data
        self.path = path
        self.known = known

    def key(self, key: str) -> str:
        return _child(self.path, key)

    def get(self, key: str) -> object | None:
        """The value, or None when absent or null (both mean "not set")."""
        return self.data.get(key)

    def required(self, key: str) -> object:
        value = self.get(key)
        if value is None:
            raise ConfigError(self.key(key), "required" + self._typo_hint(key))
        return value

    def string(self, key: str) -> str:
        return self._check_str(key, self.required(key))

    def opt_string(self, key: str) -> str | None:
        value = self.get(key)
        return None if value is None else self._check_str(key, value)

    def _check_str(self, key: str, value: object) -> str:
        return _non_empty(value, self.key(key))

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.key(key), f"must be true or false, not {_kind(value)}")
        return value

    def opt_integer(self, key: str, minimum: int, maximum: int | None = None) -> int | None:
        value = self.get(key)
        if value is None:
            return None
        if not _is_int(value):
            raise ConfigError(self.key(key), f"must be an integer, not {_kind(value)}")
        assert isinstance(value, int)
        if maximum is not None and not minimum <= value <= maximum:
            raise ConfigError(self.key(key), f"must be between {minimum} and {maximum}")
        if value < minimum:
            raise ConfigError(self.key(key), f"must be >= {minimum}")
        return value

    def integer(self, key: str, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self.opt_integer(key, minimum, maximum)
        return default if value is None else value

    def number(self, key: str, default: float, above: float) -> float:
        """A JSON number (integer or decimal) strictly greater than `above`."""
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.key(key), f"must be a number, not {_kind(value)}")
        if not value > above:
            raise ConfigError(self.key(key), f"must be > {above:g}")
        return float(value)

    def string_list(self, key: str) -> tuple[str, ...] | None:
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise ConfigError(self.key(key), f"must be a non-empty list, not {_kind(value)}")
        return tuple(_non_empty(v, _index(self.key(key), i)) for i, v in enumerate(value))

    def port(self, key: str, default: int) -> int:
        return self.integer(key, default, 1, 65535)

    def unknown(self) -> list[str]:
        """Key paths of keys this section does not know, in file order."""
        return [self.key(k) for k in self.data if k not in self.known]

    def _typo_hint(self, key: str) -> str:
        # A missing key is often a misspelt one that is sitting right there as "unknown".
        strangers = [k for k in self.data if k not in self.known]
        close = difflib.get_close_matches(key, strangers, n=1, cutoff=0.6)
        return f" (found unknown key {json.dumps(close[0])})" if close else ""


# --- the sections ------------------------------------------------------------------------

_TOP_KEYS = frozenset(
    {
        "influxDb",
        "accounts",
        "mqtt",
        "updateIntervalSecs",
        "lagSecs",
        "addStationField",
        "detailedDataEnabled",
        "detailedDataSecondsEnabled",
        "detailedDataHoursEnabled",
        "detailedDataDaysEnabled",
        "detailedIntervalSecs",
        "timezone",
        "maxHistoryDays",
        "sqlitePath",
        "useEmporiaChannelNames",
        "deviceRefreshSecs",
        "stateDir",
        "historyConcurrency",
        "historyRequestsPerSecond",
        "detailedDataChannels",
        "dailyRequestBudget",
        "healthFailureThreshold",
        "prometheus",
    }
)
_TAG_KEYS = frozenset(
    {"tagName", "tagValue_second", "tagValue_minute", "tagValue_hour", "tagValue_day"}
)
# "reset" is upstream's; accepted (and validated) in both versions without a warning.
_V1_KEYS = _TAG_KEYS | {
    "version",
    "host",
    "port",
    "database",
    "user",
    "pass",
    "ssl_enable",
    "ssl_verify",
    "timeout",
    "reset",
}
_V2_KEYS = _TAG_KEYS | {
    "version",
    "url",
    "org",
    "bucket",
    "token",
    "ssl_verify",
    "timeout",
    "reset",
}
_ACCOUNT_KEYS = frozenset({"name", "email", "password", "devices", "simulatorUrl"})
_DEVICE_KEYS = frozenset({"name", "channels"})
_MQTT_KEYS = frozenset({"host", "port", "username", "password", "topic"})
_PROMETHEUS_KEYS = frozenset({"port", "address"})
STATE_DIR_ENV = "VUEGRAF_STATE_DIR"
DEFAULT_STATE_DIR_NAME = "vuegraf-state"


def _tags(sec: _Section) -> TagConfig:
    """Tag name and values; distinct values, or two scales would write into one series."""
    default = TagConfig()
    name = sec.opt_string("tagName") or default.name
    values: dict[str, str] = {}
    for scale in ("second", "minute", "hour", "day"):
        key = f"tagValue_{scale}"
        value = sec.opt_string(key) or getattr(default, scale)
        for other, seen in values.items():
            if seen == value:
                raise ConfigError(sec.key(key), f"must differ from tagValue_{other} ({value!r})")
        values[scale] = value
    return TagConfig(name=name, **values)


def _credentials(sec: _Section, user_key: str, pass_key: str) -> tuple[str | None, str | None]:
    """User and password go together. An empty string counts as unset: upstream required
    both keys for InfluxDB v1, so servers without auth were configured with "" and ""."""
    user = sec.get(user_key)
    password = sec.get(pass_key)
    for key, value in ((user_key, user), (pass_key, password)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(sec.key(key), f"must be a string, not {_kind(value)}")
    user = user or None
    password = password or None
    if user is not None and password is None:
        raise ConfigError(sec.key(pass_key), f"required when {user_key} is set")
    if password is not None and user is None:
        raise ConfigError(sec.key(user_key), f"required when {pass_key} is set")
    assert user is None or isinstance(user, str)
    assert password is None or isinstance(password, str)
    return user, password


def _http_url(sec: _Section, key: str, value: str) -> str:
    """Both clients need the scheme; catching a bare host name here beats a client error."""
    if not value.startswith(("http://", "https://")):
        raise ConfigError(sec.key(key), "must start with http:// or https://")
    return value


def _influx(
    data: object, unknown: list[str]
) -> tuple[InfluxV1Config | InfluxV2Config | None, TagConfig]:
    if data is None:
        return None, TagConfig()
    probe = _Section(data, "influxDb", _V1_KEYS)
    version = probe.get("version")
    if version is None:
        version = 1
    if not _is_int(version) or version not in (1, 2):
        raise ConfigError(probe.key("version"), "must be 1 or 2")
    if version == 2:
        sec = _Section(data, "influxDb", _V2_KEYS)
        sec.boolean("reset", False)
        influx: InfluxV1Config | InfluxV2Config = InfluxV2Config(
            url=_http_url(sec, "url", sec.string("url")),
            org=sec.string("org"),
            bucket=sec.string("bucket"),
            token=sec.string("token"),
            ssl_verify=sec.boolean("ssl_verify", True),
            timeout_ms=sec.opt_integer("timeout", 1),
        )
    else:
        sec = probe
        host = sec.string("host")
        database = sec.string("database")
        port = sec.port("port", 8086)
        user, password = _credentials(sec, "user", "pass")
        influx = InfluxV1Config(
            host=host,
            database=database,
            port=port,
            user=user,
            password=password,
            ssl_enable=sec.boolean("ssl_enable", False),
            ssl_verify=sec.boolean("ssl_verify", True),
            timeout_ms=sec.opt_integer("timeout", 1),
            reset=sec.boolean("reset", False),
        )
    tags = _tags(sec)
    unknown.extend(sec.unknown())
    return influx, tags


def _channels(value: object, path: str) -> dict[str, str]:
    """A list maps its Nth entry to channel "N"; an object maps "N" to its value.

    Lenient where upstream was: an empty or null list entry leaves that channel
    to the default name, and object keys may be any channel id ("97", "Balance").
    """
    if value is None:
        return {}
    result: dict[str, str] = {}
    if isinstance(value, list):
        for i, name in enumerate(value):
            if name is None or name == "":
                continue
            result[str(i + 1)] = _non_empty(name, _index(path, i))
        return result
    if isinstance(value, dict):
        for num, name in value.items():
            key_path = f"{path}[{json.dumps(num)}]"
            if not num.strip():
                raise ConfigError(key_path, "key must be a channel number such as \"1\" or \"97\"")
            result[num] = _non_empty(name, key_path)
        return result
    raise ConfigError(path, f"must be a list or an object, not {_kind(value)}")


def _devices(acct: _Section, unknown: list[str]) -> tuple[DeviceConfig, ...]:
    value = acct.get("devices")
    if value is None:
        return ()
    path = acct.key("devices")
    if not isinstance(value, list):
        raise ConfigError(path, f"must be a list, not {_kind(value)}")
    devices = []
    for i, item in enumerate(value):
        sec = _Section(item, _index(path, i), _DEVICE_KEYS)
        name = sec.string("name")
        channels = _channels(sec.get("channels"), sec.key("channels"))
        devices.append(DeviceConfig(name=name, channels=channels))
        unknown.extend(sec.unknown())
    return tuple(devices)


def _simulator_url(sec: _Section) -> str | None:
    value = sec.opt_string("simulatorUrl")
    return None if value is None else _http_url(sec, "simulatorUrl", value)


def _accounts(data: object, unknown: list[str]) -> tuple[AccountConfig, ...]:
    if data is None:
        raise ConfigError("accounts", "required")
    if not isinstance(data, list):
        raise ConfigError("accounts", f"must be a non-empty list, not {_kind(data)}")
    if not data:
        raise ConfigError("accounts", "must be a non-empty list")
    accounts: list[AccountConfig] = []
    for i, item in enumerate(data):
        sec = _Section(item, _index("accounts", i), _ACCOUNT_KEYS)
        name = sec.string("name")
        if any(a.name == name for a in accounts):
            raise ConfigError(sec.key("name"), f"duplicate account name {name!r}")
        accounts.append(
            AccountConfig(
                name=name,
                email=sec.string("email"),
                password=sec.string("password"),
                devices=_devices(sec, unknown),
                simulator_url=_simulator_url(sec),
            )
        )
        unknown.extend(sec.unknown())
    return tuple(accounts)


def _mqtt(data: object, unknown: list[str]) -> MqttConfig | None:
    if data is None:
        return None
    sec = _Section(data, "mqtt", _MQTT_KEYS)
    host = sec.string("host")
    port = sec.port("port", 1883)
    username, password = _credentials(sec, "username", "password")
    topic = sec.opt_string("topic") or DEFAULT_MQTT_TOPIC
    if "+" in topic or "#" in topic:
        raise ConfigError(sec.key("topic"), "must not contain the wildcards + or #")
    unknown.extend(sec.unknown())
    return MqttConfig(host=host, port=port, username=username, password=password, topic=topic)


def _timezone(top: _Section) -> str | None:
    """None for the system zone: null, or "TZ" in any case (upstream crashed on "TZ")."""
    value = top.get("timezone")
    if value is None:
        return None
    name = top.opt_string("timezone")
    assert name is not None
    if name.upper() == "TZ":
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError("timezone", f"unknown time zone {name!r}") from None
    return name


def _prometheus(data: object, unknown: list[str]) -> PrometheusConfig | None:
    if data is None:
        return None
    sec = _Section(data, "prometheus", _PROMETHEUS_KEYS)
    port = sec.opt_integer("port", 1, 65535)
    if port is None:
        raise ConfigError(sec.key("port"), "required" + sec._typo_hint("port"))
    address = sec.opt_string("address") or "127.0.0.1"
    unknown.extend(sec.unknown())
    return PrometheusConfig(port=port, address=address)


def _state_dir(top: _Section, config_dir: Path, environ: Mapping[str, str]) -> Path:
    """Config key, else $VUEGRAF_STATE_DIR (the Docker image sets it), else beside the config."""
    value = top.opt_string("stateDir") or environ.get(STATE_DIR_ENV) or None
    if value is None:
        return config_dir / DEFAULT_STATE_DIR_NAME
    return config_dir / Path(value).expanduser()


def _sqlite_path(top: _Section, config_dir: Path) -> Path:
    value = top.opt_string("sqlitePath")
    if value is None:
        return config_dir / DEFAULT_SQLITE_NAME
    return config_dir / Path(value).expanduser()


def parse_config(
    data: object, config_path: Path, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate an already-parsed JSON value; `config_path` anchors relative paths."""
    environ = os.environ if environ is None else environ
    config_path = Path(config_path).absolute()
    top = _Section(data, "", _TOP_KEYS)
    unknown: list[str] = top.unknown()
    influx, tags = _influx(top.get("influxDb"), unknown)
    accounts = _accounts(top.get("accounts"), unknown)
    mqtt = _mqtt(top.get("mqtt"), unknown)
    config = Config(
        accounts=accounts,
        influx=influx,
        tags=tags,
        mqtt=mqtt,
        sqlite_path=_sqlite_path(top, config_path.parent),
        config_path=config_path,
        update_interval_secs=top.integer("updateIntervalSecs", 60, 1),
        lag_secs=top.integer("lagSecs", 5, 0),
        add_station_field=top.boolean("addStationField", False),
        detailed_data_enabled=top.boolean("detailedDataEnabled", False),
        detailed_data_seconds_enabled=top.boolean("detailedDataSecondsEnabled", True),
        detailed_data_hours_enabled=top.boolean("detailedDataHoursEnabled", True),
        detailed_data_days_enabled=top.boolean("detailedDataDaysEnabled", True),
        detailed_interval_secs=top.integer("detailedIntervalSecs", 3600, 1),
        timezone_name=_timezone(top),
        max_history_days=top.integer("maxHistoryDays", 720, 1),
        use_emporia_channel_names=top.boolean("useEmporiaChannelNames", False),
        device_refresh_secs=top.integer("deviceRefreshSecs", 3600, 60),
        state_dir=_state_dir(top, config_path.parent, environ),
        history_concurrency=top.integer("historyConcurrency", 4, 1, 32),
        history_requests_per_sec=top.number("historyRequestsPerSecond", 30.0, 0.0),
        detailed_data_channels=top.string_list("detailedDataChannels"),
        daily_request_budget=top.integer("dailyRequestBudget", 2000, 1),
        health_failure_threshold=top.integer("healthFailureThreshold", 3, 1),
        prometheus=_prometheus(top.get("prometheus"), unknown),
    )
    # Only once the file is valid: on error the CLI's stderr is exactly one line.
    if unknown:
        logger.warning("ignoring unknown config keys: %s", ", ".join(unknown))
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate the config file; every failure is a ConfigError, never a traceback."""
    path = Path(path)
    where = str(path)
    try:
        # utf-8-sig: editors on Windows like to prepend a BOM that json rejects.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(where, f"not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(where, f"cannot read config file: {err.strerror or err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        # err.msg is a fixed phrase; the document itself (maybe secrets) is not echoed.
        raise ConfigError(
            where, f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    except RecursionError:
        raise ConfigError(where, "invalid JSON: nested too deeply") from None
    return parse_config(data, path)
