"""The object expirer: delete objects whose X-Delete-At has passed.

Every node expires its own replicas. A PUT or POST carrying X-Delete-At records an entry
``<dev>/expiring/<delete_at:010d>-<hash>`` (msgpack: account, container, obj, part); names sort
by time, so a pass reads entries until the first one in the future. For a due entry, if the
object still has that X-Delete-At, a tombstone is written (timestamped at X-Delete-At, so a
later PUT wins) and the container rows are deleted through the container ring, with failures
left to the updater as pending updates. GETs of an expired object already answer 404 before
the expirer gets to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import msgpack

from . import diskfile
from .common import normalize_timestamp
from .diskfile import DiskFileCorrupt, ObjectReader, ObjectWriter
from .updater import quote_path

log = logging.getLogger("stratus.objectstore.expirer")


def add_expiring_entry(dev_path: str, delete_at: int, hash_hex: str, info: dict) -> None:
    directory = f"{dev_path}/expiring"
    os.makedirs(directory, exist_ok=True)
    with open(f"{directory}/{delete_at:010d}-{hash_hex}", "wb") as fh:
        fh.write(msgpack.packb(info))


def expire_object(dev_path: str, part: int, hash_hex: str, delete_at: int, name: str):
    """Write the tombstone if the object still expires at ``delete_at``; returns its timestamp."""
    datadir = diskfile.object_dir(dev_path, part, hash_hex)
    try:
        reader = ObjectReader.open(datadir)
    except DiskFileCorrupt:
        return None
    try:
        if reader.timestamp is None or reader.deleted:
            return None
        if reader.headers.get("x-delete-at") != str(delete_at):
            return None
        ts = normalize_timestamp(max(float(delete_at), float(reader.timestamp) + 0.00001))
    finally:
        reader.close()
    writer = ObjectWriter(dev_path)
    try:
        writer.commit(datadir, ts, diskfile.TOMBSTONE, {"name": name, "ts": ts})
    finally:
        writer.abort()
    return ts


class Expirer:
    def __init__(self, node, interval: float):
        self.node = node
        self.interval = interval
        self.stats = {"expired": 0}

    async def run_forever(self):
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("expirer pass failed")
            await asyncio.sleep(self.interval)

    async def run_once(self) -> int:
        node = self.node
        done = 0
        now = time.time()
        for device in node.mounted_devices():
            dev_path = node.dev_path(device)
            for entry_name in await node.run_blocking(_due_entries, dev_path, now):
                entry_path = f"{dev_path}/expiring/{entry_name}"
                delete_at_raw, hash_hex = entry_name.split("-", 1)
                delete_at = int(delete_at_raw)
                try:
                    info = await node.run_blocking(_read, entry_path)
                except (OSError, ValueError):
                    continue
                name = f"/{info['account']}/{info['container']}/{info['obj']}"
                ts = await node.run_blocking(expire_object, dev_path, info["part"], hash_hex,
                                             delete_at, name)
                if ts is not None:
                    await self._update_container(device, hash_hex, ts, info)
                    self.stats["expired"] += 1
                    done += 1
                await node.run_blocking(_unlink, entry_path)
        return done

    async def _update_container(self, device, hash_hex, ts, info):
        ring = self.node.rings.get("container")
        if ring is None:
            return
        part, devs = ring.get_nodes(info["account"], info["container"])
        targets = [(d["ip"], d["port"], d["device"], part) for d in devs]
        path = quote_path(info["account"], info["container"], info["obj"])
        headers = {"X-Backend-Server-Type": "container", "X-Timestamp": ts}
        await self.node._send_updates(device, hash_hex, ts, "object", "DELETE", path, headers,
                                      targets)


def _due_entries(dev_path: str, now: float) -> list[str]:
    try:
        names = sorted(os.listdir(f"{dev_path}/expiring"))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        head = n.split("-", 1)[0]
        if not head.isdigit():
            continue
        if int(head) > now:
            break
        out.append(n)
    return out


def _read(path: str) -> dict:
    with open(path, "rb") as fh:
        return msgpack.unpackb(fh.read())


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
