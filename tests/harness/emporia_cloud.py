"""Emporia as pyemvue's production path sees it: the simulator as the API, the Cognito stand-in
(vuegraf.simulator.cognito) for AWS Cognito, and pyemvue pointed at both for the duration."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vuegraf.config import Config, parse_config
from vuegraf.simulator import SimulatorServer
from vuegraf.simulator.cognito import CognitoStandIn, patch_pyemvue

EMAIL = "me@example.com"
PASSWORD = "Cogn1to/stand-in pw"


@contextmanager
def cognito_cloud(**sim_kwargs: Any) -> Iterator[tuple[CognitoStandIn, SimulatorServer]]:
    """(Cognito stand-in with one user, simulator that checks the id token) while patched."""
    with CognitoStandIn(users={EMAIL: PASSWORD}) as cognito, SimulatorServer(
        **sim_kwargs
    ) as sim:
        sim.token_check = cognito.check_token
        sim.log_requests = True
        with patch_pyemvue(cognito, sim.url):
            yield cognito, sim


def cognito_config(tmp_path: Path, **extra: Any) -> Config:
    """A config whose account logs in through Cognito (no simulatorUrl), state in tmp_path."""
    data = {
        "accounts": [{"name": "Home", "email": EMAIL, "password": PASSWORD}],
        "stateDir": "state",
        **extra,
    }
    return parse_config(data, tmp_path / "vuegraf.json", environ={})
