"""The image service's `objectstore` store against a live object store (its public Swift API,
with a service user's token, as the image service uses it)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from stratus.common.auth import ServiceClient, ServiceCredentials
from stratus.image.drivers.objectstore import ObjectStoreStore
from tests.cloudfixture import destroy_cloud, start_cloud

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def oscloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-osimg-"))
    c = start_cloud(state, services=["identity", "objectstore"])
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def make_store(cloud, part_size=1024 * 1024):
    # identity + objectstore only: the objectstore service user stands in for image's
    def client():
        creds = ServiceCredentials(cloud.identity_url, "objectstore", cloud.secrets()["service_password"],
                                   client=httpx.AsyncClient(timeout=60))
        return ServiceClient(creds)
    return ObjectStoreStore(client, container="images-test", part_size=part_size)


def test_small_and_segmented_images_roundtrip_ranges_abort_delete(oscloud):
    async def run():
        store = make_store(oscloud)
        small = os.urandom(1000)
        w = await store.writer("img-small")
        await w.write(small)
        loc_small = await w.commit()
        assert b"".join([c async for c in store.read(loc_small)]) == small

        big = os.urandom(3 * 1024 * 1024 + 5000)
        w = await store.writer("img-big")
        for i in range(0, len(big), 300 * 1024):
            await w.write(big[i:i + 300 * 1024])
        loc = await w.commit()
        got = b"".join([c async for c in store.read(loc)])
        assert hashlib.md5(got).hexdigest() == hashlib.md5(big).hexdigest()
        part = b"".join([c async for c in store.read(loc, offset=1024 * 1024 - 10, length=100)])
        assert part == big[1024 * 1024 - 10:1024 * 1024 + 90]

        # an aborted upload leaves no segment and no object behind
        w = await store.writer("img-aborted")
        await w.write(os.urandom(2 * 1024 * 1024 + 1))
        assert w.segments
        await w.abort()
        base, headers = await store._base_and_headers()
        async with httpx.AsyncClient() as client:
            seg = await client.get(f"{base}/images-test_segments?prefix=img-aborted/", headers=headers)
            assert seg.status_code == 204
            obj = await client.head(f"{base}/images-test/img-aborted", headers=headers)
            assert obj.status_code == 404

        await store.delete(loc)
        await store.delete(loc_small)
        await store.delete(loc)  # already gone: not an error
        async with httpx.AsyncClient() as client:
            listing = await client.get(f"{base}/images-test_segments", headers=headers)
            assert listing.status_code == 204  # the segments went with the manifest
        with pytest.raises(RuntimeError):
            _ = [c async for c in store.read(loc)]
        await store.service.client.aclose()

    asyncio.run(run())
