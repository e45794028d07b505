"""The storage back-end contract: what the volume agent asks of the place volumes live.

A driver only manages data. It never touches the database or the bus; the agent tells it which
handles (``location`` strings the driver returned earlier) are which. Calls that change data of
a volume that is being served to a guest receive that export (``live``) so the back end can do
the change through the process that holds the image open instead of under its feet.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class DriverError(Exception):
    """The back end could not do what was asked; the message becomes the volume's error reason."""


class LiveImage(Protocol):
    """An image currently opened by an export process (see stratus.volume.transport)."""

    async def snapshot(self, new_path: Path, backing: Path, size_bytes: int) -> None:
        """Put a new empty overlay (backed by ``backing``) on top of the served image and keep
        serving through it."""

    async def resize(self, size_bytes: int) -> None: ...


@dataclass
class Capacity:
    total_gb: float
    free_gb: float


GiB = 1024 ** 3


class VolumeDriver(abc.ABC):
    name = "abstract"

    @abc.abstractmethod
    def path(self, location: str) -> Path:
        """The local file (or device) an export serves for this handle."""

    @abc.abstractmethod
    def image_format(self, location: str) -> str:
        """'raw' or 'qcow2': how an export must open the handle."""

    @abc.abstractmethod
    async def create_blank(self, volume_id: str, size_gb: int) -> str: ...

    @abc.abstractmethod
    async def create_from_file(self, volume_id: str, source: Path, source_format: str, size_gb: int) -> str:
        """A volume holding the disk image in ``source`` (converted), grown to ``size_gb``."""

    @abc.abstractmethod
    async def create_from_snapshot(self, volume_id: str, snapshot_location: str, size_gb: int) -> str: ...

    @abc.abstractmethod
    async def freeze(self, volume_id: str, location: str, live: LiveImage | None) -> tuple[str, str]:
        """Make the volume's current content immutable and return (frozen handle, new volume handle).

        Snapshots, clones and backups are made from frozen content; the volume keeps writing
        to the new handle.
        """

    @abc.abstractmethod
    async def extend(self, location: str, size_gb: int, live: LiveImage | None) -> None: ...

    @abc.abstractmethod
    async def delete(self, location: str | None) -> None:
        """Forget one handle; data another handle still depends on stays until ``collect``."""

    @abc.abstractmethod
    async def collect(self, live_locations: set[str], busy_owners: frozenset[str] = frozenset()) -> list[str]:
        """Remove stored data no live handle needs any more (except data of the volumes in
        ``busy_owners``, whose operations are still running); returns what was removed."""

    @abc.abstractmethod
    async def export_raw(self, location: str, dest: Path, fmt: str = "raw") -> None:
        """Write the handle's content as a raw (sparse) file, or in another disk image format
        (``fmt``: qcow2, vmdk, ...), for backups and image uploads."""

    @abc.abstractmethod
    async def import_raw(self, volume_id: str, source: Path, size_gb: int) -> str:
        """A new handle holding the raw file's content (for restores)."""

    async def backing_of(self, location: str) -> str | None:
        """The handle this one reads unwritten data from (its backing file), if any."""
        return None

    async def merge_top(self, location: str) -> str:
        """Fold the handle into its backing handle and return that one (the caller made sure
        nothing else reads the backing handle)."""
        raise DriverError(f"the {self.name} back end cannot merge {location}")

    @abc.abstractmethod
    def capacity(self) -> Capacity: ...

    @abc.abstractmethod
    def scratch_dir(self) -> Path:
        """A directory on the same disk for temporary files (downloads, backup staging)."""
