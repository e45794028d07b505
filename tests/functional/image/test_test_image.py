"""`stratus up` registers the bootable test image as public `stratus-test`, once."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.cloudfixture import destroy_cloud, start_cloud
from tests.functional.image.conftest import api


def _cache_dir() -> Path:
    base = os.environ.get("STRATUS_TEST_CACHE") or os.path.expanduser("~/.cache/stratus-test")
    return Path(base) / "testimage"


def _wait_for_log(cloud, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in cloud.log_path.read_text():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged within {timeout}s:\n{cloud.log_tail()}")
        time.sleep(0.2)


def test_stratus_up_registers_the_test_image_once():
    testimage = pytest.importorskip("stratus.testimage", reason="the test image builder is not in this build")
    if shutil.which("qemu-img") is None:
        pytest.skip("building the test image needs qemu-img (Debian package qemu-utils)")
    # Build (or reuse) the shared cached build, then seed the cloud's default test image directory
    # (<state_dir>/testimage) with it so that the service's own build() finds it up to date.
    outputs = testimage.build(_cache_dir())
    state = Path(tempfile.mkdtemp(prefix="stratus-image-testimage-"))
    shutil.copytree(_cache_dir(), state / "testimage", ignore=shutil.ignore_patterns(".build*"))
    qcow2 = Path(outputs["qcow2"])
    env = {"STRATUS_IMAGE__REGISTER_TEST_IMAGE": "true"}
    cloud = start_cloud(state, services=["identity", "image"], extra_env=env, timeout=180)
    try:
        _wait_for_log(cloud, "registered the test image", 120)
        with api(cloud, "demo") as http:
            images = http.get("/v2/images", params={"name": "stratus-test"}).json()["images"]
        assert len(images) == 1
        img = images[0]
        assert img["status"] == "active" and img["visibility"] == "public" and img["disk_format"] == "qcow2"
        assert img["checksum"] == hashlib.md5(qcow2.read_bytes()).hexdigest()
        assert img["virtual_size"] > img["size"] > 0
        destroy_cloud(cloud)
        # A second start finds it and registers nothing new.
        cloud = start_cloud(state, services=["identity", "image"], extra_env=env, timeout=180)
        _wait_for_log(cloud, "test image is already registered", 60)
        with api(cloud, "admin") as http:
            assert len(http.get("/v2/images", params={"name": "stratus-test"}).json()["images"]) == 1
    finally:
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)
