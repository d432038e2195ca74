"""What adding up costs: the simulator's model per scale, and vuegraf's consistency check.

    python bench/consistency.py [--seed 1]

1. `UsageModel.kwh` for every channel of the default household over 365 days of days, a year
   of hours and 7 days of minutes (what bench/history.py and bench/web.py import), per call;
   and `device_values` (every channel of a device at once) over the same buckets.
2. `ConsistencyCheck.add` fed what a 365-day import of the same household writes (its
   channels' days and hours for a year, minutes for the last 7 days), per point, with the
   buckets judged, the disagreements (0 expected) and the buckets left open at the end.

Times are CPU seconds of this process (`time.process_time`), so a busy machine changes them
little.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from vuegraf.clock import FakeClock
from vuegraf.consistency import ConsistencyCheck
from vuegraf.model import Point, Scale
from vuegraf.schedule import point_time
from vuegraf.simulator.model import Scenario, UsageModel, bucket_floor, bucket_next
from vuegraf.stats import Stats

NOW = datetime(2026, 11, 18, 15, tzinfo=UTC)
WATTS_PER_KWH = {"1MIN": 60_000.0, "1H": 1_000.0, "1D": 1_000.0}
SCALE = {"1MIN": Scale.MINUTE, "1H": Scale.HOUR, "1D": Scale.DAY}


def bucket_list(scale: str, first: datetime, last: datetime, zone: ZoneInfo) -> list[datetime]:
    out = []
    t = bucket_floor(scale, first, zone)
    while t <= last:
        out.append(t)
        t = bucket_next(scale, t, zone)
    return out


def time_model(seed: int) -> None:
    scenario = Scenario.default()
    zone = scenario.tz
    spans = {
        "1D": (NOW - timedelta(days=365), "365 days of days"),
        "1H": (NOW - timedelta(days=365), "a year of hours"),
        "1MIN": (NOW - timedelta(days=7), "7 days of minutes"),
    }
    for scale, (first, label) in spans.items():
        starts = bucket_list(scale, first, NOW - timedelta(days=1), zone)
        model = UsageModel(scenario, seed)
        channels = [(gid, num) for gid, num, *_ in model.channels()]
        began = time.process_time()
        for t in starts:
            for gid, num in channels:
                model.kwh(gid, num, scale, t)
        per_call = (time.process_time() - began) / (len(starts) * len(channels))
        model = UsageModel(scenario, seed)
        devices = sorted({gid for gid, _ in channels})
        began = time.process_time()
        for t in starts:
            for gid in devices:
                model.device_values(gid, scale, t)
        whole = time.process_time() - began
        print(
            f"model {label:18s}: kwh {per_call * 1e6:6.1f} us per call "
            f"({per_call * len(starts) * len(channels):5.2f} s for {len(channels)} channels); "
            f"device_values {whole:5.2f} s"
        )


def points_of_an_import(seed: int) -> list[Point]:
    scenario = Scenario.default()
    zone = scenario.tz
    model = UsageModel(scenario, seed)
    out: list[Point] = []
    spans = {
        "1D": NOW - timedelta(days=365),
        "1H": NOW - timedelta(days=365),
        "1MIN": NOW - timedelta(days=7),
    }
    for scale, first in spans.items():
        last = NOW - timedelta(hours=2)
        for t in bucket_list(scale, first, last, zone):
            for gid, num, device, _, chart in model.channels():
                if not chart:
                    continue
                kwh = model.kwh(gid, num, scale, t)
                if kwh is None:
                    continue
                stamp = point_time(SCALE[scale], t, zone)
                out.append(Point("Home", device, f"{device}-{num}", SCALE[scale], stamp,
                                 kwh * WATTS_PER_KWH[scale]))
    return out


def time_check(seed: int) -> None:
    points = points_of_an_import(seed)
    stats = Stats()
    check = ConsistencyCheck(Scenario.default().tz, stats, FakeClock(NOW))
    began = time.process_time()
    for i in range(0, len(points), 5000):  # batches as the import writes them
        check.add(points[i : i + 5000])
    took = time.process_time() - began
    snap = stats.snapshot()
    print(
        f"check: {len(points)} points in {took:.2f} s ({took / len(points) * 1e6:.1f} us per "
        f"point); judged {dict(snap.checked)}; disagreements {dict(snap.disagreements)}; "
        f"open at the end {check.open_buckets}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    time_model(args.seed)
    time_check(args.seed)


if __name__ == "__main__":
    main()
