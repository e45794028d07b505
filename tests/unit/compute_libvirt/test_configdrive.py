"""Config drive: the ISO cloud-init reads, and the documents on it."""

from __future__ import annotations

import json

from stratus.compute import configdrive
from stratus.compute.drivers.base import ImageRef, InstanceSpec, Vif


def make_spec(**overrides) -> InstanceSpec:
    values = dict(
        uuid="5d2c4c1e-7a0c-4a55-9a57-0f3e6d8e2d11", name="instance-0000002a", hostname="web-1", vcpus=1,
        memory_mb=256, root_gb=1, image=ImageRef(id="img-1", disk_format="qcow2"), project_id="proj-1",
        availability_zone="az-a", launch_index=2, metadata={"role": "web", "n": 3},
        user_data=b"#!/bin/sh\necho \xff raw bytes\n", key_name="mykey", public_key="ssh-ed25519 AAAAC3 me@host",
        config_drive=True, ephemeral_gb=1, swap_mb=64,
        vifs=[Vif(port_id="3f0b6c1a-0000-4000-8000-000000000001", mac="FA:16:3E:AA:BB:01", network_id="net-1",
                  bridge_name="brq1", mtu=1450,
                  fixed_ips=[{"ip_address": "10.0.0.5", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1",
                              "version": 4, "dns_nameservers": ["10.0.0.2"],
                              "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}]},
                             {"ip_address": "fd00::5", "cidr": "fd00::/64", "gateway_ip": "fd00::1", "version": 6}]),
              Vif(port_id="3f0b6c1a-0000-4000-8000-000000000002", mac="fa:16:3e:aa:bb:02", network_id="net-2",
                  vif_type="ethernet", tap_name="tapcustom0",
                  fixed_ips=[{"ip_address": "172.16.0.9", "cidr": "172.16.0.0/20", "enable_dhcp": True}])],
        extra_metadata={"display_name": "Web One", "flavor_name": "m1.tiny", "team": "blue"},
    )
    values.update(overrides)
    return InstanceSpec(**values)


def test_iso_has_label_rock_ridge_names_and_every_file(tmp_path):
    path = tmp_path / "disk.config"
    spec = make_spec()
    configdrive.build_config_drive(spec, path)
    assert configdrive.volume_label(path) == "config-2"
    files = configdrive.read_iso(path)
    for version in configdrive.OPENSTACK_VERSIONS + ["latest"]:
        assert f"openstack/{version}/meta_data.json" in files
        assert files[f"openstack/{version}/user_data"] == spec.user_data  # raw bytes, not base64
    assert "openstack/latest/network_data.json" in files and "openstack/latest/vendor_data2.json" in files
    assert "openstack/2012-08-10/network_data.json" not in files  # only from 2015-10-15 on
    assert "openstack/2013-04-04/vendor_data.json" not in files
    assert not any(name.endswith("/password") for name in files)  # served over HTTP only
    for version in ("2009-04-04", "latest"):
        assert files[f"ec2/{version}/user-data"] == spec.user_data
        json.loads(files[f"ec2/{version}/meta-data.json"])
    # cloud-init requires every non-user-data file to be valid JSON
    for name, data in files.items():
        if not name.endswith(("user_data", "user-data")):
            json.loads(data)


def test_meta_data_contents():
    docs = configdrive.instance_documents(make_spec())
    meta = json.loads(configdrive.openstack_files(docs, "latest")["meta_data.json"])
    assert meta["uuid"] == "5d2c4c1e-7a0c-4a55-9a57-0f3e6d8e2d11"
    assert meta["name"] == "Web One" and meta["hostname"] == "web-1"
    assert meta["launch_index"] == 2 and meta["availability_zone"] == "az-a" and meta["project_id"] == "proj-1"
    assert meta["meta"] == {"role": "web", "n": "3"}
    assert meta["public_keys"] == {"mykey": "ssh-ed25519 AAAAC3 me@host"}
    assert meta["keys"] == [{"name": "mykey", "type": "ssh", "data": "ssh-ed25519 AAAAC3 me@host"}]
    assert len(__import__("base64").b64decode(meta["random_seed"])) == 512
    old = json.loads(configdrive.openstack_files(docs, "2012-08-10")["meta_data.json"])
    assert "random_seed" not in old and "devices" not in old and old["uuid"] == meta["uuid"]


def test_network_data_links_match_the_nics():
    spec = make_spec()
    data = configdrive.network_data(spec.vifs)
    assert [link["ethernet_mac_address"] for link in data["links"]] == ["fa:16:3e:aa:bb:01", "fa:16:3e:aa:bb:02"]
    assert data["links"][0]["id"] == "tap3f0b6c1a-00" and data["links"][0]["mtu"] == 1450
    assert data["links"][1]["id"] == "tapcustom0"
    v4, v6, dhcp = data["networks"]
    assert v4["type"] == "ipv4" and v4["ip_address"] == "10.0.0.5" and v4["netmask"] == "255.255.255.0"
    assert {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"} in v4["routes"]
    assert {"network": "192.168.0.0", "netmask": "255.255.0.0", "gateway": "10.0.0.254"} in v4["routes"]
    assert v6["type"] == "ipv6" and v6["netmask"] == "64" and v6["link"] == v4["link"]
    assert dhcp["type"] == "ipv4_dhcp" and "ip_address" not in dhcp and dhcp["link"] == "tapcustom0"
    assert data["services"] == [{"type": "dns", "address": "10.0.0.2"}]


def test_vendor_data_and_ec2_tree():
    docs = configdrive.instance_documents(make_spec())
    assert docs["vendor_data"] == {"team": "blue"}  # reserved keys are not vendor data
    ec2 = docs["ec2_meta_data"]
    assert ec2["instance-id"] == "i-0000002a" and ec2["instance-type"] == "m1.tiny"
    assert ec2["local-ipv4"] == "10.0.0.5" and ec2["placement"] == {"availability-zone": "az-a"}
    assert ec2["public-keys"] == {"0": {"openssh-key": "ssh-ed25519 AAAAC3 me@host"}}
    assert ec2["block-device-mapping"] == {"ami": "vda", "root": "/dev/vda", "ephemeral0": "vdb", "swap": "vdc"}
    explicit = configdrive.instance_documents(make_spec(extra_metadata={"vendor_data": {"a": 1},
                                                                        "vendor_data2": {"b": 2}}))
    assert explicit["vendor_data"] == {"a": 1} and explicit["vendor_data2"] == {"b": 2}


def test_no_user_data_no_key(tmp_path):
    spec = make_spec(user_data=None, public_key=None, key_name=None, vifs=[])
    path = tmp_path / "disk.config"
    configdrive.build_config_drive(spec, path)
    files = configdrive.read_iso(path)
    assert "openstack/latest/user_data" not in files and "ec2/latest/user-data" not in files
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["public_keys"] == {} and meta["keys"] == []
    assert json.loads(files["openstack/latest/network_data.json"]) == {"links": [], "networks": [], "services": []}


def test_ec2_instance_id_falls_back_to_uuid_hash():
    spec = make_spec(name="custom-name")
    assert configdrive.ec2_instance_id(spec).startswith("i-") and len(configdrive.ec2_instance_id(spec)) == 10
