"""The dashboards and alerts shipped for users: influx_dashboard.json and grafana_dashboard.json.

There is no InfluxDB 2 (no Flux) and no Grafana where these tests run. So:

- the InfluxDB 2 template is checked against the rules `influx apply` enforces for the kinds it
  uses (names, required fields, durations, levels, chart properties, a check's single field and
  single pipeline), and every Flux query in it is checked against the data model
  (README.md, "What is written"): only measurement `energy_usage`, field `usage`, the tags
  `account_name`, `device_name`, `detailed`, `station_name`, the default `detailed` values, and
  no hard-coded account or circuit names;
- every InfluxQL query of the Grafana dashboard, with Grafana's macros and variables filled in
  as Grafana would, is executed against a real InfluxDB 1.x holding two days of points computed
  from the simulator's deterministic model, and must return data; the hourly and daily energy
  panels must show exactly the model's kWh.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from harness import oracle
from vuegraf.config import InfluxV1Config, TagConfig
from vuegraf.model import Point, Scale, Unit
from vuegraf.simulator import Scenario, UsageModel
from vuegraf.simulator.electrical import leg_volts
from vuegraf.sinks.influx import InfluxV1Sink

ROOT = Path(__file__).resolve().parents[2]
INFLUX_TEMPLATE = ROOT / "influx_dashboard.json"
GRAFANA = ROOT / "grafana_dashboard.json"

# The data model (README.md, "What is written").
MEASUREMENT = "energy_usage"
FIELD = "usage"
TAGS = {"account_name", "device_name", "detailed", "station_name"}
DETAILED = {"True", "False", "Hour", "Day"}
# Amps and volts (an account's ampsVolts): fields of their own, at the 15-minute tag value,
# or the hour's with {"scale": "1H"}: their panels match both.
AMPS_VOLTS = {"amps", "volts"}
QUARTER = "15Min"
AMPS_VOLTS_FLUX = f'(r.detailed == "{QUARTER}" or r.detailed == "Hour")'
AMPS_VOLTS_QL = f'"detailed" =~ /^({QUARTER}|Hour)$/'
NAME_TAGS = {"account_name", "device_name", "station_name"}  # values come from the user's data

API_VERSION = "influxdata.com/v2alpha1"
KINDS = {"Label", "Variable", "Dashboard", "CheckDeadman", "CheckThreshold"}
FLUX_BUILTIN_VARS = {"timeRangeStart", "timeRangeStop", "windowPeriod"}
# Columns a Flux query may touch besides the tags: the record's own, and in a check's message
# template those monitor.check adds.
FLUX_COLUMNS = {"_measurement", "_field", "_value", "_time", "_start", "_stop"}
CHECK_COLUMNS = {"_level", "_check_name", "_check_id", "_message", "_source_measurement", "_type"}
LEVELS = {"CRIT", "WARN", "INFO", "OK"}
THRESHOLD_TYPES = {"greater", "lesser", "inside_range", "outside_range"}
GEOMS = {"line", "step", "stacked", "monotoneX", "bar"}
CHART_KINDS = {
    "Gauge", "Geo", "Heatmap", "Histogram", "Markdown", "Mosaic", "Scatter", "Single_Stat",
    "Single_Stat_Plus_Line", "Table", "Xy", "Band",
}
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# ---------------------------------------------------------------------------------------------
# InfluxDB 2 template
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> list[dict]:
    data = json.loads(INFLUX_TEMPLATE.read_text())
    assert isinstance(data, list) and data
    return data


def of_kind(template, kind: str) -> list[dict]:
    return [r for r in template if r["kind"] == kind]


def flux_duration(text: str) -> timedelta:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return timedelta(seconds=sum(int(n) * units[u] for n, u in parts))


def all_flux(template) -> list[tuple[str, str]]:
    """(where, query) of every Flux query in the template."""
    out = []
    for res in template:
        name, spec = res["metadata"]["name"], res["spec"]
        if res["kind"] == "Variable" and spec["type"] == "query":
            out.append((name, spec["query"]))
        elif res["kind"] == "Dashboard":
            for chart in spec["charts"]:
                for i, q in enumerate(chart.get("queries", [])):
                    out.append((f"{name}: {chart['name']} [{i}]", q["query"]))
        elif res["kind"].startswith("Check"):
            out.append((name, spec["query"]))
    return out


def test_template_resources_have_the_apply_format(template):
    names = set()
    for res in template:
        assert set(res) == {"apiVersion", "kind", "metadata", "spec"}, res.keys()
        assert res["apiVersion"] == API_VERSION
        assert res["kind"] in KINDS
        name = res["metadata"]["name"]
        assert DNS1123_LABEL.match(name) and len(name) <= 63, name
        assert name not in names, f"duplicate metadata.name {name}"
        names.add(name)
    kinds = {r["kind"] for r in template}
    assert {"Dashboard", "Variable", "CheckDeadman", "CheckThreshold"} <= kinds
    # Every association points at a Label of the template.
    labels = {r["metadata"]["name"] for r in of_kind(template, "Label")}
    for res in template:
        for assoc in res["spec"].get("associations", []):
            assert assoc["kind"] == "Label" and assoc["name"] in labels, assoc


def test_variables_read_accounts_and_devices_from_the_data(template):
    variables = {v["spec"]["name"]: v["spec"] for v in of_kind(template, "Variable")}
    assert {"bucket", "account", "device", "price"} <= set(variables)
    for name, spec in variables.items():
        assert spec["type"] in ("query", "constant", "map"), name
        if spec["type"] == "query":
            assert spec["language"] == "flux" and spec["query"].strip(), name
        elif spec["type"] == "constant":
            assert spec["values"], name
        else:
            assert spec["values"] and isinstance(spec["values"], dict), name
    for var, tag in (("account", "account_name"), ("device", "device_name")):
        query = variables[var]["query"]
        assert re.search(r"\b(schema|v1)\.tagValues\(", query), var
        assert re.search(rf'\btag:\s*"{tag}"', query), var
    # The device list follows the chosen account.
    assert "r.account_name == v.account" in variables["device"]["query"]
    price = variables["price"]
    values = price["values"] if price["type"] == "constant" else list(price["values"].values())
    for value in values:
        assert float(value) > 0
    assert set(price.get("selected", [])) <= set(values)


def test_dashboard_charts_are_valid_and_cover_every_panel(template):
    (dashboard,) = of_kind(template, "Dashboard")
    spec = dashboard["spec"]
    assert len(spec["name"]) >= 2
    cells = set()
    for chart in spec["charts"]:
        kind = chart["kind"]
        assert kind in CHART_KINDS, kind
        assert chart["width"] > 0 and chart["height"] > 0, chart["name"]
        assert 0 <= chart["xPos"] and chart["xPos"] + chart["width"] <= 12, chart["name"]
        for x in range(chart["xPos"], chart["xPos"] + chart["width"]):
            for y in range(chart["yPos"], chart["yPos"] + chart["height"]):
                assert (x, y) not in cells, f"{chart['name']} overlaps another chart"
                cells.add((x, y))
        for color in chart.get("colors", []):
            assert color.get("hex"), chart["name"]
        if kind == "Markdown":
            continue
        assert chart["queries"] and all(q["query"].strip() for q in chart["queries"])
        if kind == "Xy":
            assert chart["geom"] in GEOMS
            assert chart.get("position", "overlaid") in ("overlaid", "stacked")
            assert {a["name"] for a in chart["axes"]} >= {"x", "y"}
        if kind == "Table":
            assert chart.get("tableOptions", {}).get("wrapping", "") in (
                "", "single-line", "truncate", "wrap"
            )
    text = "\n".join(q["query"] for c in spec["charts"] for q in c.get("queries", []))
    # Minute, second, hour and day points all have a panel; energy in kWh; cost with the price.
    for value in DETAILED:
        assert f'r.detailed == "{value}"' in text, value
    assert "r._value / 1000.0" in text  # Wh -> kWh (hour and day points)
    for field in AMPS_VOLTS:  # amps and volts have a panel each
        assert f'r._field == "{field}")\n  |> filter(fn: (r) => {AMPS_VOLTS_FLUX}' in text
    assert "float(v: v.price)" in text
    used = set(re.findall(r"\bv\.(\w+)", text))
    defined = {v["spec"]["name"] for v in of_kind(template, "Variable")}
    assert used <= defined | FLUX_BUILTIN_VARS, used - defined - FLUX_BUILTIN_VARS


def test_checks_have_what_influx_apply_requires(template):
    deadman = of_kind(template, "CheckDeadman")
    threshold = of_kind(template, "CheckThreshold")
    assert len(deadman) == 1 and len(threshold) == 1
    for check in deadman + threshold:
        spec = check["spec"]
        assert spec["name"]
        assert flux_duration(spec["every"]) >= timedelta(seconds=5)
        if "offset" in spec:
            assert flux_duration(spec["offset"]) < flux_duration(spec["every"])
        assert spec["statusMessageTemplate"].strip()
        assert spec.get("status", "active") in ("active", "inactive")
        query = spec["query"]
        # The check's task is generated from one pipeline that filters exactly one field.
        assert len(re.findall(r"\br\._field\s*==", query)) == 1, check["metadata"]["name"]
        body = [ln for ln in query.splitlines() if ln.strip() and not ln.startswith("import ")]
        assert body[0].startswith("from(") and all(ln.startswith("  |> ") for ln in body[1:])
        # A check cannot use dashboard variables: a literal bucket, the one the Compose init
        # script rewrites to the bucket of .env.
        assert 'from(bucket: "vuegraf")' in query
        assert not re.search(r"\bv\.(?!timeRangeStart\b|timeRangeStop\b)\w+", query)
        for tag in ({t.get("key") for t in spec.get("tags", [])}):
            assert tag
    dm = deadman[0]["spec"]
    assert dm["level"].upper() in LEVELS
    assert flux_duration(dm["timeSince"]) >= timedelta(minutes=5)
    assert flux_duration(dm["staleTime"]) > flux_duration(dm["timeSince"])
    th = threshold[0]["spec"]
    assert th["thresholds"]
    for t in th["thresholds"]:
        assert t["type"] in THRESHOLD_TYPES and t["level"].upper() in LEVELS
        if t["type"] in ("inside_range", "outside_range"):
            assert t["min"] <= t["max"]
    # "Power outage": minute points below 1 W over a 5-minute window.
    assert th["thresholds"] == [{"type": "lesser", "level": "CRIT", "value": 1.0,
                                 "allValues": False}]
    assert 'r.detailed == "False"' in th["query"]
    assert "aggregateWindow(every: 5m, fn: max" in th["query"]
    assert flux_duration(th["every"]) == timedelta(minutes=5)


def flux_problems(where: str, query: str, message: str = "") -> list[str]:
    """Everything in one Flux query that is not part of the data model."""
    problems: list[str] = []
    if re.match(r"\s*buckets\(\)", query):
        return problems  # lists bucket names: reads no points
    reads = "from(" in query or "tagValues(" in query
    if reads:
        if f'r._measurement == "{MEASUREMENT}"' not in query:
            problems.append(f"{where}: does not filter _measurement == {MEASUREMENT!r}")
        fields = [f for f in (FIELD, *sorted(AMPS_VOLTS)) if f'r._field == "{f}"' in query]
        if not fields:
            problems.append(f"{where}: does not filter _field == {FIELD!r}")
        elif fields != [FIELD] and AMPS_VOLTS_FLUX not in query:
            problems.append(f"{where}: amps or volts without {AMPS_VOLTS_FLUX}")
    allowed = TAGS | FLUX_COLUMNS
    for text, extra in ((query, set()), (message, CHECK_COLUMNS)):
        for dotted, indexed in re.findall(r'\br(?:\.([A-Za-z_]\w*)|\["([^"]+)"\])', text):
            column = dotted or indexed
            if column not in allowed | extra:
                problems.append(f"{where}: unknown column r.{column}")
    for dotted, indexed, _op, value in re.findall(
        r'\br(?:\.([A-Za-z_]\w*)|\["([^"]+)"\])\s*(==|!=|=~|!~)\s*("[^"]*"|/(?:[^/\\]|\\.)*/)',
        query,
    ):
        column = dotted or indexed
        literal = value[1:-1]
        if column == "_measurement" and literal != MEASUREMENT:
            problems.append(f"{where}: measurement {literal!r}")
        if column == "_field" and literal not in {FIELD} | AMPS_VOLTS:
            problems.append(f"{where}: field {literal!r}")
        if column == "detailed" and (value.startswith("/") or literal not in DETAILED | {QUARTER}):
            problems.append(f"{where}: detailed value {value}")
        if column in NAME_TAGS and value.startswith('"'):
            problems.append(f"{where}: hard-coded {column} {value}")
    for tag in re.findall(r'\btag:\s*"([^"]*)"', query):
        if tag not in TAGS:
            problems.append(f"{where}: tagValues over unknown tag {tag!r}")
    for call, columns in re.findall(r"\b(group|keep|drop)\(columns:\s*\[([^\]]*)\]", query):
        for column in re.findall(r'"([^"]*)"', columns):
            if column not in allowed:
                problems.append(f"{where}: {call}() on unknown column {column!r}")
    for name in re.findall(r'\bmeasurement:\s*"([^"]*)"', query):
        if name != MEASUREMENT:
            problems.append(f"{where}: measurement {name!r}")
    return problems


def test_every_flux_query_stays_inside_the_data_model(template):
    queries = all_flux(template)
    assert len(queries) >= 14
    messages = {
        r["metadata"]["name"]: r["spec"]["statusMessageTemplate"]
        for r in template
        if r["kind"].startswith("Check")
    }
    problems = []
    for where, query in queries:
        problems += flux_problems(where, query, messages.get(where, ""))
    assert not problems, "\n".join(problems)


def test_the_flux_checker_catches_what_it_should():
    bad = (
        'from(bucket: v.bucket) |> filter(fn: (r) => r._measurement == "power" and '
        'r._field == "watts" and r.detailed == "Minute" and r.device_name == "Kitchen" '
        'and r.circuit == v.x) |> group(columns: ["host"])'
    )
    problems = "\n".join(flux_problems("q", bad))
    for part in ("measurement 'power'", "field 'watts'", 'detailed value "Minute"',
                 'hard-coded device_name "Kitchen"', "unknown column r.circuit",
                 "unknown column 'host'"):
        assert part in problems, part


# ---------------------------------------------------------------------------------------------
# Grafana dashboard (InfluxDB 1.x, InfluxQL)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grafana() -> dict:
    return json.loads(GRAFANA.read_text())


def grafana_targets(grafana) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["query"])
        for panel in grafana["panels"]
        for target in panel.get("targets", [])
    ]


def grafana_variables(grafana) -> dict[str, dict]:
    return {v["name"]: v for v in grafana["templating"]["list"]}


def influxql_problems(where: str, query: str) -> list[str]:
    problems = []
    aliases = set(re.findall(r'\bAS\s+"([^"]+)"', query))
    # Inner columns a subquery names after its function: sum("last") of SELECT last(...).
    inner = set(re.findall(r"\b(last|mean|sum|max|min)\(", query))
    for name in re.findall(r'"([^"]+)"', query):
        if name not in {MEASUREMENT, FIELD} | AMPS_VOLTS | TAGS | aliases | inner:
            problems.append(f"{where}: unknown identifier {name!r}")
    for measurement in re.findall(r'\bFROM\s+"([^"]+)"', query):
        if measurement != MEASUREMENT:
            problems.append(f"{where}: measurement {measurement!r}")
    literals = re.findall(r"'([^']*)'", query)
    detailed = re.findall(r"\"detailed\"\s*=\s*'([^']*)'", query)
    if sorted(literals) != sorted(detailed):
        problems.append(f"{where}: string literal outside a detailed comparison")
    for value in detailed:
        if value not in DETAILED | {QUARTER}:
            problems.append(f"{where}: detailed value {value!r}")
    if any(f'"{field}"' in query for field in AMPS_VOLTS) and (
        detailed or AMPS_VOLTS_QL not in query
    ):
        problems.append(f"{where}: amps or volts without {AMPS_VOLTS_QL}")
    for tag, regex in re.findall(r'"(\w+)"\s*[!=]~\s*(/(?:[^/\\]|\\.)*/)', query):
        if tag in NAME_TAGS and not re.fullmatch(r"/\^\$\w+\$/", regex):
            problems.append(f"{where}: hard-coded {tag} {regex}")
    return problems


def test_grafana_dashboard_shape(grafana):
    assert grafana["title"] and grafana["uid"]
    assert "id" not in grafana or grafana["id"] is None
    variables = grafana_variables(grafana)
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "influxdb"
    for name, key in (("account", "account_name"), ("device", "device_name"),
                      ("circuit", "device_name")):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == "${datasource}"
        assert re.fullmatch(
            rf'SHOW TAG VALUES FROM "{MEASUREMENT}" WITH KEY = "{key}"'
            r'( WHERE "account_name" =~ /\^\$account\$/)?',
            var["query"],
        ), var["query"]
    assert variables["device"]["multi"] and variables["circuit"]["includeAll"]
    assert float(variables["price"]["query"]) > 0
    cells = set()
    for panel in grafana["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] == "text":
            continue
        assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["rawQuery"] is True and target["datasource"] == panel["datasource"]
            assert "$timeFilter" in target["query"]
    queries = "\n".join(q for _, q in grafana_targets(grafana))
    for value in DETAILED:
        assert f"\"detailed\" = '{value}'" in queries, value
    assert "$price" in queries and "$__interval" in queries
    for field in AMPS_VOLTS:  # amps and volts have a panel each
        assert f'SELECT "{field}" FROM "{MEASUREMENT}" WHERE {AMPS_VOLTS_QL}' in queries
    assert len(grafana_targets(grafana)) == len(grafana["panels"]) - 1  # all but the text panel


def test_every_influxql_query_stays_inside_the_data_model(grafana):
    problems = []
    for where, query in grafana_targets(grafana):
        problems += influxql_problems(where, query)
    for name, var in grafana_variables(grafana).items():
        if var["type"] == "query":
            problems += influxql_problems(f"variable {name}", var["query"])
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# The Grafana queries, run against a real InfluxDB 1.x with simulated data
# ---------------------------------------------------------------------------------------------

ACCOUNT = "Primary Residence"
SEED = 1
PRICE = "0.15"
MAINS = ["Main Panel", "Garage Panel"]
# Grafana's "now" for these tests: a fixed instant (not the clock) whose last two days hold
# the 25-hour local day of the autumn DST change in New York (1 November 2026).
NOW = datetime(2026, 11, 2, 15, 37, 12, tzinfo=UTC)
RANGE_START = NOW - timedelta(days=2)  # Grafana's "Last 2 days"
ZONE = oracle.NEW_YORK  # the household's zone
NAMES = oracle.DEFAULT_NAMES  # what vuegraf writes for an account without `devices`
SCALES = {"1S": Scale.SECOND, "1MIN": Scale.MINUTE, "1H": Scale.HOUR, "1D": Scale.DAY}


def quarters(now: datetime) -> list[datetime]:
    """The complete 15-minute buckets of the last two days (amps and volts)."""
    quarter = oracle.floor_to(now, 900)
    return [quarter - timedelta(minutes=15 * q) for q in range(1, 2 * 24 * 4)]


def expected_amps_volts(
    model: UsageModel, gid: int, num: str, start: datetime, code: str = "15MIN"
) -> tuple[float, float]:
    """(amps, volts) vuegraf writes for a channel's 15-minute (or `code` "1H": hour) bucket:
    the simulator serves a leg's volts (odd circuits and the mains on leg A, even circuits on
    B) and amp-hours of kWh x 1000 / volts; amps are amp-hours / 0.25 h (or / 1 h)."""
    kwh = model.device_values(gid, code, start)[num]
    assert kwh is not None
    leg = 1 if num.isdigit() and int(num) % 2 == 0 else 0
    volts = leg_volts(SEED, gid, leg, start)
    return kwh * 1000.0 / volts / {"15MIN": 0.25, "1H": 1.0}[code], volts


def simulated_buckets(now: datetime) -> dict[str, list[datetime]]:
    """Bucket starts written per scale: the complete minutes and hours of the last two days,
    five minutes of seconds, and the local days that were over, from three days back."""
    minute = oracle.floor_to(now, 60)
    hour = oracle.floor_to(now, 3600)
    second = oracle.floor_to(now, 1)
    today = oracle.local_date(now, ZONE)
    return {
        "1MIN": [minute - timedelta(minutes=m) for m in range(1, 2 * 24 * 60)],
        "1H": [hour - timedelta(hours=h) for h in range(1, 49)],
        "1S": [second - timedelta(seconds=s) for s in range(1, 301)],
        "1D": [oracle.midnight(today - timedelta(days=d), ZONE) for d in (3, 2, 1)],
    }


def write_simulated_days(server, database: str, now: datetime) -> UsageModel:
    """Minute, hour and day points of every channel for the last two days (and a few minutes of
    second points for the channels that have them), as vuegraf writes them (README.md, "What
    is written"; computed by tests/harness/oracle.py)."""
    model = UsageModel(Scenario.default(), seed=SEED)
    oracle.check_household(model)

    def points(code: str, starts: list[datetime]) -> list[Point]:
        out = []
        for start in starts:
            for gid in oracle.DEVICE_NAMES:
                for num, kwh in model.device_values(gid, code, start).items():
                    if kwh is None or (code == "1S" and (gid, num) in oracle.LIVE_ONLY):
                        continue
                    out.append(
                        Point(
                            ACCOUNT,
                            oracle.DEVICE_NAMES[gid],
                            NAMES[(gid, num)],
                            SCALES[code],
                            oracle.stamp(code, start, ZONE),
                            oracle.watts(code, kwh),
                        )
                    )
        return out

    sink = InfluxV1Sink(
        InfluxV1Config(host=server.host, port=server.port, database=database),
        TagConfig(),
        add_station=False,
    )
    amps_volts = [
        Point(ACCOUNT, oracle.DEVICE_NAMES[gid], NAMES[(gid, num)], Scale.QUARTER, start, value,
              unit=unit)
        for start in quarters(now)
        for gid in oracle.DEVICE_NAMES
        for num, kwh in model.device_values(gid, "15MIN", start).items()
        if kwh is not None
        for unit, value in zip(
            (Unit.AMPS, Unit.VOLTS), expected_amps_volts(model, gid, num, start), strict=True
        )
    ]
    sink.open()
    try:
        for code, starts in simulated_buckets(now).items():
            sink.write(points(code, starts))
        sink.write(amps_volts)
    finally:
        sink.close()
    return model


def grafana_regex(values: list[str]) -> str:
    """A variable's values as Grafana puts them into /^$var$/: escaped, several as (a|b)."""
    escaped = [re.sub(r"[\\^$.|?*+()\[\]{}/]", lambda m: "\\" + m.group(0), v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand(query: str, variables: dict[str, list[str]]) -> str:
    # $timeFilter as Grafana renders it for InfluxQL: the dashboard's range in epoch ms.
    time_filter = (
        f"time >= {oracle.epoch(RANGE_START) * 1000}ms and time <= {oracle.epoch(NOW) * 1000}ms"
    )
    query = query.replace("$timeFilter", time_filter).replace("$__interval", "1m")
    for name, values in variables.items():
        query = query.replace(f"/^${name}$/", f"/^{grafana_regex(values)}$/")
    query = query.replace("$price", PRICE)
    assert "$" not in query.replace("/^", "").replace("$/", ""), query
    return query


def tag_values(client, query: str) -> list[str]:
    return [row["value"] for row in client.query(query).get_points()]


@pytest.mark.integration
def test_grafana_queries_return_the_simulated_data(influxdb_v1_db):
    server, database = influxdb_v1_db
    model = write_simulated_days(server, database, NOW)
    client = server.client(database)
    try:
        # The template variables, as Grafana resolves them.
        variables = grafana_variables(json.loads(GRAFANA.read_text()))
        accounts = tag_values(client, variables["account"]["query"])
        assert accounts == [ACCOUNT]
        selected = {"account": accounts}
        circuits = tag_values(client, expand(variables["circuit"]["query"], selected))
        assert sorted(circuits) == sorted(NAMES.values())
        assert tag_values(client, expand(variables["device"]["query"], selected)) == circuits
        selected |= {"device": MAINS, "circuit": circuits}

        results = {}
        empty = []
        for title, query in grafana_targets(json.loads(GRAFANA.read_text())):
            result = client.query(expand(query, selected), epoch="s")
            series = {}
            for (_measurement, tags), rows in result.items():
                values = [(row["time"], v) for row in rows
                          for k, v in row.items() if k != "time" and v is not None]
                series[(tags or {}).get("device_name")] = values
            if not any(series.values()):
                empty.append(f"{title}: {expand(query, selected)}")
            results[title] = series
        assert not empty, "queries that returned nothing:\n" + "\n".join(empty)
    finally:
        client.close()

    # Hourly and daily energy and daily cost: every hour and day point inside the range, with
    # the model's kWh, at the times README.md's "What is written" gives (an hour's start;
    # 23:59:59 local of a day, which for 1 November 2026 in New York is 04:59:59 UTC on the
    # 2nd).
    gid = {"Main Panel": 1001, "Garage Panel": 1002}
    in_range = range(oracle.epoch(RANGE_START), oracle.epoch(NOW) + 1)
    day_stamps = [
        (oracle.epoch(oracle.day_stamp(oracle.local_date(start, ZONE), ZONE)), start)
        for start in simulated_buckets(NOW)["1D"]
    ]
    day_stamps = [(t, start) for t, start in day_stamps if t in in_range]
    assert [datetime.fromtimestamp(t, UTC) for t, _ in day_stamps] == [
        datetime(2026, 11, 1, 3, 59, 59, tzinfo=UTC),  # 31 October, EDT
        datetime(2026, 11, 2, 4, 59, 59, tzinfo=UTC),  # 1 November, EST
    ]
    hour_stamps = [
        (oracle.epoch(start), start)
        for start in simulated_buckets(NOW)["1H"]
        if oracle.epoch(start) in in_range
    ]
    assert len(hour_stamps) == 47  # the 48th hour back started before the range
    for device in MAINS:
        for title, code, stamps, factor in (
            ("Hourly energy (device)", "1H", hour_stamps, 1.0),
            ("Daily energy (device)", "1D", day_stamps, 1.0),
            ("Daily cost (device)", "1D", day_stamps, float(PRICE)),
        ):
            served = [(t, model.kwh(gid[device], "1,2,3", code, start)) for t, start in stamps]
            assert all(kwh is not None for _t, kwh in served), (title, device)  # mains: no gaps
            want = sorted((t, kwh * factor) for t, kwh in served if kwh is not None)
            got = sorted(results[title][device])
            assert [t for t, _ in got] == [t for t, _ in want], (title, device)
            for (_t, value), (_t2, expected) in zip(got, want, strict=True):
                assert value == pytest.approx(expected, rel=1e-9), (title, device)
    # Amps and volts: every quarter hour in the range, as the simulator serves them.
    quarter_stamps = [(oracle.epoch(q), q) for q in quarters(NOW) if oracle.epoch(q) in in_range]
    assert len(quarter_stamps) == 191
    kitchen = NAMES[(1001, "1")]
    for title, device, gid_num, which in [
        ("Voltage (device, 15 min)", device, (gid[device], "1,2,3"), 1) for device in MAINS
    ] + [("Current per circuit (amps, 15 min)", kitchen, (1001, "1"), 0)]:
        want = sorted(
            (t, expected_amps_volts(model, *gid_num, q)[which]) for t, q in quarter_stamps
        )
        got = sorted(results[title][device])
        assert [t for t, _ in got] == [t for t, _ in want], (title, device)
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-9), title
    # The share panel leaves the chosen mains out; the per-circuit panel has every circuit.
    assert not set(MAINS) & set(results["Share per circuit (kWh)"])
    assert len(results["Power per circuit (minute data)"]) == len(circuits)


def test_amps_and_volts_panels_match_the_hour_tag_too(template, grafana):
    """An account with {"scale": "1H"} writes amps and volts under detailed = Hour: every
    amps or volts query of both dashboards matches that tag value as well as 15Min."""
    flux = [q for _w, q in all_flux(template) if any(f'"{f}"' in q for f in AMPS_VOLTS)]
    influxql = [q for _t, q in grafana_targets(grafana)
                if any(f'"{f}"' in q for f in AMPS_VOLTS)]
    assert len(flux) == 2 and len(influxql) == 2
    assert all(AMPS_VOLTS_FLUX in q for q in flux), flux
    assert all(AMPS_VOLTS_QL in q for q in influxql), influxql


@pytest.mark.integration
def test_grafana_amps_and_volts_panels_show_hourly_buckets(influxdb_v1_db):
    """Amps and volts written at the hour (tag Hour), as an account with {"scale": "1H"}
    writes them, into a real InfluxDB 1.x: the current and voltage panels show every hour
    of the range with the values the simulator serves."""
    server, database = influxdb_v1_db
    model = UsageModel(Scenario.default(), seed=SEED)
    oracle.check_household(model)
    hours = simulated_buckets(NOW)["1H"]
    points = [
        Point(ACCOUNT, oracle.DEVICE_NAMES[gid], NAMES[(gid, num)], Scale.HOUR, start, value,
              unit=unit)
        for start in hours
        for gid in oracle.DEVICE_NAMES
        for num, kwh in model.device_values(gid, "1H", start).items()
        if kwh is not None
        for unit, value in zip(
            (Unit.AMPS, Unit.VOLTS), expected_amps_volts(model, gid, num, start, "1H"),
            strict=True,
        )
    ]
    sink = InfluxV1Sink(
        InfluxV1Config(host=server.host, port=server.port, database=database),
        TagConfig(),
        add_station=False,
    )
    sink.open()
    try:
        sink.write(points)
    finally:
        sink.close()
    selected = {"account": [ACCOUNT], "device": MAINS, "circuit": sorted(NAMES.values())}
    panels = [(title, query) for title, query in grafana_targets(json.loads(GRAFANA.read_text()))
              if any(f'"{f}"' in query for f in AMPS_VOLTS)]
    assert len(panels) == 2
    client = server.client(database)
    try:
        results = {}
        for title, query in panels:
            result = client.query(expand(query, selected), epoch="s")
            results[title] = {
                (tags or {}).get("device_name"): sorted(
                    (row["time"], v) for row in rows for k, v in row.items()
                    if k != "time" and v is not None
                )
                for (_measurement, tags), rows in result.items()
            }
    finally:
        client.close()
    in_range = range(oracle.epoch(RANGE_START), oracle.epoch(NOW) + 1)
    hour_stamps = [(oracle.epoch(h), h) for h in hours if oracle.epoch(h) in in_range]
    assert len(hour_stamps) == 47
    gid = {"Main Panel": 1001, "Garage Panel": 1002}
    kitchen = NAMES[(1001, "1")]
    checked = [("Voltage (device, 15 min)", device, (gid[device], "1,2,3"), 1)
               for device in MAINS]
    checked.append(("Current per circuit (amps, 15 min)", kitchen, (1001, "1"), 0))
    for title, device, (g, num), which in checked:
        want = sorted(
            (t, expected_amps_volts(model, g, num, h, "1H")[which]) for t, h in hour_stamps
        )
        got = results[title].get(device, [])
        assert [t for t, _ in got] == [t for t, _ in want], (title, device)
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-9), title
