"""What a store should hold, from the Emporia simulator's model and plain time arithmetic.

Nothing here comes from vuegraf: channel names follow DATA-MODEL.md for a config without
`devices[]` (the mains "1,2,3" after its device, every other circuit "<device>-<number>"),
watts are kWh x 60 000 (minute) or x 1 000 (hour, day), times are UTC minute and hour starts
and, for a day, 23:59:59 local time of that day in the scenario's zone.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from vuegraf.simulator import UsageModel

Expected = dict[tuple[str, int], float]  # (channel name, Unix seconds) -> watts

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def chart_channels(model: UsageModel) -> list[tuple[int, str, str]]:
    """(device gid, channel number, channel name) of every channel Emporia keeps charts of."""
    return [
        (gid, num, device if num == "1,2,3" else f"{device}-{num}")
        for gid, num, device, _emporia_name, has_chart in model.channels()
        if has_chart
    ]


def _buckets(first: datetime, end: datetime, step: timedelta) -> list[datetime]:
    out = []
    t = first
    while t < end:
        out.append(t)
        t += step
    return out


def minute_points(model: UsageModel, first: datetime, end: datetime) -> Expected:
    """Every non-null minute in [first, end) of every chart channel (`first` on a minute)."""
    return _fixed(model, "1MIN", 60_000.0, _buckets(first, end, MINUTE))


def hour_points(model: UsageModel, first: datetime, end: datetime) -> Expected:
    """Every non-null hour in [first, end) of every chart channel (`first` on an hour)."""
    return _fixed(model, "1H", 1_000.0, _buckets(first, end, HOUR))


def _fixed(model: UsageModel, scale: str, factor: float, starts: list[datetime]) -> Expected:
    result: Expected = {}
    for gid, num, name in chart_channels(model):
        for start in starts:
            kwh = model.kwh(gid, num, scale, start)
            if kwh is not None:
                result[(name, int(start.timestamp()))] = kwh * factor
    return result


def day_points(model: UsageModel, days: list[date]) -> Expected:
    """The day points of local `days`: Wh of the day, stamped 23:59:59 local time."""
    zone: ZoneInfo = model.tz
    result: Expected = {}
    for gid, num, name in chart_channels(model):
        for day in days:
            midnight = datetime.combine(day, time(0), zone).astimezone(UTC)
            stamp = datetime.combine(day, time(23, 59, 59), zone).astimezone(UTC)
            kwh = model.kwh(gid, num, "1D", midnight)
            if kwh is not None:
                result[(name, int(stamp.timestamp()))] = kwh * 1_000.0
    return result


def influx_points(
    client: Any, account: str, tag_value: str, since: datetime, until: datetime
) -> Expected:
    """What an InfluxDB 1.x holds for one account and scale tag in [since, until). A series
    and time stored twice would be one point in InfluxDB; this checks names and values."""
    result = client.query(
        "SELECT \"usage\" FROM \"energy_usage\" WHERE \"account_name\" = $account "
        "AND \"detailed\" = $tag AND time >= $since AND time < $until GROUP BY \"device_name\"",
        bind_params={
            "account": account,
            "tag": tag_value,
            "since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        epoch="s",
    )
    got: Expected = {}
    for (_measurement, tags), rows in result.items():
        for row in rows:
            got[(tags["device_name"], int(row["time"]))] = float(row["usage"])
    return got


def victoria_points(
    vm: Any, account: str, tag_value: str, since: datetime, until: datetime
) -> Expected:
    """What VictoriaMetrics holds (series energy_usage_usage) for one account and scale tag."""
    match = f'{{__name__="energy_usage_usage",account_name="{account}",detailed="{tag_value}"}}'
    got: Expected = {}
    for row in vm.export_now(match):
        name = row["metric"]["device_name"]
        for ms, value in zip(row["timestamps"], row["values"], strict=True):
            if since.timestamp() <= ms / 1000 < until.timestamp():
                got[(name, ms // 1000)] = float(value)
    return got


def missing_or_wrong(got: Expected, want: Expected, rel: float = 1e-9) -> list[str]:
    """Every expected point that is missing or has another value (relative to `rel`;
    VictoriaMetrics keeps about 12 significant digits of a float)."""
    problems = []
    for key, watts in sorted(want.items()):
        if key not in got:
            problems.append(f"missing {key}")
        elif abs(got[key] - watts) > rel * max(1.0, abs(watts)):
            problems.append(f"{key}: stored {got[key]!r}, simulator {watts!r}")
    return problems
