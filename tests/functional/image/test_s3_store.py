"""The s3 store against a moto S3 server: real boto3 calls, multipart uploads, aborts."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import httpx
import pytest

from tests.cloudfixture import VENV_BIN, destroy_cloud, free_port, start_cloud
from tests.functional.image.conftest import MiB, api

BUCKET = "stratus-test-images"


@pytest.fixture(scope="module")
def moto():
    server = VENV_BIN / "moto_server"
    if not server.exists():
        pytest.skip("moto_server is not installed (test group dependency moto[server])")
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def s3_cloud(moto):
    state = Path(tempfile.mkdtemp(prefix="stratus-image-s3-"))
    c = start_cloud(state, services=["identity", "image"], extra_env={
        "STRATUS_IMAGE__REGISTER_TEST_IMAGE": "false",
        "STRATUS_IMAGE__DEFAULT_STORE": "s3",
        "STRATUS_IMAGE__S3_ENDPOINT_URL": moto,
        "STRATUS_IMAGE__S3_BUCKET": BUCKET,
        "STRATUS_IMAGE__S3_ACCESS_KEY": "testing",
        "STRATUS_IMAGE__S3_SECRET_KEY": "testing",
        "STRATUS_IMAGE__S3_PART_SIZE": str(5 * MiB),
    }, timeout=180)
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def s3(moto):
    return boto3.client("s3", endpoint_url=moto, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


def keys(s3) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_cli_upload_download_delete_through_s3(s3_cloud, s3, tmp_path):
    c = s3_cloud
    data = os.urandom(12 * MiB + 5)  # three multipart parts
    src = tmp_path / "disk.raw"
    src.write_bytes(data)
    img = c.osc(f"image create --file {src} --disk-format raw --container-format bare s3-image", cloud="demo")
    assert img["status"] == "active" and img["checksum"] == hashlib.md5(data).hexdigest()
    assert keys(s3) == [f"images/{img['id']}"]
    assert s3.head_object(Bucket=BUCKET, Key=f"images/{img['id']}")["ContentLength"] == len(data)
    out = tmp_path / "back.raw"
    c.osc(f"image save --file {out} s3-image", cloud="demo")
    assert out.read_bytes() == data
    with api(c) as http:
        r = http.get(f"/v2/images/{img['id']}/file", headers={"Range": f"bytes={6 * MiB}-{6 * MiB + 9}"})
        assert r.status_code == 206 and r.content == data[6 * MiB:6 * MiB + 10]
        assert http.get("/v2/info/stores").json()["stores"][0]["id"] == "s3"
    c.osc("image delete s3-image", cloud="demo")
    assert keys(s3) == []


def test_small_image_and_refused_upload_leave_nothing_partial(s3_cloud, s3):
    c = s3_cloud
    with api(c) as http:
        small = http.post("/v2/images", json={"name": "small", "disk_format": "raw", "container_format": "bare"}).json()
        put = {"Content-Type": "application/octet-stream"}
        assert http.put(f"/v2/images/{small['id']}/file", content=b"tiny", headers=put).status_code == 204
        assert http.get(f"/v2/images/{small['id']}/file").content == b"tiny"
        # Declared qcow2 but raw bytes: refused on the first MiB, nothing stored.
        bad = http.post("/v2/images", json={"name": "bad", "disk_format": "qcow2", "container_format": "bare"}).json()
        r = http.put(f"/v2/images/{bad['id']}/file", content=iter([os.urandom(MiB)] * 12), headers=put)
        assert r.status_code == 400 and "raw data" in r.json()["message"]
        assert http.get(f"/v2/images/{bad['id']}").json()["status"] == "queued"
        http.delete(f"/v2/images/{small['id']}")
        http.delete(f"/v2/images/{bad['id']}")
    assert keys(s3) == []
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_disconnect_after_parts_were_sent_aborts_the_multipart_upload(s3_cloud, s3):
    c = s3_cloud
    with api(c) as http:
        img = http.post("/v2/images", json={"name": "cut", "disk_format": "raw", "container_format": "bare"}).json()
    url = urlsplit(c.url)
    sock = socket.create_connection((url.hostname, url.port))
    sock.sendall((f"PUT /image/v2/images/{img['id']}/file HTTP/1.1\r\nHost: {url.netloc}\r\n"
                  f"X-Auth-Token: {c.token('demo')}\r\nContent-Type: application/octet-stream\r\n"
                  f"Content-Length: {40 * MiB}\r\n\r\n").encode())
    for _ in range(12):
        sock.sendall(os.urandom(MiB))
    deadline = time.monotonic() + 20
    while not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads"):
        assert time.monotonic() < deadline, "no multipart upload started"
        time.sleep(0.1)
    sock.close()
    with api(c) as http:
        deadline = time.monotonic() + 20
        while http.get(f"/v2/images/{img['id']}").json()["status"] != "queued":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        http.delete(f"/v2/images/{img['id']}")
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert keys(s3) == []


def test_staged_import_lands_in_s3(s3_cloud, s3, tmp_path):
    c = s3_cloud
    data = os.urandom(7 * MiB + 1)
    src = tmp_path / "staged.raw"
    src.write_bytes(data)
    conn = c.sdk("demo")
    img = conn.image.create_image(name="s3-imported", disk_format="raw", container_format="bare",
                                  filename=str(src), use_import=True)
    deadline = time.monotonic() + 60
    while (img := conn.image.get_image(img.id)).status != "active":
        assert time.monotonic() < deadline, img.status
        time.sleep(0.2)
    assert img.checksum == hashlib.md5(data).hexdigest()
    assert keys(s3) == [f"images/{img.id}"]
    assert list((c.state_dir / "images-staging").iterdir()) == []
    conn.image.delete_image(img.id)
    assert keys(s3) == []
