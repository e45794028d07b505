"""Storage nodes as real processes: 4 devices on 3 nodes, 3 replicas, through NodeClient."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import orjson
import pytest

from stratus.objectstore.httpclient import HttpClient, NodeConnectionError
from stratus.objectstore.nodeclient import NodeClient, update_target_headers

from .cluster import Cluster, free_port

pytestmark = pytest.mark.timeout(120)

MOUNT_CHECK_CACHE = 1.1  # nodes re-check a device's mount state at most once a second


def ts(offset: float = 0.0) -> str:
    return "%016.05f" % (time.time() + offset)


class Api:
    """The calls a proxy would make, spelled out for tests."""

    def __init__(self, cluster: Cluster):
        self.c = cluster
        self.nc = NodeClient(node_timeout=10)
        self.oring = cluster.ring("object")
        self.cring = cluster.ring("container")
        self.aring = cluster.ring("account")

    async def close(self):
        await self.nc.close()

    def container_headers(self, account, container, timestamp, all_targets=False):
        """One container target per object node (as Swift's proxy does), or every target
        for every object node."""
        cpart, cnodes = self.cring.get_nodes(account, container)
        if all_targets:
            hosts = ",".join(f"{n['ip']}:{n['port']}" for n in cnodes)
            devs = ",".join(n["device"] for n in cnodes)
            return [{"X-Timestamp": timestamp, "X-Container-Host": hosts,
                     "X-Container-Device": devs, "X-Container-Partition": str(cpart)}
                    for _ in cnodes]
        return update_target_headers("container", len(cnodes), cnodes, cpart,
                                     {"X-Timestamp": timestamp})

    async def put_container(self, account, container, extra=None):
        apart, anodes = self.aring.get_nodes(account)
        cpart, cnodes = self.cring.get_nodes(account, container)
        t = ts()
        headers = [{"X-Timestamp": t, "X-Account-Host": f"{a['ip']}:{a['port']}",
                    "X-Account-Device": a["device"], "X-Account-Partition": str(apart),
                    **(extra or {})} for a in anodes]
        return await self.nc.fanout(cnodes, cpart, "PUT", account, container, headers=headers)

    async def put(self, account, container, obj, body, extra=None, timestamp=None,
                  all_targets=False):
        part, nodes = self.oring.get_nodes(account, container, obj)
        extra = dict(extra or {})
        length = extra.pop("_len", None)  # a streaming body's Content-Length
        headers = [dict(h, **{"Content-Type": "application/x-test"}, **extra)
                   for h in self.container_headers(account, container, timestamp or ts(),
                                                   all_targets)]
        return await self.nc.put_object(nodes, self.oring.get_more_nodes(part), part, account,
                                        container, obj, body, headers,
                                        content_length=None if isinstance(body, bytes)
                                        else length)

    async def get(self, account, container, obj, headers=None):
        part, nodes = self.oring.get_nodes(account, container, obj)
        nodes = nodes + list(self.oring.get_more_nodes(part))
        resp, info = await self.nc.get_object(nodes, part, account, container, obj, headers)
        if resp is None:
            return info.status, info.headers, b""
        return resp.status, resp.headers, await resp.read()

    async def delete(self, account, container, obj):
        part, nodes = self.oring.get_nodes(account, container, obj)
        return await self.nc.fanout(nodes, part, "DELETE", account, container, obj,
                                    headers=self.container_headers(account, container, ts()))

    async def listing(self, account, container, query=""):
        cpart, cnodes = self.cring.get_nodes(account, container)
        results = await self.nc.fanout(cnodes, cpart, "GET", account, container, query=query)
        return [(r.status, orjson.loads(r.body) if r.status == 200 else None, r.headers)
                for r in results]

    async def run_daemon(self, node, name):
        http = HttpClient()
        try:
            resp = await http.request("127.0.0.1", node.port, "POST", f"/recon/run/{name}")
            body = await resp.read()
            assert resp.status == 200, body
            return orjson.loads(body)
        finally:
            await http.close()

    async def run_everywhere(self, name):
        for node in self.c.nodes:
            if node.proc is not None:
                await self.run_daemon(node, name)

    def replica_dirs(self, account, container, obj):
        """(node, device, hash dir) of each primary replica on disk."""
        part, nodes = self.oring.get_nodes(account, container, obj)
        h = self.oring.hash_path(account, container, obj).hex()
        out = []
        for dev in nodes:
            node = self.c.node_for(dev)
            out.append((node, dev, node.dev_path(dev["device"]) / "objects" / str(part)
                        / h[-3:] / h))
        return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("objcluster"))
    try:
        c.start()
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster a test may break (kill nodes, unmount devices)."""
    c = Cluster(tmp_path / "cluster")
    try:
        c.start()
        yield c
    finally:
        c.cleanup()


@pytest.fixture
async def api(cluster):
    a = Api(cluster)
    yield a
    await a.close()


async def test_object_roundtrip_durable_on_three_devices(api):
    assert {r.status for r in await api.put_container("AUTH_a", "c1")} == {201}
    body = os.urandom(3000)
    res = await api.put("AUTH_a", "c1", "dir/obj 1", body, {"X-Object-Meta-Color": "blue"})
    assert res.status == 201 and res.etag == hashlib.md5(body).hexdigest()
    status, headers, got = await api.get("AUTH_a", "c1", "dir/obj 1")
    assert status == 200 and got == body
    assert headers["x-object-meta-color"] == "blue"
    assert headers["content-type"] == "application/x-test"
    assert headers["etag"] == res.etag
    dirs = api.replica_dirs("AUTH_a", "c1", "dir/obj 1")
    assert len({(n.index, d["device"]) for n, d, _ in dirs}) == 3
    for _, _, path in dirs:
        [name] = os.listdir(path)
        assert name.endswith(".data")


async def test_large_object_streams_and_ranges(api):
    await api.put_container("AUTH_a", "big")
    data = os.urandom((3 << 20) + 12345)

    async def gen():
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    res = await api.put("AUTH_a", "big", "blob", gen(), {"_len": len(data)})
    assert res.status == 201 and res.etag == hashlib.md5(data).hexdigest()
    status, _, got = await api.get("AUTH_a", "big", "blob")
    assert status == 200 and got == data
    status, headers, got = await api.get("AUTH_a", "big", "blob",
                                         {"Range": "bytes=1048570-1048585"})
    assert status == 206 and got == data[1048570:1048586]
    assert headers["content-range"] == f"bytes 1048570-1048585/{len(data)}"
    status, headers, got = await api.get("AUTH_a", "big", "blob", {"Range": "bytes=0-1,-3"})
    assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
    assert data[:2] in got and data[-3:] in got and got.count(b"Content-Range") == 2
    status, headers, _ = await api.get("AUTH_a", "big", "blob",
                                       {"Range": f"bytes={len(data) + 5}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"


async def test_chunked_put_without_length(api):
    await api.put_container("AUTH_a", "chunked")
    data = os.urandom(200_000)

    async def gen():
        for i in range(0, len(data), 7000):
            yield data[i:i + 7000]

    res = await api.put("AUTH_a", "chunked", "o", gen())
    assert res.status == 201
    status, _, got = await api.get("AUTH_a", "chunked", "o")
    assert got == data
    [(st, items, _), *_] = await api.listing("AUTH_a", "chunked")
    assert items[0]["bytes"] == len(data)


async def test_etag_mismatch_is_422_and_nothing_stored(api):
    await api.put_container("AUTH_a", "c2")
    res = await api.put("AUTH_a", "c2", "bad", b"payload", {"ETag": "0" * 32})
    assert res.status == 422
    assert (await api.get("AUTH_a", "c2", "bad"))[0] == 404
    for _, _, path in api.replica_dirs("AUTH_a", "c2", "bad"):
        assert not path.exists()


async def test_streamed_put_takes_its_md5_from_the_senders_trailer(api):
    """A streamed PUT from the proxy's node client: the md5 is computed once (by the sender)
    and sent after the body; every replica stores and answers that ETag, a client ETag is
    still checked against it, and a request whose trailer is missing or malformed, or whose
    length is wrong, is refused with nothing stored."""
    await api.put_container("AUTH_a", "md5t")
    data = os.urandom(300_000)
    md5 = hashlib.md5(data).hexdigest()

    def gen(body=data, step=65536):
        async def pieces():
            for i in range(0, len(body), step):
                yield body[i:i + step]
        return pieces()

    res = await api.put("AUTH_a", "md5t", "o", gen(), {"_len": len(data), "ETag": md5})
    assert (res.status, res.etag) == (201, md5)
    for r in res.results:
        assert r.headers["etag"] == md5
    status, headers, got = await api.get("AUTH_a", "md5t", "o")
    assert (status, headers["etag"], got) == (200, md5, data)

    res = await api.put("AUTH_a", "md5t", "wrong-etag", gen(), {"_len": len(data),
                                                                 "ETag": "0" * 32})
    assert res.status == 422
    assert (await api.get("AUTH_a", "md5t", "wrong-etag"))[0] == 404

    # one node, spoken to directly: what it refuses
    part, nodes = api.oring.get_nodes("AUTH_a", "md5t", "refused")
    dev = nodes[0]
    path = f"/{dev['device']}/{part}/AUTH_a/md5t/refused"
    base = {"X-Timestamp": ts(), "Content-Type": "application/x-test",
            "X-Backend-Md5-Trailer": "1"}
    http = api.nc.http
    cases = [
        ("no trailer", dict(base), None, 400, b"x-backend-md5"),
        ("not hex", dict(base), lambda: {"X-Backend-Md5": "z" * 32}, 400, b"x-backend-md5"),
        ("too short", dict(base), lambda: {"X-Backend-Md5": md5[:31]}, 400, b"x-backend-md5"),
        ("length short", dict(base, **{"X-Backend-Obj-Content-Length": str(len(data) + 1)}),
         lambda: {"X-Backend-Md5": md5}, 499, b"Content-Length"),
        ("bad length", dict(base, **{"X-Backend-Obj-Content-Length": "lots"}),
         lambda: {"X-Backend-Md5": md5}, 400, b"Content-Length"),
    ]
    for what, headers, trailers, want, says in cases:
        resp = await http.request(dev["ip"], dev["port"], "PUT", path, headers, gen(),
                                  trailers=trailers)
        body = await resp.read()
        assert (resp.status, says in body) == (want, True), (what, resp.status, body)
    # the header with a Content-Length body: there can be no trailer
    resp = await http.request(dev["ip"], dev["port"], "PUT", path, dict(base), data)
    body = await resp.read()
    assert resp.status == 400 and b"chunked" in body
    resp = await http.request(dev["ip"], dev["port"], "GET", path, {})
    assert resp.status == 404, await resp.read()
    await resp.read()
    node = api.c.node_for(dev)
    h = api.oring.hash_path("AUTH_a", "md5t", "refused").hex()
    assert not (node.dev_path(dev["device"]) / "objects" / str(part) / h[-3:] / h).exists()
    assert not list((node.dev_path(dev["device"]) / "tmp").iterdir())


async def test_last_writer_wins_by_timestamp(api):
    await api.put_container("AUTH_a", "c3")
    newer, older = ts(10), ts(0)
    assert (await api.put("AUTH_a", "c3", "o", b"new", timestamp=newer)).status == 201
    res = await api.put("AUTH_a", "c3", "o", b"old", timestamp=older)
    assert res.status == 409
    assert all(r.headers.get("x-backend-timestamp") == newer for r in res.results)
    assert (await api.get("AUTH_a", "c3", "o"))[2] == b"new"


async def test_delete_leaves_tombstone_and_updates_listing(api):
    await api.put_container("AUTH_a", "c4")
    await api.put("AUTH_a", "c4", "gone", b"x")
    results = await api.delete("AUTH_a", "c4", "gone")
    assert {r.status for r in results} == {204}
    status, headers, _ = await api.get("AUTH_a", "c4", "gone")
    assert status == 404 and headers.get("x-backend-timestamp")
    for _, _, path in api.replica_dirs("AUTH_a", "c4", "gone"):
        assert [n[-3:] for n in os.listdir(path)] == [".ts"]
    for status, items, headers in await api.listing("AUTH_a", "c4"):
        assert status == 200 and items == []
        assert headers["x-container-object-count"] == "0"
    assert {r.status for r in await api.delete("AUTH_a", "c4", "never")} == {404}


async def test_listings_prefix_delimiter_markers_reverse(api):
    await api.put_container("AUTH_a", "lst")
    names = ["a", "a/1", "a/2", "a0", "b/x/1", "b/y", "c"]
    await asyncio.gather(*(api.put("AUTH_a", "lst", n, n.encode()) for n in names))

    async def names_of(query):
        status, items, _ = (await api.listing("AUTH_a", "lst", query))[0]
        assert status == 200
        return [i.get("name", i.get("subdir")) for i in items]

    assert await names_of("") == names
    assert await names_of("delimiter=/") == ["a", "a/", "a0", "b/", "c"]
    assert await names_of("prefix=b/&delimiter=/") == ["b/x/", "b/y"]
    assert await names_of("marker=a/1&end_marker=b/y") == ["a/2", "a0", "b/x/1"]
    assert await names_of("limit=2&marker=a") == ["a/1", "a/2"]
    assert await names_of("reverse=true&limit=3") == ["c", "b/y", "b/x/1"]
    assert await names_of("reverse=true&delimiter=/") == ["c", "b/", "a0", "a/", "a"]
    status, items, headers = (await api.listing("AUTH_a", "lst"))[0]
    assert items[1] == {"name": "a/1", "hash": hashlib.md5(b"a/1").hexdigest(), "bytes": 3,
                        "content_type": "application/x-test",
                        "last_modified": items[1]["last_modified"]}
    assert headers["x-container-object-count"] == "7"
    assert headers["x-container-bytes-used"] == str(sum(len(n) for n in names))
    cpart, cnodes = api.cring.get_nodes("AUTH_a", "lst")
    bad = await api.nc.fanout(cnodes[:1], cpart, "GET", "AUTH_a", "lst", query="limit=x")
    assert bad[0].status == 400
    # a listing read fails over past a dead node
    dead = {"ip": "127.0.0.1", "port": free_port(), "device": "gone"}
    resp, _ = await api.nc.get_first([dead] + cnodes, cpart, "AUTH_a", "lst", None,
                                     query="prefix=b/&delimiter=/")
    assert resp.status == 200 and orjson.loads(await resp.read()) == [
        {"subdir": "b/x/"}, {"name": "b/y", "hash": hashlib.md5(b"b/y").hexdigest(),
                             "bytes": 3, "content_type": "application/x-test",
                             "last_modified": items[5]["last_modified"]}]


async def test_container_delete_conflict_and_account_stats(api):
    await api.put_container("AUTH_stats", "full", {"X-Container-Meta-Team": "ops"})
    await api.put_container("AUTH_stats", "empty")
    await api.put("AUTH_stats", "full", "o1", b"12345")
    cpart, cnodes = api.cring.get_nodes("AUTH_stats", "full")
    head = await api.nc.fanout(cnodes, cpart, "HEAD", "AUTH_stats", "full")
    assert all(r.status == 204 and r.headers["x-container-meta-team"] == "ops" for r in head)
    refused = await api.nc.fanout(cnodes, cpart, "DELETE", "AUTH_stats", "full",
                                  headers={"X-Timestamp": ts()})
    assert {r.status for r in refused} == {409}
    # the updater reports object counts to the account servers
    await api.run_everywhere("updater")
    apart, anodes = api.aring.get_nodes("AUTH_stats")
    for r in await api.nc.fanout(anodes, apart, "GET", "AUTH_stats"):
        assert r.status == 200
        rows = {i["name"]: i for i in orjson.loads(r.body)}
        assert rows["full"]["count"] == 1 and rows["full"]["bytes"] == 5
        assert r.headers["x-account-container-count"] == "2"
        assert r.headers["x-account-object-count"] == "1"


async def test_bad_requests_get_clear_4xx(api):
    http = api.nc.http
    node = api.c.nodes[0]
    dev = node.devices[0]
    for method, path, headers, want in [
        ("GET", f"/{dev}/notapart/a/c/o", {}, 400),
        ("PUT", f"/{dev}/1/a/c/o", {"X-Timestamp": "yesterday", "Content-Length": "0"}, 400),
        ("DELETE", f"/{dev}/1/a/c/o", {}, 400),
        ("GET", "/nosuchdevice/1/a/c/o", {}, 507),
        ("PATCH", f"/{dev}/1/a/c/o", {}, 405),
        ("PUT", f"/{dev}/1/a/c/o", {"X-Delete-At": "1", "X-Timestamp": ts(),
                                   "Content-Length": "0"}, 400),
    ]:
        resp = await http.request("127.0.0.1", node.port, method, path, headers)
        body = await resp.read()
        assert resp.status == want, (method, path, body)
        assert body.strip()


async def test_pending_updates_replayed_after_container_and_account_servers_return(
        own_cluster):
    api = Api(own_cluster)
    try:
        await api.put_container("AUTH_p", "c")
        _, cnodes = api.cring.get_nodes("AUTH_p", "c")
        down = own_cluster.node_for(cnodes[0])
        own_cluster.stop_node(down)
        # every object node updates every container replica, so live object nodes must
        # each record the update for the dead container server
        res = await api.put("AUTH_p", "c", "late", b"data", all_targets=True)
        assert res.status == 201
        pending = [p for n in own_cluster.nodes for p in n.root.rglob("async_pending/*/*")]
        assert pending, "a failed container update must be saved"
        # a container created meanwhile cannot reach the account replica on the dead node
        apart, anodes = api.aring.get_nodes("AUTH_p")
        assert down.port in {a["port"] for a in anodes}  # one replica per node
        c2part, c2nodes = api.cring.get_nodes("AUTH_p", "c2")
        every_account = {"X-Timestamp": ts(),
                         "X-Account-Host": ",".join(f"{a['ip']}:{a['port']}" for a in anodes),
                         "X-Account-Device": ",".join(a["device"] for a in anodes),
                         "X-Account-Partition": str(apart)}
        live = [n for n in c2nodes if n["port"] != down.port]
        created = await api.nc.fanout(live, c2part, "PUT", "AUTH_p", "c2",
                                      headers=every_account)
        assert {r.status for r in created} == {201}
        assert [p for n in own_cluster.nodes for p in n.root.rglob("async_pending/*/*-container")]
        own_cluster.start_node(down)
        for status, items, _ in await api.listing("AUTH_p", "c"):
            if status == 200 and not items:
                break
        else:
            pytest.fail("the restarted container server should not know the object yet")
        await api.run_everywhere("updater")
        for status, items, _ in await api.listing("AUTH_p", "c"):
            assert status == 200 and [i["name"] for i in items] == ["late"]
        for r in await api.nc.fanout(anodes, apart, "GET", "AUTH_p"):
            assert r.status == 200 and [i["name"] for i in orjson.loads(r.body)] == ["c", "c2"]
        assert not [p for n in own_cluster.nodes for p in n.root.rglob("async_pending/*/*")]
    finally:
        await api.close()


async def test_replicator_restores_missing_replica_and_db(own_cluster):
    api = Api(own_cluster)
    try:
        await api.put_container("AUTH_r", "c")
        body = os.urandom(2 << 20)
        await api.put("AUTH_r", "c", "obj", body)
        dirs = api.replica_dirs("AUTH_r", "c", "obj")
        victim_node, victim_dev, victim_dir = dirs[0]
        import shutil
        shutil.rmtree(victim_dir.parent.parent)  # the partition is lost (say, a new disk)
        # and a container DB replica lost with it
        cpart, cnodes = api.cring.get_nodes("AUTH_r", "c")
        chash = api.cring.hash_path("AUTH_r", "c").hex()
        cnode = own_cluster.node_for(cnodes[0])
        db_dir = cnode.dev_path(cnodes[0]["device"]) / "containers" / str(cpart) / chash[-3:] / chash
        own_cluster.stop_node(cnode)
        shutil.rmtree(db_dir)
        own_cluster.start_node(cnode)
        await api.run_everywhere("replicator")
        files = os.listdir(victim_dir)
        assert len(files) == 1 and files[0].endswith(".data")
        # the restored replica is a good one: read it from that node alone
        part, _ = api.oring.get_nodes("AUTH_r", "c", "obj")
        resp, _ = await api.nc.get_object([victim_dev], part, "AUTH_r", "c", "obj")
        assert resp.status == 200 and await resp.read() == body
        assert (db_dir / f"{chash}.db").exists()
        r = await api.nc.fanout(cnodes[:1], cpart, "GET", "AUTH_r", "c")
        assert [i["name"] for i in orjson.loads(r[0].body)] == ["obj"]
        # replication has converged: another pass sends nothing at all
        await api.run_everywhere("replicator")
        before = [await api.run_daemon(n, "replicator") for n in own_cluster.nodes]
        after = [await api.run_daemon(n, "replicator") for n in own_cluster.nodes]
        for b, a in zip(before, after):
            assert (a["pushed"], a["rows_pushed"]) == (b["pushed"], b["rows_pushed"])
    finally:
        await api.close()


async def test_corrupt_replica_never_served_and_quarantined(own_cluster):
    api = Api(own_cluster)
    try:
        await api.put_container("AUTH_q", "c")
        body = os.urandom(3 << 20)
        await api.put("AUTH_q", "c", "obj", body)
        small = os.urandom(1000)
        await api.put("AUTH_q", "c", "small", small)
        part, nodes = api.oring.get_nodes("AUTH_q", "c", "obj")
        (node, dev, path), *_ = api.replica_dirs("AUTH_q", "c", "obj")
        [data_file] = path.iterdir()
        with open(data_file, "r+b") as fh:  # flip bytes in the second MiB
            fh.seek((1 << 20) + 100)
            b = fh.read(4)
            fh.seek((1 << 20) + 100)
            fh.write(bytes(x ^ 0xFF for x in b))
        # reading that replica alone: the body is cut short, never corrupt
        resp, _ = await api.nc.get_object([dev], part, "AUTH_q", "c", "obj")
        assert resp.status == 200
        received = b""
        with pytest.raises(NodeConnectionError):
            async for chunk in resp.iter_body():
                received += chunk
        assert len(received) < len(body) and body.startswith(received)
        assert not path.exists()  # quarantined on the spot
        assert list((node.dev_path(dev["device"]) / "quarantined" / "objects").iterdir())
        # a GET through the failover helper still returns the good bytes (resumes elsewhere)
        resp, _ = await api.nc.get_object(nodes, part, "AUTH_q", "c", "obj")
        got = b"".join([c async for c in api.nc.iter_object_body(
            resp, iter(nodes[1:]), part, "AUTH_q", "c", "obj")])
        assert got == body
        # the auditor finds a flipped small object the GET path has not touched
        spart, _ = api.oring.get_nodes("AUTH_q", "c", "small")
        (snode, sdev, spath), *_ = api.replica_dirs("AUTH_q", "c", "small")
        [sfile] = spath.iterdir()
        raw = bytearray(sfile.read_bytes())
        raw[10] ^= 0x01
        sfile.write_bytes(bytes(raw))
        stats = await api.run_daemon(snode, "auditor")
        assert stats["quarantined"] >= 1 and not spath.exists()
        # and the replicator puts good copies back
        await api.run_everywhere("replicator")
        for p in (path, spath):
            assert len(list(p.iterdir())) == 1
        resp, _ = await api.nc.get_object([sdev], spart, "AUTH_q", "c", "small")
        assert await resp.read() == small
    finally:
        await api.close()


async def test_unmounted_or_full_device_answers_507_and_writes_go_to_handoffs(own_cluster):
    api = Api(own_cluster)
    try:
        await api.put_container("AUTH_u", "c")
        part, nodes = api.oring.get_nodes("AUTH_u", "c", "obj")
        first = own_cluster.node_for(nodes[0])
        (first.dev_path(nodes[0]["device"]) / ".unmounted").touch()
        await asyncio.sleep(MOUNT_CHECK_CACHE)
        r = await api.nc.fanout(nodes[:1], part, "GET", "AUTH_u", "c", "obj")
        assert r[0].status == 507
        res = await api.put("AUTH_u", "c", "obj", b"to a handoff")
        assert res.status == 201
        used = [x.node["id"] for x in res.results if x.status == 201]
        handoff_ids = [d["id"] for d in api.oring.get_more_nodes(part)]
        assert nodes[0]["id"] not in used and set(used) - {n["id"] for n in nodes} <= set(
            handoff_ids) and len(set(used) & set(handoff_ids)) == 1
        assert (await api.get("AUTH_u", "c", "obj"))[2] == b"to a handoff"
        # a streamed upload learns of the 507 from the 100-continue exchange, at once
        big = os.urandom(3 << 20)

        async def stream():
            for i in range(0, len(big), 1 << 20):
                yield big[i:i + (1 << 20)]

        started = time.monotonic()
        res = await api.put("AUTH_u", "c", "obj", stream(), {"_len": len(big)})
        assert res.status == 201 and time.monotonic() - started < 5
        assert any(r.status == 507 for r in res.results)
        assert (await api.get("AUTH_u", "c", "obj"))[2] == big
        # once the device is back, replication moves the handoff copy home and removes it
        (first.dev_path(nodes[0]["device"]) / ".unmounted").unlink()
        await asyncio.sleep(MOUNT_CHECK_CACHE)
        await api.run_everywhere("replicator")
        r = await api.nc.fanout(nodes[:1], part, "GET", "AUTH_u", "c", "obj")
        assert r[0].status == 200 and r[0].body == big
        handoff = next(d for d in api.oring.get_more_nodes(part) if d["id"] in used)
        hnode = own_cluster.node_for(handoff)
        assert not (hnode.dev_path(handoff["device"]) / "objects" / str(part)).exists()
        # a device below its free-space reserve refuses writes the same way
        own_cluster.stop_node(first)
        own_cluster.start_node(first, extra=["--reserve-bytes", str(1 << 62)])
        r = await api.nc.fanout(nodes[:1], part, "PUT", "AUTH_u", "c", "obj2",
                                headers={"X-Timestamp": ts()}, body=b"x")
        assert r[0].status == 507
    finally:
        await api.close()


async def test_expired_objects_404_then_removed_by_expirer(cluster):
    api = Api(cluster)
    try:
        await api.put_container("AUTH_e", "c")
        delete_at = int(time.time()) + 3
        res = await api.put("AUTH_e", "c", "brief", b"soon gone",
                            {"X-Delete-At": str(delete_at)})
        assert res.status == 201
        if time.time() < delete_at - 0.2:  # (a very loaded machine may be slower than that)
            assert (await api.get("AUTH_e", "c", "brief"))[0] == 200
        await asyncio.sleep(max(0.0, delete_at + 0.1 - time.time()))
        assert (await api.get("AUTH_e", "c", "brief"))[0] == 404
        await api.run_everywhere("expirer")
        for _, _, path in api.replica_dirs("AUTH_e", "c", "brief"):
            assert [n[-3:] for n in os.listdir(path)] == [".ts"]
        for status, items, _ in await api.listing("AUTH_e", "c"):
            assert status == 200 and items == []
    finally:
        await api.close()


async def test_kill_a_node_during_puts_then_replication_restores_three_replicas(own_cluster):
    """Every PUT acknowledged while a node is SIGKILLed is readable; after the node returns,
    replication brings every object back to exactly its three primaries."""
    api = Api(own_cluster)
    try:
        await api.put_container("AUTH_k", "c")
        victim = own_cluster.nodes[1]
        acked: dict[str, bytes] = {}
        names = iter(range(150))

        async def writer():
            for i in names:
                if i == 50 and victim.proc is not None:
                    own_cluster.stop_node(victim)  # SIGKILL, mid-stream of other PUTs
                body = os.urandom(100 + i)
                res = await api.put("AUTH_k", "c", f"o{i}", body)
                if res.status == 201:
                    acked[f"o{i}"] = body

        await asyncio.gather(*(writer() for _ in range(8)))
        assert len(acked) >= 145  # quorum holds with one node of three down
        for name, body in acked.items():
            status, _, got = await api.get("AUTH_k", "c", name)
            assert status == 200 and got == body, name
        own_cluster.start_node(victim)
        for _ in range(2):
            await api.run_everywhere("replicator")
        for name in acked:
            for node, dev, path in api.replica_dirs("AUTH_k", "c", name):
                assert path.exists() and [n[-5:] for n in os.listdir(path)] == [".data"], \
                    (name, node.index)
        part_dirs = 0
        for node in own_cluster.nodes:
            for dev_name in node.devices:
                for part_dir in (node.dev_path(dev_name) / "objects").glob("*"):
                    part = int(part_dir.name)
                    primaries = {d["id"] for d in api.oring.get_part_nodes(part)}
                    dev_id = next(d["id"] for d in api.oring.devs
                                  if d["port"] == node.port and d["device"] == dev_name)
                    assert dev_id in primaries, f"handoff copy left in {part_dir}"
                    part_dirs += 1
        assert part_dirs > 0
    finally:
        await api.close()


async def test_container_and_account_metadata_set_and_remove(api):
    apart, anodes = api.aring.get_nodes("AUTH_meta")
    put = await api.nc.fanout(anodes, apart, "PUT", "AUTH_meta", headers={
        "X-Timestamp": ts(), "X-Account-Meta-Temp-Url-Key": "k1", "X-Account-Bogus": "no"})
    assert {r.status for r in put} == {201}
    again = await api.nc.fanout(anodes, apart, "PUT", "AUTH_meta", headers={"X-Timestamp": ts()})
    assert {r.status for r in again} == {202}
    await api.put_container("AUTH_meta", "c", {"X-Container-Read": ".r:*",
                                               "X-Container-Meta-A": "1"})
    cpart, cnodes = api.cring.get_nodes("AUTH_meta", "c")
    post = await api.nc.fanout(cnodes, cpart, "POST", "AUTH_meta", "c", headers={
        "X-Timestamp": ts(), "X-Remove-Container-Meta-A": "x", "X-Container-Meta-B": "2"})
    assert {r.status for r in post} == {204}
    for r in await api.nc.fanout(cnodes, cpart, "HEAD", "AUTH_meta", "c"):
        assert r.headers["x-container-read"] == ".r:*"
        assert r.headers["x-container-meta-b"] == "2"
        assert "x-container-meta-a" not in r.headers
    for r in await api.nc.fanout(anodes, apart, "HEAD", "AUTH_meta"):
        assert r.headers["x-account-meta-temp-url-key"] == "k1"
        assert "x-account-bogus" not in r.headers
        assert r.headers["x-account-container-count"] == "1"
    # deleting the (empty) container reaches the account's stats at once
    deleted = await api.nc.fanout(cnodes, cpart, "DELETE", "AUTH_meta", "c", headers=[
        {"X-Timestamp": ts(), "X-Account-Host": f"{a['ip']}:{a['port']}",
         "X-Account-Device": a["device"], "X-Account-Partition": str(apart)} for a in anodes])
    assert {r.status for r in deleted} == {204}
    for r in await api.nc.fanout(anodes, apart, "GET", "AUTH_meta"):
        assert r.headers["x-account-container-count"] == "0" and orjson.loads(r.body) == []
    assert {r.status for r in await api.nc.fanout(cnodes, cpart, "HEAD", "AUTH_meta", "c")} \
        == {404}


async def test_conditional_put_and_get(api):
    await api.put_container("AUTH_a", "cond")
    res = await api.put("AUTH_a", "cond", "o", b"first", {"If-None-Match": "*"})
    assert res.status == 201
    etag = res.etag
    again = await api.put("AUTH_a", "cond", "o", b"second", {"If-None-Match": "*"})
    assert again.status == 412
    assert (await api.get("AUTH_a", "cond", "o"))[2] == b"first"
    status, headers, body = await api.get("AUTH_a", "cond", "o", {"If-None-Match": f'"{etag}"'})
    assert status == 304 and body == b""
    status, _, _ = await api.get("AUTH_a", "cond", "o", {"If-Match": '"nope"'})
    assert status == 412
    status, _, body = await api.get("AUTH_a", "cond", "o", {"If-Match": etag})
    assert status == 200 and body == b"first"
    last_modified = (await api.get("AUTH_a", "cond", "o"))[1]["last-modified"]
    assert (await api.get("AUTH_a", "cond", "o", {"If-Modified-Since": last_modified}))[0] == 304
    status = (await api.get("AUTH_a", "cond", "o",
                            {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}))[0]
    assert status == 412


async def test_streaming_put_losing_quorum_fails_and_stores_nothing(own_cluster):
    api = Api(own_cluster)
    try:
        await api.put_container("AUTH_l", "c")
        part, nodes = api.oring.get_nodes("AUTH_l", "c", "big")
        doomed = {own_cluster.node_for(d).index for d in nodes[1:]}
        chunk = os.urandom(1 << 20)

        async def body():
            for i in range(16):
                if i == 2:
                    for index in doomed:
                        own_cluster.stop_node(own_cluster.nodes[index])
                    await asyncio.sleep(0.2)
                yield chunk

        res = await api.put("AUTH_l", "c", "big", body(), {"_len": 16 << 20})
        assert res.status == 503
        survivor_node, survivor_dev, path = api.replica_dirs("AUTH_l", "c", "big")[0]
        assert survivor_node.index not in doomed and survivor_node.proc is not None
        await asyncio.sleep(0.2)
        assert not path.exists(), "a truncated body must never be committed"
        tmp = survivor_node.dev_path(survivor_dev["device"]) / "tmp"
        assert not list(tmp.iterdir()), "the aborted upload's temp file is removed"
    finally:
        await api.close()


async def test_replicated_metadata_is_validated(api):
    import base64

    import msgpack
    node = api.c.nodes[0]
    dev = node.devices[0]
    for meta, want in [
        ({"ts": "../../../etc", "name": "/a/c/o"}, 400),
        ({"ts": ts(), "name": "/a/c/other"}, 400),
        ({"ts": ts(), "name": "/a/c/o", "headers": "x"}, 400),
    ]:
        raw = base64.b64encode(msgpack.packb(meta)).decode()
        resp = await api.nc.http.request("127.0.0.1", node.port, "PUT", f"/{dev}/1/a/c/o",
                                         {"X-Backend-Replicated-Meta": raw}, b"x")
        assert resp.status == want and b"Replicated-Meta" in await resp.read()


async def test_corrupt_container_db_is_quarantined_and_rebuilt(own_cluster):
    api = Api(own_cluster)
    try:
        await api.put_container("AUTH_dbq", "c")
        await api.put("AUTH_dbq", "c", "o", b"x")
        cpart, cnodes = api.cring.get_nodes("AUTH_dbq", "c")
        chash = api.cring.hash_path("AUTH_dbq", "c").hex()
        node = own_cluster.node_for(cnodes[0])
        db_file = (node.dev_path(cnodes[0]["device"]) / "containers" / str(cpart)
                   / chash[-3:] / chash / f"{chash}.db")
        own_cluster.stop_node(node)
        with open(db_file, "r+b") as fh:
            fh.write(b"this is not an SQLite header")
        own_cluster.start_node(node)
        stats = await api.run_daemon(node, "auditor")
        assert stats["dbs_quarantined"] == 1 and not db_file.exists()
        assert list((node.dev_path(cnodes[0]["device"]) / "quarantined" / "containers").iterdir())
        await api.run_everywhere("replicator")
        assert db_file.exists()
        r = await api.nc.fanout(cnodes[:1], cpart, "GET", "AUTH_dbq", "c")
        assert r[0].status == 200 and [i["name"] for i in orjson.loads(r[0].body)] == ["o"]
    finally:
        await api.close()


async def test_concurrent_puts_batch_their_container_rows(api):
    await api.put_container("AUTH_batch", "c")
    results = await asyncio.gather(*(api.put("AUTH_batch", "c", f"o{i:03d}", b"%d" % i)
                                     for i in range(60)))
    assert {r.status for r in results} == {201}
    for status, items, headers in await api.listing("AUTH_batch", "c"):
        assert status == 200 and [i["name"] for i in items] == [f"o{i:03d}" for i in range(60)]
        assert headers["x-container-object-count"] == "60"
    # the batch endpoint refuses malformed rows with a reason
    cpart, cnodes = api.cring.get_nodes("AUTH_batch", "c")
    bad = await api.nc.fanout(cnodes[:1], cpart, "POST", "AUTH_batch", "c", headers={
        "X-Backend-Server-Type": "container", "X-Backend-Row-Batch": "1"}, body=b"\x93junk")
    assert bad[0].status == 400 and b"row batch" in bad[0].body
