"""Listing updates for a container replica on the same storage node: the object server merges
the row into its own container DB (no HTTP request to itself), falls back to a pending update
when that DB is missing, and still sends updates for other nodes' replicas over HTTP; the proxy
pairs each object replica with the container replica on the same node."""

from __future__ import annotations

import asyncio
import time

from stratus.objectstore import ring as ringmod
from stratus.objectstore.nodeclient import pair_colocated, update_target_headers
from stratus.objectstore.storage.updater import _list_pending

from .test_storage_group_commit import node_factory, object_url  # noqa: F401 (fixture)


def ts(offset: float = 0.0) -> str:
    return "%016.05f" % (time.time() + offset)


def container_url(app) -> tuple[str, int]:
    ring = ringmod.Ring.load(app.config.ring_dir / "container.ring.gz")
    part, _ = ring.get_nodes("AUTH_a", "c")
    return f"/d0/{part}/AUTH_a/c", part


def targets(host: str, part: int) -> dict:
    return {"X-Container-Host": host, "X-Container-Device": "d0",
            "X-Container-Partition": str(part)}


class RecordingBatcher:
    def __init__(self, answer: bool = True):
        self.calls = []
        self.answer = answer

    async def submit(self, target, account, container, row, timeout):
        self.calls.append((tuple(target), account, container, row))
        return self.answer


async def test_an_update_for_this_node_is_merged_here_without_http(node_factory):  # noqa: F811
    app, client = node_factory()
    batcher = app.row_batcher = RecordingBatcher(answer=False)
    curl, cpart = container_url(app)
    assert (await client.put(curl, headers={"X-Timestamp": ts()})).status_code == 201
    r = await client.put(object_url(app, "o1"), b"hello",
                         {"X-Timestamp": ts(1), "Content-Type": "text/plain",
                          **targets("127.0.0.1:6299", cpart)})
    assert r.status_code == 201
    head = await client.request("HEAD", curl)
    assert head.headers["x-container-object-count"] == "1"
    assert head.headers["x-container-bytes-used"] == "5"
    assert batcher.calls == []  # nothing went to the row batcher (HTTP)
    assert _list_pending(app.dev_path("d0")) == []
    # a delete's row is merged the same way
    r = await client.delete(object_url(app, "o1"), {"X-Timestamp": ts(2),
                                                    **targets("127.0.0.1:6299", cpart)})
    assert r.status_code == 204
    head = await client.request("HEAD", curl)
    assert head.headers["x-container-object-count"] == "0"
    assert batcher.calls == []
    # /recon counts the listing-row group commits and the rows they merged
    merges = (await client.get("/recon")).json()["row_merges"]
    assert merges["batches"] == 2 and merges["rows"] == 2 and merges["seconds"] > 0


async def test_a_missing_local_container_db_leaves_a_pending_update(node_factory):  # noqa: F811
    app, client = node_factory()
    app.row_batcher = RecordingBatcher()
    _, cpart = container_url(app)
    r = await client.put(object_url(app, "o1"), b"hello",
                         {"X-Timestamp": ts(), **targets("127.0.0.1:6299", cpart)})
    assert r.status_code == 201  # the object is stored; its listing row waits
    pending = _list_pending(app.dev_path("d0"))
    assert len(pending) == 1 and pending[0].endswith("-object")


async def test_updates_for_other_nodes_still_go_over_http(node_factory):  # noqa: F811
    app, client = node_factory()
    batcher = app.row_batcher = RecordingBatcher()
    curl, cpart = container_url(app)
    assert (await client.put(curl, headers={"X-Timestamp": ts()})).status_code == 201
    # same address, another port; and another address with this port
    for host in ("127.0.0.1:6300", "127.0.0.2:6299"):
        r = await client.put(object_url(app, "o-" + host), b"x",
                             {"X-Timestamp": ts(), **targets(host, cpart)})
        assert r.status_code == 201
    assert [c[0][:2] for c in batcher.calls] == [("127.0.0.1", 6300), ("127.0.0.2", 6299)]
    head = await client.request("HEAD", curl)
    assert head.headers["x-container-object-count"] == "0"  # nothing merged locally


async def test_an_unmounted_local_device_is_not_merged_into(node_factory):  # noqa: F811
    app, client = node_factory()
    batcher = app.row_batcher = RecordingBatcher()
    _, cpart = container_url(app)
    r = await client.put(object_url(app, "o1"), b"x",
                         {"X-Timestamp": ts(), "X-Container-Host": "127.0.0.1:6299",
                          "X-Container-Device": "d9", "X-Container-Partition": str(cpart)})
    assert r.status_code == 201
    assert [c[0][2] for c in batcher.calls] == ["d9"]  # not ours: sent like any other


def test_the_proxy_pairs_object_and_container_replicas_on_the_same_node():
    def node(i, port=6200):
        return {"ip": f"10.0.0.{i}", "port": port, "device": f"d{i}"}

    objects = [node(1), node(2), node(3)]
    containers = [node(3), node(1), node(2)]
    paired = update_target_headers("container", 3, containers, 5, {}, requesters=objects)
    assert [h["X-Container-Host"] for h in paired] == [
        "10.0.0.1:6200", "10.0.0.2:6200", "10.0.0.3:6200"]
    # no co-location: ring order, every target once
    elsewhere = [node(7), node(8), node(9)]
    plain = update_target_headers("container", 3, elsewhere, 5, {}, requesters=objects)
    assert [h["X-Container-Host"] for h in plain] == [
        "10.0.0.7:6200", "10.0.0.8:6200", "10.0.0.9:6200"]
    # partly co-located: the match keeps its slot, the rest fill in ring order
    mixed = pair_colocated([node(7), node(8), node(2)], objects)
    assert [n["device"] for n in mixed] == ["d7", "d2", "d8"]
    # the same address on another port is another node
    assert pair_colocated([node(9), node(1, 6201)], [node(1)])[0]["device"] == "d9"
    # fewer requests than targets: every target is still named
    two = update_target_headers("container", 2, containers, 5, {}, requesters=objects[:2])
    named = ",".join(h["X-Container-Host"] for h in two).split(",")
    assert sorted(named) == ["10.0.0.1:6200", "10.0.0.2:6200", "10.0.0.3:6200"]
    assert two[0]["X-Container-Host"].split(",")[0] == "10.0.0.1:6200"


class SlowBatcher(RecordingBatcher):
    """A container server that never answers, or one whose update fails."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.fail = fail

    async def submit(self, target, account, container, row, timeout):
        self.calls.append((tuple(target), account, container, row))
        if self.fail:
            raise ConnectionResetError("gone")
        await asyncio.sleep(60)


async def test_an_update_that_times_out_or_fails_leaves_a_pending_one(node_factory):  # noqa: F811
    app, client = node_factory()
    app.config.update_timeout = 0.2
    for fail in (False, True):
        app.row_batcher = SlowBatcher(fail)
        started = time.monotonic()
        r = await client.put(object_url(app, f"o-{fail}"), b"x",
                             {"X-Timestamp": ts(), **targets("127.0.0.2:6299", 0)})
        assert r.status_code == 201 and time.monotonic() - started < 5
    # and several targets at once: the one that never answers is kept pending
    app.row_batcher = SlowBatcher()
    r = await client.put(object_url(app, "o-two"), b"x",
                         {"X-Timestamp": ts(), "X-Container-Host": "127.0.0.2:6299,127.0.0.3:6299",
                          "X-Container-Device": "d0,d0", "X-Container-Partition": "0"})
    assert r.status_code == 201
    pending = _list_pending(app.dev_path("d0"))
    assert len(pending) == 3 and all(p.endswith("-object") for p in pending)
