"""Device and channel names as upstream vuegraf wrote them (docs/ARCHITECTURE.md, "Naming").

Dashboards select series by these strings, so they are a compatibility contract:
mains and single-channel devices are named after the device, numbered circuits
come from the account's `devices[].channels` map or fall back to
`<device name>-<channel number>`.
"""

from __future__ import annotations

from vuegraf.config import AccountConfig

MAINS = "1,2,3"
COMPUTED_CHANNELS = frozenset({"Balance", "TotalUsage", "MainsFromGrid", "MainsToGrid"})
# Channels Emporia never serves chart history for; they still get live points.
NO_CHART_CHANNELS = COMPUTED_CHANNELS


def device_name(location_name: str | None, device_gid: int) -> str:
    """The name Emporia gives a device, or its id as text when it has none."""
    name = (location_name or "").strip()
    return name if name else str(device_gid)


def channel_name(
    account: AccountConfig,
    device: str,
    channel_num: str,
    emporia_name: str | None = None,
    use_emporia_names: bool = False,
) -> str:
    """Name of one channel of `device` as written in the `device_name` tag."""
    if channel_num == MAINS:
        return device
    if channel_num in COMPUTED_CHANNELS:
        return f"{device}-{channel_num}"
    configured = account.device(device)
    if configured is not None:
        mapped = configured.channels.get(channel_num)
        if mapped:
            return mapped
    if use_emporia_names and emporia_name and emporia_name.strip():
        return emporia_name.strip()
    return f"{device}-{channel_num}"
