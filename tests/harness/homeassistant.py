"""A real Home Assistant for integration tests: its MQTT integration on a test broker, read back
through its REST and WebSocket APIs, and its Energy dashboard validation.

Home Assistant 2024.3.3 and every requirement of the integrations loaded here live in a venv of
their own, ``.venv-ha`` (``make venv-ha``; its pins clash with vuegraf's, e.g. paho-mqtt 1.6.1),
and it runs with ``--skip-pip``: it never installs anything at run time.

``HomeAssistant`` follows the life cycle of the servers in ``servers.py`` (free loopback port,
temp dir, log file, ``start``/``restart``/``kill``/``stop``, ``log_tail``, dies with the
parent). Its first start onboards an owner user and keeps a long-lived access token; the data
(users, token, config entries, the recorder's SQLite file) stay in the temp dir across restarts.
``use_broker(host, port)`` adds the MQTT integration with discovery on under the default prefix
``homeassistant``. Entities are best found by the ``unique_id`` a discovery config gave them
(``entity``, ``wait_for_entity``): their entity ids are derived from names.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.websocket import WebSocket
from servers import ServerStartError, _ServerProcess, in_ci, poll_until

REPO = Path(__file__).resolve().parents[2]
HASS = REPO / ".venv-ha" / "bin" / "hass"
#: The MQTT discovery prefix Home Assistant listens on unless told otherwise.
DISCOVERY_PREFIX = "homeassistant"
#: What ``energy/validate`` says of a sensor that has no long-term statistics yet: every new
#: sensor until the recorder's next 5-minute compile (see ``wait_for_statistics``).
STATISTICS_NOT_DEFINED = "statistics_not_defined"


def require_hass() -> str:
    """The path of ``.venv-ha/bin/hass``, or skip (fail under CI) when it is not installed."""
    if os.access(HASS, os.X_OK):
        return str(HASS)
    reason = f"{HASS} not found; `make venv-ha` installs Home Assistant there"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing server is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


#: Warnings every run of this set-up logs: not problems of the test.
_ALWAYS_LOGGED = (
    "Skipping pip installation of required modules",
    "Support for the running Python version",
)


class HomeAssistantError(AssertionError):
    """Home Assistant refused a request; the message carries its answer."""


@dataclass(frozen=True)
class Entity:
    """An entity registry entry (``config/entity_registry/list``)."""

    entity_id: str
    unique_id: str
    platform: str
    device_id: str | None
    name: str | None
    original_name: str | None
    disabled_by: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Device:
    """A device registry entry (``config/device_registry/list``); ``identifiers`` holds
    (domain, id) pairs, e.g. ``("mqtt", "emporia-1234")``."""

    id: str
    identifiers: frozenset[tuple[str, str]]
    name: str | None
    name_by_user: str | None
    manufacturer: str | None
    model: str | None
    sw_version: str | None
    hw_version: str | None
    via_device_id: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class EnergyIssue:
    """One issue of ``energy/validate``: its type (``entity_unexpected_state_class``, ...) and
    the entities it names, each with the value HA found (a state, unit or class) or None."""

    type: str
    entities: dict[str, Any]


@dataclass(frozen=True)
class EnergyValidation:
    """``energy/validate``: the issues of each energy source in the saved order (a grid source
    holds those of all its import and export sensors) and of each device consumption."""

    energy_sources: list[list[EnergyIssue]]
    device_consumption: list[list[EnergyIssue]]

    def issues_of(self, entity_id: str, ignore: Iterable[str] = ()) -> list[str]:
        """The types of every issue that names ``entity_id``, wherever it is used, less those
        in ``ignore`` (e.g. ``STATISTICS_NOT_DEFINED`` before the first 5-minute compile)."""
        every = [*self.energy_sources, *self.device_consumption]
        skip = set(ignore)
        return sorted(
            {
                issue.type
                for issues in every
                for issue in issues
                if entity_id in issue.entities and issue.type not in skip
            }
        )

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> EnergyValidation:
        def issues(raw: list[dict[str, Any]]) -> list[EnergyIssue]:
            return [
                EnergyIssue(i["type"], {e: v for e, v in i["affected_entities"]}) for i in raw
            ]

        return cls(
            [issues(s) for s in answer["energy_sources"]],
            [issues(d) for d in answer["device_consumption"]],
        )


class HomeAssistant(_ServerProcess):
    """``hass --skip-pip`` with a minimal configuration on a free loopback port.

    Loaded: http (127.0.0.1 only), api, websocket_api, config, recorder (SQLite in the temp dir),
    energy, and what Home Assistant always loads (frontend, onboarding, person, ...). No
    ``default_config``: nothing that scans the network. MQTT is added later, as a config entry
    (``use_broker``), as a user would in the UI.
    """

    name = "homeassistant"
    USERNAME = "vuegraf-test"
    PASSWORD = "vuegraf-test-password"

    def __init__(
        self,
        binary: str | None = None,
        *,
        startup_timeout: float = 300.0,
        stop_timeout: float = 60.0,
        time_zone: str = "UTC",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            binary or str(HASS),
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
            **kwargs,
        )
        self.time_zone = time_zone
        self.token: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_dir(self) -> Path:
        assert self.dir is not None
        return self.dir / "config"

    # -- REST --------------------------------------------------------------------------------

    def rest(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """Call the REST API as the owner; the parsed JSON answer (None when 404).

        Any other answer than 2xx or 404 raises HomeAssistantError with the body.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise HomeAssistantError(
                f"{method} {path} answered {error.code}: {error.read()[:2000]!r}"
            ) from None
        return json.loads(text) if text else None

    def states(self) -> list[dict[str, Any]]:
        """Every state (``GET /api/states``): dicts with entity_id, state, attributes, ..."""
        answer: list[dict[str, Any]] = self.rest("GET", "/api/states")
        return answer

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """The state of ``entity_id`` (``GET /api/states/<id>``), None if there is none."""
        answer: dict[str, Any] | None = self.rest("GET", f"/api/states/{entity_id}")
        return answer

    def config_entries(self, domain: str | None = None) -> list[dict[str, Any]]:
        query = f"?domain={domain}" if domain else ""
        answer: list[dict[str, Any]] = self.rest(
            "GET", f"/api/config/config_entries/entry{query}"
        )
        return answer

    # -- WebSocket ---------------------------------------------------------------------------

    def ws(self, command: str, timeout: float = 60.0, **fields: Any) -> Any:
        """Send one WebSocket command (``{"type": command, **fields}``) as the owner on a fresh
        connection; its result, or HomeAssistantError with HA's error."""
        with WebSocket(self.host, self.port, "/api/websocket", timeout=timeout) as socket:
            hello = socket.receive_json()
            assert hello["type"] == "auth_required", hello
            socket.send_json({"type": "auth", "access_token": self.token})
            auth = socket.receive_json()
            if auth["type"] != "auth_ok":
                raise HomeAssistantError(f"WebSocket authentication failed: {auth}")
            socket.send_json({"id": 1, "type": command, **fields})
            while True:
                answer = socket.receive_json()
                if answer.get("id") == 1 and answer.get("type") == "result":
                    break
        if not answer["success"]:
            raise HomeAssistantError(f"{command} failed: {answer.get('error')}")
        return answer["result"]

    def entity_registry(self) -> list[Entity]:
        return [
            Entity(
                entity_id=e["entity_id"],
                unique_id=e["unique_id"],
                platform=e["platform"],
                device_id=e["device_id"],
                name=e["name"],
                original_name=e["original_name"],
                disabled_by=e["disabled_by"],
                raw=e,
            )
            for e in self.ws("config/entity_registry/list")
        ]

    def device_registry(self) -> list[Device]:
        return [
            Device(
                id=d["id"],
                identifiers=frozenset((domain, ident) for domain, ident in d["identifiers"]),
                name=d["name"],
                name_by_user=d["name_by_user"],
                manufacturer=d["manufacturer"],
                model=d["model"],
                sw_version=d["sw_version"],
                hw_version=d["hw_version"],
                via_device_id=d["via_device_id"],
                raw=d,
            )
            for d in self.ws("config/device_registry/list")
        ]

    def entity_details(self, entity_id: str) -> dict[str, Any]:
        """The full registry entry (``config/entity_registry/get``): original_device_class,
        capabilities (the state_class is there), options, ..."""
        answer: dict[str, Any] = self.ws("config/entity_registry/get", entity_id=entity_id)
        return answer

    def entity(self, unique_id: str, platform: str = "mqtt") -> Entity | None:
        """The registry entry with this unique_id on ``platform``, None if there is none."""
        found = [
            e for e in self.entity_registry() if e.unique_id == unique_id and e.platform == platform
        ]
        return found[0] if found else None

    def device(self, identifier: tuple[str, str]) -> Device | None:
        """The device that has ``identifier`` (e.g. ``("mqtt", "vue-1234")``), None if none."""
        found = [d for d in self.device_registry() if identifier in d.identifiers]
        return found[0] if found else None

    def log_problems(self, containing: str = "") -> list[str]:
        """The WARNING and ERROR lines Home Assistant logged (every start of this instance)
        that contain ``containing``, less the two it always logs here (pip skipped, Python
        3.11 deprecated). A discovery payload HA refuses shows only here, as an ERROR naming
        its topic; a state or class it dislikes as a WARNING naming the entity."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except (OSError, RuntimeError):
            return []
        return [
            line
            for line in lines
            if (" WARNING (" in line or " ERROR (" in line)
            and containing in line
            and not any(known in line for known in _ALWAYS_LOGGED)
        ]

    # -- waits -------------------------------------------------------------------------------

    def wait_for(
        self,
        fetch: Callable[[], Any],
        predicate: Callable[[Any], bool],
        timeout: float = 60.0,
        what: str = "the condition",
    ) -> Any:
        """Poll ``fetch()`` until ``predicate`` holds on its answer, which is returned;
        AssertionError naming ``what``, the last answer and the log tail after ``timeout``."""
        return poll_until(
            fetch,
            predicate,
            timeout,
            0.2,
            lambda last: (
                f"Home Assistant: {what} did not happen within {timeout}s; last answer: "
                f"{last!r}\n--- log tail ({self.log_path}) ---\n{self.log_tail()}"
            ),
        )

    def wait_for_entity(
        self, unique_id: str, platform: str = "mqtt", timeout: float = 60.0
    ) -> Entity:
        """Wait until an entity with this unique_id is registered; its registry entry."""
        entity: Entity = self.wait_for(
            lambda: self.entity(unique_id, platform),
            lambda e: e is not None,
            timeout,
            f"an entity with unique_id {unique_id!r} appearing",
        )
        return entity

    def wait_for_entity_gone(
        self, unique_id: str, platform: str = "mqtt", timeout: float = 60.0
    ) -> None:
        """Wait until no entity has this unique_id any more."""
        self.wait_for(
            lambda: self.entity(unique_id, platform),
            lambda e: e is None,
            timeout,
            f"the entity with unique_id {unique_id!r} being removed",
        )

    def wait_for_state(
        self,
        entity_id: str,
        expected: str | Callable[[dict[str, Any] | None], bool],
        timeout: float = 60.0,
    ) -> dict[str, Any] | None:
        """Wait until the state of ``entity_id`` is ``expected`` (a state string such as
        ``"12.5"`` or ``"unavailable"``, or a predicate on the state dict, None when there is
        no state); the last state dict."""
        predicate: Callable[[dict[str, Any] | None], bool]
        if isinstance(expected, str):
            wanted = expected

            def is_wanted(state: dict[str, Any] | None) -> bool:
                return state is not None and state["state"] == wanted

            predicate = is_wanted
            what = f"{entity_id} becoming {expected!r}"
        else:
            predicate = expected
            what = f"the state of {entity_id} satisfying the condition"
        answer: dict[str, Any] | None = self.wait_for(
            lambda: self.state(entity_id), predicate, timeout, what
        )
        return answer

    # -- MQTT --------------------------------------------------------------------------------

    def use_broker(self, host: str, port: int, timeout: float = 120.0) -> dict[str, Any]:
        """Point the MQTT integration at ``host:port`` (anonymous), discovery on with the
        default prefix: any MQTT config entry is removed first (with its entities), then one
        is made through the config flow, as in the UI. Returns once the entry is loaded; its
        dict."""
        for old in self.config_entries("mqtt"):
            self.rest("DELETE", f"/api/config/config_entries/entry/{old['entry_id']}")
        form = self.rest(
            "POST", "/api/config/config_entries/flow", {"handler": "mqtt"}, timeout=timeout
        )
        if form.get("type") != "form" or form.get("step_id") != "broker":
            raise HomeAssistantError(f"the MQTT config flow did not ask for a broker: {form}")
        done = self.rest(
            "POST",
            f"/api/config/config_entries/flow/{form['flow_id']}",
            {"broker": host, "port": port},
            timeout=timeout,
        )
        if done.get("type") != "create_entry":
            raise HomeAssistantError(f"the MQTT config flow did not create an entry: {done}")
        entry_id = done["result"]["entry_id"]
        entry: dict[str, Any] = self.wait_for(
            lambda: [e for e in self.config_entries("mqtt") if e["entry_id"] == entry_id],
            lambda entries: bool(entries) and entries[0]["state"] == "loaded",
            timeout,
            f"the MQTT entry for {host}:{port} being loaded",
        )[0]
        return entry

    def wait_for_mqtt(self, timeout: float = 120.0) -> None:
        """Wait until the MQTT config entry is loaded (connected); after a ``restart()``, the
        entities show their restored, unavailable state until then."""
        self.wait_for(
            lambda: self.config_entries("mqtt"),
            lambda entries: bool(entries) and all(e["state"] == "loaded" for e in entries),
            timeout,
            "the MQTT entry being loaded",
        )

    # -- Energy dashboard --------------------------------------------------------------------

    def energy_save_prefs(
        self,
        *,
        grid_import: Iterable[str] = (),
        grid_export: Iterable[str] = (),
        solar: Iterable[str] = (),
        batteries: Iterable[tuple[str, str]] = (),
        devices: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Save the Energy dashboard's sources, replacing any before: one grid source with
        these import (``flow_from``) and export (``flow_to``) sensors, one solar source per
        ``solar`` sensor, one battery per (energy out of it, energy into it), and individual
        devices. No prices. Returns the saved preferences."""
        sources: list[dict[str, Any]] = []
        flow_from = [
            {
                "stat_energy_from": entity_id,
                "stat_cost": None,
                "entity_energy_price": None,
                "number_energy_price": None,
            }
            for entity_id in grid_import
        ]
        flow_to = [
            {
                "stat_energy_to": entity_id,
                "stat_compensation": None,
                "entity_energy_price": None,
                "number_energy_price": None,
            }
            for entity_id in grid_export
        ]
        if flow_from or flow_to:
            sources.append(
                {
                    "type": "grid",
                    "flow_from": flow_from,
                    "flow_to": flow_to,
                    "cost_adjustment_day": 0,
                }
            )
        sources += [
            {"type": "solar", "stat_energy_from": entity_id, "config_entry_solar_forecast": None}
            for entity_id in solar
        ]
        sources += [
            {"type": "battery", "stat_energy_from": out_of, "stat_energy_to": into}
            for out_of, into in batteries
        ]
        answer: dict[str, Any] = self.ws(
            "energy/save_prefs",
            energy_sources=sources,
            device_consumption=[{"stat_consumption": entity_id} for entity_id in devices],
        )
        return answer

    def energy_validate(self) -> EnergyValidation:
        """Run the Energy dashboard's validation over the saved preferences."""
        return EnergyValidation.from_answer(self.ws("energy/validate"))

    def statistics(self, entity_ids: Iterable[str], hours: float = 24.0) -> dict[str, Any]:
        """The 5-minute long-term statistics rows the recorder compiled for these entities in
        the last ``hours`` (``recorder/statistics_during_period``), by statistic id."""
        start = datetime.now(UTC) - timedelta(hours=hours)
        answer: dict[str, Any] = self.ws(
            "recorder/statistics_during_period",
            start_time=start.isoformat(),
            statistic_ids=list(entity_ids),
            period="5minute",
        )
        return answer

    def wait_for_statistics(self, entity_ids: Iterable[str], timeout: float = 420.0) -> None:
        """Wait until the recorder has compiled statistics for every one of these entities.

        Home Assistant compiles them every 5 minutes (10 s past each 5-minute mark of UTC time),
        and until then the Energy dashboard's validation reports ``statistics_not_defined`` for
        a new sensor; so this can take up to 5 minutes 10 seconds.
        """
        wanted = list(entity_ids)
        self.wait_for(
            lambda: self.statistics(wanted),
            lambda rows: all(rows.get(entity_id) for entity_id in wanted),
            timeout,
            f"statistics compiled for {wanted}",
        )

    # -- life cycle hooks --------------------------------------------------------------------

    def _prepare(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        # Warnings and errors only: the log tail in failure messages stays readable, and the
        # port-taken check below sees the http error among the last lines.
        (self.config_dir / "configuration.yaml").write_text(
            f"""\
homeassistant:
  name: vuegraf-test
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: {self.time_zone}
  currency: EUR
  country: DE
http:
  server_host: {self.host}
  server_port: {self.port}
api:
websocket_api:
config:
recorder:
  db_url: sqlite:///{self.config_dir / "home-assistant.sqlite"}
energy:
logger:
  default: warning
"""
        )

    def _command(self) -> list[str]:
        return [self.binary, "--config", str(self.config_dir), "--skip-pip", "--log-no-color"]

    def _is_ready(self) -> bool:
        if self._port_taken():
            # HA keeps running without its http server; end it so start() picks other ports.
            assert self.process is not None
            self.process.terminate()
            return False
        if self.token is None:
            # Before onboarding: the onboarding view answers without authentication.
            status, body = _get(f"{self.url}/api/onboarding")
            return status == 200 and isinstance(json.loads(body), list)
        status, body = _get(f"{self.url}/api/config", self.token)
        return status == 200 and json.loads(body).get("state") == "RUNNING"

    def _port_taken(self) -> bool:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return "address already in use" in text.split(f"--- starting {self.name}")[-1].lower()

    def _after_first_start(self) -> None:
        self.token = self._onboard()
        # Ready meant "onboarding answers"; now wait for HA to say it is running.
        deadline = time.monotonic() + self.startup_timeout
        while not self._is_ready():
            if time.monotonic() > deadline or not self.is_running():
                raise ServerStartError(
                    f"{self.name} did not reach RUNNING\n--- log tail ---\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def _onboard(self) -> str:
        """Create the owner through onboarding; a long-lived access token for it."""
        client_id = f"{self.url}/"
        status, body = _post_json(
            f"{self.url}/api/onboarding/users",
            {
                "client_id": client_id,
                "name": "vuegraf test",
                "username": self.USERNAME,
                "password": self.PASSWORD,
                "language": "en",
            },
        )
        if status != 200:
            raise ServerStartError(f"{self.name}: onboarding answered {status}: {body!r}")
        form = urllib.parse.urlencode(
            {
                "grant_type": "authorization_code",
                "code": json.loads(body)["auth_code"],
                "client_id": client_id,
            }
        ).encode()
        request = urllib.request.Request(f"{self.url}/auth/token", data=form, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            self.token = json.loads(response.read())["access_token"]  # valid for 30 minutes
        long_lived: str = self.ws(
            "auth/long_lived_access_token", client_name="vuegraf tests", lifespan=3650
        )
        return long_lived

    def _remove_dir(self) -> None:
        super()._remove_dir()
        self.token = None


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _post_json(url: str, body: Any) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()

