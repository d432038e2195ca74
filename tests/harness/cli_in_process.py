"""Run `vuegraf.cli.main` inside the test process, and put back what it changes.

`main` installs its logging handler on the root logger (on the `sys.stderr` of the moment, which
under pytest's `capsys` is the captured one, so the test reads vuegraf's log lines from
`capsys.readouterr().err`), sets the levels of the `vuegraf` logger and of its chart-request
lines, routes uncaught exceptions and Python's warnings through logging, and installs handlers
for SIGTERM, SIGINT and SIGHUP. `main_state_restored` restores all of it afterwards, so the
next test in the same worker starts with pytest's own logging and signals.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextmanager
def main_state_restored() -> Iterator[None]:
    root = logging.getLogger()
    vuegraf = logging.getLogger("vuegraf")
    requests = logging.getLogger("vuegraf.collector.requests")
    handlers, level, vuegraf_level = root.handlers[:], root.level, vuegraf.level
    requests_level = requests.level
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    excepthook, thread_excepthook = sys.excepthook, threading.excepthook
    try:
        yield
    finally:
        sys.excepthook, threading.excepthook = excepthook, thread_excepthook
        logging.captureWarnings(False)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        root.handlers[:] = handlers
        root.setLevel(level)
        vuegraf.setLevel(vuegraf_level)
        requests.setLevel(requests_level)
