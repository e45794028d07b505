"""The whole path with a real guest: compute → libvirt/QEMU, network ports and DHCP, metadata service.

Needs root (bridges, namespaces), libvirt and QEMU; skipped with the missing capability named.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from stratus import services as registry
from tests.cloudfixture import destroy_cloud, start_cloud


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "root is needed for bridges and network namespaces"
    if not shutil.which("qemu-system-x86_64") or not shutil.which("virsh"):
        return "qemu-system-x86_64 and virsh (libvirt) are not installed"
    try:
        import stratus.compute.drivers.libvirt  # noqa: F401
    except ImportError as exc:
        return f"the libvirt driver cannot be imported: {exc}"
    if not {"image", "network"} <= set(registry.available()):
        return "the image and network services are not both present"
    return None


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_real_guest_reads_metadata():
    state = Path(tempfile.mkdtemp(prefix="stratus-compute-real-"))
    cloud = start_cloud(state, services=["identity", "image", "compute", "network"],
                        extra_env={"STRATUS_COMPUTE__DRIVER": "libvirt"}, timeout=180)
    try:
        cloud.osc("network create realnet", cloud="demo")
        cloud.osc("subnet create --network realnet --subnet-range 10.66.0.0/24 realsub", cloud="demo")
        deadline = time.monotonic() + 90
        while not [i for i in cloud.osc("image list", cloud="demo") if i["Status"] == "active"]:
            assert time.monotonic() < deadline, "the test image never became active"
            time.sleep(1)
        image = cloud.osc("image list", cloud="demo")[0]["ID"]
        srv = cloud.osc(f"server create --image {image} --flavor m1.tiny --network realnet --wait realvm",
                        cloud="demo")
        assert srv["status"] == "ACTIVE"
        ip = str(srv["addresses"])
        assert "10.66.0." in ip
        deadline = time.monotonic() + 150
        log = ""
        while time.monotonic() < deadline:
            log = cloud.osc("console log show realvm", cloud="demo", fmt_json=False)
            if "metadata-service: ok" in log and "hostname: realvm" in log:
                break
            time.sleep(3)
        assert "metadata-service: ok" in log and "hostname: realvm" in log, log[-2000:]
        cloud.osc("server delete --wait realvm", cloud="demo", fmt_json=False)
    finally:
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)
