"""Which accounts a replica owns: `--shard I/N` / `VUEGRAF_SHARD`, parsed, and the hash.

The owners below are literals, worked out once from the rule the README states (the first
8 bytes of the SHA-256 of the UTF-8 name, big-endian, modulo N), not from vuegraf's code.
"""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vuegraf.config import parse_config
from vuegraf.health import HealthFile, health_file_name
from vuegraf.shard import WHOLE, Shard, ShardError, owner, parse_shard, resolve_shard
from vuegraf.sinks.factory import build_store, queue_path
from vuegraf.stats import Stats

# name -> owner among 3 replicas
OWNERS_OF_3 = {
    "Home": 0,
    "Cabin": 1,
    "home-000": 0,
    "home-001": 0,
    "home-002": 2,
    "home-003": 0,
    "Mom's house": 2,
    "Élodie": 1,
}
# How home-000 .. home-299 fall on 3 replicas.
SPREAD_300_OF_3 = {0: 103, 1: 104, 2: 93}


@dataclass(frozen=True)
class Named:
    name: str


def test_the_owner_of_a_name_is_the_stated_hash() -> None:
    assert {name: owner(name, 3) for name in OWNERS_OF_3} == OWNERS_OF_3
    assert all(owner(name, 1) == 0 for name in OWNERS_OF_3)


def test_300_accounts_spread_over_3_replicas() -> None:
    names = [Named(f"home-{i:03d}") for i in range(300)]
    spread = {i: len(Shard(i, 3).owned(names)) for i in range(3)}
    assert spread == SPREAD_300_OF_3


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_every_account_has_exactly_one_owner_whatever_the_order(count: int) -> None:
    names = [Named(f"account {i}") for i in range(500)]
    shuffled = names[:]
    random.Random(count).shuffle(shuffled)
    owned = [Shard(i, count).owned(names) for i in range(count)]
    assert sorted(a.name for part in owned for a in part) == sorted(a.name for a in names)
    for i in range(count):
        # The order of the file changes nothing but the order of the answer.
        assert {a.name for a in Shard(i, count).owned(shuffled)} == {a.name for a in owned[i]}
        assert [a.name for a in owned[i]] == [a.name for a in names if a in owned[i]]


@pytest.mark.parametrize(
    ("text", "index", "count"), [("0/3", 0, 3), (" 2 / 3 ", 2, 3), ("0/1", 0, 1), ("9/10", 9, 10)]
)
def test_good_values(text: str, index: int, count: int) -> None:
    shard = parse_shard(text)
    assert (shard.index, shard.count, shard.label) == (index, count, f"{index}/{count}")


@pytest.mark.parametrize("text", ["3/3", "x", "-1/2", "0/0", "1/", "/3", "1/3/4", "", "1.0/3"])
def test_bad_values_name_their_source(text: str) -> None:
    with pytest.raises(ShardError, match=r"^--shard: ") as flag:
        parse_shard(text)
    assert "\n" not in str(flag.value)
    with pytest.raises(ShardError, match=r"^VUEGRAF_SHARD: "):
        resolve_shard(None, {"VUEGRAF_SHARD": text if text.strip() else "?"})


def test_the_flag_wins_over_the_environment_and_unset_means_all() -> None:
    assert resolve_shard("1/4", {"VUEGRAF_SHARD": "nonsense"}) == Shard(1, 4)
    assert resolve_shard(None, {"VUEGRAF_SHARD": "2/5"}) == Shard(2, 5, "VUEGRAF_SHARD")
    assert resolve_shard(None, {"VUEGRAF_SHARD": "  "}) == WHOLE
    assert resolve_shard(None, {}) == WHOLE
    assert WHOLE.owned([Named("a"), Named("b")]) == [Named("a"), Named("b")]


def test_per_process_state_files_are_apart_only_when_sharded(tmp_path: Path) -> None:
    config = parse_config(
        {
            "accounts": [{"name": "Home", "email": "me@example.com", "password": "pw"}],
            "stateDir": "state",
        },
        tmp_path / "vuegraf.json",
    )
    store = build_store(config)
    state = tmp_path / "state"
    assert queue_path(config, store) == state / "queue-sqlite.sqlite"
    assert queue_path(config, store, parse_shard("0/1")) == state / "queue-sqlite.sqlite"
    names = {queue_path(config, store, Shard(i, 3)).name for i in range(3)}
    assert names == {f"queue-sqlite-shard-{i}-of-3.sqlite" for i in range(3)}
    assert health_file_name() == "health.json"
    assert health_file_name(Shard(2, 3)) == "health-shard-2-of-3.json"
    stats = Stats()
    stats.count_cycle(True, 0.5, datetime.now(UTC))
    HealthFile(state, stats, 3, 60, Shard(1, 3)).update(datetime.now(UTC))
    assert sorted(p.name for p in state.iterdir()) == ["health-shard-1-of-3.json"]


def test_vuegraf_health_checks_its_own_replicas_file(tmp_path: Path) -> None:
    stats = Stats()
    stats.count_cycle(True, 0.5, datetime.now(UTC))
    HealthFile(tmp_path, stats, 3, 60, Shard(1, 3)).update(datetime.now(UTC))

    def health(*args: str, shard: str | None = None) -> tuple[int, str]:
        env = {"PATH": "/usr/bin:/bin", "VUEGRAF_STATE_DIR": str(tmp_path)}
        if shard is not None:
            env["VUEGRAF_SHARD"] = shard
        out = subprocess.run(
            [sys.executable, "-m", "vuegraf.health", *args], capture_output=True, text=True,
            env=env,
        )
        return out.returncode, out.stdout.strip()

    assert health(shard="1/3") == (0, "healthy")
    assert health("--shard", "1/3", shard="0/3") == (0, "healthy")
    code, reason = health(shard="0/3")
    assert code == 1 and "health-shard-0-of-3.json: no health file yet" in reason
    assert health()[0] == 1  # health.json: the unsharded process's, absent
    code, reason = health(shard="3/3")
    assert code == 1 and reason.startswith("VUEGRAF_SHARD: ")
