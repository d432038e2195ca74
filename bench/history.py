"""Benchmark `--historydays N` against the bundled simulator in real time.

    python bench/history.py [--days 30 365 720] [--latency 0.1] [--sqlite DIR]

For each N a fresh simulator (default scenario, `latency_s` per request) is started here,
and the import runs in a fresh child process, so the peak RSS printed is that N's alone.
Both sides use the real clock, so they agree on "now". The child writes into a sink that
only counts points (and, with --sqlite, into an SQLite file as well) and reports requests
and points by scale, the hour/day part and the minute part separately.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from vuegraf.model import Point, Scale

HOUR_DAY = (Scale.HOUR, Scale.DAY)


class CountingSink:
    """Throwaway sink: counts points, keeps nothing."""

    name = "counting"

    def __init__(self) -> None:
        self.points = 0

    def open(self) -> None:
        return None

    def write(self, points: Sequence[Point]) -> None:
        self.points += len(points)

    def close(self) -> None:
        return None


def child(url: str, days: int, sqlite_dir: str | None) -> dict[str, object]:
    """Run one import against `url` and return its figures (this process is fresh)."""
    from vuegraf.clock import SystemClock
    from vuegraf.config import parse_config
    from vuegraf.emporia import EmporiaAccount
    from vuegraf.history import run_history
    from vuegraf.simulator import Scenario
    from vuegraf.sinks.sqlite import SqliteSink

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            {
                "timezone": Scenario.default().timezone,
                "accounts": [
                    {
                        "name": "Bench",
                        "email": "b@example.com",
                        "password": "pw",
                        "simulatorUrl": url,
                    }
                ],
            },
            Path(tmp) / "vuegraf.json",
        )
        clock = SystemClock()
        accounts = [EmporiaAccount(a, config, clock) for a in config.accounts]
        counting = CountingSink()
        sinks: list = [counting]
        if sqlite_dir is not None:
            sinks.append(
                SqliteSink(Path(sqlite_dir) / f"history-{days}.sqlite", config.tags, False)
            )
        for sink in sinks:
            sink.open()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            result = run_history(accounts, sinks, days, config, clock)
        finally:
            for sink in sinks:
                sink.close()
        channels = len(accounts[0].chart_channels())
    hour_day_s = max((result.seconds_by_scale.get(s, 0.0) for s in HOUR_DAY), default=0.0)
    return {
        "days": days,
        "channels": channels,
        "concurrency": config.history_concurrency,
        "rate": config.history_requests_per_sec,
        "ok": result.ok,
        "failed": result.failed_windows,
        "seconds": result.seconds,
        "hour_day_seconds": hour_day_s,
        "minute_seconds": result.seconds - hour_day_s,
        "requests": {s.value: result.requests[s] for s in Scale},
        "points": {s.value: result.points[s] for s in Scale},
        "sink_points": counting.points,
        "rss_before_mb": rss_before / 1024,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure(days: int, latency: float, sqlite_dir: str | None) -> dict[str, object]:
    """A fresh simulator and a fresh child process for one N."""
    from vuegraf.simulator import SimulatorServer

    with SimulatorServer(latency_s=latency) as sim:
        cmd = [sys.executable, __file__, "--child", sim.url, "--days", str(days)]
        if sqlite_dir is not None:
            cmd += ["--sqlite", sqlite_dir]
        started = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        figures["process_seconds"] = time.perf_counter() - started
        figures["served"] = sim.stats()["requests"].get("getChartUsage", {})
    if out.stderr.strip():
        print(out.stderr.strip(), file=sys.stderr)
    return figures


def report(rows: list[dict], latency: float) -> bool:
    """The table and each target, PASS or MISS; True when every target passed."""
    head = (
        f"{'N':>4} | {'h/d s':>6} {'h/d req':>7} {'h/d points':>10} | {'min s':>6} "
        f"{'min req':>7} {'min points':>10} | {'total s':>7} {'proc s':>6} | {'RSS MB':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        req, pts = r["requests"], r["points"]
        print(
            f"{r['days']:>4} | {r['hour_day_seconds']:6.1f} {req['1H'] + req['1D']:7d} "
            f"{pts['1H'] + pts['1D']:10d} | {r['minute_seconds']:6.1f} {req['1MIN']:7d} "
            f"{pts['1MIN']:10d} | {r['seconds']:7.1f} {r['process_seconds']:6.1f} | "
            f"{r['rss_mb']:6.1f}"
        )
    print()
    checks: list[tuple[str, bool]] = []
    for r in rows:
        n, ch, conc = r["days"], r["channels"], r["concurrency"]
        req = r["requests"]
        hd = req["1H"] + req["1D"]
        limit = ch * (math.ceil(n / 20) + math.ceil(n / 480))
        checks.append(
            (
                f"N={n}: hour/day requests {hd} <= {ch} x ({math.ceil(n / 20)} + "
                f"{math.ceil(n / 480)}) = {limit}",
                hd <= limit,
            )
        )
        total = sum(req.values())
        ideal = total * latency / conc
        bound = 1.5 * ideal + 5
        checks.append(
            (
                f"N={n}: wall {r['seconds']:.1f} s <= 1.5 x ({total} x {latency} / {conc}"
                f" = {ideal:.1f} s) + 5 = {bound:.1f} s",
                r["seconds"] <= bound,
            )
        )
        checks.append(
            (
                f"N={n}: no failed windows ({r['failed']}), sink got every point",
                r["ok"] and r["sink_points"] == sum(r["points"].values()),
            )
        )
        if n == 365:
            checks.append(
                (
                    f"N=365: hour/day part {r['hour_day_seconds']:.1f} s < 25 s",
                    r["hour_day_seconds"] < 25,
                )
            )
    by_n = {r["days"]: r for r in rows}
    if 30 in by_n and 720 in by_n:
        lo, hi = by_n[30]["rss_mb"], by_n[720]["rss_mb"]
        checks.append(
            (f"RSS at 720 ({hi:.1f} MB) within 15 MB of RSS at 30 ({lo:.1f} MB)", hi - lo <= 15)
        )
        checks.append((f"RSS at 720 ({hi:.1f} MB) < 100 MB", hi < 100))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    return all(ok for _, ok in checks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, nargs="+", default=[30, 365, 720])
    parser.add_argument("--latency", type=float, default=0.1, help="simulator latency (s)")
    parser.add_argument("--sqlite", metavar="DIR", help="also write an SQLite file per N here")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.days[0], args.sqlite)))
        return 0
    rows = []
    for days in args.days:
        row = measure(days, args.latency, args.sqlite)
        print(
            f"N={days}: {row['seconds']:.1f} s, simulator served {row['served']}, "
            f"RSS {row['rss_before_mb']:.1f} MB before the import, {row['rss_mb']:.1f} MB peak",
            file=sys.stderr,
        )
        rows.append(row)
    print(
        f"latency {args.latency} s, concurrency {rows[0]['concurrency']}, "
        f"rate {rows[0]['rate']:g}/s, {rows[0]['channels']} chart channels"
    )
    return 0 if report(rows, args.latency) else 1


if __name__ == "__main__":
    sys.exit(main())
