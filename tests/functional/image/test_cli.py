"""The image service through the real `openstack` CLI (and httpx/openstacksdk for the bulk)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from urllib.parse import urlsplit

import pytest

from tests.functional.image.conftest import COUNT_QUOTA, MiB, add_project_user, api

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                    reason="needs qemu-img (Debian package qemu-utils) to make qcow2 images")


def test_discovery_answers_every_form_without_token(image_cloud):
    import httpx

    for path, status in (("/image", 300), ("/image/", 300), ("/image/versions", 200), ("/image/v2", 200),
                         ("/image/v2/", 200)):
        r = httpx.get(image_cloud.url + path, follow_redirects=False)
        assert r.status_code == status, path
        assert r.json()["versions"][0]["links"][0]["href"] == f"{image_cloud.url}/image/v2/"


def test_create_save_list_set_delete(image_cloud, tmp_path):
    c = image_cloud
    data = os.urandom(2 * MiB + 77)
    src = tmp_path / "disk.raw"
    src.write_bytes(data)
    img = c.osc(f"image create --file {src} --disk-format raw --container-format bare --property purpose=cli-test "
                f"cli-image", cloud="demo")
    assert img["status"] == "active" and img["size"] == len(data)
    assert img["checksum"] == hashlib.md5(data).hexdigest()
    out = tmp_path / "saved.raw"
    # The client verifies the download against os_hash_value / checksum itself.
    c.osc(f"image save --file {out} cli-image", cloud="demo")
    assert out.read_bytes() == data
    listed = c.osc("image list --property purpose=cli-test", cloud="demo")
    assert [i["Name"] for i in listed] == ["cli-image"]
    c.osc("image set --property os_distro=debian --min-ram 256 --name cli-renamed cli-image", cloud="demo", fmt_json=False)
    shown = c.osc("image show cli-renamed", cloud="demo")
    assert shown["min_ram"] == 256 and shown["properties"]["os_distro"] == "debian"
    assert shown["properties"]["purpose"] == "cli-test"
    assert hashlib.sha512(data).hexdigest() in str(shown)
    c.osc("image delete cli-renamed", cloud="demo")
    assert c.osc("image list --property purpose=cli-test", cloud="demo") == []
    images_dir = c.state_dir / "images"
    assert img["id"] not in os.listdir(images_dir)


@needs_qemu_img
def test_qcow2_virtual_size_and_backing_file_refused(image_cloud, tmp_path):
    c = image_cloud
    good = tmp_path / "good.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(good), "200M"], check=True)
    img = c.osc(f"image create --file {good} --disk-format qcow2 --container-format bare qcow-good", cloud="demo")
    assert img["virtual_size"] == 200 * MiB and img["status"] == "active"
    bad = tmp_path / "bad.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(good), "-F", "qcow2", str(bad)], check=True)
    proc = c.osc(f"image create --file {bad} --disk-format qcow2 --container-format bare qcow-bad", cloud="demo",
                 check=False)
    assert proc.returncode != 0 and "backing file" in proc.stderr + proc.stdout
    # (openstacksdk deletes the image it created when the upload fails.) Straight through the API the
    # image stays queued, with no data kept.
    with api(c) as http:
        queued = http.post("/v2/images", json={"name": "qcow-bad-api", "disk_format": "qcow2",
                                               "container_format": "bare"}).json()
        r = http.put(f"/v2/images/{queued['id']}/file", content=bad.read_bytes(),
                     headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 400 and "backing file" in r.json()["message"]
        shown = http.get(f"/v2/images/{queued['id']}").json()
        assert shown["status"] == "queued" and shown["size"] is None
        assert [f for f in os.listdir(c.state_dir / "images") if queued["id"] in f] == []
        http.delete(f"/v2/images/{queued['id']}")
    # A qcow2 declared as raw is refused too.
    proc = c.osc(f"image create --file {good} --disk-format raw --container-format bare qcow-as-raw",
                 cloud="demo", check=False)
    assert proc.returncode != 0 and "disk_format=qcow2" in proc.stderr + proc.stdout
    c.osc("image delete qcow-good", cloud="demo")


def test_refusals_through_the_api(image_cloud):
    c = image_cloud
    with api(c) as http:
        r = http.post("/v2/images", json={"name": "x", "disk_format": "floppy"})
        assert r.status_code == 400 and "disk_format" in r.json()["message"]
        img = http.post("/v2/images", json={"name": "refusals", "disk_format": "raw",
                                            "container_format": "bare"}).json()
        put = {"Content-Type": "application/octet-stream"}
        assert http.put(f"/v2/images/{img['id']}/file", content=b"first", headers=put).status_code == 204
        r = http.put(f"/v2/images/{img['id']}/file", content=b"second", headers=put)
        assert r.status_code == 409
        r = http.patch(f"/v2/images/{img['id']}", json=[{"op": "replace", "path": "/checksum", "value": "0"}],
                       headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
        assert r.status_code == 400 and "read-only" in r.json()["message"]
        r = http.get(f"/v2/images/{img['id']}/file", headers={"Range": "bytes=1-3"})
        assert r.status_code == 206 and r.content == b"irs" and r.headers["content-range"] == "bytes 1-3/5"
        assert http.delete(f"/v2/images/{img['id']}").status_code == 204


def test_tenancy_protected_and_publicize(image_cloud, tmp_path):
    c = image_cloud
    other, _ = add_project_user(c, "tenant")
    src = tmp_path / "small.raw"
    src.write_bytes(b"private bytes")
    img = c.osc(f"image create --file {src} --disk-format raw --container-format bare --private --protected "
                f"demo-private", cloud="demo")
    # Another project's private image: not found for them, whatever the verb.
    proc = c.osc(f"image show {img['id']}", cloud=other, check=False)
    assert proc.returncode != 0 and "No Image found" in proc.stderr
    proc = c.osc(f"image delete {img['id']}", cloud=other, check=False)
    assert proc.returncode != 0
    with api(c, other) as http:
        assert http.get(f"/v2/images/{img['id']}").status_code == 404
        assert http.delete(f"/v2/images/{img['id']}").status_code == 404
        assert http.get(f"/v2/images/{img['id']}/file").status_code == 404
    # Protected: even the owner cannot delete it until it is unprotected.
    proc = c.osc(f"image delete {img['id']}", cloud="demo", check=False)
    assert proc.returncode != 0 and "protected" in proc.stderr
    with api(c) as http:
        r = http.delete(f"/v2/images/{img['id']}")
        assert r.status_code == 403
    # Only admin publicizes.
    proc = c.osc(f"image set --public {img['id']}", cloud="demo", check=False, fmt_json=False)
    assert proc.returncode != 0 and "publicize" in proc.stderr
    c.osc(f"image set --public {img['id']}", cloud="admin", fmt_json=False)
    # Public now: the other project sees it but still cannot delete it.
    assert c.osc(f"image show {img['id']}", cloud=other)["visibility"] == "public"
    with api(c, other) as http:
        assert http.delete(f"/v2/images/{img['id']}").status_code == 403
    c.osc(f"image set --unprotected {img['id']}", cloud="demo", fmt_json=False)
    c.osc(f"image delete {img['id']}", cloud="demo")


def test_sharing_with_another_project(image_cloud, tmp_path):
    c = image_cloud
    other, other_project = add_project_user(c, "member")
    src = tmp_path / "shared.raw"
    src.write_bytes(os.urandom(4096))
    img = c.osc(f"image create --file {src} --disk-format raw --container-format bare --shared shared-img",
                cloud="demo")
    assert all(i["ID"] != img["id"] for i in c.osc("image list", cloud=other))
    member = c.osc(f"image add project shared-img {other_project} -f json", cloud="demo")
    assert member["status"] == "pending"
    members = c.osc("image member list shared-img", cloud="demo")
    assert [(m["Member ID"], m["Status"]) for m in members] == [(other_project, "pending")]
    # The member accepts (by id: it is not in their list yet), then sees it listed and can download it.
    c.osc(f"image set --accept {img['id']}", cloud=other, fmt_json=False)
    assert any(i["ID"] == img["id"] for i in c.osc("image list", cloud=other))
    out = tmp_path / "got.raw"
    c.osc(f"image save --file {out} {img['id']}", cloud=other)
    assert out.read_bytes() == src.read_bytes()
    # The member cannot delete or change it.
    assert c.osc(f"image delete {img['id']}", cloud=other, check=False).returncode != 0
    assert c.osc(f"image set --name stolen {img['id']}", cloud=other, check=False, fmt_json=False).returncode != 0
    c.osc(f"image remove project shared-img {other_project}", cloud="demo", fmt_json=False)
    assert c.osc(f"image show {img['id']}", cloud=other, check=False).returncode != 0
    c.osc("image delete shared-img", cloud="demo")


def test_quotas_refused_with_413(image_cloud, tmp_path):
    c = image_cloud
    who, _ = add_project_user(c, "quota")
    big = tmp_path / "big.raw"
    big.write_bytes(os.urandom(5 * MiB))
    c.osc(f"image create --file {big} --disk-format raw --container-format bare first", cloud=who)
    proc = c.osc(f"image create --file {big} --disk-format raw --container-format bare second", cloud=who,
                 check=False)
    assert proc.returncode != 0 and "image_size_total" in proc.stderr + proc.stdout
    with api(c, who) as http:
        # (openstacksdk deleted the image whose upload failed.)
        assert http.get("/v2/images", params={"name": "second"}).json()["images"] == []
        second = http.post("/v2/images", json={"name": "second", "disk_format": "raw",
                                               "container_format": "bare"}).json()
        # Streamed without a size announcement: refused once the quota is crossed.
        r = http.put(f"/v2/images/{second['id']}/file", content=iter([os.urandom(MiB)] * 5),
                     headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 413 and "image_size_total" in r.json()["message"]
        for i in range(COUNT_QUOTA - 2):
            assert http.post("/v2/images", json={"name": f"n{i}"}).status_code == 201
        r = http.post("/v2/images", json={"name": "one-too-many"})
        assert r.status_code == 413 and "image_count_total" in r.json()["message"]
        usage = http.get("/v2/info/usage").json()["usage"]
        assert usage["image_count_total"]["usage"] == COUNT_QUOTA
        assert usage["image_size_total"]["usage"] == 5 * MiB


def test_list_follows_next_links(image_cloud):
    c = image_cloud
    who, _ = add_project_user(c, "pager")
    with api(c, who) as http:
        ids = {http.post("/v2/images", json={"name": f"page-{i}", "tags": ["pager"]}).json()["id"]
               for i in range(27)}
        first = http.get("/v2/images").json()
        assert len(first["images"]) == 25 and first["next"].startswith("/v2/images?")
    listed = c.osc("image list --tag pager", cloud=who)
    assert {i["ID"] for i in listed} == ids
    conn = c.sdk(who)
    assert {i.id for i in conn.image.images(tag="pager")} == ids
    assert {i.id for i in conn.image.images(id=f"in:{','.join(sorted(ids)[:3])}")} == set(sorted(ids)[:3])


def test_client_disconnect_mid_upload(image_cloud):
    c = image_cloud
    with api(c) as http:
        img = http.post("/v2/images", json={"name": "cut", "disk_format": "raw", "container_format": "bare"}).json()
    token = c.token("demo")
    url = urlsplit(c.url)
    sock = socket.create_connection((url.hostname, url.port))
    head = (f"PUT /image/v2/images/{img['id']}/file HTTP/1.1\r\nHost: {url.netloc}\r\nX-Auth-Token: {token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {6 * MiB}\r\n\r\n")
    sock.sendall(head.encode())
    for _ in range(3):
        sock.sendall(os.urandom(MiB))
    with api(c) as http:
        deadline = time.monotonic() + 30
        while http.get(f"/v2/images/{img['id']}").json()["status"] != "saving":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sock.close()
        deadline = time.monotonic() + 30
        while (body := http.get(f"/v2/images/{img['id']}").json())["status"] != "queued":
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
        assert body["size"] is None and body["checksum"] is None
        assert [f for f in os.listdir(c.state_dir / "images") if img["id"] in f] == []
        # The same image takes a complete upload afterwards.
        r = http.put(f"/v2/images/{img['id']}/file", content=b"complete",
                     headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 204
        http.delete(f"/v2/images/{img['id']}")


def test_stage_and_import_with_the_sdk(image_cloud, tmp_path):
    c = image_cloud
    conn = c.sdk("demo")
    data = os.urandom(MiB + 3)
    src = tmp_path / "staged.raw"
    src.write_bytes(data)
    img = conn.image.create_image(name="imported", disk_format="raw", container_format="bare", filename=str(src),
                                  use_import=True, wait=True, timeout=60)
    img = conn.image.get_image(img.id)
    deadline = time.monotonic() + 30
    while img.status != "active":
        assert time.monotonic() < deadline, img.status
        time.sleep(0.2)
        img = conn.image.get_image(img.id)
    assert img.checksum == hashlib.md5(data).hexdigest()
    conn.image.delete_image(img.id)
