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
