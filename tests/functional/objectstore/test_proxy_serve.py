"""`stratus serve objectstore` as its own process (what bench/objectstore.py measures): the
proxy against the nodes of a `stratus up`, with tokens checked by that cloud's identity."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cloudfixture import destroy_cloud, start_cloud

from .proxyfixture import login, make_project_user, served_proxy, token_and_project

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def served():
    state = Path(tempfile.mkdtemp(prefix="stratus-osserve-"))
    cloud = start_cloud(state, services=["identity", "objectstore"])
    try:
        with served_proxy(cloud, state) as (proxy, url):
            yield cloud, proxy, url
    finally:
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)


def test_objects_whole_and_ranged_through_the_served_proxy(served):
    cloud, _, url = served
    token, project = token_and_project(cloud, "demo")
    base = f"{url}/v1/AUTH_{project}/serve-{uuid.uuid4().hex[:6]}"
    h = {"X-Auth-Token": token}
    with httpx.Client(timeout=60, headers=h) as c:
        assert c.put(base).status_code == 201
        big = os.urandom(5 * 1024 * 1024 + 777)  # several of the client's 1 MiB body buffers
        assert c.put(f"{base}/big", content=big).status_code == 201
        assert c.put(f"{base}/small", content=b"s" * 4096).status_code == 201
        for _ in range(2):  # the second read reuses the proxy's keep-alive node connections
            r = c.get(f"{base}/big")
            assert r.status_code == 200 and r.content == big
        r = c.get(f"{base}/big", headers={"Range": "bytes=1000000-3100000"})
        assert r.status_code == 206 and r.content == big[1000000:3100001]
        r = c.get(f"{base}/big", headers={"Range": "bytes=-10"})
        assert r.status_code == 206 and r.content == big[-10:]
        r = c.head(f"{base}/big")
        assert r.status_code == 200 and r.headers["content-length"] == str(len(big))
        assert c.get(f"{base}/small").content == b"s" * 4096
        assert c.get(f"{base}/missing").status_code == 404


def test_large_object_relayed_by_splice_resumes_past_corrupt_replicas(served):
    """A whole object of several MiB goes from the node's socket to the client's by splice;
    when a replica turns out corrupt mid-body (its node cuts the body short), the relay goes
    on from another replica where it broke: the client gets every byte, right."""
    from stratus.objectstore.ring import Ring

    cloud, proxy, url = served
    token, project = token_and_project(cloud, "demo")
    container = f"splice-{uuid.uuid4().hex[:6]}"
    base = f"{url}/v1/AUTH_{project}/{container}"
    body = os.urandom((9 << 20) + 4321)
    with httpx.Client(timeout=60, headers={"X-Auth-Token": token}) as c:
        assert c.put(base).status_code == 201
        assert c.put(f"{base}/big", content=body).status_code == 201
        ring = Ring.load(cloud.state_dir / "objectstore" / "rings" / "object.ring.gz")
        part, devs = ring.get_nodes(f"AUTH_{project}", container, "big")
        h = ring.hash_path(f"AUTH_{project}", container, "big").hex()
        files = [next((cloud.state_dir / "objectstore" / "nodes" / d["device"] / "objects"
                       / str(part) / h[-3:] / h).glob("*.data")) for d in devs]
        # two replicas go bad at different blocks: whichever the proxy reads first breaks
        # part-way, and at least one resumption lands on a good stretch of another
        for path, offset in ((files[0], (6 << 20) + 17), (files[1], (2 << 20) + 3)):
            with open(path, "r+b") as fh:
                fh.seek(offset)
                fh.write(b"\xff\x00\xff\x00")
        # a single range of 7 MiB (relayed by splice too) across the first replica's bad
        # block resumes on the next replica from the byte where it broke
        r = c.get(f"{base}/big", headers={"Range": f"bytes={1 << 20}-{(8 << 20) - 1}"})
        assert r.status_code == 206 and r.content == body[1 << 20:8 << 20]
        assert not any(files[0].parent.glob("*.data")), "quarantined by that read"
        r = c.get(f"{base}/big")
        assert r.status_code == 200 and len(r.content) == len(body) and r.content == body
        # the good replica alone is left: the next read is whole again, from it
        r = c.get(f"{base}/big")
        assert r.status_code == 200 and r.content == body


def test_other_project_and_anonymous_are_refused(served):
    cloud, _, url = served
    token, project = token_and_project(cloud, "demo")
    base = f"{url}/v1/AUTH_{project}/guarded-{uuid.uuid4().hex[:6]}"
    assert httpx.put(base, headers={"X-Auth-Token": token}).status_code == 201
    assert httpx.put(f"{base}/o", content=b"x", headers={"X-Auth-Token": token}).status_code == 201
    other_project, user, password = make_project_user(cloud)
    other, _ = login(cloud, user, password, other_project)
    assert httpx.get(f"{base}/o", headers={"X-Auth-Token": other}).status_code == 403
    assert httpx.get(f"{base}/o", headers={"X-Auth-Token": "bogus"}).status_code == 401
    assert httpx.get(f"{base}/o").status_code == 401


def test_the_proxy_process_leaves_the_database_layer_out(served):
    _, proxy, _ = served
    maps = Path(f"/proc/{proxy.pid}/maps").read_text()
    # SQLAlchemy's compiled extensions are mapped as soon as it is imported
    assert "sqlalchemy" not in maps
    assert "uvloop" in maps


def test_header_names_are_spelled_as_swift_does(served):
    """Upstream's functional tests compare metadata names as sent (X-Object-Meta-Color)."""
    cloud, _, url = served
    token, project = token_and_project(cloud, "demo")
    base = f"{url}/v1/AUTH_{project}/case-{uuid.uuid4().hex[:6]}"
    h = {"X-Auth-Token": token}
    assert httpx.put(base, headers=h).status_code == 201
    assert httpx.put(f"{base}/o", content=b"x", headers=dict(
        h, **{"x-object-meta-color": "blUe"})).status_code == 201
    r = httpx.get(f"{base}/o", headers=h)
    names = [name for name, _ in r.headers.raw]
    assert b"X-Object-Meta-Color" in names and b"Content-Length" in names and b"Etag" in names
    assert r.headers["x-object-meta-color"] == "blUe"
