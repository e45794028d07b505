"""Volumes and images: create a volume from an image (how compute boots from volume) and upload a
volume back as an image, through the real CLI, with the image service in the cloud."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from stratus import services
from tests.cloudfixture import destroy_cloud, start_cloud

pytestmark = [
    pytest.mark.skipif("image" not in services.available(), reason="the image service is not in this build"),
    pytest.mark.skipif(not shutil.which("qemu-img") or not shutil.which("qemu-io"), reason="needs qemu-utils"),
]


@pytest.fixture(scope="module")
def icloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-volimg-"))
    base = 21000 + (uuid.uuid4().int % 400) * 50
    try:
        c = start_cloud(state, services=["identity", "image", "volume"], extra_env={
            "STRATUS_VOLUME__EXPORT_PORT_MIN": str(base), "STRATUS_VOLUME__EXPORT_PORT_MAX": str(base + 49)}, timeout=180)
    except Exception:
        shutil.rmtree(state, ignore_errors=True)  # start-up failed: nothing else to clean
        raise
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def wait_status(icloud, kind: str, name: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        shown = icloud.osc(f"{kind} show {name}", cloud="demo")
        if shown["status"] == status:
            return shown
        assert "error" not in shown["status"], shown
        assert time.monotonic() < deadline, f"{kind} {name} stayed {shown['status']}"
        time.sleep(0.3)


def test_volume_from_image_and_back(icloud, tmp_path):
    img = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x42 1048576 4096", str(img)], check=True,
                   capture_output=True)
    image = icloud.osc(f"image create --file {img} --disk-format qcow2 --container-format bare "
                       f"--property hw_disk_bus=virtio src-{uuid.uuid4().hex[:6]}", cloud="demo")

    icloud.osc(f"volume create --image {image['id']} --size 1 boot", cloud="demo")
    vol = wait_status(icloud, "volume", "boot", "available")
    assert vol["bootable"] in ("true", True)
    assert vol["volume_image_metadata"]["image_id"] == image["id"]
    assert vol["volume_image_metadata"]["hw_disk_bus"] == "virtio"

    # A volume too small for the image is refused at once.
    proc = icloud.osc(f"volume create --image {image['id']} --size 0 tiny", cloud="demo", check=False)
    assert proc.returncode != 0

    icloud.osc("image create --volume boot --disk-format qcow2 back", cloud="demo")
    wait_status(icloud, "image", "back", "active")
    wait_status(icloud, "volume", "boot", "available")
    out = tmp_path / "back.qcow2"
    icloud.osc(["image", "save", "--file", str(out), "back"], cloud="demo", fmt_json=False)
    check = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x42 1048576 4096", str(out)],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "verification failed" not in check.stdout
    info = subprocess.run(["qemu-img", "info", "--output=json", str(out)], capture_output=True, text=True).stdout
    assert '"virtual-size": 1073741824' in info

    icloud.osc("volume delete boot", cloud="demo", fmt_json=False)
    icloud.osc("image delete back", cloud="demo", fmt_json=False)
