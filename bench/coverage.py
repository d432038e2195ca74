"""What `vuegraf coverage` costs on a big store: time and memory of one report.

    python bench/coverage.py [--days 30] [--channels 50] [--holes 20]

Writes `--days` days of minutes and hours (and the days) of `--channels` channels of one
account into an embedded SQLite store in a temporary directory, leaves out `--holes` one-hour
runs of minutes per channel, then makes the report over the same days in this process: CPU
seconds (`time.process_time`, little changed by a busy machine), the peak of Python memory
allocated while a second report ran (`tracemalloc`) beside the size of the store, and the
buckets it checked. The report reads a day of minutes per query, so its memory must not
grow with the days or with the holes; run with other `--days` to compare.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vuegraf.config import load_config
from vuegraf.coverage import run
from vuegraf.model import Point, Scale
from vuegraf.schedule import point_time
from vuegraf.sinks.factory import build_store

NOW = datetime(2026, 11, 30, 17, 2, tzinfo=UTC)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--holes", type=int, default=20, help="one-hour holes per channel")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "vuegraf.json"
        cfg.write_text(json.dumps({
            "accounts": [{"name": "Home", "email": "me@example.com", "password": "pw"}],
            "timezone": "America/New_York", "sqlitePath": "data.db", "stateDir": "state",
        }))
        cfg.chmod(0o600)
        config = load_config(cfg)
        store = build_store(config)
        store.open()
        start = NOW.replace(minute=0) - timedelta(days=args.days)
        minutes = args.days * 1440
        step = minutes // (args.holes + 1)
        missing = {step * (h + 1) + m for h in range(args.holes) for m in range(60)}
        for c in range(args.channels):
            name = f"Panel-{c + 1}"
            points = [
                Point("Home", "Panel", name, Scale.MINUTE, start + timedelta(minutes=n), 100.0)
                for n in range(minutes) if n not in missing
            ]
            points += [
                Point("Home", "Panel", name, Scale.HOUR, start + timedelta(hours=n), 100.0)
                for n in range(args.days * 24)
            ]
            points += [
                Point("Home", "Panel", name, Scale.DAY,
                      point_time(Scale.DAY, start + timedelta(days=n), config.zone), 2400.0)
                for n in range(args.days)
            ]
            store.write(points)
        size = (Path(tmp) / "data.db").stat().st_size + sum(
            p.stat().st_size for p in Path(tmp).glob("data.db-*")
        )
        out = io.StringIO()
        cpu = time.process_time()
        run(config, store, NOW, args.days, True, out)
        cpu = time.process_time() - cpu
        # Once more under tracemalloc (which slows every allocation) for the memory.
        tracemalloc.start()
        run(config, store, NOW, args.days, True, io.StringIO())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        store.close()
    report = json.loads(out.getvalue())
    buckets = sum(s["buckets"] for s in report["series"])
    holes = sum(len(s["holes"]) for s in report["series"])
    print(f"store: {args.channels} channels x {args.days} days, {size / 1e6:.1f} MB of SQLite")
    print(f"report: {len(report['series'])} series, {buckets} buckets checked, {holes} holes")
    print(f"CPU: {cpu:.2f} s ({cpu / buckets * 1e6:.2f} us per bucket)")
    print(f"peak Python memory while reporting: {peak / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
