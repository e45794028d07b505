"""The chunked backup format against an in-memory fake of the Swift API."""

from __future__ import annotations

import os

import pytest

from stratus.volume import backup as fmt

CHUNK = 64 * 1024


class FakeSwift:
    """Just enough Swift: containers must exist before objects; 404 for what is missing."""

    def __init__(self):
        self.containers: dict[str, dict[str, bytes]] = {}
        self.puts = 0

    async def request(self, method: str, path: str, body: bytes | None):
        from urllib.parse import unquote

        parts = unquote(path).lstrip("/").split("/", 1)
        container = parts[0]
        name = parts[1] if len(parts) > 1 else None
        if name is None:
            if method == "PUT":
                created = container not in self.containers
                self.containers.setdefault(container, {})
                return (201 if created else 202), b""
            return 405, b""
        objects = self.containers.get(container)
        if objects is None:
            return 404, b"no container"
        if method == "PUT":
            objects[name] = bytes(body or b"")
            self.puts += 1
            return 201, b""
        if method == "GET":
            return (200, objects[name]) if name in objects else (404, b"")
        if method == "DELETE":
            return (204, b"") if objects.pop(name, None) is not None else (404, b"")
        return 405, b""


def make_image(path, size, writes):
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)


@pytest.fixture
def swift():
    return FakeSwift()


async def test_full_backup_skips_zero_chunks_and_restores_exactly(tmp_path, swift):
    src = tmp_path / "vol.raw"
    payload = os.urandom(1000)
    make_image(src, 8 * CHUNK, [(0, b"MARKER"), (5 * CHUNK + 7, payload)])
    store = fmt.SwiftStore(swift.request)
    meta = await fmt.write_backup(store, "bk", backup_id="b1", volume_id="v1", raw_path=src, size_gb=1,
                                  chunk_size=CHUNK)
    assert meta["objects_written"] == 2  # only the two chunks with data
    assert [i for i, c in enumerate(meta["chunks"]) if c] == [0, 5]
    names = set(swift.containers["bk"])
    assert "volume_v1/b1/metadata" in names and "volume_v1/b1/chunk-00000005" in names

    dest = tmp_path / "restored.raw"
    again = await fmt.read_metadata(store, "bk", "v1", "b1")
    await fmt.restore(store, "bk", again, dest)
    assert dest.read_bytes() == src.read_bytes()


async def test_incremental_stores_only_changed_chunks_and_restores_newest(tmp_path, swift):
    src = tmp_path / "vol.raw"
    make_image(src, 4 * CHUNK, [(0, b"A" * 100), (CHUNK, b"B" * 100), (3 * CHUNK, b"D" * 10)])
    store = fmt.SwiftStore(swift.request)
    full = await fmt.write_backup(store, "bk", backup_id="full", volume_id="v1", raw_path=src, size_gb=1,
                                  chunk_size=CHUNK)
    assert full["objects_written"] == 3
    make_image(src, 4 * CHUNK, [(0, b"A" * 100), (CHUNK, b"C" * 100), (3 * CHUNK, b"D" * 10)])
    incr = await fmt.write_backup(store, "bk", backup_id="incr", volume_id="v1", raw_path=src, size_gb=1,
                                  parent=full, chunk_size=CHUNK)
    assert incr["objects_written"] == 1
    assert incr["chunks"][0]["object"].startswith("volume_v1/full/")
    assert incr["chunks"][1]["object"].startswith("volume_v1/incr/")

    dest = tmp_path / "restored.raw"
    await fmt.restore(store, "bk", await fmt.read_metadata(store, "bk", "v1", "incr"), dest)
    assert dest.read_bytes() == src.read_bytes()
    # The full backup still restores its own (older) content.
    old = tmp_path / "old.raw"
    await fmt.restore(store, "bk", full, old)
    with open(old, "rb") as f:
        f.seek(CHUNK)
        assert f.read(3) == b"BBB"

    # Deleting the incremental removes only its own objects; the full one stays restorable.
    removed = await fmt.delete(store, "bk", incr)
    assert removed == 1
    assert not any(n.startswith("volume_v1/incr/") for n in swift.containers["bk"])
    await fmt.restore(store, "bk", full, old)


async def test_corrupt_chunk_is_detected(tmp_path, swift):
    src = tmp_path / "vol.raw"
    make_image(src, 2 * CHUNK, [(0, b"data")])
    store = fmt.SwiftStore(swift.request)
    meta = await fmt.write_backup(store, "bk", backup_id="b", volume_id="v", raw_path=src, size_gb=1,
                                  chunk_size=CHUNK)
    import zlib

    swift.containers["bk"]["volume_v/b/chunk-00000000"] = zlib.compress(b"other")
    with pytest.raises(fmt.BackupError, match="corrupt"):
        await fmt.restore(store, "bk", meta, tmp_path / "out.raw")


async def test_refusals_from_the_store_become_backup_errors(tmp_path):
    async def refuse(method, path, body):
        return 503, b"down"

    store = fmt.SwiftStore(refuse)
    src = tmp_path / "vol.raw"
    make_image(src, CHUNK, [(0, b"x")])
    with pytest.raises(fmt.BackupError, match="container"):
        await fmt.write_backup(store, "bk", backup_id="b", volume_id="v", raw_path=src, size_gb=1, chunk_size=CHUNK)


async def test_parent_with_other_chunk_size_is_refused(tmp_path, swift):
    src = tmp_path / "vol.raw"
    make_image(src, 2 * CHUNK, [(0, b"x")])
    store = fmt.SwiftStore(swift.request)
    full = await fmt.write_backup(store, "bk", backup_id="f", volume_id="v", raw_path=src, size_gb=1,
                                  chunk_size=CHUNK)
    with pytest.raises(fmt.BackupError, match="chunk size"):
        await fmt.write_backup(store, "bk", backup_id="i", volume_id="v", raw_path=src, size_gb=1, parent=full,
                               chunk_size=2 * CHUNK)
