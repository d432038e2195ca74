"""Log on state change: an outage's first failure once, its end once.

Users look at the log when a graph has a hole. One line when something starts failing, one
when it works again (with how long and how many failures) tells them what happened; a line
every cycle of an hour-long outage buries it. Every "failing / recovered" in vuegraf (an
account, a sink, the durable queue overflowing, an MQTT broker away) goes through here.
"""

from __future__ import annotations

import logging
from datetime import datetime


class StateLog:
    """One outage at a time of one thing: `failed` logs the first failure at `level` (and a
    failure of another `kind` again, since it is news), the rest at DEBUG; `recovered` logs
    once at INFO if there was an outage. Not thread-safe: one owner calls it."""

    def __init__(self, logger: logging.Logger, what: str, level: int = logging.ERROR) -> None:
        self.logger = logger
        self.what = what  # "Account Home", "influxdb-v1": who is failing, for the DEBUG lines
        self.level = level
        self.failures = 0  # in the current outage (or the sum of `count`s)
        self.since: datetime | None = None  # when the current outage began, if told
        self._kind: str | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(
        self,
        msg: str,
        *args: object,
        kind: str = "",
        count: int = 1,
        now: datetime | None = None,
        level: int | None = None,
        repeat: bool = True,
    ) -> bool:
        """Count a failure; log `msg % args` if it starts an outage or changes its kind,
        else at DEBUG (not at all with `repeat=False`). True when it was logged at the
        outage's level."""
        first = self.failures == 0
        news = first or kind != self._kind
        self.failures += count
        self._kind = kind
        if first:
            self.since = now
        if news:
            self.logger.log(self.level if level is None else level, msg, *args)
        elif repeat:
            again = "%s still failing (%d so far): " + msg
            self.logger.debug(again, self.what, self.failures, *args)
        return news

    def recovered(self, msg: str, *args: object) -> bool:
        """End the outage: log `msg % args` at INFO once if there was one. True if logged."""
        if not self.failures:
            return False
        self.logger.info(msg, *args)
        self.reset()
        return True

    def reset(self) -> None:
        """Forget the outage without a line (its end was said some other way)."""
        self.failures = 0
        self.since = None
        self._kind = None
