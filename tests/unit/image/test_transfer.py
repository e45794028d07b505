"""The upload pipeline and the stores' checked reads, without HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random

import pytest

from stratus.image import formats
from stratus.image.drivers.base import CorruptData, StoreWriter
from stratus.image.drivers.file import CHECKSUM_XATTR, FileStore
from stratus.image.transfer import Pipeline

KiB = 1024


class AsyncMemoryWriter(StoreWriter):
    """A store writer without a blocking write (like s3/objectstore): copies what it is given."""

    def __init__(self, fail_after: int | None = None):
        self.data = bytearray()
        self.fail_after = fail_after

    async def write(self, data) -> None:
        await asyncio.sleep(0)
        if self.fail_after is not None and len(self.data) >= self.fail_after:
            raise OSError(5, "I/O error")
        self.data += data

    async def commit(self) -> str:
        return "mem"

    async def abort(self) -> None:
        self.data = bytearray()


def random_chunks(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice([1, 7, 4096, 65536, 262144, 300001, 1 << 20])
        out.append(data[pos:pos + n])
        pos += n
    return out


async def run_pipeline(writer: StoreWriter, chunks: list[bytes], **kw) -> Pipeline:
    pipe = Pipeline(writer, formats.Inspector("raw", 1 << 40), 1 << 40, "too big", **kw)
    try:
        for chunk in chunks:
            await pipe.push(chunk)
        await pipe.finish()
    except BaseException:
        await pipe.cancel()
        raise
    finally:
        pipe.close()
    return pipe


@pytest.mark.parametrize("blocking", [True, False])
async def test_pipeline_hashes_and_stores_every_byte_in_order_with_bounded_blocks(tmp_path, blocking):
    data = os.urandom(5 * 64 * KiB + 12345)
    if blocking:
        store = FileStore(tmp_path / "store")
        writer = await store.writer("img")
    else:
        writer = AsyncMemoryWriter()
    pipe = await run_pipeline(writer, random_chunks(data, 1), block_size=64 * KiB, depth=2, sha256=True)
    assert pipe.size == len(data)
    assert pipe.md5.hexdigest() == hashlib.md5(data).hexdigest()
    assert pipe.sha512.hexdigest() == hashlib.sha512(data).hexdigest()
    assert pipe.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    # Never more blocks than the depth, however many chunks arrived.
    assert pipe._allocated <= 2
    if blocking:
        location = await writer.commit()
        assert (tmp_path / "store" / location).read_bytes() == data
    else:
        assert bytes(writer.data) == data


async def test_pipeline_surfaces_a_store_error_and_stops(tmp_path):
    writer = AsyncMemoryWriter(fail_after=64 * KiB)
    with pytest.raises(OSError, match="I/O error"):
        await run_pipeline(writer, [os.urandom(32 * KiB) for _ in range(40)], block_size=64 * KiB, depth=2)


async def test_pipeline_refuses_past_the_limit():
    pipe = Pipeline(AsyncMemoryWriter(), formats.Inspector("raw", 1 << 40), 100 * KiB, "over the quota")
    try:
        await pipe.push(os.urandom(64 * KiB))
        with pytest.raises(Exception, match="over the quota"):
            await pipe.push(os.urandom(64 * KiB))
        await pipe.cancel()
    finally:
        pipe.close()


async def stored(tmp_path, data: bytes) -> tuple[FileStore, str]:
    store = FileStore(tmp_path / "store")
    writer = await store.writer("img")
    for pos in range(0, len(data), 1 << 20):
        await writer.write(data[pos:pos + (1 << 20)])
    return store, await writer.commit()


async def collect(stream) -> bytes:
    out = bytearray()
    async for chunk in stream:
        out += chunk
    return bytes(out)


async def test_file_store_records_a_fast_checksum_and_serves_intact_data(tmp_path):
    data = os.urandom(9 * (1 << 20) + 5)
    store, location = await stored(tmp_path, data)
    assert os.getxattr(store.path(location), CHECKSUM_XATTR).startswith(b"xxh3-64:")
    md5 = hashlib.md5(data).hexdigest()
    assert await collect(store.read_checked(location, len(data), md5)) == data
    assert await collect(store.read(location, 3, 10)) == data[3:13]
    assert await collect(store.read(location)) == data


@pytest.mark.parametrize("checksum", ["fast", "md5 fallback"])
@pytest.mark.parametrize("damage", ["flip", "truncate"])
async def test_corrupt_file_is_never_delivered_complete(tmp_path, checksum, damage):
    data = os.urandom(9 * (1 << 20))
    store, location = await stored(tmp_path, data)
    path = store.path(location)
    if checksum == "md5 fallback":
        os.removexattr(path, CHECKSUM_XATTR)
    if damage == "flip":
        with open(path, "r+b") as f:
            f.seek(len(data) - 100)
            f.write(b"\x00" if data[-100] else b"\x01")
    else:
        os.truncate(path, len(data) - 1)
    got = bytearray()
    with pytest.raises(CorruptData, match="does not match its checksum"):
        async for chunk in store.read_checked(location, len(data), hashlib.md5(data).hexdigest()):
            got += chunk
    assert len(got) < len(data) and data.startswith(bytes(got))


async def test_file_without_checksum_attribute_is_checked_by_md5(tmp_path):
    data = os.urandom(3 * (1 << 20))
    store, location = await stored(tmp_path, data)
    os.removexattr(store.path(location), CHECKSUM_XATTR)
    assert await collect(store.read_checked(location, len(data), hashlib.md5(data).hexdigest())) == data


async def test_abandoned_download_closes_the_file(tmp_path):
    data = os.urandom(12 * (1 << 20))
    store, location = await stored(tmp_path, data)
    before = len(os.listdir("/proc/self/fd"))
    stream = store.read_checked(location, len(data), hashlib.md5(data).hexdigest())
    await stream.__anext__()
    await stream.aclose()
    assert len(os.listdir("/proc/self/fd")) == before
