"""`vuegraf coverage`: is my data complete? Which buckets each series lacks, and their fate.

For each account, series and scale collected (minutes, hours and days; seconds are left out:
Emporia keeps them 3 hours, so a report over days would only ever call them lost), over the
last N days up to the newest bucket a cycle has had time to write: the share of buckets the
store holds, and its holes (maximal runs of missing buckets), each with a verdict:

- `filling`: vuegraf fills it itself: the daemon saved it in the marks file, or it lies after
  the series' newest stored point (the next start's read back finds it; not while the
  daemon runs with a marks file: then only the marks say what it fills), and the daemon still
  asks for it (a chart minute from `limits.RETENTION` back, a channel without chart history
  from `ComputedHoles.floor`). Filled now when the daemon runs (its health file is fresh),
  else at its next start.
- `import`: a chart channel's hole behind the newest point that no mark covers, from where
  an import starts (minutes: `history_start`'s clamp, `limits.KEPT` less
  `MINUTE_RETENTION_MARGIN`): `vuegraf --historydays N` brings it (the report gives the N).
- `lost`: Emporia no longer keeps it (minutes older than `limits.KEPT`; every scale of a
  channel without chart history before `ComputedHoles.floor`), or nothing asks for it: an
  unmarked chart minute older than an import's first one, a marked one older than the
  daemon's reach, such a channel's hole that vuegraf does not know of.
A series with no point in the `days` before the window began inside it: the buckets before
its first point are no hole (the daemon follows a computed series from its first point, and
before it there was nothing to collect); its share counts from that point (`since`).
A hole that straddles one of these edges is split there.

The pure part (`judge`: one hole and what is known of its series, at an injected `now`) is
apart from the reading (`scan`: the store through `ReadsBack.stored_times`, a bounded window
at a time) so each is tested on its own. Nothing here talks to Emporia or writes anything.
"""

from __future__ import annotations

import argparse
import enum
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TextIO

from vuegraf.backfill import Holes, Tracker
from vuegraf.computed import ComputedHoles
from vuegraf.config import Config
from vuegraf.emporia.limits import KEPT, RETENTION, enabled_scales
from vuegraf.graphs import layout as graph_layout
from vuegraf.health import HEALTH_FILE
from vuegraf.history import MINUTE_RETENTION_MARGIN
from vuegraf.marks import MarksFile
from vuegraf.model import Scale
from vuegraf.naming import NO_CHART_CHANNELS
from vuegraf.schedule import bucket_start, last_complete_bucket, next_bucket
from vuegraf.sinks.base import ReadsBack

DEFAULT_DAYS = 7
# Exit status when the store cannot be read, apart from 1 (holes): no answer is not a verdict.
EXIT_NO_ANSWER = 3
# Buckets asked for per query: a day of minutes, 60 days of hours; memory stays bounded
# whatever the window and the number of series.
CHUNK_BUCKETS = 1440
SCALE_NAMES = {Scale.MINUTE: "minute", Scale.HOUR: "hour", Scale.DAY: "day"}

StoreKey = tuple[str, str]  # (station name or "", channel name), as the store tags it


class Verdict(enum.Enum):
    FILLING = "filling"
    IMPORT = "import"
    LOST = "lost"


@dataclass(frozen=True)
class SeriesFacts:
    """What decides the fate of a series' holes."""

    computed: bool  # no chart history (Balance...): only a usage request at an instant
    newest: datetime | None  # start of the newest bucket stored; None: nothing stored
    marks: Holes | None = None  # the holes the daemon saved for it (the marks file)
    # The daemon runs and saved marks: only they say what it fills, not the newest point.
    marks_only: bool = False


@dataclass(frozen=True)
class Hole:
    """Missing buckets `first`..`last` (starts, both included) with one verdict."""

    first: datetime
    last: datetime
    buckets: int
    verdict: Verdict
    why: str
    history_days: int | None = None  # import: the --historydays N that brings it


@dataclass(frozen=True)
class Edges:
    """Where a series' verdicts change at `now`: before `lost`, Emporia no longer answers;
    before `reach`, the daemon does not ask for it (a mark or not); before `imports`,
    `--historydays` does not (None: no edge, kept for years or never imported)."""

    lost: datetime | None
    reach: datetime | None
    imports: datetime | None

    @classmethod
    def of(cls, scale: Scale, computed: bool, now: datetime, zone: tzinfo) -> Edges:
        if computed:  # asked for at an instant only, from where the daemon's fill starts
            floor = ComputedHoles([scale], zone).floor(scale, now)
            return cls(floor, floor, None)
        kept = KEPT.get(scale)
        if kept is None:
            return cls(None, None, None)
        reach = Tracker(scale, zone).earliest(now) if scale in RETENTION else None
        imports = None
        if scale is Scale.MINUTE:  # `history_start`'s clamp: KEPT less its margin
            imports = first_bucket_from(scale, now - kept + MINUTE_RETENTION_MARGIN, zone)
        return cls(now - kept, reach, imports)

    def cuts(self) -> set[datetime]:
        return {t for t in (self.lost, self.reach, self.imports) if t is not None}


def first_bucket_from(scale: Scale, t: datetime, zone: tzinfo) -> datetime:
    """Start of the first bucket starting at or after `t`."""
    start = bucket_start(scale, t, zone)
    return start if start >= t else next_bucket(scale, start, zone)


def previous_bucket(scale: Scale, start: datetime, zone: tzinfo) -> datetime:
    return bucket_start(scale, start - timedelta(seconds=1), zone)


def count_buckets(scale: Scale, first: datetime, last: datetime, zone: tzinfo) -> int:
    """Buckets `first`..`last` (starts, both included); local days are 23 to 25 hours."""
    if scale is not Scale.DAY:
        return int((last - first).total_seconds()) // scale.seconds + 1
    n, t = 0, first
    while t <= last:
        n, t = n + 1, next_bucket(scale, t, zone)
    return n


def _marked(marks: Holes | None, bucket: datetime) -> bool:
    if marks is None:
        return False
    return bucket >= marks.open_from or any(s <= bucket < e for s, e in marks.closed)


def _classify(
    bucket: datetime, facts: SeriesFacts, edges: Edges, running: bool
) -> tuple[Verdict, str]:
    if edges.lost is not None and bucket < edges.lost:
        return Verdict.LOST, "Emporia no longer keeps it"
    after_newest = not facts.marks_only and (facts.newest is None or bucket > facts.newest)
    if after_newest or _marked(facts.marks, bucket):
        if edges.reach is not None and bucket < edges.reach:
            return Verdict.LOST, "too near Emporia's edge for vuegraf to ask for it"
        return Verdict.FILLING, "filling now" if running else "filled at the next start"
    if facts.computed:
        return Verdict.LOST, "unknown to vuegraf, and a channel without chart history"
    if edges.imports is not None and bucket < edges.imports:
        return (
            Verdict.LOST,
            "too near Emporia's edge for --historydays, and vuegraf does not know of it",
        )
    return Verdict.IMPORT, "vuegraf --historydays brings it"


def judge(
    scale: Scale,
    first: datetime,
    last: datetime,
    facts: SeriesFacts,
    now: datetime,
    running: bool,
    zone: tzinfo,
) -> list[Hole]:
    """The verdicts on missing buckets `first`..`last` of one series: one hole per stretch of
    one verdict, split where an edge (retention, a mark, the newest stored point) falls."""
    edges = Edges.of(scale, facts.computed, now, zone)
    cuts = edges.cuts()
    if facts.newest is not None:
        cuts.add(next_bucket(scale, facts.newest, zone))
    if facts.marks is not None:
        cuts.add(facts.marks.open_from)
        cuts.update(t for span in facts.marks.closed for t in span)
    inside = (first_bucket_from(scale, c, zone) for c in cuts)
    starts = sorted({first} | {b for b in inside if first < b <= last})
    segments: list[tuple[datetime, datetime, Verdict, str]] = []
    for i, start in enumerate(starts):
        end = previous_bucket(scale, starts[i + 1], zone) if i + 1 < len(starts) else last
        verdict, why = _classify(start, facts, edges, running)
        if segments and segments[-1][2:] == (verdict, why):
            segments[-1] = (segments[-1][0], end, verdict, why)
        else:
            segments.append((start, end, verdict, why))
    holes = []
    for start, end, verdict, why in segments:
        days = None
        if verdict is Verdict.IMPORT:
            days = math.ceil((now - start).total_seconds() / 86400)
            why = f"vuegraf --historydays {days} brings it"
        holes.append(Hole(start, end, count_buckets(scale, start, end, zone), verdict, why, days))
    return holes


# -- reading the store ----------------------------------------------------------------------


@dataclass
class Scanned:
    """One series over the window: buckets present, runs of missing ones, newest stored."""

    present: int = 0
    runs: list[list[datetime]] = field(default_factory=list)  # [first, last] starts
    newest: datetime | None = None


def _bucket_seconds(scale: Scale, stamps: Iterable[datetime], zone: tzinfo) -> set[int]:
    """Unix seconds of the starts of the buckets holding `stamps` (points' times)."""
    if scale is Scale.DAY:
        return {int(bucket_start(scale, t, zone).timestamp()) for t in stamps}
    step = scale.seconds
    return {s - s % step for s in (math.floor(t.timestamp()) for t in stamps)}


def _chunk(scale: Scale, start: datetime, last: datetime, size: int, zone: tzinfo) -> list[int]:
    """Up to `size` bucket starts from `start` to `last`, as Unix seconds."""
    if scale is not Scale.DAY:
        first = int(start.timestamp())
        end = min(first + size * scale.seconds, int(last.timestamp()) + 1)
        return list(range(first, end, scale.seconds))
    buckets: list[int] = []
    t = start
    while t <= last and len(buckets) < size:
        buckets.append(int(t.timestamp()))
        t = next_bucket(scale, t, zone)
    return buckets


def scan(
    store: ReadsBack,
    account: str,
    scale: Scale,
    known: Iterable[StoreKey],
    first: datetime,
    last: datetime,
    now: datetime,
    zone: tzinfo,
    chunk: int = CHUNK_BUCKETS,
) -> dict[StoreKey, Scanned]:
    """Each series' buckets `first`..`last` as stored, `chunk` buckets per query. `known`
    series are reported even when the store holds nothing of them; the others are the ones
    it answers with. Points after `last` (up to `now`) only move the newest stored point.
    Buckets are Unix seconds in here (a month of 50 channels' minutes is 2 million)."""
    present: dict[StoreKey, int] = {key: 0 for key in known}
    # Per series: runs of missing buckets as [first, last, position of last in the window].
    runs: dict[StoreKey, list[list[int]]] = {key: [] for key in known}
    newest: dict[StoreKey, int] = {}
    start, position = first, 0
    while start <= last:
        buckets = _chunk(scale, start, last, chunk, zone)
        after = next_bucket(scale, datetime.fromtimestamp(buckets[-1], UTC), zone)
        until = after if after <= last else max(after, now + timedelta(seconds=scale.seconds))
        answer = store.stored_times(account, scale, start, until)
        for key in answer:
            if key not in present:  # not known before: every earlier bucket was missing
                present[key] = 0
                before = int(previous_bucket(scale, start, zone).timestamp())
                runs[key] = [[int(first.timestamp()), before, position - 1]] if position else []
        for key, series_runs in runs.items():
            stored = _bucket_seconds(scale, answer.get(key, ()), zone)
            if stored:
                newest[key] = max(max(stored), newest.get(key, 0))
            for i, b in enumerate(buckets, position):
                if b in stored:
                    present[key] += 1
                elif series_runs and series_runs[-1][2] == i - 1:
                    series_runs[-1][1:] = [b, i]
                else:
                    series_runs.append([b, b, i])
        position += len(buckets)
        start = after

    def utc(seconds: int) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    return {
        key: Scanned(
            present[key],
            [[utc(f), utc(la)] for f, la, _ in runs[key]],
            utc(newest[key]) if key in newest else None,
        )
        for key in present
    }


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesReport:
    account: str
    scale: Scale
    station: str
    channel: str
    computed: bool
    buckets: int  # from the window's first bucket, or from `since`
    present: int
    holes: tuple[Hole, ...]
    # The series' first stored point, when it begins inside the window (nothing stored
    # before it): the buckets before it are not holes. None with 0 buckets: nothing stored.
    since: datetime | None = None

    @property
    def share(self) -> float | None:
        """Percent of the buckets stored; None for a series with nothing stored."""
        return 100.0 * self.present / self.buckets if self.buckets else None


@dataclass(frozen=True)
class Report:
    now: datetime
    days: int
    zone: tzinfo
    running: bool
    series: tuple[SeriesReport, ...]

    @property
    def complete(self) -> bool:
        return not any(s.holes for s in self.series)


def daemon_running(state_dir: Path, now: datetime) -> bool:
    """Whether a health file of the daemon (or of one of its shard replicas) is fresh."""
    stem, _, ext = HEALTH_FILE.partition(".")
    for path in Path(state_dir).glob(f"{stem}*.{ext}"):
        try:
            data = json.loads(path.read_text())
            age = now.timestamp() - float(data["updated"])
            if age <= float(data.get("stale_after_secs", 300)):
                return True
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return False


def window(scale: Scale, now: datetime, days: int, config: Config) -> tuple[datetime, datetime]:
    """First and last bucket of the report: from `days` ago up to the newest bucket a cycle
    has had time to write (the update interval after its lag)."""
    zone = config.zone
    first = first_bucket_from(scale, now - timedelta(days=days), zone)
    settled = now - timedelta(seconds=config.update_interval_secs)
    return first, last_complete_bucket(scale, settled, config.lag_secs, zone)


def _is_computed(name: str, entry: graph_layout.ChannelEntry | None) -> bool:
    if entry is not None and entry.num:
        return entry.num in NO_CHART_CHANNELS
    return any(name.endswith("-" + num) for num in NO_CHART_CHANNELS)


def build_report(
    config: Config,
    store: ReadsBack,
    now: datetime,
    days: int,
    layout: graph_layout.Layout | None,
    marks: Callable[[str], Mapping[Scale, Mapping[tuple[int, str], Holes]] | None],
    running: bool,
) -> Report:
    """Every account's series at every scale collected. `marks(account)`: the holes the
    daemon saved, keyed as Emporia names channels (device gid, channel number), None when
    it saved none (then what follows a series' newest point is filled too); `layout`
    (the daemon's `layout.json`) turns those keys into the store's, and lists the series
    the daemon knows, computed channels included."""
    zone = config.zone
    reports: list[SeriesReport] = []
    for account in config.accounts:
        entry = None if layout is None else graph_layout.find(layout, account.name)
        channels: dict[StoreKey, graph_layout.ChannelEntry] = {}
        by_emporia: dict[tuple[int, str], StoreKey] = {}
        for device in entry.devices if entry is not None else ():
            for channel in device.channels:
                channels[(device.station, channel.name)] = channel
                if device.id.isdigit() and channel.num:
                    by_emporia[(int(device.id), channel.num)] = (device.station, channel.name)
        marked = marks(account.name)
        saved = {} if marked is None else marked
        marks_only = running and marked is not None
        for scale in enabled_scales(config):
            first, last = window(scale, now, days, config)
            if last < first:
                continue
            scale_marks = {
                by_emporia[key]: holes
                for key, holes in saved.get(scale, {}).items()
                if key in by_emporia
            }
            scanned = scan(store, account.name, scale, channels, first, last, now, zone)
            # Series with a point before the window: a missing run at its start is a hole.
            # The others began inside it (a new device, a series vuegraf had not written).
            before = store.last_times(account.name, scale, first - timedelta(days=days), first)
            total = count_buckets(scale, first, last, zone)
            for key in sorted(scanned):
                series = scanned[key]
                runs, buckets, since = series.runs, total, None
                if key not in before and runs and runs[0][0] == first:
                    begun = next_bucket(scale, runs[0][1], zone)
                    runs = runs[1:]
                    since = begun if begun <= last else None
                    buckets = 0 if since is None else count_buckets(scale, since, last, zone)
                computed = _is_computed(key[1], channels.get(key))
                facts = SeriesFacts(computed, series.newest, scale_marks.get(key), marks_only)
                holes = tuple(
                    hole
                    for run_first, run_last in runs
                    for hole in judge(scale, run_first, run_last, facts, now, running, zone)
                )
                reports.append(
                    SeriesReport(
                        account.name, scale, key[0], key[1], computed, buckets, series.present,
                        holes, since,
                    )
                )
    return Report(now, days, zone, running, tuple(reports))


def _local(t: datetime, zone: tzinfo) -> str:
    return t.astimezone(zone).isoformat()


def to_json(report: Report) -> dict[str, Any]:
    return {
        "now": report.now.astimezone(UTC).isoformat(),
        "days": report.days,
        "timezone": str(report.zone),
        "running": report.running,
        "complete": report.complete,
        "series": [
            {
                "account": s.account,
                "scale": SCALE_NAMES[s.scale],
                "station": s.station,
                "channel": s.channel,
                "computed": s.computed,
                "buckets": s.buckets,
                "present": s.present,
                "share": s.share,
                "since": None if s.since is None else _local(s.since, report.zone),
                "holes": [
                    {
                        "first": _local(h.first, report.zone),
                        "last": _local(h.last, report.zone),
                        "buckets": h.buckets,
                        "verdict": h.verdict.value,
                        "why": h.why,
                        "history_days": h.history_days,
                    }
                    for h in s.holes
                ],
            }
            for s in report.series
        ],
    }


def _percent(share: float | None) -> str:
    """Rounded down: 100.0 % only when nothing is missing."""
    if share is None:
        return "nothing stored"
    return f"{math.floor(share * 10) / 10:5.1f} %"


def write_text(report: Report, out: TextIO) -> None:
    """One line per complete series; a hole a line under its series."""
    zone = report.zone
    state = "running" if report.running else "not running"
    fmt = "%Y-%m-%d %H:%M"
    print(
        f"Coverage of the last {report.days} days up to {report.now.astimezone(zone):{fmt}}"
        f" ({zone}); the daemon is {state}",
        file=out,
    )
    width = max((len(_name(s)) for s in report.series), default=10)
    account = None
    for s in report.series:
        if s.account != account:
            account = s.account
            print(f"{account}", file=out)
        holes = f"  {len(s.holes)} hole{'s' if len(s.holes) != 1 else ''}" if s.holes else ""
        if s.since is not None:
            holes = f"  since {s.since.astimezone(zone):{fmt}}{holes}"
        print(f"  {SCALE_NAMES[s.scale]:<6}  {_name(s):<{width}}  {_percent(s.share)}{holes}",
              file=out)
        for h in s.holes:
            span = f"{h.first.astimezone(zone):{fmt}} .. {h.last.astimezone(zone):{fmt}}"
            print(f"      {span}  {h.buckets:>5}  {h.verdict.value:<7}  {h.why}", file=out)


def _name(s: SeriesReport) -> str:
    return f"{s.station} / {s.channel}" if s.station else s.channel


# -- the command ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vuegraf coverage",
        description="Is my data complete? For each account, series and scale (minute, hour, "
        "day as collected; second data is left out: Emporia keeps it 3 hours), the share of "
        "buckets the store holds over the last N days and its holes, each with a verdict: "
        "filling (vuegraf fills it itself), import (vuegraf --historydays N brings it) or "
        "lost (Emporia no longer keeps it). Reads the store only; exit status 0 when "
        "nothing is missing, 1 when a hole is, 2 for a bad argument or config, 3 when the "
        "store cannot be read (no answer: neither complete nor holes).",
    )
    parser.add_argument("configFilename", metavar="CONFIG", help="JSON config file (vuegraf.json)")
    parser.add_argument(
        "--days", type=int, default=DEFAULT_DAYS, metavar="N",
        help=f"how many days back to look (default {DEFAULT_DAYS})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def _saved_marks(
    state_dir: Path,
) -> Callable[[str], Mapping[Scale, Mapping[tuple[int, str], Holes]] | None]:
    """An account's marks file as loaded, None when there is none."""

    def load(account: str) -> Mapping[Scale, Mapping[tuple[int, str], Holes]] | None:
        marks = MarksFile(state_dir, account)
        return None if marks.path is None or not marks.path.exists() else marks.load()

    return load


def run(
    config: Config,
    store: ReadsBack,
    now: datetime,
    days: int,
    as_json: bool,
    out: TextIO,
) -> bool:
    """Report on `config`'s store to `out`; whether it is complete."""
    state_dir = config.state_dir or config.config_path.parent
    layout = graph_layout.load(state_dir)
    report = build_report(
        config,
        store,
        now,
        days,
        layout,
        _saved_marks(state_dir),
        daemon_running(state_dir, now),
    )
    if as_json:
        json.dump(to_json(report), out, indent=1, ensure_ascii=False)
        out.write("\n")
    else:
        write_text(report, out)
    return report.complete
