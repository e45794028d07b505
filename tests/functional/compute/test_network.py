"""Servers on networks of the network service (its fake agent): ports bound, addresses shown, ports deleted."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from stratus import services as registry
from tests.cloudfixture import destroy_cloud, start_cloud
from tests.functional.compute.conftest import FAKE_ENV, Api, image_id


@pytest.fixture(scope="module")
def netcloud():
    present = registry.available()
    if "network" not in present or "image" not in present:
        pytest.skip("the network and image services are not both present in this build")
    state = Path(tempfile.mkdtemp(prefix="stratus-compute-net-"))
    # One simulated host named like this machine, so that the network service's (fake) agent on
    # the same host can bind ports to it.
    env = {**FAKE_ENV, "STRATUS_COMPUTE__FAKE_HOSTS": "1", "STRATUS_NETWORK__AGENT_DRIVER": "fake"}
    cloud = start_cloud(state, services=["identity", "image", "compute", "network"], extra_env=env, timeout=120)
    try:
        yield cloud
    finally:
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)


def test_servers_on_networks(netcloud):
    img = image_id(netcloud)
    net = netcloud.osc("network create cnet1", cloud="demo")
    netcloud.osc("subnet create --network cnet1 --subnet-range 10.77.0.0/24 csub1", cloud="demo")
    explicit = netcloud.osc(f"server create --image {img} --flavor m1.tiny --network cnet1 --wait s-explicit",
                            cloud="demo")
    assert explicit["status"] == "ACTIVE"
    addrs = explicit["addresses"]["cnet1"] if isinstance(explicit["addresses"], dict) else explicit["addresses"]
    assert "10.77.0." in str(addrs)
    # No --network: OSC sends networks "auto"; the project's only network is used.
    auto = netcloud.osc(f"server create --image {img} --flavor m1.tiny --wait s-auto", cloud="demo")
    assert "10.77.0." in str(auto["addresses"])
    ports = netcloud.osc(f"port list --network {net['id']} --device-owner compute:nova", cloud="demo")
    assert len(ports) == 2
    demo = Api(netcloud.url, netcloud.token("demo"))
    # Two candidate networks: "auto" is ambiguous → 409.
    netcloud.osc("network create cnet2", cloud="demo")
    r = demo.post("/servers", json={"server": {"name": "amb", "imageRef": img, "flavorRef": "1",
                                               "networks": "auto"}})
    assert r.status_code == 409 and "Multiple possible networks" in r.text
    # A user's own port is bound, and only unbound (not deleted) with the server.
    port = netcloud.osc("port create --network cnet1 myport", cloud="demo")
    srv = demo.create("s-port", img, networks=[{"port": port["id"]}])
    demo.wait(srv["id"], "ACTIVE")
    shown = netcloud.osc(f"port show {port['id']}", cloud="admin")
    assert shown["device_id"] == srv["id"] and shown["binding_host_id"]
    r = demo.post("/servers", json={"server": {"name": "dup", "imageRef": img, "flavorRef": "1",
                                               "networks": [{"port": port["id"]}]}})
    assert r.status_code == 409 and "in use" in r.text
    for name in ("s-explicit", "s-auto"):
        netcloud.osc(f"server delete --wait {name}", cloud="demo", fmt_json=False)
    demo.delete(f"/servers/{srv['id']}")
    demo.wait(srv["id"], "DELETED")
    assert netcloud.osc(f"port list --network {net['id']} --device-owner compute:nova", cloud="demo") == []
    assert netcloud.osc(f"port show {port['id']}", cloud="demo")["device_id"] == ""


def test_server_add_and_remove_security_group(netcloud):
    img = image_id(netcloud)
    netcloud.osc("network create sgnet", cloud="demo")
    netcloud.osc("subnet create --network sgnet --subnet-range 10.78.0.0/24 sgsub", cloud="demo")
    sg = netcloud.osc("security group create web", cloud="demo")
    server = netcloud.osc(f"server create --image {img} --flavor m1.tiny --network sgnet --wait sgvm", cloud="demo")
    netcloud.osc("server add security group sgvm web", cloud="demo", fmt_json=False)
    ports = netcloud.osc(f"port list --server {server['id']} --long", cloud="demo")
    assert ports and all(sg["id"] in str(p["Security Groups"]) for p in ports)
    assert "web" in str(netcloud.osc("server show sgvm", cloud="demo")["security_groups"])
    netcloud.osc("server remove security group sgvm web", cloud="demo", fmt_json=False)
    ports = netcloud.osc(f"port list --server {server['id']} --long", cloud="demo")
    assert all(sg["id"] not in str(p["Security Groups"]) for p in ports)
    # Removing a group the server does not have, or naming another project's group, is refused.
    again = netcloud.osc("server remove security group sgvm web", cloud="demo", check=False, fmt_json=False)
    assert again.returncode != 0 and "not associated" in again.stderr
    admin_sg = netcloud.osc("security group create admins-only", cloud="admin")
    other = netcloud.osc(f"server add security group sgvm {admin_sg['id']}", cloud="demo", check=False,
                         fmt_json=False)
    assert other.returncode != 0 and "not found" in other.stderr.lower()
    netcloud.osc("server delete --wait sgvm", cloud="demo", fmt_json=False)


def test_server_add_and_remove_network_and_port(netcloud):
    img = image_id(netcloud)
    netcloud.osc("network create ifnet1", cloud="demo")
    netcloud.osc("subnet create --network ifnet1 --subnet-range 10.79.0.0/24 ifsub1", cloud="demo")
    netcloud.osc("network create ifnet2", cloud="demo")
    netcloud.osc("subnet create --network ifnet2 --subnet-range 10.80.0.0/24 ifsub2", cloud="demo")
    server = netcloud.osc(f"server create --image {img} --flavor m1.tiny --network ifnet1 --wait ifvm", cloud="demo")
    netcloud.osc("server add network ifvm ifnet2", cloud="demo", fmt_json=False)
    ports = netcloud.osc(f"port list --server {server['id']}", cloud="demo")
    assert len(ports) == 2
    shown = netcloud.osc("server show ifvm", cloud="demo")
    assert "ifnet2" in str(shown["addresses"]) and "10.80.0." in str(shown["addresses"])
    mine = netcloud.osc("port create --network ifnet2 ifport", cloud="demo")
    netcloud.osc("server add port ifvm ifport", cloud="demo", fmt_json=False)
    assert netcloud.osc("port show ifport", cloud="demo")["device_id"] == server["id"]
    netcloud.osc("server remove port ifvm ifport", cloud="demo", fmt_json=False)
    # A port the user made is unbound and kept; the server keeps its other ports.
    kept = netcloud.osc("port show ifport", cloud="demo")
    assert kept["device_id"] == "" or kept["device_id"] is None
    assert len(netcloud.osc(f"port list --server {server['id']}", cloud="demo")) == 2
    netcloud.osc("server remove network ifvm ifnet2", cloud="demo", fmt_json=False)
    assert len(netcloud.osc(f"port list --server {server['id']}", cloud="demo")) == 1
    # Another project's network cannot be plugged in.
    admin_net = netcloud.osc("network create admins-net", cloud="admin")
    refused = netcloud.osc(f"server add network ifvm {admin_net['id']}", cloud="demo", check=False, fmt_json=False)
    assert refused.returncode != 0
    netcloud.osc("server delete --wait ifvm", cloud="demo", fmt_json=False)
