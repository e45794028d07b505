"""Compute ↔ block storage: `openstack server add/remove volume` with the real CLI (fake virt driver,
real volume service with its NBD transport), volumes kept on server delete, tenancy refusals."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cloudfixture import destroy_cloud, start_cloud
from tests.functional.compute.conftest import FAKE_ENV, image_id


@pytest.fixture(scope="module")
def vcloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-cv-"))
    c = start_cloud(state, services=["identity", "image", "compute", "volume"],
                    extra_env={**FAKE_ENV, "STRATUS_COMPUTE__FAKE_HOSTS": "1"})
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def wait_volume(c, name: str, status: str, cloud: str = "demo", timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        v = c.osc(f"volume show {name}", cloud=cloud)
        if v["status"] == status or time.monotonic() > deadline:
            assert v["status"] == status, v
            return v
        time.sleep(0.5)


def test_add_and_remove_volume(vcloud):
    img = image_id(vcloud)
    assert img, "the test image was not registered"
    name, vol = f"s-{uuid.uuid4().hex[:6]}", f"v-{uuid.uuid4().hex[:6]}"
    server = vcloud.osc(f"server create --image {img} --flavor m1.tiny --nic none --wait {name}", cloud="demo")
    assert server["status"] == "ACTIVE"
    vcloud.osc(f"volume create --size 1 {vol}", cloud="demo")
    v = wait_volume(vcloud, vol, "available")
    out = vcloud.osc(f"server add volume {name} {vol} -f json", cloud="demo")
    assert out["Volume ID"] == v["id"] and out["Device"].startswith("/dev/vd")
    wait_volume(vcloud, vol, "in-use")
    shown = vcloud.osc(f"server show {name}", cloud="demo")
    assert v["id"] in str(shown["volumes_attached"])
    attached = vcloud.osc(f"volume show {vol}", cloud="demo")["attachments"]
    assert attached and attached[0]["server_id"] == server["id"]
    # The volume service knows the device the guest got, as `volume list` shows it.
    assert attached[0]["device"] == out["Device"]
    row = [x for x in vcloud.osc("volume list", cloud="demo") if x["ID"] == v["id"]][0]
    assert row["Attached to"] == [attached[0]] or out["Device"] in str(row["Attached to"])
    listed = vcloud.osc(f"server volume list {name}", cloud="demo")
    assert [x["Volume ID"] for x in listed] == [v["id"]]
    vcloud.osc(f"server remove volume {name} {vol}", cloud="demo", fmt_json=False)
    wait_volume(vcloud, vol, "available")
    assert vcloud.osc(f"server volume list {name}", cloud="demo") == []

    # Attached again, then the server is deleted: the volume is detached and kept.
    vcloud.osc(f"server add volume {name} {vol}", cloud="demo")
    wait_volume(vcloud, vol, "in-use")
    vcloud.osc(f"server delete --wait {name}", cloud="demo", fmt_json=False)
    wait_volume(vcloud, vol, "available")
    vcloud.osc(f"volume delete {vol}", cloud="demo", fmt_json=False)


def test_attach_refusals(vcloud):
    img = image_id(vcloud)
    admin = vcloud.token("admin")
    demo = vcloud.token("demo")
    base = f"{vcloud.url}/compute/v2.1"
    hdr = lambda t: {"X-Auth-Token": t, "OpenStack-API-Version": "compute 2.89"}
    s = httpx.post(f"{base}/servers", headers=hdr(demo), json={"server": {
        "name": "r", "imageRef": img, "flavorRef": "1", "networks": "none"}}).json()["server"]
    for _ in range(120):
        if httpx.get(f"{base}/servers/{s['id']}", headers=hdr(demo)).json()["server"]["status"] == "ACTIVE":
            break
        time.sleep(0.25)
    vbase = f"{vcloud.url}/volume/v3"
    # A volume of the admin project is invisible to demo's server: 404, not an attach.
    proj = httpx.get(f"{vcloud.identity_url}/v3/auth/tokens", headers={"X-Auth-Token": admin,
                                                                       "X-Subject-Token": admin}).json()
    admin_project = proj["token"]["project"]["id"]
    av = httpx.post(f"{vbase}/{admin_project}/volumes", headers={"X-Auth-Token": admin},
                    json={"volume": {"size": 1, "name": "admins"}}).json()["volume"]
    r = httpx.post(f"{base}/servers/{s['id']}/os-volume_attachments", headers=hdr(demo),
                   json={"volumeAttachment": {"volumeId": av["id"]}})
    assert r.status_code == 404, r.text
    # The admin project's user (a member elsewhere) cannot see demo's server either: 404.
    r = httpx.post(f"{base}/servers/{s['id']}/os-volume_attachments",
                   headers={"X-Auth-Token": admin, "OpenStack-API-Version": "compute 2.89"},
                   json={"volumeAttachment": {"volumeId": av["id"]}})
    assert r.status_code in (400, 404)
    # Bad bodies and unknown volumes.
    r = httpx.post(f"{base}/servers/{s['id']}/os-volume_attachments", headers=hdr(demo), json={"nope": {}})
    assert r.status_code == 400
    r = httpx.post(f"{base}/servers/{s['id']}/os-volume_attachments", headers=hdr(demo),
                   json={"volumeAttachment": {"volumeId": str(uuid.uuid4())}})
    assert r.status_code == 404
    r = httpx.delete(f"{base}/servers/{s['id']}/os-volume_attachments/{uuid.uuid4()}", headers=hdr(demo))
    assert r.status_code == 404
    httpx.delete(f"{base}/servers/{s['id']}", headers=hdr(demo))
    httpx.delete(f"{vbase}/{admin_project}/volumes/{av['id']}", headers={"X-Auth-Token": admin})


def test_boot_from_volume(vcloud):
    img = image_id(vcloud)
    name = f"bfv-{uuid.uuid4().hex[:6]}"
    server = vcloud.osc(f"server create --image {img} --boot-from-volume 1 --flavor m1.tiny --nic none --wait {name}",
                        cloud="demo")
    assert server["status"] == "ACTIVE", server
    shown = vcloud.osc(f"server show {name}", cloud="demo")
    assert "booted from volume" in str(shown["image"]).lower() or not shown["image"]
    attached = shown["volumes_attached"]
    vols = [v for v in vcloud.osc("volume list --long", cloud="demo") if v["Status"] == "in-use"
            and server["id"] in str(v.get("Attached to", ""))]
    assert len(vols) == 1 and vols[0]["Size"] == 1 and vols[0]["ID"] in str(attached)
    # The root volume was made from the image.
    meta = vcloud.osc(f"volume show {vols[0]['ID']}", cloud="demo")
    assert str(meta["bootable"]).lower() == "true"
    vcloud.osc(f"server delete --wait {name}", cloud="demo", fmt_json=False)
    # OSC asks for delete_on_termination false: the volume stays, detached.
    wait_volume(vcloud, vols[0]["ID"], "available")
    vcloud.osc(f"volume delete {vols[0]['ID']}", cloud="demo", fmt_json=False)


def test_boot_from_volume_refusals(vcloud):
    demo = vcloud.token("demo")
    base = f"{vcloud.url}/compute/v2.1"
    hdr = {"X-Auth-Token": demo, "OpenStack-API-Version": "compute 2.89"}
    img = image_id(vcloud)
    bad = [
        ({"source_type": "image", "destination_type": "volume", "uuid": img, "boot_index": 0}, "volume_size"),
        ({"source_type": "volume", "destination_type": "volume", "uuid": str(uuid.uuid4()), "boot_index": 0},
         "could not be found"),
        ({"source_type": "cloud", "destination_type": "volume", "uuid": img, "boot_index": 0}, "source_type"),
    ]
    for bdm, words in bad:
        r = httpx.post(f"{base}/servers", headers=hdr, json={"server": {
            "name": "x", "flavorRef": "1", "networks": "none", "block_device_mapping_v2": [bdm]}})
        assert r.status_code in (400, 404) and words in r.text, (bdm, r.text)
