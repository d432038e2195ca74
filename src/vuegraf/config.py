"""The upstream `vuegraf.json`, read once into validated, frozen dataclasses.

The file format is upstream's, unchanged, so an existing config keeps working;
a few optional keys are new (`simulatorUrl`, `sqlitePath`,
`useEmporiaChannelNames`, `deviceRefreshSecs`). Any problem raises one
`ConfigError` naming the key path, so the CLI can print one line and exit 2
instead of a traceback. An unknown key that is a slip of a known one (`influxdb`,
`update_interval_secs`, `infuxDb`, `mqtt_host`) is such an error: ignoring it would
quietly send the data elsewhere. Other unknown keys are not errors (upstream ignored
them, and users keep notes in the file); they are named in one warning. A JSON `null`
means "not set", exactly like an absent key. Secrets are `repr=False` and never echoed
in messages.

Secrets need not sit in the file: any string may be or contain `${ENV_VAR}`
(`$${` is a literal `${`), and `password`, `token` and `pass` may be given as
`passwordFile`, `tokenFile`, `passFile` (e.g. Docker secrets) instead.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import stat
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
DEFAULT_MQTT_TOPIC_PREFIX = "vuegraf"
DEFAULT_MQTT_MAX_PENDING = 10_000
#: Last level of the default availability topic, `<topicPrefix>/status`.
MQTT_STATUS_LEVEL = "status"
MQTT_AVAILABILITY_LEVEL = "availability"  # the default's level when mqtt.topic is on "status"


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
    # New keys (none of them upstream's):
    tls: bool = False  # "tls"; the port defaults to 8883 then
    ca_file: Path | None = None  # "caFile"; None: the system's CAs
    cert_file: Path | None = None  # "certFile" + "keyFile": client certificate
    key_file: Path | None = None
    insecure: bool = False  # "insecure": skip the server host name check (as mosquitto_pub)
    keepalive: int = 60  # "keepalive", seconds
    max_pending: int = DEFAULT_MQTT_MAX_PENDING  # "maxPending": kept while the broker is away
    per_channel_topics: bool = False  # "perChannelTopics": retained <prefix>/<acct>/<dev>/<ch>
    topic_prefix: str = DEFAULT_MQTT_TOPIC_PREFIX  # "topicPrefix"
    # "availabilityTopic": retained "online"/"offline" (and the last will) for everything
    # vuegraf publishes; "" means `<topic_prefix>/status`, filled in on construction.
    availability_topic: str = ""

    def __post_init__(self) -> None:
        if not self.availability_topic:
            default = f"{self.topic_prefix}/{MQTT_STATUS_LEVEL}"
            object.__setattr__(self, "availability_topic", default)


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

    def secrets(self) -> tuple[str, ...]:
        """Every password and token, for the log redaction filter (never for display)."""
        values: list[str | None] = [a.password for a in self.accounts]
        if isinstance(self.influx, InfluxV1Config):
            values.append(self.influx.password)
        elif isinstance(self.influx, InfluxV2Config):
            values.append(self.influx.token)
        if self.mqtt is not None:
            values.append(self.mqtt.password)
        return tuple(dict.fromkeys(v for v in values if v))

    @property
    def zone(self) -> tzinfo:
        """The zone whose midnight ends a day point: the configured one, else the system's."""
        if self.timezone_name is None:
            return system_zone()
        return ZoneInfo(self.timezone_name)


def system_zone() -> tzinfo:
    """The machine's zone as a real IANA zone (full DST history, midnight changes), from $TZ
    or /etc/localtime; dateutil's tzlocal() only as a last resort."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name and not name.startswith("/"):
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    for path in ([name] if name.startswith("/") else []) + ["/etc/localtime"]:
        try:
            with open(path, "rb") as f:
                return ZoneInfo.from_file(f, key="localtime")
        except (OSError, ValueError):
            continue
    return tz.tzlocal()


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

    def reject_slips(
        self, sections: Mapping[str, tuple[frozenset[str], tuple[str, ...]]] | None = None
    ) -> None:
        """Raise for the first unknown key (in file order) that is a slip of a known one.

        `sections` (top level only): the sections whose keys may have been written flat,
        as in `mqtt_host`."""
        for key in self.data:
            if key in self.known:
                continue
            if isinstance(self.data[key], dict) and _closest(_folded(key), self.known) in self.data:
                continue  # "influxDB": {...} beside "influxDb": a section copy kept on purpose
            hint = _slip_hint(key, self.known, sections or {})
            if hint is not None:
                raise ConfigError(self.key(key), f"unknown key; did you mean {hint}?")

    def _typo_hint(self, key: str) -> str:
        # A missing key is often a misspelt one that is sitting right there as "unknown".
        strangers = [k for k in self.data if k not in self.known]
        close = difflib.get_close_matches(key, strangers, n=1, cutoff=0.6)
        return f" (found unknown key {json.dumps(close[0])})" if close else ""


# --- unknown keys that are slips of known ones --------------------------------------------


def _folded(key: str) -> str:
    """`key` as compared for slips: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", key.lower())


def _slips(typed: str, known: str) -> int:
    """Letters left out, added or replaced, and neighbours swapped, that turn `typed` into
    `known` (the optimal string alignment distance)."""
    before: list[int] = []
    previous = list(range(len(known) + 1))
    for i, a in enumerate(typed, 1):
        row = [i]
        for j, b in enumerate(known, 1):
            cost = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a != b))
            if i > 1 and j > 1 and a == known[j - 2] and typed[i - 2] == b:
                cost = min(cost, before[j - 2] + 1)
            row.append(cost)
        before, previous = previous, row
    return previous[-1]


def _is_slip(typed: str, known: str) -> bool:
    """Whether the folded key `typed` is the folded key `known` mistyped.

    Case, `_` and `-` never count. Then one slip is allowed in keys of up to 9 letters, two
    up to 15 and three beyond (`historyRequestsPerSec`); no two keys vuegraf reads in one
    section are that close. A key of up to 4 letters with one letter replaced is taken for
    another word (`path` is no `pass`), and one that only adds digits for a copy kept on
    purpose (`influxDb2`)."""
    if typed == known:
        return True
    if len(known) < 3 or re.sub(r"[0-9]", "", typed) == known:
        return False
    slips = _slips(typed, known)
    if slips == 1 and len(known) <= 4 and len(typed) == len(known):
        replaced = sum(a != b for a, b in zip(typed, known, strict=True)) == 1
        if replaced:
            return False
    return slips <= (1 if len(known) < 10 else 2 if len(known) < 16 else 3)


def _closest(typed: str, keys: frozenset[str]) -> str | None:
    """The key of `keys` that the folded `typed` is a slip of (the fewest slips first)."""
    # A secret may also be given as a file: `password_file` is a slip of `passwordFile`.
    files = {file for key, file in _SECRET_FILE_KEYS.items() if key in keys}
    matches = [k for k in keys | files if _is_slip(typed, _folded(k))]
    return min(matches, key=lambda k: (_slips(typed, _folded(k)), k), default=None)


def _slip_hint(
    key: str, known: frozenset[str], sections: Mapping[str, tuple[frozenset[str], tuple[str, ...]]]
) -> str | None:
    """What the unknown `key` was likely meant to be, as JSON to write instead; None when it
    looks like no known key (then it is only warned about)."""
    if not key[:1].isalnum() or not key[-1:].isalnum() or key in _EVERY_KEY:
        # "_mqtt", "mqtt_": a section set aside on purpose; "host" in a v2 section: a real key
        # of another section (upstream's sample keeps v1 and v2 keys side by side).
        return None
    typed = _folded(key)
    match = _closest(typed, known)
    if match is not None:
        return json.dumps(match)
    for section, (keys, prefixes) in sections.items():
        for prefix in prefixes:
            if typed.startswith(prefix) and len(typed) > len(prefix):
                sub = _closest(typed[len(prefix) :], keys)
                if sub is not None:
                    return f"{json.dumps(section)}: {{{json.dumps(sub)}: ...}}"
    return None


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
_MQTT_KEYS = frozenset(
    {
        "host",
        "port",
        "username",
        "password",
        "topic",
        "tls",
        "caFile",
        "certFile",
        "keyFile",
        "insecure",
        "keepalive",
        "maxPending",
        "perChannelTopics",
        "topicPrefix",
        "availabilityTopic",
    }
)
_PROMETHEUS_KEYS = frozenset({"port", "address"})
# Sections whose keys a user may write flat at the top level (`mqtt_host`), by the names
# such a key may start with (folded, see `_folded`; `influx_url` too).
_FLAT_SECTIONS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "influxDb": (_V1_KEYS | _V2_KEYS, ("influxdb", "influx")),
    "mqtt": (_MQTT_KEYS, ("mqtt",)),
    "prometheus": (_PROMETHEUS_KEYS, ("prometheus",)),
}
# Which secret may come from which file key (where the section has that secret).
_SECRET_FILE_KEYS = {"password": "passwordFile", "token": "tokenFile", "pass": "passFile"}
# Every key vuegraf reads in some section, the `...File` ones included.
_EVERY_KEY = (
    _TOP_KEYS | _V1_KEYS | _V2_KEYS | _ACCOUNT_KEYS | _DEVICE_KEYS | _MQTT_KEYS | _PROMETHEUS_KEYS
    | frozenset(_SECRET_FILE_KEYS.values())
)
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
        sec.reject_slips()
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
        sec.reject_slips()
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
        sec.reject_slips()
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
        sec.reject_slips()
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


def _mqtt(data: object, unknown: list[str], config_dir: Path) -> MqttConfig | None:
    if data is None:
        return None
    sec = _Section(data, "mqtt", _MQTT_KEYS)
    sec.reject_slips()
    host = sec.string("host")
    tls = sec.boolean("tls", False)
    port = sec.port("port", 8883 if tls else 1883)
    username, password = _credentials(sec, "username", "password")
    topic = sec.opt_string("topic") or DEFAULT_MQTT_TOPIC
    if "+" in topic or "#" in topic:
        raise ConfigError(sec.key("topic"), "must not contain the wildcards + or #")
    files = {key: _tls_file(sec, key, tls, config_dir) for key in ("caFile", "certFile", "keyFile")}
    if (files["certFile"] is None) != (files["keyFile"] is None):
        missing = "keyFile" if files["keyFile"] is None else "certFile"
        other = "certFile" if missing == "keyFile" else "keyFile"
        raise ConfigError(sec.key(missing), f"required when {other} is set")
    insecure = sec.boolean("insecure", False)
    if insecure and not tls:
        raise ConfigError(sec.key("insecure"), "only applies with tls: true")
    prefix = _topic(sec, "topicPrefix", sec.opt_string("topicPrefix") or DEFAULT_MQTT_TOPIC_PREFIX)
    availability = _availability_topic(sec, topic, prefix)
    unknown.extend(sec.unknown())
    return MqttConfig(
        host=host,
        port=port,
        username=username,
        password=password,
        topic=topic,
        tls=tls,
        ca_file=files["caFile"],
        cert_file=files["certFile"],
        key_file=files["keyFile"],
        insecure=insecure,
        keepalive=sec.integer("keepalive", 60, 5, 65535),
        max_pending=sec.integer("maxPending", DEFAULT_MQTT_MAX_PENDING, 1, 10_000_000),
        per_channel_topics=sec.boolean("perChannelTopics", False),
        topic_prefix=prefix,
        availability_topic=availability,
    )


def _topic(sec: _Section, key: str, value: str) -> str:
    """`value` of `key` as a topic vuegraf publishes under: '/' at either end dropped, and
    neither empty nor with a wildcard, which a broker refuses in a published topic."""
    value = value.strip("/")
    if not value or "+" in value or "#" in value:
        raise ConfigError(sec.key(key), "must be a topic without the wildcards + or #")
    return value


def _availability_topic(sec: _Section, topic: str, prefix: str) -> str:
    """`availabilityTopic`, else `<topicPrefix>/status`; never the upstream message topic,
    whose subscribers expect JSON only."""
    given = sec.opt_string("availabilityTopic")
    if given is None:
        # An upstream config may already publish its message on `vuegraf/status`: then the
        # default moves aside rather than the config being refused.
        default = f"{prefix}/{MQTT_STATUS_LEVEL}"
        return default if default != topic else f"{prefix}/{MQTT_AVAILABILITY_LEVEL}"
    given = _topic(sec, "availabilityTopic", given)
    if given == topic:
        raise ConfigError(
            sec.key("availabilityTopic"),
            f"the availability topic {given} must differ from mqtt.topic",
        )
    return given


def _tls_file(sec: _Section, key: str, tls: bool, config_dir: Path) -> Path | None:
    """A PEM file for MQTT TLS, relative to the config file; it must exist now, not at 3 a.m."""
    value = sec.opt_string(key)
    if value is None:
        return None
    if not tls:
        raise ConfigError(sec.key(key), "only applies with tls: true")
    path = config_dir / Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(sec.key(key), f"no such file: {path}")
    return path


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
    sec.reject_slips()
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
    data = _read_secret_files(_expand_env(data, "", environ), config_path.parent)
    top = _Section(data, "", _TOP_KEYS)
    top.reject_slips(_FLAT_SECTIONS)
    unknown: list[str] = top.unknown()
    influx, tags = _influx(top.get("influxDb"), unknown)
    accounts = _accounts(top.get("accounts"), unknown)
    mqtt = _mqtt(top.get("mqtt"), unknown, config_path.parent)
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
    config = parse_config(data, path)
    _warn_if_readable_by_others(path, data)
    return config


# --- secrets from the environment and from files --------------------------------------------

# `$${` first, so that an escaped reference is never read as a real one.
_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


def _expand_string(value: str, key_path: str, environ: Mapping[str, str]) -> str:
    """`${NAME}` → the variable's value, `$${` → `${`; the value itself is never echoed."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name = match.group(1)
        if name is None:
            raise ConfigError(
                key_path,
                "malformed ${...}: use ${NAME} with letters, digits and _, or $${ for a literal ${",
            )
        if name not in environ:
            raise ConfigError(key_path, f"environment variable {name} is not set")
        return environ[name]

    return _ENV_REFERENCE.sub(replace, value)


def _expand_env(data: object, path: str, environ: Mapping[str, str]) -> object:
    """A copy of the JSON value with `${...}` expanded in every string (keys stay as written)."""
    if isinstance(data, str):
        return _expand_string(data, path, environ) if "${" in data else data
    if isinstance(data, dict):
        return {k: _expand_env(v, _child(path, k), environ) for k, v in data.items()}
    if isinstance(data, list):
        return [_expand_env(v, _index(path, i), environ) for i, v in enumerate(data)]
    return data


def _secret_sections(data: object) -> list[tuple[dict[str, object], str, tuple[str, ...]]]:
    """(section, key path, secret keys) of every section that holds a password or token."""
    if not isinstance(data, dict):
        return []
    found: list[tuple[dict[str, object], str, tuple[str, ...]]] = []
    influx = data.get("influxDb")
    if isinstance(influx, dict):
        found.append((influx, "influxDb", ("token",) if influx.get("version") == 2 else ("pass",)))
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict):
        found.append((mqtt, "mqtt", ("password",)))
    accounts = data.get("accounts")
    if isinstance(accounts, list):
        for i, account in enumerate(accounts):
            if isinstance(account, dict):
                found.append((account, _index("accounts", i), ("password",)))
    return found


def _read_secret_files(data: object, config_dir: Path) -> object:
    """Replace `passwordFile` & co. by the file's content under `password` & co.

    Works on the fresh copy `_expand_env` made, so the caller's data is untouched.
    """
    for section, path, secret_keys in _secret_sections(data):
        for key in secret_keys:
            file_key = _SECRET_FILE_KEYS[key]
            if section.get(file_key) is None:
                section.pop(file_key, None)  # null means not set
                continue
            key_path = _child(path, file_key)
            if section.get(key) is not None:
                raise ConfigError(key_path, f"give either {key} or {file_key}, not both")
            name = _non_empty(section.pop(file_key), key_path)
            file = config_dir / Path(name).expanduser()
            try:
                text = file.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError:
                raise ConfigError(key_path, f"{file} is not UTF-8 text") from None
            except OSError as err:
                raise ConfigError(key_path, f"cannot read {file}: {err.strerror or err}") from None
            secret = text.rstrip("\r\n")
            if not secret:
                raise ConfigError(key_path, f"{file} is empty")
            section[key] = secret
    return data


def _holds_literal_secret(data: object) -> bool:
    """Whether the file itself holds a password or token (not only ${...} or *File keys)."""
    for section, _path, secret_keys in _secret_sections(data):
        for key in secret_keys:
            value = section.get(key)
            if isinstance(value, str) and _ENV_REFERENCE.sub("", value):
                return True
    return False


def _warn_if_readable_by_others(path: Path, data: object) -> None:
    """A config holding passwords should be private to its owner; say how to fix it."""
    if os.name != "posix" or not _holds_literal_secret(data):
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        logger.warning(
            "config file %s holds passwords but other users may read it (mode %04o); "
            "run: chmod 600 %s",
            path,
            mode,
            path,
        )
