"""Test infrastructure: tests/harness/completeness.py's `compare` on small hand-made cases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from harness.completeness import Stored, compare

WANT = {("A", 60): 1.0, ("A", 120): 2.0, ("B", 60): 3.0}


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_exact_window_everything_stored_once_with_its_value() -> None:
    result = compare("points", {("A", 60): 1.0, ("A", 120): 2.0 + 1e-12, ("B", 60): 3.0}, WANT)
    assert result.ok, str(result)
    assert (result.expected, result.present, result.judged) == (3, 3, 3)


def test_exact_window_says_what_is_missing_wrong_extra_or_twice() -> None:
    stored = Stored()
    stored.add(("A", 60), 1.5)  # wrong value
    stored.add(("B", 60), 3.0)
    stored.add(("B", 60), 3.0)  # a second tag set
    stored.add(("B", 120), 9.0)  # the simulator has no value there
    stored.add(("A", 180), 9.0)  # after the last expected time: not judged
    stored.add(("C", 60), 9.0)  # a channel not expected: not judged
    result = compare("points", stored, WANT)
    assert not result.ok
    assert result.missing == [("A", 120)]
    assert result.wrong == [(("A", 60), 1.5, 1.0)]
    assert result.extra == [("B", 120)]
    assert result.duplicates == [("B", 60)]
    assert (result.expected, result.present, result.judged) == (3, 1, 3)
    assert "1 missing" in str(result) and "1 stored twice" in str(result)


def test_wall_clock_run_required_part_and_judged_window() -> None:
    # The model over a generous window; only ("A", 60) had to be stored.
    stored = {("A", 60): 1.0, ("B", 60): 3.0, ("A", 300): 9.0}
    result = compare("points", stored, WANT, required=[("A", 60)], window=(at(0), at(300)))
    assert result.ok, str(result)
    assert (result.expected, result.present, result.judged) == (1, 1, 2)
    # A point in the window where the model has none is extra; nothing required is fine.
    widened = compare("points", stored, WANT, required=(), window=(at(0), at(301)))
    assert widened.extra == [("A", 300)]


def test_required_points_must_be_part_of_want() -> None:
    with pytest.raises(AssertionError, match="not in `want`"):
        compare("points", {}, WANT, required=[("A", 240)])
