"""The InfluxDB v2 sink through `influxdb-client` into a real VictoriaMetrics.

VictoriaMetrics speaks the InfluxDB 2 write API (`/api/v2/write`); it ignores
org, bucket and token, and stores field `usage` as series `energy_usage_usage`.
Reading back from it (and filling holes) is in test_influx_v2_backfill.py and
tests/sinks/test_store_readback.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from vuegraf.config import parse_config
from vuegraf.model import Point, Scale
from vuegraf.sinks.base import SinkError
from vuegraf.sinks.factory import build_store
from vuegraf.sinks.influx import InfluxV2Sink

pytestmark = pytest.mark.integration

UTC = timezone.utc


def v2_config(url, tmp_path, account_name, simulator_url="http://127.0.0.1:9", **extra):
    return parse_config(
        {
            "influxDb": {
                "version": 2,
                "url": url,
                "org": "home",
                "bucket": "vuegraf",
                "token": "tok-secret",
                **extra,
            },
            "accounts": [
                {
                    "name": account_name,
                    "email": "me@example.com",
                    "password": "pw",
                    "simulatorUrl": simulator_url,
                }
            ],
            "addStationField": True,
        },
        tmp_path / "vuegraf.json",
    )


def test_v2_sink_writes_points_victoria_metrics_exports(victoria_metrics, tmp_path):
    config = v2_config(victoria_metrics.url, tmp_path, "v2-direct")
    t = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    points = [
        Point("v2-direct", "Main Panel", "Kitchen", Scale.MINUTE, t, 1500.0),
        Point("v2-direct", "Main Panel", "Kitchen", Scale.HOUR, t, 1234.5),
        Point("v2-direct", "Main Panel", "Main Panel", Scale.MINUTE, t + timedelta(minutes=1), 0.0),
    ]
    sink = build_store(config)
    assert isinstance(sink, InfluxV2Sink)
    sink.open()
    sink.write(points)
    sink.close()

    rows = victoria_metrics.export_until(
        lambda rs: len([r for r in rs if r["metric"].get("account_name") == "v2-direct"]) >= 3,
        match='{__name__="energy_usage_usage",account_name="v2-direct"}',
    )
    got = {
        (
            r["metric"]["device_name"],
            r["metric"]["detailed"],
            r["metric"]["station_name"],
            ts // 1000,
            v,
        )
        for r in rows
        for ts, v in zip(r["timestamps"], r["values"], strict=True)
    }
    epoch = int(t.timestamp())
    assert got == {
        ("Kitchen", "False", "Main Panel", epoch, 1500.0),
        ("Kitchen", "Hour", "Main Panel", epoch, 1234.5),
        ("Main Panel", "False", "Main Panel", epoch + 60, 0.0),
    }


def test_v2_unreachable_is_a_retryable_sink_error(tmp_path):
    config = v2_config("http://127.0.0.1:9", tmp_path, "nowhere", timeout=2000)
    sink = build_store(config)
    sink.open()
    with pytest.raises(SinkError) as info:
        sink.write([Point("a", "d", "c", Scale.MINUTE, datetime(2026, 1, 1, tzinfo=UTC), 1.0)])
    assert info.value.retryable
    assert "tok-secret" not in str(info.value)
    sink.close()
