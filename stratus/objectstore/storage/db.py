"""Container and account databases: one SQLite file (WAL mode) per container / account.

Paths: ``<dev>/containers/<part>/<suffix>/<hash>/<hash>.db`` (and ``accounts/...``), where
``<hash>`` is the ring hash of ``/account/container`` (``/account``).

A container DB holds one row per object name, deleted names included (``deleted=1``, so that
replication can merge deletions); an account DB one row per container with its stats. Rows
carry a timestamp and merging keeps the newest, so applying the same updates in any order,
any number of times, on any replica gives the same result. Metadata is a JSON map
``{header: [value, timestamp]}`` merged per key the same way (value "" = removed).

Row ids are AUTOINCREMENT and a replaced row gets a new one: "rows with id > N" is exactly
what changed since a peer was last synced to N (the ``sync`` table remembers N per peer).

Everything here blocks; the server calls it from its thread pool, one thread at a time per DB.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid

from .common import BadRequest, fsync_dir

CONTAINER_SCHEMA = """
CREATE TABLE object (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    content_type TEXT NOT NULL DEFAULT '',
    etag TEXT NOT NULL DEFAULT '',
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE info (
    account TEXT, container TEXT, db_id TEXT, created_at TEXT,
    put_timestamp TEXT, delete_timestamp TEXT DEFAULT '0', status_changed_at TEXT,
    object_count INTEGER DEFAULT 0, bytes_used INTEGER DEFAULT 0,
    reported_put_timestamp TEXT DEFAULT '0', reported_delete_timestamp TEXT DEFAULT '0',
    reported_object_count INTEGER DEFAULT -1, reported_bytes_used INTEGER DEFAULT -1,
    metadata TEXT DEFAULT '{}', hash TEXT DEFAULT '00000000000000000000000000000000'
);
CREATE TABLE sync (remote_id TEXT PRIMARY KEY, point INTEGER);
"""

ACCOUNT_SCHEMA = """
CREATE TABLE container (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    put_timestamp TEXT NOT NULL DEFAULT '0',
    delete_timestamp TEXT NOT NULL DEFAULT '0',
    object_count INTEGER NOT NULL DEFAULT 0,
    bytes_used INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    stats_timestamp TEXT NOT NULL DEFAULT '0'
);
CREATE TABLE info (
    account TEXT, container TEXT, db_id TEXT, created_at TEXT,
    put_timestamp TEXT, delete_timestamp TEXT DEFAULT '0', status_changed_at TEXT,
    container_count INTEGER DEFAULT 0, object_count INTEGER DEFAULT 0,
    bytes_used INTEGER DEFAULT 0, metadata TEXT DEFAULT '{}',
    hash TEXT DEFAULT '00000000000000000000000000000000'
);
CREATE TABLE sync (remote_id TEXT PRIMARY KEY, point INTEGER);
"""


class DatabaseError(Exception):
    pass


def db_path(dev_path: str, kind: str, part: int, hash_hex: str) -> str:
    return f"{dev_path}/{kind}s/{part}/{hash_hex[-3:]}/{hash_hex}/{hash_hex}.db"


# What a client's metadata may add up to on one account or container, all requests together
# (one request's own share is checked by the proxy); Swift's constraints
MAX_META_COUNT = 90
MAX_META_OVERALL = 4096


class MetadataTooLarge(BadRequest):
    """A client's update would take the stored user metadata past its limits (a 400)."""

    def __init__(self, message: str):
        super().__init__(400, message)


def check_metadata_totals(metadata: dict) -> None:
    """Raise :class:`MetadataTooLarge` if the user metadata in ``metadata`` ({header: [value,
    timestamp]}; set values only, sysmeta not counted) is too many items or too large."""
    count = size = 0
    for key, (value, _ts) in metadata.items():
        if value and key.startswith(("x-account-meta-", "x-container-meta-")):
            count += 1
            size += len(key) - len(key.split("-meta-", 1)[0]) - len("-meta-") + len(value)
    if count > MAX_META_COUNT:
        raise MetadataTooLarge(f"Too many metadata items; max {MAX_META_COUNT}")
    if size > MAX_META_OVERALL:
        raise MetadataTooLarge(f"Total metadata too large; max {MAX_META_OVERALL}")


def merge_metadata(current: dict, updates: dict) -> tuple[dict, bool]:
    changed = False
    out = dict(current)
    for key, (value, ts) in updates.items():
        if key not in out or out[key][1] < ts:
            out[key] = [value, ts]
            changed = True
    return out, changed


def row_hash(row) -> int:
    """md5 of a row's fields as an int; a DB's ``hash`` is the XOR of all its rows' (so it
    does not depend on the order rows arrived in, and two replicas holding the same rows
    have the same hash: replication skips them without sending a row)."""
    raw = "\x00".join(str(v) for v in row).encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.md5(raw).digest(), "big")


def _xor_hash(conn, delta: int) -> None:
    if delta:
        current = int(conn.execute("SELECT hash FROM info").fetchone()[0], 16)
        conn.execute("UPDATE info SET hash = ?", ("%032x" % (current ^ delta),))


def _upper_bound(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Broker:
    """One container or account database."""

    kind = ""
    schema = ""
    item_table = ""

    def __init__(self, path: str):
        self.path = path
        self.conn: sqlite3.Connection | None = None

    # connection ------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.conn is not None or os.path.exists(self.path)

    def _connect(self, path: str | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(path or self.path, timeout=30, isolation_level=None,
                               check_same_thread=False)
        # One connection per DB, in the node process that owns the device (BrokerCache):
        # nobody else opens it, so the lock is held for the connection's life and the WAL
        # index lives in this process's memory instead of a mmapped <db>-shm file. That file
        # is written to on every commit, and the group syncfs of the object writes on the
        # same file system wrote its dirty page back each time (measured under a 4 KiB PUT
        # load: 12.5 KB of disk writes per PUT, 7% of all, for a file nobody needs on disk).
        # Another process opening the DB waits for this one to close it (busy timeout).
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a process crash; only an OS crash can lose the
        # last commits, and replication repairs those from the other replicas.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def db(self) -> sqlite3.Connection:
        if self.conn is None:
            if not os.path.exists(self.path):
                raise DatabaseError(f"{self.kind} database does not exist")
            self.conn = self._connect()
        return self.conn

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def initialize(self, account: str, container: str | None, put_timestamp: str,
                   db_id: str | None = None) -> bool:
        """Create the DB (atomically: built under a temp name, then renamed). False if it existed."""
        if os.path.exists(self.path):
            return False
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        tmp = f"{directory}/.{uuid.uuid4().hex}.tmp"
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.executescript(self.schema)
            conn.execute(
                "INSERT INTO info (account, container, db_id, created_at, put_timestamp, "
                "status_changed_at) VALUES (?, ?, ?, ?, ?, ?)",
                (account, container, db_id or uuid.uuid4().hex, put_timestamp, put_timestamp,
                 put_timestamp))
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        fd = os.open(tmp, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        if os.path.exists(self.path):  # lost a race with another creator
            os.unlink(tmp)
            return False
        os.rename(tmp, self.path)
        fsync_dir(directory)
        return True

    # info --------------------------------------------------------------------------------
    def get_info(self) -> dict:
        cur = self.db().execute("SELECT * FROM info")
        row = cur.fetchone()
        info = dict(zip([d[0] for d in cur.description], row))
        info["metadata"] = json.loads(info["metadata"] or "{}")
        return info

    def is_deleted(self, info: dict | None = None) -> bool:
        info = info or self.get_info()
        return info["delete_timestamp"] > info["put_timestamp"] and \
            info.get("object_count", 0) == 0 and info.get("container_count", 0) == 0

    def update_put_timestamp(self, ts: str) -> None:
        self.db().execute(
            "UPDATE info SET put_timestamp = ?, status_changed_at = ? WHERE put_timestamp < ?",
            (ts, ts, ts))

    def mark_deleted(self, ts: str) -> None:
        self.db().execute(
            "UPDATE info SET delete_timestamp = ?, status_changed_at = ? "
            "WHERE delete_timestamp < ?", (ts, ts, ts))

    def update_metadata(self, updates: dict, *, check_totals: bool = False) -> None:
        """Merge ``updates`` (newest timestamp wins). ``check_totals``, for a client's request:
        refuse (:class:`MetadataTooLarge`, nothing stored) a result past the limits; replication
        never refuses what a peer holds."""
        if not updates:
            return
        conn = self.db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = json.loads(conn.execute("SELECT metadata FROM info").fetchone()[0] or "{}")
            merged, changed = merge_metadata(current, updates)
            if changed and check_totals:
                check_metadata_totals(merged)
            if changed:
                conn.execute("UPDATE info SET metadata = ?", (json.dumps(merged),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # replication -------------------------------------------------------------------------
    def info_hash(self, info: dict) -> str:
        doc = [info["put_timestamp"], info["delete_timestamp"], info["created_at"],
               sorted(info["metadata"].items())]
        return hashlib.md5(json.dumps(doc).encode()).hexdigest()

    def replication_info(self) -> dict:
        info = self.get_info()
        max_row = self.db().execute(f"SELECT MAX(rowid) FROM {self.item_table}").fetchone()[0]
        return {"db_id": info["db_id"], "max_row": max_row or 0,
                "info_hash": self.info_hash(info), "hash": info["hash"], "info": info}

    def get_sync(self, remote_id: str) -> int:
        row = self.db().execute("SELECT point FROM sync WHERE remote_id = ?",
                                (remote_id,)).fetchone()
        return row[0] if row else -1

    def set_sync(self, remote_id: str, point: int) -> None:
        self.db().execute(
            "INSERT INTO sync (remote_id, point) VALUES (?, ?) ON CONFLICT(remote_id) "
            "DO UPDATE SET point = MAX(point, excluded.point)", (remote_id, point))

    def merge_info(self, remote: dict) -> None:
        """Take the newest put/delete timestamps and metadata of a peer's copy."""
        conn = self.db()
        if remote["put_timestamp"]:
            self.update_put_timestamp(remote["put_timestamp"])
        if remote["delete_timestamp"] and remote["delete_timestamp"] != "0":
            self.mark_deleted(remote["delete_timestamp"])
        conn.execute("UPDATE info SET created_at = ? WHERE created_at > ?",
                     (remote["created_at"], remote["created_at"]))
        self.update_metadata({k: tuple(v) for k, v in remote["metadata"].items()})

    def get_items_since(self, point: int, limit: int) -> list[tuple]:
        cols = ", ".join(self.item_columns)
        return self.db().execute(
            f"SELECT rowid, {cols} FROM {self.item_table} WHERE rowid > ? ORDER BY rowid "
            f"LIMIT ?", (point, limit)).fetchall()

    def reclaim(self, older_than: str) -> int:
        """Forget deleted rows older than ``older_than`` (their hashes leave the DB hash)."""
        conn = self.db()
        cols = ", ".join(self.item_columns)
        where = f"deleted = 1 AND {self.item_ts_column} < ?"
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(f"SELECT {cols} FROM {self.item_table} WHERE {where}",
                                (older_than,)).fetchall()
            d_hash = 0
            for row in rows:
                d_hash ^= row_hash(row)
            conn.execute(f"DELETE FROM {self.item_table} WHERE {where}", (older_than,))
            _xor_hash(conn, d_hash)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)


class ContainerBroker(Broker):
    kind = "container"
    schema = CONTAINER_SCHEMA
    item_table = "object"
    item_columns = ("name", "created_at", "size", "content_type", "etag", "deleted")
    item_ts_column = "created_at"

    def object_count(self) -> int:
        return self.db().execute("SELECT object_count FROM info").fetchone()[0]

    def merge_items(self, items) -> int:
        """Apply object rows (name, created_at, size, content_type, etag, deleted); newest wins.

        Returns how many rows changed. One transaction for the whole batch.
        """
        conn = self.db()
        changed = 0
        d_count = d_bytes = 0
        d_hash = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for name, created_at, size, content_type, etag, deleted in items:
                deleted = 1 if deleted else 0
                old = conn.execute(
                    "SELECT created_at, size, content_type, etag, deleted FROM object "
                    "WHERE name = ?", (name,)).fetchone()
                if old is not None:
                    if old[0] >= created_at:
                        continue
                    if not old[4]:
                        d_count -= 1
                        d_bytes -= old[1]
                    d_hash ^= row_hash((name,) + tuple(old))
                if not deleted:
                    d_count += 1
                    d_bytes += size
                row = (name, created_at, size, content_type, etag, deleted)
                d_hash ^= row_hash(row)
                conn.execute(
                    "INSERT OR REPLACE INTO object (name, created_at, size, content_type, "
                    "etag, deleted) VALUES (?, ?, ?, ?, ?, ?)", row)
                changed += 1
            if d_count or d_bytes:
                conn.execute("UPDATE info SET object_count = object_count + ?, "
                             "bytes_used = bytes_used + ?", (d_count, d_bytes))
            _xor_hash(conn, d_hash)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return changed

    def list_objects(self, limit: int, marker: str = "", end_marker: str = "",
                     prefix: str = "", delimiter: str = "", reverse: bool = False) -> list:
        """Rows (name, created_at, size, content_type, etag) and ("subdir", prefix) entries."""
        return _listing(self.db(), "object", "name, created_at, size, content_type, etag",
                        limit, marker, end_marker, prefix, delimiter, reverse)

    def set_reported(self, put_ts, delete_ts, count, nbytes) -> None:
        self.db().execute(
            "UPDATE info SET reported_put_timestamp = ?, reported_delete_timestamp = ?, "
            "reported_object_count = ?, reported_bytes_used = ?",
            (put_ts, delete_ts, count, nbytes))


class AccountBroker(Broker):
    kind = "account"
    schema = ACCOUNT_SCHEMA
    item_table = "container"
    item_columns = ("name", "put_timestamp", "delete_timestamp", "object_count", "bytes_used",
                    "deleted", "stats_timestamp")
    item_ts_column = "delete_timestamp"

    def merge_items(self, items) -> int:
        """Apply container rows (name, put_ts, delete_ts, objects, bytes, deleted, stats_ts)."""
        conn = self.db()
        changed = 0
        d_cont = d_obj = d_bytes = 0
        d_hash = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for name, put_ts, delete_ts, count, nbytes, _deleted, stats_ts in items:
                old = conn.execute(
                    "SELECT put_timestamp, delete_timestamp, object_count, bytes_used, deleted, "
                    "stats_timestamp FROM container WHERE name = ?", (name,)).fetchone()
                if old is not None:
                    new_put = max(old[0], put_ts)
                    new_del = max(old[1], delete_ts)
                    if stats_ts >= old[5]:
                        new_count, new_bytes, new_stats = count, nbytes, stats_ts
                    else:
                        new_count, new_bytes, new_stats = old[2], old[3], old[5]
                else:
                    new_put, new_del = put_ts, delete_ts
                    new_count, new_bytes, new_stats = count, nbytes, stats_ts
                new_deleted = 1 if new_del > new_put else 0
                new_row = (new_put, new_del, new_count, new_bytes, new_deleted, new_stats)
                if old is not None and tuple(old) == new_row:
                    continue
                if old is not None:
                    d_hash ^= row_hash((name,) + tuple(old))
                    if not old[4]:
                        d_cont -= 1
                        d_obj -= old[2]
                        d_bytes -= old[3]
                d_hash ^= row_hash((name,) + new_row)
                if not new_deleted:
                    d_cont += 1
                    d_obj += new_count
                    d_bytes += new_bytes
                conn.execute(
                    "INSERT OR REPLACE INTO container (name, put_timestamp, delete_timestamp, "
                    "object_count, bytes_used, deleted, stats_timestamp) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (name,) + new_row)
                changed += 1
            if changed:
                conn.execute(
                    "UPDATE info SET container_count = container_count + ?, "
                    "object_count = object_count + ?, bytes_used = bytes_used + ?",
                    (d_cont, d_obj, d_bytes))
                _xor_hash(conn, d_hash)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return changed

    def list_containers(self, limit: int, marker: str = "", end_marker: str = "",
                        prefix: str = "", delimiter: str = "", reverse: bool = False) -> list:
        return _listing(self.db(), "container", "name, object_count, bytes_used, put_timestamp",
                        limit, marker, end_marker, prefix, delimiter, reverse)


def _listing(conn, table, columns, limit, marker, end_marker, prefix, delimiter, reverse):
    """Swift listing semantics: ranges by name, with ``delimiter`` rolling names up to subdirs."""
    results: list = []
    order = "DESC" if reverse else "ASC"
    marker_inclusive = False  # after skipping a subdir the next name may equal the new marker
    while len(results) < limit:
        where = ["deleted = 0"]
        args: list = []
        if reverse:
            if marker:
                where.append("name < ?")
                args.append(marker)
            if end_marker:
                where.append("name > ?")
                args.append(end_marker)
        else:
            if marker:
                where.append("name >= ?" if marker_inclusive else "name > ?")
                args.append(marker)
            if end_marker:
                where.append("name < ?")
                args.append(end_marker)
        if prefix:
            where.append("name >= ? AND name < ?")
            args += [prefix, _upper_bound(prefix)]
        want = limit - len(results)
        rows = conn.execute(
            f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} "
            f"ORDER BY name {order} LIMIT ?", args + [want]).fetchall()
        if not delimiter:
            results.extend(rows)
            break
        restart = False
        for row in rows:
            name = row[0]
            idx = name.find(delimiter, len(prefix))
            if idx >= 0:
                subdir = name[:idx + len(delimiter)]
                results.append(("subdir", subdir))
                if reverse:
                    marker = subdir  # everything below it in reverse order is < subdir
                else:
                    marker = _upper_bound(subdir)
                    marker_inclusive = True
                restart = True
                break
            results.append(row)
            marker = name
            marker_inclusive = False
        if not restart and len(rows) < want:
            break
    return results[:limit]
