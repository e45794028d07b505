"""Images as files in a directory: written to a hidden temporary name, renamed on commit."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path
from typing import AsyncIterator

from stratus.image.drivers.base import Store, StoreWriter


STALE_PART_SECONDS = 3600


class FileWriter(StoreWriter):
    def __init__(self, store: "FileStore", final: Path):
        self.store = store
        self.final = final
        self.tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.part")
        self.fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)

    def _write_all(self, data) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    async def write(self, data) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write_all, data)

    def _commit(self) -> None:
        if self.store.fsync:
            os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        os.replace(self.tmp, self.final)

    async def commit(self) -> str:
        await asyncio.get_running_loop().run_in_executor(None, self._commit)
        return self.final.name

    async def abort(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None
        self.tmp.unlink(missing_ok=True)


class FileStore(Store):
    name = "file"
    description = "Images on the local filesystem"

    def __init__(self, directory: str | os.PathLike, *, fsync: bool = False):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        # Partial files of uploads cut short by a crash of a whole process. Only old ones: another
        # worker sharing the directory may be writing a fresh one right now.
        cutoff = time.time() - STALE_PART_SECONDS
        for stale in self.directory.glob(".*.part"):
            try:
                if stale.stat().st_mtime < cutoff:
                    stale.unlink(missing_ok=True)
            except OSError:
                pass

    def path(self, location: str) -> Path:
        # Locations are our own ids; refuse anything that could step outside the directory.
        if "/" in location or location.startswith(".") or not location:
            raise ValueError(f"invalid file store location {location!r}")
        return self.directory / location

    async def writer(self, key: str) -> StoreWriter:
        return FileWriter(self, self.path(key))

    async def read(self, location: str, offset: int = 0, length: int | None = None,
                   chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        fd = os.open(self.path(location), os.O_RDONLY | os.O_CLOEXEC)
        try:
            remaining = length if length is not None else os.fstat(fd).st_size - offset
            pos = offset
            while remaining > 0:
                data = await loop.run_in_executor(None, os.pread, fd, min(chunk_size, remaining), pos)
                if not data:
                    break
                pos += len(data)
                remaining -= len(data)
                yield data
        finally:
            os.close(fd)

    async def delete(self, location: str) -> None:
        self.path(location).unlink(missing_ok=True)

    def adopt(self, source: Path, key: str) -> str:
        """Move a finished file (a staged upload on the same filesystem) into the store."""
        final = self.path(key)
        os.replace(source, final)
        return final.name
