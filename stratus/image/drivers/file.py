"""Images as files in a directory: written to a hidden temporary name, renamed on commit.

Each file carries a fast checksum of its bytes (XXH3-64, tens of GB/s) in the extended attribute
``user.stratus.xxh3``, computed while it is written and set before the rename. A checked
whole-image read verifies that instead of re-hashing the MD5 (~0.6 GB/s), so the integrity check
on downloads costs almost nothing. Files without the attribute (a filesystem without user
xattrs, a file restored by a copy that dropped them) fall back to the MD5 check.

The fast checksum catches corruption (bit rot, truncation, a stray write); it is not a defence
against someone who can rewrite both the file and its attribute.
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import time
from contextlib import aclosing
from pathlib import Path
from typing import AsyncIterator

import xxhash

from stratus.image.drivers.base import CorruptData, Store, StoreWriter, md5_checked

STALE_PART_SECONDS = 3600
CHECKSUM_XATTR = "user.stratus.xxh3"
# Downloads read this much per system call: large enough that per-call overhead vanishes, small
# enough that the chunk being sent, the one read ahead and the socket's backlog stay a few MiB.
READ_CHUNK = 1024 * 1024
# Filesystems that keep no user xattrs answer one of these; the MD5 check takes over.
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.ENOSPC, errno.E2BIG}


def _checksum_value(digest: str, size: int) -> bytes:
    return f"xxh3-64:{digest}:{size}".encode()


class FileWriter(StoreWriter):
    blocking = True

    def __init__(self, store: "FileStore", final: Path):
        self.store = store
        self.final = final
        self.tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.part")
        self.fd: int | None = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        self.digest = xxhash.xxh3_64()
        self.size = 0

    def write_blocking(self, data) -> None:
        # Hashed first, from the same buffer that is written: the checksum is of exactly these bytes.
        self.digest.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    async def write(self, data) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.write_blocking, data)

    def _commit(self) -> None:
        try:
            os.setxattr(self.fd, CHECKSUM_XATTR, _checksum_value(self.digest.hexdigest(), self.size))
        except OSError as exc:
            if exc.errno not in _NO_XATTR:
                raise
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


def _read_block(fd: int, n: int, pos: int, digest) -> bytes:
    data = os.pread(fd, n, pos)
    if digest is not None:
        digest.update(data)
    return data


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
                   chunk_size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        async with aclosing(self._chunks(self.path(location), offset, length, chunk_size)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _chunks(self, path: Path, offset: int, length: int | None, chunk_size: int,
                      digest=None) -> AsyncIterator[bytes]:
        """Chunks of the file at ``path``; the next chunk is read (and hashed into ``digest``) in a
        thread while the caller sends the current one. Stops early if the file is shorter."""
        loop = asyncio.get_running_loop()
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        ahead: asyncio.Future | None = None
        try:
            remaining = length if length is not None else os.fstat(fd).st_size - offset
            pos = offset

            def read_next() -> asyncio.Future | None:
                nonlocal pos, remaining
                if remaining <= 0:
                    return None
                n = min(chunk_size, remaining)
                future = loop.run_in_executor(None, _read_block, fd, n, pos, digest)
                pos += n
                remaining -= n
                return future

            ahead = read_next()
            while ahead is not None:
                data = await ahead
                ahead = None
                if not data:
                    break
                ahead = read_next()
                yield data
        finally:
            if ahead is not None:
                # Never close the descriptor under a read still running in a thread.
                try:
                    await asyncio.shield(ahead)
                except BaseException:
                    pass
            os.close(fd)

    @staticmethod
    def recorded_checksum(path: Path) -> bytes | None:
        """The fast checksum the writer attached to the file, or None when it has none."""
        try:
            return os.getxattr(path, CHECKSUM_XATTR)
        except OSError as exc:
            if exc.errno == errno.ENODATA or exc.errno in _NO_XATTR:
                return None
            raise

    async def read_checked(self, location: str, size: int, md5: str) -> AsyncIterator[bytes]:
        path = self.path(location)
        recorded = self.recorded_checksum(path)
        if recorded is None:
            checked = md5_checked(self._chunks(path, 0, size, READ_CHUNK), location, size, md5)
            async with aclosing(checked):
                async for chunk in checked:
                    yield chunk
            return
        digest = xxhash.xxh3_64()
        held: bytes | None = None
        seen = 0
        async with aclosing(self._chunks(path, 0, size, READ_CHUNK, digest)) as chunks:
            async for chunk in chunks:
                if held is not None:
                    yield held
                seen += len(chunk)
                held = chunk
        if seen != size or _checksum_value(digest.hexdigest(), seen) != recorded:
            raise CorruptData(f"stored data at {location} does not match its checksum (size {seen}, "
                              f"xxh3-64 {digest.hexdigest()}; recorded {recorded.decode(errors='replace')}, "
                              f"image size {size})")
        if held is not None:
            yield held

    async def delete(self, location: str) -> None:
        self.path(location).unlink(missing_ok=True)

    def adopt(self, source: Path, key: str) -> str:
        """Move a finished file (a staged upload on the same filesystem) into the store."""
        final = self.path(key)
        os.replace(source, final)
        return final.name
