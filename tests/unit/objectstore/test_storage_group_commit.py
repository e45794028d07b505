"""Group commit on a storage node (in process, through its ASGI interface): small writes are
acknowledged only after a shared syncfs, a failed sync is a 503, replaced versions go after
the sync, and per-file sync still works when group commit is off."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from stratus.objectstore import ring as ringmod
from stratus.objectstore.storage import create_node_app, diskfile, durable


def ts(offset: float = 0.0) -> str:
    return "%016.05f" % (time.time() + offset)


class Reply:
    def __init__(self, status, headers, content):
        self.status_code, self.headers, self.content = status, headers, content

    def json(self):
        return json.loads(self.content)


class Client:
    """Drives the node's ASGI app the way its HTTP server does: a body that arrived whole
    comes in one ``http.request`` message (httpx's ASGI transport would always send a second,
    empty one, which the node treats as a streamed upload)."""

    def __init__(self, app):
        self.app = app

    async def request(self, method, path, content=b"", headers=None):
        raw = [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
        if content or method in ("PUT", "POST"):
            raw.append((b"content-length", str(len(content)).encode()))
        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
                 "query_string": b"", "headers": raw}
        sent = []
        given = False

        async def receive():
            nonlocal given
            if given:
                return {"type": "http.disconnect"}
            given = True
            return {"type": "http.request", "body": content, "more_body": False}

        async def send(message):
            sent.append(message)

        await self.app(scope, receive, send)
        start = sent[0]
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return Reply(start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:]))

    async def put(self, path, content=b"", headers=None):
        return await self.request("PUT", path, content, headers)

    async def post(self, path, headers=None):
        return await self.request("POST", path, b"", headers)

    async def get(self, path):
        return await self.request("GET", path)

    async def delete(self, path, headers=None):
        return await self.request("DELETE", path, b"", headers)


@pytest.fixture
def node_factory(tmp_path):
    rings = tmp_path / "rings"
    rings.mkdir()
    (tmp_path / "node" / "d0").mkdir(parents=True)
    for kind in ("object", "container", "account"):
        path = rings / f"{kind}.ring.gz"
        ringmod.create(path, 4, 1, 0)
        ringmod.add_device(path, region=1, zone=1, ip="127.0.0.1", port=6299, device="d0",
                           weight=100)
        ringmod.rebalance(path)
    made = []

    def make(**options):
        app = create_node_app(tmp_path / "node", ["d0"], ring_dir=rings, port=6299,
                              reserve_bytes=0, **options)
        made.append(app)
        return app, Client(app)

    yield make
    for app in made:
        app.executor.shutdown(wait=True)


@pytest.fixture
def syncs(monkeypatch):
    """Every syncfs the node asks for (the real one still runs), and a switch to fail them."""
    calls = []
    state = {"fail": False}
    real = durable.syncfs

    def recording(path, fd=None):
        calls.append(path)
        if state["fail"]:
            raise OSError(5, "Input/output error", path)
        real(path, fd)

    monkeypatch.setattr(durable, "syncfs", recording)
    return calls, state


def object_url(app, name):
    ring = ringmod.Ring.load(app.config.ring_dir / "object.ring.gz")
    part, _ = ring.get_nodes("AUTH_a", "c", name)
    return f"/d0/{part}/AUTH_a/c/{name}"


def datadir_of(app, name):
    ring = ringmod.Ring.load(app.config.ring_dir / "object.ring.gz")
    part, _ = ring.get_nodes("AUTH_a", "c", name)
    return diskfile.object_dir(str(app.dev_path("d0")), part,
                               app.rings.hash_hex("object", "AUTH_a", "c", name))


async def wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


async def test_small_writes_wait_for_a_group_sync_and_replace_old_versions(node_factory, syncs):
    calls, _ = syncs
    app, client = node_factory()
    url = object_url(app, "o")
    t1, t2, t3, t4 = ts(), ts(1), ts(2), ts(3)
    r = await client.put(url, content=b"one", headers={"X-Timestamp": t1,
                                                      "Content-Type": "text/plain"})
    assert r.status_code == 201 and len(calls) == 1
    r = await client.put(url, content=b"two", headers={"X-Timestamp": t2,
                                                      "Content-Type": "text/plain"})
    assert r.status_code == 201 and len(calls) == 2
    datadir = datadir_of(app, "o")
    assert await wait_for(lambda: os.listdir(datadir) == [f"{t2}.data"])
    r = await client.post(url, headers={"X-Timestamp": t3, "X-Object-Meta-K": "v"})
    assert r.status_code == 202 and len(calls) == 3
    r = await client.get(url)
    assert r.content == b"two" and r.headers["x-object-meta-k"] == "v"
    r = await client.delete(url, headers={"X-Timestamp": t4})
    assert r.status_code == 204 and len(calls) == 4
    assert await wait_for(lambda: os.listdir(datadir) == [f"{t4}.ts"])
    assert (await client.get(url)).status_code == 404
    recon = (await client.get("/recon")).json()["group_sync"]
    [stats] = recon.values()
    assert stats["writes"] == 4 and stats["syncs"] == 4


async def test_failed_sync_is_a_503_and_the_old_version_stays(node_factory, syncs):
    _, state = syncs
    app, client = node_factory()
    url = object_url(app, "o")
    t1, t2 = ts(), ts(1)
    assert (await client.put(url, content=b"one", headers={
        "X-Timestamp": t1, "Content-Type": "text/plain"})).status_code == 201
    state["fail"] = True
    r = await client.put(url, content=b"two", headers={"X-Timestamp": t2,
                                                      "Content-Type": "text/plain"})
    assert r.status_code == 503 and b"could not make the write durable" in r.content
    # never acknowledged, so the replaced version is not removed
    assert sorted(os.listdir(datadir_of(app, "o"))) == [f"{t1}.data", f"{t2}.data"]
    state["fail"] = False
    r = await client.delete(url, headers={"X-Timestamp": ts(2)})
    assert r.status_code == 204


async def test_per_file_sync_when_group_commit_is_off(node_factory, syncs, monkeypatch):
    calls, _ = syncs
    fdatasyncs = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (fdatasyncs.append(fd), real(fd)))
    app, client = node_factory(group_sync=False)
    r = await client.put(object_url(app, "o"), content=b"x" * 100,
                         headers={"X-Timestamp": ts(), "Content-Type": "text/plain"})
    assert r.status_code == 201 and calls == [] and len(fdatasyncs) == 1


async def test_a_blocked_event_loop_is_counted_and_logged(node_factory, caplog):
    app, _ = node_factory()
    watcher = asyncio.ensure_future(app._watch_loop_stalls(period=0.02, report_over=0.2))
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.4)  # a file system call that waited for the disk, on the loop
        await asyncio.sleep(0.05)
        assert app.loop_stalls == 1
        assert "event loop blocked" in caplog.text
    finally:
        watcher.cancel()


async def test_a_new_object_refused_leaves_no_hash_directory(node_factory, syncs):
    app, client = node_factory()
    url = object_url(app, "o")
    datadir = datadir_of(app, "o")
    r = await client.put(url, content=b"body", headers={"X-Timestamp": ts(),
                                                        "ETag": "0" * 32})
    assert r.status_code == 422 and not os.path.exists(datadir)
    r = await client.put(url, content=b"body", headers={"X-Timestamp": ts()})
    assert r.status_code == 201 and len(os.listdir(datadir)) == 1
    assert (await client.get(url)).content == b"body"


async def test_per_file_sync_covers_the_directories_a_new_object_made(node_factory, syncs,
                                                                     monkeypatch):
    synced_dirs = []
    real = diskfile.fsync_dir
    monkeypatch.setattr(diskfile, "fsync_dir", lambda d: (synced_dirs.append(d), real(d)))
    app, client = node_factory(group_sync=False)
    datadir = datadir_of(app, "o")
    r = await client.put(object_url(app, "o"), content=b"x",
                         headers={"X-Timestamp": ts(), "Content-Type": "text/plain"})
    assert r.status_code == 201
    suffix_dir = os.path.dirname(datadir)
    # the new hash directory's entry (in its suffix) and the suffix's (in its partition)
    assert {datadir, suffix_dir, os.path.dirname(suffix_dir)} <= set(synced_dirs)
