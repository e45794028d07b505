"""Data-path drivers of the network agent."""

from __future__ import annotations


def load(name: str, settings: dict):
    if name == "fake":
        from stratus.network.drivers.fake import FakeDriver

        return FakeDriver(settings)
    if name == "linuxbridge":
        from stratus.network.drivers.linuxbridge import LinuxBridgeDriver

        return LinuxBridgeDriver(settings)
    raise ValueError(f"unknown network agent driver {name!r}")
