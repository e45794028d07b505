"""Backups through the real `openstack volume backup ...` commands, into the object store.

Needs the object store service in the cloud (its Swift API in the catalog as object-store)."""

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
from tests.functional.volume.conftest import VolumeApi, login

pytestmark = pytest.mark.skipif("objectstore" not in services.available(),
                                reason="the object store service (stratus/objectstore/service.py) is not in this build")

CONNECTOR = {"host": "compute-1", "ip": "127.0.0.1"}


@pytest.fixture(scope="module")
def bcloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-volbk-"))
    base = 21000 + (uuid.uuid4().int % 400) * 50
    try:
        c = start_cloud(state, services=["identity", "objectstore", "volume"], extra_env={
            "STRATUS_VOLUME__EXPORT_PORT_MIN": str(base), "STRATUS_VOLUME__EXPORT_PORT_MAX": str(base + 49)}, timeout=180)
    except Exception:
        shutil.rmtree(state, ignore_errors=True)  # start-up failed: nothing else to clean
        raise
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def wait(bcloud, kind, name, status, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        shown = bcloud.osc(f"{kind} show {name}", cloud="demo")
        if shown["status"] == status:
            return shown
        assert "error" not in shown["status"], shown
        assert time.monotonic() < deadline, f"{kind} {name} stayed {shown['status']}"
        time.sleep(0.5)


def nbd(api: VolumeApi, volume_id: str, command: str) -> subprocess.CompletedProcess:
    r = api("POST", "/attachments", json={"attachment": {"volume_uuid": volume_id, "instance_uuid": "i-bk",
                                                         "connector": CONNECTOR}})
    assert r.status_code == 200, r.text
    att = r.json()["attachment"]
    d = att["connection_info"]["data"]
    try:
        return subprocess.run(["qemu-io", "-f", "raw", "-c", command, f"nbd://{d['host']}:{d['port']}/{d['name']}"],
                              capture_output=True, text=True, timeout=30)
    finally:
        api("DELETE", f"/attachments/{att['id']}")


def test_full_and_incremental_backup_and_restore(bcloud):
    token, project = login(bcloud.identity_url, "demo", bcloud.secrets()["demo_password"], "demo")
    api = VolumeApi(bcloud, token, project)
    bcloud.osc("volume create --size 1 src", cloud="demo")
    src = wait(bcloud, "volume", "src", "available")
    assert nbd(api, src["id"], "write -P 0x4d 0 4096").returncode == 0

    bcloud.osc("volume backup create --name full src", cloud="demo")
    full = wait(bcloud, "volume backup", "full", "available")
    assert full["is_incremental"] is False
    assert nbd(api, src["id"], "write -P 0x4e 8388608 4096").returncode == 0
    bcloud.osc("volume backup create --incremental --name incr src", cloud="demo")
    incr = wait(bcloud, "volume backup", "incr", "available")
    assert incr["is_incremental"] is True
    names = [b["Name"] for b in bcloud.osc("volume backup list", cloud="demo")]
    assert {"full", "incr"} <= set(names)

    # A full backup with dependents cannot be deleted.
    assert bcloud.osc("volume backup delete full", cloud="demo", check=False, fmt_json=False).returncode != 0

    bcloud.osc("volume create --size 1 target", cloud="demo")
    target = wait(bcloud, "volume", "target", "available")
    bcloud.osc("volume backup restore --force incr target", cloud="demo")
    wait(bcloud, "volume", "target", "available")
    for command in ("read -P 0x4d 0 4096", "read -P 0x4e 8388608 4096"):
        out = nbd(api, target["id"], command)
        assert out.returncode == 0 and "verification failed" not in out.stdout

    bcloud.osc("volume backup delete incr", cloud="demo", fmt_json=False)
    bcloud.osc("volume backup delete full", cloud="demo", fmt_json=False)
    bcloud.osc("volume delete src target", cloud="demo", fmt_json=False)
