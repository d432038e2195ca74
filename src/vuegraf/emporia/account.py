"""`EmporiaAccount`: one configured account's session and device catalogue, as one object.

The collector, the history import, the exporter and `cli` hold one of these per account and
never need to know which half answers: requests and their counts are the session's, devices,
names and points the catalogue's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pyemvue import PyEmVue

from vuegraf.clock import Clock
from vuegraf.config import AccountConfig, Config
from vuegraf.emporia.catalog import DeviceCatalog, DeviceInfo
from vuegraf.emporia.session import EmporiaSession, RateLimits, RetryPolicy
from vuegraf.stats import Stats


class EmporiaAccount:
    """One configured account: its pyemvue session (`session`) and its devices (`catalog`)."""

    def __init__(
        self,
        account: AccountConfig,
        config: Config,
        clock: Clock,
        stats: Stats | None = None,
        vue_factory: Callable[[], PyEmVue] | None = None,
        timeouts: tuple[float, float] = (6.03, 10.03),
        retry: RetryPolicy | None = None,
        limits: RateLimits | None = None,
    ) -> None:
        """The arguments after `clock` are the session's (see `EmporiaSession`; `retry`
        None is its default policy); of `config` each half is given only the settings it
        uses, the zone resolved once here."""
        self.account = account
        self.name = account.name
        self.config = config
        self.clock = clock
        self.session = EmporiaSession(
            account,
            clock,
            stats,
            config.state_dir,
            vue_factory,
            timeouts,
            retry if retry is not None else RetryPolicy(),
            limits,
        )
        self.catalog = DeviceCatalog(
            account,
            self.session,
            clock,
            refresh_secs=config.device_refresh_secs,
            emporia_names=config.use_emporia_channel_names,
            zone=config.zone,
        )
        self.stats = self.session.stats
        self.token_file = self.session.token_file
        # The catalogue's reads, under the names callers have always called on the account.
        catalog = self.catalog
        self.refresh_devices_if_due = catalog.refresh_devices_if_due
        self.refresh_devices = catalog.refresh_devices
        self.usage = catalog.usage
        self.points = catalog.points
        self.bucket_points = catalog.bucket_points
        self.electrical_points = catalog.electrical_points
        self.device_states = catalog.device_states
        self.chart_channels = catalog.chart_channels
        self.series_name = catalog.series_name
        self.chart = catalog.chart
        self.chart_values_to_points = catalog.chart_values_to_points

    # What changes while the account runs is read from its half at each use.

    @property
    def requests(self) -> int:
        return self.session.requests

    @property
    def not_before(self) -> datetime | None:
        return self.session.not_before

    @property
    def devices(self) -> dict[int, DeviceInfo]:
        return self.catalog.devices
