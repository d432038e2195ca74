"""`EmporiaAccount`: one configured account's session and device catalogue, as one object.

The collector, the history import, the exporter and `cli` hold one of these per account and
never need to know which half answers: requests and their counts are the session's, devices,
names and points the catalogue's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from pyemvue import PyEmVue

from vuegraf.clock import Clock
from vuegraf.config import AccountConfig, Config
from vuegraf.emporia.catalog import DeviceCatalog, DeviceInfo, UsageReading
from vuegraf.emporia.session import EmporiaSession, RateLimits, RetryPolicy
from vuegraf.model import Point, Scale
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

    # -- the session's ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.account.name

    @property
    def stats(self) -> Stats:
        return self.session.stats

    @property
    def token_file(self) -> Path | None:
        return self.session.token_file

    @property
    def requests(self) -> int:
        """Requests this account made today (UTC), for the daily budget."""
        return self.session.requests

    @property
    def not_before(self) -> datetime | None:
        """After a 429: the earliest time Emporia may be asked again (None: any time)."""
        return self.session.not_before

    # -- the catalogue's ----------------------------------------------------------------------

    @property
    def devices(self) -> dict[int, DeviceInfo]:
        return self.catalog.devices

    def refresh_devices_if_due(self) -> None:
        self.catalog.refresh_devices_if_due()

    def refresh_devices(self) -> None:
        self.catalog.refresh_devices()

    def usage(self, scale: Scale, instant: datetime) -> list[UsageReading]:
        return self.catalog.usage(scale, instant)

    def points(self, scale: Scale, bucket_start: datetime, stamp: datetime) -> list[Point]:
        return self.catalog.points(scale, bucket_start, stamp)

    def device_states(self) -> list[tuple[str, str, bool]]:
        return self.catalog.device_states()

    def chart_channels(self) -> list[tuple[int, str]]:
        return self.catalog.chart_channels()

    def series_name(self, device_gid: int, channel_num: str) -> tuple[str, str]:
        return self.catalog.series_name(device_gid, channel_num)

    def chart(
        self, device_gid: int, channel_num: str, scale: Scale, first: datetime, last: datetime
    ) -> list[tuple[datetime, float | None]]:
        return self.catalog.chart(device_gid, channel_num, scale, first, last)

    def chart_points(
        self, device_gid: int, channel_num: str, scale: Scale, first: datetime, last: datetime
    ) -> tuple[list[Point], list[datetime]]:
        return self.catalog.chart_points(device_gid, channel_num, scale, first, last)

    def chart_values_to_points(
        self,
        device_gid: int,
        channel_num: str,
        scale: Scale,
        values: Iterable[tuple[datetime, float | None]],
    ) -> list[Point]:
        return self.catalog.chart_values_to_points(device_gid, channel_num, scale, values)
