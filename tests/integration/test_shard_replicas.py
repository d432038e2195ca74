"""Three replicas (`VUEGRAF_SHARD=0/3`, `1/3`, `2/3`) share one config of 300 accounts and one
VictoriaMetrics: every account's every minute is stored once, with the simulator's value,
also after one replica is SIGKILLed in the middle of a tick and stays down 5 minutes.

The replicas are tests/harness/virtual_vuegraf.py children (`vuegraf.cli.run`'s wiring: the
store behind the durable queue, marks and health in one shared state dir) following one
clock file that this test moves (tests/harness/lockstep.py): time jumps to the next tick
only when all three wait for it, so no replica is ever late and the run's outcome does not
depend on the machine. All 300 accounts are one many-account simulator's (`/account/N`).

"Exactly once" is checked on both sides:
- Emporia's: each account's requests all come from the replica that owns it (each replica
  names itself in its simulatorUrl's user info, which the simulator records), the owner
  worked out here from the README's rule, and no minute is asked for live twice. The
  other replicas' accounts were read live every minute while the victim was down (its death
  leaves a hole for its own accounts only), and only the victim's accounts needed chart
  requests (the gap backfill of its restart);
- the store's: VictoriaMetrics keeps a sample written twice as two samples, so each
  account, channel and minute must hold exactly one value, the model's (a same-value rewrite
  is counted and printed), for every chart channel and minute from the seeded one on.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness.completeness import seed_store
from harness.lockstep import Lockstep
from servers import VictoriaMetricsServer, require_binary
from vuegraf.config import parse_config
from vuegraf.model import Point, Scale
from vuegraf.simulator import Scenario, SimulatorServer
from vuegraf.simulator.model import ChannelSpec, Customer, DeviceSpec

pytestmark = pytest.mark.integration

HARNESS = Path(__file__).resolve().parents[1] / "harness" / "virtual_vuegraf.py"
ACCOUNTS = 300
REPLICAS = 3
SEED = 77
T0 = datetime(2026, 11, 24, 4, 35, 20, tzinfo=UTC)  # 23:35 in New York
# The newest minute an earlier run left: the first tick reads 04:34 live, so no replica
# needs to fill anything at its first start.
SEEDED = datetime(2026, 11, 24, 4, 33, tzinfo=UTC)
KILL_TICK = datetime(2026, 11, 24, 4, 38, 5, tzinfo=UTC)  # the tick the victim dies in
KILL_AFTER = 40  # ... at its 40th live minute request of that tick
VICTIM = 1
DOWN = timedelta(minutes=5)
END = datetime(2026, 11, 24, 4, 45, 5, tzinfo=UTC)  # the last tick
LAST_MINUTE = datetime(2026, 11, 24, 4, 44, tzinfo=UTC)  # the newest minute the last tick reads
MINUTES = 11  # 04:34 .. 04:44
# Minutes whose ticks the victim was dead for (04:39:05 .. 04:42:05 read 04:38 .. 04:41).
DEAD_MINUTES = {f"2026-11-24T04:{m}:00Z" for m in (38, 39, 40, 41)}
WATTS_PER_KWH_MINUTE = 60_000.0

# A small household, so 300 of them stay quick: a panel with two circuits and a plug.
HOUSEHOLD = Scenario(
    customer=Customer(500, "home@example.com", "Sam", "Shard"),
    devices=(
        DeviceSpec(
            device_gid=1,
            name="Panel",
            kind="vue",
            model="VUE002",
            firmware="sim",
            manufacturer_id="P1",
            channels=(
                ChannelSpec("1", "Kitchen", "evening", 180.0),
                ChannelSpec("2", "Fridge", "fridge", 95.0),
            ),
            remainder_watts=40.0,
        ),
        DeviceSpec(
            device_gid=2,
            name="Plug",
            kind="outlet",
            model="SSO001",
            firmware="sim",
            manufacturer_id="S2",
            channels=(ChannelSpec("1,2,3", None, "constant", 60.0),),
        ),
    ),
    timezone="America/New_York",
)
# Chart channels of account n (device gids shifted by (n + 1) x 100000, see
# Scenario.for_account) and the names vuegraf writes for them (no `devices` in the config).
CHANNELS = [(1, "1,2,3", "Panel"), (1, "1", "Panel-1"), (1, "2", "Panel-2"), (2, "1,2,3", "Plug")]


def name_of(number: int) -> str:
    return f"home-{number:03d}"


def owner(name: str) -> int:
    """The README's rule, written out here: SHA-256 of the name, first 8 bytes, mod N."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % REPLICAS


def write_config(tmp_path: Path, sim: SimulatorServer, vm: VictoriaMetricsServer) -> Path:
    path = tmp_path / "vuegraf.json"
    accounts = [
        {
            "name": name_of(n),
            "email": f"{name_of(n)}@example.com",
            "password": "pw",
            # Each replica says who it is (VUEGRAF_SIM_CLIENT) in its requests' user info.
            "simulatorUrl": sim.account_url(n, client="${VUEGRAF_SIM_CLIENT}"),
        }
        for n in range(ACCOUNTS)
    ]
    data = {
        "influxDb": {"version": 2, "url": vm.url, "org": "o", "bucket": "b", "token": "t"},
        "accounts": accounts,
        "timezone": "America/New_York",
        "detailedDataHoursEnabled": False,  # minutes are what this test is about
        "detailedDataDaysEnabled": False,
        "stateDir": "state",
    }
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


def expected(sim: SimulatorServer, number: int) -> dict[tuple[str, int], float]:
    """The model's watts of account `number`, per (written name, epoch) for every minute from
    the one after SEEDED to LAST_MINUTE."""
    model = sim.account(number).model
    shift = (number + 1) * 100_000
    out = {}
    t = SEEDED + timedelta(minutes=1)
    while t <= LAST_MINUTE:
        for gid, num, written in CHANNELS:
            kwh = model.kwh(gid + shift, num, "1MIN", t)
            assert kwh is not None  # no gaps in this household
            out[(written, int(t.timestamp()))] = float(kwh) * WATTS_PER_KWH_MINUTE
        t += timedelta(minutes=1)
    return out


def seed(config_path: Path, sim: SimulatorServer, vm: VictoriaMetricsServer) -> None:
    """What an earlier run left: the SEEDED minute of every chart channel, the model's value,
    so each replica's start reads on from there and fills nothing, not 7 days."""
    config = parse_config(
        json.loads(config_path.read_text()), config_path, environ={"VUEGRAF_SIM_CLIENT": "seed"}
    )
    points = []
    for n in range(ACCOUNTS):
        model = sim.account(n).model
        for gid, num, written in CHANNELS:
            kwh = model.kwh(gid + (n + 1) * 100_000, num, "1MIN", SEEDED)
            assert kwh is not None
            points.append(
                Point(name_of(n), "", written, Scale.MINUTE, SEEDED, kwh * WATTS_PER_KWH_MINUTE)
            )
    seed_store(config, points)
    vm.force_flush()


@pytest.fixture
def vm() -> Iterator[VictoriaMetricsServer]:
    """A VictoriaMetrics of this test's own: its series are exactly this run's."""
    with VictoriaMetricsServer(require_binary("victoria-metrics")) as server:
        yield server


class Replicas:
    def __init__(self, tmp_path: Path, config: Path, lockstep: Lockstep) -> None:
        self.tmp_path = tmp_path
        self.config = config
        self.lockstep = lockstep
        self.runs: Counter[int] = Counter()

    def log(self, index: int) -> Path:
        return self.tmp_path / f"r{index}.{self.runs[index]}.log"

    def start(self, index: int) -> subprocess.Popen[bytes]:
        self.runs[index] += 1
        env = {**os.environ, "VUEGRAF_SHARD": f"{index}/{REPLICAS}",
               "VUEGRAF_SIM_CLIENT": f"r{index}"}
        with self.log(index).open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, str(HARNESS), str(self.config), str(self.lockstep.clock),
                 "--follow", f"r{index}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env,
            )
        self.lockstep.adopt(f"r{index}", proc)
        return proc

    def describe(self, name: str) -> str:
        index = int(name[1:])
        lines = self.log(index).read_text(errors="replace").splitlines()[-15:]
        return f"\n--- {name} (run {self.runs[index]}):\n" + "\n".join(lines)

    def stop_all(self) -> None:
        for proc in self.lockstep.procs.values():
            proc.send_signal(signal.SIGTERM)
        for name, proc in list(self.lockstep.procs.items()):
            assert proc.wait(timeout=120) == 0, self.describe(name)

    def kill_all(self) -> None:
        for proc in self.lockstep.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_three_replicas_every_minute_once_also_after_one_is_killed(
    vm: VictoriaMetricsServer, tmp_path: Path
) -> None:
    lockstep = Lockstep(tmp_path / "clock", T0)
    owners = {n: owner(name_of(n)) for n in range(ACCOUNTS)}
    victims = [n for n, o in owners.items() if o == VICTIM]
    with SimulatorServer(HOUSEHOLD, seed=SEED, now=lockstep.now, accounts=ACCOUNTS) as sim:
        sim.log_requests = True
        config = write_config(tmp_path, sim, vm)
        seed(config, sim, vm)
        replicas = Replicas(tmp_path, config, lockstep)
        asked_in_kill_tick = 0
        killed = threading.Event()
        lock = threading.Lock()

        def kill_mid_tick(endpoint: str) -> None:
            nonlocal asked_in_kill_tick
            if endpoint != "getDeviceListUsages" or lockstep.now() < KILL_TICK:
                return
            with lock:
                asked_in_kill_tick += 1
                if asked_in_kill_tick == KILL_AFTER:
                    os.kill(lockstep.procs[f"r{VICTIM}"].pid, signal.SIGKILL)
                    killed.set()

        try:
            for index in range(REPLICAS):
                replicas.start(index)
            lockstep.run_until(KILL_TICK - timedelta(minutes=1), describe=replicas.describe)
            for n in victims:
                sim.account(n).on_request = kill_mid_tick
            lockstep.expect_exit(f"r{VICTIM}")
            lockstep.run_until(KILL_TICK + DOWN, describe=replicas.describe)
            assert killed.is_set() and f"r{VICTIM}" not in lockstep.procs
            for n in victims:
                sim.account(n).on_request = None
            replicas.start(VICTIM)
            lockstep.run_until(END, describe=replicas.describe)
            lockstep.wait_parked(describe=replicas.describe)  # the last tick is done
            replicas.stop_all()
        finally:
            replicas.kill_all()
        logs = {n: sim.account(n).requests_seen() for n in range(ACCOUNTS)}
        want = {n: expected(sim, n) for n in range(ACCOUNTS)}

    # Emporia's side: every account asked by its owner only, no live minute asked twice.
    spread = Counter(owners.values())
    assert sorted(spread) == [0, 1, 2] and sum(spread.values()) == ACCOUNTS
    wrong_client = {n: {r.client for r in log} for n, log in logs.items()
                    if {r.client for r in log} != {f"r{owners[n]}"}}
    assert not wrong_client, sorted(wrong_client.items())[:5]
    every_minute = {
        f"{SEEDED + timedelta(minutes=m):%Y-%m-%dT%H:%M}:00Z" for m in range(1, MINUTES + 1)
    }
    twice, late, filled = {}, {}, {}
    for n, log in logs.items():
        # A live minute is the newest complete one at its tick; an older one is a usage
        # request for a missed minute (each brings every channel's minute: Balance's only way).
        live: Counter[str] = Counter()
        past: set[str] = set()
        for r in log:
            if r.endpoint == "getDeviceListUsages" and r.scale == "1MIN":
                instant = r.query["instant"]
                if instant == f"{r.at.replace(second=0) - timedelta(minutes=1):%Y-%m-%dT%H:%M}:00Z":
                    live[instant] += 1
                else:
                    past.add(instant)
        repeated = [instant for instant, count in live.items() if count > 1]
        if repeated:
            twice[n] = repeated
        charts = sum(1 for r in log if r.endpoint == "getChartUsage")
        if owners[n] != VICTIM and set(live) != every_minute:
            late[n] = sorted(every_minute - set(live))
        if owners[n] == VICTIM and (set(live) & DEAD_MINUTES or not (charts or past)):
            late[n] = sorted(set(live) & DEAD_MINUTES)
        filled[n] = charts + len(past)
    assert not twice, sorted(twice.items())[:5]
    assert not late, sorted(late.items())[:5]
    assert not [n for n, charts in filled.items() if charts and owners[n] != VICTIM]
    assert asked_in_kill_tick >= KILL_AFTER

    # The store's side: one value per account, channel and minute, the model's.
    samples: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for row in vm.export_now('{__name__="energy_usage_usage",detailed="False"}'):
        account, written = row["metric"]["account_name"], row["metric"]["device_name"]
        for ms, value in zip(row["timestamps"], row["values"], strict=True):
            samples[(account, written, ms // 1000)].append(float(value))
    missing, wrong, differing = [], [], []
    rewritten = 0
    for n in range(ACCOUNTS):
        for (written, t), watts in want[n].items():
            values = samples.get((name_of(n), written, t))
            if not values:
                missing.append((name_of(n), written, t))
                continue
            rewritten += len(values) - 1
            if len(set(values)) > 1:
                differing.append((name_of(n), written, t, values))
            elif abs(values[0] - watts) > 1e-9 * max(1.0, abs(watts)):
                wrong.append((name_of(n), written, t, values[0], watts))
    expected_total = sum(len(w) for w in want.values())
    print(
        f"{ACCOUNTS} accounts on {REPLICAS} replicas {dict(sorted(spread.items()))}: "
        f"{expected_total - len(missing)} of {expected_total} minute values stored, "
        f"{rewritten} written again with the same value; replica {VICTIM} killed at its "
        f"{KILL_AFTER}th live request of the {KILL_TICK:%H:%M:%S} tick, down {DOWN}"
    )
    assert not missing, (len(missing), missing[:5])
    assert not differing, differing[:5]
    assert not wrong, wrong[:5]
    assert expected_total == ACCOUNTS * len(CHANNELS) * MINUTES

    # Per-process state files apart in the shared state dir; per-account ones shared.
    state = tmp_path / "state"
    names = {p.name for p in state.iterdir()}
    assert {f"health-shard-{i}-of-3.json" for i in range(REPLICAS)} <= names
    queues = {n for n in names if n.startswith("queue-") and n.endswith(".sqlite")}
    assert len(queues) == REPLICAS and all("-shard-" in n for n in queues), queues
    assert "health.json" not in names
    assert len([n for n in names if n.startswith("marks-")]) == ACCOUNTS
