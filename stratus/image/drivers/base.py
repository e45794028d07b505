"""The contract every image store keeps.

A store writes one image through a :class:`StoreWriter` (chunks in order, then ``commit`` or
``abort``): nothing is visible under the image's key until ``commit``, and ``abort`` leaves
nothing behind, so a failed or interrupted upload never leaves partial data. Reads stream a byte
range in bounded chunks. Blocking calls run in executors inside the store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import AsyncIterator


class StoreWriter(ABC):
    @abstractmethod
    async def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; the caller may reuse its buffer once this returns."""

    @abstractmethod
    async def commit(self) -> str:
        """Make the data visible; returns the location to read it back with."""

    @abstractmethod
    async def abort(self) -> None:
        """Discard everything written (safe to call more than once, or after a failure)."""


class Store(ABC):
    name: str = ""
    description: str = ""

    @abstractmethod
    async def writer(self, key: str) -> StoreWriter:
        """A writer for the image ``key`` (its id)."""

    @abstractmethod
    def read(self, location: str, offset: int = 0, length: int | None = None,
             chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        """The bytes at ``location`` from ``offset``, ``length`` of them (all when None)."""

    @abstractmethod
    async def delete(self, location: str) -> None:
        """Remove the data; a location that is already gone is not an error."""

    async def close(self) -> None:
        """Release clients and threads."""
