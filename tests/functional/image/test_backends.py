"""The image service's SQL on the production back ends: listing, filters, keyset paging,
patches, members, quotas and data, on MariaDB and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.cloudfixture import destroy_cloud, start_cloud
from tests.functional.image.conftest import add_project_user, api

pytestmark = pytest.mark.backend

PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
PUT = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module", params=["mariadb", "postgresql"])
def bcloud(request):
    state = Path(tempfile.mkdtemp(prefix=f"stratus-image-{request.param}-"))
    try:
        c = start_cloud(state, services=["identity", "image"], backend=request.param,
                        extra_env={"STRATUS_IMAGE__REGISTER_TEST_IMAGE": "false",
                                   "STRATUS_IMAGE__IMAGE_COUNT_TOTAL": "40"}, timeout=180)
    except RuntimeError as exc:
        shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"{request.param} cloud did not start (is the server running?): {exc}")
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def test_records_listing_and_data(bcloud):
    c = bcloud
    with api(c) as http:
        ids = []
        for i in range(30):
            r = http.post("/v2/images", json={"name": f"b-{i:02d}" if i % 5 else None, "disk_format": "raw",
                                              "container_format": "bare", "tags": ["t"] if i % 2 else [],
                                              "flavor": str(i % 3)})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        seen = []
        r = http.get("/v2/images", params={"sort": "name:asc,size:desc", "limit": 7})
        while True:
            assert r.status_code == 200, r.text
            seen += [i["id"] for i in r.json()["images"]]
            if "next" not in r.json():
                break
            r = http.get(r.json()["next"])
        assert sorted(seen) == sorted(ids)
        assert len(http.get("/v2/images", params={"tag": "t", "flavor": "1"}).json()["images"]) == 5
        names = [i["name"] for i in http.get("/v2/images", params={"name": "in:b-01,b-02"}).json()["images"]]
        assert sorted(names) == ["b-01", "b-02"]
        assert http.get("/v2/images", params={"created_at": "gte:2000-01-01T00:00:00Z"}).status_code == 200
        r = http.patch(f"/v2/images/{ids[1]}", headers=PATCH, json=[
            {"op": "add", "path": "/os_distro", "value": "x" * 5000}, {"op": "remove", "path": "/flavor"},
            {"op": "replace", "path": "/tags", "value": ["a", "b"]}])
        assert r.status_code == 200 and r.json()["os_distro"] == "x" * 5000 and "flavor" not in r.json()
        data = os.urandom(1024 * 1024 + 9)
        assert http.put(f"/v2/images/{ids[1]}/file", content=data, headers=PUT).status_code == 204
        body = http.get(f"/v2/images/{ids[1]}").json()
        assert body["status"] == "active" and body["os_hash_value"] == hashlib.sha512(data).hexdigest()
        assert http.get(f"/v2/images/{ids[1]}/file").content == data
        assert http.get("/v2/images", params={"size_min": 1024 * 1024}).json()["images"][0]["id"] == ids[1]
        assert http.get("/v2/info/usage").json()["usage"]["image_size_total"]["usage"] == len(data)
        for image_id in ids:
            assert http.delete(f"/v2/images/{image_id}").status_code == 204


def test_members_and_tenancy(bcloud):
    c = bcloud
    other, other_project = add_project_user(c, "bm")
    with api(c) as http:
        img = http.post("/v2/images", json={"name": "to-share"}).json()
        private = http.post("/v2/images", json={"name": "mine", "visibility": "private"}).json()
        assert http.post(f"/v2/images/{img['id']}/members", json={"member": other_project}).status_code == 200
    with api(c, other) as http:
        assert http.get(f"/v2/images/{private['id']}").status_code == 404
        assert http.get("/v2/images").json()["images"] == []
        r = http.put(f"/v2/images/{img['id']}/members/{other_project}", json={"status": "accepted"})
        assert r.status_code == 200
        assert [i["id"] for i in http.get("/v2/images").json()["images"]] == [img["id"]]
        assert http.delete(f"/v2/images/{img['id']}").status_code == 403
    with api(c) as http:
        assert http.delete(f"/v2/images/{img['id']}").status_code == 204
        assert http.delete(f"/v2/images/{private['id']}").status_code == 204
