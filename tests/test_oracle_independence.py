"""Test infrastructure: expected values must not come from the code they check.

`vuegraf.schedule` (bucket starts, point times, local days) and `vuegraf.naming` (channel
names) decide what vuegraf writes; `point_from_kwh` and `Scale.watts_per_kwh` convert kWh to
watts. A test that builds its expectation with them copies any bug into the expectation and
still passes. Tests use tests/harness/oracle.py instead (its own arithmetic and literal
tables). This file fails when a test file uses them again, except in the unit tests of
those very functions, which check them against literal values.

The check reads every Python file under tests/ with `ast`: imports of the modules in any
form, uses of the names imported from them, the two conversion names, and the module names
as strings (importlib). Each finding is a (what, where) pair, `where` being the top-level
function or class that uses it, or "<module>".
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

FORBIDDEN_MODULES = ("vuegraf.schedule", "vuegraf.naming")
FORBIDDEN_NAMES = ("point_from_kwh", "watts_per_kwh")
ANY = "*"

# Unit tests of the functions themselves, checked against literal values.
UNIT_TESTS: dict[str, dict[str, set[str]]] = {
    "tests/test_schedule.py": {"vuegraf.schedule": {ANY}},
    "tests/test_naming.py": {"vuegraf.naming": {ANY}},
    "tests/test_lineproto.py": {"point_from_kwh": {ANY}},
    "tests/test_review_fixes.py": {
        "vuegraf.schedule": {
            "<import>",
            "test_local_days_always_move_forward_across_a_midnight_dst_change",
        }
    },
}
# Tests being rewritten elsewhere at the time of writing; delete each entry when its file no
# longer needs it (the stale-entry test below insists).
PENDING: dict[str, dict[str, set[str]]] = {}
ALLOWED = {**UNIT_TESTS, **PENDING}


def _dotted(node: ast.expr) -> str | None:
    """The dotted text of a Name/Attribute chain (vuegraf.schedule.x), else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _forbidden_module(dotted: str) -> str | None:
    for module in FORBIDDEN_MODULES:
        if dotted == module or dotted.startswith(module + "."):
            return module
    return None


def findings(source: str) -> set[tuple[str, str]]:
    """(forbidden module or name, top-level scope using it) of one Python source."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> forbidden module it stands for
    found: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = _forbidden_module(alias.name)
                if module:
                    found.add((module, "<import>"))
                    if alias.asname:
                        bound[alias.asname] = module
        elif isinstance(node, ast.ImportFrom) and node.module:
            module = _forbidden_module(node.module)
            for alias in node.names:
                full = _forbidden_module(f"{node.module}.{alias.name}")
                if module or full:
                    found.add((module or full or "", "<import>"))
                    bound[alias.asname or alias.name] = module or full or ""
                if alias.name in FORBIDDEN_NAMES:
                    found.add((alias.name, "<import>"))
    for top in tree.body:
        scope = (
            top.name
            if isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            else "<module>"
        )
        for node in ast.walk(top):
            if isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.Name):
                if node.id in bound:
                    found.add((bound[node.id], scope))
                if node.id in FORBIDDEN_NAMES:
                    found.add((node.id, scope))
            elif isinstance(node, ast.Attribute):
                if node.attr in FORBIDDEN_NAMES:
                    found.add((node.attr, scope))
                dotted = _dotted(node)
                module = _forbidden_module(dotted) if dotted else None
                if module:
                    found.add((module, scope))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                module = _forbidden_module(node.value)
                if module:
                    found.add((module, scope))
    return found


def python_files_under_tests() -> list[Path]:
    files = sorted(p for p in TESTS.rglob("*.py") if p.resolve() != Path(__file__).resolve())
    assert len(files) > 30
    return files


def _allowed(path: str, what: str, scope: str) -> bool:
    scopes = ALLOWED.get(path, {}).get(what, set())
    return ANY in scopes or scope in scopes


def test_no_test_builds_expectations_with_the_code_under_test() -> None:
    bad = []
    for path in python_files_under_tests():
        rel = path.relative_to(ROOT).as_posix()
        for what, scope in sorted(findings(path.read_text(encoding="utf-8"))):
            if not _allowed(rel, what, scope):
                bad.append(f"{rel}: {what} in {scope}")
    assert not bad, (
        "expected values must come from tests/harness/oracle.py, not from the code under "
        "test:\n" + "\n".join(bad)
    )


def test_every_exemption_is_still_needed() -> None:
    stale = []
    for rel, entries in ALLOWED.items():
        path = ROOT / rel
        used = findings(path.read_text(encoding="utf-8")) if path.exists() else set()
        for what, scopes in entries.items():
            for scope in scopes:
                if not any(w == what and (scope == ANY or s == scope) for w, s in used):
                    stale.append(f"{rel}: {what} in {scope}")
    assert not stale, "remove these exemptions from tests/test_oracle_independence.py:\n" + (
        "\n".join(stale)
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from vuegraf.schedule import point_time\n"
         "def test_a():\n    assert point_time(1) == 2\n",
         {("vuegraf.schedule", "<import>"), ("vuegraf.schedule", "test_a")}),
        ("from vuegraf import naming as n\n"
         "def helper():\n    return n.channel_name()\n",
         {("vuegraf.naming", "<import>"), ("vuegraf.naming", "helper")}),
        ("import vuegraf.schedule\n"
         "X = vuegraf.schedule.floor_time(1, 60)\n",
         {("vuegraf.schedule", "<import>"), ("vuegraf.schedule", "<module>")}),
        ("import importlib\n"
         "class T:\n    m = importlib.import_module('vuegraf.naming')\n",
         {("vuegraf.naming", "T")}),
        ("from vuegraf.model import Scale\n"
         "def expected(kwh):\n    return kwh * Scale.MINUTE.watts_per_kwh\n",
         {("watts_per_kwh", "expected")}),
        ("from vuegraf.model import point_from_kwh\n",
         {("point_from_kwh", "<import>")}),
        ("from vuegraf.model import Point, Scale\n"
         "from vuegraf.simulator import bucket_floor\n"
         "def test_b():\n    assert Point and Scale and bucket_floor\n",
         set()),
    ],
)
def test_the_check_sees_every_form(source: str, expected: set[tuple[str, str]]) -> None:
    assert findings(source) == expected
