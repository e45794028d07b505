"""An instance's metadata documents, and the config drive ISO that carries them.

The same documents are served two ways: burned onto a config drive (an ISO 9660 image labelled
``config-2``, attached to the guest as a CD-ROM) and answered over HTTP by the metadata service
(stratus.compute.metadata). Both start from ``instance_documents(spec)``, a plain dict:

    {
      "uuid": str,
      "meta_data": {...},          # openstack/latest/meta_data.json
      "user_data": bytes | None,   # raw bytes, exactly as the user gave them (after base64 decoding)
      "network_data": {...},       # openstack/<v>/network_data.json
      "vendor_data": {...},        # openstack/<v>/vendor_data.json
      "vendor_data2": {...},       # openstack/<v>/vendor_data2.json
      "ec2_meta_data": {...},      # ec2/<v>/meta-data.json (a tree; the service walks it as paths)
      "key_name": str | None,      # for the EC2 public-keys/ listing ("0=<key_name>")
      "password": str,             # openstack/<v>/password (metadata service only)
    }

``InstanceSpec.extra_metadata`` may carry, besides vendor data, a few facts the driver contract
does not have fields for. Recognised keys (all optional):

    display_name     the server's name as the user gave it (meta_data "name"; default hostname)
    flavor_name      EC2 instance-type
    reservation_id   EC2 reservation-id (default derived from the uuid)
    security_groups  list of names (EC2 security-groups; default ["default"])
    password         what openstack/<v>/password returns
    vendor_data      dict for vendor_data.json
    vendor_data2     dict for vendor_data2.json

When ``vendor_data`` is absent, every key not in that list is served as vendor_data.json, so
an agent that simply puts its vendor data in ``extra_metadata`` gets what it expects.

What cloud-init needs (tried with a real Debian guest, see docs/libvirt.md): the label must be
exactly ``config-2``, ``openstack/latest/meta_data.json`` must have a ``uuid``, every file but
``user_data`` must be valid JSON, and every link in network_data.json must carry the MAC of a
NIC the guest really has.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import os
import re
from pathlib import Path

import pycdlib

from stratus.compute.drivers.base import InstanceSpec, Vif

CONFIG_DRIVE_LABEL = "config-2"

# Versions of the OpenStack metadata format, oldest first; "latest" is appended when listing.
OPENSTACK_VERSIONS = [
    "2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "2016-10-06",
    "2017-02-22", "2018-08-27", "2020-10-14", "2025-04-04",
]
# The EC2 metadata versions the service answers (the config drive carries 2009-04-04 and latest).
EC2_VERSIONS = ["1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
                "2008-02-01", "2008-09-01", "2009-04-04"]
EC2_DRIVE_VERSIONS = ["2009-04-04", "latest"]

# First version in which each optional file (or meta_data key) appears.
_FILE_SINCE = {
    "password": "2013-04-04",
    "vendor_data.json": "2013-10-17",
    "network_data.json": "2015-10-15",
    "vendor_data2.json": "2016-10-06",
}
_META_KEY_SINCE = {
    "random_seed": "2013-04-04",
    "project_id": "2015-10-15",
    "devices": "2016-06-30",
    "dedicated_cpus": "2020-10-14",
}

_RESERVED_EXTRA_KEYS = {"display_name", "flavor_name", "reservation_id", "security_groups",
                        "password", "vendor_data", "vendor_data2"}


def _version_key(version: str) -> str:
    return "9999-99-99" if version == "latest" else version


def _available(since: str | None, version: str) -> bool:
    return since is None or _version_key(version) >= since


def tap_name(vif: Vif) -> str:
    """The host-side device name of a NIC: the agent's choice, else "tap" + the port id (14 chars)."""
    return vif.tap_name or ("tap" + vif.port_id)[:14]


def ec2_instance_id(spec: InstanceSpec) -> str:
    """i-xxxxxxxx from the hypervisor name (instance-0000002a → i-0000002a), else from the uuid."""
    match = re.fullmatch(r"instance-([0-9a-f]{1,8})", spec.name or "")
    if match:
        return "i-%08x" % int(match.group(1), 16)
    return "i-" + hashlib.sha1(spec.uuid.encode()).hexdigest()[:8]


def _ec2_image_id(image_id: str) -> str:
    return "ami-" + hashlib.sha1(image_id.encode()).hexdigest()[:8]


def network_data(vifs: list[Vif]) -> dict:
    """network_data.json: one link per NIC (by MAC), one network per fixed IP, DNS services.

    Fixed IPs are given statically ("ipv4"/"ipv6") because the agent knows them; a fixed IP
    dict with ``"enable_dhcp": true`` is announced as ipv4_dhcp instead, and an IPv6 one with
    ``"ipv6_address_mode": "slaac"`` (or dhcpv6-stateless/-stateful) as that mode.
    """
    links, networks, services = [], [], []
    seen_dns: set[str] = set()
    for vif in vifs:
        link_id = tap_name(vif)
        links.append({"id": link_id, "vif_id": vif.port_id, "type": "bridge" if vif.vif_type == "bridge" else "tap",
                      "mtu": vif.mtu, "ethernet_mac_address": vif.mac.lower()})
        for fixed in vif.fixed_ips:
            network = {"id": f"network{len(networks)}", "link": link_id, "network_id": vif.network_id}
            version = int(fixed.get("version") or ipaddress.ip_address(fixed["ip_address"]).version)
            mode = fixed.get("ipv6_address_mode")
            if version == 4 and fixed.get("enable_dhcp"):
                network["type"] = "ipv4_dhcp"
            elif version == 6 and mode in ("slaac", "dhcpv6-stateless", "dhcpv6-stateful"):
                network["type"] = "ipv6_slaac" if mode == "slaac" else f"ipv6_{mode}"
            else:
                network["type"] = f"ipv{version}"
                network["ip_address"] = fixed["ip_address"]
                if fixed.get("cidr"):
                    iface = ipaddress.ip_interface(f"{fixed['ip_address']}/{ipaddress.ip_network(fixed['cidr'], strict=False).prefixlen}")
                    network["netmask"] = str(iface.netmask) if version == 4 else str(iface.network.prefixlen)
                routes = []
                if fixed.get("gateway_ip"):
                    default = "0.0.0.0" if version == 4 else "::"
                    routes.append({"network": default, "netmask": "0.0.0.0" if version == 4 else "0",
                                   "gateway": fixed["gateway_ip"]})
                for route in fixed.get("host_routes") or []:
                    dest = ipaddress.ip_network(route["destination"], strict=False)
                    routes.append({"network": str(dest.network_address),
                                   "netmask": str(dest.netmask) if version == 4 else str(dest.prefixlen),
                                   "gateway": route["nexthop"]})
                network["routes"] = routes
            dns = [{"type": "dns", "address": addr} for addr in fixed.get("dns_nameservers") or []]
            if dns:
                network["services"] = dns
            for entry in dns:
                if entry["address"] not in seen_dns:
                    seen_dns.add(entry["address"])
                    services.append(entry)
            networks.append(network)
    return {"links": links, "networks": networks, "services": services}


def _first_ipv4(vifs: list[Vif]) -> str:
    for vif in vifs:
        for fixed in vif.fixed_ips:
            try:
                if ipaddress.ip_address(fixed["ip_address"]).version == 4:
                    return fixed["ip_address"]
            except (KeyError, ValueError):
                continue
    return ""


def instance_documents(spec: InstanceSpec, random_seed: str | None = None) -> dict:
    """Every metadata document of one instance (see the module docstring for the shape).

    ``random_seed`` (base64) keeps meta_data's seed stable across builds; a new one otherwise.
    """
    extra = dict(spec.extra_metadata or {})
    display_name = str(extra.get("display_name") or spec.hostname)
    public_keys = {}
    keys = []
    if spec.public_key:
        key_name = spec.key_name or "key"
        public_keys[key_name] = spec.public_key
        keys.append({"name": key_name, "type": "ssh", "data": spec.public_key})
    meta_data = {
        "uuid": spec.uuid,
        "name": display_name,
        "hostname": spec.hostname,
        "launch_index": spec.launch_index,
        "availability_zone": spec.availability_zone,
        "meta": {str(k): str(v) for k, v in (spec.metadata or {}).items()},
        "public_keys": public_keys,
        "keys": keys,
        "random_seed": random_seed or base64.b64encode(os.urandom(512)).decode(),
        "project_id": spec.project_id,
        "devices": [],
        "dedicated_cpus": [],
    }
    if "vendor_data" in extra:
        vendor_data = extra["vendor_data"]
    else:
        vendor_data = {k: v for k, v in extra.items() if k not in _RESERVED_EXTRA_KEYS}
    block_devices = {"ami": "vda", "root": "/dev/vda"}
    next_letter = ord("b")
    if spec.ephemeral_gb:
        block_devices["ephemeral0"] = "vd" + chr(next_letter)
        next_letter += 1
    if spec.swap_mb:
        block_devices["swap"] = "vd" + chr(next_letter)
    ec2 = {
        "ami-id": _ec2_image_id(spec.image.id) if spec.image else "ami-00000000",
        "ami-launch-index": spec.launch_index,
        "ami-manifest-path": "FIXME",
        "block-device-mapping": block_devices,
        "hostname": spec.hostname,
        "instance-action": "none",
        "instance-id": ec2_instance_id(spec),
        "instance-type": str(extra.get("flavor_name") or ""),
        "local-hostname": spec.hostname,
        "local-ipv4": _first_ipv4(spec.vifs),
        "placement": {"availability-zone": spec.availability_zone},
        "public-hostname": spec.hostname,
        "public-ipv4": "",
        "reservation-id": str(extra.get("reservation_id") or "r-" + hashlib.sha1(spec.uuid.encode()).hexdigest()[:8]),
        "security-groups": list(extra.get("security_groups") or ["default"]),
    }
    if spec.public_key:
        ec2["public-keys"] = {"0": {"openssh-key": spec.public_key}}
    return {
        "uuid": spec.uuid,
        "meta_data": meta_data,
        "user_data": spec.user_data,
        "network_data": network_data(spec.vifs),
        "vendor_data": vendor_data if isinstance(vendor_data, dict) else {},
        "vendor_data2": extra.get("vendor_data2") if isinstance(extra.get("vendor_data2"), dict) else {},
        "ec2_meta_data": ec2,
        "key_name": spec.key_name if spec.public_key else None,
        "password": str(extra.get("password") or ""),
    }


def _json(value) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def openstack_files(docs: dict, version: str, *, for_drive: bool = False) -> dict[str, bytes]:
    """The files of openstack/<version>/ (``password`` only over HTTP, never on a drive)."""
    if version != "latest" and version not in OPENSTACK_VERSIONS:
        raise KeyError(version)
    meta = {k: v for k, v in docs["meta_data"].items() if _available(_META_KEY_SINCE.get(k), version)}
    files = {"meta_data.json": _json(meta)}
    if docs.get("user_data") is not None:
        files["user_data"] = bytes(docs["user_data"])
    if not for_drive and _available(_FILE_SINCE["password"], version):
        files["password"] = str(docs.get("password") or "").encode()
    if _available(_FILE_SINCE["vendor_data.json"], version):
        files["vendor_data.json"] = _json(docs.get("vendor_data") or {})
    if _available(_FILE_SINCE["network_data.json"], version):
        files["network_data.json"] = _json(docs.get("network_data") or {})
    if _available(_FILE_SINCE["vendor_data2.json"], version):
        files["vendor_data2.json"] = _json(docs.get("vendor_data2") or {})
    return files


def drive_files(docs: dict) -> dict[str, bytes]:
    """Every file on the config drive, by its path on the drive."""
    files: dict[str, bytes] = {}
    for version in OPENSTACK_VERSIONS + ["latest"]:
        for name, data in openstack_files(docs, version, for_drive=True).items():
            files[f"openstack/{version}/{name}"] = data
    for version in EC2_DRIVE_VERSIONS:
        files[f"ec2/{version}/meta-data.json"] = _json(docs["ec2_meta_data"])
        if docs.get("user_data") is not None:
            files[f"ec2/{version}/user-data"] = bytes(docs["user_data"])
    return files


def write_iso(files: dict[str, bytes], path: Path, label: str = CONFIG_DRIVE_LABEL) -> None:
    """An ISO 9660 image with Rock Ridge and Joliet names (cloud-init reads the long names).

    ISO 9660 level-1 names are generated (D0001, F0001.;1): only the Rock Ridge and Joliet
    names, which carry the real paths, are ever read by guests.
    """
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=label)
    iso_dirs: dict[str, str] = {"": ""}
    counter = 0
    try:
        for rel_path in sorted(files):
            parts = rel_path.split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in iso_dirs:
                    counter += 1
                    iso_dirs[directory] = f"{iso_dirs['/'.join(parts[:depth - 1])]}/D{counter:04d}"
                    iso.add_directory(iso_dirs[directory], rr_name=parts[depth - 1], joliet_path="/" + directory)
            counter += 1
            data = files[rel_path]
            parent = iso_dirs["/".join(parts[:-1])]
            iso.add_fp(io.BytesIO(data), len(data), f"{parent}/F{counter:04d}.;1", rr_name=parts[-1],
                       joliet_path="/" + rel_path)
        tmp = path.with_name(path.name + ".tmp")
        iso.write(str(tmp))
        os.replace(tmp, path)
    finally:
        iso.close()


def build_config_drive(spec: InstanceSpec, path: Path, docs: dict | None = None) -> dict:
    """Write the config drive of ``spec`` to ``path``; returns the documents it carries."""
    docs = docs if docs is not None else instance_documents(spec)
    write_iso(drive_files(docs), Path(path))
    return docs


def read_iso(path: Path) -> dict[str, bytes]:
    """Every file of an ISO by its Rock Ridge path (for tests and operators checking a drive)."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    out: dict[str, bytes] = {}
    try:
        for dirname, _dirs, filenames in iso.walk(rr_path="/"):
            for filename in filenames:
                rr_path = (dirname.rstrip("/") + "/" + filename)
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=rr_path)
                out[rr_path.lstrip("/")] = buf.getvalue()
    finally:
        iso.close()
    return out


def volume_label(path: Path) -> str:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        return iso.pvd.volume_identifier.decode().strip()
    finally:
        iso.close()
