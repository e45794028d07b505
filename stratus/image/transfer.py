"""Moving image bytes: upload (PUT file), stage + import, download, with one streaming pipeline.

Every byte is seen once: chunks are copied into a few reusable blocks; each full block goes to
the format inspector (which keeps only the head and the tail) and to one dedicated thread each
for MD5, SHA-512 and the store's write, while the event loop goes on receiving. Memory stays at
a few blocks whatever the image size. The image is claimed with ``UPDATE ... WHERE status =
'queued'`` so two uploads cannot race, and any failure (bad format, quota, client gone) aborts
the store's write, which leaves nothing behind, and puts the image back to ``queued``.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import queue
import threading
from contextlib import aclosing
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import urlsplit

import sqlalchemy as sa

from stratus.common.context import RequestContext
from stratus.common.db import utcnow
from stratus.common.errors import (ApiError, BadRequest, Conflict, Forbidden, PayloadTooLarge,
                                   RangeNotSatisfiable, ServiceUnavailable)
from stratus.image import formats
from stratus.image.drivers.base import CorruptData, Store, StoreWriter
from stratus.image.drivers.file import FileStore
from stratus.image.manager import ImageManager
from stratus.image.models import Image

log = logging.getLogger("stratus.image")

# Upload blocks: big enough that the per-block hand-offs cost nothing, few enough in flight
# (DEPTH) that memory stays flat.
BLOCK = 2 * 1024 * 1024
DEPTH = 4
# After refusing an upload part-way, read (and drop) at most this much more of the request body
# so the client sees our answer instead of a reset connection.
DRAIN_LIMIT = 256 * 1024 * 1024


# Digests a client may announce as properties when it creates the image (openstacksdk does with
# validate_checksum); when present the upload must match them.
MD5_KEY = "owner_specified.openstack.md5"
SHA256_KEY = "owner_specified.openstack.sha256"


class UploadInterrupted(BadRequest):
    """The client went away before sending every byte."""


class _Job:
    """One filled block on its way through the consumers; its buffer is reused when all are done."""

    __slots__ = ("buffer", "view", "left")

    def __init__(self, buffer: bytearray, view: memoryview, consumers: int):
        self.buffer = buffer
        self.view = view
        self.left = consumers


class Pipeline:
    """Hash, inspect and store one stream of bytes, the event loop only receiving.

    Incoming chunks are copied into one of ``depth`` reusable blocks of ``block_size`` bytes. A
    full block goes to one dedicated thread per job (MD5, SHA-512, optionally SHA-256, and the
    store's blocking write), each fed by its own queue and working through the blocks in order;
    hashlib and os.write release the GIL, so they run in parallel with each other and with the
    next receive. A block returns to the free list once every consumer is done with it; when none
    is free, the receive waits, which bounds memory to ``depth`` blocks whatever the image size.
    Stores without a blocking write get the blocks through an asyncio task instead.
    """

    def __init__(self, writer: StoreWriter, inspector: formats.Inspector, limit: int, limit_message: str,
                 *, sha256: bool = False, block_size: int = BLOCK, depth: int = DEPTH):
        self.loop = asyncio.get_running_loop()
        self.writer = writer
        self.inspector = inspector
        self.md5 = hashlib.md5()
        self.sha512 = hashlib.sha512()
        # Only when the uploader told us the SHA-256 it expects (owner_specified.openstack.sha256).
        self.sha256 = hashlib.sha256() if sha256 else None
        self.size = 0
        self.limit = limit
        self.limit_message = limit_message
        self.block_size = block_size
        self.depth = depth
        self.cancelled = False
        self._lock = threading.Lock()
        self._free: list[bytearray] = []
        self._allocated = 0
        self._outstanding = 0
        self._buffer: bytearray | None = None
        self._filled = 0
        self._wakeup: asyncio.Future | None = None
        self._errors: list[BaseException] = []
        jobs = [("md5", self.md5.update), ("sha512", self.sha512.update)]
        if self.sha256 is not None:
            jobs.append(("sha256", self.sha256.update))
        if writer.blocking:
            jobs.append(("store", writer.write_blocking))
        self._queues: list[queue.SimpleQueue] = []
        for name, fn in jobs:
            q: queue.SimpleQueue = queue.SimpleQueue()
            self._queues.append(q)
            threading.Thread(target=self._work, args=(q, fn), name=f"image-upload-{name}", daemon=True).start()
        self._store_queue: asyncio.Queue | None = None
        self._store_task: asyncio.Task | None = None
        if not writer.blocking:
            self._store_queue = asyncio.Queue()
            self._store_task = asyncio.create_task(self._store_loop(self._store_queue))
        self._consumers = len(jobs) + (0 if writer.blocking else 1)

    # -- consumers (worker threads and, for async stores, one task) --

    def _work(self, jobs: queue.SimpleQueue, fn) -> None:
        while (job := jobs.get()) is not None:
            if not self.cancelled and not self._errors:
                try:
                    fn(job.view)
                except BaseException as exc:  # handed to the event loop, raised by the next push
                    self._errors.append(exc)
            self._done(job)

    async def _store_loop(self, jobs: asyncio.Queue) -> None:
        while (job := await jobs.get()) is not None:
            if not self.cancelled and not self._errors:
                try:
                    await self.writer.write(job.view)
                except Exception as exc:
                    self._errors.append(exc)
            self._done(job)

    def _done(self, job: _Job) -> None:
        with self._lock:
            job.left -= 1
            last = job.left == 0
        if last:
            self.loop.call_soon_threadsafe(self._recycle, job)

    def _recycle(self, job: _Job) -> None:
        job.view.release()
        self._free.append(job.buffer)
        self._outstanding -= 1
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _wait_for_change(self) -> None:
        self._wakeup = self.loop.create_future()
        try:
            await self._wakeup
        finally:
            self._wakeup = None

    def _raise_error(self) -> None:
        if self._errors:
            raise self._errors[0]

    # -- the receiving side (event loop) --

    async def push(self, chunk: bytes) -> None:
        n = len(chunk)
        self.size += n
        if self.size > self.limit:
            raise PayloadTooLarge(self.limit_message)
        self._raise_error()
        source = memoryview(chunk)
        pos = 0
        while pos < n:
            if self._buffer is None:
                self._buffer = await self._take()
                self._filled = 0
            take = min(n - pos, self.block_size - self._filled)
            self._buffer[self._filled:self._filled + take] = source[pos:pos + take]
            self._filled += take
            pos += take
            if self._filled == self.block_size:
                self._dispatch()

    async def _take(self) -> bytearray:
        while True:
            self._raise_error()
            if self._free:
                return self._free.pop()
            if self._allocated < self.depth:
                self._allocated += 1
                return bytearray(self.block_size)
            await self._wait_for_change()

    def _dispatch(self) -> None:
        buffer, filled = self._buffer, self._filled
        self._buffer, self._filled = None, 0
        view = memoryview(buffer)[:filled]
        try:
            self.inspector.feed(view)
        except BaseException:
            view.release()
            self._free.append(buffer)
            raise
        job = _Job(buffer, view, self._consumers)
        self._outstanding += 1
        for q in self._queues:
            q.put(job)
        if self._store_queue is not None:
            self._store_queue.put_nowait(job)

    async def _settle(self) -> None:
        while self._outstanding:
            await self._wait_for_change()

    async def finish(self) -> None:
        if self._filled:
            self._dispatch()
        await self._settle()
        self._raise_error()

    async def cancel(self) -> None:
        """Stop the consumers' work; returns once no thread still touches a block or the writer
        (so the writer can be aborted safely)."""
        self.cancelled = True
        await asyncio.shield(self._settle())

    def close(self) -> None:
        """End the consumer threads (they finish the blocks already queued first)."""
        for q in self._queues:
            q.put(None)
        self._queues = []
        if self._store_queue is not None:
            self._store_queue.put_nowait(None)
            self._store_queue = None


class Transfers:
    def __init__(self, manager: ImageManager, store: Store, staging: FileStore):
        self.manager = manager
        self.db = manager.db
        self.settings = manager.settings
        self.store = store
        self.staging = staging
        self.tasks: set[asyncio.Task] = set()

    # ---- shared ------------------------------------------------------------------------------

    async def _claim(self, image_id: str, source: tuple[str, ...], target: str) -> None:
        async with self.db.session() as s:
            result = await s.execute(sa.update(Image).where(Image.id == image_id, Image.status.in_(source))
                                     .values(status=target, updated_at=utcnow()))
            if result.rowcount != 1:
                img = await s.get(Image, image_id)
                status = img.status if img else "deleted"
                raise Conflict(f"Image {image_id} is {status}; only a {' or '.join(source)} image accepts this "
                               f"(upload data to a new image instead).")

    async def _release(self, image_id: str, claimed: str, back_to: str = "queued") -> None:
        async with self.db.session() as s:
            await s.execute(sa.update(Image).where(Image.id == image_id, Image.status == claimed)
                            .values(status=back_to, updated_at=utcnow()))

    def _byte_limit(self, usage: dict, *, staging: bool) -> tuple[int, str]:
        cap = self.settings.image_size_cap
        limit, message = cap, f"The image is larger than the largest image accepted ({cap} bytes, image_size_cap)."
        quota = self.settings.image_stage_total if staging else self.settings.image_size_total
        used = usage["staged"] if staging else usage["size"]
        if quota >= 0 and quota - used < limit:
            limit = max(quota - used, 0)
            name = "image_stage_total" if staging else "image_size_total"
            message = (f"The upload would exceed the project's storage quota ({name} = {quota} bytes, "
                       f"{used} bytes already used); delete images or ask for a larger quota.")
        return limit, message

    async def _stream_into(self, writer: StoreWriter, stream: AsyncIterator[bytes], declared_format: str | None,
                           limit: int, limit_message: str, drain: AsyncIterator[bytes] | None = None,
                           expected: dict[str, str] | None = None) -> dict:
        expected = {k: v.lower() for k, v in (expected or {}).items() if v}
        inspector = formats.Inspector(declared_format, self.settings.max_virtual_size)
        pipe = Pipeline(writer, inspector, limit, limit_message, sha256=SHA256_KEY in expected)
        try:
            try:
                async for chunk in stream:
                    if chunk:
                        await pipe.push(chunk)
                await pipe.finish()
                virtual_size = inspector.finish()
            except formats.FormatError as exc:
                raise BadRequest(f"Image data refused: {exc}.") from None
            got = {MD5_KEY: pipe.md5.hexdigest(), SHA256_KEY: pipe.sha256.hexdigest() if pipe.sha256 else ""}
            for key, want in expected.items():
                if got[key] != want:
                    raise BadRequest(f"The uploaded data does not match the image's {key} ({want}); it hashes "
                                     f"to {got[key]}. Nothing was stored.")
        except BaseException as exc:
            await pipe.cancel()
            await writer.abort()
            if isinstance(exc, Exception) and not isinstance(exc, UploadInterrupted) and drain is not None:
                await self._drain(drain)
            raise
        finally:
            pipe.close()
        return {"size": pipe.size, "virtual_size": virtual_size, "checksum": pipe.md5.hexdigest(),
                "os_hash_algo": "sha512", "os_hash_value": pipe.sha512.hexdigest()}

    @staticmethod
    async def _drain(stream: AsyncIterator[bytes]) -> None:
        seen = 0
        try:
            async with asyncio.timeout(30):
                async for chunk in stream:
                    seen += len(chunk)
                    if seen > DRAIN_LIMIT:
                        break
        except Exception:
            pass

    def _check_declared_size(self, declared: int | None, limit: int, message: str) -> None:
        if declared is not None and declared > limit:
            raise PayloadTooLarge(message)

    # ---- upload (PUT /file) and stage (PUT /stage) --------------------------------------------

    async def upload(self, ctx: RequestContext, image_id: str, stream: AsyncIterator[bytes],
                     declared_size: int | None, *, stage: bool = False) -> None:
        img = await self.manager.get_record(ctx, image_id)
        self.manager.enforce(ctx, "image:upload_image" if not stage else "image:import", img)
        if img.status != "queued":
            raise Conflict(f"Image {img.id} is {img.status}; data can only be uploaded to a queued image.")
        usage = await self.manager.usage(img.owner, exclude=img.id)
        limit, message = self._byte_limit(usage, staging=stage)
        self._check_declared_size(declared_size, limit, message)
        expected = await self.manager.properties(img.id, (MD5_KEY, SHA256_KEY))
        claimed = "uploading" if stage else "saving"
        await self._claim(img.id, ("queued",), claimed)
        writer = None
        try:
            writer = await (self.staging.writer(img.id) if stage else self.store.writer(img.id))
            result = await self._stream_into(writer, _guard_disconnect(stream), img.disk_format, limit, message,
                                             drain=stream, expected=expected)
            try:
                location = await writer.commit()
            except BaseException:
                await writer.abort()
                raise
        except BaseException as exc:
            await asyncio.shield(self._release(img.id, claimed))
            if isinstance(exc, Exception) and not isinstance(exc, ApiError):
                raise store_failure(exc, img.id) from exc
            raise
        values = dict(result)
        if stage:
            values.update(staged=location)
            done = await self._finish(img.id, claimed, claimed, values)
            if not done:
                await self.staging.delete(location)
        else:
            values.update(store=self.store.name, location=location)
            done = await self._finish(img.id, claimed, "active", values)
            if not done:
                await self.store.delete(location)
        if not done:
            raise Conflict(f"Image {img.id} was deleted or changed while its data was uploading.")

    async def _finish(self, image_id: str, claimed: str, status: str, values: dict) -> bool:
        async with self.db.session() as s:
            result = await s.execute(sa.update(Image).where(Image.id == image_id, Image.status == claimed)
                                     .values(status=status, updated_at=utcnow(), **values))
            return result.rowcount == 1

    # ---- import (POST /import) ----------------------------------------------------------------

    def import_methods(self) -> list[str]:
        methods = ["glance-direct"]
        if self.settings.web_download_allowed_hosts:
            methods.append("web-download")
        return methods

    async def start_import(self, ctx: RequestContext, image_id: str, body) -> None:
        method = body.get("method") if isinstance(body, dict) else None
        if not isinstance(method, dict) or not isinstance(method.get("name"), str):
            raise BadRequest("The import request needs {\"method\": {\"name\": ...}}.")
        name = method["name"]
        if name not in self.import_methods():
            raise BadRequest(f"Import method {name!r} is not available here; available: "
                             f"{', '.join(self.import_methods())}.")
        stores = body.get("stores")
        if stores is not None and (not isinstance(stores, list) or any(s != self.store.name for s in stores)):
            raise BadRequest(f"Unknown store in 'stores'; this cloud has one store, {self.store.name!r}.")
        img = await self.manager.get_record(ctx, image_id)
        self.manager.enforce(ctx, "image:import", img)
        if name == "glance-direct":
            if img.status != "uploading" or not img.staged:
                raise Conflict(f"Image {img.id} is {img.status}; stage data first (PUT /v2/images/{img.id}/stage).")
            await self._claim(img.id, ("uploading",), "importing")
            self._spawn(self._import_staged(img.id, img.staged))
            return
        uri = method.get("uri")
        self._check_web_uri(uri)
        if img.status != "queued":
            raise Conflict(f"Image {img.id} is {img.status}; web-download imports into a queued image only.")
        usage = await self.manager.usage(img.owner, exclude=img.id)
        limit, message = self._byte_limit(usage, staging=False)
        await self._claim(img.id, ("queued",), "importing")
        self._spawn(self._import_web(img.id, uri, img.disk_format, limit, message))

    def _check_web_uri(self, uri) -> None:
        if not isinstance(uri, str):
            raise BadRequest("web-download needs method.uri, an http(s) URL.")
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"web-download URI {uri!r} must be an http or https URL.")
        allowed = self.settings.web_download_allowed_hosts
        host = parts.hostname
        hostport = f"{host}:{parts.port}" if parts.port else host
        if host not in allowed and hostport not in allowed:
            raise Forbidden(f"web-download from {hostport} is not allowed; allowed hosts: {', '.join(allowed)}.")

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _import_staged(self, image_id: str, staged: str) -> None:
        try:
            if isinstance(self.store, FileStore) and _same_fs(self.staging.directory, self.store.directory):
                location = await asyncio.get_running_loop().run_in_executor(
                    None, self.store.adopt, self.staging.path(staged), image_id)
            else:
                writer = await self.store.writer(image_id)
                try:
                    async for chunk in self.staging.read(staged):
                        await writer.write(chunk)
                    location = await writer.commit()
                except BaseException:
                    await writer.abort()
                    raise
            if not await self._finish(image_id, "importing", "active",
                                      {"store": self.store.name, "location": location, "staged": None}):
                await self.store.delete(location)
                return
            await self.staging.delete(staged)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(image_id, "importing", back_to="uploading"))
            raise
        except Exception:
            log.exception("import of staged image %s failed", image_id)
            await self._release(image_id, "importing", back_to="uploading")
            await self.manager.set_internal_property(image_id, "os_glance_failed_import", "glance-direct")

    async def _import_web(self, image_id: str, uri: str, disk_format: str | None, limit: int, message: str) -> None:
        import httpx

        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10), follow_redirects=False) as client:
                async with client.stream("GET", uri) as resp:
                    if resp.status_code != 200:
                        raise BadRequest(f"GET {uri} answered {resp.status_code} (redirects are not followed)")
                    writer = await self.store.writer(image_id)
                    result = await self._stream_into(writer, resp.aiter_raw(BLOCK), disk_format, limit, message)
                    location = await writer.commit()
            values = {**result, "store": self.store.name, "location": location}
            if not await self._finish(image_id, "importing", "active", values):
                await self.store.delete(location)
                return
            await self.manager.set_internal_property(image_id, "os_glance_failed_import", None)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(image_id, "importing"))
            raise
        except Exception as exc:
            level = logging.WARNING if isinstance(exc, (ApiError, httpx.HTTPError)) else logging.ERROR
            log.log(level, "web-download of image %s from %s failed: %s", image_id, uri, exc,
                    exc_info=level == logging.ERROR)
            await self._release(image_id, "importing")
            await self.manager.set_internal_property(image_id, "os_glance_failed_import", "web-download")

    # ---- download -----------------------------------------------------------------------------

    async def open_download(self, ctx: RequestContext, image_id: str, range_header: str | None):
        """(image, offset, length, partial) for a download, or (image, None, None, False) if no data."""
        img = await self.manager.get_record(ctx, image_id)
        self.manager.enforce(ctx, "image:download_image", img)
        if img.status == "deactivated" and not ctx.is_admin:
            raise Forbidden(f"Image {img.id} is deactivated; its data cannot be downloaded.")
        if img.status != "active" and img.status != "deactivated" or not img.location:
            return img, None, None, False
        size = img.size or 0
        if not range_header:
            return img, 0, size, False
        start, end = parse_range(range_header, size)
        return img, start, end - start + 1, True

    def read(self, img: Image, offset: int, length: int) -> AsyncIterator[bytes]:
        if self.settings.verify_downloads and offset == 0 and length == img.size and img.checksum:
            return self._read_checked(img)
        return self.store.read(img.location, offset, length)

    async def _read_checked(self, img: Image) -> AsyncIterator[bytes]:
        """A whole-image download whose last chunk is only sent once the store proved the data
        intact, so a client never receives a silently corrupted image complete (the connection is
        cut instead and the error logged)."""
        try:
            async with aclosing(self.store.read_checked(img.location, img.size, img.checksum)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except CorruptData as exc:
            log.error("image %s: %s; download cut", img.id, exc)
            raise CorruptData(f"stored data of image {img.id} does not match its checksum") from None

    async def delete_data(self, img: Image) -> None:
        try:
            if img.location:
                await self.store.delete(img.location)
            if img.staged:
                await self.staging.delete(img.staged)
        except Exception:
            log.exception("could not delete the data of deleted image %s", img.id)

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


def store_failure(exc: Exception, image_id: str) -> ApiError:
    """A store's own error as a clear API error (the details go to the log)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        log.error("image store is full while writing image %s", image_id)
        return PayloadTooLarge("The image store is full; the upload was discarded and the image is queued again.")
    log.error("image store failed while writing image %s: %r", image_id, exc)
    return ServiceUnavailable("The image store failed while writing the data; the upload was discarded and the "
                              "image is queued again. Retry later.")


def parse_range(header: str, size: int) -> tuple[int, int]:
    """The (first, last) byte of a single ``bytes=`` range; 416 when it cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise RangeNotSatisfiable(f"Only a single 'bytes=' range is supported, not {header!r}.",
                                  headers={"Content-Range": f"bytes */{size}"})
    first, sep, last = spec.strip().partition("-")
    try:
        if not sep:
            raise ValueError
        if first == "":
            n = int(last)
            if n <= 0:
                raise ValueError
            start, end = max(size - n, 0), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
            end = min(end, size - 1)
    except ValueError:
        raise RangeNotSatisfiable(f"Malformed Range header {header!r}.",
                                  headers={"Content-Range": f"bytes */{size}"}) from None
    if start < 0 or start >= size or end < start:
        raise RangeNotSatisfiable(f"Range {header!r} is outside the image's {size} bytes.",
                                  headers={"Content-Range": f"bytes */{size}"})
    return start, end


async def _guard_disconnect(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    from starlette.requests import ClientDisconnect

    try:
        async for chunk in stream:
            yield chunk
    except ClientDisconnect:
        raise UploadInterrupted("The client disconnected before sending all image data; "
                                "the image is queued again.") from None


def _same_fs(a: Path, b: Path) -> bool:
    try:
        return os.stat(a).st_dev == os.stat(b).st_dev
    except OSError:
        return False

