"""Every back-off rule in vuegraf, in one table.

When something fails, vuegraf waits before asking again, and how long depends on who pays
for the retry: Emporia's ~2 000 requests a day per account, the user's store, or nothing at
all. Each rule is a `Backoff` here; the modules that apply them import them from here, so a
maintainer sees them side by side and a test can read the same numbers.

A `Backoff` doubles from `first` up to `most`. Rules counted in ticks (an account, a store
read back) give how many ticks to let pass; the others are durations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Backoff:
    """Waits of `first`, then doubled after every further failure, never above `most`."""

    first: timedelta
    most: timedelta

    def doubled(self, wait: timedelta) -> timedelta:
        """The wait after one more failure than the one that waited `wait`."""
        return min(wait * 2, self.most)

    def after(self, failures: int) -> timedelta:
        """The wait after `failures` consecutive failures (the first waits `first`)."""
        wait = self.first
        for _ in range(max(0, min(failures, 64) - 1)):
            wait = self.doubled(wait)
        return wait


@dataclass(frozen=True)
class TickBackoff:
    """For something asked once per tick: after the first failure try again at the next
    tick, then let 1, 3, 7 ... ticks pass (2**n - 1), never more than `most_skipped`."""

    most_skipped: int

    def skipped(self, failures: int) -> int:
        """Ticks to let pass after `failures` consecutive failures."""
        if failures <= 1:
            return 0
        return min((1 << min(failures - 1, 32)) - 1, self.most_skipped)


# -- Emporia, per account ------------------------------------------------------------------

# A request Emporia answered 5xx: pyemvue tries it again at once inside the call, 3 tries in
# all with 0.5 s, then 1 s between them (4 s at most); a longer outage is the next rules' job.
EMPORIA_ATTEMPTS = 3
EMPORIA_RETRY = Backoff(first=timedelta(seconds=0.5), most=timedelta(seconds=4))

# An account whose live values failed: next tick, then 1, 3, 7 and at most 15 ticks skipped,
# each stretched by a random 0.8..1.2 (ACCOUNT_JITTER) so many installs that saw the same
# Emporia outage do not come back in step.
ACCOUNT = TickBackoff(most_skipped=15)
ACCOUNT_JITTER = (0.8, 1.2)
# An account whose login Emporia refused (a wrong e-mail or password): it will not heal by
# itself, and Cognito locks out an account tried too often, so 15 min, doubling up to 4 h.
# Editing vuegraf.json and sending SIGHUP (or restarting) tries again at once.
AUTH_REFUSED = Backoff(first=timedelta(minutes=15), most=timedelta(hours=4))
# A 429 without Retry-After: no request for 1 min, doubling while 429s go on, up to 30 min.
RATE_LIMITED = Backoff(first=timedelta(minutes=1), most=timedelta(minutes=30))
# A Retry-After longer than this is taken as this: a wrong header must not stop us for weeks.
RETRY_AFTER_CAP = timedelta(hours=6)
# Requests failing in a row before the session is thrown away and a new login made.
RELOGIN_AFTER_FAILURES = 5

# -- Hole filling, per series ---------------------------------------------------------------

# A chart request that failed: ask this series again after 1 min, doubling up to 1 h.
FILL_ERROR = Backoff(first=timedelta(minutes=1), most=timedelta(hours=1))
# A chart answer with no value at all (an offline plug): 5 min, doubling up to 1 h.
FILL_EMPTY = Backoff(first=timedelta(minutes=5), most=timedelta(hours=1))
# --historydays: tries per window, and the waits between them (seconds).
HISTORY_ATTEMPTS = 3
HISTORY_RETRY_DELAYS_S = (2.0, 8.0)

# -- The store ------------------------------------------------------------------------------

# A read back (where each series ends) that failed and may work later: next tick, then 1, 3,
# 7 and at most 15 ticks skipped, so a store that times out costs a timeout now and then.
STORE_READ = TickBackoff(most_skipped=15)
# A write that failed: points go to the durable queue, and no write is tried for 30 s.
STORE_WRITE_RETRY = timedelta(seconds=30)

# -- MQTT -----------------------------------------------------------------------------------

# Reconnecting to the broker (paho does it in its network thread): 1 s doubling up to 60 s.
MQTT_RECONNECT = Backoff(first=timedelta(seconds=1), most=timedelta(seconds=60))
