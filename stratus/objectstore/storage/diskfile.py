"""Objects on disk: layout, file format, durable writes, verified reads, partition hashes.

Layout under one device directory (``<root>/<device>``)::

    objects/<part>/<suffix>/<hash>/<timestamp>.data   object body + metadata
                                    <timestamp>.ts     tombstone (a DELETE)
                                    <timestamp>.meta   metadata from a later POST
    objects/<part>/hashes.json      {suffix: md5 of its file names}, for the replicator
    objects/<part>/hashes.invalid   suffixes changed since hashes.json was written
    objects.invalid                 the same for the whole device, handed out to the
                                    partitions by get_hashes (see invalidate_suffix)
    tmp/                            files being written (renamed into place when complete)
    quarantined/objects/<hash>-<n>  hash directories found corrupt
    async_pending/, expiring/       see updater.py and expirer.py

``<hash>`` is the hex md5 of the object path salted by the ring (ring.hash_path); ``<suffix>``
its last three hex digits. Timestamps are fixed-width so names sort chronologically; the
newest .data or .ts wins (last writer wins), a newer .meta overrides its metadata.

File format (the same for all three kinds)::

    body || msgpack(metadata) || u32 big-endian len(metadata) || b"STRM"

The trailer is written after the body because the ETag is only known once the body has
streamed through. ``metadata`` holds the object's name, timestamp, ETag (md5 hex), length,
its stored headers and ``xxh3``: the XXH3-64 hash of each 1 MiB block of the body. Reads check
every block *before* sending it, so a node never sends a corrupt byte; the auditor checks the
full md5 as well. XXH3 runs at over 20 GB/s here, CRC-32 (``crc``, what files written before
2026-11-21 carry, still read) at 2.2 GB/s: at CRC-32's speed the check cost a 256 MiB GET
about 0.12 s of a node's CPU, on a machine where the node, the proxy and the client share two
cores.

Durability: a write goes to tmp/ and is renamed into its hash directory; success is reported
only once the body and every changed directory entry are on stable storage, so it survives a
power cut. Large bodies are fdatasync'd before the rename and the hash directory (plus the
parent of any directory the rename created) fsync'd after it; they are written behind as
they stream (durable.start_writeback), so the final fdatasync is short. Small writes skip
those syncs (``commit(durable=False)``) and are made durable in batches by group commit
(durable.GroupSync, one syncfs for many writes). A file renamed into place but lost to a
crash before its sync fails its trailer or block check and is quarantined like any corrupt
replica; its write was never acknowledged. Everything here blocks: it runs in the node's
thread pool, or on the event loop for small cached files (``nowait`` reads).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import mmap
import os
import struct
import sys
import threading
import time
import uuid
import zlib
from array import array

import msgpack
import xxhash

from .durable import fsync_dir, make_dirs, start_writeback, wait_writeback

BLOCK_SIZE = 1 << 20
TRAILER = struct.Struct(">I4s")
MAGIC = b"STRM"
TAIL_READ = 64 * 1024  # first read from the end: metadata, and the whole body if small
DATA, TOMBSTONE, META = ".data", ".ts", ".meta"
INVALID_LOG_SUFFIX = ".invalid"  # <device>/objects.invalid: the device's log of changed suffixes
RECLAIM_AGE = 7 * 86400  # tombstones older than this are removed
REHASH_AGE = 3600  # hashes.json older than this is recomputed from scratch
# Large bodies: start writeback every WRITEBEHIND_CHUNK bytes and let at most
# WRITEBEHIND_LAG bytes be in flight (dirty or being written) before a write waits for the disk.
WRITEBEHIND_CHUNK = 4 << 20
WRITEBEHIND_LAG = 32 << 20

# Headers an object keeps besides X-Object-Meta-* and sysmeta. POST replaces the "user" ones.
STORED_HEADERS = {"content-type", "content-encoding", "content-disposition", "content-language",
                  "cache-control", "expires", "x-delete-at", "x-object-manifest",
                  "x-static-large-object", "x-symlink-target", "x-symlink-target-account"}
POST_REPLACED = {"content-type", "content-encoding", "content-disposition", "content-language",
                 "cache-control", "expires", "x-delete-at", "x-object-manifest"}


class DiskFileError(Exception):
    pass


class DiskFileCorrupt(DiskFileError):
    """A file failed its checksum or cannot be parsed; it must be quarantined."""


def is_stored_header(name: str) -> bool:
    return (name in STORED_HEADERS or name.startswith("x-object-meta-")
            or name.startswith("x-object-sysmeta-")
            or name.startswith("x-object-transient-sysmeta-"))


def is_post_replaced(name: str) -> bool:
    return (name in POST_REPLACED or name.startswith("x-object-meta-")
            or name.startswith("x-object-transient-sysmeta-"))


def object_dir(dev_path: str, part: int, hash_hex: str) -> str:
    return f"{dev_path}/objects/{part}/{hash_hex[-3:]}/{hash_hex}"


def _sums_bytes(sums: array) -> bytes:
    """Block sums as stored: little-endian whatever the machine."""
    if sys.byteorder != "little":
        sums = array(sums.typecode, sums)
        sums.byteswap()
    return sums.tobytes()


def _sums_array(raw: bytes, typecode: str) -> array:
    arr = array(typecode)
    arr.frombytes(raw)
    if sys.byteorder != "little":
        arr.byteswap()
    return arr


def block_sums(meta: dict) -> tuple[array, object]:
    """(the stored sum of every block, the function that computes one) from a file's
    metadata: XXH3-64, or CRC-32 for files written before XXH3."""
    raw = meta.get("xxh3")
    if raw is not None:
        return _sums_array(raw, "Q"), xxhash.xxh3_64_intdigest
    return _sums_array(meta.get("crc", b""), "I"), zlib.crc32


# ---------------------------------------------------------------------------------------------
# Partition locks and hashes

_locks_guard = threading.Lock()
_invalid_locks: dict[str, threading.Lock] = {}   # a device's invalidation log, appended to
_handout_locks: dict[str, threading.Lock] = {}   # ... and handed out to its partitions
_hash_locks: dict[str, threading.Lock] = {}


def _lock(table: dict, key: str) -> threading.Lock:
    lock = table.get(key)
    if lock is None:
        with _locks_guard:
            lock = table.setdefault(key, threading.Lock())
    return lock


def invalidate_suffix(part_dir: str, suffix: str) -> None:
    """Note that ``suffix`` of the partition at ``part_dir`` changed: the next
    :func:`get_hashes` of that partition recomputes it.

    The note goes to one log per device (``<device>/objects.invalid``, lines ``<part>
    <suffix>``), which get_hashes hands out to the partitions' own ``hashes.invalid``. Why
    not straight to the partition's file, as Swift does: new objects land in a different
    partition nearly every time, and the group syncfs that makes small writes durable then
    wrote one partition file's page (and its inode) back per object; with one log per device
    a whole batch of writes dirties one page (measured under a 4 KiB PUT load: the partition
    files were 7% of all disk writes)."""
    objects_dir, part = part_dir.rsplit("/", 1)
    with _lock(_invalid_locks, objects_dir):
        fd = os.open(objects_dir + INVALID_LOG_SUFFIX,
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{part} {suffix}\n".encode())
        finally:
            os.close(fd)


def _hand_out_invalid(objects_dir: str) -> None:
    """Move the device's invalidation log into its partitions' ``hashes.invalid`` files
    (caller holds the device's hand-out lock).

    The write path's lock is held only to rename the log aside, never for the partition
    files' syncs (small writes note their suffix on the event loop). The partition files are
    synced before the renamed log is removed, and a renamed log left by a crash is handed out
    first, so an invalidation can be repeated, never lost."""
    log_path = objects_dir + INVALID_LOG_SUFFIX
    handing = log_path + ".handing"
    if os.path.exists(handing):
        _hand_out_file(objects_dir, handing)
    with _lock(_invalid_locks, objects_dir):
        try:
            os.rename(log_path, handing)
        except FileNotFoundError:
            return
    _hand_out_file(objects_dir, handing)


def _hand_out_file(objects_dir: str, handing: str) -> None:
    with open(handing, "rb") as fh:
        raw = fh.read()
    by_part: dict[str, set[str]] = {}
    for line in raw.split(b"\n"):
        part, _, suffix = line.decode("ascii", "replace").partition(" ")
        if len(suffix) == 3 and part.isdigit():
            by_part.setdefault(part, set()).add(suffix)
    for part, suffixes in by_part.items():
        part_dir = f"{objects_dir}/{part}"
        path = f"{part_dir}/hashes.invalid"
        created = not os.path.exists(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            continue  # the partition is gone (replicated away): nothing left to hash
        try:
            os.write(fd, "".join(f"{s}\n" for s in sorted(suffixes)).encode())
            os.fdatasync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(part_dir)
    os.unlink(handing)


def scan_dir(datadir: str, files: list[str] | None = None):
    """Classify a hash directory: (state file, newer .meta or None, obsolete files)."""
    if files is None:
        try:
            files = os.listdir(datadir)
        except FileNotFoundError:
            return None, None, []
    files.sort(reverse=True)
    state = meta = None
    obsolete = []
    for name in files:
        if state is not None:
            obsolete.append(name)
        elif name.endswith(META):
            if meta is None:
                meta = name
            else:
                obsolete.append(name)
        elif name.endswith(DATA) or name.endswith(TOMBSTONE):
            state = name
        else:
            obsolete.append(name)  # stray (e.g. a foreign file): not ours to keep
    # a .meta without data is kept: it applies once the data arrives by replication
    if state is not None and state.endswith(TOMBSTONE) and meta is not None:
        obsolete.append(meta)
        meta = None
    return state, meta, obsolete


def cleanup_dir(datadir: str, reclaim_age: float | None = None, older_than: str | None = None
                ) -> tuple[str | None, str | None]:
    """Remove obsolete files (and, given ``reclaim_age``, old tombstones); returns what is
    left as (state, meta). With ``older_than`` (a file name), only files that sort before it
    go: the caller knows that file is durable, not whether newer ones are yet."""
    state, meta, obsolete = scan_dir(datadir)
    if older_than is not None:
        obsolete = [name for name in obsolete if name < older_than]
    for name in obsolete:
        try:
            os.unlink(f"{datadir}/{name}")
        except FileNotFoundError:
            pass
    if reclaim_age is not None and state and state.endswith(TOMBSTONE) and \
            float(state[:-3]) < time.time() - reclaim_age:
        try:
            os.unlink(f"{datadir}/{state}")
        except FileNotFoundError:
            pass
        state = None
    if state is None and meta is None:
        try:
            os.rmdir(datadir)
        except OSError:
            pass
    return state, meta


def hash_suffix(suffix_dir: str, reclaim_age: float = RECLAIM_AGE) -> str | None:
    try:
        names = sorted(os.listdir(suffix_dir))
    except FileNotFoundError:
        return None
    md5 = hashlib.md5()
    found = False
    for hash_name in names:
        datadir = f"{suffix_dir}/{hash_name}"
        state, meta = cleanup_dir(datadir, reclaim_age)
        if state is None and meta is None:
            continue
        found = True
        md5.update(hash_name.encode())
        for name in (state, meta):
            if name:
                md5.update(name.encode())
    if not found:
        try:
            os.rmdir(suffix_dir)
        except OSError:
            pass
        return None
    return md5.hexdigest()


def get_hashes(part_dir: str, recalculate=(), reclaim_age: float = RECLAIM_AGE) -> dict:
    """{suffix: hash} for a partition, recalculating invalidated (and requested) suffixes."""
    with _lock(_hash_locks, part_dir):
        objects_dir = part_dir.rsplit("/", 1)[0]
        with _lock(_handout_locks, objects_dir):
            _hand_out_invalid(objects_dir)
            invalid_path = f"{part_dir}/hashes.invalid"
            try:
                with open(invalid_path) as fh:
                    invalid = {line.strip() for line in fh if line.strip()}
                os.unlink(invalid_path)
            except FileNotFoundError:
                invalid = set()
        hashes = None
        try:
            with open(f"{part_dir}/hashes.json", "rb") as fh:
                # a full rehash now and then catches files lost behind our back
                if os.fstat(fh.fileno()).st_mtime > time.time() - REHASH_AGE:
                    hashes = json.load(fh)
        except (FileNotFoundError, ValueError):
            hashes = None
        todo = set(invalid) | set(recalculate)
        full = hashes is None
        if hashes is None:
            hashes = {}
            try:
                todo |= {n for n in os.listdir(part_dir) if len(n) == 3}
            except FileNotFoundError:
                return {}
        changed = False
        for suffix in todo:
            if len(suffix) != 3:
                continue
            h = hash_suffix(f"{part_dir}/{suffix}", reclaim_age)
            if h is None:
                changed |= hashes.pop(suffix, None) is not None
            elif hashes.get(suffix) != h:
                hashes[suffix] = h
                changed = True
        if changed or not os.path.exists(f"{part_dir}/hashes.json") or full:
            if os.path.isdir(part_dir):
                tmp = f"{part_dir}/.hashes.{uuid.uuid4().hex}"
                with open(tmp, "w") as fh:
                    json.dump(hashes, fh)
                os.replace(tmp, f"{part_dir}/hashes.json")
        return hashes


def list_suffix(part_dir: str, suffix: str) -> dict[str, list[str]]:
    """{hash: [state file, meta file]} for one suffix (after cleanup)."""
    suffix_dir = f"{part_dir}/{suffix}"
    out = {}
    try:
        names = os.listdir(suffix_dir)
    except FileNotFoundError:
        return out
    for hash_name in names:
        state, meta = cleanup_dir(f"{suffix_dir}/{hash_name}")
        files = [n for n in (state, meta) if n]
        if files:
            out[hash_name] = files
    return out


def quarantine(dev_path: str, datadir: str) -> str | None:
    """Move a hash directory out of the way and invalidate its suffix."""
    hash_name = os.path.basename(datadir)
    target_dir = f"{dev_path}/quarantined/objects"
    os.makedirs(target_dir, exist_ok=True)
    target = f"{target_dir}/{hash_name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(datadir, target)
    except FileNotFoundError:
        return None
    suffix_dir = os.path.dirname(datadir)
    invalidate_suffix(os.path.dirname(suffix_dir), os.path.basename(suffix_dir))
    return target


# ---------------------------------------------------------------------------------------------
# Reading


def _pread(fd: int, length: int, offset: int, nowait: bool) -> bytes:
    """``os.pread``; with ``nowait``, BlockingIOError instead of waiting for the disk (the
    data is not in the page cache), so the event loop can read cached files itself."""
    if not nowait:
        return os.pread(fd, length, offset)
    buf = bytearray(length)
    if os.preadv(fd, [buf], offset, os.RWF_NOWAIT) != length:
        # partly cached: a short read here says nothing about the file, read it in a thread
        raise BlockingIOError(errno.EAGAIN, "not all in the page cache")
    return bytes(buf)


def read_file_meta(fd: int, size: int, nowait: bool = False) -> tuple[dict, int, bytes | None]:
    """(metadata, body length, whole body if it came with the first read else None)."""
    if size < TRAILER.size:
        raise DiskFileCorrupt("file shorter than its trailer")
    first = min(size, TAIL_READ)
    tail = _pread(fd, first, size - first, nowait)
    if len(tail) != first:
        raise DiskFileCorrupt("short read")
    meta_len, magic = TRAILER.unpack_from(tail, first - TRAILER.size)
    if magic != MAGIC or meta_len + TRAILER.size > size:
        raise DiskFileCorrupt("bad trailer")
    body_len = size - TRAILER.size - meta_len
    if meta_len + TRAILER.size <= first:
        raw = tail[first - TRAILER.size - meta_len:first - TRAILER.size]
    else:
        raw = _pread(fd, meta_len, body_len, nowait)
    try:
        meta = msgpack.unpackb(raw)
    except Exception:
        raise DiskFileCorrupt("metadata does not decode") from None
    if not isinstance(meta, dict) or meta.get("len", body_len) != body_len:
        raise DiskFileCorrupt("metadata does not match the file")
    body = tail[:body_len] if body_len + meta_len + TRAILER.size <= first else None
    return meta, body_len, body


class ObjectReader:
    """An open object (or tombstone). Close it when done."""

    def __init__(self, datadir: str):
        self.datadir = datadir
        self.fd: int | None = None
        self.meta: dict = {}
        self.headers: dict = {}
        self.timestamp: str | None = None
        self.deleted = False
        self.body_len = 0
        self.small_body: bytes | None = None
        self.sums: array | None = None   # the stored sum of every block of the body
        self.block_sum = None            # and the function that computes one
        self.meta_file: str | None = None
        self.state_file: str | None = None

    @classmethod
    def open(cls, datadir: str, nowait: bool = False) -> "ObjectReader":
        """Raises DiskFileCorrupt; on a missing object returns a reader with timestamp None.
        With ``nowait``, raises BlockingIOError if a file's bytes are not in the page cache
        (directory lookups may still touch the disk)."""
        r = cls(datadir)
        state, meta, _ = scan_dir(datadir)
        r.state_file, r.meta_file = state, meta
        if state is None:
            return r
        r.timestamp = state.rsplit(".", 1)[0]
        if state.endswith(TOMBSTONE):
            r.deleted = True
            return r
        path = f"{datadir}/{state}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # replaced between listdir and open: read again
            return cls.open(datadir, nowait)
        try:
            size = os.fstat(fd).st_size
            r.meta, r.body_len, r.small_body = read_file_meta(fd, size, nowait)
            r.sums, r.block_sum = block_sums(r.meta)
            if len(r.sums) != (r.body_len + BLOCK_SIZE - 1) // BLOCK_SIZE:
                raise DiskFileCorrupt("block checksum count does not match length")
            if r.small_body is not None:
                verify_blocks(r.small_body, 0, r.sums, r.block_sum)
        except BaseException:
            os.close(fd)
            raise
        if r.small_body is not None:
            os.close(fd)  # everything is in memory already
        else:
            r.fd = fd
        r.headers = dict(r.meta.get("headers", {}))
        if meta is not None and meta > state:
            try:
                mfd = os.open(f"{datadir}/{meta}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    mmeta, _, _ = read_file_meta(mfd, os.fstat(mfd).st_size, nowait)
                finally:
                    os.close(mfd)
            except FileNotFoundError:
                mmeta = None
            except BaseException:
                r.close()  # the body's descriptor, if it was kept open
                raise
            if mmeta is not None:
                posted = mmeta.get("headers", {})
                # a POST replaces the metadata it may set, except that one without a
                # Content-Type leaves the object's type as it was
                r.headers = {k: v for k, v in r.headers.items() if not is_post_replaced(k)
                             or (k == "content-type" and k not in posted)}
                r.headers.update(posted)
                r.meta_timestamp = mmeta.get("ts")
        return r

    @property
    def etag(self) -> str:
        return self.meta.get("etag", "")

    @property
    def name(self) -> str:
        return self.meta.get("name", "")

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the body, every touched block verified first."""
        if self.small_body is not None:
            return self.small_body[start:end]
        first_block = start // BLOCK_SIZE
        last_block = (end - 1) // BLOCK_SIZE
        offset = first_block * BLOCK_SIZE
        want = min((last_block + 1) * BLOCK_SIZE, self.body_len) - offset
        data = os.pread(self.fd, want, offset)
        if len(data) != want:
            raise DiskFileCorrupt("short read")
        verify_blocks(data, first_block, self.sums, self.block_sum)
        if start == offset and end - start == len(data):
            return data
        return data[start - offset:end - offset]

    def verify_range(self, start: int, end: int) -> None:
        """Check every block that bytes [start, end) of the body touch, in place: the blocks
        are mapped and hashed straight from the page cache, not copied out, for a caller that
        then has the kernel send those bytes itself (sendfile). Object files are never
        rewritten in place (a new version is a new file renamed in), so what was checked is
        what the kernel sends. Raises DiskFileCorrupt."""
        first_block = start // BLOCK_SIZE
        offset = first_block * BLOCK_SIZE
        want = min(((end - 1) // BLOCK_SIZE + 1) * BLOCK_SIZE, self.body_len) - offset
        # touching a mapping past the end of the file is SIGBUS, which would kill the node
        if os.fstat(self.fd).st_size < offset + want:
            raise DiskFileCorrupt("file shorter than its recorded length")
        # mapped per range and unmapped after: the mapped pages count in the node's RSS
        with mmap.mmap(self.fd, want, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ,
                       offset=offset) as mapped:
            verify_blocks(mapped, first_block, self.sums, self.block_sum)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def verify_blocks(data, first_block: int, sums: array, block_sum=xxhash.xxh3_64_intdigest
                  ) -> None:
    with memoryview(data) as mv:  # released at once: an mmap cannot close while viewed
        for i in range(0, len(mv), BLOCK_SIZE):
            if block_sum(mv[i:i + BLOCK_SIZE]) != sums[first_block + i // BLOCK_SIZE]:
                raise DiskFileCorrupt(f"block {first_block + i // BLOCK_SIZE} fails its checksum")


def audit_file(datadir: str, bytes_per_second: float = 0) -> str | None:
    """Full check of an object's current data file; returns a reason if corrupt, else None."""
    r = ObjectReader(datadir)
    try:
        r = ObjectReader.open(datadir)
        if r.timestamp is None or r.deleted:
            return None
        md5 = hashlib.md5()
        pos = 0
        started = time.monotonic()
        while pos < r.body_len:
            chunk = r.read_range(pos, min(pos + 4 * BLOCK_SIZE, r.body_len))
            md5.update(chunk)
            pos += len(chunk)
            if bytes_per_second:
                ahead = pos / bytes_per_second - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        if md5.hexdigest() != r.etag:
            return f"md5 {md5.hexdigest()} does not match ETag {r.etag}"
        return None
    except DiskFileCorrupt as exc:
        return str(exc)
    finally:
        r.close()


# ---------------------------------------------------------------------------------------------
# Writing


# tmp/ names: unique per process start and write without a uuid4 per write (a getrandom
# call and an object; the writer is on the path of every small PUT)
_TMP_PREFIX = f"{os.getpid():x}-{time.time_ns():x}-"
_tmp_counter = itertools.count()


class ObjectWriter:
    """A file being written in tmp/, committed by rename. All methods block."""

    def __init__(self, dev_path: str, size_hint: int | None = None, *, md5: bool = True):
        """``md5=False``: the body's md5 (its ETag) comes from the sender, who computed it once
        for all replicas; this writer then keeps only the block sums (see :meth:`etag`)."""
        self.dev_path = dev_path
        self.tmp_path = f"{dev_path}/tmp/{_TMP_PREFIX}{next(_tmp_counter):x}"
        try:
            self.fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                              0o644)
        except FileNotFoundError:
            os.makedirs(f"{dev_path}/tmp", exist_ok=True)
            self.fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                              0o644)
        self.md5 = hashlib.md5() if md5 else None
        self.sums = array("Q")
        self._block = xxhash.xxh3_64()
        self._in_block = 0
        self.length = 0
        self._unwritten = b""  # the body given to write_whole(), written at commit
        self._writeback_started = 0  # bytes handed to the disk by start_writeback
        self._writeback_waited = 0   # bytes known written back
        self.fallocated = bool(size_hint and size_hint > BLOCK_SIZE)
        if self.fallocated:
            try:
                os.posix_fallocate(self.fd, 0, size_hint)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    self.abort()
                    raise
        self.committed = False

    def write_whole(self, body: bytes) -> None:
        """The whole body, arrived in one piece: hashed now, written together with the
        trailer by :meth:`commit` (one write call instead of two)."""
        if self.length or self._unwritten:
            raise RuntimeError("write_whole() must be the only write")
        self._hash(memoryview(body))
        self.length = len(body)
        self._unwritten = body

    def write(self, data) -> None:
        mv = memoryview(data)
        n = len(mv)
        if not n:
            return
        self._hash(mv)
        written = 0
        while written < n:
            written += os.write(self.fd, mv[written:])
        self.length += n
        if self.length - self._writeback_started >= WRITEBEHIND_CHUNK:
            self._write_behind()

    def _hash(self, mv: memoryview) -> None:
        n = len(mv)
        if self.md5 is not None:
            self.md5.update(mv)
        pos = 0
        while pos < n:
            take = min(BLOCK_SIZE - self._in_block, n - pos)
            self._block.update(mv[pos:pos + take])
            self._in_block += take
            pos += take
            if self._in_block == BLOCK_SIZE:
                self.sums.append(self._block.intdigest())
                self._block.reset()
                self._in_block = 0

    def _write_behind(self) -> None:
        start_writeback(self.fd, self._writeback_started, self.length - self._writeback_started)
        self._writeback_started = self.length
        settled = self.length - WRITEBEHIND_LAG
        if settled > self._writeback_waited:
            # the disk is the limit: wait for it here rather than let dirty pages pile up
            # for the final fdatasync
            wait_writeback(self.fd, self._writeback_waited, settled - self._writeback_waited)
            self._writeback_waited = settled

    def etag(self) -> str:
        if self.md5 is None:
            raise RuntimeError("this writer was told the md5 comes from its sender")
        return self.md5.hexdigest()

    def commit(self, datadir: str, timestamp: str, ext: str, meta: dict,
               durable: bool = True, made: list[str] = ()) -> str:
        """Append the trailer, fdatasync, rename into place, fsync the directories whose
        entries changed; returns (the file's path) only when all of that is on stable storage.

        ``durable=False`` skips the syncs and the removal of older files: the caller makes the
        write durable by group commit (durable.GroupSync), then calls :func:`cleanup_dir`, so
        an older version is never removed before the newer one is safe. ``made``: directories
        whose entries changed when the caller created ``datadir`` (:func:`ensure_datadir`),
        synced with the rest."""
        if self._in_block:
            self.sums.append(self._block.intdigest())
            self._in_block = 0
        meta = dict(meta)
        meta["len"] = self.length
        meta["xxh3"] = _sums_bytes(self.sums)
        raw = msgpack.packb(meta)
        trailer = raw + TRAILER.pack(len(raw), MAGIC)
        if self._unwritten:
            whole = memoryview(b"".join((self._unwritten, trailer)))
            self._unwritten = b""
            written = 0
            while written < len(whole):
                written += os.write(self.fd, whole[written:])
        else:
            os.pwrite(self.fd, trailer, self.length)
        if self.fallocated:
            final_size = self.length + len(trailer)
            if os.fstat(self.fd).st_size != final_size:
                os.ftruncate(self.fd, final_size)  # fallocate reserved more than we wrote
        if durable:
            os.fdatasync(self.fd)  # the body is durable before it gets its name
        target = f"{datadir}/{timestamp}{ext}"
        try:
            os.rename(self.tmp_path, target)
            changed = [datadir, *made]
        except FileNotFoundError:
            # a new object, or its directory was removed since the caller looked: when a
            # concurrent writer made it (nothing made here), its entry may not be durable yet
            _, made = ensure_datadir(datadir)
            changed = [datadir, *(made or [os.path.dirname(datadir)])]
            os.rename(self.tmp_path, target)
        if durable:
            for directory in changed:  # and its name is durable before success is reported
                fsync_dir(directory)
        os.close(self.fd)
        self.fd = None
        self.committed = True
        if durable:
            cleanup_dir(datadir, older_than=f"{timestamp}{ext}")
        suffix_dir = os.path.dirname(datadir)
        invalidate_suffix(os.path.dirname(suffix_dir), os.path.basename(suffix_dir))
        return target

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if not self.committed:
            try:
                os.unlink(self.tmp_path)
            except FileNotFoundError:
                pass


def ensure_datadir(datadir: str) -> tuple[bool, list[str]]:
    """Create an object's hash directory (and its suffix directory) if missing, before its
    first file is written: ``(whether it existed, directories whose entries changed)``.

    A new object is the common case of a small PUT on a young cluster, and creating its
    directories first costs three mkdir calls, where finding out by a failed listdir, a
    failed rename, a failed mkdir and a walk up with stat (the order of a write into an
    existing directory) cost eight system calls, each a path walk: a tenth of a storage
    node's event-loop time under a 4 KiB PUT load."""
    try:
        os.mkdir(datadir)
        return False, [os.path.dirname(datadir)]
    except FileExistsError:
        return True, []
    except FileNotFoundError:
        pass
    suffix_dir = os.path.dirname(datadir)
    try:
        os.mkdir(suffix_dir)
    except FileExistsError:
        pass  # a concurrent writer made it: it syncs its own entry
    except FileNotFoundError:
        return False, make_dirs(datadir)  # a new partition too
    try:
        os.mkdir(datadir)
    except FileExistsError:
        return True, [os.path.dirname(suffix_dir)]
    return False, [os.path.dirname(suffix_dir), suffix_dir]


def newest_timestamp(datadir: str) -> tuple[str | None, str | None]:
    """(timestamp of the current .data/.ts, timestamp of the newest .meta) in a hash dir."""
    state, meta, _ = scan_dir(datadir)
    return (state.rsplit(".", 1)[0] if state else None,
            meta.rsplit(".", 1)[0] if meta else None)


def clean_tmp(dev_path: str, older_than: float) -> int:
    """Remove leftovers of writes that never completed (a crash, a killed process)."""
    removed = 0
    cutoff = time.time() - older_than
    try:
        names = os.listdir(f"{dev_path}/tmp")
    except FileNotFoundError:
        return 0
    for name in names:
        path = f"{dev_path}/tmp/{name}"
        try:
            if os.stat(path).st_mtime < cutoff:
                os.unlink(path)
                removed += 1
        except FileNotFoundError:
            pass
    return removed
