"""Durable writes on a storage node: what is synced, and in which order; write-behind."""

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
