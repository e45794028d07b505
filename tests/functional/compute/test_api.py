"""Compute API behaviour through httpx: refusals, tenancy, microversions, scheduling, races."""

from __future__ import annotations

import concurrent.futures
import time

import httpx


def test_discovery_and_microversions(ccloud):
    for path in ("/compute", "/compute/", "/compute/v2.1", "/compute/v2.1/"):
        r = httpx.get(ccloud.url + path, timeout=10)
        assert r.status_code == 200, path
        assert r.headers["x-compute-request-id"].startswith("req-")
    doc = httpx.get(ccloud.url + "/compute/v2.1", timeout=10).json()["version"]
    assert doc["min_version"] == "2.1" and doc["version"] == "2.100"
    tok = ccloud.token("demo")
    r = httpx.get(f"{ccloud.url}/compute/v2.1/flavors", timeout=10,
                  headers={"X-Auth-Token": tok, "OpenStack-API-Version": "compute 2.101"})
    assert r.status_code == 406 and "notAcceptable" in r.json() or r.status_code == 406
    r = httpx.get(f"{ccloud.url}/compute/v2.1/flavors/1", timeout=10,
                  headers={"X-Auth-Token": tok, "X-OpenStack-Nova-API-Version": "2.61"})
    assert r.headers["openstack-api-version"] == "compute 2.61"
    assert r.headers["x-openstack-nova-api-version"] == "2.61"
    assert r.json()["flavor"]["extra_specs"] == {}
    old = httpx.get(f"{ccloud.url}/compute/v2.1/flavors/1", timeout=10, headers={"X-Auth-Token": tok}).json()
    assert "extra_specs" not in old["flavor"] and "description" not in old["flavor"]
    # the legacy URL form with the project id
    project = httpx.get(f"{ccloud.url}/identity/v3/auth/tokens", timeout=10,
                        headers={"X-Auth-Token": tok, "X-Subject-Token": tok}).json()["token"]["project"]["id"]
    r = httpx.get(f"{ccloud.url}/compute/v2.1/{project}/flavors", timeout=10, headers={"X-Auth-Token": tok})
    assert r.status_code == 200 and len(r.json()["flavors"]) >= 5
    unauth = httpx.get(f"{ccloud.url}/compute/v2.1/servers", timeout=10)
    assert unauth.status_code == 401 and "unauthorized" in unauth.json()


def test_keypair_shapes(demo):
    r = demo.post("/os-keypairs", json={"keypair": {"name": "gen"}},
                  headers={"OpenStack-API-Version": "compute 2.10"})
    assert r.status_code == 201 and "private_key" in r.json()["keypair"]
    listed = demo.get("/os-keypairs", headers={"OpenStack-API-Version": "compute 2.10"}).json()
    assert listed["keypairs"][0]["keypair"]["name"] == "gen"
    r = demo.post("/os-keypairs", json={"keypair": {"name": "gen2"}})  # 2.100: generation removed
    assert r.status_code == 400 and "public_key" in r.text
    r = demo.post("/os-keypairs", json={"keypair": {"name": "bad", "public_key": "ssh-rsa !!!"}})
    assert r.status_code == 400
    old = demo.delete("/os-keypairs/gen", headers={"OpenStack-API-Version": "compute 2.1"})
    assert old.status_code == 202


def test_refusals(ccloud, demo, other, admin, image):
    # unknown flavor / image → 400
    r = demo.post("/servers", json={"server": {"name": "x", "imageRef": image, "flavorRef": "nope",
                                               "networks": "none"}})
    assert r.status_code == 400 and "Flavor nope could not be found" in r.json()["badRequest"]["message"]
    r = demo.post("/servers", json={"server": {"name": "x", "imageRef": "00000000-0000-0000-0000-000000000000",
                                               "flavorRef": "1", "networks": "none"}})
    assert r.status_code == 400 and "could not be found" in r.text
    r = demo.post("/servers", json={"server": {"name": "x", "imageRef": image, "flavorRef": "1"}})
    assert r.status_code == 400 and "networks" in r.text
    r = demo.post("/servers", json={"server": {"name": "x", "imageRef": image, "flavorRef": "1",
                                               "networks": "auto"}})
    assert r.status_code == 400 and "network service is not available" in r.text
    r = demo.post("/servers", json={"server": {"name": "x", "imageRef": image, "flavorRef": "1",
                                               "networks": "none", "bogus": 1}})
    assert r.status_code == 400 and "bogus" in r.text

    srv = demo.create("mine", image)
    demo.wait(srv["id"], "ACTIVE")
    # another project's server → 404 everywhere
    assert other.get(f"/servers/{srv['id']}").status_code == 404
    assert other.delete(f"/servers/{srv['id']}").status_code == 404
    assert other.post(f"/servers/{srv['id']}/action", json={"os-stop": None}).status_code == 404
    assert other.get(f"/servers/{srv['id']}/os-instance-actions").status_code == 404
    assert other.get(f"/servers/{srv['id']}/metadata").status_code == 404
    assert srv["id"] not in {s["id"] for s in other.get("/servers").json()["servers"]}
    assert other.get("/servers?all_tenants=1").status_code == 403
    assert other.get(f"/os-quota-sets/{ccloud.osc('project show demo')['id']}").status_code == 403
    # wrong state → 409 naming it
    r = demo.post(f"/servers/{srv['id']}/action", json={"os-start": None})
    assert r.status_code == 409 and "vm_state active" in r.json()["conflictingRequest"]["message"]
    r = demo.post(f"/servers/{srv['id']}/action", json={"confirmResize": None})
    assert r.status_code == 409
    # a member calling migrate / evacuate → 403; admin may
    r = demo.post(f"/servers/{srv['id']}/action", json={"migrate": None})
    assert r.status_code == 403 and "forbidden" in r.json()
    assert demo.get("/os-hypervisors").status_code == 403
    assert demo.get("/os-services").status_code == 403
    before = admin.get(f"/servers/{srv['id']}").json()["server"]["OS-EXT-SRV-ATTR:host"]
    r = admin.post(f"/servers/{srv['id']}/action", json={"migrate": None})
    assert r.status_code == 202, r.text
    moved = demo.wait(srv["id"], "VERIFY_RESIZE")
    after = admin.get(f"/servers/{srv['id']}").json()["server"]["OS-EXT-SRV-ATTR:host"]
    assert after != before
    assert demo.post(f"/servers/{srv['id']}/action", json={"revertResize": None}).status_code == 202
    demo.wait(srv["id"], "ACTIVE")
    assert admin.get(f"/servers/{srv['id']}").json()["server"]["OS-EXT-SRV-ATTR:host"] == before
    assert moved["flavor"]["original_name"] == "m1.tiny"
    # locked servers refuse changes
    assert demo.post(f"/servers/{srv['id']}/action", json={"lock": {"locked_reason": "keep"}}).status_code == 202
    shown = demo.get(f"/servers/{srv['id']}").json()["server"]
    assert shown["locked"] is True and shown["locked_reason"] == "keep"
    assert demo.delete(f"/servers/{srv['id']}").status_code == 409
    assert demo.post(f"/servers/{srv['id']}/action", json={"unlock": None}).status_code == 202
    assert demo.delete(f"/servers/{srv['id']}").status_code == 204
    demo.wait(srv["id"], "DELETED")


def test_quota_exceeded_names_resource(ccloud, demo, admin, image):
    project = ccloud.osc("project show demo")["id"]
    assert admin.put(f"/os-quota-sets/{project}", json={"quota_set": {"instances": 2}}).status_code == 200
    try:
        a = demo.create("q1", image)
        b = demo.create("q2", image)
        r = demo.post("/servers", json={"server": {"name": "q3", "imageRef": image, "flavorRef": "1",
                                                   "networks": "none"}})
        assert r.status_code == 403
        msg = r.json()["forbidden"]["message"]
        assert "instances" in msg and "Requested 1" in msg and "used 2 of 2" in msg
        detail = demo.get(f"/os-quota-sets/{project}/detail").json()["quota_set"]
        assert detail["instances"] == {"limit": 2, "in_use": 2, "reserved": 0}
        for s in (a, b):
            demo.delete(f"/servers/{s['id']}")
        for s in (a, b):
            demo.wait(s["id"], "DELETED")
        assert demo.get(f"/os-quota-sets/{project}/detail").json()["quota_set"]["instances"]["in_use"] == 0
    finally:
        admin.delete(f"/os-quota-sets/{project}")


def test_quota_race_never_exceeds(ccloud, demo, admin, image):
    project = ccloud.osc("project show demo")["id"]
    assert admin.put(f"/os-quota-sets/{project}", json={"quota_set": {"instances": 5}}).status_code == 200
    try:
        body = {"server": {"name": "race", "imageRef": image, "flavorRef": "1", "networks": "none"}}
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: demo.client.post("/servers", json=body), range(16)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(202) == 5 and codes.count(403) == 11, codes
        listed = demo.get("/servers?name=^race$").json()["servers"]
        assert len(listed) == 5
        for s in listed:
            demo.delete(f"/servers/{s['id']}")
        for s in listed:
            demo.wait(s["id"], "DELETED")
    finally:
        admin.delete(f"/os-quota-sets/{project}")


def test_no_host_fits_says_why(demo, image, admin):
    r = admin.post("/flavors", json={"flavor": {"name": "huge", "ram": 16384, "vcpus": 1, "disk": 1, "id": "huge"}})
    assert r.status_code == 200
    try:
        srv = demo.create("too-big", image, flavor="huge")
        shown = demo.wait(srv["id"], "ERROR")
        msg = shown["fault"]["message"]
        assert "3 hosts" in msg and "lack RAM (need 16384 MB, max free" in msg, msg
        assert "No valid host" not in msg
        assert demo.delete(f"/servers/{srv['id']}").status_code == 204
        demo.wait(srv["id"], "DELETED")
    finally:
        admin.delete("/flavors/huge")


def test_concurrent_creates_never_overcommit(ccloud, demo, admin, image):
    """50 concurrent creates of 2 GB servers on 3 hosts of 8 GB: exactly 12 fit, no host over."""
    project = ccloud.osc("project show demo")["id"]
    admin.put(f"/os-quota-sets/{project}", json={"quota_set": {"instances": 60, "cores": 100, "ram": 200000}})
    try:
        body = {"server": {"name": "burst", "imageRef": image, "flavorRef": "2", "networks": "none"}}
        with concurrent.futures.ThreadPoolExecutor(25) as pool:
            results = list(pool.map(lambda _: demo.client.post("/servers", json=body), range(50)))
        assert all(r.status_code == 202 for r in results), [r.text for r in results if r.status_code != 202][:2]
        ids = [r.json()["server"]["id"] for r in results]
        final = {i: demo.wait(i, {"ACTIVE", "ERROR"}, timeout=60) for i in ids}
        active = [i for i, s in final.items() if s["status"] == "ACTIVE"]
        assert len(active) == 12, len(active)
        for hv in admin.get("/os-hypervisors/detail", headers={"OpenStack-API-Version": "compute 2.87"}).json()[
                "hypervisors"]:
            assert hv["memory_mb_used"] <= hv["memory_mb"]
        for i in ids:
            demo.delete(f"/servers/{i}")
        for i in ids:
            demo.wait(i, "DELETED", timeout=60)
        for hv in admin.get("/os-hypervisors/detail", headers={"OpenStack-API-Version": "compute 2.87"}).json()[
                "hypervisors"]:
            assert hv["memory_mb_used"] == 0 and hv["running_vms"] == 0
    finally:
        admin.delete(f"/os-quota-sets/{project}")


def test_disabled_host_gets_no_work(demo, admin, image):
    services = admin.get("/os-services?binary=nova-compute").json()["services"]
    assert len(services) == 3
    victims = services[:2]
    for s in victims:
        r = admin.put(f"/os-services/{s['id']}", json={"status": "disabled", "disabled_reason": "test"})
        assert r.status_code == 200 and r.json()["service"]["status"] == "disabled"
    try:
        time.sleep(1.5)  # the scheduler's refresh interval in this cloud is 0.5 s
        ids = [demo.create(f"dis-{i}", image)["id"] for i in range(3)]
        hosts = {admin.get(f"/servers/{i}").json()["server"]["OS-EXT-SRV-ATTR:host"]
                 for i in ids if demo.wait(i, "ACTIVE")}
        assert hosts == {services[2]["host"]}
        for i in ids:
            demo.delete(f"/servers/{i}")
            demo.wait(i, "DELETED")
    finally:
        for s in victims:
            admin.put(f"/os-services/{s['id']}", json={"status": "enabled"})


def test_list_filters_and_pagination(demo, image):
    ids = [demo.create(f"page-{i}", image, metadata={"n": str(i)})["id"] for i in range(5)]
    try:
        for i in ids:
            demo.wait(i, "ACTIVE")
        r = demo.get("/servers/detail?deleted=False&limit=2")
        body = r.json()
        assert len(body["servers"]) == 2 and body["servers_links"][0]["rel"] == "next"
        nxt = demo.client.get(body["servers_links"][0]["href"]).json()
        assert len(nxt["servers"]) == 2 and not {s["id"] for s in nxt["servers"]} & {s["id"] for s in body["servers"]}
        assert len(demo.get("/servers?name=page-[13]").json()["servers"]) == 2
        assert len(demo.get(f"/servers?image={image}&status=ACTIVE&flavor=1").json()["servers"]) >= 5
        assert demo.get("/servers?status=BOGUS").status_code == 400
        assert demo.get("/servers?unknown_filter=1").status_code == 400
        assert demo.put(f"/servers/{ids[0]}/tags/blue").status_code == 201
        assert [s["id"] for s in demo.get("/servers?tags=blue").json()["servers"]] == [ids[0]]
        assert demo.get("/servers?changes-since=2000-01-01T00:00:00Z").status_code == 200
        assert demo.get("/flavors/detail?is_public=None").status_code == 200
    finally:
        for i in ids:
            demo.delete(f"/servers/{i}")
        for i in ids:
            demo.wait(i, "DELETED")


def test_instance_actions_and_console(demo, image):
    srv = demo.create("act", image)
    demo.wait(srv["id"], "ACTIVE")
    assert demo.post(f"/servers/{srv['id']}/action", json={"reboot": {"type": "HARD"}}).status_code == 202
    demo.wait(srv["id"], "ACTIVE")
    actions = demo.get(f"/servers/{srv['id']}/os-instance-actions").json()["instanceActions"]
    assert [a["action"] for a in actions][:2] == ["reboot", "create"]
    detail = demo.get(f"/servers/{srv['id']}/os-instance-actions/{actions[0]['request_id']}").json()
    events = detail["instanceAction"]["events"]
    assert events and events[0]["result"] == "Success" and "traceback" not in events[0]
    out = demo.post(f"/servers/{srv['id']}/action", json={"os-getConsoleOutput": {"length": 1}})
    assert out.status_code == 200 and out.json()["output"].count("\n") == 1
    demo.delete(f"/servers/{srv['id']}")
    demo.wait(srv["id"], "DELETED")
    # history stays readable after delete
    assert demo.get(f"/servers/{srv['id']}/os-instance-actions").status_code == 200


def test_external_events(demo, admin, image):
    srv = demo.create("ev", image)
    demo.wait(srv["id"], "ACTIVE")
    event = {"name": "volume-extended", "server_uuid": srv["id"], "tag": "vol-1"}
    r = admin.post("/os-server-external-events", json={"events": [event]})
    assert r.status_code == 200 and r.json()["events"][0]["code"] == 200
    r = admin.post("/os-server-external-events",
                   json={"events": [event, {**event, "server_uuid": "00000000-0000-0000-0000-000000000000"}]})
    assert r.status_code == 207
    assert admin.post("/os-server-external-events", json={"events": [{**event, "name": "bogus"}]}).status_code == 400
    assert demo.post("/os-server-external-events", json={"events": [event]}).status_code == 403
    demo.delete(f"/servers/{srv['id']}")
    demo.wait(srv["id"], "DELETED")


def test_aggregate_zone_and_evacuate(demo, admin, image):
    hosts = sorted(h["service"]["host"] for h in admin.get("/os-hypervisors/detail").json()["hypervisors"])
    r = admin.post("/os-aggregates", json={"aggregate": {"name": "agg-z", "availability_zone": "zone-b"}})
    assert r.status_code == 200, r.text
    agg = r.json()["aggregate"]
    try:
        r = admin.post(f"/os-aggregates/{agg['id']}/action", json={"add_host": {"host": hosts[0]}})
        assert r.status_code == 200 and r.json()["aggregate"]["hosts"] == [hosts[0]]
        zones = {z["zoneName"] for z in demo.get("/os-availability-zone").json()["availabilityZoneInfo"]}
        assert {"zone-b", "nova"} <= zones
        time.sleep(1.5)  # scheduler refresh
        srv = demo.create("zoned", image, availability_zone="zone-b")
        shown = demo.wait(srv["id"], "ACTIVE")
        assert shown["OS-EXT-AZ:availability_zone"] == "zone-b"
        assert admin.get(f"/servers/{srv['id']}").json()["server"]["OS-EXT-SRV-ATTR:host"] == hosts[0]
        bad = demo.post("/servers", json={"server": {"name": "nozone", "imageRef": image, "flavorRef": "1",
                                                     "networks": "none", "availability_zone": "nowhere"}})
        assert bad.status_code == 400
        # Evacuate: refused while the host is up, allowed once it is forced down.
        assert admin.post(f"/servers/{srv['id']}/action", json={"evacuate": {}}).status_code == 409
        assert demo.post(f"/servers/{srv['id']}/action", json={"evacuate": {}}).status_code == 403
        svc_id = next(s["id"] for s in admin.get(f"/os-services?host={hosts[0]}").json()["services"])
        assert admin.put(f"/os-services/{svc_id}", json={"forced_down": True}).status_code == 200
        try:
            # zone-b has only the dead host, so the server cannot leave it: a clear 400.
            r = admin.post(f"/servers/{srv['id']}/action", json={"evacuate": {}})
            assert r.status_code == 400 and "zone" in r.text, r.text
            admin.post(f"/os-aggregates/{agg['id']}/action", json={"remove_host": {"host": hosts[0]}})
            admin.put(f"/os-aggregates/{agg['id']}", json={"aggregate": {"availability_zone": None}})
        finally:
            admin.put(f"/os-services/{svc_id}", json={"forced_down": False})
        demo.delete(f"/servers/{srv['id']}")
        demo.wait(srv["id"], "DELETED")
    finally:
        for h in hosts:
            admin.post(f"/os-aggregates/{agg['id']}/action", json={"remove_host": {"host": h}})
        assert admin.delete(f"/os-aggregates/{agg['id']}").status_code == 200


def test_evacuate_moves_server_off_a_dead_host(demo, admin, image):
    srv = demo.create("evac", image)
    demo.wait(srv["id"], "ACTIVE")
    host = admin.get(f"/servers/{srv['id']}").json()["server"]["OS-EXT-SRV-ATTR:host"]
    svc_id = next(s["id"] for s in admin.get(f"/os-services?host={host}").json()["services"])
    assert admin.put(f"/os-services/{svc_id}", json={"forced_down": True}).status_code == 200
    try:
        r = admin.post(f"/servers/{srv['id']}/action", json={"evacuate": {}})
        assert r.status_code == 200, r.text
        demo.wait(srv["id"], "ACTIVE")
        moved = admin.get(f"/servers/{srv['id']}").json()["server"]
        assert moved["OS-EXT-SRV-ATTR:host"] != host
        assert "evacuate" in [a["action"] for a in demo.get(f"/servers/{srv['id']}/os-instance-actions").json()[
            "instanceActions"]]
    finally:
        admin.put(f"/os-services/{svc_id}", json={"forced_down": False})
    demo.delete(f"/servers/{srv['id']}")
    demo.wait(srv["id"], "DELETED")


def test_multi_create_and_more_actions(demo, image):
    r = demo.post("/servers", json={"server": {"name": "multi", "imageRef": image, "flavorRef": "1",
                                               "networks": "none", "min_count": 2, "max_count": 3,
                                               "return_reservation_id": True}})
    assert r.status_code == 202 and r.json()["reservation_id"].startswith("r-")
    listed = demo.get(f"/servers/detail?reservation_id={r.json()['reservation_id']}").json()["servers"]
    assert sorted(s["name"] for s in listed) == ["multi-1", "multi-2", "multi-3"]
    sid = listed[0]["id"]
    demo.wait(sid, "ACTIVE")
    for action, status in (("suspend", "SUSPENDED"), ("resume", "ACTIVE"), ("rescue", "RESCUE"),
                           ("unrescue", "ACTIVE")):
        r = demo.post(f"/servers/{sid}/action", json={action: None})
        assert r.status_code in (200, 202), (action, r.text)
        demo.wait(sid, status)
    r = demo.post(f"/servers/{sid}/action", json={"resume": None})
    assert r.status_code == 409 and "vm_state active" in r.text
    assert demo.post(f"/servers/{sid}/action", json={"shelve": None}).status_code == 400
    assert demo.post(f"/servers/{sid}/action", json={"nonsense": None}).status_code == 400
    r = demo.post(f"/servers/{sid}/remote-consoles", json={"remote_console": {"protocol": "spice", "type": "x"}})
    assert r.status_code == 400
    for s in listed:
        demo.wait(s["id"], "ACTIVE")
        demo.delete(f"/servers/{s['id']}")
    for s in listed:
        demo.wait(s["id"], "DELETED")
