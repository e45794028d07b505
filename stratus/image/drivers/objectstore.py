"""Images as objects in Stratus's own object store, through its public Swift API.

The image service user's token (a service client, as every cross-service call) addresses its
own account (``AUTH_<service project>``, from the catalog). An image is written as segments of
``part_size`` bytes into ``<container>_segments`` while it uploads (memory stays bounded), and
only ``commit`` makes it visible under its key: a single object when it fits in one part,
otherwise a static large object manifest. ``abort`` deletes the segments already written, so an
interrupted upload leaves nothing behind. Reads stream with a Range request.

Location: ``objectstore://<container>/<key>``.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator
from urllib.parse import quote

import httpx
import orjson

from stratus.image.drivers.base import Store, StoreWriter

SCHEME = "objectstore://"


class ObjectStoreWriter(StoreWriter):
    def __init__(self, store: "ObjectStoreStore", key: str):
        self.store = store
        self.key = key
        self.buffer = bytearray()
        self.segments: list[dict] = []

    async def _flush_segment(self) -> None:
        name = f"{self.key}/{len(self.segments):08d}"
        body = bytes(self.buffer)
        self.buffer.clear()
        etag = await self.store.put(f"{self.store.segments}/{name}", body)
        self.segments.append({"path": f"/{self.store.segments}/{name}", "etag": etag,
                              "size_bytes": len(body)})

    async def write(self, data) -> None:
        self.buffer += data
        if len(self.buffer) >= self.store.part_size:
            await self._flush_segment()

    async def commit(self) -> str:
        await self.store.ensure_containers()
        if not self.segments:
            await self.store.put(f"{self.store.container}/{self.key}", bytes(self.buffer))
            self.buffer.clear()
        else:
            if self.buffer:
                await self._flush_segment()
            await self.store.put(f"{self.store.container}/{self.key}", orjson.dumps(self.segments),
                                 query="?multipart-manifest=put")
            self.segments = []
        return f"{SCHEME}{self.store.container}/{self.key}"

    async def abort(self) -> None:
        self.buffer = bytearray()
        segments, self.segments = self.segments, []
        for seg in segments:
            await self.store.delete_path(seg["path"].lstrip("/"))


class ObjectStoreStore(Store):
    name = "objectstore"
    description = "Images in the Stratus object store (Swift API)"

    def __init__(self, client_factory, *, container: str = "images",
                 part_size: int = 32 * 1024 * 1024):
        """``client_factory()`` returns a :class:`stratus.common.auth.ServiceClient`."""
        if part_size < 1024 * 1024:
            raise ValueError("configuration key 'image.objectstore_part_size' must be at least 1 MiB")
        if not container or "/" in container:
            raise ValueError("configuration key 'image.objectstore_container' must be a "
                             "container name without '/'")
        self._client_factory = client_factory
        self._client = None
        self.container = container
        self.segments = f"{container}_segments"
        self.part_size = part_size
        self._containers_ready = False
        self._lock = asyncio.Lock()

    @property
    def service(self):
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    async def _base_and_headers(self, extra: dict | None = None) -> tuple[str, dict]:
        creds = self.service.credentials
        base = await creds.endpoint("object-store")
        headers = {"X-Auth-Token": await creds.token()}
        headers.update(extra or {})
        return base, headers

    async def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in range(2):
            base, headers = await self._base_and_headers(kwargs.pop("headers", None))
            if attempt:
                headers["X-Auth-Token"] = await self.service.credentials.token(force=True)
            resp = await self.service.client.request(method, f"{base}/{path}", headers=headers,
                                                     **kwargs)
            if resp.status_code != 401:
                return resp
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "X-Auth-Token"}
        return resp

    async def ensure_containers(self) -> None:
        if self._containers_ready:
            return
        async with self._lock:
            if self._containers_ready:
                return
            for name in (self.container, self.segments):
                r = await self._request("PUT", quote(name))
                if r.status_code not in (201, 202):
                    raise RuntimeError(f"object store refused container {name}: "
                                       f"{r.status_code} {r.text[:200]}")
            self._containers_ready = True

    async def put(self, path: str, body: bytes, query: str = "") -> str:
        await self.ensure_containers()
        r = await self._request("PUT", quote(path) + query, content=body)
        if r.status_code != 201:
            raise RuntimeError(f"object store PUT {path} failed: {r.status_code} {r.text[:200]}")
        return r.headers.get("etag", "").strip('"')

    async def delete_path(self, path: str, query: str = "") -> None:
        r = await self._request("DELETE", quote(path) + query)
        if r.status_code not in (200, 204, 404):
            raise RuntimeError(f"object store DELETE {path} failed: {r.status_code} {r.text[:200]}")

    async def writer(self, key: str) -> StoreWriter:
        if "/" in key:
            raise ValueError("image keys must not contain '/'")
        await self.ensure_containers()
        return ObjectStoreWriter(self, key)

    @staticmethod
    def _path(location: str) -> str:
        if not location.startswith(SCHEME):
            raise ValueError(f"not an object store location: {location!r}")
        return location[len(SCHEME):]

    async def read(self, location: str, offset: int = 0, length: int | None = None,
                   chunk_size: int = 1024 * 1024) -> AsyncIterator[bytes]:
        path = self._path(location)
        headers = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            if length == 0:
                return
            headers["Range"] = f"bytes={offset}-{end}"
        base, h = await self._base_and_headers(headers)
        async with self.service.client.stream("GET", f"{base}/{quote(path)}", headers=h) as r:
            if r.status_code not in (200, 206):
                await r.aread()
                raise RuntimeError(f"object store GET {path} failed: {r.status_code}")
            async for chunk in r.aiter_bytes(chunk_size):
                yield chunk

    async def delete(self, location: str) -> None:
        await self.delete_path(self._path(location), "?multipart-manifest=delete")

    async def close(self) -> None:
        self._client = None


def service_client(service: str = "image"):
    """A service client for ``service`` built from this process's configuration (what
    ``runtime.client(service)`` gives), for the store factory, which has no runtime."""
    from stratus import config as config_mod
    from stratus.common.auth import ServiceClient, ServiceCredentials
    from stratus.runtime import load_or_create_secrets

    cfg = config_mod.load()
    password = cfg["auth"]["service_password"] or load_or_create_secrets(cfg.state_dir)["service_password"]
    return ServiceClient(ServiceCredentials(cfg.identity_url, service, password,
                                            client=httpx.AsyncClient(timeout=60)))


def create(cfg: dict, state_dir) -> ObjectStoreStore:
    return ObjectStoreStore(service_client, container=cfg.get("objectstore_container") or "images",
                            part_size=int(cfg.get("objectstore_part_size", 32 * 1024 * 1024)))
