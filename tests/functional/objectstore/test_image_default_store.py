"""The image service storing its data in the object store, chosen by configuration."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import httpx

from tests.cloudfixture import destroy_cloud, start_cloud


def test_image_create_and_save_through_objectstore_store(tmp_path):
    state = Path(tempfile.mkdtemp(prefix="stratus-imgos-"))
    c = start_cloud(state, services=["identity", "image", "objectstore"], extra_env={
        "STRATUS_IMAGE__DEFAULT_STORE": "objectstore", "STRATUS_IMAGE__REGISTER_TEST_IMAGE": "false"})
    try:
        data = os.urandom(3 * 1024 * 1024 + 17)
        src = tmp_path / "disk.raw"
        src.write_bytes(data)
        img = c.osc(f"image create --file {src} --disk-format raw --container-format bare via-swift")
        assert img["status"] == "active"
        out = tmp_path / "back.raw"
        c.osc(f"image save --file {out} via-swift", fmt_json=False)
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
        # The bytes live in the image service user's account of the object store.
        svc = httpx.post(f"{c.identity_url}/v3/auth/tokens", json={"auth": {"identity": {
            "methods": ["password"], "password": {"user": {"name": "image", "domain": {"id": "default"},
                                                           "password": c.secrets()["service_password"]}}},
            "scope": {"project": {"name": "service", "domain": {"id": "default"}}}}})
        svc_tok = svc.headers["x-subject-token"]
        project = svc.json()["token"]["project"]["id"]
        listing = httpx.get(f"{c.url}/v1/AUTH_{project}/images?format=json", headers={"X-Auth-Token": svc_tok})
        assert listing.status_code == 200 and any(img["id"] in o["name"] for o in listing.json())
        c.osc(f"image delete via-swift", fmt_json=False)
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)
