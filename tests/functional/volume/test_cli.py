"""Block storage through the real `openstack` CLI: volumes, snapshots, types, quotas."""

from __future__ import annotations

import time
import uuid


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_cli(vcloud, kind: str, name: str, status: str, cloud: str = "demo", timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        shown = vcloud.osc(f"{kind} show {name}", cloud=cloud)
        if shown["status"] == status:
            return shown
        assert not shown["status"].startswith("error"), shown
        assert time.monotonic() < deadline, f"{kind} {name} stayed {shown['status']}"
        time.sleep(0.3)


def test_catalog_and_discovery(vcloud):
    import httpx

    types = {e["Type"] for e in vcloud.osc("catalog list")}
    assert {"block-storage", "volumev3"} <= types
    for path in ("/volume", "/volume/", "/volume/v3", "/volume/v3/"):
        # Discovery needs no token and ignores microversion headers.
        r = httpx.get(vcloud.url + path, timeout=10, headers={"OpenStack-API-Version": "volume 9.9"})
        assert r.status_code in (200, 300), (path, r.status_code)
        v = r.json()["versions"][0]
        assert v["min_version"] == "3.0" and v["version"] == "3.71"
        assert v["links"][0]["href"].endswith("/volume/v3/")


def test_volume_lifecycle_through_the_cli(vcloud):
    name, renamed = uniq("vol"), uniq("renamed")
    created = vcloud.osc(f"volume create --size 1 --description first --property purpose=test {name}", cloud="demo")
    assert created["name"] == name and created["size"] == 1
    shown = wait_cli(vcloud, "volume", name, "available")
    assert shown["properties"] == {"purpose": "test"} and shown["bootable"] in ("false", False)
    assert shown["type"] == "__DEFAULT__"
    assert name in [v["Name"] for v in vcloud.osc("volume list", cloud="demo")]

    vcloud.osc(f"volume set --name {renamed} --description second --property more=yes --bootable {name}",
               cloud="demo", fmt_json=False)
    shown = vcloud.osc(f"volume show {renamed}", cloud="demo")
    assert shown["description"] == "second" and shown["properties"]["more"] == "yes"
    assert shown["bootable"] in ("true", True)

    vcloud.osc(f"volume set --size 2 {renamed}", cloud="demo", fmt_json=False)
    shown = wait_cli(vcloud, "volume", renamed, "available")
    assert shown["size"] == 2

    vcloud.osc(f"volume delete {renamed}", cloud="demo", fmt_json=False)
    deadline = time.monotonic() + 30
    while renamed in [v["Name"] for v in vcloud.osc("volume list", cloud="demo")]:
        assert time.monotonic() < deadline, "volume was never deleted"
        time.sleep(0.3)


def test_snapshots_and_volumes_made_from_them(vcloud):
    vol, snap, clone = uniq("vol"), uniq("snap"), uniq("clone")
    vcloud.osc(f"volume create --size 1 {vol}", cloud="demo")
    wait_cli(vcloud, "volume", vol, "available")
    created = vcloud.osc(f"volume snapshot create --volume {vol} --property k=v {snap}", cloud="demo")
    assert created["name"] == snap
    shown = wait_cli(vcloud, "volume snapshot", snap, "available")
    assert shown["size"] == 1 and shown["properties"] == {"k": "v"}
    assert snap in [s["Name"] for s in vcloud.osc("volume snapshot list", cloud="demo")]

    vcloud.osc(f"volume create --snapshot {snap} --size 2 {clone}", cloud="demo")
    shown = wait_cli(vcloud, "volume", clone, "available")
    assert shown["size"] == 2 and shown["snapshot_id"] == created["id"]

    # A volume with snapshots cannot be deleted (400), the snapshot can.
    proc = vcloud.osc(f"volume delete {vol}", cloud="demo", check=False, fmt_json=False)
    assert proc.returncode != 0 and "snapshot" in proc.stderr
    vcloud.osc(f"volume snapshot delete {snap}", cloud="demo", fmt_json=False)
    deadline = time.monotonic() + 30
    while snap in [s["Name"] for s in vcloud.osc("volume snapshot list", cloud="demo")]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    vcloud.osc(f"volume delete {vol} {clone}", cloud="demo", fmt_json=False)


def test_volume_types_with_extra_specs(vcloud):
    types = vcloud.osc("volume type list", cloud="demo")
    assert "__DEFAULT__" in [t["Name"] for t in types]
    name = uniq("fast")
    vcloud.osc(f"volume type create --property volume_backend_name=file --description quick {name}")
    shown = vcloud.osc(f"volume type show {name}")
    assert shown["properties"] == {"volume_backend_name": "file"}
    vol = uniq("typed")
    vcloud.osc(f"volume create --size 1 --type {name} {vol}", cloud="demo")
    assert wait_cli(vcloud, "volume", vol, "available")["type"] == name
    # Members may not create types.
    proc = vcloud.osc(f"volume type create {uniq('nope')}", cloud="demo", check=False)
    assert proc.returncode != 0 and "403" in proc.stderr
    # A type in use cannot be deleted.
    assert vcloud.osc(f"volume type delete {name}", check=False, fmt_json=False).returncode != 0
    vcloud.osc(f"volume delete {vol}", cloud="demo", fmt_json=False)


def test_quota_limits_and_zones(vcloud):
    limits = {row["Name"]: row["Value"] for row in vcloud.osc("limits show --absolute", cloud="demo")}
    assert limits["max_total_volumes"] == 10 and "total_gigabytes_used" in limits
    zones = vcloud.osc("availability zone list --volume", cloud="demo")
    assert zones[0]["Zone Name"] == "nova" and zones[0]["Zone Status"] == "available"
    services = vcloud.osc("volume service list")
    assert services[0]["Binary"] == "cinder-volume" and services[0]["State"] == "up"
