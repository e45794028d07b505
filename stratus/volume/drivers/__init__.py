"""Storage back ends of the volume agent (one small abstract class, see base.py)."""

from __future__ import annotations


def load(name: str, settings: dict):
    """The back end a volume agent was configured with (``[volume] driver``)."""
    if name == "file":
        from stratus.volume.drivers.file import FileDriver

        return FileDriver.from_settings(settings)
    raise ValueError(f"configuration key 'volume.driver' names unknown back end {name!r} (known: file)")
