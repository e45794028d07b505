"""The storage node: object, container and account servers as one ASGI app (see __init__)."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import errno
import logging
import math
import os
import sqlite3
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgpack

from ..httpclient import HttpClient
from ..ring import Ring, RingCache, RingError
from . import diskfile
from ..backend import (LISTING_ETAG, LISTING_SIZE, MD5_TRAILER, MD5_TRAILER_REQUEST,
                       MULTIPART_BOUNDARY, OBJ_CONTENT_LENGTH, listing_etag_fields, trailer_md5,
                       valid_boundary)
from .common import (BadRequest, NodeRequest, http_date, iso_date, normalize_timestamp,
                     parse_request, read_body, send_error, send_json, send_response,
                     row_timestamp, split_hosts, valid_row_timestamp, valid_timestamp)
from .db import AccountBroker, Broker, ContainerBroker, DatabaseError, db_path
from .diskfile import DiskFileCorrupt, ObjectReader, ObjectWriter
from .durable import GroupSync
from .updater import RowBatcher, quote_path, send_update, write_pending

log = logging.getLogger("stratus.objectstore.node")

WRITE_CHUNK = 1 << 20        # bytes buffered before a write is handed to a thread
READ_CHUNK = 1 << 20         # bytes read (and CRC-checked) per thread hop on GET
MAX_META_BODY = 64 << 20     # REPLICATE bodies
LISTING_LIMIT_MAX = 10000
MAX_OBJECT_SIZE = 5 * 1024 ** 3 + 2
# Bodies up to this size that arrive in one piece are written on the event loop itself (page
# cache only; group commit makes them durable): cheaper than a hop to an I/O thread and back.
INLINE_WRITE_MAX = 64 << 10


@dataclass
class NodeConfig:
    root: Path
    devices: list[str] | None = None   # None: every directory under root
    ring_dir: Path | None = None
    ip: str = "127.0.0.1"              # how this node appears in the ring
    port: int = 0
    reserve_bytes: int = 64 << 20      # a device with less free space answers 507 to writes
    update_timeout: float = 1.0        # wait this long for listing updates before pending them
    threads: int = 32
    replicator_interval: float = 30.0  # 0 disables a daemon
    auditor_interval: float = 300.0
    auditor_bytes_per_second: float = 50 << 20
    updater_interval: float = 10.0
    expirer_interval: float = 60.0
    reclaim_age: float = diskfile.RECLAIM_AGE
    group_sync: bool = True            # small writes made durable by group commit (durable.py)
    extra: dict = field(default_factory=dict)


class RingSet:
    """object/container/account rings from ``ring_dir``; a missing one falls back to object."""

    def __init__(self, ring_dir: Path | None, check_interval: float = 5.0):
        self.ring_dir = ring_dir
        self.check_interval = check_interval
        self._caches: dict[str, RingCache] = {}
        self._resolved: dict[str, tuple[float, Ring | None]] = {}

    def get(self, kind: str) -> Ring | None:
        """The ring for ``kind``; file checks happen at most every ``check_interval``."""
        now = time.monotonic()
        hit = self._resolved.get(kind)
        if hit is not None and now - hit[0] < self.check_interval:
            return hit[1]
        ring = self._load(kind)
        self._resolved[kind] = (now, ring)
        return ring

    def _load(self, kind: str) -> Ring | None:
        if self.ring_dir is None:
            return None
        for name in (kind, "object"):
            path = Path(self.ring_dir) / f"{name}.ring.gz"
            if path.exists():
                cache = self._caches.get(str(path))
                if cache is None:
                    cache = self._caches[str(path)] = RingCache(path)
                try:
                    return cache.get()
                except (RingError, OSError):
                    return None
        return None

    def hash_hex(self, kind: str, account, container=None, obj=None) -> str:
        ring = self.get(kind)
        if ring is None:
            raise BadRequest(503, f"no {kind} ring in {self.ring_dir}")
        return ring.hash_path(account, container, obj).hex()


class BrokerEntry:
    __slots__ = ("broker", "lock", "pending", "flushing")

    def __init__(self, broker: Broker):
        self.broker = broker
        self.lock = asyncio.Lock()
        self.pending: list = []
        self.flushing = False


class BrokerCache:
    """Open DB connections, one serialized worker per DB, LRU-bounded."""

    def __init__(self, node: "StorageNode", size: int = 256):
        self.node = node
        self.size = size
        self._entries: OrderedDict[str, BrokerEntry] = OrderedDict()
        # for /recon: listing-row group commits (batches), the rows they merged, their seconds
        self.stats = {"batches": 0, "rows": 0, "seconds": 0.0}

    def get(self, path: str, kind: str) -> BrokerEntry:
        entry = self._entries.get(path)
        if entry is not None:
            self._entries.move_to_end(path)
            return entry
        cls = ContainerBroker if kind == "container" else AccountBroker
        entry = self._entries[path] = BrokerEntry(cls(path))
        if len(self._entries) > self.size:
            for old_path, old in list(self._entries.items()):
                if len(self._entries) <= self.size:
                    break
                if not old.lock.locked() and not old.pending and not old.flushing:
                    del self._entries[old_path]
                    self.node.executor.submit(old.broker.close)
        return entry

    def drop(self, path: str):
        entry = self._entries.pop(path, None)
        if entry is not None:
            self.node.executor.submit(entry.broker.close)

    async def call(self, entry: BrokerEntry, fn, *args):
        async with entry.lock:
            return await self.node.run_blocking(fn, *args)

    async def merge_rows(self, entry: BrokerEntry, rows: list) -> None:
        """Group commit: rows arriving while a batch is being written go in the next batch."""
        fut = asyncio.get_running_loop().create_future()
        entry.pending.append((rows, fut))
        if not entry.flushing:
            entry.flushing = True
            asyncio.ensure_future(self._flush(entry))
        await fut

    async def _flush(self, entry: BrokerEntry):
        try:
            while entry.pending:
                batch, entry.pending = entry.pending, []
                rows = [r for rs, _ in batch for r in rs]
                try:
                    async with entry.lock:
                        started = time.monotonic()
                        await self.node.run_blocking(entry.broker.merge_items, rows)
                        self.stats["seconds"] += time.monotonic() - started
                        self.stats["batches"] += 1
                        self.stats["rows"] += len(rows)
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            entry.flushing = False


async def _unconfirmed(targets: list, send, timeout: float) -> list:
    """Send an update to every target (``send(target)`` is a coroutine that answers whether
    the target confirmed); returns the targets that did not confirm within ``timeout``
    (a failure, a False or no answer in time), their sends cancelled."""
    if len(targets) == 1:
        # the usual case (one container replica per object replica): awaited in the
        # caller's task, without a task and a wait of its own
        try:
            async with asyncio.timeout(timeout):
                return [] if await send(targets[0]) else targets
        except Exception:  # noqa: BLE001 - a timeout or a failure: unconfirmed either way
            return targets
    tasks = [asyncio.ensure_future(send(t)) for t in targets]
    done, _ = await asyncio.wait(tasks, timeout=timeout)
    failed = [t for t, task in zip(targets, tasks)
              if task not in done or task.exception() is not None or not task.result()]
    for task in tasks:
        if not task.done():
            task.cancel()
    return failed


def _meta_headers(headers: dict, prefixes: tuple[str, ...]) -> dict:
    return {k: v for k, v in headers.items() if k.startswith(prefixes)}


class StorageNode:
    """The ASGI application of one storage node."""

    def __init__(self, config: NodeConfig):
        self.config = config
        self.root = str(config.root)
        self.executor = ThreadPoolExecutor(config.threads, thread_name_prefix="node-io")
        self.client = HttpClient()
        self.row_batcher = RowBatcher(self.client)
        self.rings = RingSet(config.ring_dir)
        self.brokers = BrokerCache(self)
        self.daemons: dict[str, object] = {}
        self._tasks: list[asyncio.Task] = []
        self.loop_stalls = 0  # times the event loop was found blocked for over a second
        self._background: set[asyncio.Task] = set()
        # mount and free-space checks are cached briefly: a stat per request is measurable
        self._mount_cache: dict[str, tuple[float, bool]] = {}
        self._space_cache: dict[str, tuple[float, int]] = {}
        # group commit: one GroupSync per filesystem, found by device name
        self._fs_syncs: dict[int, GroupSync] = {}
        self._device_syncs: dict[str, GroupSync] = {}

    # helpers -------------------------------------------------------------------------------
    def run_blocking(self, fn, *args):
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def dev_path(self, device: str) -> str:
        return f"{self.root}/{device}"

    def device_names(self) -> list[str]:
        if self.config.devices is not None:
            return list(self.config.devices)
        try:
            return sorted(d for d in os.listdir(self.root)
                          if os.path.isdir(f"{self.root}/{d}") and not d.startswith("."))
        except FileNotFoundError:
            return []

    def is_mounted(self, device: str) -> bool:
        if self.config.devices is not None and device not in self.config.devices:
            return False
        now = time.monotonic()
        hit = self._mount_cache.get(device)
        if hit is not None and now - hit[0] < 1.0:
            return hit[1]
        path = self.dev_path(device)
        mounted = os.path.isdir(path) and not os.path.exists(f"{path}/.unmounted")
        self._mount_cache[device] = (now, mounted)
        return mounted

    def mounted_devices(self) -> list[str]:
        return [d for d in self.device_names() if self.is_mounted(d)]

    def has_space(self, device: str, needed: int = 0) -> bool:
        now = time.monotonic()
        hit = self._space_cache.get(device)
        if hit is not None and now - hit[0] < 0.5 and hit[1] - needed > \
                self.config.reserve_bytes + (256 << 20):
            return True  # far from the limit: the cached figure is good enough
        st = os.statvfs(self.dev_path(device))
        free = st.f_bavail * st.f_frsize
        self._space_cache[device] = (now, free)
        return free - needed >= self.config.reserve_bytes

    def sync_group(self, device: str) -> GroupSync:
        """The group commit of the filesystem holding ``device``."""
        group = self._device_syncs.get(device)
        if group is None:
            path = self.dev_path(device)
            st_dev = os.stat(path).st_dev
            group = self._fs_syncs.get(st_dev)
            if group is None:
                group = self._fs_syncs[st_dev] = GroupSync(path, self.executor)
            self._device_syncs[device] = group
        return group

    def begin_small_write(self, device: str) -> tuple[int, int] | None:
        """Call before a small write that :meth:`group_commit` will make durable (None when
        group commit is off); the token goes to group_commit."""
        if not self.config.group_sync:
            return None
        try:
            return self.sync_group(device).begin()
        except OSError as exc:
            raise BadRequest(507, f"device {device} cannot be synced: {exc.strerror}") from None

    async def group_commit(self, device: str, datadir: str, written: str,
                           cleanup: bool = True, token: tuple[int, int] | None = None) -> None:
        """Make the small write of file ``written`` in ``datadir`` durable (one syncfs shared
        with every other write in flight on the device's filesystem), then drop the versions it
        replaces. ``token`` is what :meth:`begin_small_write` gave before the write."""
        group = self.sync_group(device)
        try:
            await group.sync(token)
        except OSError as exc:
            log.error("syncfs of %s failed: %s", group.path, exc)
            raise BadRequest(503, f"device {device} could not make the write durable: "
                                  f"{exc.strerror}") from None
        # the replaced versions go in the background: an unlink can wait on the disk (online
        # discard), and nobody waits for it; a crash before it only leaves files the next
        # write, read or replication pass of that directory removes
        # (only files older than ``written``: a newer one may not be durable yet). Skipped
        # (``cleanup=False``) when the directory was empty before the write: a new object.
        if cleanup:
            self.executor.submit(diskfile.cleanup_dir, datadir, None, written)

    def spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def my_ring_devices(self, kind: str) -> dict[str, dict]:
        """Ring devices (by name) that live on this node."""
        ring = self.rings.get(kind)
        if ring is None:
            return {}
        return {d["device"]: d for d in ring.devs
                if d and d["ip"] == self.config.ip and d["port"] == self.config.port}

    # ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await self.handle_http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive, send):
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.start_daemons()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start_daemons(self):
        from .auditor import Auditor
        from .expirer import Expirer
        from .replicator import Replicator
        from .updater import Updater
        c = self.config
        self.daemons = {
            "replicator": Replicator(self, c.replicator_interval),
            "auditor": Auditor(self, c.auditor_interval, c.auditor_bytes_per_second),
            "updater": Updater(self, c.updater_interval),
            "expirer": Expirer(self, c.expirer_interval),
        }
        for name, daemon in self.daemons.items():
            if daemon.interval > 0:
                self._tasks.append(asyncio.ensure_future(daemon.run_forever()))
        self._tasks.append(asyncio.ensure_future(self._watch_loop_stalls()))
        for device in self.device_names():
            # partial files of a previous process: nobody will finish them
            self.executor.submit(diskfile.clean_tmp, self.dev_path(device), 60)

    async def _watch_loop_stalls(self, period: float = 0.5, report_over: float = 1.0):
        """Log when the event loop was blocked: small reads and writes run on it (a file
        system call that waits for the disk stalls every request of this node)."""
        loop = asyncio.get_running_loop()
        expected = loop.time() + period
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            late = now - expected
            if late > report_over:
                self.loop_stalls += 1
                log.warning("event loop blocked for %.1f s", late)
            expected = now + period

    async def stop(self):
        for task in self._tasks + list(self._background):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        await self.client.close()
        for group in self._fs_syncs.values():
            group.close()
        self.executor.shutdown(wait=False)

    async def handle_http(self, scope, receive, send):
        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._handle_http(scope, receive, tracked_send)
        except CorruptResponseAbort:
            raise  # the connection must drop mid-body: that is the signal
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started:
                raise
            await send_error(send, 500, "internal error (see the node log)",
                             head=scope["method"] == "HEAD")

    async def _handle_http(self, scope, receive, send):
        head = scope["method"] == "HEAD"
        try:
            if scope["path"] in ("/healthcheck", "/recon") or scope["path"].startswith("/recon/"):
                await self.recon(scope, send)
                return
            req = parse_request(scope)
            if not self.is_mounted(req.device):
                raise BadRequest(507, f"device {req.device} is not mounted")
            server = req.headers.get("x-backend-server-type")
            if req.method == "REPLICATE" or (req.method == "POST"
                                             and "x-backend-replicate" in req.headers):
                if server in ("container", "account"):
                    await self.replicate_db(req, receive, send, server)
                else:
                    await self.replicate_objects(req, receive, send)
                return
            if server is None:
                server = {3: "account", 4: "container", 5: "object"}.get(req.path_depth)
            if server == "object":
                if req.obj is None:
                    raise BadRequest(400, "object requests need /dev/part/account/container/obj")
                await self.object_request(req, receive, send)
            elif server == "container":
                if req.container is None:
                    raise BadRequest(400, "container requests need /dev/part/account/container")
                await self.container_request(req, receive, send)
            elif server == "account":
                if req.account is None:
                    raise BadRequest(400, "account requests need /dev/part/account")
                await self.account_request(req, receive, send)
            else:
                raise BadRequest(400, "unknown X-Backend-Server-Type")
        except BadRequest as exc:
            await send_error(send, exc.status, exc.message, head=head)
        except DatabaseError as exc:
            await send_error(send, 404, str(exc), head=head)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                await send_error(send, 507, "device is full", head=head)
            else:
                log.exception("I/O error")
                await send_error(send, 500, f"I/O error: {exc.strerror}", head=head)

    async def recon(self, scope, send):
        if scope["path"] == "/healthcheck":
            await send_response(send, 200, [("content-type", "text/plain")], b"OK")
            return
        if scope["path"].startswith("/recon/run/"):
            # one pass of a daemon now (operators and tests; the node API is internal)
            daemon = self.daemons.get(scope["path"][len("/recon/run/"):])
            if scope["method"] != "POST" or daemon is None:
                raise BadRequest(404, "POST /recon/run/<replicator|auditor|updater|expirer>")
            await daemon.run_once()
            await send_json(send, 200, daemon.stats)
            return
        stats = {name: getattr(d, "stats", {}) for name, d in self.daemons.items()}
        devices = {d: {"mounted": self.is_mounted(d)} for d in self.device_names()}
        group_sync = {g.path: g.stats for g in self._fs_syncs.values()}
        await send_json(send, 200, {"devices": devices, "daemons": stats,
                                    "group_sync": group_sync, "row_merges": self.brokers.stats,
                                    "loop_stalls": self.loop_stalls})

    # ---------------------------------------------------------------------------------------
    # Object server

    def object_datadir(self, req: NodeRequest) -> tuple[str, str]:
        hash_hex = self.rings.hash_hex("object", req.account, req.container, req.obj)
        return hash_hex, diskfile.object_dir(self.dev_path(req.device), req.partition, hash_hex)

    def request_timestamp(self, req: NodeRequest, required: bool = True) -> str:
        raw = req.headers.get("x-timestamp")
        if raw is None and not required:
            return normalize_timestamp(time.time())
        ts = valid_timestamp(raw)
        if ts is None:
            raise BadRequest(400, f"missing or bad X-Timestamp {raw!r}")
        return ts

    async def object_request(self, req, receive, send):
        method = req.method
        if method in ("GET", "HEAD"):
            await self.object_get(req, receive, send)
        elif method == "PUT":
            await self.object_put(req, receive, send)
        elif method == "DELETE":
            await self.object_delete(req, send)
        elif method == "POST":
            await self.object_post(req, send)
        else:
            raise BadRequest(405, f"method {method} not allowed on objects")

    def _replicated_meta(self, req) -> dict | None:
        raw = req.headers.get("x-backend-replicated-meta")
        if raw is None:
            return None
        try:
            meta = msgpack.unpackb(base64.b64decode(raw))
        except Exception:
            meta = None
        if not isinstance(meta, dict) or valid_timestamp(str(meta.get("ts"))) != meta.get("ts"):
            raise BadRequest(400, "bad X-Backend-Replicated-Meta")
        if meta.get("name") != f"/{req.account}/{req.container}/{req.obj}":
            raise BadRequest(400, "X-Backend-Replicated-Meta names another object")
        if not isinstance(meta.get("headers", {}), dict):
            raise BadRequest(400, "bad X-Backend-Replicated-Meta headers")
        return meta

    async def object_put(self, req, receive, send):
        replicated = self._replicated_meta(req)
        ts = replicated["ts"] if replicated else self.request_timestamp(req, required=False)
        md5_from_sender = req.headers.get(MD5_TRAILER_REQUEST) == "1"
        cl_raw = req.headers.get("content-length")
        content_length = None
        if md5_from_sender:
            if cl_raw is not None or "chunked" not in req.headers.get("transfer-encoding", ""):
                raise BadRequest(400, f"{MD5_TRAILER_REQUEST} needs a chunked body (the md5 "
                                      "comes in its trailer)")
            cl_raw = req.headers.get(OBJ_CONTENT_LENGTH)
        if cl_raw is not None:
            try:
                content_length = int(cl_raw)
                if content_length < 0:
                    raise ValueError
            except ValueError:
                raise BadRequest(400, f"bad Content-Length {cl_raw!r}") from None
            if content_length > MAX_OBJECT_SIZE:
                raise BadRequest(413, "object too large")
        elif "chunked" not in req.headers.get("transfer-encoding", ""):
            raise BadRequest(411, "Content-Length or chunked transfer encoding required")
        if replicated is None:
            delete_at = self._delete_at(req)
            if delete_at is not None and delete_at <= time.time():
                raise BadRequest(400, "X-Delete-At is in the past")
        else:
            delete_at = _replicated_delete_at(replicated)
        if not self.has_space(req.device, content_length or 0):
            raise BadRequest(507, f"device {req.device} is full")
        hash_hex, datadir = self.object_datadir(req)
        dev_path = self.dev_path(req.device)

        if_none_match = req.headers.get("if-none-match", "").strip()
        if if_none_match and if_none_match != "*":
            raise BadRequest(400, "If-None-Match on PUT only supports *")

        found = {"files": True}  # whether the hash directory held anything before this write

        def open_writer(files: list[str] | None = None):
            """``files``: the hash directory's files when the caller knows them already."""
            state, meta_file, obsolete = diskfile.scan_dir(datadir, files)
            found["files"] = bool(state or meta_file or obsolete)
            current = state.rsplit(".", 1)[0] if state else None
            if if_none_match and state and state.endswith(diskfile.DATA):
                return "exists", None
            if current is not None and current >= ts:
                return current, None
            return current, ObjectWriter(dev_path, content_length, md5=not md5_from_sender)

        def body_etag(writer: ObjectWriter, trailers) -> str | None:
            if not md5_from_sender:
                return writer.etag()
            return trailer_md5(trailers)

        msg = await receive()
        body = msg.get("body", b"")
        more = msg.get("more_body", False)
        if msg["type"] == "http.disconnect":
            raise BadRequest(499, "client disconnected")
        trailers = msg.get("trailers")
        if replicated is not None:
            meta = dict(replicated)
            meta.pop("crc", None)
            meta.pop("xxh3", None)
            meta.pop("len", None)
        else:
            headers = {k: v for k, v in req.headers.items() if diskfile.is_stored_header(k)}
            headers.setdefault("content-type", "application/octet-stream")
            meta = {"name": f"/{req.account}/{req.container}/{req.obj}", "ts": ts,
                    "headers": headers}
        client_etag = req.headers.get("etag", "").strip('"').lower() or None
        if replicated is not None:
            client_etag = replicated.get("etag")

        group = self.config.group_sync
        durability = None  # the group commit still to await, for small bodies
        if not more:
            token = self.begin_small_write(req.device)
            # Small object: written in one go (on the loop, or in one thread hop).
            def write_small():
                existed, made = diskfile.ensure_datadir(datadir)
                current, writer = open_writer(None if existed else [])
                if writer is None:
                    return current, None
                try:
                    writer.write_whole(body)
                    if content_length is not None and writer.length != content_length:
                        return None, ("length", writer.length)
                    etag = body_etag(writer, trailers)
                    if etag is None:
                        return None, ("trailer", None)
                    if client_etag and client_etag != etag:
                        return None, ("etag", etag)
                    meta["etag"] = etag
                    writer.commit(datadir, ts, diskfile.DATA, meta, durable=not group,
                                  made=made)
                    return None, ("ok", etag)
                finally:
                    writer.abort()
                    if made and not writer.committed:
                        try:
                            os.rmdir(datadir)  # made for this write, which failed
                        except OSError:
                            pass  # another write's file is in it now

            if group and len(body) <= INLINE_WRITE_MAX:
                current, result = write_small()
            else:
                current, result = await self.run_blocking(write_small)
            if result is None:
                await self._conflict(send, current)
                return
            if group and result[0] == "ok":
                durability = self.group_commit(req.device, datadir, ts + diskfile.DATA,
                                               cleanup=found["files"], token=token)
        else:
            current, writer = await self.run_blocking(open_writer)
            if writer is None:
                await self._drain(receive, more)
                await self._conflict(send, current)
                return
            try:
                streaming = time.monotonic()
                tail: dict = {}
                result = await self._stream_to(writer, receive, body, content_length, tail)
                etag = None if result else body_etag(writer, tail.get("trailers"))
                if result is None and etag is None:
                    result = ("trailer", None)
                if result is None:
                    if client_etag and client_etag != etag:
                        result = ("etag", etag)
                    else:
                        meta["etag"] = etag
                        committing = time.monotonic()
                        await self.run_blocking(writer.commit, datadir, ts, diskfile.DATA, meta)
                        result = ("ok", etag)
                        done = time.monotonic()
                        if done - committing > 2.0:
                            # the client (the proxy) gives up after node_timeout without a byte
                            log.warning("slow commit of %s (%d bytes): body %.1f s, final sync "
                                        "%.1f s", datadir, writer.length,
                                        committing - streaming, done - committing)
            finally:
                await self.run_blocking(writer.abort)
        kind, value = result
        if kind == "length":
            raise BadRequest(499, f"got {value} bytes, Content-Length said {content_length}")
        if kind == "etag":
            raise BadRequest(422, f"ETag mismatch: body md5 is {value}")
        if kind == "trailer":
            raise BadRequest(400, f"the body's md5 trailer ({MD5_TRAILER}: 32 hex digits) is "
                                  "missing or malformed")
        if kind == "disconnect":
            log.warning("PUT %s: client gone after %s of %s bytes", datadir, value,
                        content_length if content_length is not None else "?")
            raise BadRequest(499, "client disconnected before the whole body was sent")
        etag = value
        update = None
        if replicated is None:
            size = content_length if content_length is not None else None
            if size is None:
                size = await self.run_blocking(_data_length, datadir, ts)
            stored = meta["headers"]
            update = self._container_update(
                req, hash_hex, ts, "PUT",
                {"X-Size": stored.get(LISTING_SIZE, str(size)),
                 "X-Content-Type": stored["content-type"],
                 "X-Etag": stored.get(LISTING_ETAG, etag)})
        await self._durable_and_listed(durability, update)
        if delete_at is not None:
            await self.run_blocking(self._add_expiring, req, delete_at, hash_hex)
        await send_response(send, 201, [("etag", etag), ("x-timestamp", ts)])

    async def _stream_to(self, writer: ObjectWriter, receive, first: bytes,
                         content_length: int | None, tail: dict):
        """Stream the request body into ``writer``: one write in a thread while the next
        buffer fills. Returns None on success or an error tuple; the body's trailer fields,
        if any, go to ``tail["trailers"]``."""
        buf = bytearray(first)
        pending = None
        received = len(first)
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                if pending is not None:
                    await pending
                return ("disconnect", received)
            chunk = msg.get("body", b"")
            more = msg.get("more_body", False)
            if not more:
                tail["trailers"] = msg.get("trailers")
            received += len(chunk)
            if content_length is not None and received > content_length:
                if pending is not None:
                    await pending
                return ("length", received)
            buf += chunk
            if len(buf) >= WRITE_CHUNK or not more:
                if pending is not None:
                    await pending
                pending = self.run_blocking(writer.write, buf)
                buf = bytearray()
        if pending is not None:
            await pending
        if buf:
            await self.run_blocking(writer.write, buf)
        if content_length is not None and received != content_length:
            return ("length", received)
        return None

    async def _drain(self, receive, more: bool):
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            more = msg.get("more_body", False)

    async def _conflict(self, send, current: str):
        if current == "exists":
            await send_response(send, 412, [("content-type", "text/plain")],
                                b"If-None-Match: * and the object exists\n")
            return
        await send_response(send, 409, [("x-backend-timestamp", current),
                                        ("content-type", "text/plain")],
                            b"a newer or equal timestamp exists\n")

    def _delete_at(self, req) -> int | None:
        raw = req.headers.get("x-delete-at")
        if raw is None or raw == "":
            return None
        try:
            return int(raw)
        except ValueError:
            raise BadRequest(400, f"bad X-Delete-At {raw!r}") from None

    def _add_expiring(self, req, delete_at: int, hash_hex: str):
        from .expirer import add_expiring_entry
        add_expiring_entry(self.dev_path(req.device), delete_at, hash_hex,
                           {"account": req.account, "container": req.container, "obj": req.obj,
                            "part": req.partition})

    async def _container_update(self, req, hash_hex: str, ts: str, method: str, extra: dict):
        """Send the object's new row to its container replicas (batched per replica);
        targets that do not confirm within ``update_timeout`` get a pending update."""
        targets = split_hosts(req.headers, "container")
        if not targets:
            return
        if method == "PUT":
            row = [req.obj, ts, int(extra["X-Size"]), extra["X-Content-Type"],
                   extra["X-Etag"], 0]
        else:
            row = [req.obj, ts, 0, "", "", 1]
        timeout = self.config.update_timeout

        def send_row(t):
            return (self._merge_local_row(t, req.account, req.container, row) if self._is_local(t)
                    else self.row_batcher.submit(t, req.account, req.container, row, timeout))

        failed = await _unconfirmed(targets, send_row, timeout)
        if failed:
            # a pending update is replayed as a plain one-row request by the updater
            headers = {"X-Backend-Server-Type": "container", "X-Timestamp": ts, **extra}
            path = quote_path(req.account, req.container, req.obj)
            await self.run_blocking(write_pending, self.dev_path(req.device), hash_hex, ts,
                                    "object", method, path, headers, failed)

    def _is_local(self, target) -> bool:
        """Whether an update target is a device of this very node: its row is then merged
        here, as the container server would merge it, without an HTTP round trip to
        ourselves (the proxy pairs each object replica with a container replica on the same
        node where the rings allow it, so in a cluster whose nodes hold both, every listing
        update is local)."""
        ip, port, device, _ = target
        return (port == self.config.port and port != 0 and ip == self.config.ip
                and self.is_mounted(device))

    async def _merge_local_row(self, target, account: str, container: str, row: list) -> bool:
        """One object row into this node's replica of the container DB; False (the update
        is then kept pending and retried) when that DB does not exist or the merge failed,
        the same outcomes as the container server's 404/5xx."""
        _, _, device, part = target
        try:
            hash_hex = self.rings.hash_hex("container", account, container)
            entry = self.brokers.get(db_path(self.dev_path(device), "container", part,
                                             hash_hex), "container")
            if not await self._db_exists(entry):
                return False
            await self.brokers.merge_rows(entry, [tuple(row)])
        except BadRequest:
            return False  # no container ring
        except (OSError, DatabaseError, sqlite3.Error) as exc:
            log.warning("local listing update of /%s/%s on %s failed: %r", account, container,
                        device, exc)
            return False
        return True

    async def _send_updates(self, device, hash_hex, ts, kind, method, path, headers, targets):
        timeout = self.config.update_timeout
        failed = await _unconfirmed(
            targets, lambda t: send_update(self.client, t, method, path, headers, timeout),
            timeout)
        if failed:
            await self.run_blocking(write_pending, self.dev_path(device), hash_hex, ts, kind,
                                    method, path, headers, failed)
        return failed

    @staticmethod
    async def _durable_and_listed(durability, update) -> None:
        """Await a group commit and a container update together: the listing row does not
        wait for the sync. (A replica whose write then fails to sync has sent a row for an
        object it does not hold; Swift has the same window whenever a PUT reaches some
        replicas but not a quorum, and replication settles both.)"""
        if durability is None or update is None:
            for step in (durability, update):
                if step is not None:
                    await step
            return
        syncing = asyncio.ensure_future(durability)  # runs while the row is sent
        try:
            await update
        except BaseException:
            await syncing  # a failed sync (503) is the answer to give, before the update's
            raise
        await syncing

    async def _small_io(self, work, inline: bool):
        """Run ``work(nowait)`` on the event loop when its reads hit the page cache (a cached
        read costs less than the hop to a thread), else ``work()`` in a thread. ``work`` must
        do nothing before its reads that it cannot do again."""
        if inline:
            try:
                return work(True)
            except BlockingIOError:
                pass
        return await self.run_blocking(work)

    async def object_get(self, req, receive, send):
        head = req.method == "HEAD"
        hash_hex, datadir = self.object_datadir(req)
        dev_path = self.dev_path(req.device)
        try:
            reader = await self._small_io(lambda nowait=False: ObjectReader.open(datadir, nowait),
                                          True)
        except DiskFileCorrupt as exc:
            await self.run_blocking(diskfile.quarantine, dev_path, datadir)
            log.warning("quarantined %s: %s", datadir, exc)
            raise BadRequest(404, "not found (corrupt replica quarantined)") from None
        try:
            if reader.timestamp is None:
                raise BadRequest(404, "not found")
            if reader.deleted:
                await send_response(send, 404, [("x-backend-timestamp", reader.timestamp)],
                                    b"", head=head)
                return
            delete_at = reader.headers.get("x-delete-at")
            if delete_at and delete_at.isdigit() and int(delete_at) <= time.time():
                await send_response(send, 404, [("x-backend-timestamp", reader.timestamp)],
                                    b"", head=head)
                return
            headers = [(k, v) for k, v in reader.headers.items()]
            headers += [("etag", reader.etag), ("x-timestamp", reader.timestamp),
                        ("x-backend-timestamp", reader.timestamp),
                        ("last-modified", http_date(float(reader.timestamp))),
                        ("accept-ranges", "bytes")]
            precondition = check_conditions(req.headers, reader.etag, float(reader.timestamp))
            if precondition is not None:
                await send_response(send, precondition, headers, b"", head=True)
                return
            length = reader.body_len
            ranges = None
            range_header = req.headers.get("range")
            if range_header and not head:
                ranges = parse_range(range_header, length)
                if ranges == []:
                    await send_response(send, 416, headers[:-1] + [
                        ("content-range", f"bytes */{length}")], b"")
                    return
            if ranges is None:
                if head or reader.small_body is not None:
                    body = b"" if head else reader.small_body
                    await send_response(send, 200, headers, body, head=head,
                                        content_length=length)
                    return
                await self._stream_body(receive, send, 200, headers, reader, [(0, length)], None,
                                        dev_path, datadir, req.zerocopy)
                return
            if len(ranges) == 1:
                start, end = ranges[0]
                headers.append(("content-range", f"bytes {start}-{end - 1}/{length}"))
                await self._stream_body(receive, send, 206, headers, reader, ranges, None, dev_path,
                                        datadir, req.zerocopy)
                return
            boundary = req.headers.get(MULTIPART_BOUNDARY)
            if not valid_boundary(boundary):
                boundary = uuid.uuid4().hex
            ctype = reader.headers.get("content-type", "application/octet-stream")
            headers = [(k, v) for k, v in headers if k != "content-type"]
            headers.append(("content-type", f"multipart/byteranges; boundary={boundary}"))
            await self._stream_body(receive, send, 206, headers, reader, ranges, (boundary, ctype),
                                    dev_path, datadir)
        finally:
            reader.close()  # closing a read-only descriptor does not block

    async def _stream_body(self, receive, send, status, headers, reader, ranges, multipart,
                           dev_path, datadir, zerocopy=False):
        """Send byte ranges, reading the next chunk in a thread while the current one is sent.

        Every chunk is verified against its block checksums before it is sent. On corruption
        the replica is quarantined and the response is cut short (fewer bytes than
        Content-Length, the connection closed): the caller must treat a short body as a
        failed read. With ``zerocopy`` (the server offers ASGI's zerocopysend) a chunk is
        checked in place and the kernel sends it from the page cache (sendfile), so its
        bytes are never copied through the node: a 256 MiB GET cost the node 100-170 ms of
        CPU against 180-260 ms read-then-send, on a machine where node, proxy and client share
        two cores.
        """
        length = reader.body_len
        pieces = []  # (prefix bytes, start, end)
        total = 0
        if multipart:
            boundary, ctype = multipart
            for start, end in ranges:
                part_head = (f"--{boundary}\r\nContent-Type: {ctype}\r\n"
                             f"Content-Range: bytes {start}-{end - 1}/{length}\r\n\r\n").encode()
                pieces.append((part_head, start, end))
                total += len(part_head) + end - start + 2
            closing = f"--{boundary}--\r\n".encode()
            total += len(closing)
        else:
            start, end = ranges[0]
            pieces.append((b"", start, end))
            total = end - start
            closing = b""
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode("latin-1"), str(v).encode("latin-1"))
                                for k, v in headers] +
                               [(b"content-length", str(total).encode())]})

        def chunks():
            for prefix, start, end in pieces:
                if prefix:
                    yield prefix, None
                pos = start
                while pos < end:
                    stop = min(end, (pos // READ_CHUNK + 1) * READ_CHUNK)
                    yield None, (pos, stop)
                    pos = stop
                if multipart:
                    yield b"\r\n", None

        run = self.run_blocking
        it = chunks()
        gone = asyncio.Event()

        async def watch_disconnect():
            # a client that hangs up must not cost us reading the rest of a huge object
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch_disconnect())
        try:
            await self._send_chunks(send, run, reader, it, gone, dev_path, datadir,
                                    zerocopy and reader.fd is not None and not multipart)
        finally:
            watcher.cancel()
        if not gone.is_set():
            await send({"type": "http.response.body", "body": closing, "more_body": False})

    async def _send_chunks(self, send, run, reader, it, gone, dev_path, datadir, zerocopy):
        """Send what ``it`` yields, preparing each chunk in the thread pool while the one
        before it is sent: read and checked (its bytes go out as a body message) or, with
        ``zerocopy``, checked in place (the kernel then sends it from the file). Literal
        pieces (multipart framing) go out with the chunk that follows them, once it passed
        its check: a replica found corrupt in its first chunk has then sent nothing, so the
        proxy can restart even a multi-range answer on another replica."""
        prepare = reader.verify_range if zerocopy else reader.read_range

        def schedule():
            """(literal bytes before the chunk, the chunk's span, its read or check) or None."""
            literal = b""
            for piece, span in it:
                if piece is not None:
                    literal += piece
                    continue
                return literal, span, run(prepare, *span)
            return (literal, None, None) if literal else None

        nxt = schedule()
        try:
            while nxt is not None and not gone.is_set():
                literal, span, pending = nxt
                nxt = None
                messages = []
                if pending is None:
                    messages.append({"type": "http.response.body", "body": literal,
                                     "more_body": True})
                else:
                    try:
                        data = await pending
                    except DiskFileCorrupt as exc:
                        await run(diskfile.quarantine, dev_path, datadir)
                        log.warning("quarantined %s during GET: %s", datadir, exc)
                        raise CorruptResponseAbort(str(exc)) from None
                    if zerocopy:
                        if literal:
                            messages.append({"type": "http.response.body", "body": literal,
                                             "more_body": True})
                        messages.append({"type": "http.response.zerocopysend",
                                         "file": reader.fd, "offset": span[0],
                                         "count": span[1] - span[0], "more_body": True})
                    else:
                        messages.append({"type": "http.response.body",
                                         "body": literal + data if literal else data,
                                         "more_body": True})
                nxt = schedule()
                for message in messages:
                    await send(message)
        finally:
            if nxt is not None and nxt[2] is not None:
                # the read or check in flight must end before the caller closes the file
                try:
                    await nxt[2]
                except Exception:
                    pass

    async def object_delete(self, req, send):
        replicated = self._replicated_meta(req)
        ts = replicated["ts"] if replicated else self.request_timestamp(req)
        hash_hex, datadir = self.object_datadir(req)
        dev_path = self.dev_path(req.device)
        if_delete_at = req.headers.get("x-if-delete-at")
        name = f"/{req.account}/{req.container}/{req.obj}"

        group = self.config.group_sync

        def write_tombstone(nowait=False):
            try:
                reader = ObjectReader.open(datadir, nowait)
            except DiskFileCorrupt:
                reader = None
            existed = reader is not None and reader.timestamp is not None and not reader.deleted
            current = reader.timestamp if reader is not None else None
            if reader is not None:
                if if_delete_at is not None and reader.headers.get("x-delete-at") != if_delete_at:
                    reader.close()
                    return "precondition", current
                reader.close()
            if current is not None and current >= ts:
                return "conflict", current
            writer = ObjectWriter(dev_path)
            try:
                writer.commit(datadir, ts, diskfile.TOMBSTONE, {"name": name, "ts": ts},
                              durable=not group)
            finally:
                writer.abort()
            return ("deleted" if existed else "missing"), current

        token = self.begin_small_write(req.device)
        outcome, current = await self._small_io(write_tombstone, group)
        if outcome == "conflict":
            await self._conflict(send, current)
            return
        if outcome == "precondition":
            raise BadRequest(412, "X-If-Delete-At does not match")
        await self._durable_and_listed(
            self.group_commit(req.device, datadir, ts + diskfile.TOMBSTONE, token=token)
            if group else None,
            self._container_update(req, hash_hex, ts, "DELETE", {})
            if replicated is None else None)
        await send_response(send, 204 if outcome == "deleted" else 404,
                            [("x-backend-timestamp", ts)])

    async def object_post(self, req, send):
        replicated = self._replicated_meta(req)
        ts = replicated["ts"] if replicated else self.request_timestamp(req)
        hash_hex, datadir = self.object_datadir(req)
        dev_path = self.dev_path(req.device)
        delete_at = _replicated_delete_at(replicated) if replicated else self._delete_at(req)
        if replicated is not None:
            meta = replicated
        else:
            headers = {k: v for k, v in req.headers.items() if diskfile.is_post_replaced(k)}
            meta = {"name": f"/{req.account}/{req.container}/{req.obj}", "ts": ts,
                    "headers": headers}

        group = self.config.group_sync

        listed = {}  # what the object's listing row shows, if this POST changes its type

        def write_meta(nowait=False):
            try:
                reader = ObjectReader.open(datadir, nowait)
            except DiskFileCorrupt:
                return "missing", None
            try:
                if replicated is None and reader.timestamp is not None:
                    stored = reader.headers
                    if "content-type" not in meta["headers"] and "content-type" in stored:
                        # the newest .meta is the only one read: it carries the type that
                        # an earlier POST may have set, which a POST without one keeps
                        meta["headers"]["content-type"] = stored["content-type"]
                    listed.update(ts=reader.timestamp, size=stored.get(LISTING_SIZE,
                                                                       str(reader.body_len)),
                                  etag=stored.get(LISTING_ETAG, reader.etag))
                if replicated is None and (reader.timestamp is None or reader.deleted):
                    return "missing", None
                expires = reader.headers.get("x-delete-at")
                if replicated is None and expires and expires.isdigit() and \
                        int(expires) <= time.time():
                    return "missing", None  # expired: a POST must not bring it back
                if reader.timestamp is not None and reader.timestamp >= ts:
                    return "conflict", reader.timestamp
                _, meta_ts = diskfile.newest_timestamp(datadir)
                if meta_ts is not None and meta_ts >= ts:
                    return "conflict", meta_ts
            finally:
                reader.close()
            writer = ObjectWriter(dev_path)
            try:
                writer.commit(datadir, ts, diskfile.META, meta, durable=not group)
            finally:
                writer.abort()
            return "ok", None

        token = self.begin_small_write(req.device)
        outcome, current = await self._small_io(write_meta, group)
        if group and outcome == "ok":
            await self.group_commit(req.device, datadir, ts + diskfile.META, token=token)
        if outcome == "missing":
            raise BadRequest(404, "not found")
        if outcome == "conflict":
            await self._conflict(send, current)
            return
        if delete_at is not None:
            await self.run_blocking(self._add_expiring, req, delete_at, hash_hex)
        if replicated is None and "content-type" in req.headers and listed:
            # the listing shows the new type; the row keeps the data's size and ETag
            await self._container_update(
                req, hash_hex, row_timestamp(listed["ts"], ts), "PUT",
                {"X-Size": listed["size"], "X-Content-Type": req.headers["content-type"],
                 "X-Etag": listed["etag"]})
        await send_response(send, 202, [("x-backend-timestamp", ts)])

    async def replicate_objects(self, req, receive, send):
        """REPLICATE /dev/part[/suf-suf...]: partition hashes, optionally file lists."""
        await read_body(receive, 1 << 16)
        part_dir = f"{self.dev_path(req.device)}/objects/{req.partition}"
        suffixes = [s for s in req.rest.split("-") if len(s) == 3] if req.rest else []
        want_files = req.headers.get("x-backend-list-files") == "1"

        def work():
            if not os.path.isdir(part_dir):
                return {"hashes": {}, "files": {}}
            hashes = diskfile.get_hashes(part_dir, suffixes, self.config.reclaim_age)
            files = {s: diskfile.list_suffix(part_dir, s) for s in suffixes} if want_files else {}
            return {"hashes": hashes, "files": files}

        doc = await self.run_blocking(work)
        await send_response(send, 200, [("content-type", "application/x-msgpack")],
                            msgpack.packb(doc))

    # ---------------------------------------------------------------------------------------
    # Container and account servers

    def db_entry(self, req, kind: str):
        if kind == "container":
            hash_hex = self.rings.hash_hex("container", req.account, req.container)
        else:
            hash_hex = self.rings.hash_hex("account", req.account)
        path = db_path(self.dev_path(req.device), kind, req.partition, hash_hex)
        return hash_hex, self.brokers.get(path, kind)

    async def container_request(self, req, receive, send):
        if req.obj is not None:
            await self.container_row_update(req, send)
            return
        if req.method == "POST" and req.headers.get("x-backend-row-batch") == "1":
            await self.container_row_batch(req, receive, send)
            return
        await read_body(receive, 1 << 16)
        hash_hex, entry = self.db_entry(req, "container")
        broker: ContainerBroker = entry.broker
        method = req.method
        if method == "PUT":
            ts = self.request_timestamp(req)

            def put():
                created = broker.initialize(req.account, req.container, ts)
                info = broker.get_info()
                was_deleted = broker.is_deleted(info)
                broker.update_put_timestamp(ts)
                broker.update_metadata(self._db_metadata(req, "container", ts),
                                        check_totals=True)
                return created or was_deleted, broker.get_info()

            created, info = await self.brokers.call(entry, put)
            await self._account_update(req, hash_hex, info)
            await send_response(send, 201 if created else 202, [])
        elif method in ("GET", "HEAD"):
            await self._db_get(req, send, entry, "container")
        elif method == "POST":
            ts = self.request_timestamp(req)

            def post():
                info = broker.get_info()
                if broker.is_deleted(info):
                    return False
                broker.update_metadata(self._db_metadata(req, "container", ts),
                                        check_totals=True)
                return True

            if not await self._db_exists(entry) or not await self.brokers.call(entry, post):
                raise BadRequest(404, "container not found")
            await send_response(send, 204, [])
        elif method == "DELETE":
            ts = self.request_timestamp(req)

            def delete():
                info = broker.get_info()
                if broker.is_deleted(info):
                    return "missing", info
                if info["object_count"] > 0:
                    return "not-empty", info
                broker.mark_deleted(ts)
                return "ok", broker.get_info()

            if not await self._db_exists(entry):
                raise BadRequest(404, "container not found")
            outcome, info = await self.brokers.call(entry, delete)
            if outcome == "missing":
                raise BadRequest(404, "container not found")
            if outcome == "not-empty":
                raise BadRequest(409, "container is not empty")
            await self._account_update(req, hash_hex, info)
            await send_response(send, 204, [])
        else:
            raise BadRequest(405, f"method {method} not allowed on containers")

    async def _db_exists(self, entry) -> bool:
        if entry.broker.conn is not None:
            return True
        return await self.run_blocking(os.path.exists, entry.broker.path)

    def _db_metadata(self, req, kind: str, ts: str) -> dict:
        """The metadata headers a container/account keeps, as {name: (value, ts)}; an
        X-Remove-<name> header stores "" (removed) with the same timestamp."""
        allowed = CONTAINER_META if kind == "container" else ACCOUNT_META
        out = {}
        for k, v in req.headers.items():
            if k.startswith("x-remove-"):
                name = "x-" + k[len("x-remove-"):]
                if name.startswith(allowed[0]) or name in allowed[1]:
                    out[name] = ("", ts)
            elif k.startswith(allowed[0]) or k in allowed[1]:
                out[k] = (v, ts)
        return out

    async def _account_update(self, req, hash_hex, info):
        targets = split_hosts(req.headers, "account")
        if not targets:
            return
        from .updater import container_report_headers
        headers = container_report_headers(info)
        path = quote_path(req.account, req.container)
        failed = await self._send_updates(req.device, hash_hex, headers["X-Timestamp"],
                                          "container", "PUT", path, headers, targets)
        if not failed:
            # the account now has these stats: the updater need not report them again
            _, entry = self.db_entry(req, "container")
            await self.brokers.call(entry, entry.broker.set_reported, info["put_timestamp"],
                                    info["delete_timestamp"], info["object_count"],
                                    info["bytes_used"])

    async def container_row_update(self, req, send):
        """PUT/DELETE /dev/part/a/c/o from an object server (X-Backend-Server-Type: container)."""
        ts = valid_row_timestamp(req.headers.get("x-timestamp"))
        if ts is None:
            raise BadRequest(400, f"missing or bad X-Timestamp {req.headers.get('x-timestamp')!r}")
        hash_hex, entry = self.db_entry(req, "container")
        if req.method == "PUT":
            try:
                size = int(req.headers.get("x-size", "0"))
            except ValueError:
                raise BadRequest(400, "bad X-Size") from None
            row = (req.obj, ts, size, req.headers.get("x-content-type", ""),
                   req.headers.get("x-etag", ""), 0)
        elif req.method == "DELETE":
            row = (req.obj, ts, 0, "", "", 1)
        else:
            raise BadRequest(405, "object rows accept PUT and DELETE")
        if not await self._db_exists(entry):
            raise BadRequest(404, "container not found")
        await self.brokers.merge_rows(entry, [row])
        await send_response(send, 201 if req.method == "PUT" else 204, [])

    async def container_row_batch(self, req, receive, send):
        """Object rows from a RowBatcher (see updater.py), merged in one transaction."""
        body = await read_body(receive, 64 << 20)
        try:
            raw = msgpack.unpackb(body)
            rows = [(str(r[0]), valid_row_timestamp(str(r[1])), int(r[2]), str(r[3]), str(r[4]),
                     1 if r[5] else 0) for r in raw]
        except Exception:
            raise BadRequest(400, "row batch must be a msgpack list of "
                                  "[name, timestamp, size, content_type, etag, deleted]") from None
        if any(r[1] is None or not r[0] for r in rows):
            raise BadRequest(400, "row batch has a bad name or timestamp")
        _, entry = self.db_entry(req, "container")
        if not await self._db_exists(entry):
            raise BadRequest(404, "container not found")
        if rows:
            await self.brokers.merge_rows(entry, rows)
        await send_response(send, 204, [])

    async def account_request(self, req, receive, send):
        if req.container is not None:
            await self.account_row_update(req, send)
            return
        await read_body(receive, 1 << 16)
        _, entry = self.db_entry(req, "account")
        broker: AccountBroker = entry.broker
        method = req.method
        if method == "PUT":
            ts = self.request_timestamp(req)

            def put():
                created = broker.initialize(req.account, None, ts)
                was_deleted = broker.is_deleted()
                broker.update_put_timestamp(ts)
                broker.update_metadata(self._db_metadata(req, "account", ts), check_totals=True)
                return created or was_deleted

            created = await self.brokers.call(entry, put)
            await send_response(send, 201 if created else 202, [])
        elif method in ("GET", "HEAD"):
            await self._db_get(req, send, entry, "account")
        elif method == "POST":
            ts = self.request_timestamp(req)
            if not await self._db_exists(entry):
                raise BadRequest(404, "account not found")
            await self.brokers.call(entry, partial(broker.update_metadata,
                                                   self._db_metadata(req, "account", ts),
                                                   check_totals=True))
            await send_response(send, 204, [])
        elif method == "DELETE":
            ts = self.request_timestamp(req)
            if not await self._db_exists(entry):
                raise BadRequest(404, "account not found")
            await self.brokers.call(entry, broker.mark_deleted, ts)
            await send_response(send, 204, [])
        else:
            raise BadRequest(405, f"method {method} not allowed on accounts")

    async def account_row_update(self, req, send):
        """PUT /dev/part/a/c with container stats (X-Backend-Server-Type: account).

        Creates the account DB if needed: accounts come into being with their first container.
        """
        if req.method != "PUT":
            raise BadRequest(405, "container rows accept PUT")
        h = req.headers
        try:
            put_ts = valid_timestamp(h.get("x-put-timestamp", "0")) or "0"
            delete_ts = valid_timestamp(h.get("x-delete-timestamp", "0")) or "0"
            row = (req.container, put_ts, delete_ts, int(h.get("x-object-count", "0")),
                   int(h.get("x-bytes-used", "0")), 0, self.request_timestamp(req))
        except ValueError:
            raise BadRequest(400, "bad container stats headers") from None
        _, entry = self.db_entry(req, "account")
        if not await self._db_exists(entry):
            await self.brokers.call(entry, entry.broker.initialize, req.account, None, put_ts)
        await self.brokers.merge_rows(entry, [row])
        await send_response(send, 201, [])

    async def _db_get(self, req, send, entry, kind):
        head = req.method == "HEAD"
        if not await self._db_exists(entry):
            raise BadRequest(404, f"{kind} not found")
        q = req.query
        try:
            limit = int(q.get("limit", LISTING_LIMIT_MAX))
        except ValueError:
            raise BadRequest(400, "limit must be an integer") from None
        if not 0 <= limit <= LISTING_LIMIT_MAX:
            raise BadRequest(412, f"limit must be between 0 and {LISTING_LIMIT_MAX}")
        delimiter = q.get("delimiter", "")
        if len(delimiter) > 1:
            raise BadRequest(412, "delimiter must be one character")
        reverse = q.get("reverse", "").lower() in ("1", "true", "yes", "on", "t", "y")
        broker = entry.broker
        lister = broker.list_objects if kind == "container" else broker.list_containers

        def work():
            info = broker.get_info()
            if broker.is_deleted(info):
                return info, None
            rows = [] if head else lister(limit, q.get("marker", ""), q.get("end_marker", ""),
                                          q.get("prefix", ""), delimiter, reverse)
            return info, rows

        info, rows = await self.brokers.call(entry, work)
        if rows is None:
            await send_response(send, 404, [("x-backend-timestamp", info["delete_timestamp"])],
                                b"", head=head)
            return
        headers = [("x-timestamp", info["created_at"]), ("x-put-timestamp", info["put_timestamp"]),
                   ("x-backend-put-timestamp", info["put_timestamp"]),
                   ("x-backend-delete-timestamp", info["delete_timestamp"])]
        if kind == "container":
            headers += [("x-container-object-count", info["object_count"]),
                        ("x-container-bytes-used", info["bytes_used"])]
        else:
            headers += [("x-account-container-count", info["container_count"]),
                        ("x-account-object-count", info["object_count"]),
                        ("x-account-bytes-used", info["bytes_used"])]
        for k, (v, _) in info["metadata"].items():
            if v != "":
                headers.append((k, v))
        if head:
            await send_response(send, 204, headers, b"", head=True)
            return
        if kind == "container":
            items = [{"subdir": r[1]} if r[0] == "subdir" else
                     {"name": r[0], "hash": r[4], "bytes": r[2], "content_type": r[3],
                      "last_modified": iso_date(r[1][-16:])} if ";" not in r[4] else
                     {"name": r[0], **listing_etag_fields(r[4]), "bytes": r[2],
                      "content_type": r[3], "last_modified": iso_date(r[1][-16:])}
                     for r in rows]
        else:
            items = [{"subdir": r[1]} if r[0] == "subdir" else
                     {"name": r[0], "count": r[1], "bytes": r[2],
                      "last_modified": iso_date(r[3])} for r in rows]
        await send_json(send, 200, items, headers)

    async def replicate_db(self, req, receive, send, kind):
        from .replicator import handle_db_replicate
        body = await read_body(receive, MAX_META_BODY)
        doc = await handle_db_replicate(self, req, kind, body)
        await send_response(send, 200, [("content-type", "application/x-msgpack")],
                            msgpack.packb(doc))


# (prefixes, exact names) of the metadata containers and accounts store
CONTAINER_META = (("x-container-meta-", "x-container-sysmeta-"),
                  {"x-container-read", "x-container-write", "x-container-sync-to",
                   "x-container-sync-key", "x-versions-location", "x-history-location",
                   "x-storage-policy"})
ACCOUNT_META = (("x-account-meta-", "x-account-sysmeta-"), {"x-account-access-control"})


class CorruptResponseAbort(Exception):
    """Raised inside a streaming GET to make the server drop the connection mid-body."""


def _replicated_delete_at(meta: dict) -> int | None:
    """A replicated copy must expire on its new node too."""
    raw = meta.get("headers", {}).get("x-delete-at")
    return int(raw) if raw and str(raw).isdigit() else None


def _data_length(datadir: str, ts: str) -> int:
    reader = ObjectReader.open(datadir)
    try:
        return reader.body_len if reader.timestamp == ts else 0
    finally:
        reader.close()


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/").strip('"') for t in header.split(",")]
    return "*" in tags or etag in tags


def check_conditions(headers: dict, etag: str, timestamp: float) -> int | None:
    """RFC 9110 preconditions on a GET/HEAD: 412 or 304 to answer instead, or None."""
    last_modified = math.ceil(timestamp)
    if_match = headers.get("if-match")
    if if_match is not None and not _etag_matches(if_match, etag):
        return 412
    if if_match is None:
        since = _parse_http_date(headers.get("if-unmodified-since"))
        if since is not None and last_modified > since:
            return 412
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag):
            return 304
    else:
        since = _parse_http_date(headers.get("if-modified-since"))
        if since is not None and last_modified <= since:
            return 304
    return None


def _parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed.timestamp() if parsed is not None else None


def parse_range(header: str, length: int) -> list[tuple[int, int]] | None:
    """Byte ranges as [start, end) pairs; None if the header is not a valid bytes range (then
    the whole body is served, as RFC 9110 says), [] if no range is satisfiable (416)."""
    header = header.strip()
    if not header.lower().startswith("bytes="):
        return None
    out = []
    specs = header[6:].split(",")
    if len(specs) > 100:
        return None
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        first, sep, last = spec.partition("-")
        if not sep:
            return None
        first, last = first.strip(), last.strip()
        try:
            if first == "":
                if not last:
                    return None
                n = int(last)
                if n < 0:
                    return None
                if n == 0:
                    continue
                out.append((max(0, length - n), length))
            else:
                start = int(first)
                end = int(last) + 1 if last else None
                if start < 0 or (end is not None and end <= start):
                    return None
                if start >= length:
                    continue
                end = length if end is None else end
                out.append((start, min(end, length)))
        except ValueError:
            return None
    return out
