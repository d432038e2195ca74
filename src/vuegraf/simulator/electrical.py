"""Amps and volts as the simulator serves them for `energyUnit=AmpHours` and `Voltage`.

Kept apart from the usage model: a pure function of (seed, device, leg, bucket start) on
top of the model's kWh, so a test can compute every value served from the model alone:

- a panel has two legs of about 120 V: circuits with an odd number are on leg A, even ones
  on leg B; the mains, the computed channels and single-channel devices (plugs, chargers)
  are on leg A. A leg's voltage for a bucket is 120 V +/- 3 V, hashed like the usage noise;
- a channel's amp-hours for a bucket are its kWh x 1000 / its leg's volts (so a circuit
  that feeds energy back has negative amp-hours, as its kWh are negative);
- a bucket without kWh (a gap, not yet complete, past retention) has neither.

Users report that Emporia's real AmpHours answer also carries per-leg mains channels
(`Mains_A`, `Mains_B`); the simulator does not model them (vuegraf would write them as
channels `<device>-Mains_A`, `<device>-Mains_B`, by its naming rules).
"""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime

NOMINAL_VOLTS = 120.0
VOLTS_SWING = 3.0  # a leg's voltage stays within NOMINAL_VOLTS +/- this
KWH = "KilowattHours"
AMP_HOURS = "AmpHours"
VOLTAGE = "Voltage"
UNITS = (KWH, AMP_HOURS, VOLTAGE)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PACK = struct.Struct(">4q")
_SALT_VOLTS = 201


def leg(channel_num: str) -> int:
    """0 (leg A) or 1 (leg B): even-numbered circuits are on B, everything else on A."""
    return 1 if channel_num.isdigit() and int(channel_num) % 2 == 0 else 0


def leg_volts(seed: int, device_gid: int, leg_index: int, bucket_start: datetime) -> float:
    """The voltage of one leg of a device over the bucket starting at `bucket_start`.

    Rounded to 0.01 V. The scale is not hashed: a leg has one voltage per bucket start."""
    start_ts = int((bucket_start - _EPOCH).total_seconds())
    key = _PACK.pack(seed % (1 << 63), device_gid, _SALT_VOLTS + leg_index, start_ts)
    draw = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64
    return round(NOMINAL_VOLTS + VOLTS_SWING * (2.0 * draw - 1.0), 2)


def convert(
    seed: int,
    device_gid: int,
    bucket_start: datetime,
    kwh: dict[str, float | None],
    unit: str,
) -> dict[str, float | None]:
    """The served kWh of one device's channels for one bucket, in `unit` instead."""
    if unit == KWH:
        return kwh
    result: dict[str, float | None] = {}
    for num, value in kwh.items():
        if value is None:
            result[num] = None
            continue
        volts = leg_volts(seed, device_gid, leg(num), bucket_start)
        result[num] = volts if unit == VOLTAGE else float(f"{value * 1000.0 / volts:.9g}")
    return result
