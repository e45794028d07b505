"""The image API in-process: records, listing, patch, data, refusals, members, tags, import."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import struct
import subprocess

import pytest

from stratus.image import formats
from tests.unit.image.conftest import PROJECT_A, PROJECT_B

PATCH = "application/openstack-images-v2.1-json-patch"


def qcow2_header(size: int = 1024 ** 3, backing: bool = False) -> bytes:
    head = bytearray(4096)
    head[0:4] = formats.QCOW2_MAGIC
    struct.pack_into(">IQI", head, 4, 2, 1024 if backing else 0, 8 if backing else 0)
    struct.pack_into(">I", head, 20, 16)
    struct.pack_into(">Q", head, 24, size)
    if backing:
        head[1024:1032] = b"/etc/pwd"
    return bytes(head)


async def test_discovery_without_token_and_without_redirects(api):
    for path in ("/", "/versions", "/v2", "/v2/"):
        r = await api.client.get(path)
        assert r.status_code == (300 if path == "/" else 200), path
        versions = r.json()["versions"]
        assert versions[0]["status"] == "CURRENT" and versions[0]["id"].startswith("v2.")
        assert versions[0]["links"][0]["href"].endswith("/v2/")
    assert (await api.client.get("/v2/images")).status_code == 401


async def test_create_show_defaults_and_properties(api):
    img = await api.create(name="one", os_distro="debian", hw_disk_bus="virtio", tags=["a", "b"])
    assert img["status"] == "queued" and img["visibility"] == "shared" and img["owner"] == PROJECT_A
    assert img["os_distro"] == "debian" and img["tags"] == ["a", "b"] and img["size"] is None
    r = await api.client.get(f"/v2/images/{img['id']}", headers=api.h("alice"))
    assert r.json() == img


@pytest.mark.parametrize("body,status,message", [
    ({"disk_format": "floppy"}, 400, "Invalid disk_format"),
    ({"container_format": "zip"}, 400, "Invalid container_format"),
    ({"status": "active"}, 400, "read-only"),
    ({"checksum": "x"}, 400, "read-only"),
    ({"size": 1}, 400, "read-only"),
    ({"hw_cpu_cores": 4}, 400, "must be a string"),
    ({"os_glance_importing": "x"}, 403, "reserved"),
    ({"min_ram": -1}, 400, "non-negative"),
    ({"visibility": "public"}, 403, "publicize_image"),
    ({"visibility": "everyone"}, 400, "Invalid visibility"),
    ({"id": "not-a-uuid"}, 400, "not a valid UUID"),
    ({"owner": PROJECT_B}, 403, "set_owner"),
])
async def test_create_refusals(api, body, status, message):
    r = await api.client.post("/v2/images", json=body, headers=api.h("alice"))
    assert r.status_code == status, r.text
    assert message in r.json()["message"]


async def test_reader_cannot_create_and_admin_can_publicize(api):
    r = await api.client.post("/v2/images", json={"name": "x"}, headers=api.h("reader"))
    assert r.status_code == 403
    img = await api.create("admin", visibility="public")
    assert img["visibility"] == "public"


async def test_duplicate_id_conflicts(api):
    img = await api.create()
    r = await api.client.post("/v2/images", json={"id": img["id"]}, headers=api.h("alice"))
    assert r.status_code == 409


async def test_pagination_filters_and_sorting(api):
    ids = []
    for i in range(30):
        img = await api.create(name=f"img-{i:02d}", tags=["even"] if i % 2 == 0 else [], flavor=str(i % 3))
        ids.append(img["id"])
    r = await api.client.get("/v2/images", headers=api.h("alice"))
    body = r.json()
    assert len(body["images"]) == 25 and body["next"].startswith("/v2/images?")
    assert body["images"][0]["name"] == "img-29"  # newest first by default
    r2 = await api.client.get(body["next"], headers=api.h("alice"))
    page2 = r2.json()
    assert len(page2["images"]) == 5 and "next" not in page2
    assert {i["id"] for i in body["images"] + page2["images"]} == set(ids)

    async def names(query):
        r = await api.client.get(f"/v2/images?{query}", headers=api.h("alice"))
        assert r.status_code == 200, r.text
        return [i["name"] for i in r.json()["images"]]

    assert await names("name=img-03") == ["img-03"]
    assert sorted(await names(f"id=in:{ids[1]},{ids[2]}")) == ["img-01", "img-02"]
    assert len(await names("tag=even")) == 15
    assert await names("flavor=1&sort=name:asc&limit=3") == ["img-01", "img-04", "img-07"]
    assert await names("sort_key=name&sort_dir=asc&limit=2") == ["img-00", "img-01"]
    # Keyset pagination on a non-unique key continues where the last page stopped.
    r = await api.client.get("/v2/images?sort_key=status&sort_dir=asc&limit=7", headers=api.h("alice"))
    seen = [i["id"] for i in r.json()["images"]]
    while "next" in r.json():
        r = await api.client.get(r.json()["next"], headers=api.h("alice"))
        seen += [i["id"] for i in r.json()["images"]]
    assert sorted(seen) == sorted(ids) and len(seen) == 30
    for bad in ("sort_key=bogus", "sort=name:sideways", "limit=-1", "size_min=big", "protected=maybe",
                "member_status=friends", "visibility=galactic", "created_at=gt:yesterday", "marker=nope"):
        r = await api.client.get(f"/v2/images?{bad}", headers=api.h("alice"))
        assert r.status_code == 400, bad


async def test_visibility_and_tenancy(api):
    private = await api.create("alice", name="alice-private", visibility="private")
    shared = await api.create("alice", name="alice-shared")
    public = await api.create("admin", name="public", visibility="public")
    community = await api.create("alice", name="alice-community", visibility="community")
    # Another project's private image: invisible, 404 on every verb.
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/file"), ("GET", "/members")):
        r = await api.client.request(method, f"/v2/images/{private['id']}{path}", headers=api.h("bob"))
        assert r.status_code == 404, (method, path)
    r = await api.patch(private["id"], [{"op": "replace", "path": "/name", "value": "x"}], who="bob")
    assert r.status_code == 404
    assert (await api.client.get(f"/v2/images/{shared['id']}", headers=api.h("bob"))).status_code == 404
    # Visible but not theirs: 403.
    assert (await api.client.delete(f"/v2/images/{public['id']}", headers=api.h("bob"))).status_code == 403
    assert (await api.client.delete(f"/v2/images/{community['id']}", headers=api.h("bob"))).status_code == 403
    listed = {i["name"] for i in (await api.client.get("/v2/images", headers=api.h("bob"))).json()["images"]}
    assert listed == {"public"}
    listed = {i["name"] for i in (await api.client.get("/v2/images?visibility=community",
                                                       headers=api.h("bob"))).json()["images"]}
    assert listed == {"alice-community"}
    listed = {i["name"] for i in (await api.client.get("/v2/images", headers=api.h("alice"))).json()["images"]}
    assert listed == {"alice-private", "alice-shared", "public", "alice-community"}
    # Members may not publicize.
    r = await api.patch(shared["id"], [{"op": "replace", "path": "/visibility", "value": "public"}])
    assert r.status_code == 403


async def test_json_patch(api):
    img = await api.create(name="p", os_type="linux")
    r = await api.patch(img["id"], [
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "add", "path": "/hw_qemu_guest_agent", "value": "yes"},
        {"op": "remove", "path": "/os_type"},
        {"op": "replace", "path": "/tags", "value": ["x", "y", "x"]},
        {"op": "replace", "path": "/min_ram", "value": 512},
        {"op": "replace", "path": "/protected", "value": True}])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "renamed" and body["hw_qemu_guest_agent"] == "yes" and "os_type" not in body
    assert body["tags"] == ["x", "y"] and body["min_ram"] == 512 and body["protected"] is True
    for ops, status in (
        ([{"op": "replace", "path": "/status", "value": "active"}], 400),
        ([{"op": "replace", "path": "/id", "value": "x"}], 400),
        ([{"op": "add", "path": "/checksum", "value": "x"}], 400),
        ([{"op": "remove", "path": "/name"}], 400),
        ([{"op": "remove", "path": "/nope"}], 409),
        ([{"op": "replace", "path": "/nope", "value": "x"}], 409),
        ([{"op": "move", "path": "/name", "from": "/x"}], 400),
        ([{"op": "add", "path": "/n", "value": 5}], 400),
        ([{"op": "add", "path": "/locations/-", "value": {}}], 400),
        ({"op": "add"}, 400),
    ):
        r = await api.patch(img["id"], ops)
        assert r.status_code == status, (ops, r.text)
    r = await api.client.patch(f"/v2/images/{img['id']}", json=[], headers=api.h("alice"))
    assert r.status_code == 415


async def test_upload_download_and_ranges(api):
    img = await api.create()
    data = os.urandom(3 * 1024 * 1024 + 123)
    r = await api.upload(img["id"], data)
    assert r.status_code == 204, r.text
    body = (await api.client.get(f"/v2/images/{img['id']}", headers=api.h("alice"))).json()
    assert body["status"] == "active" and body["size"] == len(data) and body["virtual_size"] == len(data)
    assert body["checksum"] == hashlib.md5(data).hexdigest()
    assert body["os_hash_algo"] == "sha512" and body["os_hash_value"] == hashlib.sha512(data).hexdigest()
    r = await api.client.get(f"/v2/images/{img['id']}/file", headers=api.h("alice"))
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-md5"] == body["checksum"] and int(r.headers["content-length"]) == len(data)
    for rng, expect in (("bytes=0-9", data[:10]), ("bytes=100-", data[100:]), ("bytes=-5", data[-5:])):
        r = await api.client.get(f"/v2/images/{img['id']}/file", headers=api.h("alice", Range=rng))
        assert r.status_code == 206 and r.content == expect, rng
    for rng in ("bytes=99999999-", "items=0-1", "bytes=0-1,4-5", "bytes=x-y"):
        r = await api.client.get(f"/v2/images/{img['id']}/file", headers=api.h("alice", Range=rng))
        assert r.status_code == 416, rng
    # Upload to an active image: 409.
    assert (await api.upload(img["id"], b"again")).status_code == 409
    assert api.stored_files() == [img["id"]]
    # Queued image: no data yet → 204.
    empty = await api.create()
    assert (await api.client.get(f"/v2/images/{empty['id']}/file", headers=api.h("alice"))).status_code == 204
    r = await api.client.put(f"/v2/images/{empty['id']}/file", content=b"x",
                             headers=api.h("alice", **{"Content-Type": "text/plain"}))
    assert r.status_code == 415


async def test_bad_format_leaves_image_queued_and_no_data(api):
    img = await api.create(disk_format="qcow2")
    r = await api.upload(img["id"], b"\0" * 5000)
    assert r.status_code == 400 and "raw data" in r.json()["message"]
    bad = await api.create(disk_format="qcow2")
    r = await api.upload(bad["id"], qcow2_header(backing=True))
    assert r.status_code == 400 and "backing file" in r.json()["message"]
    disguised = await api.create(disk_format="raw")
    r = await api.upload(disguised["id"], qcow2_header())
    assert r.status_code == 400 and "disk_format=qcow2" in r.json()["message"]
    huge = await api.create(disk_format="qcow2")
    r = await api.upload(huge["id"], qcow2_header(size=1024 ** 5))
    assert r.status_code == 400 and "over the limit" in r.json()["message"]
    for i in (img, bad, disguised, huge):
        body = (await api.client.get(f"/v2/images/{i['id']}", headers=api.h("alice"))).json()
        assert body["status"] == "queued" and body["size"] is None
    assert api.stored_files() == []
    ok = await api.create(disk_format="qcow2")
    assert (await api.upload(ok["id"], qcow2_header())).status_code == 204
    body = (await api.client.get(f"/v2/images/{ok['id']}", headers=api.h("alice"))).json()
    assert body["virtual_size"] == 1024 ** 3 and body["size"] == 4096


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img (qemu-utils) to make a vmdk")
async def test_vmdk_virtual_size_from_header(api, tmp_path):
    path = tmp_path / "d.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(path), "100M"], check=True)
    img = await api.create(disk_format="vmdk")
    assert (await api.upload(img["id"], path.read_bytes())).status_code == 204
    body = (await api.client.get(f"/v2/images/{img['id']}", headers=api.h("alice"))).json()
    assert body["virtual_size"] == 100 * 1024 ** 2


async def test_client_disconnect_mid_upload_leaves_queued_and_nothing_stored(api):
    img = await api.create()
    chunks = [os.urandom(256 * 1024) for _ in range(6)]
    messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    messages.append({"type": "http.disconnect"})
    sent = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "PUT", "path": f"/v2/images/{img['id']}/file", "root_path": "",
             "raw_path": f"/v2/images/{img['id']}/file".encode(), "query_string": b"", "scheme": "http",
             "server": ("test", 80), "client": ("127.0.0.1", 5), "http_version": "1.1",
             "headers": [(b"x-auth-token", b"alice"), (b"content-type", b"application/octet-stream"),
                         (b"host", b"test")]}
    await api.app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    body = (await api.client.get(f"/v2/images/{img['id']}", headers=api.h("alice"))).json()
    assert body["status"] == "queued" and body["size"] is None
    assert api.stored_files() == []
    # And the image still takes a complete upload afterwards.
    assert (await api.upload(img["id"], b"".join(chunks))).status_code == 204


async def test_quotas(make_api):
    api = await make_api(image_count_total=2, image_size_total=3 * 1024 * 1024)
    a = await api.create()
    await api.create()
    r = await api.client.post("/v2/images", json={"name": "third"}, headers=api.h("alice"))
    assert r.status_code == 413 and "image_count_total" in r.json()["message"]
    # Bob has his own quota.
    await api.create("bob")
    assert (await api.upload(a["id"], os.urandom(2 * 1024 * 1024))).status_code == 204
    r = await api.client.get("/v2/info/usage", headers=api.h("alice"))
    usage = r.json()["usage"]
    assert usage["image_count_total"] == {"limit": 2, "usage": 2}
    assert usage["image_size_total"] == {"limit": 3 * 1024 * 1024, "usage": 2 * 1024 * 1024}
    images = (await api.client.get("/v2/images", headers=api.h("alice"))).json()["images"]
    second = next(i for i in images if i["id"] != a["id"])
    r = await api.upload(second["id"], os.urandom(2 * 1024 * 1024))
    assert r.status_code == 413 and "image_size_total" in r.json()["message"]
    body = (await api.client.get(f"/v2/images/{second['id']}", headers=api.h("alice"))).json()
    assert body["status"] == "queued"
    # Refused before reading the body when the client announces the size.
    r = await api.client.put(f"/v2/images/{second['id']}/file", content=b"x", headers=api.h(
        "alice", **{"Content-Type": "application/octet-stream", "X-OpenStack-Image-Size": str(10 ** 9)}))
    assert r.status_code == 413
    assert api.stored_files() == [a["id"]]


async def test_delete_protected_and_data_removed(api):
    img = await api.create(protected=True)
    await api.upload(img["id"], b"data")
    r = await api.client.delete(f"/v2/images/{img['id']}", headers=api.h("alice"))
    assert r.status_code == 403 and "protected" in r.json()["message"]
    await api.patch(img["id"], [{"op": "replace", "path": "/protected", "value": False}])
    assert (await api.client.delete(f"/v2/images/{img['id']}", headers=api.h("alice"))).status_code == 204
    assert (await api.client.get(f"/v2/images/{img['id']}", headers=api.h("alice"))).status_code == 404
    assert api.stored_files() == []


async def test_deactivate_reactivate(api):
    img = await api.create("admin", visibility="public")
    r = await api.client.post(f"/v2/images/{img['id']}/actions/deactivate", headers=api.h("admin"))
    assert r.status_code == 403  # queued images cannot be deactivated
    await api.upload(img["id"], b"bytes", who="admin")
    assert (await api.client.post(f"/v2/images/{img['id']}/actions/deactivate",
                                  headers=api.h("bob"))).status_code == 403
    assert (await api.client.post(f"/v2/images/{img['id']}/actions/deactivate",
                                  headers=api.h("admin"))).status_code == 204
    assert (await api.client.get(f"/v2/images/{img['id']}/file", headers=api.h("bob"))).status_code == 403
    assert (await api.client.post(f"/v2/images/{img['id']}/actions/reactivate",
                                  headers=api.h("admin"))).status_code == 204
    r = await api.client.get(f"/v2/images/{img['id']}/file", headers=api.h("bob"))
    assert r.status_code == 200 and r.content == b"bytes"


async def test_tags(api):
    img = await api.create()
    assert (await api.client.put(f"/v2/images/{img['id']}/tags/blue", headers=api.h("alice"))).status_code == 204
    assert (await api.client.put(f"/v2/images/{img['id']}/tags/blue", headers=api.h("alice"))).status_code == 204
    assert (await api.client.get(f"/v2/images/{img['id']}", headers=api.h("alice"))).json()["tags"] == ["blue"]
    assert (await api.client.put(f"/v2/images/{img['id']}/tags/red", headers=api.h("bob"))).status_code == 404
    assert (await api.client.delete(f"/v2/images/{img['id']}/tags/blue", headers=api.h("alice"))).status_code == 204
    assert (await api.client.delete(f"/v2/images/{img['id']}/tags/blue", headers=api.h("alice"))).status_code == 404


async def test_members(api):
    img = await api.create(name="to-share")
    private = await api.create(name="private", visibility="private")
    url = f"/v2/images/{img['id']}/members"
    r = await api.client.post(f"/v2/images/{private['id']}/members", json={"member": PROJECT_B},
                              headers=api.h("alice"))
    assert r.status_code == 403 and "shared" in r.json()["message"]
    assert (await api.client.post(url, json={"member": PROJECT_B}, headers=api.h("bob"))).status_code == 404
    r = await api.client.post(url, json={"member": PROJECT_B}, headers=api.h("alice"))
    assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["member_id"] == PROJECT_B
    assert (await api.client.post(url, json={"member": PROJECT_B}, headers=api.h("alice"))).status_code == 409
    # Pending: Bob can see it by id but not in his default list.
    assert (await api.client.get(f"/v2/images/{img['id']}", headers=api.h("bob"))).status_code == 200
    names = [i["name"] for i in (await api.client.get("/v2/images", headers=api.h("bob"))).json()["images"]]
    assert names == []
    names = [i["name"] for i in (await api.client.get("/v2/images?member_status=pending",
                                                      headers=api.h("bob"))).json()["images"]]
    assert names == ["to-share"]
    # Only the member accepts; the owner cannot accept for them; the member cannot delete.
    r = await api.client.put(f"{url}/{PROJECT_B}", json={"status": "accepted"}, headers=api.h("alice"))
    assert r.status_code == 403
    r = await api.client.put(f"{url}/{PROJECT_B}", json={"status": "maybe"}, headers=api.h("bob"))
    assert r.status_code == 400
    r = await api.client.put(f"{url}/{PROJECT_B}", json={"status": "accepted"}, headers=api.h("bob"))
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    names = [i["name"] for i in (await api.client.get("/v2/images", headers=api.h("bob"))).json()["images"]]
    assert names == ["to-share"]
    members = (await api.client.get(url, headers=api.h("bob"))).json()["members"]
    assert [m["member_id"] for m in members] == [PROJECT_B]
    assert (await api.client.get(f"{url}/{PROJECT_B}", headers=api.h("bob"))).status_code == 200
    assert (await api.client.delete(f"{url}/{PROJECT_B}", headers=api.h("bob"))).status_code == 403
    assert (await api.client.delete(f"{url}/{PROJECT_B}", headers=api.h("alice"))).status_code == 204
    assert (await api.client.get(f"/v2/images/{img['id']}", headers=api.h("bob"))).status_code == 404
    assert (await api.client.get(f"{url}/{PROJECT_B}", headers=api.h("alice"))).status_code == 404


async def _wait_status(api, image_id, status, who="alice"):
    for _ in range(200):
        body = (await api.client.get(f"/v2/images/{image_id}", headers=api.h(who))).json()
        if body["status"] == status:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"image stayed {body['status']}, expected {status}")


async def test_stage_and_glance_direct_import(api):
    img = await api.create()
    data = os.urandom(1024 * 1024 + 5)
    r = await api.client.put(f"/v2/images/{img['id']}/stage", content=data,
                             headers=api.h("alice", **{"Content-Type": "application/octet-stream"}))
    assert r.status_code == 204, r.text
    assert (await api.client.get(f"/v2/images/{img['id']}", headers=api.h("alice"))).json()["status"] == "uploading"
    r = await api.client.post(f"/v2/images/{img['id']}/import", json={"method": {"name": "web-download",
                                                                             "uri": "http://127.0.0.1/x"}},
                              headers=api.h("alice"))
    assert r.status_code == 400 and "not available" in r.json()["message"]
    r = await api.client.post(f"/v2/images/{img['id']}/import", json={"method": {"name": "glance-direct"}},
                              headers=api.h("alice"))
    assert r.status_code == 202
    body = await _wait_status(api, img["id"], "active")
    assert body["checksum"] == hashlib.md5(data).hexdigest()
    r = await api.client.get(f"/v2/images/{img['id']}/file", headers=api.h("alice"))
    assert r.content == data
    assert list((api.tmp_path / "images-staging").iterdir()) == []
    r = await api.client.get("/v2/info/import", headers=api.h("alice"))
    assert r.json()["import-methods"]["value"] == ["glance-direct"]


async def test_web_download_only_from_allowed_hosts(make_api, tmp_path):
    import http.server
    import threading

    data = os.urandom(300000)
    (tmp_path / "served.img").write_bytes(data)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = await make_api(web_download_allowed_hosts=["127.0.0.1"])
        r = await api.client.post("/v2/images", json={"disk_format": "raw", "container_format": "bare"},
                                  headers=api.h("alice"))
        assert r.headers["openstack-image-import-methods"] == "glance-direct,web-download"
        img = r.json()
        url = f"/v2/images/{img['id']}/import"
        r = await api.client.post(url, json={"method": {"name": "web-download", "uri": "http://localhost/x"}},
                                  headers=api.h("alice"))
        assert r.status_code == 403 and "not allowed" in r.json()["message"]
        r = await api.client.post(url, json={"method": {"name": "web-download", "uri": "file:///etc/passwd"}},
                                  headers=api.h("alice"))
        assert r.status_code == 400
        port = server.server_address[1]
        r = await api.client.post(url, json={"method": {"name": "web-download",
                                                        "uri": f"http://127.0.0.1:{port}/served.img"}},
                                  headers=api.h("alice"))
        assert r.status_code == 202, r.text
        body = await _wait_status(api, img["id"], "active")
        assert body["os_hash_value"] == hashlib.sha512(data).hexdigest() and body["size"] == len(data)
        # A failed download puts the image back to queued and says so.
        other = await api.create()
        r = await api.client.post(f"/v2/images/{other['id']}/import", json={"method": {
            "name": "web-download", "uri": f"http://127.0.0.1:{port}/missing.img"}}, headers=api.h("alice"))
        assert r.status_code == 202
        for _ in range(200):
            body = (await api.client.get(f"/v2/images/{other['id']}", headers=api.h("alice"))).json()
            if body.get("os_glance_failed_import"):
                break
            await asyncio.sleep(0.02)
        assert body["status"] == "queued" and body["os_glance_failed_import"] == "web-download"
    finally:
        server.shutdown()
        server.server_close()


async def test_schemas_and_info(api):
    for name in ("image", "images", "member", "members"):
        r = await api.client.get(f"/v2/schemas/{name}", headers=api.h("bob"))
        assert r.status_code == 200 and r.json()["name"] == name
    assert (await api.client.get("/v2/schemas/image")).status_code == 401
    r = await api.client.get("/v2/info/stores", headers=api.h("bob"))
    assert r.json()["stores"] == [{"id": "file", "description": "Images on the local filesystem", "default": True}]
    assert (await api.client.get("/v2/info/stores/detail", headers=api.h("bob"))).status_code == 403
    assert (await api.client.get("/v2/info/stores/detail", headers=api.h("admin"))).status_code == 200


async def test_upload_checked_against_announced_digests(api):
    data = os.urandom(200000)
    wrong = await api.create(**{"owner_specified.openstack.md5": hashlib.md5(b"other").hexdigest()})
    r = await api.upload(wrong["id"], data)
    assert r.status_code == 400 and "owner_specified.openstack.md5" in r.json()["message"]
    body = (await api.client.get(f"/v2/images/{wrong['id']}", headers=api.h("alice"))).json()
    assert body["status"] == "queued" and api.stored_files() == []
    right = await api.create(**{"owner_specified.openstack.md5": hashlib.md5(data).hexdigest(),
                                "owner_specified.openstack.sha256": hashlib.sha256(data).hexdigest().upper()})
    assert (await api.upload(right["id"], data)).status_code == 204
    bad_sha = await api.create(**{"owner_specified.openstack.sha256": hashlib.sha256(b"x").hexdigest(),
                                  "owner_specified.openstack.md5": ""})
    r = await api.upload(bad_sha["id"], data)
    assert r.status_code == 400 and "sha256" in r.json()["message"]


async def test_corrupt_stored_data_is_never_served_complete(api):
    img = await api.create()
    data = os.urandom(3 * 1024 * 1024)
    assert (await api.upload(img["id"], data)).status_code == 204
    path = api.tmp_path / "images" / img["id"]
    with open(path, "r+b") as f:
        f.seek(2 * 1024 * 1024)
        f.write(b"\xff" * 16)
    with pytest.raises(RuntimeError, match="does not match its checksum"):
        await api.client.get(f"/v2/images/{img['id']}/file", headers=api.h("alice"))
    # Ranges are served as stored (clients verify whole images only).
    r = await api.client.get(f"/v2/images/{img['id']}/file", headers=api.h("alice", Range="bytes=0-9"))
    assert r.status_code == 206 and r.content == data[:10]


async def test_store_failures_become_clear_errors(api, monkeypatch):
    import errno as errno_mod

    from stratus.image.drivers.file import FileWriter

    img = await api.create()

    def full(self, data):
        raise OSError(errno_mod.ENOSPC, "No space left on device")

    monkeypatch.setattr(FileWriter, "write_blocking", full)
    r = await api.upload(img["id"], os.urandom(100000))
    assert r.status_code == 413 and "store is full" in r.json()["message"]

    def broken(self, data):
        raise OSError(errno_mod.EIO, "I/O error")

    monkeypatch.setattr(FileWriter, "write_blocking", broken)
    r = await api.upload(img["id"], os.urandom(100000))
    assert r.status_code == 503 and "store failed" in r.json()["message"]
    body = (await api.client.get(f"/v2/images/{img['id']}", headers=api.h("alice"))).json()
    assert body["status"] == "queued" and api.stored_files() == []


async def test_every_image_endpoint_refuses_another_project(api):
    img = await api.create("alice", name="alices", visibility="private")
    iid = img["id"]
    put = {"Content-Type": "application/octet-stream"}
    calls = [
        ("GET", f"/v2/images/{iid}", None, {}), ("DELETE", f"/v2/images/{iid}", None, {}),
        ("PUT", f"/v2/images/{iid}/file", b"x", put), ("GET", f"/v2/images/{iid}/file", None, {}),
        ("HEAD", f"/v2/images/{iid}/file", None, {}), ("PUT", f"/v2/images/{iid}/stage", b"x", put),
        ("POST", f"/v2/images/{iid}/import", b'{"method": {"name": "glance-direct"}}',
         {"Content-Type": "application/json"}),
        ("POST", f"/v2/images/{iid}/actions/deactivate", None, {}),
        ("POST", f"/v2/images/{iid}/actions/reactivate", None, {}),
        ("PUT", f"/v2/images/{iid}/tags/x", None, {}), ("DELETE", f"/v2/images/{iid}/tags/x", None, {}),
        ("GET", f"/v2/images/{iid}/members", None, {}),
        ("POST", f"/v2/images/{iid}/members", b'{"member": "%s"}' % PROJECT_B.encode(),
         {"Content-Type": "application/json"}),
        ("GET", f"/v2/images/{iid}/members/{PROJECT_B}", None, {}),
        ("PUT", f"/v2/images/{iid}/members/{PROJECT_B}", b'{"status": "accepted"}',
         {"Content-Type": "application/json"}),
        ("DELETE", f"/v2/images/{iid}/members/{PROJECT_B}", None, {}),
    ]
    for method, path, content, headers in calls:
        r = await api.client.request(method, path, content=content, headers=api.h("bob", **headers))
        assert r.status_code == 404, (method, path, r.status_code)
    r = await api.patch(iid, [{"op": "add", "path": "/x", "value": "y"}], who="bob")
    assert r.status_code == 404
    body = (await api.client.get(f"/v2/images/{iid}", headers=api.h("alice"))).json()
    assert body["status"] == "queued" and body["tags"] == [] and "x" not in body


def _upload_scope(image_id: str) -> dict:
    path = f"/v2/images/{image_id}/file"
    return {"type": "http", "method": "PUT", "path": path, "root_path": "", "raw_path": path.encode(),
            "query_string": b"", "scheme": "http", "server": ("test", 80), "client": ("127.0.0.1", 5),
            "http_version": "1.1", "headers": [(b"x-auth-token", b"alice"), (b"host", b"test"),
                                               (b"content-type", b"application/octet-stream")]}


async def test_concurrent_upload_conflicts_and_delete_during_upload_cleans_up(api):
    img = await api.create()
    gate = asyncio.Event()
    first_part = os.urandom(2 * 1024 * 1024)
    sent = []
    messages = [{"type": "http.request", "body": first_part, "more_body": True}]

    async def receive():
        if messages:
            return messages.pop(0)
        await gate.wait()
        return {"type": "http.request", "body": b"tail", "more_body": False}

    async def send(message):
        sent.append(message)

    upload = asyncio.create_task(api.app(_upload_scope(img["id"]), receive, send))
    for _ in range(200):
        if (await api.client.get(f"/v2/images/{img['id']}", headers=api.h("alice"))).json()["status"] == "saving":
            break
        await asyncio.sleep(0.01)
    # A second upload while the first streams: 409.
    assert (await api.upload(img["id"], b"other")).status_code == 409
    # Delete the image under the running upload; when it completes, its data is removed.
    assert (await api.client.delete(f"/v2/images/{img['id']}", headers=api.h("alice"))).status_code == 204
    gate.set()
    await upload
    assert sent[0]["status"] == 409
    assert api.stored_files() == []
