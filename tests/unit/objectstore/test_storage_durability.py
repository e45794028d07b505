"""Durable writes on a storage node: what is synced, and in which order; write-behind."""

import asyncio
import os

import pytest

from stratus.objectstore.storage import diskfile
from stratus.objectstore.storage.diskfile import ObjectWriter
from stratus.objectstore.storage.durable import make_dirs

HASH = "0123456789abcdef0123456789abcabc"


@pytest.fixture
def dev(tmp_path):
    d = tmp_path / "sda"
    (d / "tmp").mkdir(parents=True)
    return d


@pytest.fixture
def journal(monkeypatch):
    """Records fdatasync/fsync/rename/replace in order (by path for files and directories)."""
    events = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync
    real_rename, real_replace = os.rename, os.replace

    def path_of(fd):
        return os.readlink(f"/proc/self/fd/{fd}")

    def fdatasync(fd):
        events.append(("fdatasync", path_of(fd)))
        real_fdatasync(fd)

    def fsync(fd):
        events.append(("fsync", path_of(fd)))
        real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", str(dst)))
        real_rename(src, dst)

    def replace(src, dst):
        events.append(("rename", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    return events


def commit_object(dev, body=b"hello", ts="0000000001.00000"):
    datadir = diskfile.object_dir(str(dev), 7, HASH)
    w = ObjectWriter(str(dev), len(body))
    try:
        w.write(body)
        w.commit(datadir, ts, diskfile.DATA, {"name": "/a/c/o", "ts": ts, "etag": w.etag()})
    finally:
        w.abort()
    return datadir


def test_new_object_syncs_body_before_rename_and_every_new_directory_entry(dev, journal):
    datadir = commit_object(dev)
    kinds = [e[0] for e in journal]
    # the body is durable before it gets its name, the names after
    assert kinds[0] == "fdatasync" and "/tmp/" in journal[0][1]
    assert kinds[1] == "rename" and journal[1][1].startswith(datadir)
    synced_dirs = {p for k, p in journal[2:] if k == "fsync"}
    suffix_dir = os.path.dirname(datadir)
    part_dir = os.path.dirname(suffix_dir)
    # the hash dir holds the new file; suffix, partition, objects/ and the device dir got
    # new entries (each created on the way)
    assert synced_dirs == {datadir, suffix_dir, part_dir, os.path.dirname(part_dir), str(dev)}


def test_second_version_syncs_only_its_directory(dev, journal):
    datadir = commit_object(dev, ts="0000000001.00000")
    journal.clear()
    commit_object(dev, b"v2", ts="0000000002.00000")
    assert [k for k, _ in journal] == ["fdatasync", "rename", "fsync"]
    assert journal[2][1] == datadir
    assert os.listdir(datadir) == ["0000000002.00000.data"]


def test_make_dirs_reports_changed_parents(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    assert make_dirs(str(target)) == [str(tmp_path), str(tmp_path / "a"),
                                      str(tmp_path / "a" / "b")]
    assert target.is_dir()
    assert make_dirs(str(target)) == []


def test_large_body_is_written_behind(dev, monkeypatch):
    started = []
    monkeypatch.setattr(diskfile, "start_writeback",
                        lambda fd, off, length: started.append((off, length)))
    monkeypatch.setattr(diskfile, "WRITEBEHIND_CHUNK", 1 << 20)
    body = os.urandom(3 << 20)
    w = ObjectWriter(str(dev), len(body))
    try:
        for i in range(0, len(body), 256 << 10):
            w.write(body[i:i + (256 << 10)])
    finally:
        w.abort()
    assert started == [(0, 1 << 20), (1 << 20, 1 << 20), (2 << 20, 1 << 20)]


def test_pending_update_file_and_its_new_directories_are_synced(dev, journal):
    from stratus.objectstore.storage.updater import write_pending

    path = write_pending(str(dev), HASH, "0000000001.00000", "object", "PUT", "/a/c/o",
                         {"X-Timestamp": "0000000001.00000"}, [("127.0.0.1", 1, "d0", 3)])
    directory = os.path.dirname(path)
    kinds = [k for k, _ in journal]
    assert kinds.index("fdatasync") < kinds.index("rename")
    synced_dirs = {p for k, p in journal if k == "fsync"}
    # the suffix dir holds the file; async_pending/ and the device dir got new entries
    assert synced_dirs == {directory, os.path.dirname(directory), str(dev)}


def test_deferred_commit_syncs_nothing_and_keeps_the_old_version(dev, journal):
    """A small write under group commit: no per-file syncs, the replaced version stays until
    the caller's group sync is done and it runs cleanup_dir itself."""
    datadir = commit_object(dev, ts="0000000001.00000")
    journal.clear()
    w = ObjectWriter(str(dev), 2)
    try:
        w.write(b"v2")
        target = w.commit(datadir, "0000000002.00000", diskfile.DATA,
                          {"name": "/a/c/o", "ts": "0000000002.00000", "etag": w.etag()},
                          durable=False)
    finally:
        w.abort()
    assert [k for k, _ in journal] == ["rename"] and target == journal[0][1]
    assert sorted(os.listdir(datadir)) == ["0000000001.00000.data", "0000000002.00000.data"]
    reader = diskfile.ObjectReader.open(datadir)
    assert reader.timestamp == "0000000002.00000" and reader.small_body == b"v2"


def test_cleanup_after_a_commit_spares_newer_files(dev):
    """cleanup_dir(older_than=) removes only what the durable file replaces: a newer file that
    arrived meanwhile (maybe not durable yet) and the file itself stay."""
    datadir = commit_object(dev, ts="0000000003.00000")
    for name in ("0000000001.00000.data", "0000000002.00000.meta", "0000000004.00000.data"):
        open(os.path.join(datadir, name), "wb").close()
    diskfile.cleanup_dir(datadir, older_than="0000000003.00000.data")
    assert sorted(os.listdir(datadir)) == ["0000000003.00000.data", "0000000004.00000.data"]
    diskfile.cleanup_dir(datadir)
    assert os.listdir(datadir) == ["0000000004.00000.data"]


def test_nowait_read_of_a_cached_object(dev, monkeypatch):
    datadir = commit_object(dev, b"cached")
    assert diskfile.ObjectReader.open(datadir, nowait=True).small_body == b"cached"

    def not_cached(fd, buffers, offset, flags=0):
        raise BlockingIOError(11, "would block")

    monkeypatch.setattr(os, "preadv", not_cached)
    with pytest.raises(BlockingIOError):
        diskfile.ObjectReader.open(datadir, nowait=True)
    assert diskfile.ObjectReader.open(datadir).small_body == b"cached"  # the ordinary read


class FakeSyncfs:
    """Stands in for durable.syncfs: records each call's descriptor, can be held (``release``)
    and made to fail once (``fail_next``)."""

    def __init__(self):
        import threading
        self.descriptors = []
        self.release = threading.Event()
        self.release.set()
        self.fail_next = False

    def __call__(self, path, fd=None):
        self.descriptors.append(fd)
        self.release.wait(5)
        if self.fail_next:
            self.fail_next = False
            raise OSError(5, "Input/output error", path)


@pytest.fixture
def fake_syncfs(monkeypatch):
    from stratus.objectstore.storage import durable

    fake = FakeSyncfs()
    monkeypatch.setattr(durable, "syncfs", fake)
    return fake


async def test_group_sync_batches_callers_and_fails_those_it_covers(tmp_path, fake_syncfs):
    from concurrent.futures import ThreadPoolExecutor

    from stratus.objectstore.storage import durable

    calls = fake_syncfs.descriptors
    release = fake_syncfs.release
    release.clear()
    with ThreadPoolExecutor(2) as pool:
        group = durable.GroupSync(str(tmp_path), pool)
        first = asyncio.ensure_future(group.sync())
        await asyncio.sleep(0.05)  # the first syncfs is running: the next three share one
        later = [asyncio.ensure_future(group.sync()) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert len(calls) == 1
        release.set()
        await asyncio.gather(first, *later)
        assert len(calls) == 2 and group.stats["syncs"] == 2 and group.stats["writes"] == 4
        # a failed syncfs fails its callers; the next one is tried afresh
        fake_syncfs.fail_next = True
        with pytest.raises(OSError):
            await group.sync()
        await group.sync()
        assert len(calls) == 4


async def test_a_write_in_progress_when_a_sync_failed_fails_too(tmp_path, fake_syncfs):
    """The kernel reports a writeback error once per open file: a write that had begun when
    a syncfs failed may have lost its pages, so its own later (successful) sync must not make
    it a success; writes begun after the failure are not affected."""
    from concurrent.futures import ThreadPoolExecutor

    from stratus.objectstore.storage import durable

    descriptors = fake_syncfs.descriptors
    with ThreadPoolExecutor(2) as pool:
        group = durable.GroupSync(str(tmp_path), pool)
        in_progress = group.begin()          # this write is still being made...
        fake_syncfs.fail_next = True
        with pytest.raises(OSError):         # ...when another write's sync fails
            await group.sync(group.begin())
        with pytest.raises(OSError, match="reported while the write was in progress"):
            await group.sync(in_progress)    # its own sync succeeds, the write does not
        await group.sync(group.begin())      # a write begun after the failure is fine
        # every syncfs ran on the one descriptor opened by the first begin(), before the writes
        assert len(set(descriptors)) == 1 and descriptors[0] is not None
        os.fstat(descriptors[0])
        group.close()


async def test_group_sync_lets_go_of_an_idle_device(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from stratus.objectstore.storage import durable

    monkeypatch.setattr(durable, "syncfs", lambda path, fd=None: None)
    with ThreadPoolExecutor(2) as pool:
        group = durable.GroupSync(str(tmp_path), pool, idle_close=0.05)
        token = group.begin()
        await group.sync(token)
        fd = group._fd
        assert fd is not None
        await asyncio.sleep(0.3)
        assert group._fd is None  # closed: the device could be unmounted now
        with pytest.raises(OSError):
            os.fstat(fd)
        # a write that began on the closed descriptor cannot be vouched for; a new one can
        with pytest.raises(OSError):
            await group.sync(token)
        await group.sync(group.begin())
        group.close()


def test_syncfs_really_syncs(tmp_path):
    from stratus.objectstore.storage import durable

    (tmp_path / "f").write_bytes(b"x" * 4096)
    durable.syncfs(str(tmp_path))  # no error on a real filesystem
    with pytest.raises(OSError):
        durable.syncfs(str(tmp_path / "missing"))
