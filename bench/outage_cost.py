"""What filling after an Emporia outage costs in requests, per outage minute.

Emporia answers 502 to every request for an outage of N minutes (2, 10, 60 and 360 by
default, one after the other, each after the previous one is filled). From the moment it
answers again until every minute and hour of the outage is in the store, this prints the
requests vuegraf made by kind: getDeviceListUsages for a past bucket (the only source of
Balance, TotalUsage and the grid channels, and it brings every chart channel's bucket too),
getChartUsage, and the live requests of the ticks meanwhile; the fill requests per outage
minute and per minute not read live (vuegraf backs off during an outage, so it misses a few
minutes more than the outage); and how many ticks it took, back-off and filling apart. A
usage request counts as past when its instant lies before the newest complete bucket of its
scale at the time it was sent.

Runs the real daemon and real pyemvue over HTTP against the bundled simulator (default
household) on a virtual clock, with the embedded SQLite store seeded as an earlier run
left it. "Filled" is judged from the store against the simulator's model: every channel's
minute and hour that the model has a value for, from the minute before the outage to the
last one not read live.

    .venv/bin/python bench/outage_cost.py [--outages 2,10,60,360]
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vuegraf.clock import FakeClock
from vuegraf.config import Config, parse_config
from vuegraf.daemon import Daemon
from vuegraf.emporia import EmporiaAccount
from vuegraf.model import Scale, point_from_kwh
from vuegraf.naming import channel_name
from vuegraf.schedule import bucket_start, next_tick, point_time
from vuegraf.simulator import SimulatorServer, UsageModel
from vuegraf.simulator.server import RequestRecord, parse_instant
from vuegraf.sinks.base import Sink
from vuegraf.sinks.factory import build_store
from vuegraf.stats import Stats

# Just after 00:00 UTC: the outages' fills are the day's only requests beside steady
# running, so the request budget leaves them alone.
START = datetime(2026, 11, 20, 0, 5, 30, tzinfo=UTC)
SETTLE = timedelta(minutes=10)  # steady running before each outage
MAX_TICKS = 600  # a fill that takes longer is reported as not done
BUCKET = {"1MIN": 60, "1H": 3600}


@dataclass(frozen=True)
class Row:
    minutes: int  # the outage
    waited: int  # ticks after it before vuegraf sent a request again (its back-off)
    ticks: int  # ticks from then until every minute and hour of it was stored
    missed: float  # minutes not read live: those of the outage and of the back-off
    done: bool
    kinds: Counter[str]


def floor(t: datetime, seconds: int) -> datetime:
    return datetime.fromtimestamp(int(t.timestamp()) // seconds * seconds, UTC)


def is_past(record: RequestRecord) -> bool:
    """A usage request for a bucket older than the newest complete one of its scale."""
    step = BUCKET.get(record.scale)
    if step is None:  # days: a past day is asked for at its noon, the live one at its end
        return parse_instant(record.query["instant"]) < record.at - timedelta(days=1, hours=1)
    newest = floor(record.at, step) - timedelta(seconds=step)
    return floor(parse_instant(record.query["instant"]), step) < newest


def seed(config: Config, model: UsageModel, store: Sink) -> None:
    """What an earlier run left: each channel's minute, hour and day just before the ones
    the first tick reads live, so the start-up fill is one request, not 7 days."""
    account = config.accounts[0]
    zone = config.zone
    points = []
    for scale, t in (
        (Scale.MINUTE, floor(START, 60) - timedelta(minutes=2)),
        (Scale.HOUR, floor(START, 3600) - timedelta(hours=2)),
        (Scale.DAY, bucket_start(Scale.DAY, START - timedelta(days=2), zone)),
    ):
        for gid, num, _emporia_name, _has_chart in _channels(model):
            kwh = model.device_values(gid, scale.value, t)[num]
            if kwh is None:
                continue
            device = model.scenario.device(gid).name
            channel = channel_name(account, device, num)
            points.append(
                point_from_kwh(account.name, device, channel, scale, point_time(scale, t, zone),
                               kwh)
            )
    store.write(points)


def _channels(model: UsageModel) -> list[tuple[int, str, str, bool]]:
    return [(gid, num, name, chart) for gid, num, _dev, name, chart in model.channels()]


def expected(model: UsageModel, scale: str, since: datetime, until: datetime) -> int:
    """Values the model has for every channel's `scale` buckets starting in [since, until)."""
    count = 0
    step = BUCKET[scale]
    gids = sorted({gid for gid, *_rest in model.channels()})
    t = floor(since, step)
    while t < until:
        for gid in gids:
            count += sum(1 for v in model.device_values(gid, scale, t).values() if v is not None)
        t += timedelta(seconds=step)
    return count


def stored(db_path: Path, tag: str, since: datetime, until: datetime) -> int:
    with sqlite3.connect(db_path) as db:
        row = db.execute(
            "SELECT COUNT(*) FROM energy_usage WHERE detailed = ? AND time >= ? AND time < ?",
            (tag, int(since.timestamp()), int(until.timestamp())),
        ).fetchone()
    return int(row[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", default="2,10,60,360",
                        help="outage lengths in minutes, comma-separated")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # the outage's ERROR lines are expected
    lengths = [int(n) for n in args.outages.split(",")]
    work = Path(tempfile.mkdtemp(prefix="vuegraf-outage-"))
    db_path = work / "outage.sqlite"
    clock = FakeClock(START)
    stats = Stats()
    rows = []
    wall = time.monotonic()
    with SimulatorServer(seed=1, now=clock.now) as sim:
        sim.log_requests = True
        config = parse_config(
            {
                "accounts": [
                    {"name": "Home", "email": "e", "password": "p", "simulatorUrl": sim.url}
                ],
                "sqlitePath": str(db_path),
                "timezone": "America/New_York",
            },
            work / "vuegraf.json",
        )
        store = build_store(config)
        accounts = [EmporiaAccount(a, config, clock, stats) for a in config.accounts]
        daemon = Daemon(config, accounts, [store], clock, stats=stats)

        def tick() -> datetime:
            """Time moves to the next tick, which runs; returns its time."""
            now = clock.now()
            at = next_tick(now, config.update_interval_secs, config.lag_secs)
            clock.advance((at - now).total_seconds())
            daemon.run_cycle(at)
            return at

        def run_until(end: datetime) -> None:
            while next_tick(clock.now(), config.update_interval_secs, config.lag_secs) < end:
                tick()
            clock.advance((end - clock.now()).total_seconds())

        store.open()
        seed(config, sim.model, store)
        daemon.run_cycle()
        for minutes in lengths:
            run_until(clock.now() + SETTLE)
            down = floor(clock.now(), 60) + timedelta(seconds=20)
            up = down + timedelta(minutes=minutes)
            sim.add_fault_window(502, down, up)
            run_until(up)
            logged = len(sim.requests_seen())
            # The minute before the outage on, and the hours that ended in it.
            ticks = 0
            ticks_at = []
            done = False
            while ticks < MAX_TICKS and not done:
                ticks_at.append(tick())
                ticks += 1
                sent = [r.at for r in sim.requests_seen()[logged:]]
                if not sent:
                    continue  # still backing off
                # The minute before the outage to the last one not read live (the outage and
                # the back-off after it: the first tick that asks again reads the minute
                # before it live), and the hours that ended meanwhile.
                resumed = floor(min(sent), 60) - timedelta(minutes=1)
                since, until = floor(down, 60) - timedelta(minutes=1), max(floor(up, 60), resumed)
                hours = (floor(down, 3600), floor(until, 3600))
                want = (expected(sim.model, "1MIN", since, until),
                        expected(sim.model, "1H", *hours))
                got = (stored(db_path, "False", since, until), stored(db_path, "Hour", *hours))
                done = got == want
            kinds: Counter[str] = Counter()
            after = sim.requests_seen()[logged:]
            for record in after:
                if record.endpoint == "getDeviceListUsages":
                    kinds["usage past" if is_past(record) else "usage live"] += 1
                else:
                    kinds[record.endpoint] += 1
            # vuegraf's back-off after the outage: the first request it sent again.
            first = min((r.at for r in after), default=clock.now())
            waited = sum(1 for t in ticks_at if t < first)
            resumed = floor(first, 60) - timedelta(minutes=1)
            missed = (resumed - floor(down, 60)).total_seconds() / 60
            rows.append(Row(minutes, waited, ticks - waited, missed, done, kinds))
        store.close()
    wall = time.monotonic() - wall

    print(f"Emporia outages (every request answered 502), default household, {wall:.1f} s wall")
    print("requests from the end of the outage until every minute and hour of it is stored:\n")
    print(f"{'outage':>8} {'back-off':>9} {'ticks':>6} {'usage past':>11} {'getChart':>9} "
          f"{'usage live':>11} {'other':>6} {'missed':>7} {'fill/missed':>12} {'fill/outage':>12}")
    for row in rows:
        k = row.kinds
        past, chart, live = k["usage past"], k["getChartUsage"], k["usage live"]
        other = sum(k.values()) - past - chart - live
        note = "" if row.done else f"  NOT FILLED after {MAX_TICKS} ticks"
        print(f"{row.minutes:>6} m {row.waited:>9} {row.ticks:>6} {past:>11} {chart:>9} "
              f"{live:>11} {other:>6} {row.missed:>5.0f} m {(past + chart) / row.missed:>12.2f} "
              f"{(past + chart) / row.minutes:>12.2f}{note}")
    print("\nback-off: ticks after the outage before vuegraf asked Emporia again (its wait "
          "is stretched at random, 0.8..1.2); ticks: then until all was stored.\n"
          "missed: minutes not read live (the outage and the back-off). "
          "fill/missed, fill/outage: (usage past + getChart) per missed minute, per outage "
          "minute.\nusage past: one request per missed bucket of each scale, every channel "
          "at once (Balance and the grid channels have no chart history).")
    return 0 if all(row.done for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
