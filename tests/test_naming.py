"""Channel and device names: the strings existing dashboards select on."""

from __future__ import annotations

import pytest

from vuegraf.config import parse_config
from vuegraf.naming import channel_name, device_name


@pytest.fixture
def account(tmp_path):
    cfg = parse_config(
        {
            "accounts": [
                {
                    "name": "Home",
                    "email": "a@b.c",
                    "password": "pw",
                    "devices": [
                        {"name": "Right Panel", "channels": ["Air Conditioner", "Furnace"]},
                        {"name": "Merged", "channels": {"97": "Heat Pump", "3": "Oven"}},
                    ],
                }
            ]
        },
        tmp_path / "vuegraf.json",
    )
    return cfg.accounts[0]


@pytest.mark.parametrize(
    ("device", "num", "emporia", "expected"),
    [
        ("Right Panel", "1,2,3", "Main", "Right Panel"),
        ("Right Panel", "1", "Circuit 1", "Air Conditioner"),
        ("Right Panel", "2", None, "Furnace"),
        ("Right Panel", "3", "Dryer", "Right Panel-3"),  # list too short: upstream default
        ("Merged", "97", None, "Heat Pump"),
        ("Merged", "3", None, "Oven"),
        ("Merged", "1", None, "Merged-1"),
        ("Other", "5", "Kitchen", "Other-5"),
        ("Right Panel", "Balance", "Balance", "Right Panel-Balance"),
        ("Right Panel", "MainsFromGrid", None, "Right Panel-MainsFromGrid"),
        ("Office Plug", "1,2,3", "Main", "Office Plug"),
    ],
)
def test_channel_names_match_upstream(account, device, num, emporia, expected):
    assert channel_name(account, device, num, emporia) == expected


def test_emporia_names_opt_in(account):
    assert channel_name(account, "Other", "5", "Kitchen", use_emporia_names=True) == "Kitchen"
    assert channel_name(account, "Other", "5", "", use_emporia_names=True) == "Other-5"
    # The config map still wins over Emporia's names.
    assert channel_name(account, "Right Panel", "1", "X", use_emporia_names=True) == (
        "Air Conditioner"
    )


def test_device_name_falls_back_to_gid():
    assert device_name("Main Panel", 1001) == "Main Panel"
    assert device_name("", 1001) == "1001"
    assert device_name(None, 42) == "42"
