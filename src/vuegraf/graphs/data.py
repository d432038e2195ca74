"""A device's graph, energy totals and live watts, read through a `GraphReader`.

These are the shapes the web page's JSON API and the SVG files are drawn from; `to_json`
turns each into what `/api/...` sends (times as Unix seconds, a missing value as null).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from vuegraf.graphs.layout import DeviceEntry
from vuegraf.graphs.read import Bucket, GraphReader, SeriesKey
from vuegraf.graphs.views import View
from vuegraf.model import Scale

HOUR = 3600
# The live watts: a channel's newest minute, if it is at most this old.
LIVE_SECS = 10 * 60


@dataclass(frozen=True)
class SeriesData:
    name: str
    num: str
    kind: str
    mean: list[float | None]
    low: list[float | None]
    high: list[float | None]


@dataclass(frozen=True)
class GraphData:
    account: str
    device: DeviceEntry
    view: View
    start: int
    end: int
    times: list[int]  # bucket starts
    series: list[SeriesData]
    scales: list[str]  # the scales that answered any bucket, finest first

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "device": self.device.id,
            "deviceName": self.device.name,
            "view": self.view.name,
            "start": self.start,
            "end": self.end,
            "step": self.view.step,
            "times": self.times,
            "scales": self.scales,
            "series": [
                {
                    "name": s.name,
                    "num": s.num,
                    "kind": s.kind,
                    # Three decimals of a watt: far below what a pixel shows, a third of the
                    # bytes of repr.
                    "mean": [None if v is None else round(v, 3) for v in s.mean],
                    "min": [None if v is None else round(v, 3) for v in s.low],
                    "max": [None if v is None else round(v, 3) for v in s.high],
                }
                for s in self.series
            ],
        }


def read_graph(
    reader: GraphReader,
    account: str,
    device: DeviceEntry,
    view: View,
    now: datetime,
    channels: list[str] | None = None,
) -> GraphData:
    """The view's buckets for the device's channels (or the ones named): each bucket from the
    finest scale that holds anything for it; None where no scale does (a gap, drawn as one).
    A bucket one hour wide takes its mean from the hour point where there is one (exact even
    when minutes are missing) and its band from the minutes."""
    start, end = view.window(now)
    entries = [c for c in device.channels if channels is None or c.name in channels]
    keys: list[SeriesKey] = [(device.station, c.name) for c in entries]
    filled: dict[SeriesKey, dict[int, Bucket]] = {k: {} for k in keys}
    used: list[str] = []
    for scale in view.scales:
        step = max(view.step, scale.seconds)
        first = start - start % step
        answer = reader.buckets(account, scale, keys, first, end, step)
        answered = False
        for key, buckets in answer.items():
            into = filled.get(key)
            if into is None:
                continue
            if step == view.step:
                for b, value in buckets.items():
                    if b < start:
                        continue
                    finer = into.setdefault(b, value)
                    if finer is value:
                        answered = True
                    elif scale is Scale.HOUR:
                        # An hour point is the hour's own mean; the minutes of a bucket that
                        # lost some to an outage are not. They still give the band.
                        into[b] = Bucket(
                            min(finer.low, value.mean), value.mean, max(finer.high, value.mean)
                        )
                        answered = True
                continue
            for b, value in buckets.items():
                # A coarse bucket (an hour point in a 10-minute view) stands for each of the
                # view's buckets inside it that nothing finer filled.
                for t in range(max(b, start), min(b + step, end), view.step):
                    if t not in into:
                        into[t] = value
                        answered = True
        if answered:
            used.append(scale.name.lower())
    times = list(range(start, end, view.step))
    series = []
    for entry, key in zip(entries, keys, strict=True):
        got = filled[key]
        series.append(
            SeriesData(
                entry.name,
                entry.num,
                entry.kind,
                [got[t].mean if t in got else None for t in times],
                [got[t].low if t in got else None for t in times],
                [got[t].high if t in got else None for t in times],
            )
        )
    return GraphData(account, device, view, start, end, times, series, used)


# -- energy totals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    name: str
    start: int
    end: int


def periods(now: datetime, zone: tzinfo) -> list[Period]:
    """Today, this month and this year in `zone`, each up to `now`."""
    local = now.astimezone(zone)
    midnight = datetime(local.year, local.month, local.day, tzinfo=zone)
    month = datetime(local.year, local.month, 1, tzinfo=zone)
    year = datetime(local.year, 1, 1, tzinfo=zone)
    end = int(now.timestamp())
    return [
        Period("today", int(midnight.timestamp()), end),
        Period("month", int(month.timestamp()), end),
        Period("year", int(year.timestamp()), end),
    ]


@dataclass(frozen=True)
class ChannelTotals:
    name: str
    num: str
    kind: str
    kwh: dict[str, float]  # period name -> kWh


def energy_wh(
    reader: GraphReader, account: str, keys: list[SeriesKey], spans: list[Period]
) -> dict[str, dict[SeriesKey, float]]:
    """Wh of each series in each span, from the stored points: each whole hour that has an
    hour point from it (its watts are the hour's Wh), everything else from minute points
    (W for a minute: W/60 Wh): the parts of hours at either end, the hours whose hour point
    is not written yet (the last one or two), and any hour whose hour point is missing.

    The hour points of all spans are read once (one bucket read over the widest span); the
    minutes only for the stretches without hour points, one sum per stretch and the series
    that share it."""
    if not spans or not keys:
        return {p.name: {k: 0.0 for k in keys} for p in spans}
    first = min(-(-p.start // HOUR) * HOUR for p in spans)
    last = max(p.end // HOUR * HOUR for p in spans)
    hours = reader.buckets(account, Scale.HOUR, keys, first, last, HOUR) if first < last else {}
    out: dict[str, dict[SeriesKey, float]] = {}
    for span in spans:
        total = {k: 0.0 for k in keys}
        hours_from = -(-span.start // HOUR) * HOUR
        hours_to = max(hours_from, span.end // HOUR * HOUR)
        stretches: dict[tuple[int, int], list[SeriesKey]] = {}
        for key in keys:
            have = hours.get(key, {})
            lo = span.start  # the start of a stretch without hour points
            for h in range(hours_from, hours_to, HOUR):
                bucket = have.get(h)
                if bucket is None:
                    continue
                total[key] += bucket.mean
                if lo < h:
                    stretches.setdefault((lo, h), []).append(key)
                lo = h + HOUR
            if lo < span.end:
                stretches.setdefault((lo, span.end), []).append(key)
        for (lo, hi), missing in stretches.items():
            for key, watts in reader.sums(account, Scale.MINUTE, missing, lo, hi).items():
                if key in total:
                    total[key] += watts / 60.0
        out[span.name] = total
    return out


def read_totals(
    reader: GraphReader, account: str, device: DeviceEntry, now: datetime, zone: tzinfo
) -> tuple[list[Period], list[ChannelTotals]]:
    keys = device.keys()
    spans = periods(now, zone)
    per_period = energy_wh(reader, account, keys, spans)
    rows = [
        ChannelTotals(
            c.name, c.num, c.kind, {p.name: per_period[p.name][key] / 1000.0 for p in spans}
        )
        for c, key in zip(device.channels, keys, strict=True)
    ]
    return spans, rows


def totals_json(
    account: str, device: DeviceEntry, spans: list[Period], rows: list[ChannelTotals]
) -> dict[str, Any]:
    return {
        "account": account,
        "device": device.id,
        "periods": {p.name: {"start": p.start, "end": p.end} for p in spans},
        "channels": [
            {"name": r.name, "num": r.num, "kind": r.kind}
            | {name: round(kwh, 4) for name, kwh in r.kwh.items()}
            for r in rows
        ],
    }


# -- live watts --------------------------------------------------------------------------------


def read_now(
    reader: GraphReader, account: str, devices: list[DeviceEntry], now: datetime
) -> list[dict[str, Any]]:
    """The newest minute of each channel of `devices`, if it is at most LIVE_SECS old."""
    t = int(now.timestamp())
    keys = [k for d in devices for k in d.keys()]
    newest = reader.latest(account, Scale.MINUTE, keys, t - LIVE_SECS, t + 60)
    out = []
    for dev in devices:
        for c in dev.channels:
            got = newest.get((dev.station, c.name))
            out.append(
                {
                    "device": dev.id,
                    "name": c.name,
                    "num": c.num,
                    "kind": c.kind,
                    "watts": None if got is None else round(got[1], 3),
                    "time": None if got is None else got[0],
                }
            )
    return out
