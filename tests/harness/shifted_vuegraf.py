"""The real `vuegraf` command with its clock moved by a fixed offset.

    python tests/harness/shifted_vuegraf.py --offset-seconds S -- CONFIG [vuegraf flags]

Runs `vuegraf.cli.main` exactly as `python -m vuegraf` does (argument parsing, config
loading, signals, reloads, every component); only the clock each run gets is the wall clock
plus S seconds, the same offset the test gives the simulator (see testtime.py).
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from vuegraf.cli import main as vuegraf_main

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, run as a script
from harness.testtime import ShiftedClock  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offset-seconds", type=float, required=True)
    parser.add_argument("vuegraf_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.vuegraf_args[1:] if args.vuegraf_args[:1] == ["--"] else args.vuegraf_args
    offset = timedelta(seconds=args.offset_seconds)
    return vuegraf_main(rest, clock_factory=lambda: ShiftedClock(offset))


if __name__ == "__main__":
    sys.exit(main())
