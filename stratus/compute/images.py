"""Images through the image service's public API: look up, download (verified, cached per host), upload."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import httpx

from stratus.common.errors import BadRequest, ServiceUnavailable
from stratus.compute.drivers.base import DriverError, ImageRef

log = logging.getLogger("stratus.compute.images")

CHUNK = 1 << 20


def image_ref(meta: dict) -> ImageRef:
    reserved = {"id", "name", "status", "visibility", "protected", "checksum", "owner", "size", "min_ram",
                "min_disk", "disk_format", "container_format", "created_at", "updated_at", "tags", "self", "file",
                "schema", "virtual_size", "os_hash_algo", "os_hash_value", "os_hidden", "locations", "direct_url",
                "stores"}
    return ImageRef(id=meta["id"], name=meta.get("name") or "", disk_format=meta.get("disk_format") or "raw",
                    container_format=meta.get("container_format") or "bare", size=meta.get("size") or 0,
                    checksum=meta.get("checksum"), os_hash_value=meta.get("os_hash_value"),
                    min_disk=meta.get("min_disk") or 0,
                    properties={k: v for k, v in meta.items() if k not in reserved})


class ImageLookup:
    """API side: validate imageRef with the caller's own token (so visibility rules are the image
    service's), with a short cache because every create asks."""

    def __init__(self, credentials, ttl: float = 15.0):
        self.credentials = credentials
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, dict]] = {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(30, connect=5))

    async def endpoint(self) -> str:
        try:
            return await self.credentials.endpoint("image")
        except LookupError:
            raise BadRequest("The image service is not available in this cloud, so imageRef cannot be used") from None

    async def get(self, token: str, image_id: str) -> dict:
        key = (token, image_id)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        base = await self.endpoint()
        try:
            resp = await self.client.get(f"{base}/v2/images/{image_id}", headers={"X-Auth-Token": token})
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"The image service did not answer: {exc}") from None
        if resp.status_code in (400, 404):
            raise BadRequest(f"Image {image_id} could not be found.")
        if resp.status_code != 200:
            raise ServiceUnavailable(f"The image service answered {resp.status_code} looking up image {image_id}")
        meta = resp.json()
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[key] = (now + self.ttl, meta)
        return meta

    async def create(self, token: str, body: dict) -> dict:
        base = await self.endpoint()
        resp = await self.client.post(f"{base}/v2/images", json=body, headers={"X-Auth-Token": token})
        if resp.status_code not in (200, 201):
            raise BadRequest(f"The image service refused to create the snapshot image: {resp.status_code} "
                             f"{resp.text[:300]}")
        return resp.json()

    async def aclose(self) -> None:
        await self.client.aclose()


class ImageCache:
    """Agent side: download an image once per host into ``cache_dir``, checksum verified."""

    def __init__(self, credentials, cache_dir: Path):
        self.credentials = credentials
        self.cache_dir = cache_dir
        self._locks: dict[str, asyncio.Lock] = {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10))

    async def _headers(self) -> dict:
        return {"X-Auth-Token": await self.credentials.token()}

    async def metadata(self, image_id: str) -> dict:
        base = await self.credentials.endpoint("image")
        resp = await self.client.get(f"{base}/v2/images/{image_id}", headers=await self._headers())
        if resp.status_code != 200:
            raise DriverError(f"image {image_id} could not be read from the image service ({resp.status_code})")
        return resp.json()

    async def fetch(self, ref: ImageRef) -> Path:
        lock = self._locks.setdefault(ref.id, asyncio.Lock())
        async with lock:
            path = self.cache_dir / ref.id
            if path.exists():
                return path
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".part")
            md5, sha512 = hashlib.md5(), hashlib.sha512()  # noqa: S324 — glance's checksum field is md5
            try:
                base = await self.credentials.endpoint("image")
            except LookupError:
                raise DriverError("the image service is not in the catalog; cannot download images") from None
            try:
                async with self.client.stream("GET", f"{base}/v2/images/{ref.id}/file",
                                              headers=await self._headers()) as resp:
                    if resp.status_code != 200:
                        raise DriverError(f"downloading image {ref.id} failed: the image service answered "
                                          f"{resp.status_code}")
                    with open(tmp, "wb") as f:
                        async for chunk in resp.aiter_bytes(CHUNK):
                            md5.update(chunk)
                            sha512.update(chunk)
                            f.write(chunk)
            except httpx.HTTPError as exc:
                tmp.unlink(missing_ok=True)
                raise DriverError(f"downloading image {ref.id} failed: {exc}") from None
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            if ref.checksum and md5.hexdigest() != ref.checksum:
                tmp.unlink(missing_ok=True)
                raise DriverError(f"image {ref.id} is corrupt: md5 {md5.hexdigest()} != {ref.checksum}")
            if ref.os_hash_value and sha512.hexdigest() != ref.os_hash_value:
                tmp.unlink(missing_ok=True)
                raise DriverError(f"image {ref.id} is corrupt: sha512 does not match os_hash_value")
            os.replace(tmp, path)
            return path

    async def upload(self, image_id: str, path: Path, disk_format: str) -> None:
        base = await self.credentials.endpoint("image")
        current = await self.metadata(image_id)
        if disk_format and current.get("disk_format") != disk_format:
            # The record was created with the source image's format; the driver knows what it wrote.
            resp = await self.client.patch(
                f"{base}/v2/images/{image_id}",
                content=json.dumps([{"op": "replace", "path": "/disk_format", "value": disk_format}]),
                headers={**await self._headers(),
                         "Content-Type": "application/openstack-images-v2.1-json-patch"})
            if resp.status_code != 200:
                raise DriverError(f"setting disk_format {disk_format} on image {image_id} failed: "
                                  f"{resp.status_code} {resp.text[:200]}")

        async def chunks():
            with open(path, "rb") as f:
                while True:
                    data = await asyncio.get_running_loop().run_in_executor(None, f.read, CHUNK)
                    if not data:
                        return
                    yield data

        headers = {**await self._headers(), "Content-Type": "application/octet-stream"}
        resp = await self.client.put(f"{base}/v2/images/{image_id}/file", content=chunks(), headers=headers)
        if resp.status_code not in (200, 201, 204):
            raise DriverError(f"uploading the snapshot to image {image_id} failed: {resp.status_code} "
                              f"{resp.text[:200]}")

    async def delete(self, image_id: str) -> None:
        """A snapshot that failed leaves no empty image behind."""
        try:
            base = await self.credentials.endpoint("image")
            await self.client.delete(f"{base}/v2/images/{image_id}", headers=await self._headers())
        except Exception as exc:
            log.warning("deleting the failed snapshot image %s: %s", image_id, exc)

    async def aclose(self) -> None:
        await self.client.aclose()
