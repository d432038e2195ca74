"""The marks file: what a run saves of its holes, read back by the next one, in the format
older versions wrote too (so an existing install keeps its marks, and going back works)."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from vuegraf.backfill import Holes
from vuegraf.marks import MarksFile
from vuegraf.model import Scale

T = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # 1763899200 s


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def path_for(state_dir: Path, account: str) -> Path:
    """Where versions before this one kept an account's marks: the name's SHA-256, 16 digits."""
    return state_dir / f"marks-{hashlib.sha256(account.encode()).hexdigest()[:16]}.json"


def test_holes_saved_are_read_back_as_they_were(tmp_path: Path) -> None:
    saved = {
        Scale.MINUTE: {
            (1001, "1"): Holes(((at(1763300000), at(1763300600)), (at(1763890000),
                                                                   at(1763890120))),
                               at(1763899200)),
            (1001, "1,2,3"): Holes((), at(1763899140)),
        },
        Scale.DAY: {(4001, "1,2,3"): Holes((), at(1763787600))},
    }
    MarksFile(tmp_path, "Home").save(saved)
    assert MarksFile(tmp_path, "Home").load() == saved
    assert MarksFile(tmp_path, "Other").load() == {}  # another account, another file


def test_a_marks_file_of_the_older_format_is_still_read(tmp_path: Path) -> None:
    # Exactly what versions before the holes wrote: each series' mark, nothing else.
    path_for(tmp_path, "Home").write_text(json.dumps({
        "account": "Home",
        "marks": {"1MIN": {"1001|1": 1763899080.0, "1002|1,2,3": 1763295000.0},
                  "1H": {"1001|1": 1763895600.0}},
    }))
    assert MarksFile(tmp_path, "Home").load() == {
        Scale.MINUTE: {(1001, "1"): Holes((), at(1763899080)),
                       (1002, "1,2,3"): Holes((), at(1763295000))},
        Scale.HOUR: {(1001, "1"): Holes((), at(1763895600))},
    }


def test_the_file_keeps_the_marks_older_versions_read(tmp_path: Path) -> None:
    """Going back to a version without holes: it finds its marks (each series' oldest missing
    minute) in the same file, and only asks for more than needed."""
    MarksFile(tmp_path, "Home").save({Scale.MINUTE: {
        (1001, "1"): Holes(((at(1763300000), at(1763300600)),), at(1763899200)),
        (1001, "2"): Holes((), at(1763899140)),
    }})
    data = json.loads(path_for(tmp_path, "Home").read_text())
    assert data["account"] == "Home"
    assert data["marks"] == {"1MIN": {"1001|1": 1763300000.0, "1001|2": 1763899140.0}}


def test_an_unreadable_file_is_ignored_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path_for(tmp_path, "Home").write_text('{"marks": {"1MIN": {"1001|1": "yesterday"}}}')
    with caplog.at_level(logging.WARNING, logger="vuegraf"):
        assert MarksFile(tmp_path, "Home").load() == {}
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("Account Home: ignoring unreadable "), said


def test_a_scale_this_version_does_not_know_is_left_out(tmp_path: Path) -> None:
    path_for(tmp_path, "Home").write_text(json.dumps({
        "marks": {"15MIN": {"1001|1": 1763899080.0}, "1D": {"1001|1": 1763787600.0}},
    }))
    assert MarksFile(tmp_path, "Home").load() == {
        Scale.DAY: {(1001, "1"): Holes((), at(1763787600))}
    }


def test_without_a_state_directory_nothing_is_read_or_written(tmp_path: Path) -> None:
    marks = MarksFile(None, "Home")
    marks.save({Scale.MINUTE: {(1001, "1"): Holes((), T)}})
    assert marks.path is None and marks.load() == {}
    assert list(tmp_path.iterdir()) == []


def test_a_save_that_fails_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state directory should be")
    with caplog.at_level(logging.WARNING, logger="vuegraf"):
        MarksFile(blocked, "Home").save({Scale.MINUTE: {(1001, "1"): Holes((), T)}})
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and said[0].startswith("Account Home: cannot save "), said
