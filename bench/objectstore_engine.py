"""Raw storage-node throughput (no proxy, no auth), printed as JSON.

Starts a real cluster (3 node processes, 4 devices, 3 replicas) in a temp dir and measures,
through the same NodeClient the proxy uses:

* 4 KiB PUT (3 replicas, quorum, with container updates), GET, HEAD, DELETE at concurrency 16;
* one node alone: 4 KiB PUT/GET at concurrency 16;
* 1 MiB PUT (3 replicas) / GET at concurrency 8;
* one 256 MiB object: PUT to one node, PUT with 3 replicas, GET from one node;
* listing 10,000 objects from a container server;
* baseline measured in the same run: this disk's sequential write speed with fdatasync.

    .venv/bin/python bench/objectstore_engine.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stratus.objectstore.nodeclient import NodeClient  # noqa: E402
from tests.functional.objectstore.cluster import Cluster  # noqa: E402


def ts() -> str:
    return "%016.05f" % time.time()


def disk_write_baseline(directory: Path, size: int) -> float:
    """MB/s of writing ``size`` bytes in 1 MiB writes then fdatasync (the disk limit)."""
    buf = os.urandom(1 << 20)
    path = directory / "baseline.bin"
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(size >> 20):
        os.write(fd, buf)
    os.fdatasync(fd)
    os.close(fd)
    elapsed = time.perf_counter() - start
    os.unlink(path)
    return size / elapsed / 1e6


async def run_concurrent(n_ops: int, concurrency: int, op) -> float:
    counter = iter(range(n_ops))

    async def worker():
        for i in counter:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n_ops / (time.perf_counter() - start)


async def bench(cluster: Cluster, quick: bool) -> dict:
    nc = NodeClient(node_timeout=120)
    oring, cring, aring = cluster.ring("object"), cluster.ring("container"), cluster.ring("account")
    account, container = "AUTH_bench", "bench"
    apart, anodes = aring.get_nodes(account)
    cpart, cnodes = cring.get_nodes(account, container)
    await nc.fanout(cnodes, cpart, "PUT", account, container, headers=[
        {"X-Timestamp": ts(), "X-Account-Host": f"{a['ip']}:{a['port']}",
         "X-Account-Device": a["device"], "X-Account-Partition": str(apart)} for a in anodes])

    def obj_headers(extra=None):
        t = ts()
        return [{"X-Timestamp": t, "Content-Type": "application/octet-stream",
                 "X-Container-Host": f"{c['ip']}:{c['port']}", "X-Container-Device": c["device"],
                 "X-Container-Partition": str(cpart), **(extra or {})} for c in cnodes]

    out: dict = {}
    small = os.urandom(4096)
    n_small = 500 if quick else 2000

    async def put_small(i):
        name = f"small/{i}"
        part, nodes = oring.get_nodes(account, container, name)
        r = await nc.put_object(nodes, oring.get_more_nodes(part), part, account, container,
                                name, small, obj_headers())
        assert r.status == 201, r

    async def get_small(i):
        name = f"small/{i}"
        part, nodes = oring.get_nodes(account, container, name)
        resp, _ = await nc.get_object(nodes, part, account, container, name)
        assert len(await resp.read()) == 4096

    async def head_small(i):
        name = f"small/{i}"
        part, nodes = oring.get_nodes(account, container, name)
        resp, _ = await nc.get_object(nodes, part, account, container, name, method="HEAD")
        assert resp.status == 200

    async def delete_small(i):
        name = f"small/{i}"
        part, nodes = oring.get_nodes(account, container, name)
        rs = await nc.fanout(nodes, part, "DELETE", account, container, name,
                             headers=obj_headers())
        assert sum(r.status == 204 for r in rs) >= 2

    out["put_4k_3rep_c16_ops"] = round(await run_concurrent(n_small, 16, put_small), 1)
    out["get_4k_c16_ops"] = round(await run_concurrent(n_small, 16, get_small), 1)
    out["head_4k_c16_ops"] = round(await run_concurrent(n_small, 16, head_small), 1)
    out["delete_4k_3rep_c16_ops"] = round(await run_concurrent(n_small, 16, delete_small), 1)

    # one node alone (what a single object server sustains)
    one = oring.devs[0]

    async def put_one(i):
        name = f"one/{i}"
        part = oring.get_part(account, container, name)
        r = await nc.request(one, part, "PUT", account, container, name,
                             headers={"X-Timestamp": ts()}, body=small)
        await r.read()
        assert r.status == 201

    async def get_one(i):
        name = f"one/{i}"
        part = oring.get_part(account, container, name)
        r = await nc.request(one, part, "GET", account, container, name)
        assert len(await r.read()) == 4096

    out["single_node_put_4k_c16_ops"] = round(await run_concurrent(n_small, 16, put_one), 1)
    out["single_node_get_4k_c16_ops"] = round(await run_concurrent(n_small, 16, get_one), 1)

    # 1 MiB objects, 3 replicas, concurrency 8
    mib = os.urandom(1 << 20)
    n_mib = 40 if quick else 160

    async def put_mib(i):
        name = f"mib/{i}"
        part, nodes = oring.get_nodes(account, container, name)
        r = await nc.put_object(nodes, oring.get_more_nodes(part), part, account, container,
                                name, mib, obj_headers())
        assert r.status == 201

    async def get_mib(i):
        name = f"mib/{i}"
        part, nodes = oring.get_nodes(account, container, name)
        resp, _ = await nc.get_object(nodes, part, account, container, name)
        assert len(await resp.read()) == 1 << 20

    out["put_1m_3rep_c8_MBps"] = round(await run_concurrent(n_mib, 8, put_mib) * 1.048576, 1)
    out["get_1m_c8_MBps"] = round(await run_concurrent(n_mib, 8, get_mib) * 1.048576, 1)

    # one large object
    size = (64 if quick else 256) << 20
    block = os.urandom(4 << 20)

    async def body():
        for _ in range(size // len(block)):
            yield block

    name = "large/one"
    part, nodes = oring.get_nodes(account, container, name)
    start = time.perf_counter()
    r = await nc.request(nodes[0], part, "PUT", account, container, name,
                         headers={"X-Timestamp": ts()}, body=body(), content_length=size)
    await r.read()
    assert r.status == 201, r.status
    out["large_put_single_node_MBps"] = round(size / (time.perf_counter() - start) / 1e6, 1)
    start = time.perf_counter()
    r = await nc.put_object(nodes, oring.get_more_nodes(part), part, account, container,
                            name + "3", body(), obj_headers(), content_length=size)
    assert r.status == 201, r
    out["large_put_3rep_MBps"] = round(size / (time.perf_counter() - start) / 1e6, 1)
    for label in ("large_get_single_node_MBps", "large_get_warm_MBps"):
        start = time.perf_counter()
        resp = await nc.request(nodes[0], part, "GET", account, container, name)
        got = 0
        async for chunk in resp.iter_body():
            got += len(chunk)
        assert got == size
        out[label] = round(size / (time.perf_counter() - start) / 1e6, 1)
    out["large_object_bytes"] = size

    # listing 10,000 objects: fill a container by row updates, then time one listing
    lst = "listing"
    lpart, lnodes = cring.get_nodes(account, lst)
    await nc.fanout(lnodes, lpart, "PUT", account, lst, headers={"X-Timestamp": ts()})

    async def row(i):
        await nc.fanout(lnodes[:1], lpart, "PUT", account, lst, f"obj{i:05d}", headers={
            "X-Backend-Server-Type": "container", "X-Timestamp": ts(), "X-Size": "10",
            "X-Content-Type": "text/plain", "X-Etag": "d41d8cd98f00b204e9800998ecf8427e"})

    await run_concurrent(10000, 32, row)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        rs = await nc.fanout(lnodes[:1], lpart, "GET", account, lst, query="limit=10000")
        times.append(time.perf_counter() - start)
        assert rs[0].body.count(b'"name"') == 10000
    out["listing_10k_s"] = round(min(times), 4)
    await nc.close()
    return out


def node_memory_mb(cluster: Cluster) -> float:
    total = 0
    for node in cluster.nodes:
        with open(f"/proc/{node.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="smaller counts and a 64 MiB object")
    p.add_argument("--dir", default=None, help="where to put the nodes (default: a temp dir)")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="objbench-", dir=args.dir))
    cluster = Cluster(base / "c", part_power=8)
    try:
        baseline = disk_write_baseline(base, 256 << 20)
        cluster.start()
        results = asyncio.run(bench(cluster, args.quick))
        results["node_processes_rss_MB"] = node_memory_mb(cluster)
        results["baseline_disk_write_fdatasync_MBps"] = round(baseline, 1)
        results["nodes"] = len(cluster.nodes)
        results["devices"] = sum(len(n.devices) for n in cluster.nodes)
        results["replicas"] = 3
        print(json.dumps(results, indent=2))
    finally:
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
