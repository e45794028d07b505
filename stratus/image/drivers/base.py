"""The contract every image store keeps.

A store writes one image through a :class:`StoreWriter` (chunks in order, then ``commit`` or
``abort``): nothing is visible under the image's key until ``commit``, and ``abort`` leaves
nothing behind, so a failed or interrupted upload never leaves partial data. Reads stream a byte
range in bounded chunks. Blocking calls run in executors inside the store.

Whole-image reads can be checked (:meth:`Store.read_checked`): the last chunk is only handed out
once the data proved intact, so corrupt stored data is never delivered complete. The default
check is the MD5 the API recorded; a store that keeps a cheaper checksum of its own overrides it.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from contextlib import aclosing
from typing import AsyncIterator


class CorruptData(RuntimeError):
    """The stored bytes are not the ones that were uploaded."""


class StoreWriter(ABC):
    # True when write_blocking is available: a plain blocking call that the upload pipeline runs
    # in its own thread (no event-loop round trip per block).
    blocking = False

    @abstractmethod
    async def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; the caller may reuse its buffer once this returns."""

    def write_blocking(self, data: bytes | memoryview) -> None:
        """Append ``data`` from a worker thread (only when ``blocking`` is True)."""
        raise NotImplementedError

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

    def read_checked(self, location: str, size: int, md5: str) -> AsyncIterator[bytes]:
        """All ``size`` bytes at ``location``; raises :class:`CorruptData` instead of handing out
        the last chunk when they do not hash to ``md5`` (the image's recorded checksum)."""
        return md5_checked(self.read(location, 0, size), location, size, md5)

    @abstractmethod
    async def delete(self, location: str) -> None:
        """Remove the data; a location that is already gone is not an error."""

    async def close(self) -> None:
        """Release clients and threads."""


async def md5_checked(stream: AsyncIterator[bytes], location: str, size: int, md5: str) -> AsyncIterator[bytes]:
    """Pass ``stream`` through, hashing it on the side in a thread; the last chunk is held back
    until the MD5 and the size match."""
    loop = asyncio.get_running_loop()
    digest = hashlib.md5()
    held: bytes | None = None
    pending: asyncio.Future | None = None
    seen = 0
    async with aclosing(stream):
        async for chunk in stream:
            if pending is not None:
                await pending
            if held is not None:
                yield held
            seen += len(chunk)
            pending = loop.run_in_executor(None, digest.update, chunk)
            held = chunk
    if pending is not None:
        await pending
    if seen != size or digest.hexdigest() != md5:
        raise CorruptData(f"stored data at {location} does not match its checksum (size {seen}, md5 "
                          f"{digest.hexdigest()}; recorded {size}, {md5})")
    if held is not None:
        yield held
