"""The upstream `vuegraf.json`, read once into validated, frozen dataclasses.

The file format is upstream's, unchanged, so an existing config keeps working;
a few optional keys are new (`simulatorUrl`, `sqlitePath`,
`useEmporiaChannelNames`, `deviceRefreshSecs`...). Any problem raises one
`ConfigError` naming the key path, so the CLI can print one line and exit 2
instead of a traceback. An unknown key that is a slip of a known one (`influxdb`,
`update_interval_secs`, `infuxDb`, `mqtt_host`) is such an error: ignoring it would
quietly send the data elsewhere. Other unknown keys are not errors (upstream ignored
them, and users keep notes in the file); they are named in one warning. A JSON `null`
means "not set", exactly like an absent key. Secrets are `repr=False` and never echoed
in messages.

Each key is declared once, on the dataclass field that holds it: `key(...)` in the
field's metadata gives its name in the file and its check, the field gives its type and
default. The parser and the sets of known keys (for the warning and the "did you mean"
hints) are derived from those declarations, so a new key is one new field.

Secrets need not sit in the file: any string may be or contain `${ENV_VAR}`
(`$${` is a literal `${`), and `password`, `token` and `pass` may be given as
`passwordFile`, `tokenFile`, `passFile` (e.g. Docker secrets) instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field
from datetime import tzinfo
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil import tz

from vuegraf.model import Scale

logger = logging.getLogger(__name__)

# Emporia asked API clients to stay under about this many requests per account per day.
DEFAULT_DAILY_BUDGET = 2000
DEFAULT_SQLITE_NAME = "vuegraf.sqlite"
DEFAULT_MQTT_TOPIC = "vuegraf/energy_usage"
DEFAULT_MQTT_TOPIC_PREFIX = "vuegraf"
DEFAULT_MQTT_MAX_PENDING = 10_000
MQTT_PORT = 1883
MQTT_TLS_PORT = 8883
#: Last level of the default availability topic, `<topicPrefix>/status`.
MQTT_STATUS_LEVEL = "status"
MQTT_AVAILABILITY_LEVEL = "availability"  # the default's level when mqtt.topic is on "status"
STATE_DIR_ENV = "VUEGRAF_STATE_DIR"
DEFAULT_STATE_DIR_NAME = "vuegraf-state"

T = TypeVar("T")


class ConfigError(Exception):
    """One bad key: str(err) == f"{key_path}: {message}", e.g. "accounts[0].password: required"."""

    def __init__(self, key_path: str, message: str) -> None:
        super().__init__(f"{key_path}: {message}")
        self.key_path = key_path
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # The default would call ConfigError(str) and fail: keep it picklable.
        return (type(self), (self.key_path, self.message))


# --- key paths ---------------------------------------------------------------------------

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


# --- how a key is declared -----------------------------------------------------------------

#: Turns a value as written (never None: null means not set) into what the field holds, or
#: raises a ConfigError naming `where`; the `_Reading` gives the other keys of the object.
Check = Callable[[object, str, "_Reading[Any]"], object]
#: A default computed when the key is not set (from other keys, the config's directory...).
Default = Callable[["_Reading[Any]"], object]


@dataclass(frozen=True)
class Key:
    """How one value is written in vuegraf.json; kept in the metadata of the field that
    holds it (see `key`), or on its own for a key that is checked but kept in no field."""

    name: str  # as written in the file
    check: Check
    # When not set: this, else the field's default, else the key is required.
    default_from: Default | None = None
    # Another field that must be set exactly when this one is (user and password).
    pair: str | None = None
    # Earlier fields whose value this one must not repeat (two scales, one tag value).
    differs_from: tuple[str, ...] = ()
    # The key that may name a file holding this secret instead (Docker secrets).
    file_key: str | None = None
    # The kinds of JSON object this key's value is (or lists), for the known-key sets.
    sections: tuple[_Spec[Any], ...] = ()
    # At the top level: how a key of this section may start when written flat (`mqtt_host`),
    # folded as in `_folded`.
    flat_prefixes: tuple[str, ...] = ()


_KEY = "vuegraf.config.key"


def key(
    name: str,
    check: Check | None = None,
    *,
    default_from: Default | None = None,
    pair: str | None = None,
    differs_from: tuple[str, ...] = (),
    file_key: str | None = None,
    sections: tuple[_Spec[Any], ...] = (),
    flat_prefixes: tuple[str, ...] = (),
) -> Mapping[str, Key]:
    """Field metadata declaring that the field is read from the key `name`; without a
    `check`, the value is the one object of `sections`."""
    if check is None:
        (spec,) = sections
        check = _object(spec)
    return {
        _KEY: Key(name, check, default_from, pair, differs_from, file_key, sections, flat_prefixes)
    }


def _key_of(f: dataclasses.Field[Any]) -> Key | None:
    declared = f.metadata.get(_KEY)
    return declared if isinstance(declared, Key) else None


@dataclass(frozen=True)
class _Spec(Generic[T]):
    """One kind of JSON object: the dataclass read from it, others whose keys it also holds
    (the tag keys sit in the influxDb object), and keys checked but kept in no field."""

    cls: type[T]
    also: tuple[type[Any], ...] = ()
    loose: tuple[Key, ...] = ()

    def keys(self) -> tuple[Key, ...]:
        fields = [f for c in (self.cls, *self.also) for f in dataclasses.fields(c)]
        declared = [k for k in map(_key_of, fields) if k is not None]
        return (*self.loose, *declared)

    @cached_property
    def known(self) -> frozenset[str]:
        """Every key an object of this kind may hold, the `...File` ones included."""
        return frozenset(n for k in self.keys() for n in (k.name, k.file_key) if n is not None)

    @cached_property
    def flat(self) -> dict[str, tuple[frozenset[str], tuple[str, ...]]]:
        """Sections whose keys may be written flat here: their keys and prefixes."""
        return {
            k.name: (frozenset().union(*(s.known for s in k.sections)), k.flat_prefixes)
            for k in self.keys()
            if k.flat_prefixes
        }


def _specs_under(spec: _Spec[Any]) -> Iterator[_Spec[Any]]:
    yield spec
    for k in spec.keys():
        for inner in k.sections:
            yield from _specs_under(inner)


@dataclass
class _Context:
    """What reading one file shares: where relative paths start, the environment, and the
    unknown keys met so far (warned about once the whole file is valid)."""

    config_dir: Path
    environ: Mapping[str, str]
    unknown: list[str] = field(default_factory=list)


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

    def typo_hint(self, key: str) -> str:
        # A missing key is often a misspelt one that is sitting right there as "unknown".
        strangers = [k for k in self.data if k not in self.known]
        close = difflib.get_close_matches(key, strangers, n=1, cutoff=0.6)
        return f" (found unknown key {json.dumps(close[0])})" if close else ""


class _Reading(Generic[T]):
    """One dataclass being read from one JSON object. A field is read on first use, so a
    key's default or check may ask for another key's value whatever the field order."""

    def __init__(
        self, cls: type[T], sec: _Section, ctx: _Context, given: Mapping[str, object]
    ) -> None:
        self.cls = cls
        self.sec = sec
        self.ctx = ctx
        self._fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        self._values: dict[str, object] = dict(given)

    def __getitem__(self, name: str) -> object:
        if name not in self._values:
            f = self._fields[name]
            self._values[name] = self.value(self._key(name), f)
        return self._values[name]

    def flag(self, name: str) -> bool:
        value = self[name]
        assert isinstance(value, bool)
        return value

    def text(self, name: str) -> str:
        value = self[name]
        assert isinstance(value, str)
        return value

    def build(self) -> T:
        for name in self._fields:
            self[name]  # read, if no other key's check or default has asked for it yet
        return self.cls(**self._values)

    def _key(self, name: str) -> Key:
        declared = _key_of(self._fields[name])
        assert declared is not None, f"{self.cls.__name__}.{name} is read from no key"
        return declared

    def value(self, key: Key, held_by: dataclasses.Field[Any] | None = None) -> object:
        """`key`'s value: checked when set, else its default; `held_by` is the field that
        keeps it (None for a loose key)."""
        where = self.sec.key(key.name)
        written = self.sec.get(key.name)
        if key.file_key is not None:
            written = self._secret_file(key, written)
        value: object
        if written is not None:
            value = key.check(written, where, self)
        elif key.default_from is not None:
            value = key.default_from(self)
        elif held_by is not None and held_by.default is not MISSING:
            value = held_by.default
        elif held_by is not None and held_by.default_factory is not MISSING:
            value = held_by.default_factory()
        else:
            raise ConfigError(where, "required" + self.sec.typo_hint(key.name))
        if key.pair is not None:
            other = self._key(key.pair)
            if (value is None) != (self[key.pair] is None):
                missing, given = (key, other) if value is None else (other, key)
                raise ConfigError(self.sec.key(missing.name), f"required when {given.name} is set")
        for earlier in key.differs_from:
            if self[earlier] == value:
                name = self._key(earlier).name
                raise ConfigError(where, f"must differ from {name} ({value!r})")
        return value

    def _secret_file(self, key: Key, written: object) -> object:
        """The secret read from the file `key.file_key` names, when it names one."""
        assert key.file_key is not None
        named = self.sec.get(key.file_key)
        if named is None:
            return written
        where = self.sec.key(key.file_key)
        if written is not None:
            raise ConfigError(where, f"give either {key.name} or {key.file_key}, not both")
        file = self.ctx.config_dir / Path(_text(named, where)).expanduser()
        try:
            text = file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError(where, f"{file} is not UTF-8 text") from None
        except OSError as err:
            raise ConfigError(where, f"cannot read {file}: {err.strerror or err}") from None
        secret = text.rstrip("\r\n")
        if not secret:
            raise ConfigError(where, f"{file} is empty")
        return secret


def _read_object(
    spec: _Spec[T],
    data: object,
    where: str,
    ctx: _Context,
    given: Mapping[str, object] | None = None,
) -> T:
    """An object of kind `spec` at `where`: slips refused, unknown keys noted, fields read;
    `given` holds the fields that come from no key."""
    sec = _Section(data, where, spec.known)
    sec.reject_slips(spec.flat)
    ctx.unknown.extend(sec.unknown())
    reading = _Reading(spec.cls, sec, ctx, given or {})
    for loose in spec.loose:
        reading.value(loose)
    return reading.build()


def _object(spec: _Spec[Any]) -> Check:
    def check(value: object, where: str, r: _Reading[Any]) -> object:
        return _read_object(spec, value, where, r.ctx)

    return check


# --- checks --------------------------------------------------------------------------------


def _text(value: object, where: str, _r: object = None) -> str:
    """Names become tag values and hosts get dialled: blank would only fail later."""
    if not isinstance(value, str):
        raise ConfigError(where, f"must be a non-empty string, not {_kind(value)}")
    if not value.strip():
        raise ConfigError(where, "must be a non-empty string")
    return value


def _flag(value: object, where: str, _r: object = None) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"must be true or false, not {_kind(value)}")
    return value


def _integer(minimum: int, maximum: int | None = None) -> Check:
    def check(value: object, where: str, _r: object = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(where, f"must be an integer, not {_kind(value)}")
        if maximum is not None and not minimum <= value <= maximum:
            raise ConfigError(where, f"must be between {minimum} and {maximum}")
        if value < minimum:
            raise ConfigError(where, f"must be >= {minimum}")
        return value

    return check


_PORT = _integer(1, 65535)


def _above(bound: float) -> Check:
    """A JSON number (integer or decimal) strictly greater than `bound`, as a float."""

    def check(value: object, where: str, _r: object = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(where, f"must be a number, not {_kind(value)}")
        if not value > bound:
            raise ConfigError(where, f"must be > {bound:g}")
        return float(value)

    return check


def _texts(value: object, where: str, _r: object = None) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"must be a non-empty list, not {_kind(value)}")
    return tuple(_text(v, _index(where, i)) for i, v in enumerate(value))


def _credential(value: object, where: str, _r: object = None) -> str | None:
    """Any string, and an empty one counts as unset: upstream required both keys for
    InfluxDB v1, so servers without auth were configured with "" and ""."""
    if not isinstance(value, str):
        raise ConfigError(where, f"must be a string, not {_kind(value)}")
    return value or None


def _path(value: object, where: str, r: _Reading[Any]) -> Path:
    """A path relative to the config file's directory (absolute ones stay as they are)."""
    return r.ctx.config_dir / Path(_text(value, where)).expanduser()


def _http_url(value: object, where: str, _r: object = None) -> str:
    """Both clients need the scheme; catching a bare host name here beats a client error."""
    url = _text(value, where)
    if not url.startswith(("http://", "https://")):
        raise ConfigError(where, "must start with http:// or https://")
    return url


def _absent(_r: object) -> None:
    """The default of an optional section whose field has none (hand-built configs name it)."""
    return None


# --- the sections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TagConfig:
    """The scale tag as the user named it; only sinks translate a `Scale` through this.

    Its keys sit in the influxDb object; distinct values, or two scales would write into
    one series."""

    name: str = field(default="detailed", metadata=key("tagName", _text))
    second: str = field(default="True", metadata=key("tagValue_second", _text))
    minute: str = field(
        default="False", metadata=key("tagValue_minute", _text, differs_from=("second",))
    )
    hour: str = field(
        default="Hour", metadata=key("tagValue_hour", _text, differs_from=("second", "minute"))
    )
    day: str = field(
        default="Day",
        metadata=key("tagValue_day", _text, differs_from=("second", "minute", "hour")),
    )
    # Amps and volts only (`ampsVolts` at its default scale): no usage is written at it.
    quarter: str = field(
        default="15Min",
        metadata=key(
            "tagValue_15min", _text, differs_from=("second", "minute", "hour", "day")
        ),
    )

    def value(self, scale: Scale) -> str:
        """The tag value written for points of `scale`."""
        return {
            Scale.SECOND: self.second,
            Scale.MINUTE: self.minute,
            Scale.QUARTER: self.quarter,
            Scale.HOUR: self.hour,
            Scale.DAY: self.day,
        }[scale]


def _influx_version(value: object, where: str, _r: object = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value not in (1, 2):
        raise ConfigError(where, "must be 1 or 2")
    return value


_VERSION = Key("version", _influx_version, default_from=lambda _r: 1)


@dataclass(frozen=True)
class InfluxV1Config:
    """`influxDb` with `version` 1 or absent."""

    host: str = field(metadata=key("host", _text))
    database: str = field(metadata=key("database", _text))
    port: int = field(default=8086, metadata=key("port", _PORT))
    user: str | None = field(default=None, metadata=key("user", _credential, pair="password"))
    password: str | None = field(
        default=None, repr=False, metadata=key("pass", _credential, file_key="passFile")
    )
    ssl_enable: bool = field(default=False, metadata=key("ssl_enable", _flag))
    ssl_verify: bool = field(default=True, metadata=key("ssl_verify", _flag))
    timeout_ms: int | None = field(default=None, metadata=key("timeout", _integer(1)))
    reset: bool = field(default=False, metadata=key("reset", _flag))


@dataclass(frozen=True)
class InfluxV2Config:
    """`influxDb` with `version` 2."""

    url: str = field(metadata=key("url", _http_url))
    org: str = field(metadata=key("org", _text))
    bucket: str = field(metadata=key("bucket", _text))
    token: str = field(repr=False, metadata=key("token", _text, file_key="tokenFile"))
    ssl_verify: bool = field(default=True, metadata=key("ssl_verify", _flag))
    timeout_ms: int | None = field(default=None, metadata=key("timeout", _integer(1)))


_V1 = _Spec(InfluxV1Config, also=(TagConfig,), loose=(_VERSION,))
# "reset" is upstream's: checked in both versions, so a v2 file keeps it without a warning.
_V2 = _Spec(
    InfluxV2Config,
    also=(TagConfig,),
    loose=(_VERSION, Key("reset", _flag, default_from=lambda _r: False)),
)


def _channels(value: object, where: str, _r: object = None) -> dict[str, str]:
    """A list maps its Nth entry to channel "N"; an object maps "N" to its value.

    Lenient where upstream was: an empty or null list entry leaves that channel
    to the default name, and object keys may be any channel id ("97", "Balance").
    """
    result: dict[str, str] = {}
    if isinstance(value, list):
        for i, name in enumerate(value):
            if name is None or name == "":
                continue
            result[str(i + 1)] = _text(name, _index(where, i))
        return result
    if isinstance(value, dict):
        for num, name in value.items():
            key_path = f"{where}[{json.dumps(num)}]"
            if not num.strip():
                raise ConfigError(key_path, "key must be a channel number such as \"1\" or \"97\"")
            result[num] = _text(name, key_path)
        return result
    raise ConfigError(where, f"must be a list or an object, not {_kind(value)}")


@dataclass(frozen=True)
class DeviceConfig:
    """An account's `devices[]` entry: channel number as text -> circuit name."""

    name: str = field(metadata=key("name", _text))
    channels: Mapping[str, str] = field(default_factory=dict, metadata=key("channels", _channels))

    def __post_init__(self) -> None:
        # A frozen dataclass still holds a mutable dict; make the mapping read-only too.
        object.__setattr__(self, "channels", MappingProxyType(dict(self.channels)))


_DEVICE = _Spec(DeviceConfig)


def _devices(value: object, where: str, r: _Reading[Any]) -> tuple[DeviceConfig, ...]:
    if not isinstance(value, list):
        raise ConfigError(where, f"must be a list, not {_kind(value)}")
    return tuple(
        _read_object(_DEVICE, item, _index(where, i), r.ctx) for i, item in enumerate(value)
    )


# Scales amps and volts may be collected at, by the name written in `ampsVolts.scale`. Each
# costs two requests a bucket (one per unit): 15MIN 192 a day, 1H 48. 1MIN (2 880 a day)
# would take the account over Emporia's budget on its own, so it is refused.
AMPS_VOLTS_SCALES = {"15MIN": Scale.QUARTER, "1H": Scale.HOUR}


def _amps_volts_scale(value: object, where: str, _r: object = None) -> Scale:
    name = _text(value, where)
    scale = AMPS_VOLTS_SCALES.get(name.upper())
    if scale is None:
        extra = (
            " (1MIN would cost 2880 requests a day, over Emporia's daily budget)"
            if name.upper() == "1MIN"
            else ""
        )
        raise ConfigError(where, f"must be one of {', '.join(AMPS_VOLTS_SCALES)}{extra}")
    return scale


@dataclass(frozen=True)
class AmpsVoltsConfig:
    """An account's `ampsVolts`: `true`, or an object with these keys. Mean current (A) and
    voltage (V) of each channel, from Emporia's AmpHours and Voltage units, written as
    fields `amps` and `volts` beside `usage`."""

    scale: Scale = field(default=Scale.QUARTER, metadata=key("scale", _amps_volts_scale))


_AMPS_VOLTS = _Spec(AmpsVoltsConfig)


def _amps_volts(value: object, where: str, r: _Reading[Any]) -> AmpsVoltsConfig | None:
    """`true` (every 15 minutes), `false` (off), or an object of `AmpsVoltsConfig` keys."""
    if isinstance(value, bool):
        if not value:
            return None
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(where, f"must be true, false or an object, not {_kind(value)}")
    return _read_object(_AMPS_VOLTS, value, where, r.ctx)


@dataclass(frozen=True)
class AccountConfig:
    """One Emporia login; `name` becomes the `account_name` tag, hence unique."""

    name: str = field(metadata=key("name", _text))
    email: str = field(metadata=key("email", _text))
    password: str = field(repr=False, metadata=key("password", _text, file_key="passwordFile"))
    devices: tuple[DeviceConfig, ...] = field(
        default=(), metadata=key("devices", _devices, sections=(_DEVICE,))
    )
    simulator_url: str | None = field(default=None, metadata=key("simulatorUrl", _http_url))
    # Amps and volts for this account; None: off (the default).
    amps_volts: AmpsVoltsConfig | None = field(
        default=None, metadata=key("ampsVolts", _amps_volts, sections=(_AMPS_VOLTS,))
    )

    def device(self, name: str) -> DeviceConfig | None:
        """The first `devices[]` entry named `name` (upstream used the first match too)."""
        for dev in self.devices:
            if dev.name == name:
                return dev
        return None


_ACCOUNT = _Spec(AccountConfig)


def _message_topic(value: object, where: str, _r: object = None) -> str:
    topic = _text(value, where)
    if "+" in topic or "#" in topic:
        raise ConfigError(where, "must not contain the wildcards + or #")
    return topic


def _topic(value: object, where: str, _r: object = None) -> str:
    """A topic vuegraf publishes under: '/' at either end dropped, and neither empty nor
    with a wildcard, which a broker refuses in a published topic."""
    topic = _text(value, where).strip("/")
    if not topic or "+" in topic or "#" in topic:
        raise ConfigError(where, "must be a topic without the wildcards + or #")
    return topic


def _availability_topic(value: object, where: str, r: _Reading[Any]) -> str:
    """Never the upstream message topic, whose subscribers expect JSON only."""
    topic = _topic(value, where)
    if topic == r.text("topic"):
        raise ConfigError(where, f"the availability topic {topic} must differ from mqtt.topic")
    return topic


def _default_availability_topic(r: _Reading[Any]) -> str:
    """`<topicPrefix>/status`; an upstream config may already publish its message on
    `vuegraf/status`: then the default moves aside rather than the config being refused."""
    prefix = r.text("topic_prefix")
    default = f"{prefix}/{MQTT_STATUS_LEVEL}"
    return default if default != r.text("topic") else f"{prefix}/{MQTT_AVAILABILITY_LEVEL}"


def _tls_file(value: object, where: str, r: _Reading[Any]) -> Path:
    """A PEM file for MQTT TLS, relative to the config file; it must exist now, not at 3 a.m."""
    name = _text(value, where)
    if not r.flag("tls"):
        raise ConfigError(where, "only applies with tls: true")
    path = r.ctx.config_dir / Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(where, f"no such file: {path}")
    return path


def _tls_option(value: object, where: str, r: _Reading[Any]) -> bool:
    on = _flag(value, where)
    if on and not r.flag("tls"):
        raise ConfigError(where, "only applies with tls: true")
    return on


DEFAULT_DISCOVERY_PREFIX = "homeassistant"
#: Last level of the topic Home Assistant announces itself on, under its discovery prefix.
HOME_ASSISTANT_STATUS_LEVEL = "status"


def _default_status_topic(r: _Reading[Any]) -> str:
    return f"{r.text('discovery_prefix')}/{HOME_ASSISTANT_STATUS_LEVEL}"


@dataclass(frozen=True)
class HomeAssistantConfig:
    """`mqtt.homeAssistant`: `true`, or an object with these keys. Sensors for Home
    Assistant's MQTT discovery: power, energy drawn and fed back per channel, a connectivity
    sensor per device."""

    discovery_prefix: str = field(
        default=DEFAULT_DISCOVERY_PREFIX, metadata=key("discoveryPrefix", _topic)
    )
    # Where Home Assistant says "online" when it starts: discovery is published again then.
    status_topic: str = field(
        default="", metadata=key("statusTopic", _topic, default_from=_default_status_topic)
    )

    def __post_init__(self) -> None:
        if not self.status_topic:
            default = f"{self.discovery_prefix}/{HOME_ASSISTANT_STATUS_LEVEL}"
            object.__setattr__(self, "status_topic", default)


_HOME_ASSISTANT = _Spec(HomeAssistantConfig)


def _home_assistant(value: object, where: str, r: _Reading[Any]) -> HomeAssistantConfig | None:
    """`true` (the defaults), `false` (off), or an object of `HomeAssistantConfig` keys."""
    if isinstance(value, bool):
        value = {} if value else None
        if value is None:
            return None
    if not isinstance(value, dict):
        raise ConfigError(where, f"must be true, false or an object, not {_kind(value)}")
    ha = _read_object(_HOME_ASSISTANT, value, where, r.ctx)
    if ha.status_topic == r.text("availability_topic"):
        # vuegraf's online/offline (and last will) would pass for Home Assistant's own.
        raise ConfigError(
            _child(where, "statusTopic"),
            f"{ha.status_topic} is also mqtt.availabilityTopic (by default "
            "<topicPrefix>/status): set either to another topic",
        )
    return ha


@dataclass(frozen=True)
class MqttConfig:
    """Where the newest minute point of each channel is published."""

    host: str = field(metadata=key("host", _text))
    port: int = field(
        default=MQTT_PORT,
        metadata=key(
            "port", _PORT, default_from=lambda r: MQTT_TLS_PORT if r.flag("tls") else MQTT_PORT
        ),
    )
    username: str | None = field(
        default=None, metadata=key("username", _credential, pair="password")
    )
    password: str | None = field(
        default=None, repr=False, metadata=key("password", _credential, file_key="passwordFile")
    )
    topic: str = field(default=DEFAULT_MQTT_TOPIC, metadata=key("topic", _message_topic))
    # New keys (none of them upstream's):
    tls: bool = field(default=False, metadata=key("tls", _flag))
    # None: the system's CAs.
    ca_file: Path | None = field(default=None, metadata=key("caFile", _tls_file))
    # certFile + keyFile: a client certificate.
    cert_file: Path | None = field(
        default=None, metadata=key("certFile", _tls_file, pair="key_file")
    )
    key_file: Path | None = field(default=None, metadata=key("keyFile", _tls_file))
    # Skip the server host name check (as mosquitto_pub's --insecure).
    insecure: bool = field(default=False, metadata=key("insecure", _tls_option))
    keepalive: int = field(default=60, metadata=key("keepalive", _integer(5, 65535)))  # seconds
    # Kept while the broker is away.
    max_pending: int = field(
        default=DEFAULT_MQTT_MAX_PENDING, metadata=key("maxPending", _integer(1, 10_000_000))
    )
    # Retained <prefix>/<acct>/<dev>/<ch> topics.
    per_channel_topics: bool = field(default=False, metadata=key("perChannelTopics", _flag))
    topic_prefix: str = field(
        default=DEFAULT_MQTT_TOPIC_PREFIX, metadata=key("topicPrefix", _topic)
    )
    # Retained "online"/"offline" (and the last will) for everything vuegraf publishes; ""
    # means `<topic_prefix>/status`, filled in on construction.
    availability_topic: str = field(
        default="",
        metadata=key(
            "availabilityTopic", _availability_topic, default_from=_default_availability_topic
        ),
    )
    # Home Assistant MQTT discovery; None: off.
    home_assistant: HomeAssistantConfig | None = field(
        default=None,
        metadata=key("homeAssistant", _home_assistant, sections=(_HOME_ASSISTANT,)),
    )

    def __post_init__(self) -> None:
        if not self.availability_topic:
            default = f"{self.topic_prefix}/{MQTT_STATUS_LEVEL}"
            object.__setattr__(self, "availability_topic", default)


_MQTT = _Spec(MqttConfig)


@dataclass(frozen=True)
class PrometheusConfig:
    """Optional /metrics listener; loopback unless the user opens it up."""

    port: int = field(metadata=key("port", _PORT))
    address: str = field(default="127.0.0.1", metadata=key("address", _text))


_PROMETHEUS = _Spec(PrometheusConfig)


@dataclass(frozen=True)
class WebConfig:
    """Optional graphs page (read-only): loopback unless the user opens it up, and behind
    HTTP basic auth when `username` and `password` are both set."""

    port: int = field(metadata=key("port", _PORT))
    address: str = field(default="127.0.0.1", metadata=key("address", _text))
    username: str | None = field(
        default=None, metadata=key("username", _credential, pair="password")
    )
    password: str | None = field(
        default=None, repr=False, metadata=key("password", _credential, file_key="passwordFile")
    )


_WEB = _Spec(WebConfig)


# --- the whole file ----------------------------------------------------------------------------


def _influx_spec(value: object, where: str) -> _Spec[InfluxV1Config] | _Spec[InfluxV2Config]:
    """Which kind of influxDb object `value` is, by its `version` (1 when absent)."""
    if not isinstance(value, dict):
        raise ConfigError(where, "must be a JSON object")
    version = value.get("version")
    if version is not None and _influx_version(version, _child(where, "version")) == 2:
        return _V2
    return _V1


def _influx(value: object, where: str, r: _Reading[Any]) -> InfluxV1Config | InfluxV2Config:
    spec = _influx_spec(value, where)
    if spec is _V2:
        return _read_object(_V2, value, where, r.ctx)
    return _read_object(_V1, value, where, r.ctx)


def _tags(value: object, where: str, r: _Reading[Any]) -> TagConfig:
    """The tag keys of the influxDb object (read, and its unknown keys named, as `influx`)."""
    r["influx"]  # first: its errors, slips and unknown keys come before the tags'
    sec = _Section(value, where, _influx_spec(value, where).known)
    return _Reading(TagConfig, sec, r.ctx, {}).build()


def _accounts(value: object, where: str, r: _Reading[Any]) -> tuple[AccountConfig, ...]:
    if not isinstance(value, list):
        raise ConfigError(where, f"must be a non-empty list, not {_kind(value)}")
    if not value:
        raise ConfigError(where, "must be a non-empty list")
    accounts: list[AccountConfig] = []
    for i, item in enumerate(value):
        account = _read_object(_ACCOUNT, item, _index(where, i), r.ctx)
        if any(a.name == account.name for a in accounts):
            raise ConfigError(
                _child(_index(where, i), "name"), f"duplicate account name {account.name!r}"
            )
        accounts.append(account)
    return tuple(accounts)


def _zone_name(value: object, where: str, _r: object = None) -> str | None:
    """None for the system zone: "TZ" in any case (upstream crashed on "TZ")."""
    name = _text(value, where)
    if name.upper() == "TZ":
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(where, f"unknown time zone {name!r}") from None
    return name


def _default_sqlite_path(r: _Reading[Any]) -> Path:
    return r.ctx.config_dir / DEFAULT_SQLITE_NAME


def _default_state_dir(r: _Reading[Any]) -> Path:
    """$VUEGRAF_STATE_DIR (the Docker image sets it), else beside the config."""
    value = r.ctx.environ.get(STATE_DIR_ENV)
    return r.ctx.config_dir / (Path(value).expanduser() if value else DEFAULT_STATE_DIR_NAME)


@dataclass(frozen=True)
class Config:
    """Everything `vuegraf.json` says, validated; built by `load_config`/`parse_config`."""

    accounts: tuple[AccountConfig, ...] = field(
        metadata=key("accounts", _accounts, sections=(_ACCOUNT,))
    )
    influx: InfluxV1Config | InfluxV2Config | None = field(
        metadata=key(
            "influxDb",
            _influx,
            default_from=_absent,
            sections=(_V1, _V2),
            flat_prefixes=("influxdb", "influx"),
        )
    )
    tags: TagConfig = field(metadata=key("influxDb", _tags, default_from=lambda _r: TagConfig()))
    mqtt: MqttConfig | None = field(
        metadata=key("mqtt", default_from=_absent, sections=(_MQTT,), flat_prefixes=("mqtt",))
    )
    sqlite_path: Path = field(
        metadata=key("sqlitePath", _path, default_from=_default_sqlite_path)
    )
    config_path: Path  # the file itself, given to the parser
    update_interval_secs: int = field(default=60, metadata=key("updateIntervalSecs", _integer(1)))
    lag_secs: int = field(default=5, metadata=key("lagSecs", _integer(0)))
    add_station_field: bool = field(default=False, metadata=key("addStationField", _flag))
    detailed_data_enabled: bool = field(default=False, metadata=key("detailedDataEnabled", _flag))
    detailed_data_seconds_enabled: bool = field(
        default=True, metadata=key("detailedDataSecondsEnabled", _flag)
    )
    detailed_data_hours_enabled: bool = field(
        default=True, metadata=key("detailedDataHoursEnabled", _flag)
    )
    detailed_data_days_enabled: bool = field(
        default=True, metadata=key("detailedDataDaysEnabled", _flag)
    )
    detailed_interval_secs: int = field(
        default=3600, metadata=key("detailedIntervalSecs", _integer(1))
    )
    timezone_name: str | None = field(default=None, metadata=key("timezone", _zone_name))
    max_history_days: int = field(default=720, metadata=key("maxHistoryDays", _integer(1)))
    use_emporia_channel_names: bool = field(
        default=False, metadata=key("useEmporiaChannelNames", _flag)
    )
    device_refresh_secs: int = field(default=3600, metadata=key("deviceRefreshSecs", _integer(60)))
    # New keys (none of them upstream's). stateDir is None only in hand-built configs.
    state_dir: Path | None = field(
        default=None, metadata=key("stateDir", _path, default_from=_default_state_dir)
    )
    # Accounts collected at once, each on a thread of its own while its requests block.
    account_concurrency: int = field(
        default=16, metadata=key("accountConcurrency", _integer(1, 256))
    )
    # Chart requests in flight at once, and their rate limit.
    history_concurrency: int = field(
        default=4, metadata=key("historyConcurrency", _integer(1, 32))
    )
    history_requests_per_sec: float = field(
        default=30.0, metadata=key("historyRequestsPerSecond", _above(0.0))
    )
    # 1S only for these channels.
    detailed_data_channels: tuple[str, ...] | None = field(
        default=None, metadata=key("detailedDataChannels", _texts)
    )
    # Warn above this many requests per account per day.
    daily_request_budget: int = field(
        default=DEFAULT_DAILY_BUDGET, metadata=key("dailyRequestBudget", _integer(1))
    )
    # Failed cycles in a row before the health file says unhealthy.
    health_failure_threshold: int = field(
        default=3, metadata=key("healthFailureThreshold", _integer(1))
    )
    prometheus: PrometheusConfig | None = field(
        default=None,
        metadata=key("prometheus", sections=(_PROMETHEUS,), flat_prefixes=("prometheus",)),
    )
    web: WebConfig | None = field(
        default=None, metadata=key("web", sections=(_WEB,), flat_prefixes=("web",))
    )

    def secrets(self) -> tuple[str, ...]:
        """Every password and token, for the log redaction filter (never for display)."""
        values: list[str | None] = [a.password for a in self.accounts]
        if isinstance(self.influx, InfluxV1Config):
            values.append(self.influx.password)
        elif isinstance(self.influx, InfluxV2Config):
            values.append(self.influx.token)
        if self.mqtt is not None:
            values.append(self.mqtt.password)
        if self.web is not None:
            values.append(self.web.password)
        return tuple(dict.fromkeys(v for v in values if v))

    @cached_property
    def zone(self) -> tzinfo:
        """The zone whose midnight ends a day point: the configured one, else the system's.

        Looked up on first use and kept: every tick asks, and the system's zone is a file
        read. (First use, not parsing: a hand-built config with an unknown zone name raises
        ZoneInfoNotFoundError here, as before.)"""
        if self.timezone_name is None:
            return system_zone()
        return ZoneInfo(self.timezone_name)


_TOP = _Spec(Config)
# Every key vuegraf reads in some object, the `...File` ones included.
_EVERY_KEY = frozenset[str]().union(*(spec.known for spec in _specs_under(_TOP)))


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
    # `keys` holds the `...File` keys too: `password_file` is a slip of `passwordFile`.
    matches = [k for k in keys if _is_slip(typed, _folded(k))]
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


# --- reading the file ------------------------------------------------------------------------


def parse_config(
    data: object, config_path: Path, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate an already-parsed JSON value; `config_path` anchors relative paths."""
    environ = os.environ if environ is None else environ
    config_path = Path(config_path).absolute()
    ctx = _Context(config_path.parent, environ)
    data = _expand_env(data, "", environ)
    config = _read_object(_TOP, data, "", ctx, {"config_path": config_path})
    # Only once the file is valid: on error the CLI's stderr is exactly one line.
    if ctx.unknown:
        logger.warning("ignoring unknown config keys: %s", ", ".join(ctx.unknown))
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


# --- secrets from the environment ----------------------------------------------------------

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


# --- a file that holds secrets should be private -------------------------------------------


def _secrets_written(data: object, spec: _Spec[Any]) -> Iterator[object]:
    """What `data`, an object of kind `spec`, has under a secret's key (one that may come
    from a file), nested objects included. Both influxDb kinds are looked at: a password
    under either version's key is a password in the file."""
    if not isinstance(data, dict):
        return
    for declared in spec.keys():
        value = data.get(declared.name)
        if declared.file_key is not None:
            yield value
        for inner in declared.sections:
            for item in value if isinstance(value, list) else [value]:
                yield from _secrets_written(item, inner)


def _holds_literal_secret(data: object) -> bool:
    """Whether the file itself holds a password or token (not only ${...} or *File keys)."""
    return any(
        isinstance(value, str) and _ENV_REFERENCE.sub("", value)
        for value in _secrets_written(data, _TOP)
    )


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
