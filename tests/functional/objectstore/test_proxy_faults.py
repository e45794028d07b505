"""Faults under the proxy, end to end over loopback: storage nodes are separate processes
(4 devices on 3 nodes, 3 replicas, daemons run on demand), the proxy is `stratus up`'s, and
clients go through its public API with Keystone tokens."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cloudfixture import destroy_cloud, start_cloud

from .cluster import Cluster
from .proxyfixture import Account, token_and_project

pytestmark = pytest.mark.timeout(300)
MOUNT_CHECK_CACHE = 1.2


@pytest.fixture
def rig(tmp_path):
    cluster = Cluster(tmp_path / "cluster", devices_per_node=(2, 1, 1), part_power=6)
    state = Path(tempfile.mkdtemp(prefix="stratus-osfault-"))
    cloud = None
    try:
        cluster.start()
        cloud = start_cloud(state, services=["identity", "objectstore"], extra_env={
            "STRATUS_OBJECTSTORE__RUN_NODES": "false",
            "STRATUS_OBJECTSTORE__RING_DIR": str(cluster.ring_dir),
            "STRATUS_OBJECTSTORE__NODE_TIMEOUT": "3"})
        token, project = token_and_project(cloud, "demo")
        yield cluster, cloud, Account(cloud, token, project)
    finally:
        if cloud is not None:
            destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)
        cluster.cleanup()


def run_daemon(cluster: Cluster, name: str):
    for node in cluster.nodes:
        if node.proc is not None:
            r = httpx.post(f"http://127.0.0.1:{node.port}/recon/run/{name}", timeout=120)
            assert r.status_code == 200, r.text


def replica_files(cluster: Cluster, account: str, container: str, obj: str):
    """[(node, device, hash dir)] of the object's primary replicas on disk."""
    ring = cluster.ring("object")
    part, nodes = ring.get_nodes(account, container, obj)
    h = ring.hash_path(account, container, obj).hex()
    return [(cluster.node_for(d), d, cluster.node_for(d).dev_path(d["device"]) / "objects"
             / str(part) / h[-3:] / h) for d in nodes]


def has_data(path: Path) -> bool:
    return path.is_dir() and any(n.endswith(".data") for n in os.listdir(path))


def test_kill_node_during_1000_puts_then_replicator_restores_three_replicas(rig):
    cluster, cloud, acct = rig
    c = "kill"
    assert acct.request("PUT", f"/{c}").status_code == 201
    victim = cluster.nodes[1]
    acked: dict[str, bytes] = {}
    statuses: dict[int, int] = {}

    async def load():
        names = iter(range(1000))
        done = 0
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=16)) as client:
            async def worker():
                nonlocal done
                for i in names:
                    name = f"o{i:04d}"
                    body = f"{name}:{uuid.uuid4().hex}".encode()
                    try:
                        r = await client.put(f"{acct.url}/{c}/{name}", content=body,
                                             headers={"X-Auth-Token": acct.token})
                        status = r.status_code
                    except httpx.HTTPError:
                        status = 0
                    statuses[status] = statuses.get(status, 0) + 1
                    if status == 201:
                        acked[name] = body
                    done += 1
                    if done == 300:
                        os.kill(victim.proc.pid, 9)  # SIGKILL mid-run

            await asyncio.gather(*(worker() for _ in range(16)))

    started = time.monotonic()
    asyncio.run(load())
    victim.proc.wait(5)
    victim.proc = None
    assert len(acked) >= 990, statuses  # a quorum survives one node: (nearly) all succeed
    # every acknowledged object is readable, with its bytes, while the node is down
    with httpx.Client(timeout=30) as client:
        for name, body in acked.items():
            r = client.get(f"{acct.url}/{c}/{name}", headers={"X-Auth-Token": acct.token})
            assert r.status_code == 200 and r.content == body, name
    missing_before = sum(1 for n in acked
                         if not all(has_data(p) for _, _, p in replica_files(cluster, f"AUTH_{acct.project_id}", c, n)))
    assert missing_before > 0  # the dead node's replicas really were missing
    cluster.start_node(victim)
    for _ in range(3):
        run_daemon(cluster, "replicator")
        missing = [n for n in acked
                   if not all(has_data(p) for _, _, p in replica_files(cluster, f"AUTH_{acct.project_id}", c, n))]
        if not missing:
            break
    assert missing == [], f"{len(missing)} objects still lack a primary replica"
    print(f"\n1000 PUTs with a node killed at 300: {statuses}; {missing_before} objects lacked a "
          f"replica, all restored; {time.monotonic() - started:.1f}s")


def _corrupt(path: Path, offset: int):
    [data_file] = [p for p in path.iterdir() if p.name.endswith(".data")]
    with open(data_file, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(8)
        fh.seek(offset)
        fh.write(bytes(x ^ 0xFF for x in b))


def test_flipped_bytes_never_served_quarantined_and_restored(rig):
    cluster, cloud, acct = rig
    c = "flip"
    assert acct.request("PUT", f"/{c}").status_code == 201
    body = os.urandom(3 << 20)
    small = os.urandom(2000)
    assert acct.request("PUT", f"/{c}/big", content=body).status_code == 201
    assert acct.request("PUT", f"/{c}/small", content=small).status_code == 201
    account = f"AUTH_{acct.project_id}"
    big_replicas = replica_files(cluster, account, c, "big")
    small_replicas = replica_files(cluster, account, c, "small")
    # corrupt the replica the proxy reads first in its third block (noticed mid-stream), the
    # second replica in its first block (noticed before any byte goes out), and a small one
    _corrupt(big_replicas[0][2], (2 << 20) + 5)
    _corrupt(big_replicas[1][2], 100)
    _corrupt(small_replicas[0][2], 10)
    want = hashlib.md5(body).hexdigest()
    # a range across the bad block: the proxy resumes on another replica where it broke
    r = acct.request("GET", f"/{c}/big", headers={"Range": f"bytes={1 << 20}-{(3 << 20) - 1}"})
    assert r.status_code == 206 and r.content == body[1 << 20:3 << 20]
    for _ in range(3):
        r = acct.request("GET", f"/{c}/big")
        assert r.status_code == 200 and hashlib.md5(r.content).hexdigest() == want
        assert acct.request("GET", f"/{c}/small").content == small
    r = acct.request("GET", f"/{c}/big", headers={"Range": "bytes=100-199"})
    assert r.content == body[100:200]
    # the reads quarantined the bad replicas; the auditor catches one no GET touched
    assert not has_data(big_replicas[0][2]) and not has_data(big_replicas[1][2])
    assert not has_data(small_replicas[0][2])
    other = acct.request("PUT", f"/{c}/quiet", content=os.urandom(5000))
    assert other.status_code == 201
    quiet = replica_files(cluster, account, c, "quiet")
    _corrupt(quiet[2][2], 50)
    node = quiet[2][0]
    r = httpx.post(f"http://127.0.0.1:{node.port}/recon/run/auditor", timeout=120)
    assert r.json()["quarantined"] >= 1
    assert not has_data(quiet[2][2])
    quarantined = [p for n in cluster.nodes for d in n.devices
                   for p in [n.dev_path(d) / "quarantined" / "objects"] if p.exists()]
    assert sum(len(os.listdir(p)) for p in quarantined) >= 4
    # the replicator restores good copies everywhere
    run_daemon(cluster, "replicator")
    for _, dev, path in big_replicas + small_replicas + quiet:
        assert has_data(path)
    for _ in range(3):
        assert hashlib.md5(acct.request("GET", f"/{c}/big").content).hexdigest() == want


def test_multi_range_get_restarts_on_another_replica_with_the_same_boundary(rig):
    """A replica found corrupt in the first block a multi-range answer needs has sent nothing
    of its body (the part heads wait for the checked chunk), so the proxy restarts the whole
    answer on another replica, which frames it with the boundary the client already got."""
    cluster, cloud, acct = rig
    c = "multi"
    assert acct.request("PUT", f"/{c}").status_code == 201
    body = os.urandom(3 << 20)
    assert acct.request("PUT", f"/{c}/o", content=body).status_code == 201
    replicas = replica_files(cluster, f"AUTH_{acct.project_id}", c, "o")
    _corrupt(replicas[0][2], 50)
    spans = [(10, 19), ((2 << 20) + 7, (2 << 20) + 20000)]
    r = acct.request("GET", f"/{c}/o",
                     headers={"Range": "bytes=" + ",".join(f"{a}-{b}" for a, b in spans)})
    assert r.status_code == 206
    ctype = r.headers["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    boundary = ctype.split("boundary=")[1].encode()
    parts = r.content.split(b"--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n" and len(parts) == len(spans) + 2
    for (first, last), part in zip(spans, parts[1:-1]):
        head, _, data = part.partition(b"\r\n\r\n")
        assert f"Content-Range: bytes {first}-{last}/{len(body)}".encode() in head
        assert data == body[first:last + 1] + b"\r\n"
    assert not has_data(replicas[0][2]), "the corrupt replica is quarantined"


def test_unmounted_device_writes_go_to_handoffs(rig):
    cluster, cloud, acct = rig
    c = "unmount"
    assert acct.request("PUT", f"/{c}").status_code == 201
    account = f"AUTH_{acct.project_id}"
    ring = cluster.ring("object")
    part, nodes = ring.get_nodes(account, c, "obj")
    first = nodes[0]
    (cluster.node_for(first).dev_path(first["device"]) / ".unmounted").touch()
    time.sleep(MOUNT_CHECK_CACHE)
    assert acct.request("PUT", f"/{c}/obj", content=b"to a handoff").status_code == 201
    h = ring.hash_path(account, c, "obj").hex()
    handoff_dirs = [cluster.node_for(d).dev_path(d["device"]) / "objects" / str(part) / h[-3:] / h
                    for d in ring.get_more_nodes(part)]
    assert any(has_data(p) for p in handoff_dirs)
    assert acct.request("GET", f"/{c}/obj").content == b"to a handoff"
    # device back: the replicator moves the handoff copy to it and drops the handoff
    (cluster.node_for(first).dev_path(first["device"]) / ".unmounted").unlink()
    time.sleep(MOUNT_CHECK_CACHE)
    run_daemon(cluster, "replicator")
    run_daemon(cluster, "replicator")
    primary_dir = cluster.node_for(first).dev_path(first["device"]) / "objects" / str(part) / h[-3:] / h
    assert has_data(primary_dir)
    assert not any(has_data(p) for p in handoff_dirs)
