"""The Networking API over HTTP: list semantics, faults, IPAM under concurrency, the compute binding
contract and tenancy on every endpoint."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid

import httpx
import pytest

from tests.functional.network.conftest import AGENT_HOST


def _tag() -> str:
    return uuid.uuid4().hex[:8]


def make_net(api, cidr: str, **extra) -> tuple[dict, dict]:
    r = api("POST", "/networks", json={"network": {"name": f"n-{_tag()}", **extra}})
    assert r.status_code == 201, r.text
    net = r.json()["network"]
    r = api("POST", "/subnets", json={"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": cidr}})
    assert r.status_code == 201, r.text
    return net, r.json()["subnet"]


def drop_net(api, net_id: str) -> None:
    for p in api("GET", f"/ports?network_id={net_id}").json()["ports"]:
        if p["device_owner"] != "network:dhcp":
            api("DELETE", f"/ports/{p['id']}")
    assert api("DELETE", f"/networks/{net_id}").status_code == 204


def test_discovery_without_token(ncloud):
    r = httpx.get(f"{ncloud.url}/network/")
    assert r.status_code == 200 and r.json()["versions"][0]["id"] == "v2.0"
    assert httpx.get(f"{ncloud.url}/network").status_code == 200
    r = httpx.get(f"{ncloud.url}/network/v2.0")
    assert {x["collection"] for x in r.json()["resources"]} >= {"networks", "ports", "security-groups"}
    r = httpx.get(f"{ncloud.url}/network/v2.0/networks")
    assert r.status_code == 401 and "NeutronError" in r.json()


def test_fault_style_and_bad_inputs_are_4xx(demo_api):
    r = demo_api("GET", f"/networks/{uuid.uuid4()}")
    assert r.status_code == 404
    assert r.json()["NeutronError"]["type"] == "NetworkNotFound"
    bad = [
        ("POST", "/networks", {"content": b"{not json"}),
        ("POST", "/networks", {"json": ["a"]}),
        ("POST", "/networks", {"json": {"network": {"name": 5}}}),
        ("POST", "/networks", {"json": {"network": {"admin_state_up": "maybe"}}}),
        ("POST", "/subnets", {"json": {"subnet": {"network_id": "x", "ip_version": 4}}}),
        ("POST", "/subnets", {"json": {"subnet": {"network_id": "x", "ip_version": 5, "cidr": "10.0.0.0/24"}}}),
        ("POST", "/ports", {"json": {"port": {}}}),
        ("POST", "/security-group-rules", {"json": {"security_group_rule": {"direction": "sideways",
                                                                             "security_group_id": "x"}}}),
        ("PUT", "/networks/abc", {"json": {"network": {"id": "other"}}}),
        ("GET", "/networks?limit=-3", {}),
        ("GET", "/networks?sort_key=name&sort_dir=sideways", {}),
        ("GET", "/extensions/no-such-thing", {}),
        ("GET", "/quotas/someone-else", {}),
    ]
    for method, path, kw in bad:
        r = demo_api(method, path, **kw)
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
        assert "NeutronError" in r.json(), r.text
    net, sub = make_net(demo_api, "10.70.0.0/24")
    try:
        cases = [
            {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.71.0.5/24"}},
            {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.72.0.0/24", "gateway_ip": "10.9.9.9"}},
            {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.73.0.0/24",
                        "allocation_pools": [{"start": "10.73.0.200", "end": "10.73.1.5"}]}},
            {"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.70.0.0/25"}},
        ]
        for body in cases:
            r = demo_api("POST", "/subnets", json=body)
            assert r.status_code == 400, (body, r.text)
        r = demo_api("POST", "/ports", json={"port": {"network_id": net["id"], "mac_address": "zz:00"}})
        assert r.status_code == 400
        r = demo_api("POST", "/ports", json={"port": {"network_id": net["id"], "fixed_ips": [
            {"subnet_id": sub["id"], "ip_address": "10.70.1.1"}]}})
        assert r.status_code == 400 and r.json()["NeutronError"]["type"] == "InvalidIpForSubnet"
    finally:
        drop_net(demo_api, net["id"])


def test_fields_filters_sorting_and_pagination(demo_api):
    tag = _tag()
    ids = []
    for i in range(5):
        r = demo_api("POST", "/networks", json={"network": {"name": f"pg-{tag}-{i}", "tags": [tag],
                                                            "admin_state_up": i % 2 == 0}})
        assert r.status_code == 201
        ids.append(r.json()["network"]["id"])
    try:
        r = demo_api("GET", f"/networks?tags={tag}&fields=id&fields=name")
        assert all(set(n) == {"id", "name"} for n in r.json()["networks"]) and len(r.json()["networks"]) == 5
        r = demo_api("GET", f"/networks?name=pg-{tag}-1&name=pg-{tag}-3")
        assert sorted(n["name"] for n in r.json()["networks"]) == [f"pg-{tag}-1", f"pg-{tag}-3"]
        r = demo_api("GET", f"/networks?tags={tag}&admin_state_up=false")
        assert sorted(n["name"] for n in r.json()["networks"]) == [f"pg-{tag}-1", f"pg-{tag}-3"]
        r = demo_api("GET", f"/networks?tags={tag}&sort_key=name&sort_dir=desc")
        assert [n["name"] for n in r.json()["networks"]] == [f"pg-{tag}-{i}" for i in range(4, -1, -1)]
        seen, url = [], f"/networks?tags={tag}&limit=2&sort_key=name&sort_dir=asc"
        for _ in range(5):
            body = demo_api("GET", url).json()
            seen += [n["name"] for n in body["networks"]]
            nxt = [link["href"] for link in body.get("networks_links", []) if link["rel"] == "next"]
            if not nxt:
                break
            url = nxt[0].split("/v2.0", 1)[1]
        assert seen == [f"pg-{tag}-{i}" for i in range(5)]
    finally:
        for i in ids:
            demo_api("DELETE", f"/networks/{i}")


def test_tags_api(demo_api):
    net, _ = make_net(demo_api, "10.74.0.0/24")
    try:
        path = f"/networks/{net['id']}/tags"
        assert demo_api("PUT", path, json={"tags": ["b", "a"]}).json() == {"tags": ["a", "b"]}
        assert demo_api("PUT", f"{path}/c").status_code == 201
        assert demo_api("GET", f"{path}/c").status_code == 204
        assert demo_api("DELETE", f"{path}/a").status_code == 204
        assert demo_api("GET", f"{path}/a").status_code == 404
        assert demo_api("GET", path).json() == {"tags": ["b", "c"]}
        assert demo_api("DELETE", path).status_code == 204
        assert demo_api("GET", f"/networks/{net['id']}").json()["network"]["tags"] == []
    finally:
        drop_net(demo_api, net["id"])


def test_fifty_concurrent_port_creates_never_share_an_address(ncloud, demo_api):
    net, sub = make_net(demo_api, "10.75.0.0/24")
    small, small_sub = make_net(demo_api, "10.76.0.0/28")  # 13 addresses, one taken by DHCP
    token = demo_api.client.headers["X-Auth-Token"]

    async def burst(network_id: str, n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, headers={"X-Auth-Token": token}) as c:
            return await asyncio.gather(*[c.post(f"{demo_api.base}/ports", json={"port": {
                "network_id": network_id}}) for _ in range(n)])

    try:
        results = asyncio.run(burst(net["id"], 50))
        assert [r.status_code for r in results] == [201] * 50, [r.text for r in results if r.status_code != 201]
        ips = [r.json()["port"]["fixed_ips"][0]["ip_address"] for r in results]
        assert len(set(ips)) == 50
        assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.75.0.0/24") for ip in ips)
        results = asyncio.run(burst(small["id"], 16))
        ok = [r for r in results if r.status_code == 201]
        full = [r for r in results if r.status_code == 409]
        assert len(ok) == 12 and len(full) == 4, [r.status_code for r in results]
        assert all(r.json()["NeutronError"]["type"] == "IpAddressGenerationFailure" for r in full)
        assert len({r.json()["port"]["fixed_ips"][0]["ip_address"] for r in ok}) == 12
    finally:
        drop_net(demo_api, net["id"])
        drop_net(demo_api, small["id"])


def _wait_status(api, port_id: str, status: str) -> dict:
    import time

    deadline = time.monotonic() + 10
    while True:
        port = api("GET", f"/ports/{port_id}").json()["port"]
        if port["status"] == status or time.monotonic() > deadline:
            return port
        time.sleep(0.1)


def test_compute_binding_contract(admin_api, demo_api):
    net, sub = make_net(demo_api, "10.77.0.0/24")
    server = str(uuid.uuid4())
    try:
        # What compute sends when it creates the port for a server on this host.
        r = admin_api("POST", "/ports", json={"port": {"network_id": net["id"], "device_id": server,
                                                       "device_owner": "compute:nova",
                                                       "binding:host_id": AGENT_HOST,
                                                       "project_id": net["project_id"]}})
        assert r.status_code == 201, r.text
        port = r.json()["port"]
        assert port["binding:vif_type"] == "bridge"
        assert port["binding:vif_details"]["bridge_name"] == f"brq{net['id'][:11]}"
        assert port["binding:vif_details"]["port_filter"] is True
        assert port["mac_address"].startswith("fa:16:3e:")
        subnet = admin_api("GET", f"/subnets/{port['fixed_ips'][0]['subnet_id']}").json()["subnet"]
        assert subnet["cidr"] == "10.77.0.0/24" and subnet["gateway_ip"] == "10.77.0.1"
        assert _wait_status(admin_api, port["id"], "ACTIVE")["status"] == "ACTIVE"
        # Listing by device_id is how compute finds its ports again.
        found = admin_api("GET", f"/ports?device_id={server}").json()["ports"]
        assert [p["id"] for p in found] == [port["id"]]
        # A user's own port handed to a server: compute binds it with PUT.
        mine = demo_api("POST", "/ports", json={"port": {"network_id": net["id"]}}).json()["port"]
        assert mine["binding:vif_type"] == "unbound"
        r = demo_api("PUT", f"/ports/{mine['id']}", json={"port": {"binding:host_id": AGENT_HOST}})
        assert r.status_code == 403
        r = admin_api("PUT", f"/ports/{mine['id']}", json={"port": {
            "device_id": server, "device_owner": "compute:nova", "binding:host_id": AGENT_HOST}})
        assert r.status_code == 200 and r.json()["port"]["binding:vif_type"] == "bridge"
        # Security groups on a server: compute replaces the port's list.
        sg = demo_api("POST", "/security-groups", json={"security_group": {"name": f"s-{_tag()}"}}).json()
        r = admin_api("PUT", f"/ports/{mine['id']}", json={"port": {"security_groups": [sg["security_group"]["id"]]}})
        assert r.json()["port"]["security_groups"] == [sg["security_group"]["id"]]
        # A host without an agent cannot bind.
        r = admin_api("POST", "/ports", json={"port": {"network_id": net["id"], "binding:host_id": "nowhere"}})
        assert r.json()["port"]["binding:vif_type"] == "binding_failed"
        admin_api("DELETE", f"/ports/{r.json()['port']['id']}")
        assert admin_api("DELETE", f"/ports/{port['id']}").status_code == 204
        assert admin_api("DELETE", f"/ports/{mine['id']}").status_code == 204
        assert demo_api("DELETE", f"/security-groups/{sg['security_group']['id']}").status_code == 204
    finally:
        drop_net(demo_api, net["id"])


def test_security_group_shapes(demo_api):
    groups = demo_api("GET", "/security-groups").json()["security_groups"]
    default = [g for g in groups if g["name"] == "default"]
    assert len(default) == 1 and len(default[0]["security_group_rules"]) == 4
    assert all(r["belongs_to_default_sg"] for r in default[0]["security_group_rules"])
    r = demo_api("DELETE", f"/security-groups/{default[0]['id']}")
    assert r.status_code == 409
    r = demo_api("POST", "/security-groups", json={"security_group": {"name": "default"}})
    assert r.status_code == 409
    r = demo_api("POST", "/security-group-rules", json={"security_group_rule": {
        "security_group_id": default[0]["id"], "direction": "ingress", "protocol": "icmp",
        "remote_ip_prefix": "::/0", "ethertype": "IPv4"}})
    assert r.status_code == 400


def test_router_interface_response_is_unenveloped(demo_api):
    net, sub = make_net(demo_api, "10.78.0.0/24")
    router = demo_api("POST", "/routers", json={"router": {"name": f"r-{_tag()}"}}).json()["router"]
    try:
        r = demo_api("PUT", f"/routers/{router['id']}/add_router_interface", json={"subnet_id": sub["id"]})
        assert r.status_code == 200
        body = r.json()
        assert set(body) >= {"id", "subnet_id", "subnet_ids", "port_id", "network_id", "project_id", "tenant_id"}
        assert body["id"] == router["id"] and body["subnet_ids"] == [sub["id"]]
        r = demo_api("PUT", f"/routers/{router['id']}/add_router_interface", json={"subnet_id": sub["id"]})
        assert r.status_code == 400
        r = demo_api("PUT", f"/routers/{router['id']}/remove_router_interface", json={"subnet_id": sub["id"]})
        assert r.status_code == 200 and r.json()["port_id"] == body["port_id"]
        r = demo_api("PUT", f"/routers/{router['id']}/remove_router_interface", json={"subnet_id": sub["id"]})
        assert r.status_code == 404
    finally:
        demo_api("DELETE", f"/routers/{router['id']}")
        drop_net(demo_api, net["id"])


def test_every_endpoint_refuses_another_project(demo_api, other, admin_api):
    net, sub = make_net(demo_api, "10.79.0.0/24")
    port = demo_api("POST", "/ports", json={"port": {"network_id": net["id"]}}).json()["port"]
    router = demo_api("POST", "/routers", json={"router": {"name": "mine"}}).json()["router"]
    public = [n for n in demo_api("GET", "/networks?router:external=true").json()["networks"]
              if n["name"] == "public"][0]
    fip = demo_api("POST", "/floatingips", json={"floatingip": {"floating_network_id": public["id"]}}).json()
    fip = fip["floatingip"]
    sg = demo_api("POST", "/security-groups", json={"security_group": {"name": "mine"}}).json()["security_group"]
    rule = sg["security_group_rules"][0]
    demo_project = net["project_id"]
    o = other.api
    try:
        for coll, ident, key in [("networks", net["id"], "network"), ("subnets", sub["id"], "subnet"),
                                 ("ports", port["id"], "port"), ("routers", router["id"], "router"),
                                 ("floatingips", fip["id"], "floatingip"), ("security-groups", sg["id"],
                                                                            "security_group")]:
            assert o("GET", f"/{coll}/{ident}").status_code == 404, coll
            assert o("PUT", f"/{coll}/{ident}", json={key: {"name": "stolen"}}).status_code == 404, coll
            assert o("DELETE", f"/{coll}/{ident}").status_code == 404, coll
            assert o("GET", f"/{coll}/{ident}/tags").status_code == 404, coll
            assert o("PUT", f"/{coll}/{ident}/tags/x").status_code == 404, coll
            listed = o("GET", f"/{coll}").json()[coll.replace("-", "_")]
            assert ident not in [x["id"] for x in listed], coll
        assert o("GET", f"/security-group-rules/{rule['id']}").status_code == 404
        assert o("DELETE", f"/security-group-rules/{rule['id']}").status_code == 404
        assert o("POST", "/security-group-rules", json={"security_group_rule": {
            "security_group_id": sg["id"], "direction": "ingress"}}).status_code == 404
        assert o("PUT", f"/routers/{router['id']}/add_router_interface",
                 json={"subnet_id": sub["id"]}).status_code == 404
        assert o("POST", "/ports", json={"port": {"network_id": net["id"]}}).status_code == 404
        assert o("PUT", f"/floatingips/{fip['id']}", json={"floatingip": {"port_id": port["id"]}}).status_code == 404
        assert o("GET", f"/quotas/{demo_project}").status_code == 403
        assert o("PUT", f"/quotas/{other.project_id}", json={"quota": {"network": 1000}}).status_code == 403
        assert o("GET", f"/auto-allocated-topology/{demo_project}").status_code == 404
        # Ports on the external network are the cloud's to make.
        assert o("POST", "/ports", json={"port": {"network_id": public["id"]}}).status_code == 403
        # The admin sees it all.
        assert admin_api("GET", f"/ports/{port['id']}").status_code == 200
    finally:
        demo_api("DELETE", f"/floatingips/{fip['id']}")
        demo_api("DELETE", f"/routers/{router['id']}")
        demo_api("DELETE", f"/security-groups/{sg['id']}")
        drop_net(demo_api, net["id"])


@pytest.mark.parametrize("path", ["/extensions", "/availability_zones", "/quotas/{project}/default",
                                  "/quotas/{project}/details"])
def test_small_endpoints(demo_api, path):
    project = demo_api("GET", "/security-groups").json()["security_groups"][0]["project_id"]
    r = demo_api("GET", path.format(project=project))
    assert r.status_code == 200, r.text
    if path.endswith("details"):
        assert r.json()["quota"]["security_group"]["used"] >= 1


GARBAGE = [None, 1, True, "x", "", [], {}, ["x"], [{"a": 1}], {"a": 1}, "a" * 3000]
FIELDS = {
    "networks": ("network", ["name", "admin_state_up", "shared", "router:external", "mtu", "port_security_enabled",
                             "provider:network_type", "provider:segmentation_id", "provider:physical_network",
                             "availability_zone_hints", "tags", "project_id"]),
    "subnets": ("subnet", ["network_id", "cidr", "ip_version", "gateway_ip", "allocation_pools", "dns_nameservers",
                           "host_routes", "enable_dhcp", "ipv6_address_mode"]),
    "ports": ("port", ["network_id", "fixed_ips", "mac_address", "device_id", "security_groups",
                       "allowed_address_pairs", "port_security_enabled", "binding:host_id", "binding:profile"]),
    "routers": ("router", ["name", "external_gateway_info", "routes", "admin_state_up", "distributed"]),
    "floatingips": ("floatingip", ["floating_network_id", "port_id", "fixed_ip_address", "floating_ip_address",
                                   "subnet_id"]),
    "security-group-rules": ("security_group_rule", ["security_group_id", "direction", "ethertype", "protocol",
                                                     "port_range_min", "port_range_max", "remote_ip_prefix",
                                                     "remote_group_id"]),
}


@pytest.mark.parametrize("api_name", ["demo_api", "admin_api"])
def test_wrong_types_never_cause_a_server_error(request, api_name):
    api = request.getfixturevalue(api_name)
    net, sub = make_net(api, "10.80.0.0/24")
    public = [n for n in api("GET", "/networks").json()["networks"] if n["name"] == "public"][0]
    sg = api("POST", "/security-groups", json={"security_group": {"name": f"f-{_tag()}"}}).json()["security_group"]
    valid = {"subnets": {"network_id": net["id"], "cidr": "10.81.0.0/24", "ip_version": 4},
             "ports": {"network_id": net["id"]}, "floatingips": {"floating_network_id": public["id"]},
             "security-group-rules": {"security_group_id": sg["id"], "direction": "ingress"}}
    server_errors = []
    try:
        for coll, (key, fields) in FIELDS.items():
            for field in fields:
                for value in GARBAGE:
                    body = {**valid.get(coll, {}), field: value}
                    r = api("POST", f"/{coll}", json={key: body})
                    if r.status_code >= 500:
                        server_errors.append((coll, field, value, r.status_code))
                    elif r.status_code == 201:
                        api("DELETE", f"/{coll}/{r.json()[key]['id']}")
        assert not server_errors
    finally:
        api("DELETE", f"/security-groups/{sg['id']}")
        drop_net(api, net["id"])


def test_router_port_interface_extra_routes_and_bulk_create(demo_api):
    net, sub = make_net(demo_api, "10.82.0.0/24")
    router = demo_api("POST", "/routers", json={"router": {"name": f"r-{_tag()}"}}).json()["router"]
    try:
        port = demo_api("POST", "/ports", json={"port": {"network_id": net["id"], "fixed_ips": [
            {"subnet_id": sub["id"], "ip_address": "10.82.0.254"}]}}).json()["port"]
        r = demo_api("PUT", f"/routers/{router['id']}/add_router_interface", json={"port_id": port["id"]})
        assert r.status_code == 200 and r.json()["port_id"] == port["id"]
        owned = demo_api("GET", f"/ports/{port['id']}").json()["port"]
        assert owned["device_owner"] == "network:router_interface" and owned["device_id"] == router["id"]
        # A router's port is not deleted through the port API.
        assert demo_api("DELETE", f"/ports/{port['id']}").status_code == 409
        routes = [{"destination": "10.99.0.0/16", "nexthop": "10.82.0.7"}]
        r = demo_api("PUT", f"/routers/{router['id']}/add_extraroutes", json={"router": {"routes": routes}})
        assert r.status_code == 200 and r.json()["router"]["routes"] == routes
        r = demo_api("PUT", f"/routers/{router['id']}", json={"router": {"routes": [{"destination": "x"}]}})
        assert r.status_code == 400
        r = demo_api("PUT", f"/routers/{router['id']}/remove_extraroutes", json={"router": {"routes": routes}})
        assert r.json()["router"]["routes"] == []
        r = demo_api("PUT", f"/routers/{router['id']}/remove_router_interface", json={"port_id": port["id"]})
        assert r.status_code == 200 and r.json()["subnet_ids"] == [sub["id"]]
        # Bulk create is all or nothing: the second port's address is taken, so neither is made.
        before = len(demo_api("GET", f"/ports?network_id={net['id']}").json()["ports"])
        r = demo_api("POST", "/ports", json={"ports": [
            {"network_id": net["id"], "name": "bulk-1"},
            {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.82.0.1"}]}]})
        assert r.status_code == 409
        assert len(demo_api("GET", f"/ports?network_id={net['id']}").json()["ports"]) == before
        r = demo_api("POST", "/ports", json={"ports": [{"network_id": net["id"], "name": "bulk-1", "tags": ["t"]},
                                                         {"network_id": net["id"], "name": "bulk-2"}]})
        assert r.status_code == 201 and [p["name"] for p in r.json()["ports"]] == ["bulk-1", "bulk-2"]
        assert r.json()["ports"][0]["tags"] == ["t"]
    finally:
        demo_api("DELETE", f"/routers/{router['id']}")
        drop_net(demo_api, net["id"])


def test_port_security_groups_by_name_as_compute_sends_them(admin_api, demo_api):
    net, _ = make_net(demo_api, "10.83.0.0/24")
    name = f"web-{_tag()}"
    sg = demo_api("POST", "/security-groups", json={"security_group": {"name": name}}).json()["security_group"]
    try:
        r = admin_api("POST", "/ports", json={"port": {"network_id": net["id"], "project_id": net["project_id"],
                                                       "security_groups": ["default", name]}})
        assert r.status_code == 201, r.text
        default = demo_api("GET", "/security-groups?name=default").json()["security_groups"][0]["id"]
        assert r.json()["port"]["security_groups"] == [default, sg["id"]]
        admin_api("DELETE", f"/ports/{r.json()['port']['id']}")
        r = admin_api("POST", "/ports", json={"port": {"network_id": net["id"], "project_id": net["project_id"],
                                                       "security_groups": ["no-such-group"]}})
        assert r.status_code == 404 and r.json()["NeutronError"]["type"] == "SecurityGroupNotFound"
    finally:
        demo_api("DELETE", f"/security-groups/{sg['id']}")
        drop_net(demo_api, net["id"])


def test_network_ip_availability(ncloud, admin_api, demo_api):
    net, sub = make_net(demo_api, "10.84.0.0/28")  # pool .2-.14: 13 addresses, one for DHCP
    try:
        for _ in range(2):
            assert demo_api("POST", "/ports", json={"port": {"network_id": net["id"]}}).status_code == 201
        r = admin_api("GET", f"/network-ip-availabilities/{net['id']}")
        assert r.status_code == 200
        body = r.json()["network_ip_availability"]
        assert (body["total_ips"], body["used_ips"]) == (13, 3)
        assert body["subnet_ip_availability"][0]["subnet_id"] == sub["id"]
        listed = admin_api("GET", f"/network-ip-availabilities?network_id={net['id']}").json()
        assert [x["used_ips"] for x in listed["network_ip_availabilities"]] == [3]
        assert demo_api("GET", f"/network-ip-availabilities/{net['id']}").status_code == 403
        shown = ncloud.osc(f"ip availability show {net['id']}")
        assert (shown["total_ips"], shown["used_ips"]) == (13, 3)
        assert admin_api("GET", "/network-ip-availabilities/nope").status_code == 404
    finally:
        drop_net(demo_api, net["id"])
