"""The repository's documentation stands alone and does not rot silently.

- No file may point at notes kept outside the repository: a maintainer who clones it cannot
  follow such a pointer.
- docs/ARCHITECTURE.md names modules, classes and paths; each must exist, so a refactoring that
  moves one fails here until the page is brought up to date. Section pointers to the page from
  the code must name a heading it has.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
from pathlib import Path
from types import ModuleType

import vuegraf

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"

# Written split so that this file does not match itself.
OUTSIDE_REFERENCES = (
    "../" "shared",
    "shared/" "design",
    "DATA-" "MODEL",
    "SERVERS" ".md",
    "EMPORIA-" "API",
)
# Dotted words that are file names, not modules (`vuegraf.json`, `health.json`).
FILE_SUFFIXES = frozenset({"json", "sqlite", "sample", "md", "py", "yaml", "yml", "log", "toml"})
# Classes outside vuegraf that the page names with a member (`PyEmVue.login`).
EXTERNAL_CLASSES = frozenset({"PyEmVue"})
# Top-level folders of the repository whose paths the page may name.
PATH_ROOTS = ("src", "tests", "bench", "deploy", "docs", "prometheus")


def repository_files() -> list[Path]:
    """Tracked files plus new ones not ignored: what a commit would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def outside_references(paths: list[Path], root: Path) -> list[str]:
    """`path:line: text` for every line of `paths` that names a note outside the repository."""
    found = []
    needles = [n.encode() for n in OUTSIDE_REFERENCES]
    for path in paths:
        data = path.read_bytes()
        if not any(n in data for n in needles):
            continue
        for number, line in enumerate(data.splitlines(), 1):
            if any(n in line for n in needles):
                text = line.decode(errors="replace").strip()
                found.append(f"{path.relative_to(root)}:{number}: {text}")
    return found


def test_outside_references_are_found(tmp_path: Path) -> None:
    """The finder itself: each kind of pointer is caught, on the line it is on."""
    clean = tmp_path / "clean.py"
    clean.write_text('"""Day points are stamped 23:59:59 local time."""\n')
    files = [clean]
    for i, needle in enumerate(OUTSIDE_REFERENCES):
        planted = tmp_path / f"planted{i}.md"
        planted.write_text(f"first line\nsee {needle} for why\n")
        files.append(planted)
    found = outside_references(files, tmp_path)
    assert found == [
        f"planted{i}.md:2: see {needle} for why" for i, needle in enumerate(OUTSIDE_REFERENCES)
    ]


def test_no_file_points_outside_the_repository() -> None:
    files = repository_files()
    assert ROOT / "README.md" in files and Path(__file__) in files
    assert outside_references(files, ROOT) == []


# --- docs/ARCHITECTURE.md ------------------------------------------------------------------


def vuegraf_modules() -> dict[str, ModuleType]:
    """Every module of the package by dotted name (`__main__` left out: it runs the CLI)."""
    modules = {"vuegraf": vuegraf}
    for info in pkgutil.walk_packages(vuegraf.__path__, "vuegraf."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            modules[info.name] = importlib.import_module(info.name)
    return modules


def code_spans(text: str) -> list[str]:
    """Backquoted spans that are a dotted name (`vuegraf.sinks.queue`, `Daemon.run_cycle`),
    file names (`vuegraf.json`) left out."""
    spans = re.findall(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)`", text)
    return [s for s in spans if s.rsplit(".", 1)[-1] not in FILE_SUFFIXES]


def resolve(name: str, modules: dict[str, ModuleType]) -> bool:
    """Whether `vuegraf.a.b.C.d` is a module, optionally followed by attributes of it."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = modules.get(".".join(parts[:cut]))
        if module is None:
            continue
        target: object = module
        for attr in parts[cut:]:
            if not hasattr(target, attr):
                return False
            target = getattr(target, attr)
        return True
    return False


def unresolved_names(text: str, modules: dict[str, ModuleType]) -> tuple[list[str], int]:
    """(names in `text` that do not exist, how many names were checked).

    Checked: `vuegraf.…` names in full, and `Class.member` where `Class` is a vuegraf class
    or any other capitalised name but a known outside class. Lower-case `a.b` is left alone:
    it is as often a config key (`mqtt.topic`) as a module.
    """
    classes: dict[str, list[type]] = {}
    for dotted, module in modules.items():
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == dotted:
                classes.setdefault(value.__name__, []).append(value)
    names = set(re.findall(r"(?<![\w./-])vuegraf(?:\.[A-Za-z_]\w*)+", text))
    names = {n for n in names if n.rsplit(".", 1)[-1] not in FILE_SUFFIXES}
    names |= set(code_spans(text))
    missing = []
    checked = 0
    for name in sorted(names):
        head, _, rest = name.partition(".")
        if head == "vuegraf":
            ok = resolve(name, modules)
        elif head in classes:
            ok = any(resolve_attrs(cls, rest) for cls in classes[head])
        elif head[0].isupper() and head not in EXTERNAL_CLASSES:
            ok = False  # a class that no longer exists (or an outside one to list above)
        else:
            continue  # a config key, a JSON field (`locationProperties.deviceName`)...
        checked += 1
        if not ok:
            missing.append(name)
    return missing, checked


def resolve_attrs(target: object, dotted: str) -> bool:
    for attr in dotted.split("."):
        if not hasattr(target, attr):
            return False
        target = getattr(target, attr)
    return True


def repository_paths(text: str) -> list[str]:
    """Paths into the repository the text names (`src/vuegraf/sinks/queue.py`, `deploy/k8s/`)."""
    roots = "|".join(PATH_ROOTS)
    found = re.findall(rf"(?<![\w./<-])(?:{roots})/[\w./-]*", text)
    return sorted({p.rstrip(".-") for p in found})


def test_names_are_checked_and_a_stale_one_is_caught() -> None:
    """The checker itself, on a made-up page: what exists passes, what does not is named."""
    modules = vuegraf_modules()
    page = (
        "`vuegraf.sinks.queue` and vuegraf.sinks.queue.QueuedSink, `vuegraf.cli.main`, "
        "`QueuedSink.flush`, `PyEmVue.login`, `locationProperties.deviceName`, `mqtt.topic`, "
        "`vuegraf.json`, `health.json`; stale: `vuegraf.sinks.gone`, "
        "`vuegraf.emporia.NoSuchThing`, `vuegraf.cli.no_such_function`, "
        "`QueuedSink.no_such_method`, `RenamedClass.run`"
    )
    missing, checked = unresolved_names(page, modules)
    assert missing == [
        "QueuedSink.no_such_method",
        "RenamedClass.run",
        "vuegraf.cli.no_such_function",
        "vuegraf.emporia.NoSuchThing",
        "vuegraf.sinks.gone",
    ]
    assert checked == 9
    assert repository_paths("see src/vuegraf/cli.py, deploy/k8s/ and /opt/vuegraf/state.") == [
        "deploy/k8s/",
        "src/vuegraf/cli.py",
    ]


def test_every_name_the_architecture_page_gives_exists() -> None:
    text = ARCHITECTURE.read_text()
    missing, checked = unresolved_names(text, vuegraf_modules())
    assert missing == []
    assert checked >= 40  # the page names the code it describes; this is not a vacuous pass


def test_every_path_the_architecture_page_gives_exists() -> None:
    paths = repository_paths(ARCHITECTURE.read_text())
    assert [p for p in paths if not (ROOT / p).exists()] == []
    assert "tests/test_docs.py" in paths


def architecture_headings() -> set[str]:
    """The page's headings, without a leading section number (`5. The Emporia API`)."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", ARCHITECTURE.read_text(), re.M)
    return {re.sub(r"^\d+\. +", "", h) for h in headings}


def test_pointers_to_the_architecture_page_name_its_sections() -> None:
    """`docs/ARCHITECTURE.md, "Naming"` in a docstring or comment names a heading it has."""
    pointers = []
    for path in repository_files():
        if path.suffix == ".py":
            for section in re.findall(r'ARCHITECTURE\.md,? "([^"]+)"', path.read_text()):
                pointers.append((path.relative_to(ROOT).as_posix(), section))
    headings = architecture_headings()
    assert [(p, s) for p, s in pointers if s not in headings] == []
    assert ("src/vuegraf/naming.py", "Naming") in pointers


def test_readme_links_the_architecture_page() -> None:
    assert "](docs/ARCHITECTURE.md)" in (ROOT / "README.md").read_text()
