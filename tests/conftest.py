"""Shared pytest fixtures, and the hooks that make a skip a failure under CI=true.

Add new fixtures under a section comment of their own; keep server start-up code in servers.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.browser import Browser, chromium
from harness.homeassistant import HomeAssistant, require_hass
from harness.testtime import TestTime
from servers import InfluxV1Server, MosquittoServer, VictoriaMetricsServer, in_ci, require_binary

# pytester runs pytest on small generated test files: tests/test_ci_no_skips.py uses it to check
# the CI hooks below from the outside.
pytest_plugins = ["pytester"]

# ---------------------------------------------------------------------------------------------
# Under CI=true nothing may skip.
#
# A skip, an xfail or an xpass in CI means a check that did not run (or ran and was not
# believed), so CI would be green without having shown anything. The two hooks below turn each
# into a failed test whose message starts with CI_SKIP_MESSAGE and says why it did not run:
#
# - a test report that is skipped (pytest.skip in a test or a fixture, skip/skipif marks),
#   xfailed (xfail marks, pytest.xfail calls, xfail(run=False)) or xpassed (a non-strict xfail
#   that passed);
# - a collector that was skipped (pytest.importorskip or pytest.skip(allow_module_level=True)
#   at module level): it is replaced by one failing test named COLLECTION_SKIP, so the rest of
#   the session still runs and the module shows up among the failures.
#
# Whether CI is on is read once, when pytest starts, so a test that changes CI in its own
# environment (tests/test_servers.py does) does not change how its report is judged.
# require_binary in servers.py already fails instead of skipping in CI, with its own message.
# ---------------------------------------------------------------------------------------------

CI_SKIP_MESSAGE = "CI=true: skipped tests are failures"
COLLECTION_SKIP = "skipped-at-collection"
_STRICT = pytest.StashKey[bool]()
XFAIL_CALLED = pytest.xfail.Exception  # what pytest.xfail() raises


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STRICT] = in_ci()


def _skip_reason(longrepr: object) -> str:
    """The reason of a skip report: its longrepr is (path, line, "Skipped: reason")."""
    message = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr
    return str(message).removeprefix("Skipped: ")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # tryfirst makes this wrapper the outermost one: it sees the report after pytest's own
    # skipping plugin has marked xfail and xpass on it.
    report = yield
    if not item.config.stash[_STRICT]:
        return report
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        kind = "xpass" if report.passed else "xfail"
        why = f"{kind}: {wasxfail or 'no reason given'}"
        failure = call.excinfo.value if call.excinfo is not None else None
        if report.skipped and failure is not None and not isinstance(failure, XFAIL_CALLED):
            # An xfail test that failed (not one that called pytest.xfail): keep what failed.
            report.sections.append(("the failure xfail expected", str(report.longrepr)))
        del report.wasxfail
    elif report.skipped:
        why = _skip_reason(report.longrepr)
    else:
        return report
    report.outcome = "failed"
    report.longrepr = f"{CI_SKIP_MESSAGE}: {why}"
    if report.when == "setup":
        # A skip in setup (a mark, a fixture) would otherwise count as an error at setup:
        # report it as the failed test it stands for. The test body is not run either way.
        report.when = "call"
    return report


class CollectionSkip(pytest.Item):
    """Stands for the tests of a module that skipped itself at collection, under CI."""

    def __init__(self, *, reason: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason

    def runtest(self) -> None:
        # Skipped again, at run time: pytest_runtest_makereport above makes it the failure.
        where = self.parent.nodeid if self.parent is not None else self.nodeid
        pytest.skip(f"{where} skipped at collection: {self.reason}")

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, self.nodeid


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if not (collector.config.stash[_STRICT] and report.skipped):
        return report
    stand_in = CollectionSkip.from_parent(
        collector, name=COLLECTION_SKIP, reason=_skip_reason(report.longrepr)
    )
    return pytest.CollectReport(report.nodeid, "passed", None, [stand_in], report.sections)


# ---------------------------------------------------------------------------------------------
# Real servers (see servers.py).
#
# One of each per test session, started on first use on a free loopback port with a temp data
# dir, and stopped at the end. Without the binary a test skips, except under CI=true where it
# fails (require_binary says so itself; the hooks above would fail the skip anyway). Tests
# that stop, kill or reconfigure a server start their own instance instead of using these.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def influxdb_v1() -> Iterator[InfluxV1Server]:
    """A running InfluxDB 1.x without authentication, shared by the session."""
    with InfluxV1Server(require_binary("influxd")) as server:
        yield server


@pytest.fixture
def influxdb_v1_auth() -> Iterator[InfluxV1Server]:
    """An InfluxDB 1.x with authentication, this test's own (tests add users and rights): the
    admin user is ``.username`` / ``.password``; ``.admin(statement)`` runs InfluxQL as it."""
    with InfluxV1Server(require_binary("influxd"), auth=True) as server:
        yield server


@pytest.fixture
def influxdb_v1_db(influxdb_v1: InfluxV1Server) -> Iterator[tuple[InfluxV1Server, str]]:
    """A fresh, uniquely named database in the session InfluxDB: (server, database name).

    The database is dropped afterwards (unless the test left the server stopped).
    """
    name = f"test_{uuid.uuid4().hex[:12]}"
    client = influxdb_v1.client()
    try:
        client.create_database(name)
        yield influxdb_v1, name
        if influxdb_v1.is_running():
            client.drop_database(name)
    finally:
        client.close()


@pytest.fixture(scope="session")
def victoria_metrics() -> Iterator[VictoriaMetricsServer]:
    """A running VictoriaMetrics (InfluxDB 2 write API at ``.url``), shared by the session."""
    with VictoriaMetricsServer(require_binary("victoria-metrics")) as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoServer]:
    """A running Mosquitto broker that allows anonymous clients, shared by the session."""
    with MosquittoServer(require_binary("mosquitto")) as server:
        yield server


# ---------------------------------------------------------------------------------------------
# A real Home Assistant (see harness/homeassistant.py).
#
# Home Assistant 2024.3.3 from .venv-ha (`make venv-ha`; without it a test skips, or fails
# under CI=true), onboarded, its MQTT integration on the session broker with discovery under
# the default prefix. It starts in a few seconds, so one per worker is shared: tests stay
# independent by using discovery objects, unique_ids and topics of their own, and remove what
# they published. A test that restarts it, changes its broker or needs another time zone starts
# its own `HomeAssistant()` instead. The Energy dashboard's preferences are one per instance:
# a test that validates energy sources saves its own first.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def homeassistant(mosquitto: MosquittoServer) -> Iterator[HomeAssistant]:
    """A running Home Assistant whose MQTT integration uses the session ``mosquitto``."""
    with HomeAssistant(require_hass()) as server:
        server.use_broker(mosquitto.host, mosquitto.port)
        yield server


# ---------------------------------------------------------------------------------------------
# Wall-clock runs at any date (see harness/testtime.py).
#
# A test that runs vuegraf on the wall clock against the simulator takes `test_time`: the
# simulator gets `test_time.now`, the vuegraf child `test_time.vuegraf(...)`. With
# VUEGRAF_TEST_START set, every such test starts at that instant; `-m realclock` selects them.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def test_time() -> TestTime:
    """Now, or VUEGRAF_TEST_START: taken when the test starts, then running at normal speed."""
    return TestTime.from_env()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "test_time" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.realclock)


# ---------------------------------------------------------------------------------------------
# A real browser (see harness/browser.py).
#
# Headless Chromium from Debian through its chromedriver (`chromium`, `chromium-driver`: the
# packages .ci/install-deps installs). Without them a test skips, or fails under CI=true. Each
# test gets a browser with a fresh profile, so no cache or storage leaks from one to the next.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """A headless Chromium, 1280x900, its console kept (`browser.severe()`)."""
    binary = require_binary("chromium")
    driver = require_binary("chromedriver")
    with chromium(tmp_path / "chromium-profile", driver, binary) as page:
        yield page
