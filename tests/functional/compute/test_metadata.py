"""The metadata service, called the way the network service's proxy calls it (signed instance id)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx


def _signed(ccloud, instance_id: str, project_id: str, secret: str | None = None) -> dict:
    secret = secret or (ccloud.state_dir / "metadata_secret").read_text().strip()
    return {"X-Instance-ID": instance_id, "X-Tenant-ID": project_id, "X-Forwarded-For": "10.0.0.5",
            "X-Instance-ID-Signature": hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()}


def test_metadata_service(ccloud, demo, image):
    pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq7S6Fq9sJ2v0cQ0Jm7y3s0Q7l4K8m0cXv3yB1gY2kA test@host"
    assert demo.post("/os-keypairs", json={"keypair": {"name": "mdkey", "public_key": pub}}).status_code == 201
    user_data = base64.b64encode(b"#!/bin/sh\necho hello\n").decode()
    srv = demo.create("md-vm", image, key_name="mdkey", user_data=user_data, metadata={"role": "db"})
    shown = demo.wait(srv["id"], "ACTIVE")
    base = f"{ccloud.url}/compute/metadata"
    # Without the proxy's signature: refused.
    assert httpx.get(f"{base}/openstack/latest/meta_data.json", timeout=10).status_code == 403
    # The secret file is created on first use by whichever service needs it first.
    httpx.get(f"{base}/openstack", timeout=10, headers={"X-Instance-ID": srv["id"], "X-Instance-ID-Signature": "x"})
    headers = _signed(ccloud, srv["id"], shown["tenant_id"])
    bad = dict(headers, **{"X-Instance-ID-Signature": "0" * 64})
    assert httpx.get(f"{base}/openstack/latest/meta_data.json", headers=bad, timeout=10).status_code == 403
    versions = httpx.get(f"{base}/openstack", headers=headers, timeout=10).text.split("\n")
    assert versions[0] == "2012-08-10" and versions[-1] == "latest"
    listing = httpx.get(f"{base}/openstack/latest/", headers=headers, timeout=10).text.split("\n")
    assert {"meta_data.json", "user_data", "network_data.json", "vendor_data.json"} <= set(listing)
    meta = httpx.get(f"{base}/openstack/latest/meta_data.json", headers=headers, timeout=10).json()
    assert meta["uuid"] == srv["id"] and meta["hostname"] == "md-vm" and meta["meta"] == {"role": "db"}
    assert meta["public_keys"] == {"mdkey": pub} and meta["keys"][0]["data"] == pub
    ud = httpx.get(f"{base}/openstack/latest/user_data", headers=headers, timeout=10)
    assert ud.content == b"#!/bin/sh\necho hello\n"
    assert httpx.get(f"{base}/openstack/latest/network_data.json", headers=headers,
                     timeout=10).json() == {"links": [], "networks": [], "services": []}
    assert httpx.get(f"{base}/latest/meta-data/instance-id", headers=headers, timeout=10).text.startswith("i-")
    assert httpx.get(f"{base}/latest/meta-data/public-keys/0/openssh-key", headers=headers, timeout=10).text == pub
    assert httpx.get(f"{base}/latest/user-data", headers=headers, timeout=10).content.startswith(b"#!/bin/sh")
    # Another project's id in X-Tenant-ID: refused.
    wrong = _signed(ccloud, srv["id"], "someone-else")
    assert httpx.get(f"{base}/openstack/latest/meta_data.json", headers=wrong, timeout=10).status_code == 403
    demo.delete(f"/servers/{srv['id']}")
    demo.wait(srv["id"], "DELETED")
    demo.delete("/os-keypairs/mdkey")
