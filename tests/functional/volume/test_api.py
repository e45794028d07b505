"""Block storage over HTTP: the attach flows compute uses, microversions, refusals, tenancy."""

from __future__ import annotations

import subprocess

import pytest

from tests.functional.volume.conftest import VolumeApi, login

CONNECTOR = {"host": "compute-1", "ip": "127.0.0.1", "initiator": None}


def nbd_url(info: dict) -> str:
    d = info["data"]
    return f"nbd://{d['host']}:{d['port']}/{d['name']}"


def qemu_io(url: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-io", "-f", "raw", "-c", command, url], capture_output=True, text=True, timeout=30)


def test_microversions_and_fault_format(demo_api):
    r = demo_api("GET", "/volumes", version="")
    assert r.status_code == 200 and r.headers["openstack-api-version"] == "volume 3.0"
    r = demo_api("GET", "/volumes", version="3.72")
    assert r.status_code == 406
    r = demo_api("GET", "/volumes", headers={"OpenStack-API-Version": "volume latest"}, version="")
    assert r.headers["openstack-api-version"] == "volume 3.71"
    r = demo_api("GET", "/volumes/does-not-exist")
    assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404
    r = demo_api("POST", "/volumes", json={"volume": {"size": "big"}})
    assert r.status_code == 400 and "size" in r.json()["badRequest"]["message"]
    r = demo_api("POST", "/volumes", content=b"{not json")
    assert r.status_code == 400
    # Since 3.67 the project id may be left out of the URL.
    r = demo_api("GET", "/volumes", base=f"{demo_api.root}/v3")
    assert r.status_code == 200
    # Fields follow the requested microversion.
    vol = demo_api.create_volume()
    old = demo_api("GET", f"/volumes/{vol['id']}", version="3.0").json()["volume"]
    new = demo_api("GET", f"/volumes/{vol['id']}", version="3.71").json()["volume"]
    assert "volume_type_id" not in old and "consumes_quota" not in old
    assert new["volume_type_id"] and new["consumes_quota"] is True
    assert demo_api("DELETE", f"/volumes/{vol['id']}").status_code == 202


def test_attachments_api_serves_the_volume_over_nbd(demo_api):
    vol = demo_api.create_volume()
    vid = vol["id"]
    r = demo_api("POST", "/attachments", json={"attachment": {
        "volume_uuid": vid, "instance_uuid": "11111111-2222-3333-4444-555555555555", "connector": CONNECTOR,
        "mode": "rw"}})
    assert r.status_code == 200, r.text
    att = r.json()["attachment"]
    info = att["connection_info"]
    assert info["driver_volume_type"] == "nbd" and info["data"]["name"] == vid
    assert demo_api("GET", f"/volumes/{vid}").json()["volume"]["status"] == "attaching"

    # The export is real: a marker written over NBD is read back.
    assert qemu_io(nbd_url(info), "write -P 0x7e 0 4096").returncode == 0
    read = qemu_io(nbd_url(info), "read -P 0x7e 0 4096")
    assert read.returncode == 0 and "verification failed" not in read.stdout

    assert demo_api("POST", f"/attachments/{att['id']}/action", json={"os-complete": None}).status_code == 204
    shown = demo_api("GET", f"/volumes/{vid}").json()["volume"]
    assert shown["status"] == "in-use"
    assert shown["attachments"][0]["attachment_id"] == att["id"]
    assert shown["attachments"][0]["server_id"] == "11111111-2222-3333-4444-555555555555"

    # Refusals while attached: delete → 400; a second attachment → 400.
    r = demo_api("DELETE", f"/volumes/{vid}")
    assert r.status_code == 400 and "attached" in r.json()["badRequest"]["message"]
    r = demo_api("POST", "/attachments", json={"attachment": {"volume_uuid": vid, "instance_uuid": "x" * 8}})
    assert r.status_code == 400

    # Extend while attached needs 3.42; the export then serves the new size.
    assert demo_api("POST", f"/volumes/{vid}/action", json={"os-extend": {"new_size": 2}},
                    version="3.41").status_code == 400
    assert demo_api("POST", f"/volumes/{vid}/action", json={"os-extend": {"new_size": 2}}).status_code == 202
    shown = demo_api.wait(f"/volumes/{vid}", "volume", ("in-use", "error_extending"))
    assert shown["status"] == "in-use" and shown["size"] == 2
    size = subprocess.run(["qemu-img", "info", "--output=json", nbd_url(info)], capture_output=True, text=True)
    assert '"virtual-size": 2147483648' in size.stdout

    # A snapshot of the in-use volume (3.66 needs no force) keeps the marker.
    r = demo_api("POST", "/snapshots", json={"snapshot": {"volume_id": vid, "name": "live"}})
    assert r.status_code == 202, r.text
    snap = demo_api.wait(f"/snapshots/{r.json()['snapshot']['id']}", "snapshot", ("available", "error"))
    assert snap["status"] == "available"
    assert qemu_io(nbd_url(info), "write -P 0x11 0 4096").returncode == 0  # after the snapshot

    assert demo_api("DELETE", f"/attachments/{att['id']}").status_code == 200
    assert demo_api("GET", f"/volumes/{vid}").json()["volume"]["status"] == "available"
    assert qemu_io(nbd_url(info), "read 0 512").returncode != 0  # the export is gone

    clone = demo_api.create_volume(2, snapshot_id=snap["id"])
    assert clone["status"] == "available"
    r = demo_api("POST", "/attachments", json={"attachment": {"volume_uuid": clone["id"], "instance_uuid": "i-2",
                                                              "connector": CONNECTOR}})
    info2 = r.json()["attachment"]["connection_info"]
    read = qemu_io(nbd_url(info2), "read -P 0x7e 0 4096")
    assert read.returncode == 0 and "verification failed" not in read.stdout
    assert demo_api("DELETE", f"/attachments/{r.json()['attachment']['id']}").status_code == 200
    for path in (f"/volumes/{clone['id']}", f"/snapshots/{snap['id']}"):
        assert demo_api("DELETE", path).status_code == 202
    demo_api.wait(f"/snapshots/{snap['id']}", "snapshot", ("deleted",))
    assert demo_api("DELETE", f"/volumes/{vid}").status_code == 202


def test_attachment_without_connector_then_update(demo_api):
    vol = demo_api.create_volume()
    r = demo_api("POST", "/attachments", json={"attachment": {"volume_uuid": vol["id"], "instance_uuid": "i-3"}})
    att = r.json()["attachment"]
    assert att["status"] == "reserved" and att["connection_info"] == {}
    r = demo_api("POST", f"/attachments/{att['id']}/action", json={"os-complete": None})
    assert r.status_code == 400  # no connector yet
    r = demo_api("PUT", f"/attachments/{att['id']}", json={"attachment": {"connector": CONNECTOR}})
    assert r.status_code == 200 and r.json()["attachment"]["connection_info"]["driver_volume_type"] == "nbd"
    assert demo_api("GET", "/attachments", version="3.26").status_code == 404
    listed = demo_api("GET", f"/attachments?volume_id={vol['id']}").json()["attachments"]
    assert [a["id"] for a in listed] == [att["id"]]
    assert demo_api("DELETE", f"/attachments/{att['id']}").status_code == 200
    assert demo_api("DELETE", f"/volumes/{vol['id']}").status_code == 202


def test_legacy_attach_actions(demo_api):
    vol = demo_api.create_volume()
    act = lambda body: demo_api("POST", f"/volumes/{vol['id']}/action", json=body, version="3.0")  # noqa: E731
    assert act({"os-reserve": None}).status_code == 202
    assert act({"os-reserve": None}).status_code == 400  # already reserved
    r = act({"os-initialize_connection": {"connector": CONNECTOR}})
    assert r.status_code == 200
    info = r.json()["connection_info"]
    assert info["driver_volume_type"] == "nbd"
    assert qemu_io(nbd_url(info), "write -P 0x3c 0 512").returncode == 0
    assert act({"os-attach": {"instance_uuid": "i-legacy", "mountpoint": "/dev/vdb", "mode": "rw"}}).status_code == 202
    shown = demo_api("GET", f"/volumes/{vol['id']}").json()["volume"]
    assert shown["status"] == "in-use" and shown["attachments"][0]["device"] == "/dev/vdb"
    assert act({"os-begin_detaching": None}).status_code == 202
    assert demo_api("GET", f"/volumes/{vol['id']}").json()["volume"]["status"] == "detaching"
    assert act({"os-roll_detaching": None}).status_code == 202
    assert act({"os-begin_detaching": None}).status_code == 202
    assert act({"os-terminate_connection": {"connector": CONNECTOR}}).status_code == 202
    assert qemu_io(nbd_url(info), "read 0 512").returncode != 0
    assert act({"os-detach": {"attachment_id": shown["attachments"][0]["attachment_id"]}}).status_code == 202
    assert demo_api("GET", f"/volumes/{vol['id']}").json()["volume"]["status"] == "available"
    assert demo_api("DELETE", f"/volumes/{vol['id']}").status_code == 202


def test_refusals(demo_api, admin_api, other_project):
    vol = demo_api.create_volume(2)
    # Extend to a smaller size → 400.
    r = demo_api("POST", f"/volumes/{vol['id']}/action", json={"os-extend": {"new_size": 1}})
    assert r.status_code == 400 and "greater" in r.json()["badRequest"]["message"]
    # Bad sizes, unknown actions, unknown types → 400/404, never 500.
    assert demo_api("POST", "/volumes", json={"volume": {"size": 0}}).status_code == 400
    assert demo_api("POST", "/volumes", json={"volume": {"size": 1, "volume_type": "nope"}}).status_code == 404
    assert demo_api("POST", f"/volumes/{vol['id']}/action", json={"os-fly": {}}).status_code == 400
    assert demo_api("POST", "/volumes", json={"volume": {"size": 1, "snapshot_id": "missing"}}).status_code == 404

    # Over quota → 413, for count and for gigabytes.
    pid = other_project.project_id
    assert admin_api("PUT", f"/os-quota-sets/{pid}", json={"quota_set": {"volumes": 1, "gigabytes": 3}}
                     ).status_code == 200
    assert other_project("PUT", f"/os-quota-sets/{pid}", json={"quota_set": {"volumes": 50}}).status_code == 403
    first = other_project.create_volume(2)
    r = other_project("POST", "/volumes", json={"volume": {"size": 1}})
    assert r.status_code == 413 and "overLimit" in r.json()
    assert admin_api("PUT", f"/os-quota-sets/{pid}", json={"quota_set": {"volumes": 5}}).status_code == 200
    r = other_project("POST", "/volumes", json={"volume": {"size": 2}})
    assert r.status_code == 413 and "gigabytes" in r.json()["overLimit"]["message"]
    quota = other_project("GET", f"/os-quota-sets/{pid}?usage=True").json()["quota_set"]
    assert quota["volumes"] == {"limit": 5, "in_use": 1, "reserved": 0, "allocated": 0}
    assert quota["gigabytes"]["in_use"] == 2

    # Another project's user: the volume is not found, the URL of another project is refused.
    for path in (f"/volumes/{vol['id']}", f"/volumes/{vol['id']}/action"):
        method = "GET" if path.endswith(vol["id"]) else "POST"
        r = other_project(method, path, json={"os-extend": {"new_size": 5}} if method == "POST" else None)
        assert r.status_code == 404
    r = other_project("POST", "/attachments", json={"attachment": {"volume_uuid": vol["id"], "instance_uuid": "i"}})
    assert r.status_code == 404
    r = other_project("POST", "/snapshots", json={"snapshot": {"volume_id": vol["id"]}})
    assert r.status_code == 404
    assert vol["id"] not in [v["id"] for v in other_project("GET", "/volumes").json()["volumes"]]
    r = other_project("GET", "/volumes", base=demo_api.base)
    assert r.status_code == 403
    assert other_project("GET", f"/os-quota-sets/{demo_api.project_id}").status_code == 404
    assert other_project("GET", "/os-services").status_code == 403
    # The admin sees everything with all_tenants.
    listed = admin_api("GET", "/volumes/detail?all_tenants=1").json()["volumes"]
    assert {vol["id"], first["id"]} <= {v["id"] for v in listed}

    assert other_project("DELETE", f"/volumes/{first['id']}").status_code == 202
    assert demo_api("DELETE", f"/volumes/{vol['id']}").status_code == 202


def test_list_filters_sorting_and_pages(demo_api):
    made = [demo_api.create_volume(1, metadata={"batch": "f1"}) for _ in range(3)]
    ids = {v["id"] for v in made}
    r = demo_api("GET", "/volumes/detail?metadata={'batch': 'f1'}&sort=name:asc&limit=2")
    body = r.json()
    assert len(body["volumes"]) == 2 and body["volumes_links"][0]["rel"] == "next"
    names = [v["name"] for v in body["volumes"]]
    assert names == sorted(names)
    rest = demo_api("GET", "", base=body["volumes_links"][0]["href"]).json()["volumes"]
    assert {v["id"] for v in body["volumes"] + rest} == ids
    assert demo_api("GET", f"/volumes?name={made[0]['name']}").json()["volumes"][0]["id"] == made[0]["id"]
    assert demo_api("GET", "/volumes?sort=color:asc").status_code == 400
    summary = demo_api("GET", "/volumes/summary").json()["volume-summary"]
    assert summary["total_count"] >= 3 and "f1" in summary["metadata"]["batch"]
    for v in made:
        assert demo_api("DELETE", f"/volumes/{v['id']}").status_code == 202


def test_backups_need_the_object_store(demo_api, vcloud):
    vol = demo_api.create_volume()
    r = demo_api("POST", "/backups", json={"backup": {"volume_id": vol["id"]}})
    assert r.status_code == 400 and "object-store is not available" in r.json()["badRequest"]["message"]
    assert demo_api("DELETE", f"/volumes/{vol['id']}").status_code == 202


@pytest.mark.parametrize("body", [{"volume": {"size": 1, "imageRef": "no-such-image"}}])
def test_volume_from_image_without_image_service_is_refused(demo_api, body):
    r = demo_api("POST", "/volumes", json=body)
    assert r.status_code == 400


def test_token_must_be_valid(vcloud):
    api = VolumeApi(vcloud, "not-a-token", "x")
    r = api("GET", "/volumes")
    assert r.status_code == 401
    token, project = login(vcloud.identity_url, "demo", vcloud.secrets()["demo_password"], "demo")
    assert VolumeApi(vcloud, token, project)("GET", "/volumes").status_code == 200


def test_bad_inputs_get_4xx_never_500(demo_api, admin_api):
    vol = demo_api.create_volume()
    vid = vol["id"]
    cases = [
        ("POST", "/volumes", {"volume": []}),
        ("POST", "/volumes", {"volume": {"size": 1, "metadata": "x"}}),
        ("POST", "/volumes", {"volume": {"size": 1, "metadata": {"k": 5}}}),
        ("POST", "/volumes", {"volume": {"size": 1, "name": 7}}),
        ("POST", "/volumes", {"volume": {"size": 1.5}}),
        ("POST", "/volumes", {"volume": {"size": -1}}),
        ("POST", "/volumes", {"volume": {"size": 1, "availability_zone": "nowhere"}}),
        ("POST", "/volumes", {"volume": {"size": 1, "source_volid": vid, "snapshot_id": vid}}),
        ("POST", "/volumes", {"volume": {"size": 1, "multiattach": "maybe"}}),
        ("POST", "/volumes", []),
        ("PUT", f"/volumes/{vid}", {"volume": {"name": 5}}),
        ("PUT", f"/volumes/{vid}", {"volume": {}}),
        ("POST", f"/volumes/{vid}/action", []),
        ("POST", f"/volumes/{vid}/action", {"os-extend": "big"}),
        ("POST", f"/volumes/{vid}/action", {"os-extend": {"new_size": "x"}}),
        ("POST", f"/volumes/{vid}/action", {"os-set_bootable": {"bootable": "perhaps"}}),
        ("POST", f"/volumes/{vid}/action", {"os-initialize_connection": {"connector": "me"}}),
        ("POST", f"/volumes/{vid}/action", {"os-attach": {"mountpoint": "/dev/vdb"}}),
        ("POST", f"/volumes/{vid}/action", {"os-detach": {}}),
        ("POST", f"/volumes/{vid}/action", {"os-reset_status": {"status": "happy"}}),
        ("POST", f"/volumes/{vid}/action", {"revert": {"snapshot_id": "nope"}}),
        ("POST", f"/volumes/{vid}/action", {"os-volume_upload_image": {"image_name": "x", "disk_format": "iso"}}),
        ("POST", f"/volumes/{vid}/metadata", {"metadata": ["a"]}),
        ("PUT", f"/volumes/{vid}/metadata/k", {"meta": {"other": "v"}}),
        ("GET", f"/volumes/{vid}/metadata/missing", None),
        ("POST", "/snapshots", {"snapshot": {"volume_id": 5}}),
        ("POST", "/snapshots", {"snapshot": {}}),
        ("POST", "/attachments", {"attachment": {"volume_uuid": 1}}),
        ("POST", "/attachments", {"attachment": {"volume_uuid": vid, "instance_uuid": "i", "connector": "x"}}),
        ("POST", "/attachments", {"attachment": {"volume_uuid": vid, "instance_uuid": "i", "mode": "rx"}}),
        ("PUT", "/attachments/nope", {"attachment": {"connector": {"host": "h"}}}),
        ("POST", "/backups", {"backup": {}}),
        ("GET", "/volumes?limit=-1", None),
        ("GET", "/volumes?marker=nope", None),
        ("GET", "/volumes?sort_dir=sideways&sort_key=name", None),
        ("GET", "/volumes?bootable=maybe", None),
        ("GET", "/volumes?created_at=soon:2020", None),
        ("GET", "/volumes?metadata=notjson", None),
        ("GET", "/volumes?offset=x", None),
    ]
    admin_cases = [
        ("POST", "/types", {"volume_type": {"name": ""}}),
        ("POST", "/types", {"volume_type": {"name": "t", "extra_specs": ["a"]}}),
        ("PUT", f"/os-quota-sets/{demo_api.project_id}", {"quota_set": {"volumes": "many"}}),
        ("PUT", f"/os-quota-sets/{demo_api.project_id}", {"quota_set": {"bogus": 1}}),
        ("PUT", f"/os-quota-sets/{demo_api.project_id}", {"quota_set": {"volumes": -5}}),
        ("PUT", "/os-services/disable", {"host": "nowhere", "binary": "cinder-volume"}),
        ("PUT", "/os-services/explode", {}),
        ("POST", "/types/__DEFAULT__/action", {"addProjectAccess": {"project": "p"}}),
        ("DELETE", "/types/__DEFAULT__", None),
    ]
    for api, batch in ((demo_api, cases), (admin_api, admin_cases)):
        for method, path, body in batch:
            r = api(method, path, json=body) if body is not None else api(method, path)
            assert 400 <= r.status_code < 500, (method, path, body, r.status_code, r.text)
            fault = next(iter(r.json().values()))
            assert fault["code"] == r.status_code and fault["message"], (path, r.text)
    assert demo_api("GET", f"/volumes/{vid}").json()["volume"]["status"] == "available"
    assert demo_api("DELETE", f"/volumes/{vid}").status_code == 202


def test_failures_leave_a_message_for_the_owner(demo_api, admin_api, other_project):
    # Disable every agent: a new volume fails at once, with a reason and a user message.
    services = admin_api("GET", "/os-services").json()["services"]
    for svc in services:
        assert admin_api("PUT", "/os-services/disable", json={"host": svc["host"], "binary": svc["binary"]}
                         ).status_code == 200
    try:
        r = demo_api("POST", "/volumes", json={"volume": {"size": 1, "name": "doomed"}})
        assert r.status_code == 202
        vol = r.json()["volume"]
        assert vol["status"] == "error" and "No valid host" in vol["error_reason"]
    finally:
        for svc in services:
            admin_api("PUT", "/os-services/enable", json={"host": svc["host"], "binary": svc["binary"]})
    assert demo_api("GET", "/messages", version="3.2").status_code == 404
    msgs = demo_api("GET", f"/messages?resource_uuid={vol['id']}").json()["messages"]
    assert len(msgs) == 1 and msgs[0]["message_level"] == "ERROR" and msgs[0]["resource_type"] == "VOLUME"
    assert "No valid host" in msgs[0]["user_message"]
    assert other_project("GET", f"/messages/{msgs[0]['id']}").status_code == 404  # another project's message
    assert msgs[0]["id"] not in [x["id"] for x in other_project("GET", "/messages").json()["messages"]]
    assert demo_api("DELETE", f"/messages/{msgs[0]['id']}").status_code == 204
    assert demo_api("GET", f"/messages/{msgs[0]['id']}").status_code == 404
    assert demo_api("DELETE", f"/volumes/{vol['id']}").status_code == 202


def test_private_types_are_visible_only_to_their_projects(admin_api, demo_api, other_project):
    r = admin_api("POST", "/types", json={"volume_type": {"name": "private-gold", "is_public": False,
                                                          "extra_specs": {"tier": "gold"}}})
    assert r.status_code == 200, r.text
    tid = r.json()["volume_type"]["id"]
    try:
        assert admin_api("POST", f"/types/{tid}/action", json={"addProjectAccess": {"project": demo_api.project_id}}
                         ).status_code == 202
        assert admin_api("GET", f"/types/{tid}/os-volume-type-access").json()["volume_type_access"] == [
            {"volume_type_id": tid, "project_id": demo_api.project_id}]
        assert demo_api("GET", f"/types/{tid}").json()["volume_type"]["extra_specs"] == {"tier": "gold"}
        assert tid in [t["id"] for t in demo_api("GET", "/types").json()["volume_types"]]
        assert other_project("GET", f"/types/{tid}").status_code == 404
        assert tid not in [t["id"] for t in other_project("GET", "/types").json()["volume_types"]]
        r = other_project("POST", "/volumes", json={"volume": {"size": 1, "volume_type": tid}})
        assert r.status_code == 404
        assert other_project("POST", f"/types/{tid}/extra_specs", json={"extra_specs": {"a": "b"}}).status_code == 403
        # Per-type quota: none of this type for the demo project.
        assert admin_api("PUT", f"/os-quota-sets/{demo_api.project_id}",
                         json={"quota_set": {"volumes_private-gold": 0}}).status_code == 200
        r = demo_api("POST", "/volumes", json={"volume": {"size": 1, "volume_type": "private-gold"}})
        assert r.status_code == 413 and "volumes_private-gold" in r.json()["overLimit"]["message"]
    finally:
        admin_api("PUT", f"/os-quota-sets/{demo_api.project_id}", json={"quota_set": {"volumes_private-gold": -1}})
        assert admin_api("DELETE", f"/types/{tid}").status_code == 202
