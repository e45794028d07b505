"""Networking through the real `openstack` CLI: the commands users type, and refusals."""

from __future__ import annotations

import json
import uuid


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _fails(proc, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout
    text = proc.stderr + proc.stdout
    for n in needles:
        assert n in text, text
    return text


def test_network_subnet_port_lifecycle(ncloud):
    net, sub, port = _name("net"), _name("sub"), _name("port")
    n = ncloud.osc(f"network create --description first {net}", cloud="demo")
    assert n["name"] == net and n["status"] == "ACTIVE" and n["mtu"] == 1450 and n["router:external"] is False
    s = ncloud.osc(f"subnet create --network {net} --subnet-range 10.20.0.0/24 --allocation-pool "
                   f"start=10.20.0.100,end=10.20.0.120 --dns-nameserver 10.20.0.53 --host-route "
                   f"destination=10.99.0.0/16,gateway=10.20.0.254 {sub}", cloud="demo")
    assert s["cidr"] == "10.20.0.0/24" and s["gateway_ip"] == "10.20.0.1" and s["enable_dhcp"] is True
    assert s["allocation_pools"] == [{"start": "10.20.0.100", "end": "10.20.0.120"}]
    assert s["dns_nameservers"] == ["10.20.0.53"]
    assert s["host_routes"] == [{"destination": "10.99.0.0/16", "nexthop": "10.20.0.254"}]
    p = ncloud.osc(f"port create --network {net} --fixed-ip subnet={sub},ip-address=10.20.0.110 "
                   f"--mac-address fa:16:3e:00:00:42 {port}", cloud="demo")
    assert p["fixed_ips"] == [{"subnet_id": s["id"], "ip_address": "10.20.0.110"}]
    assert p["mac_address"] == "fa:16:3e:00:00:42"
    assert len(p["security_group_ids"]) == 1  # the project's default group
    ncloud.osc(f"port set --name {port}-renamed --description two {port}", cloud="demo", fmt_json=False)
    shown = ncloud.osc(f"port show {port}-renamed", cloud="demo")
    assert shown["description"] == "two"
    listed = ncloud.osc(f"port list --network {net}", cloud="demo")
    assert [x["ID"] for x in listed if x["Name"] == f"{port}-renamed"] == [p["id"]]
    ncloud.osc(f"network set --name {net}-x --tag blue {net}", cloud="demo", fmt_json=False)
    tagged = ncloud.osc("network list --tags blue", cloud="demo")
    assert [x["Name"] for x in tagged] == [f"{net}-x"]
    ncloud.osc(f"port delete {port}-renamed", cloud="demo", fmt_json=False)
    ncloud.osc(f"subnet delete {sub}", cloud="demo", fmt_json=False)
    ncloud.osc(f"network delete {net}-x", cloud="demo", fmt_json=False)
    assert _name("x") not in ncloud.osc("network list", cloud="demo")
    assert all(x["ID"] != n["id"] for x in ncloud.osc("network list", cloud="demo"))


def test_ipv6_subnet_slaac_port_gets_eui64(ncloud):
    net = _name("v6net")
    ncloud.osc(f"network create {net}", cloud="demo")
    s = ncloud.osc(f"subnet create --network {net} --ip-version 6 --ipv6-address-mode slaac --ipv6-ra-mode slaac "
                   f"--subnet-range 2001:db8:5::/64 {net}-s", cloud="demo")
    assert s["ip_version"] == 6 and s["gateway_ip"] == "2001:db8:5::1"
    p = ncloud.osc(f"port create --network {net} --mac-address fa:16:3e:11:22:33 {net}-p", cloud="demo")
    assert p["fixed_ips"][0]["ip_address"] == "2001:db8:5:0:f816:3eff:fe11:2233"
    ncloud.osc(f"port delete {net}-p", cloud="demo", fmt_json=False)
    ncloud.osc(f"network delete {net}", cloud="demo", fmt_json=False)


def test_clear_refusals(ncloud):
    net = _name("ref")
    ncloud.osc(f"network create {net}", cloud="demo")
    ncloud.osc(f"subnet create --network {net} --subnet-range 10.30.0.0/24 {net}-s", cloud="demo")
    # Overlapping subnet on the same network.
    _fails(ncloud.osc(f"subnet create --network {net} --subnet-range 10.30.0.128/25 {net}-o", cloud="demo",
                      check=False), "overlaps")
    # A fixed IP outside every subnet of the network.
    _fails(ncloud.osc(f"port create --network {net} --fixed-ip ip-address=192.168.77.5 {net}-bad", cloud="demo",
                      check=False), "not a valid IP")
    ncloud.osc(f"port create --network {net} --fixed-ip ip-address=10.30.0.50 {net}-p", cloud="demo")
    _fails(ncloud.osc(f"port create --network {net} --fixed-ip ip-address=10.30.0.50 {net}-dup", cloud="demo",
                      check=False), "already allocated")
    # Network and subnet still in use.
    _fails(ncloud.osc(f"network delete {net}", cloud="demo", check=False), "in use")
    _fails(ncloud.osc(f"subnet delete {net}-s", cloud="demo", check=False), "IP allocation")
    ncloud.osc(f"port delete {net}-p", cloud="demo", fmt_json=False)
    ncloud.osc(f"network delete {net}", cloud="demo", fmt_json=False)


def test_security_groups(ncloud):
    default = [g for g in ncloud.osc("security group list", cloud="demo") if g["Name"] == "default"]
    assert len(default) == 1
    rules = ncloud.osc("security group rule list default", cloud="demo")
    assert sorted((r["Direction"], r["Ethertype"], bool(r["Remote Security Group"])) for r in rules) == [
        ("egress", "IPv4", False), ("egress", "IPv6", False), ("ingress", "IPv4", True), ("ingress", "IPv6", True)]
    sg = _name("sg")
    g = ncloud.osc(f"security group create --description web {sg}", cloud="demo")
    assert sorted((r["direction"], r["ethertype"]) for r in g["rules"]) == [("egress", "IPv4"), ("egress", "IPv6")]
    r = ncloud.osc(f"security group rule create --protocol tcp --dst-port 22:22 --remote-ip 10.0.0.0/8 {sg}",
                   cloud="demo")
    assert (r["protocol"], r["port_range_min"], r["port_range_max"], r["remote_ip_prefix"]) == \
        ("tcp", 22, 22, "10.0.0.0/8")
    _fails(ncloud.osc(f"security group rule create --protocol tcp --dst-port 22 --remote-ip 10.0.0.0/8 {sg}",
                      cloud="demo", check=False), "already exists")
    _fails(ncloud.osc(f"security group rule create --protocol tcp --dst-port 80:70 {sg}", cloud="demo",
                      check=False), "port")
    ncloud.osc(f"security group rule delete {r['id']}", cloud="demo", fmt_json=False)
    ncloud.osc(f"security group set --name {sg}-2 {sg}", cloud="demo", fmt_json=False)
    ncloud.osc(f"security group delete {sg}-2", cloud="demo", fmt_json=False)


def test_router_gateway_interface_and_floating_ip(ncloud):
    net, router = _name("rnet"), _name("router")
    ncloud.osc(f"network create {net}", cloud="demo")
    s = ncloud.osc(f"subnet create --network {net} --subnet-range 10.40.0.0/24 {net}-s", cloud="demo")
    p = ncloud.osc(f"port create --network {net} {net}-p", cloud="demo")
    r = ncloud.osc(f"router create {router}", cloud="demo")
    assert r["external_gateway_info"] is None
    ncloud.osc(f"router set --external-gateway public {router}", cloud="demo", fmt_json=False)
    ncloud.osc(f"router add subnet {router} {net}-s", cloud="demo", fmt_json=False)
    shown = ncloud.osc(f"router show {router}", cloud="demo")
    gw = shown["external_gateway_info"]
    assert gw["enable_snat"] is True and gw["external_fixed_ips"][0]["ip_address"].startswith("172.24.4.")
    assert [i["ip_address"] for i in shown["interfaces_info"]] == ["10.40.0.1"]
    fip = ncloud.osc("floating ip create public", cloud="demo")
    assert fip["floating_ip_address"].startswith("172.24.4.") and fip["port_id"] is None
    ncloud.osc(f"floating ip set --port {p['id']} {fip['floating_ip_address']}", cloud="demo", fmt_json=False)
    shown = ncloud.osc(f"floating ip show {fip['id']}", cloud="demo")
    assert shown["port_id"] == p["id"] and shown["fixed_ip_address"] == p["fixed_ips"][0]["ip_address"]
    assert shown["router_id"] == r["id"] and shown["port_details"]["network_id"] == s["network_id"]
    # The interface carries the floating IP's traffic: it cannot go while the association exists.
    _fails(ncloud.osc(f"router remove subnet {router} {net}-s", cloud="demo", check=False), "floating IP")
    ncloud.osc(f"floating ip unset --port {fip['id']}", cloud="demo", fmt_json=False)
    ncloud.osc(f"floating ip delete {fip['id']}", cloud="demo", fmt_json=False)
    _fails(ncloud.osc(f"router delete {router}", cloud="demo", check=False), "still has ports")
    ncloud.osc(f"router remove subnet {router} {net}-s", cloud="demo", fmt_json=False)
    ncloud.osc(f"router unset --external-gateway {router}", cloud="demo", fmt_json=False)
    assert ncloud.osc(f"router show {router}", cloud="demo")["external_gateway_info"] is None
    ncloud.osc(f"router delete {router}", cloud="demo", fmt_json=False)
    ncloud.osc(f"port delete {net}-p", cloud="demo", fmt_json=False)
    ncloud.osc(f"network delete {net}", cloud="demo", fmt_json=False)


def test_other_project_is_refused(ncloud, other):
    net = _name("private")
    n = ncloud.osc(f"network create {net}", cloud="demo")
    ncloud.osc(f"subnet create --network {net} --subnet-range 10.50.0.0/24 {net}-s", cloud="demo")
    p = ncloud.osc(f"port create --network {net} {net}-p", cloud="demo")
    r = ncloud.osc(f"router create {net}-r", cloud="demo")
    sg = ncloud.osc(f"security group create {net}-sg", cloud="demo")
    try:
        _fails(other.osc(f"network show {n['id']}", check=False), "No Network found")
        _fails(other.osc(f"network delete {n['id']}", check=False))
        _fails(other.osc(f"port show {p['id']}", check=False), "No Port found")
        _fails(other.osc(f"router show {r['id']}", check=False), "No Router found")
        _fails(other.osc(f"security group show {sg['id']}", check=False))
        _fails(other.osc(f"port create --network {n['id']} stolen", check=False))
        _fails(other.osc(f"subnet create --network {n['id']} --subnet-range 10.51.0.0/24 stolen", check=False))
        assert n["id"] not in json.dumps(other.osc("network list"))
        assert p["id"] not in json.dumps(other.osc("port list"))
        # The external network is visible to every project; the admin sees everything.
        assert "public" in [x["Name"] for x in other.osc("network list")]
        assert n["id"] in [x["ID"] for x in ncloud.osc("network list", cloud="admin")]
    finally:
        ncloud.osc(f"security group delete {sg['id']}", cloud="demo", fmt_json=False)
        ncloud.osc(f"router delete {r['id']}", cloud="demo", fmt_json=False)
        ncloud.osc(f"port delete {p['id']}", cloud="demo", fmt_json=False)
        ncloud.osc(f"network delete {n['id']}", cloud="demo", fmt_json=False)


def test_admin_provider_network_and_demo_refused(ncloud):
    name = _name("vlan")
    n = ncloud.osc(f"network create --provider-network-type vxlan --provider-segment 4242 --share {name}")
    assert n["provider:network_type"] == "vxlan" and n["provider:segmentation_id"] == 4242 and n["shared"]
    _fails(ncloud.osc(f"network create --provider-network-type vxlan --provider-segment 4242 {name}-dup",
                      check=False), "in use")
    _fails(ncloud.osc(f"network create --provider-network-type vxlan {name}-x", cloud="demo", check=False),
           "disallowed by policy")
    # Shared: demo may create a port on it.
    p = ncloud.osc(f"port create --network {n['id']} {name}-p", cloud="demo")
    ncloud.osc(f"port delete {p['id']}", cloud="demo", fmt_json=False)
    ncloud.osc(f"network delete {n['id']}", fmt_json=False)


def test_quota_availability_zones_extensions_and_auto_topology(ncloud, other):
    ncloud.osc(f"quota set --networks 1 {other.project_id}", fmt_json=False)
    q = ncloud.osc(f"quota show --network {other.project_id}")
    assert {x["Resource"]: x["Limit"] for x in q}["networks"] == 1 if isinstance(q, list) else q["networks"] == 1
    first = other.osc(f"network create {_name('q')}")
    _fails(other.osc(f"network create {_name('q')}", check=False), "Quota exceeded")
    other.osc(f"network delete {first['id']}", fmt_json=False)
    zones = ncloud.osc("availability zone list --network", cloud="demo")
    assert {z["Zone Name"] for z in zones} == {"nova"}
    aliases = {e["Alias"] for e in ncloud.osc("extension list --network", cloud="demo")}
    assert {"router", "security-group", "binding", "auto-allocated-topology"} <= aliases
    assert "external-gateway-multihoming" not in aliases
    ncloud.osc(f"quota set --networks 10 --subnets 10 --routers 10 --ports 20 {other.project_id}", fmt_json=False)
    topo = other.osc(f"network auto allocated topology create --project {other.project_id}")
    again = other.osc(f"network auto allocated topology create --project {other.project_id}")
    assert topo["id"] == again["id"]
    shown = other.osc(f"network show {topo['id']}")
    assert shown["name"] == "auto_allocated_network" and len(shown["subnets"]) == 1
    other.osc(f"network auto allocated topology delete --project {other.project_id}", fmt_json=False)
    _fails(other.osc(f"network show {topo['id']}", check=False), "No Network found")
