"""The metadata service guests read (OpenStack and EC2 formats), at /compute/metadata/...

Guests never reach it directly: the network service's proxy inside each network namespace
answers 169.254.169.254, finds the port by source address and forwards here with
``X-Instance-ID``, ``X-Tenant-ID`` and ``X-Instance-ID-Signature`` = HMAC-SHA256(instance id,
metadata secret). The secret is ``[compute] metadata_secret`` or, when empty, the value generated
once into ``<state_dir>/metadata_secret`` (the same file the network service reads).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stratus.common.errors import Forbidden, NotFound
from stratus.common.web import JSONResponse
from stratus.compute import models as m
from stratus.compute.api.common import svc

OPENSTACK_VERSIONS = ["2012-08-10", "2013-04-04", "2013-10-17", "2015-10-15", "2016-06-30", "2016-10-06",
                      "2017-02-22", "2018-08-27", "2020-10-14", "latest"]
EC2_VERSIONS = ["1.0", "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15", "2008-02-01",
                "2008-09-01", "2009-04-04", "latest"]


def metadata_secret(state) -> str:
    configured = state.runtime.config.section("compute").get("metadata_secret")
    if configured:
        return str(configured)
    path = Path(state.runtime.config.state_dir) / "metadata_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


async def _instance(request: Request) -> m.Instance:
    iid = request.headers.get("x-instance-id", "")
    sig = request.headers.get("x-instance-id-signature", "")
    if not iid or not sig:
        raise Forbidden("The metadata service answers only through the network service's proxy")
    want = hmac.new(metadata_secret(svc(request)).encode(), iid.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, sig):
        raise Forbidden("Invalid X-Instance-ID-Signature")
    async with svc(request).db.reader() as s:
        inst = await s.get(m.Instance, iid)
    if inst is None or inst.deleted:
        raise NotFound(f"Instance {iid} could not be found.")
    tenant = request.headers.get("x-tenant-id")
    if tenant and tenant != inst.project_id:
        raise Forbidden("X-Tenant-ID does not own this instance")
    return inst


def _text(lines: list[str]) -> Response:
    return Response("\n".join(lines), media_type="text/plain")


def _keys(inst: m.Instance) -> tuple[dict, list]:
    if not inst.key_name or not inst.key_data:
        return {}, []
    return ({inst.key_name: inst.key_data},
            [{"name": inst.key_name, "type": "ssh", "data": inst.key_data}])


def meta_data(inst: m.Instance) -> dict:
    public_keys, keys = _keys(inst)
    return {"uuid": inst.id, "name": inst.name, "hostname": inst.hostname, "launch_index": inst.launch_index,
            "availability_zone": inst.availability_zone or "nova", "meta": dict(inst.metadata_ or {}),
            "public_keys": public_keys, "keys": keys, "project_id": inst.project_id, "devices": [],
            "dedicated_cpus": [], "random_seed": base64.b64encode(os.urandom(512)).decode()}


def network_data(inst: m.Instance) -> dict:
    links, networks, dns = [], [], []
    for i, nic in enumerate(inst.network_info or []):
        link_id = f"tap{nic['port_id'][:11]}"
        links.append({"id": link_id, "vif_id": nic["port_id"], "type": "bridge", "mtu": nic.get("mtu", 1500),
                      "ethernet_mac_address": nic.get("mac", "")})
        for j, sub in enumerate(nic.get("subnets") or []):
            net = {"id": f"network{len(networks)}", "link": link_id, "network_id": nic["network_id"]}
            cidr = sub.get("cidr")
            if sub.get("version", 4) == 4 and cidr:
                iface = ipaddress.ip_network(cidr, strict=False)
                net.update(type="ipv4", ip_address=sub["ip_address"], netmask=str(iface.netmask))
                net["routes"] = ([{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": sub["gateway_ip"]}]
                                 if sub.get("gateway_ip") else [])
            else:
                net.update(type="ipv6_dhcp" if not cidr else "ipv6", ip_address=sub["ip_address"],
                           netmask=str(ipaddress.ip_network(cidr, strict=False).netmask) if cidr else None,
                           routes=[])
            for ns in sub.get("dns_nameservers") or []:
                if ns not in dns:
                    dns.append(ns)
            networks.append(net)
    return {"links": links, "networks": networks, "services": [{"type": "dns", "address": a} for a in dns]}


def _files(version: str, inst: m.Instance) -> list[str]:
    files = ["meta_data.json"]
    if inst.user_data:
        files.append("user_data")
    order = OPENSTACK_VERSIONS
    at = order.index(version)
    if at >= order.index("2013-04-04"):
        files.append("password")
    if at >= order.index("2013-10-17"):
        files.append("vendor_data.json")
    if at >= order.index("2015-10-15"):
        files.append("network_data.json")
    if at >= order.index("2016-10-06"):
        files.append("vendor_data2.json")
    return files


async def openstack_root(request: Request):
    await _instance(request)
    return _text(OPENSTACK_VERSIONS)


async def openstack_file(request: Request):
    inst = await _instance(request)
    version = request.path_params["version"]
    name = request.path_params.get("name", "")
    if version not in OPENSTACK_VERSIONS:
        raise NotFound(f"Unknown metadata version {version}")
    files = _files(version, inst)
    if name == "":
        return _text(files)
    if name not in files:
        raise NotFound(f"{name} is not available in version {version}")
    if name == "meta_data.json":
        return JSONResponse(meta_data(inst))
    if name == "user_data":
        return Response(base64.b64decode(inst.user_data), media_type="application/octet-stream")
    if name == "network_data.json":
        return JSONResponse(network_data(inst))
    if name == "password":
        return Response("", media_type="text/plain")
    return JSONResponse({})


def _local_ipv4(inst: m.Instance) -> str:
    for nic in inst.network_info or []:
        for ip in nic.get("ips") or []:
            if ip.get("version", 4) == 4:
                return ip["addr"]
    return ""


def ec2_tree(inst: m.Instance) -> dict:
    public_keys, _ = _keys(inst)
    tree = {
        "ami-id": f"ami-{inst.image_id[:8]}" if inst.image_id else "", "ami-launch-index": str(inst.launch_index),
        "ami-manifest-path": "FIXME",  # literally what nova serves; cloud-init ignores it "hostname": inst.hostname, "instance-action": "none",
        "instance-id": f"i-{inst.id[:8]}", "instance-type": (inst.flavor or {}).get("name", ""),
        "local-hostname": inst.hostname, "local-ipv4": _local_ipv4(inst),
        "placement": {"availability-zone": inst.availability_zone or "nova"},
        "public-hostname": inst.hostname, "public-ipv4": "", "reservation-id": inst.reservation_id,
        "security-groups": "\n".join(inst.security_groups or ["default"]),
        "block-device-mapping": {"ami": "vda", "root": "/dev/vda"},
    }
    if public_keys:
        name, key = next(iter(public_keys.items()))
        tree["public-keys"] = {f"0={name}": {"openssh-key": key}}
    return tree


async def ec2_root(request: Request):
    await _instance(request)
    return _text(EC2_VERSIONS)


async def ec2_path(request: Request):
    inst = await _instance(request)
    version = request.path_params["version"]
    if version not in EC2_VERSIONS:
        raise NotFound(f"Unknown metadata version {version}")
    rest = request.path_params.get("rest", "")
    if rest in ("", "/"):
        return _text(["meta-data/", *(["user-data"] if inst.user_data else [])])
    if rest == "user-data":
        if not inst.user_data:
            raise NotFound("This instance has no user data")
        return Response(base64.b64decode(inst.user_data), media_type="application/octet-stream")
    parts = [p for p in rest.split("/") if p]
    if not parts or parts[0] != "meta-data":
        raise NotFound(f"{rest} not found")
    node = ec2_tree(inst)
    keys = parts[1:]
    if keys and keys[0] == "public-keys" and len(keys) >= 2 and "=" not in keys[1]:
        # public-keys/0/ and public-keys/0/openssh-key address the key by index.
        listing = node.get("public-keys", {})
        names = list(listing)
        idx = int(keys[1]) if keys[1].isdigit() else -1
        if not 0 <= idx < len(names):
            raise NotFound("no such key")
        node = listing[names[idx]]
        keys = keys[2:]
        return _walk(node, keys)
    return _walk(node, keys)


def _walk(node, keys: list[str]) -> Response:
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise NotFound(f"{k} not found")
        node = node[k]
    if isinstance(node, dict):
        return _text([f"{k}/" if isinstance(v, dict) and not k.startswith("0=") else k for k, v in node.items()])
    return Response(str(node), media_type="text/plain")


routes = [
    Route("/metadata/openstack", openstack_root, methods=["GET"]),
    Route("/metadata/openstack/", openstack_root, methods=["GET"]),
    Route("/metadata/openstack/{version}", openstack_file, methods=["GET"]),
    Route("/metadata/openstack/{version}/", openstack_file, methods=["GET"]),
    Route("/metadata/openstack/{version}/{name}", openstack_file, methods=["GET"]),
    Route("/metadata", ec2_root, methods=["GET"]),
    Route("/metadata/", ec2_root, methods=["GET"]),
    Route("/metadata/{version}", ec2_path, methods=["GET"]),
    Route("/metadata/{version}/{rest:path}", ec2_path, methods=["GET"]),
]
