"""Every shell command block of README.md and docs/prometheus.md that needs no Docker, no
account and no running vuegraf is run as written, in a copy of the repository, and must
succeed. Blocks that need something else are marked `<!-- needs: ... -->` just above them.
(docs/docker.md has its own runner in tests/deploy.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "prometheus.md"]


def shell_blocks(path: Path) -> list[tuple[str, str | None]]:
    """(body, needs) for each ```sh block; needs is the marker's text or None."""
    text = path.read_text()
    blocks = []
    for match in re.finditer(r"^```sh\n(.*?)^```", text, re.M | re.S):
        before = text[: match.start()].rstrip("\n").splitlines()
        marker = re.match(r"<!-- needs: (.*?) -->", before[-1]) if before else None
        blocks.append((match.group(1), marker.group(1) if marker else None))
    return blocks


def test_blocks_found_and_commands_needing_docker_are_marked():
    blocks = [b for path in DOCS for b in shell_blocks(path)]
    assert len(blocks) >= 8
    for body, needs in blocks:
        if re.search(r"^\s*(docker|kubectl|influx )", body, re.M):
            assert needs, f"unmarked block needs Docker or a cluster:\n{body}"
    readme = shell_blocks(ROOT / "README.md")
    assert ("make demo\n", None) in readme  # the first of the two commands runs here
    assert ("make test\n", "self (this is the test suite)") in readme


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """The tracked files, with the project's .venv linked in (so `make` needs no install)."""
    dest = tmp_path_factory.mktemp("readme") / "vuegraf"
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    venv = ROOT / ".venv"
    if (venv / ".installed").exists():
        (dest / ".venv").symlink_to(venv)
    return dest


RUNNABLE = [
    pytest.param(body, id=f"{path.name}-{i}")
    for path in DOCS
    for i, (body, needs) in enumerate(shell_blocks(path))
    if needs is None
]


@pytest.mark.integration
@pytest.mark.parametrize("body", RUNNABLE)
def test_block_runs_as_written(checkout, body):
    env = dict(os.environ)
    venv_bin = checkout / ".venv" / "bin"
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}:/usr/sbin:/sbin"
    # The demo otherwise runs until Ctrl-C: here it stops after its first minute on screen,
    # however long a loaded machine takes to get there (the cap only ends a hung demo).
    env["VUEGRAF_DEMO_MINUTES"] = "1"
    env["VUEGRAF_DEMO_SECONDS"] = "240"
    if "sqlite3 demo/" in body and not (checkout / "demo" / "vuegraf.sqlite").exists():
        run_demo = subprocess.run(["make", "demo"], cwd=checkout, env=env, capture_output=True,
                                  text=True, timeout=300)
        assert run_demo.returncode == 0, run_demo.stdout + run_demo.stderr
    for tool in ("sqlite3", "promtool"):
        if re.search(rf"^\s*{tool}\b", body, re.M):
            from servers import require_binary

            require_binary(tool)
    result = subprocess.run(["bash", "-e", "-c", body], cwd=checkout, env=env,
                            capture_output=True, text=True, timeout=300)
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{body}\n{output}"
    if body.strip() == "make demo":
        assert "=== minute" in result.stdout and " W" in result.stdout
