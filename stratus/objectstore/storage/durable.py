"""Making writes durable: group commit per device, directory creation that can be synced,
and write-behind for large files.

Why group commit: on a journaling filesystem every fdatasync of a new file and every fsync of
a directory ends in a journal commit and a cache flush, and a journal commit covers *all*
metadata changed before it. A node writing many small objects at once would pay one commit
per file and one per directory; instead the I/O threads of one device hand their syncs to a
:class:`DeviceSyncer`, which runs whatever is queued as one batch (the first thread to arrive
while no batch is running does the work, the others wait for it), so one commit serves every
write in the batch. A thread returns from :meth:`DeviceSyncer.sync` only when *its* files and
directories are on stable storage, exactly as if it had synced them itself; errors go to the
writers they belong to.

Write-behind: :func:`start_writeback` asks the kernel to start writing a range that was just
written (``sync_file_range(SYNC_FILE_RANGE_WRITE)``) and :func:`wait_writeback` waits for an
older range, so a large upload keeps the disk busy while it streams and its final fdatasync
only has the last few MiB left, instead of the whole object sitting in the page cache until
the end.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

from .common import fsync_dir

_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load_sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing [offset, offset+length) to disk without waiting (best effort: a
    filesystem or platform without sync_file_range just leaves it to fdatasync)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def wait_writeback(fd: int, offset: int, length: int) -> None:
    """Wait until writeback of [offset, offset+length) started earlier has finished. Not a
    durability point (no metadata, no cache flush): it only bounds the dirty data in flight."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WAIT_BEFORE)


def make_dirs(path: str) -> list[str]:
    """``os.makedirs(path, exist_ok=True)``, returning the directories whose entries changed
    (the parent of every directory created): they must be synced for the new path to
    survive a crash."""
    missing = []
    head = path
    while head and not os.path.isdir(head):
        missing.append(head)
        head = os.path.dirname(head)
    changed = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass  # made by a concurrent writer just now: its entry may not be durable yet
        changed.append(os.path.dirname(directory))
    return changed


class _Job:
    __slots__ = ("fds", "dirs", "error", "done")

    def __init__(self, fds, dirs):
        self.fds = fds
        self.dirs = dirs
        self.error: BaseException | None = None
        self.done = False


class DeviceSyncer:
    """Group commit for one device: see the module docstring."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[_Job] = []
        self._busy = False
        self.batches = 0  # statistics: batches run, syncs requested
        self.jobs = 0

    def sync(self, fds=(), dirs=()) -> None:
        """Return once every file in ``fds`` (fdatasync) and every directory in ``dirs``
        (fsync) is on stable storage; raises the OSError of one of them otherwise."""
        job = _Job(tuple(fds), tuple(dirs))
        cond = self._cond
        with cond:
            self._pending.append(job)
            while not job.done:
                if self._busy:
                    cond.wait()
                    continue
                # no batch running: this thread runs everything queued, its own job included
                self._busy = True
                batch, self._pending = self._pending, []
                cond.release()
                try:
                    self._run(batch)
                finally:
                    cond.acquire()
                    self._busy = False
                    for j in batch:
                        j.done = True
                    self.batches += 1
                    self.jobs += len(batch)
                    cond.notify_all()
        if job.error is not None:
            raise job.error

    @staticmethod
    def _run(batch: list[_Job]) -> None:
        many = len(batch) > 1
        if many:
            # start the data of every file on its way first: the disk then writes them
            # together, and the fdatasyncs below mostly find their pages written already
            for job in batch:
                for fd in job.fds:
                    start_writeback(fd, 0, 0)
        for job in batch:
            for fd in job.fds:
                try:
                    os.fdatasync(fd)
                except OSError as exc:
                    job.error = exc
        synced: dict[str, OSError | None] = {}
        for job in batch:
            for directory in job.dirs:
                if directory not in synced:
                    try:
                        fsync_dir(directory)
                        synced[directory] = None
                    except OSError as exc:
                        synced[directory] = exc
                if synced[directory] is not None and job.error is None:
                    job.error = synced[directory]


_syncers: dict[str, DeviceSyncer] = {}
_syncers_guard = threading.Lock()


def syncer_for(dev_path: str) -> DeviceSyncer:
    """The process-wide syncer of a device directory."""
    syncer = _syncers.get(dev_path)
    if syncer is None:
        with _syncers_guard:
            syncer = _syncers.setdefault(dev_path, DeviceSyncer())
    return syncer


__all__ = ["DeviceSyncer", "fsync_dir", "make_dirs", "start_writeback", "syncer_for",
           "wait_writeback"]
