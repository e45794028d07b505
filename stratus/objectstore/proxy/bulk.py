"""Swift's bulk operations: many objects in one request.

Bulk delete: ``POST /v1/<account>?bulk-delete`` (or ``DELETE ...?bulk-delete``, or either sent
to a URL below the account) with a newline-separated list of URL-encoded ``/container/object``
or ``/container`` names, all in the account.

Each name is deleted through the rest of the pipeline as the caller (so ACLs apply). The reply
is 200 with Swift's report — JSON when the client accepts it (swiftclient does), plain text
otherwise: Number Deleted, Number Not Found, Response Status, Response Body, Errors.

Bulk upload: ``PUT /v1/<account>[/<container>[/<prefix>]]?extract-archive=tar|tar.gz|tar.bz2``
with a tar archive as the body. Each regular file in it becomes the object at
``<url path>/<its path in the archive>`` (the first part of that is the container, created
when missing); directories, links and other members are skipped, as are files that would land
directly in the account. Containers and objects are made through the rest of the pipeline as
the caller (ACLs, quotas, versioning apply). The reply is 200 with a report (Number Files
Created, Response Status, Response Body, Errors; root ``extract`` in XML), preceded by spaces
sent every few seconds while a long archive is worked through.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import AsyncIterator
from urllib.parse import unquote

import orjson

from .core import MAX_CONTAINER_NAME, MAX_OBJECT_NAME
from .http import (HEARTBEAT_INTERVAL, Req, Resp, SwiftError, quote_path, report_body,
                   report_type, spaces_until, status_line)
from .settings import ObjectStoreSettings

log = logging.getLogger("stratus.objectstore.proxy")

# the filters' defaults are the settings' own (Proxy passes the configured values)
MAX_DELETES = ObjectStoreSettings.max_deletes_per_request
MAX_FAILED = ObjectStoreSettings.max_failed_deletes
MAX_PATH = 1024 + 256 + 2


class BulkDelete:
    """``POST|DELETE ...?bulk-delete``: a list of objects and containers, deleted."""

    def __init__(self, app, core, *, max_deletes: int = MAX_DELETES,
                 max_failed: int = MAX_FAILED):
        self.app = app
        self.core = core
        self.max_deletes = max_deletes
        self.max_failed = max_failed

    async def __call__(self, req: Req) -> Resp:
        if "bulk-delete" not in req.query or req.method not in ("POST", "DELETE"):
            return await self.app(req)
        # the names are the account's wherever in it the request is sent (as in Swift:
        # clients send it to a container's or an object's URL too)
        raw = await req.read_body(self.max_deletes * (MAX_PATH + 1))
        names = [unquote(line.strip()) for line in raw.decode("utf-8", "surrogateescape")
                 .splitlines() if line.strip()]
        if len(names) > self.max_deletes:
            raise SwiftError(413, f"Maximum bulk deletes per request is {self.max_deletes}")
        deleted = not_found = 0
        errors: list[list] = []
        # objects first (in parallel, bounded), then containers, so "c/o, c" in one list works
        objects = [n for n in names if "/" in n.lstrip("/")]
        containers = [n for n in names if "/" not in n.lstrip("/")]
        sem = asyncio.Semaphore(16)
        aborted = False  # max_failed reached: no new deletes start, those under way finish

        async def delete_one(name: str):
            nonlocal deleted, not_found, aborted
            if aborted:
                return
            path = "/" + name.lstrip("/")
            if len(path) > MAX_PATH:
                errors.append([name, "400 Bad Request"])
                return
            sub = req.sub("DELETE", f"/{req.version}/{req.account}{path}")
            async with sem:
                try:
                    resp = await self.app(sub)
                    status = resp.status
                    await resp.discard()
                except SwiftError as exc:
                    status = exc.status
            if status // 100 == 2:
                deleted += 1
            elif status == 404:
                not_found += 1
            else:
                errors.append([name, status_line(status)])
            if len(errors) >= self.max_failed:
                aborted = True

        await asyncio.gather(*(delete_one(n) for n in objects))
        for name in containers:
            await delete_one(name)
        if aborted:
            response_status, response_body = "400 Bad Request", "Max delete failures exceeded"
        elif errors:
            statuses = {int(e[1].split()[0]) for e in errors}
            top = 400 if all(s < 500 for s in statuses) else 502
            if statuses == {401}:
                top = 401
            elif statuses <= {403, 401}:
                top = 403
            elif statuses == {409}:
                top = 409
            response_status, response_body = status_line(top), "There were errors deleting."
        elif not deleted and not not_found:
            response_status, response_body = "400 Bad Request", "Invalid bulk delete."
        else:
            response_status, response_body = "200 OK", ""
        fields = {"Number Deleted": deleted, "Number Not Found": not_found,
                  "Response Status": response_status, "Response Body": response_body}
        ctype = report_type(req.headers.get("accept", ""))
        return Resp(200, {"content-type": ctype}, report_body(ctype, fields, errors, "delete"))


# -- bulk upload (extract archive) ------------------------------------------------------------
# ?extract-archive=<value> → the compression tarfile's stream mode reads ("r|" + it)
ARCHIVE_FORMATS = {"tar": "", "tar.gz": "gz", "tar.bz2": "bz2"}
MAX_CONTAINERS_PER_EXTRACTION = ObjectStoreSettings.max_containers_per_extraction
MAX_FAILED_EXTRACTIONS = ObjectStoreSettings.max_failed_extractions
MEMBER_PIECE = 1 << 20      # a member's bytes go to the nodes in pieces of this size; one no
                            # larger is handed on whole (the nodes' small-body path)
# errors of a damaged archive; tarfile turns most of them into ReadError, not all
ARCHIVE_ERRORS = (tarfile.TarError, zlib.error, EOFError)

# pax extended attributes (GNU tar writes SCHILY.xattr., bsdtar LIBARCHIVE.xattr.) that
# become an object's metadata: user.mime_type its Content-Type, user.meta.<x> X-Object-Meta-<x>
_XATTR_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")


def xattr_headers(pax_headers: dict) -> dict[str, str]:
    """The object headers a member's pax extended attributes ask for (values in the form
    request headers arrive in: UTF-8 bytes read as latin-1)."""
    out = {}
    for key, value in pax_headers.items():
        prefix = next((p for p in _XATTR_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            continue  # times, sizes, names: not metadata
        attr = key[len(prefix):]
        if attr == "user.mime_type":
            name = "content-type"
        elif attr.startswith("user.meta.") and len(attr) > len("user.meta."):
            name = "x-object-meta-" + attr[len("user.meta."):].lower()
        else:
            continue
        out[name] = value.encode("utf-8", "surrogateescape").decode("latin-1")
    return out


class BodyFile:
    """A read-only sync file over a request body (bytes or an async iterator of bytes), for
    tarfile in stream mode: :meth:`read` runs in the extraction's worker thread and asks the
    event loop for each further piece of the body. At most one piece of the body (about a
    MiB, as the HTTP layer hands them on) is held here."""

    def __init__(self, body, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.pieces = None if isinstance(body, (bytes, bytearray)) or body is None \
            else body.__aiter__()
        self.piece = bytes(body or b"") if self.pieces is None else b""
        self.pos = 0
        self.pending: concurrent.futures.Future | None = None
        self.closed = False

    async def prefetch(self) -> None:
        """Take the first piece on the loop: the client is asked for its body (its 100
        Continue goes out) before any answer does."""
        if self.pieces is not None:
            self.piece = await self._next_piece()

    async def _next_piece(self) -> bytes:
        try:
            return bytes(await self.pieces.__anext__())
        except StopAsyncIteration:
            self.pieces = None
            return b""

    def read(self, size: int = -1) -> bytes:
        out = []
        while size != 0:
            if self.pos >= len(self.piece):
                if self.pieces is None:
                    break  # the end of the body
                self.piece, self.pos = self._fetch(), 0
                continue
            end = len(self.piece) if size < 0 else self.pos + size
            taken = self.piece[self.pos:end]
            self.pos += len(taken)
            if size > 0:
                size -= len(taken)
            out.append(taken)
        return b"".join(out)

    def _fetch(self) -> bytes:
        if self.closed:
            raise tarfile.ReadError("the extraction was stopped")
        self.pending = asyncio.run_coroutine_threadsafe(self._next_piece(), self.loop)
        try:
            return self.pending.result()
        finally:
            self.pending = None

    def close(self) -> None:
        """Called on the loop: a read waiting for the body gives up at once (its future is
        cancelled), later ones fail; the worker thread is never left waiting."""
        self.closed = True
        pending = self.pending
        if pending is not None:
            pending.cancel()


class ArchiveReader:
    """A tar archive read from a request body as it arrives, one member after another.

    Why a worker thread: tarfile wants a sync file object, and the body is an async stream.
    Stream mode (``r|``, ``r|gz``, ``r|bz2``) reads strictly forward, so fed by a
    :class:`BodyFile` the archive is never held whole (spooling it to a temporary file first
    would cost a disk copy of every upload and a wait for all of it before the first object
    is stored). Every tarfile call, and so all decompression, runs in one thread of its own:
    the event loop is never blocked by it, and the calls are serialized by construction (the
    tar stream has one position)."""

    def __init__(self, body, compression: str):
        self.loop = asyncio.get_running_loop()
        self.file = BodyFile(body, self.loop)
        self.compression = compression
        self.worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="extract-archive")
        self.tar: tarfile.TarFile | None = None

    def _call(self, fn, *args):
        return self.loop.run_in_executor(self.worker, fn, *args)

    async def open(self) -> None:
        await self.file.prefetch()
        self.tar = await self._call(lambda: tarfile.open(
            mode="r|" + self.compression, fileobj=self.file))

    async def next_member(self) -> tarfile.TarInfo | None:
        """The next member (the unread rest of the previous one is skipped), None at the
        end of the archive."""
        return await self._call(self.tar.next)

    async def member_body(self, member: tarfile.TarInfo) -> bytes | AsyncIterator[bytes]:
        """A regular member's bytes: whole when small, else a stream of pieces."""
        data = await self._call(self.tar.extractfile, member)
        if member.size <= MEMBER_PIECE:
            content = await self._call(data.read)
            if len(content) != member.size:
                raise tarfile.ReadError("unexpected end of data")
            return content
        return self._pieces(data, member.size)

    async def _pieces(self, data, size: int):
        remaining = size
        while remaining:
            piece = await self._call(data.read, min(MEMBER_PIECE, remaining))
            if not piece:
                raise tarfile.ReadError("unexpected end of data")
            remaining -= len(piece)
            yield piece

    def close(self) -> None:
        self.file.close()
        self.worker.shutdown(wait=False, cancel_futures=True)


@dataclass
class Progress:
    """What an extraction has done so far (kept when it stops half-way)."""
    created: int = 0
    errors: list[list[str]] = field(default_factory=list)  # [quoted name, status line]


class ExtractFailed(Exception):
    """Stops an extraction: the report says ``status`` and ``message``."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message


class BulkUpload:
    """``PUT ...?extract-archive=<format>``: a tar archive's files become objects."""

    def __init__(self, app, core, *, max_containers: int = MAX_CONTAINERS_PER_EXTRACTION,
                 max_failed: int = MAX_FAILED_EXTRACTIONS,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL):
        self.app = app
        self.core = core
        self.max_containers = max_containers
        self.max_failed = max_failed
        self.heartbeat_interval = heartbeat_interval

    async def __call__(self, req: Req) -> Resp:
        value = req.query.get("extract-archive")
        if value is None or req.method != "PUT" or not req.account:
            return await self.app(req)
        ctype = report_type(req.headers.get("accept", ""))
        compression = ARCHIVE_FORMATS.get(value.strip().lower().strip("."))
        if compression is None:
            # refused before any of the body is read: a plain 400, its text a report too
            fields = self._fields(0, 400, f"Unsupported archive format {value!r}: use one "
                                          f"of {', '.join(ARCHIVE_FORMATS)}")
            return Resp(400, {"content-type": ctype},
                        report_body(ctype, fields, [], "extract"))
        work = asyncio.ensure_future(self.extract(req, compression))
        # the first thing the work does is ask for the body: the client's 100 Continue goes
        # out before the 200, never after it. Most archives are done within the interval and
        # answered in one piece.
        try:
            finished = (await asyncio.wait({work}, timeout=self.heartbeat_interval))[0]
        except asyncio.CancelledError:  # the request is abandoned: so is its work
            work.cancel()
            raise
        if finished:
            fields, errors = work.result()
            return Resp(200, {"content-type": ctype},
                        report_body(ctype, fields, errors, "extract"))
        return Resp(200, {"content-type": ctype}, self._heartbeat(work, ctype),
                    on_close=lambda: work.done() or work.cancel())

    async def _heartbeat(self, work: asyncio.Future, ctype: str):
        """Spaces while the work goes on (so neither the client nor a proxy between gives
        up on a quiet connection), then the report."""
        try:
            async for space in spaces_until(work, self.heartbeat_interval):
                yield space
            fields, errors = work.result()
            yield b"\r\n\r\n" + report_body(ctype, fields, errors, "extract")
        finally:
            if not work.done():
                work.cancel()

    @staticmethod
    def _fields(created: int, status: int, message: str = "") -> dict:
        return {"Number Files Created": created, "Response Status": status_line(status),
                "Response Body": message}

    async def extract(self, req: Req, compression: str) -> tuple[dict, list]:
        """Store the archive's files; the report's fields and its errors
        ([quoted name, status line], ...). Never raises for what the client sent."""
        done = Progress()
        outcome: tuple[int, str] | None = None
        reader = ArchiveReader(req.body, compression)
        try:
            chunked = "chunked" in req.headers.get("transfer-encoding", "").lower()
            if req.content_length is None and not chunked:
                raise ExtractFailed(411, "Missing Content-Length or chunked Transfer-Encoding")
            await self._extract_members(req, reader, done)
        except ExtractFailed as exc:
            outcome = (exc.status, exc.message)
        except SwiftError as exc:  # the body could not be read (a client that went away)
            outcome = (exc.status, exc.message)
        except ARCHIVE_ERRORS as exc:
            outcome = (400, f"Invalid Tar File: {exc}")
        except Exception:
            log.exception("extracting an archive into %s", req.path)
            outcome = (500, "An unexpected error occurred while extracting the archive")
        finally:
            reader.close()
        if outcome is None:
            if done.errors:
                statuses = {int(e[1].split()[0]) for e in done.errors}
                outcome = (502 if any(s >= 500 for s in statuses) else 400, "")
            elif not done.created:
                outcome = (400, "Invalid Tar File: No Valid Files")
            else:
                outcome = (201, "")
        return self._fields(done.created, *outcome), done.errors

    async def _extract_members(self, req: Req, reader: ArchiveReader, done: Progress) -> None:
        errors = done.errors
        # where the archive's paths start: the account, a container or a prefix in one
        base = "/".join(p for p in (req.container, req.obj) if p).rstrip("/")
        account_path = f"/{req.version}/{req.account}"
        containers_created = 0
        # container → the failure to check or create it, or None when it is there
        containers: dict[str, list | None] = {}
        await reader.open()
        while len(errors) < self.max_failed:
            member = await reader.next_member()
            if member is None:
                break
            if not member.isreg():
                continue  # directories, links, devices: nothing to store
            name = member.name
            if name.startswith("./"):
                name = name[2:]
            path = name.lstrip("/")
            if base:
                path = f"{base}/{path}"
            if "/" not in path:
                continue  # a file in the account itself, outside any container
            container, _, obj = path.partition("/")
            shown = quote_path(path[:MAX_PATH])
            problem = self._name_problem(container, obj)
            if problem is None and member.size > self.core.max_file_size:
                problem = 413
            if problem is not None:
                errors.append([shown, status_line(problem)])
                continue
            if container not in containers:
                failure, made = await self._ensure_container(
                    req, account_path, container,
                    may_create=containers_created < self.max_containers)
                containers[container] = failure
                containers_created += made
            status = await self._put_member(req, reader, member,
                                            f"{account_path}/{container}/{obj}")
            # a container that could not be checked or made is reported (once) only when its
            # object fails too: an ACL may let the caller write where it cannot read
            failure, containers[container] = containers[container], None
            if status // 100 == 2:
                done.created += 1
                continue
            if failure is not None:
                errors.append(failure)
            errors.append([shown, status_line(status)])
            if status == 401:
                raise ExtractFailed(401, "Unauthorized: this request requires a valid token")

    @staticmethod
    def _name_problem(container: str, obj: str) -> int | None:
        """Why a member's destination cannot be an object: 412 for names that are not
        UTF-8 (or hold a NUL), 400 for empty or too long ones; None when it can."""
        try:
            raw_container, raw_obj = container.encode("utf-8"), obj.encode("utf-8")
        except UnicodeEncodeError:  # bytes that were not UTF-8, as surrogate escapes
            return 412
        if "\x00" in container or "\x00" in obj:
            return 412
        if not container or not obj or len(raw_container) > MAX_CONTAINER_NAME \
                or len(raw_obj) > MAX_OBJECT_NAME:
            return 400
        return None

    async def _status(self, sub: Req) -> int:
        try:
            resp = await self.app(sub)
        except SwiftError as exc:
            return exc.status
        await resp.discard()
        return resp.status

    async def _ensure_container(self, req: Req, account_path: str, container: str, *,
                                may_create: bool) -> tuple[list | None, int]:
        """Check (as the caller) that a container is there, creating it when it is not:
        (the failure to report if its object fails too, or None; 1 when it was created)."""
        path = f"{account_path}/{container}"
        status = await self._status(req.sub("HEAD", path))
        created = 0
        if status == 404:
            if not may_create:
                raise ExtractFailed(400, f"More than {self.max_containers} containers to "
                                         "create from the archive")
            put = req.sub("PUT", path)
            if "account_sysmeta" in req.env:  # a first container also creates the account
                put.env["account_sysmeta"] = req.env["account_sysmeta"]
            status = await self._status(put)
            created = int(status // 100 == 2)
        if status // 100 == 2:
            return None, created
        if status == 401:
            raise ExtractFailed(401, "Unauthorized: this request requires a valid token")
        return [quote_path(path[:MAX_PATH]), status_line(status)], 0

    async def _put_member(self, req: Req, reader: ArchiveReader, member: tarfile.TarInfo,
                          path: str) -> int:
        headers = {"content-length": str(member.size)}
        # what the caller asked of every object: expiry and metadata
        for name, value in req.headers.items():
            if name in ("x-delete-at", "x-delete-after") or name.startswith("x-object-meta-"):
                headers[name] = value
        headers.update(xattr_headers(member.pax_headers))
        body = await reader.member_body(member)
        try:
            return await self._status(req.sub("PUT", path, headers=headers, body=body))
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
