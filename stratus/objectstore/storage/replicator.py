"""The replicator daemon: make every primary hold every object and DB row; drain handoffs.

The REPLICATE requests below are sent as ``POST`` with ``X-Backend-Replicate: 1``: the
llhttp parser under uvicorn (and many proxies) only accepts registered HTTP methods. A server
also accepts the literal ``REPLICATE`` method where the HTTP parser lets it through.

Objects, per local partition directory:

1. ``REPLICATE /<dev>/<part>`` on each other primary returns its ``{suffix: hash}``; suffixes
   whose hash differs from ours need work.
2. ``REPLICATE /<dev>/<part>/<suf>-<suf>...`` with ``X-Backend-List-Files: 1`` returns the
   peer's files in those suffixes; we push every file newer than the peer's: a ``.data``
   as ``PUT`` with ``X-Backend-Replicated-Meta`` (the exact metadata, timestamp included),
   a ``.ts`` as ``DELETE`` and a ``.meta`` as ``POST``, both also with that header. A pushed
   ``.data`` is re-verified block by block on read here and by md5 on the receiving side.
3. A primary whose device answers 507 (or is unreachable) is replaced by the next handoff, so
   a partition stays fully replicated while a device is out.
4. A partition this node holds but is not a primary for (a handoff) is deleted once every
   primary has all of it and nothing changed locally meanwhile.

Each node only *pushes*; data it lacks arrives from the peers' pushes.

Container/account DBs, per DB: ``REPLICATE /<dev>/<part>/<dbhash>`` with
``X-Backend-Server-Type: container|account`` and a msgpack body:

* ``{"op": "sync", "db_id"}`` → ``{"exists", "point", "info_hash", "hash"}``: ``point`` is
  the last row id of our DB the peer has merged, ``hash`` the XOR of its rows' md5s: equal
  hashes mean equal rows, and only the sync point is recorded (no rows sent);
* ``{"op": "merge", "db_id", "info", "rows", "point"}`` → ``{"ok": true}``: the peer creates
  the DB if needed, merges the info (timestamps, metadata) and the rows, and records ``point``.

Rows merge by timestamp, so pushes in both directions converge.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import time
from urllib.parse import quote

import msgpack

from ..httpclient import NodeConnectionError
from . import diskfile
from .common import BadRequest, normalize_timestamp
from .db import db_path
from .diskfile import DiskFileCorrupt, ObjectReader
from .updater import _list_dbs, quote_path

log = logging.getLogger("stratus.objectstore.replicator")

ROWS_PER_MERGE = 2000


class Unavailable(Exception):
    """The peer device cannot take data now (507, connection refused): use a handoff."""


def _ts_of(name: str | None) -> str:
    return name.rsplit(".", 1)[0] if name else ""


class Replicator:
    def __init__(self, node, interval: float, concurrency: int = 4):
        self.node = node
        self.interval = interval
        self.concurrency = concurrency
        self.stats = {"passes": 0, "partitions": 0, "pushed": 0, "handoffs_removed": 0,
                      "dbs": 0, "rows_pushed": 0, "errors": 0, "last_pass": 0.0}

    async def run_forever(self):
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("replication pass failed")
            await asyncio.sleep(self.interval)

    async def run_once(self):
        node = self.node
        ring = node.rings.get("object")
        for device in node.mounted_devices():
            await node.run_blocking(diskfile.clean_tmp, node.dev_path(device), 3600)
            if ring is not None:
                dev_path = node.dev_path(device)
                parts = await node.run_blocking(_list_parts, f"{dev_path}/objects")
                sem = asyncio.Semaphore(self.concurrency)

                async def one(part, device=device):
                    async with sem:
                        try:
                            await self.replicate_partition(ring, device, part)
                        except Exception:
                            self.stats["errors"] += 1
                            log.exception("replicating %s/%s failed", device, part)

                await asyncio.gather(*(one(p) for p in parts))
            for kind in ("container", "account"):
                if node.rings.get(kind) is None:
                    continue
                for db_file in await node.run_blocking(_list_dbs, node.dev_path(device),
                                                       kind + "s"):
                    try:
                        await self.replicate_db(kind, device, db_file)
                    except Exception:
                        self.stats["errors"] += 1
                        log.exception("replicating %s failed", db_file)
        self.stats["passes"] += 1
        self.stats["last_pass"] = time.time()

    # ---------------------------------------------------------------------------------------
    def _targets(self, ring, part: int, device: str):
        """(am I a primary, primaries other than me, handoff iterator)."""
        me = (self.node.config.ip, self.node.config.port, device)
        primaries = ring.get_part_nodes(part) if part < ring.partition_count else []
        others = [d for d in primaries if (d["ip"], d["port"], d["device"]) != me]
        is_primary = len(others) < len(primaries)
        handoffs = (d for d in ring.get_more_nodes(part) if (d["ip"], d["port"], d["device"]) != me) \
            if part < ring.partition_count else iter(())
        return is_primary, others, handoffs

    async def replicate_partition(self, ring, device: str, part: int):
        node = self.node
        part_dir = f"{node.dev_path(device)}/objects/{part}"
        is_primary, targets, handoffs = self._targets(ring, part, device)
        hashes = await node.run_blocking(diskfile.get_hashes, part_dir, (),
                                         node.config.reclaim_age)
        self.stats["partitions"] += 1
        all_ok = True
        queue = list(targets)
        while queue:
            target = queue.pop(0)
            try:
                await self.sync_partition(device, part, part_dir, hashes, target)
            except Unavailable as exc:
                log.info("partition %s: %s:%s/%s unavailable (%s), trying a handoff", part,
                         target["ip"], target["port"], target["device"], exc)
                all_ok = False
                if is_primary:
                    nxt = next(handoffs, None)
                    if nxt is not None:
                        queue.append(nxt)
            except Exception:
                all_ok = False
                raise
        if not is_primary and all_ok and targets:
            def remove_if_unchanged():
                again = diskfile.get_hashes(part_dir, (), node.config.reclaim_age)
                if again == hashes:
                    shutil.rmtree(part_dir, ignore_errors=True)
                    return True
                return False

            if await node.run_blocking(remove_if_unchanged):
                self.stats["handoffs_removed"] += 1

    async def _replicate_call(self, target, path: str, headers: dict, body: bytes = b""):
        try:
            resp = await self.node.client.request(
                target["ip"], target["port"], "POST",
                f"/{quote(target['device'], safe='')}{path}",
                {**headers, "X-Backend-Replicate": "1"}, body, timeout=60)
            data = await resp.read()
        except (NodeConnectionError, asyncio.TimeoutError, OSError) as exc:
            raise Unavailable(repr(exc)) from None
        if resp.status == 507:
            raise Unavailable("device not mounted")
        if resp.status != 200:
            raise RuntimeError(f"REPLICATE {path} answered {resp.status}: {data[:200]!r}")
        return msgpack.unpackb(data)

    async def sync_partition(self, device, part, part_dir, hashes, target):
        remote = await self._replicate_call(target, f"/{part}", {})
        diff = sorted(s for s, h in hashes.items() if remote["hashes"].get(s) != h)
        if not diff:
            return
        remote = await self._replicate_call(target, f"/{part}/{'-'.join(diff)}",
                                            {"X-Backend-List-Files": "1"})
        local = await self.node.run_blocking(
            lambda: {s: diskfile.list_suffix(part_dir, s) for s in diff})
        for suffix in diff:
            theirs_suffix = remote["files"].get(suffix, {})
            for hash_name, files in local[suffix].items():
                theirs = theirs_suffix.get(hash_name, [])
                their_state = max((f for f in theirs if not f.endswith(diskfile.META)),
                                  default=None)
                their_meta = max((f for f in theirs if f.endswith(diskfile.META)), default=None)
                datadir = f"{part_dir}/{suffix}/{hash_name}"
                for name in files:
                    if name.endswith(diskfile.META):
                        newer = _ts_of(name) > max(_ts_of(their_meta), _ts_of(their_state))
                    else:
                        newer = _ts_of(name) > _ts_of(their_state)
                    if newer:
                        await self.push_file(target, part, datadir, name)
                        self.stats["pushed"] += 1
        # make the peer rehash what we pushed
        await self._replicate_call(target, f"/{part}/{'-'.join(diff)}", {})

    async def push_file(self, target, part: int, datadir: str, filename: str):
        node = self.node
        path = f"{datadir}/{filename}"

        def read_meta():
            fd = os.open(path, os.O_RDONLY)
            try:
                meta, _, _ = diskfile.read_file_meta(fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            return meta

        try:
            meta = await node.run_blocking(read_meta)
        except FileNotFoundError:
            return  # superseded meanwhile; the next pass will see the new state
        except DiskFileCorrupt:
            await node.run_blocking(diskfile.quarantine, os.path.dirname(os.path.dirname(
                os.path.dirname(os.path.dirname(datadir)))), datadir)
            return
        _, account, container, obj = meta["name"].split("/", 3)
        url = f"/{quote(target['device'], safe='')}/{part}" + quote_path(account, container, obj)
        sent_meta = {k: v for k, v in meta.items() if k not in ("crc", "xxh3", "len")}
        headers = {"X-Backend-Replicated-Meta": base64.b64encode(msgpack.packb(sent_meta)).decode(),
                   "X-Timestamp": meta["ts"]}
        client = node.client
        if filename.endswith(diskfile.DATA):
            reader = await node.run_blocking(ObjectReader.open, datadir)
            if reader.timestamp != _ts_of(filename) or reader.deleted:
                await node.run_blocking(reader.close)
                return

            async def body():
                pos = 0
                while pos < reader.body_len:
                    end = min(pos + (4 << 20), reader.body_len)
                    yield await node.run_blocking(reader.read_range, pos, end)
                    pos = end

            try:
                resp = await client.request(target["ip"], target["port"], "PUT", url, headers,
                                            body(), content_length=reader.body_len, timeout=60)
                await resp.read()
            except DiskFileCorrupt:
                dev_path = datadir.split("/objects/")[0]
                await node.run_blocking(diskfile.quarantine, dev_path, datadir)
                return
            except (NodeConnectionError, asyncio.TimeoutError) as exc:
                raise Unavailable(repr(exc)) from None
            finally:
                await node.run_blocking(reader.close)
        else:
            method = "DELETE" if filename.endswith(diskfile.TOMBSTONE) else "POST"
            try:
                resp = await client.request(target["ip"], target["port"], method, url, headers,
                                            timeout=30)
                await resp.read()
            except (NodeConnectionError, asyncio.TimeoutError) as exc:
                raise Unavailable(repr(exc)) from None
        if resp.status == 507:
            raise Unavailable("device not mounted")
        if not (200 <= resp.status < 300 or resp.status in (404, 409)):
            raise RuntimeError(f"push of {path} answered {resp.status}")

    # ---------------------------------------------------------------------------------------
    async def replicate_db(self, kind: str, device: str, db_file: str):
        node = self.node
        ring = node.rings.get(kind)
        entry = node.brokers.get(db_file, kind)
        broker = entry.broker
        cutoff = normalize_timestamp(time.time() - node.config.reclaim_age)

        def local_info():
            broker.reclaim(cutoff)
            return broker.replication_info()

        rinfo = await node.brokers.call(entry, local_info)
        info = rinfo["info"]
        if kind == "container":
            part, primaries = ring.get_nodes(info["account"], info["container"])
        else:
            part, primaries = ring.get_nodes(info["account"])
        hash_name = os.path.basename(os.path.dirname(db_file))
        me = (node.config.ip, node.config.port, device)
        local_part = int(db_file.split(f"/{kind}s/")[1].split("/")[0])
        is_primary = local_part == part and any(
            (d["ip"], d["port"], d["device"]) == me for d in primaries)
        targets = [d for d in primaries if (d["ip"], d["port"], d["device"]) != me]
        handoffs = (d for d in ring.get_more_nodes(part) if (d["ip"], d["port"], d["device"]) != me)
        self.stats["dbs"] += 1
        all_ok = True
        queue = list(targets)
        headers = {"X-Backend-Server-Type": kind}
        while queue:
            target = queue.pop(0)
            path = f"/{part}/{hash_name}"
            try:
                state = await self._replicate_call(
                    target, path, headers, msgpack.packb({"op": "sync", "db_id": info["db_id"]}))
                point = state["point"] if state["exists"] else -1
                if state["exists"] and state["info_hash"] == rinfo["info_hash"]:
                    if point >= rinfo["max_row"]:
                        continue
                    if state.get("hash") == rinfo["hash"]:
                        # same rows already (e.g. both got every update): just remember it
                        await self._replicate_call(target, path, headers, msgpack.packb({
                            "op": "merge", "db_id": info["db_id"], "info": info, "rows": [],
                            "point": rinfo["max_row"]}))
                        continue
                first = True
                while True:
                    rows = await node.brokers.call(entry, broker.get_items_since, point,
                                                   ROWS_PER_MERGE)
                    if not rows and not first:
                        break
                    first = False
                    new_point = rows[-1][0] if rows else point
                    info_now = await node.brokers.call(entry, broker.get_info)
                    await self._replicate_call(target, path, headers, msgpack.packb({
                        "op": "merge", "db_id": info["db_id"], "info": info_now,
                        "rows": [list(r[1:]) for r in rows], "point": new_point}))
                    self.stats["rows_pushed"] += len(rows)
                    point = new_point
                    if len(rows) < ROWS_PER_MERGE:
                        break
            except Unavailable:
                all_ok = False
                if is_primary:
                    nxt = next(handoffs, None)
                    if nxt is not None:
                        queue.append(nxt)
        if not is_primary and all_ok and targets:
            def remove():
                if broker.replication_info()["max_row"] == rinfo["max_row"]:
                    broker.close()
                    shutil.rmtree(os.path.dirname(db_file), ignore_errors=True)
                    return True
                return False

            if await node.brokers.call(entry, remove):
                node.brokers.drop(db_file)


async def handle_db_replicate(node, req, kind: str, body: bytes) -> dict:
    """Server side of DB replication (REPLICATE with X-Backend-Server-Type)."""
    hash_name = req.rest
    if len(hash_name) != 32 or any(c not in "0123456789abcdef" for c in hash_name):
        raise BadRequest(400, "REPLICATE for a DB needs /<dev>/<part>/<32 hex hash>")
    try:
        doc = msgpack.unpackb(body)
        op = doc["op"]
        remote_id = doc["db_id"]
    except Exception:
        raise BadRequest(400, "bad REPLICATE body") from None
    path = db_path(node.dev_path(req.device), kind, req.partition, hash_name)
    entry = node.brokers.get(path, kind)
    broker = entry.broker
    if op == "sync":
        def sync():
            if not broker.exists():
                return {"exists": False, "point": -1, "info_hash": "", "hash": ""}
            info = broker.get_info()
            return {"exists": True, "point": broker.get_sync(remote_id),
                    "info_hash": broker.info_hash(info), "hash": info["hash"]}
        return await node.brokers.call(entry, sync)
    if op == "merge":
        info = doc["info"]
        rows = [tuple(r) for r in doc["rows"]]

        def merge():
            if not broker.exists():
                broker.initialize(info["account"], info.get("container"), info["put_timestamp"])
            broker.merge_info(info)
            if rows:
                broker.merge_items(rows)
            broker.set_sync(remote_id, doc["point"])
            return {"ok": True}
        return await node.brokers.call(entry, merge)
    raise BadRequest(400, f"unknown REPLICATE op {op!r}")


def _list_parts(objects_dir: str) -> list[int]:
    try:
        return sorted(int(n) for n in os.listdir(objects_dir) if n.isdigit())
    except FileNotFoundError:
        return []
