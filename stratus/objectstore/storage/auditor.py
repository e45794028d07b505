"""The auditor daemon: read every object back and quarantine the ones that fail.

Each pass walks ``objects/<part>/<suffix>/<hash>`` on every mounted device and checks the
current ``.data`` file completely: the trailer must parse, every 1 MiB block must match its
CRC-32 and the whole body its md5 (the ETag). A failing hash directory is moved to
``quarantined/objects/`` and its suffix invalidated, so the replicator sees the partition
differ from its peers and a good copy is pushed back. Reads are throttled to
``bytes_per_second`` so that auditing does not starve client traffic.

Container and account DBs get SQLite's ``PRAGMA quick_check``; a DB that fails it (or is not
a database any more) is moved to ``quarantined/containers|accounts/`` and the replicator
rebuilds it from the other replicas.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import uuid

from . import diskfile
from .updater import _list_dbs

log = logging.getLogger("stratus.objectstore.auditor")


class Auditor:
    def __init__(self, node, interval: float, bytes_per_second: float = 0):
        self.node = node
        self.interval = interval
        self.bytes_per_second = bytes_per_second
        self.stats = {"passes": 0, "checked": 0, "quarantined": 0, "dbs_checked": 0,
                      "dbs_quarantined": 0}

    async def run_forever(self):
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("audit pass failed")

    async def run_once(self) -> int:
        """One full pass; returns how many objects were quarantined."""
        node = self.node
        found = 0
        for device in node.mounted_devices():
            dev_path = node.dev_path(device)
            for datadir in await node.run_blocking(_list_datadirs, f"{dev_path}/objects"):
                reason = await node.run_blocking(diskfile.audit_file, datadir,
                                                 self.bytes_per_second)
                self.stats["checked"] += 1
                if reason:
                    await node.run_blocking(diskfile.quarantine, dev_path, datadir)
                    log.warning("auditor quarantined %s: %s", datadir, reason)
                    self.stats["quarantined"] += 1
                    found += 1
            for kind in ("container", "account"):
                for db_file in await node.run_blocking(_list_dbs, dev_path, kind + "s"):
                    if await self.audit_db(dev_path, kind, db_file):
                        found += 1
        self.stats["passes"] += 1
        return found

    async def audit_db(self, dev_path: str, kind: str, db_file: str) -> bool:
        """True if the DB was corrupt (and is now quarantined)."""
        node = self.node
        entry = node.brokers.get(db_file, kind)

        def check():
            try:
                result = entry.broker.db().execute("PRAGMA quick_check").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                result = str(exc)
            except FileNotFoundError:
                return None
            if result == "ok":
                return None
            entry.broker.close()
            target_dir = f"{dev_path}/quarantined/{kind}s"
            os.makedirs(target_dir, exist_ok=True)
            db_dir = os.path.dirname(db_file)
            os.rename(db_dir, f"{target_dir}/{os.path.basename(db_dir)}-{uuid.uuid4().hex[:8]}")
            return result

        async with entry.lock:
            reason = await node.run_blocking(check)
        self.stats["dbs_checked"] += 1
        if reason is None:
            return False
        node.brokers.drop(db_file)
        self.stats["dbs_quarantined"] += 1
        log.warning("auditor quarantined %s: %s", db_file, reason)
        return True


def _list_datadirs(objects_dir: str) -> list[str]:
    out = []
    try:
        parts = os.listdir(objects_dir)
    except FileNotFoundError:
        return out
    for part in parts:
        part_dir = f"{objects_dir}/{part}"
        if not os.path.isdir(part_dir):
            continue
        for suffix in os.listdir(part_dir):
            suffix_dir = f"{part_dir}/{suffix}"
            if len(suffix) != 3 or not os.path.isdir(suffix_dir):
                continue
            out.extend(f"{suffix_dir}/{h}" for h in os.listdir(suffix_dir))
    return out
