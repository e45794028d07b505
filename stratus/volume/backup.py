"""Volume backups as chunked objects in the object store (through its Swift API).

Layout of one backup in its container::

    volume_<volume id>/<backup id>/chunk-<index, 8 digits>   zlib-compressed chunk data
    volume_<volume id>/<backup id>/metadata                  JSON, written last

The metadata names, for every chunk of the volume, the object that holds it and its SHA-256, or
``null`` for a chunk that is all zeros (never stored). An incremental backup hashes every chunk
and stores only those whose hash differs from the parent's; the others point at the parent's
(or an older ancestor's) objects, so a restore needs only the newest metadata. A backup that
others point into cannot be deleted (the API refuses while it has dependents), and deleting a
backup removes only the objects under its own prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import quote

import orjson

FORMAT_VERSION = 1
DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024

# (method, path relative to the account URL, body or None) -> (status, body bytes)
Requester = Callable[..., Awaitable[tuple[int, bytes]]]


class BackupError(Exception):
    pass


class SwiftStore:
    """The few Swift verbs a backup needs, over any requester (real client or a test fake)."""

    def __init__(self, request: Requester):
        self._request = request

    async def ensure_container(self, container: str) -> None:
        status, body = await self._request("PUT", f"/{quote(container)}", None)
        if status not in (201, 202):
            raise BackupError(f"the object store refused to create container {container!r}: {status} {body[:200]!r}")

    async def put(self, container: str, name: str, data: bytes) -> None:
        status, body = await self._request("PUT", f"/{quote(container)}/{quote(name)}", data)
        if status != 201:
            raise BackupError(f"the object store refused object {name!r}: {status} {body[:200]!r}")

    async def get(self, container: str, name: str) -> bytes:
        status, body = await self._request("GET", f"/{quote(container)}/{quote(name)}", None)
        if status != 200:
            raise BackupError(f"object {container}/{name} could not be read: {status}")
        return body

    async def delete(self, container: str, name: str) -> None:
        status, body = await self._request("DELETE", f"/{quote(container)}/{quote(name)}", None)
        if status not in (204, 404):
            raise BackupError(f"object {container}/{name} could not be deleted: {status}")


def prefix(volume_id: str, backup_id: str) -> str:
    return f"volume_{volume_id}/{backup_id}"


def _read_chunk(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _allocated(path: Path, offset: int, length: int) -> bool:
    """False when the range is a hole of the sparse file (read as zeros without reading it)."""
    import errno
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        start = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no data after offset
            return False
        return True  # the filesystem cannot tell: read it
    finally:
        os.close(fd)
    return start < offset + length


def _digest_and_pack(data: bytes) -> tuple[str, bool, bytes | None]:
    digest = hashlib.sha256(data).hexdigest()
    if not data.strip(b"\0"):
        return digest, True, None
    return digest, False, zlib.compress(data, 1)


async def write_backup(store: SwiftStore, container: str, *, backup_id: str, volume_id: str, raw_path: Path,
                       size_gb: int, parent: dict | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                       progress: Callable[[int, int], None] | None = None) -> dict:
    """Store the raw image at ``raw_path``; returns the metadata (also stored) with counts."""
    loop = asyncio.get_running_loop()
    total = raw_path.stat().st_size
    if parent is not None and parent.get("chunk_size") != chunk_size:
        raise BackupError("the parent backup uses a different chunk size; make a full backup")
    parent_chunks = parent["chunks"] if parent else []
    own = prefix(volume_id, backup_id)
    await store.ensure_container(container)
    chunks: list[dict | None] = []
    uploaded = 0
    count = -(-total // chunk_size)
    for index in range(count):
        offset = index * chunk_size
        if not _allocated(raw_path, offset, chunk_size):
            chunks.append(None)
            if progress:
                progress(index + 1, count)
            continue
        data = await loop.run_in_executor(None, _read_chunk, raw_path, offset, chunk_size)
        digest, zero, packed = await loop.run_in_executor(None, _digest_and_pack, data)
        if zero:
            chunks.append(None)
        else:
            previous = parent_chunks[index] if index < len(parent_chunks) else None
            if previous is not None and previous["sha256"] == digest and previous["length"] == len(data):
                chunks.append(previous)
            else:
                name = f"{own}/chunk-{index:08d}"
                await store.put(container, name, packed)
                uploaded += 1
                chunks.append({"object": name, "sha256": digest, "length": len(data)})
        if progress:
            progress(index + 1, count)
    meta = {"version": FORMAT_VERSION, "backup_id": backup_id, "volume_id": volume_id, "size_gb": size_gb,
            "size_bytes": total, "chunk_size": chunk_size, "parent_id": parent["backup_id"] if parent else None,
            "chunks": chunks, "objects_written": uploaded}
    await store.put(container, f"{own}/metadata", orjson.dumps(meta))
    return meta


async def read_metadata(store: SwiftStore, container: str, volume_id: str, backup_id: str) -> dict:
    raw = await store.get(container, f"{prefix(volume_id, backup_id)}/metadata")
    meta = orjson.loads(raw)
    if meta.get("version") != FORMAT_VERSION:
        raise BackupError(f"backup {backup_id} has metadata version {meta.get('version')}, expected {FORMAT_VERSION}")
    return meta


def _write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


async def restore(store: SwiftStore, container: str, meta: dict, dest: Path) -> None:
    """Write the backup's content into ``dest`` as a sparse raw file of the backed-up size."""
    loop = asyncio.get_running_loop()
    with open(dest, "wb") as f:
        f.truncate(meta["size_bytes"])
    for index, chunk in enumerate(meta["chunks"]):
        if chunk is None:
            continue
        packed = await store.get(container, chunk["object"])
        data = await loop.run_in_executor(None, zlib.decompress, packed)
        if hashlib.sha256(data).hexdigest() != chunk["sha256"] or len(data) != chunk["length"]:
            raise BackupError(f"chunk {index} of backup {meta['backup_id']} is corrupt (checksum mismatch)")
        await loop.run_in_executor(None, _write_at, dest, index * meta["chunk_size"], data)


async def delete(store: SwiftStore, container: str, meta: dict) -> int:
    """Remove the objects this backup wrote (not those it shares with its ancestors)."""
    own = prefix(meta["volume_id"], meta["backup_id"]) + "/"
    removed = 0
    for chunk in meta["chunks"]:
        if chunk is not None and chunk["object"].startswith(own):
            await store.delete(container, chunk["object"])
            removed += 1
    await store.delete(container, own + "metadata")
    return removed
