"""Listing updates between servers, and the updater daemon that retries the failed ones.

An object PUT/DELETE on an object server sends the new row to the container server(s) the
proxy named (X-Container-Host/-Device/-Partition); a container PUT/DELETE sends the container's
stats to the account server(s) (X-Account-*). The request waits for these updates up to
``update_timeout``; any target that did not answer 2xx by then is written to a *pending file*::

    <dev>/async_pending/<suffix>/<hash>-<timestamp>-<kind>     msgpack
        {"method", "path", "headers", "targets": [[ip, port, device, part], ...]}

and the updater daemon retries pending files every ``interval`` seconds, removing each target
that succeeds and the file once none is left. Because rows merge by timestamp, replaying an
update that did land, or replaying updates out of order, is harmless.

The updater also reports container stats (object count, bytes) to the account servers (found
through the account ring) for every container DB whose stats changed since the last report:
object updates change the stats without the account server being told on each one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from urllib.parse import quote

import msgpack

from ..httpclient import HttpClient, NodeConnectionError
from .common import fsync_dir, normalize_timestamp
from .durable import make_dirs

log = logging.getLogger("stratus.objectstore.updater")


def quote_path(*names: str) -> str:
    """Percent-encode path components (surrogate-escaped bytes kept as they came)."""
    return "/" + "/".join(
        quote(n.encode("utf-8", "surrogateescape"), safe="/" if i >= 4 else "")
        for i, n in enumerate(names))


async def send_update(client: HttpClient, target, method: str, path: str, headers: dict,
                      timeout: float) -> bool:
    ip, port, device, part = target
    full = f"/{quote(device, safe='')}/{part}{path}"
    try:
        resp = await client.request(ip, port, method, full, headers, timeout=timeout)
        await resp.read()
    except (NodeConnectionError, asyncio.TimeoutError, OSError) as exc:
        log.debug("update %s %s to %s:%s failed: %r", method, path, ip, port, exc)
        return False
    return 200 <= resp.status < 300


def write_pending(dev_path: str, hash_hex: str, timestamp: str, kind: str, method: str,
                  path: str, headers: dict, targets: list) -> str:
    """Persist failed updates (blocking; runs in the thread pool)."""
    directory = f"{dev_path}/async_pending/{hash_hex[-3:]}"
    new_entries = make_dirs(directory)
    name = f"{directory}/{hash_hex}-{timestamp}-{kind}"
    tmp = f"{dev_path}/tmp/{uuid.uuid4().hex}"
    os.makedirs(f"{dev_path}/tmp", exist_ok=True)
    payload = msgpack.packb({"method": method, "path": path, "headers": headers,
                             "targets": [list(t) for t in targets]})
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fdatasync(fh.fileno())
    os.replace(tmp, name)
    fsync_dir(directory)
    for parent in new_entries:  # directories created above hold new entries too
        fsync_dir(parent)
    return name


class RowBatcher:
    """Coalesces object-row updates bound for the same container replica.

    While one batch request to a (node, device, container) is in flight, rows for it queue up
    and leave together in the next one: under load a container server receives one request
    per batch instead of one per object PUT, and its group commit writes the batch in one
    transaction. Wire format: ``POST /<dev>/<part>/<account>/<container>`` with
    ``X-Backend-Server-Type: container``, ``X-Backend-Row-Batch: 1`` and a msgpack body
    ``[[name, timestamp, size, content_type, etag, deleted], ...]`` → 204 (404 if the
    container DB does not exist).
    """

    MAX_ROWS = 1000

    def __init__(self, client: HttpClient):
        self.client = client
        self._queues: dict[tuple, list] = {}

    async def submit(self, target, account: str, container: str, row: list,
                     timeout: float) -> bool:
        key = (tuple(target), account, container)
        fut = asyncio.get_running_loop().create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = []
            queue.append((row, fut))
            asyncio.ensure_future(self._drain(key, timeout))
        else:
            queue.append((row, fut))
        return await fut

    async def _drain(self, key, timeout: float):
        target, account, container = key
        ip, port, device, part = target
        path = f"/{quote(device, safe='')}/{part}" + quote_path(account, container)
        headers = {"X-Backend-Server-Type": "container", "X-Backend-Row-Batch": "1"}
        try:
            while True:
                queue = self._queues.get(key)
                if not queue:
                    break
                batch = queue[:self.MAX_ROWS]
                del queue[:self.MAX_ROWS]
                ok = False
                try:
                    resp = await self.client.request(
                        ip, port, "POST", path, headers,
                        msgpack.packb([row for row, _ in batch]), timeout=timeout)
                    await resp.read()
                    ok = 200 <= resp.status < 300
                except (NodeConnectionError, asyncio.TimeoutError, OSError) as exc:
                    log.debug("row batch to %s:%s failed: %r", ip, port, exc)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(ok)
        finally:
            queue = self._queues.pop(key, None) or []
            for _, fut in queue:
                if not fut.done():
                    fut.set_result(False)


class Updater:
    """Daemon: retries pending updates and reports changed container stats to accounts."""

    def __init__(self, node, interval: float, concurrency: int = 8):
        self.node = node
        self.interval = interval
        self.concurrency = concurrency
        self.stats = {"succeeded": 0, "failed": 0, "container_reports": 0}

    async def run_forever(self):
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("updater pass failed")
            await asyncio.sleep(self.interval)

    async def run_once(self):
        for device in self.node.mounted_devices():
            await self._retry_pending(device)
            await self._report_containers(device)

    async def _retry_pending(self, device: str):
        dev_path = self.node.dev_path(device)
        run = self.node.run_blocking
        files = await run(_list_pending, dev_path)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(path):
            async with sem:
                try:
                    doc = await run(_read_pending, path)
                except (FileNotFoundError, ValueError):
                    return
                left = []
                for target in doc["targets"]:
                    ok = await send_update(self.node.client, target, doc["method"], doc["path"],
                                           doc["headers"], self.node.config.update_timeout * 4)
                    if not ok:
                        left.append(target)
                if not left:
                    self.stats["succeeded"] += 1
                    await run(_unlink_quiet, path)
                elif len(left) < len(doc["targets"]):
                    self.stats["failed"] += 1
                    doc["targets"] = left
                    await run(_rewrite_pending, path, doc)
                else:
                    self.stats["failed"] += 1

        await asyncio.gather(*(one(p) for p in files))

    async def _report_containers(self, device: str):
        """Send container stats that changed since the last report to the account servers."""
        ring = self.node.rings.get("account")
        if ring is None:
            return
        node = self.node
        for db_file in await node.run_blocking(_list_dbs, node.dev_path(device), "containers"):
            entry = node.brokers.get(db_file, "container")
            async with entry.lock:
                try:
                    info = await node.run_blocking(entry.broker.get_info)
                except Exception:
                    continue
            current = (info["put_timestamp"], info["delete_timestamp"], info["object_count"],
                       info["bytes_used"])
            reported = (info["reported_put_timestamp"], info["reported_delete_timestamp"],
                        info["reported_object_count"], info["reported_bytes_used"])
            if current == reported:
                continue
            part, devs = ring.get_nodes(info["account"])
            headers = container_report_headers(info)
            path = quote_path(info["account"], info["container"])
            results = await asyncio.gather(*(
                send_update(node.client, (d["ip"], d["port"], d["device"], part), "PUT", path,
                            headers, node.config.update_timeout * 4) for d in devs))
            if sum(results) >= len(devs) // 2 + 1:
                self.stats["container_reports"] += 1
                async with entry.lock:
                    await node.run_blocking(entry.broker.set_reported, *current)


def container_report_headers(info: dict) -> dict:
    return {"X-Backend-Server-Type": "account",
            "X-Put-Timestamp": info["put_timestamp"],
            "X-Delete-Timestamp": info["delete_timestamp"],
            "X-Object-Count": str(info["object_count"]),
            "X-Bytes-Used": str(info["bytes_used"]),
            "X-Timestamp": normalize_timestamp(time.time())}


def _list_pending(dev_path: str) -> list[str]:
    out = []
    base = f"{dev_path}/async_pending"
    try:
        suffixes = os.listdir(base)
    except FileNotFoundError:
        return out
    for suffix in suffixes:
        try:
            out.extend(f"{base}/{suffix}/{n}" for n in sorted(os.listdir(f"{base}/{suffix}"))
                       if not n.endswith(".tmp"))
        except FileNotFoundError:
            pass
    return out


def _read_pending(path: str) -> dict:
    with open(path, "rb") as fh:
        return msgpack.unpackb(fh.read())


def _rewrite_pending(path: str, doc: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(msgpack.packb(doc))
    os.replace(tmp, path)


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass


def _list_dbs(dev_path: str, kind_dir: str) -> list[str]:
    """All DB files of one kind on a device (walks part/suffix/hash)."""
    out = []
    base = f"{dev_path}/{kind_dir}"
    try:
        parts = os.listdir(base)
    except FileNotFoundError:
        return out
    for part in parts:
        try:
            suffixes = os.listdir(f"{base}/{part}")
        except (FileNotFoundError, NotADirectoryError):
            continue
        for suffix in suffixes:
            try:
                hashes = os.listdir(f"{base}/{part}/{suffix}")
            except (FileNotFoundError, NotADirectoryError):
                continue
            for h in hashes:
                path = f"{base}/{part}/{suffix}/{h}/{h}.db"
                if os.path.exists(path):
                    out.append(path)
    return out
