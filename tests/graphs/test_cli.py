"""`vuegraf-graph CONFIG --svg DIR`: the files it writes from a store, read back against the
values stored (the formulas of `svgcheck`), and its one-line refusals."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graphs import svgcheck as sc
from vuegraf.clock import FakeClock
from vuegraf.config import TagConfig, load_config
from vuegraf.graphs import layout as layouts
from vuegraf.graphs.cli import file_name, main
from vuegraf.graphs.read import SqliteGraphReader
from vuegraf.graphs.store import reader_for

SECRET = "s3cret-Graph-pw"
VIEWS = ("day", "week", "month", "year")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "vuegraf.sqlite"
    sc.fill_store(path)
    return path


def setup_dir(tmp_path: Path, filled: Path, layout: bool = True, **extra: object) -> Path:
    """A config beside a copy of the store (its default place) and, if asked, the layout the
    daemon would have left in the state directory."""
    shutil.copy(filled, tmp_path / "vuegraf.sqlite")
    data = {
        "accounts": [{"name": sc.ACCOUNT, "email": "me@example.com", "password": SECRET}],
        "timezone": "America/New_York",
        "stateDir": "state",
        **extra,
    }
    config = tmp_path / "vuegraf.json"
    config.write_text(json.dumps(data))
    config.chmod(0o600)
    if layout:
        layouts.save(tmp_path / "state", sc.panel_layout())
    return config


def run_graph(*args: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VUEGRAF_STATE_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "vuegraf.graphs.cli", *map(str, args)],
        capture_output=True, text=True, timeout=120, env=env,
    )


def test_writes_every_view_of_every_device_and_an_index(tmp_path, filled):
    config = setup_dir(tmp_path, filled)
    out = tmp_path / "www"
    proc = run_graph(config, "--svg", out, "--now", sc.NOW.isoformat())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [
        f"wrote 4 SVG files for 1 devices and index.html to {out}"
    ]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(["index.html"] + [f"Home/Panel-{v}.svg" for v in VIEWS])
    index = (out / "index.html").read_text()
    assert re.findall(r'<img src="([^"]+)"', index) == [f"Home/Panel-{v}.svg" for v in VIEWS]
    for view in VIEWS:
        root = sc.parse((out / f"Home/Panel-{view}.svg").read_text())
        assert root.attrib["data-view"] == view
    # The day file's mains line against the stored minutes.
    root = sc.parse((out / "Home/Panel-day.svg").read_text())
    ax = sc.axes(root)
    start, end, step = int(root.attrib["data-start"]), int(root.attrib["data-end"]), 60
    assert end - start == sc.DAY and start <= sc.NOW_T < end
    want = sc.expected(sc.MAINS, start, end, step, True, False)
    got = {
        b: w
        for run in sc.subpaths(sc.paths(root, "line")[sc.MAINS])
        for b, w in sc.to_buckets(ax, run, start, step)
    }
    assert sorted(got) == sorted(want)
    assert all(abs(w - want[b].mean) <= ax.watts_per_px for b, w in got.items())
    # The markup in a circuit's name came through as text, and no secret went anywhere.
    assert sc.ODD in sc.paths(root, "area")
    for text in [proc.stdout, proc.stderr] + [p.read_text() for p in out.rglob("*.*")]:
        assert SECRET not in text


def test_without_a_layout_the_store_series_are_grouped(tmp_path, filled):
    """No layout.json (the daemon never ran with this state directory): one device per
    account, every channel a line of its own; `clock` sets the instant, `--views` the files."""
    config = setup_dir(tmp_path, filled, layout=False)
    out = tmp_path / "www"
    code = main([str(config), "--svg", str(out), "--views", "day,year"], clock=FakeClock(sc.NOW))
    assert code == 0
    assert sorted(p.name for p in (out / "Home").iterdir()) == ["Home-day.svg", "Home-year.svg"]
    root = sc.parse((out / "Home/Home-year.svg").read_text())
    assert set(sc.paths(root, "line")) == {sc.MAINS, sc.KITCHEN, sc.ODD, sc.BALANCE, sc.FROM_GRID}
    assert int(root.attrib["data-end"]) - sc.NOW_T < 43_200  # drawn at the clock's time


def test_sqlite_reader_lists_its_series(filled, tmp_path):
    reader = SqliteGraphReader(filled, TagConfig())
    try:
        channels = sorted([sc.MAINS, sc.KITCHEN, sc.ODD, sc.BALANCE, sc.FROM_GRID])
        assert reader.series() == {sc.ACCOUNT: [("", c) for c in channels]}
        assert reader.series(sc.ACCOUNT) == reader.series()
        assert reader.series("Nobody") == {}
    finally:
        reader.close()


def test_two_devices_of_one_name_get_two_files(tmp_path, filled):
    config = setup_dir(tmp_path, filled, layout=False)
    panel = sc.panel_layout()[0].devices[0]
    twin = panel.__class__("202", panel.name, "", None, panel.channels)
    layouts.save(tmp_path / "state", (layouts.AccountEntry(sc.ACCOUNT, (panel, twin)),))
    out = tmp_path / "www"
    assert main([str(config), "--svg", str(out), "--views", "day"], clock=FakeClock(sc.NOW)) == 0
    assert sorted(p.name for p in (out / "Home").iterdir()) == ["Panel-202-day.svg",
                                                               "Panel-day.svg"]


def test_two_accounts_of_one_file_name_get_two_folders(tmp_path, filled):
    config = setup_dir(tmp_path, filled, layout=False)
    panel = sc.panel_layout()[0].devices[0]
    layouts.save(
        tmp_path / "state",
        (layouts.AccountEntry("Home 1", (panel,)), layouts.AccountEntry("Home_1", (panel,))),
    )
    out = tmp_path / "www"
    assert main([str(config), "--svg", str(out), "--views", "day"], clock=FakeClock(sc.NOW)) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["Home_1", "Home_1-2"]
    assert [p.name for p in (out / "Home_1-2").iterdir()] == ["Panel-day.svg"]


def test_bad_config_key_is_one_line_and_exit_2(tmp_path, filled):
    config = setup_dir(tmp_path, filled, updateIntervalSecs=0)
    proc = run_graph(config, "--svg", tmp_path / "www")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("updateIntervalSecs")
    assert not (tmp_path / "www").exists()


@pytest.mark.parametrize(
    ("args", "starts"),
    [
        (["--views", "day,decade"], "--views"),
        (["--account", "Nobody"], "--account"),
        (["--now", "yesterday"], "--now"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, filled, args, starts):
    config = setup_dir(tmp_path, filled)
    proc = run_graph(config, "--svg", tmp_path / "www", *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith(starts) and len(proc.stderr.strip().splitlines()) == 1


def test_file_names_are_safe():
    assert file_name("Garage / Shop") == "Garage_Shop"
    assert file_name("../..") == "_"
    assert file_name("Küche 2") == "Küche_2"
    assert file_name('a<b>:"c"|?*') == "a_b_c"


def test_a_missing_store_is_one_line_and_exit_1(tmp_path, filled):
    config = setup_dir(tmp_path, filled)
    (tmp_path / "vuegraf.sqlite").unlink()
    proc = run_graph(config, "--svg", tmp_path / "www")
    assert proc.returncode == 1
    assert proc.stderr.startswith("cannot read the store: ")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_reader_for_a_config_without_influxdb_is_its_sqlite_file(tmp_path, filled):
    config = load_config(setup_dir(tmp_path, filled, sqlitePath="elsewhere.sqlite"))
    reader = reader_for(config)
    try:
        assert isinstance(reader, SqliteGraphReader)
        assert reader.path == tmp_path / "elsewhere.sqlite"
    finally:
        reader.close()
