"""The CI hooks of tests/conftest.py, checked by running pytest on small generated test files.

Each run is a real pytest process (pytester's subprocess runner) with this repository's
conftest.py, so its counts, its exit code and its summary lines are what CI would see.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# One test of every way a test can end up not run or not believed, and one that passes.
EVERY_KIND = """
import pytest

@pytest.fixture
def refusing_fixture():
    pytest.skip("fixture says no")

def test_passes():
    assert 1 + 1 == 2

def test_skip_call():
    pytest.skip("inside the test")

def test_skip_fixture(refusing_fixture):
    pass

@pytest.mark.skip(reason="mark skip")
def test_mark_skip():
    pass

@pytest.mark.skipif(True, reason="mark skipif")
def test_mark_skipif():
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfail_mark():
    assert 1 == 2

def test_xfail_call():
    pytest.xfail("imperative xfail")

@pytest.mark.xfail(run=False, reason="not run")
def test_xfail_not_run():
    pass

@pytest.mark.xfail(reason="expected to fail")
def test_xpass():
    pass

def test_ci_turned_on_inside_the_test(monkeypatch):
    monkeypatch.setenv("CI", "true")
    pytest.skip("CI was off when the run started")
"""

IMPORTORSKIP = """
import pytest

pytest.importorskip("no_such_module_for_vuegraf_tests")

def test_never_collected():
    pass
"""

MODULE_SKIP = """
import pytest

pytest.skip("whole module off", allow_module_level=True)

def test_never_collected():
    pass
"""

PREFIX = "CI=true: skipped tests are failures: "
EXPECTED_FAILURES = [
    ("test_every_kind.py::test_skip_call", "inside the test"),
    ("test_every_kind.py::test_skip_fixture", "fixture says no"),
    ("test_every_kind.py::test_mark_skip", "mark skip"),
    ("test_every_kind.py::test_mark_skipif", "mark skipif"),
    ("test_every_kind.py::test_xfail_mark", "xfail: known bug"),
    ("test_every_kind.py::test_xfail_call", "xfail: imperative xfail"),
    ("test_every_kind.py::test_xfail_not_run", "xfail: [[]NOTRUN[]] not run"),
    ("test_every_kind.py::test_xpass", "xpass: expected to fail"),
    ("test_every_kind.py::test_ci_turned_on_inside_the_test", "CI was off when the run started"),
    (
        "test_importorskip.py::skipped-at-collection",
        "test_importorskip.py skipped at collection: could not import "
        "'no_such_module_for_vuegraf_tests'*",
    ),
    (
        "test_module_skip.py::skipped-at-collection",
        "test_module_skip.py skipped at collection: whole module off",
    ),
]


def run_generated(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> pytest.RunResult:
    """Run pytest in a new process on the generated files, with CI set to `ci` (or unset)."""
    pytester.makeconftest((TESTS / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(
        test_every_kind=EVERY_KIND,
        test_importorskip=IMPORTORSKIP,
        test_module_skip=MODULE_SKIP,
    )
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the conftest imports servers.py
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_every_skip_xfail_and_xpass_is_a_failed_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    result = run_generated(pytester, monkeypatch, ci)
    # Nothing is left skipped, xfailed or xpassed, and nothing is an error at setup: each
    # became the failed test it stands for, and the passing test still passes.
    result.assert_outcomes(passed=1, failed=len(EXPECTED_FAILURES))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [f"FAILED {node} - {PREFIX}{why}" for node, why in EXPECTED_FAILURES], consecutive=False
    )
    # The failure an xfail mark expected is still shown, under the message.
    result.stdout.fnmatch_lines(["*the failure xfail expected*", "*assert 1 == 2*"])
    for word in ("SKIPPED", "XFAIL", "XPASS", "ERROR"):
        assert not [line for line in result.outlines if line.startswith(word)], word


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_a_skip_stays_a_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    result = run_generated(pytester, monkeypatch, ci)
    result.assert_outcomes(passed=1, skipped=7, xfailed=3, xpassed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "SKIPPED * whole module off",
            "XPASS test_every_kind.py::test_xpass - expected to fail",
        ],
        consecutive=False,
    )
    assert PREFIX not in result.stdout.str()
