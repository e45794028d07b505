"""Pure pieces of networking: IPAM arithmetic, list filtering, settings checks and rule rendering."""

from __future__ import annotations

import ipaddress

import pytest
from starlette.datastructures import QueryParams

from stratus.common.errors import BadRequest, Conflict
from stratus.config import ConfigError, load
from stratus.network import ipam, settings
from stratus.network.common import apply_filters
from stratus.network.drivers import nftrules


def test_cidr_must_be_a_network_address():
    assert str(ipam.parse_cidr("10.0.0.0/24", 4)) == "10.0.0.0/24"
    with pytest.raises(BadRequest, match="use '10.0.0.0/24'"):
        ipam.parse_cidr("10.0.0.5/24")
    with pytest.raises(BadRequest, match="not an IPv6"):
        ipam.parse_cidr("10.0.0.0/24", 6)
    with pytest.raises(BadRequest):
        ipam.parse_cidr("banana")


def test_default_pools_leave_out_the_gateway():
    net = ipaddress.ip_network("10.0.0.0/29")
    assert ipam.default_pools(net, "10.0.0.1") == [{"start": "10.0.0.2", "end": "10.0.0.6"}]
    assert ipam.default_pools(net, "10.0.0.4") == [{"start": "10.0.0.1", "end": "10.0.0.3"},
                                                   {"start": "10.0.0.5", "end": "10.0.0.6"}]
    assert ipam.default_pools(net, None) == [{"start": "10.0.0.1", "end": "10.0.0.6"}]


def test_pool_validation():
    net = ipaddress.ip_network("10.0.0.0/24")
    with pytest.raises(BadRequest, match="spans beyond"):
        ipam.validate_pools(net, [{"start": "10.0.0.10", "end": "10.0.1.2"}], "10.0.0.1")
    with pytest.raises(BadRequest, match="overlapping"):
        ipam.validate_pools(net, [{"start": "10.0.0.10", "end": "10.0.0.20"},
                                  {"start": "10.0.0.15", "end": "10.0.0.30"}], None)
    with pytest.raises(Conflict):
        ipam.validate_pools(net, [{"start": "10.0.0.1", "end": "10.0.0.20"}], "10.0.0.5")


def test_pick_free_skips_used_and_reports_exhaustion():
    pools = [{"start": "10.0.0.2", "end": "10.0.0.4"}]
    assert ipam.pick_free(pools, {"10.0.0.2", "10.0.0.3"}) == "10.0.0.4"
    assert ipam.pick_free(pools, {"10.0.0.2", "10.0.0.3", "10.0.0.4"}) is None
    picks = {ipam.pick_free([{"start": "10.0.0.2", "end": "10.0.0.250"}], set()) for _ in range(200)}
    # Spread over the first few free addresses, so concurrent creates rarely collide.
    assert 1 < len(picks) <= 4


def test_eui64_and_macs():
    assert ipam.eui64(ipaddress.ip_network("2001:db8::/64"), "fa:16:3e:11:22:33") == "2001:db8::f816:3eff:fe11:2233"
    assert ipam.valid_mac("fa:16:3e:00:00:01")
    assert not ipam.valid_mac("01:00:5e:00:00:01")  # multicast
    assert not ipam.valid_mac("fa:16:3e:00:00")
    assert ipam.random_mac().startswith("fa:16:3e:")


def test_filters_or_within_a_key_and_fixed_ips():
    items = [{"id": "1", "name": "a", "admin_state_up": True, "tags": ["x"], "fixed_ips": [{"ip_address": "10.0.0.1"}]},
             {"id": "2", "name": "b", "admin_state_up": False, "tags": ["x", "y"], "fixed_ips": []},
             {"id": "3", "name": "c", "admin_state_up": True, "tags": [], "fixed_ips": []}]
    q = QueryParams("name=a&name=b")
    assert [i["id"] for i in apply_filters(items, q, set())] == ["1", "2"]
    assert [i["id"] for i in apply_filters(items, QueryParams("admin_state_up=false"), set())] == ["2"]
    assert [i["id"] for i in apply_filters(items, QueryParams("tags=x,y"), set())] == ["2"]
    assert [i["id"] for i in apply_filters(items, QueryParams("not-tags-any=y"), set())] == ["1", "3"]
    assert [i["id"] for i in apply_filters(items, QueryParams("fixed_ips=ip_address%3D10.0.0.1"), set())] == ["1"]
    assert len(apply_filters(items, QueryParams("fields=id&unknown=1"), {"fields"})) == 3


def test_settings_validation(tmp_path):
    cfg = load(environ={"STRATUS_STATE_DIR": str(tmp_path)})
    s = settings.load(cfg)
    assert s["agent_driver"] == "linuxbridge" and s["vni_range"] == (1, 16000)
    assert s["nft_table"].startswith("stratus-") and s["nft_table"] != settings.load(
        load(environ={"STRATUS_STATE_DIR": str(tmp_path / "other")}))["nft_table"]
    for env, needle in [({"STRATUS_NETWORK__AGENT_DRIVER": "ovs"}, "agent_driver"),
                        ({"STRATUS_NETWORK__VNI_RANGES": "9:1"}, "vni_ranges"),
                        ({"STRATUS_NETWORK__BOGUS": "1"}, "network.bogus"),
                        ({"STRATUS_NETWORK__TENANT_NETWORK_TYPE": "vlan"}, "network_vlan_ranges")]:
        with pytest.raises(ConfigError, match=needle):
            settings.load(load(environ={"STRATUS_STATE_DIR": str(tmp_path), **env}))


def test_metadata_secret_is_shared_through_the_state_dir(tmp_path):
    cfg = load(environ={"STRATUS_STATE_DIR": str(tmp_path)})
    first = settings.metadata_secret(cfg)
    assert first and settings.metadata_secret(cfg) == first
    assert (tmp_path / "metadata_secret").stat().st_mode & 0o777 == 0o600
    pinned = load(environ={"STRATUS_STATE_DIR": str(tmp_path), "STRATUS_COMPUTE__METADATA_SECRET": "s3"})
    assert settings.metadata_secret(pinned) == "s3"


PORT = {"id": "p1", "tap": "tapp1", "mac": "fa:16:3e:00:00:01", "port_security": True,
        "ips": [{"ip": "10.0.0.5", "version": 4, "prefixlen": 24, "cidr": "10.0.0.0/24", "subnet_id": "s"}],
        "allowed_address_pairs": [{"ip_address": "10.0.0.100"}], "security_groups": ["g"]}


def test_security_rendering():
    groups = {"g": [
        {"direction": "egress", "ethertype": "IPv4", "protocol": None, "port_range_min": None, "port_range_max": None,
         "remote_ip_prefix": None, "remote_ips": None},
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
         "remote_ip_prefix": "10.0.0.0/8", "remote_ips": None},
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp", "port_range_min": 8, "port_range_max": None,
         "remote_ip_prefix": None, "remote_ips": ["10.0.0.7", "2001:db8::1"]},
        # A group with no IPv4 members matches nothing: no rule at all, never "any".
        {"direction": "ingress", "ethertype": "IPv4", "protocol": None, "port_range_min": None,
         "port_range_max": None, "remote_ip_prefix": None, "remote_ips": []},
    ]}
    text = nftrules.render_security("t", [PORT, {**PORT, "id": "p2", "tap": "tapp2", "port_security": False}],
                                    groups, ["brqx"])
    assert 'iifname "tapp1" jump spoof-1' in text and "tapp2" not in text
    assert "ip saddr != { 10.0.0.100, 10.0.0.5 } drop" in text
    assert "ether saddr != { fa:16:3e:00:00:01 } drop" in text
    assert "meta nfproto ipv4 ip saddr 10.0.0.0/8 meta l4proto 6 th dport 22 accept" in text
    assert "meta nfproto ipv4 ip saddr { 10.0.0.7 } meta l4proto icmp icmp type 8 accept" in text
    assert "meta nfproto ipv4 accept" not in text
    assert "meta nfproto ipv4 return" in text
    assert f'iifname "brqx" ct zone set {nftrules.zone("brqx")}' in text
    assert 'iifname { "brqx" } jump ports' in text
    assert text.index("ct state established,related accept") < text.index("th dport 22 accept")


def test_router_nat_rendering():
    gw = {"device": "qg-1", "enable_snat": True, "ips": [{"ip": "172.24.4.10", "version": 4}]}
    ifaces = [{"ips": [{"cidr": "10.0.0.0/24", "version": 4}]}]
    text = nftrules.render_router_nat("nat", gw, ifaces, [{"floating_ip": "172.24.4.20", "fixed_ip": "10.0.0.5"}])
    assert "ip daddr 172.24.4.20 dnat to 10.0.0.5" in text
    assert 'oifname "qg-1" ip saddr 10.0.0.5 snat to 172.24.4.20' in text
    assert 'oifname "qg-1" ip saddr { 10.0.0.0/24 } snat to 172.24.4.10' in text
    assert text.index("snat to 172.24.4.20") < text.index("snat to 172.24.4.10")
    no_snat = nftrules.render_router_nat("nat", {**gw, "enable_snat": False}, ifaces, [])
    assert "snat" not in no_snat
