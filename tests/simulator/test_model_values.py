"""The simulator serves the same numbers however they are asked for and however often.

The model keeps each device-bucket's served values and answers a single channel from them.
A digest of a sample of values (every channel of every device, every scale, DST days, a
+05:30 zone with gaps and a device installed mid-hour, a second account) was recorded from
the model before it kept any value, when one channel was worked out on a path of its own:
the values are still those, bit for bit (repr of each float, int 0 of the spare circuit
included), asked one channel at a time of one model and all at once of another.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from vuegraf.simulator import model as model_module
from vuegraf.simulator.model import Scenario, UsageModel, bucket_floor, bucket_next

# sha256 of the lines `sample_lines` gives, recorded from the model as it was before it kept
# served values (git show f351b51:src/vuegraf/simulator/model.py).
RECORDED_DIGEST = "b2835560eb922da907211189d09ac0eb369879de2d027271b070fb0cfa066110"
RECORDED_LINES = 19680

# (scale, a time in the first bucket, how many buckets): DST changes of New York (2027-03-14
# and 2027-11-07), a local midnight, the hour a device is installed in the +05:30 zone.
SPANS = [
    ("1S", datetime(2027, 3, 14, 6, 59, 57, tzinfo=UTC), 6),
    ("1MIN", datetime(2027, 3, 14, 6, 30, tzinfo=UTC), 90),
    ("1MIN", datetime(2027, 11, 7, 4, 50, tzinfo=UTC), 30),
    ("1MIN", datetime(2026, 5, 4, 18, 20, tzinfo=UTC), 20),
    ("15MIN", datetime(2027, 11, 7, 5, 0, tzinfo=UTC), 12),
    ("1H", datetime(2027, 11, 6, 20, 0, tzinfo=UTC), 30),
    ("1H", datetime(2026, 5, 4, 17, 0, tzinfo=UTC), 4),
    ("1D", datetime(2027, 3, 10, 12, tzinfo=UTC), 8),
    ("1W", datetime(2027, 3, 10, tzinfo=UTC), 2),
    ("1MON", datetime(2027, 2, 10, tzinfo=UTC), 2),
    ("1Y", datetime(2026, 6, 1, tzinfo=UTC), 1),
]


def scenarios() -> list[tuple[Scenario, int]]:
    base = Scenario.default()
    installed = datetime(2026, 5, 4, 18, 30, tzinfo=UTC)
    devices = []
    for dev in base.devices:
        if dev.device_gid == 1002:
            dev = replace(dev, installed_at=installed)
        elif dev.device_gid == 2001:
            dev = replace(dev, gap_rate=0.3)
        devices.append(dev)
    kolkata = replace(base, timezone="Asia/Kolkata", devices=tuple(devices))
    return [(base, 7), (kolkata, 11), (base.for_account(2), 5)]


def sample_lines(scenario: Scenario, seed: int) -> list[str]:
    """`gid channel scale start value` of every sampled bucket: asked one channel at a time of
    one model, checked equal (type included) to what another model serves for the device."""
    one = UsageModel(scenario, seed=seed)
    whole = UsageModel(scenario, seed=seed)
    lines = []
    for scale, first, count in SPANS:
        t = bucket_floor(scale, first, one.tz)
        for _ in range(count):
            for dev in scenario.devices:
                gid = dev.device_gid
                all_at_once = whole.device_values(gid, scale, t)
                for num, _name, _chart in one.device_channels(gid):
                    value = one.kwh(gid, num, scale, t)
                    assert value == all_at_once[num], (gid, num, scale, t)
                    assert type(value) is type(all_at_once[num]), (gid, num, scale, t)
                    lines.append(f"{gid} {num} {scale} {t.isoformat()} {value!r}")
            t = bucket_next(scale, t, one.tz)
    return lines


def test_values_are_those_of_the_model_before_it_kept_them() -> None:
    lines = [line for sc, seed in scenarios() for line in sample_lines(sc, seed)]
    assert len(lines) == RECORDED_LINES
    # The sample holds gaps, not-yet-installed buckets and the int 0 of the spare circuit.
    assert any(line.endswith(" None") for line in lines)
    assert any(line.endswith(" 0") for line in lines)
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == RECORDED_DIGEST


def test_a_kept_bucket_is_served_again_unchanged_and_callers_cannot_change_it() -> None:
    model = UsageModel(Scenario.default(), seed=3)
    t = datetime(2027, 3, 14, 7, 0, tzinfo=UTC)
    first = model.device_values(1001, "1MIN", t)
    first["1"] = -1.0  # a caller's copy: what the model keeps is not touched
    again = model.device_values(1001, "1MIN", t)
    fresh = UsageModel(Scenario.default(), seed=3).device_values(1001, "1MIN", t)
    assert again == fresh and again["1"] != -1.0
    assert model.kwh(1001, "1", "1MIN", t) == fresh["1"]


def test_kept_values_stay_bounded_and_right_when_the_oldest_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(model_module, "_VALUES_LIMIT", 5)
    model = UsageModel(Scenario.default(), seed=3)
    fresh = UsageModel(Scenario.default(), seed=3)
    t = datetime(2027, 3, 14, 7, 0, tzinfo=UTC)
    minutes = [bucket_floor("1MIN", t, model.tz).replace(minute=m) for m in range(12)]
    for _round in range(2):  # the second round finds the first minutes dropped
        for m in minutes:
            assert model.device_values(1001, "1MIN", m) == fresh.device_values(1001, "1MIN", m)
    assert len(model._values["1MIN"]) == 5
