"""The metadata service app: OpenStack and EC2 trees over HTTP, same documents as the drive."""

from __future__ import annotations

import json

from starlette.testclient import TestClient

from stratus.compute import configdrive
from stratus.compute.metadata import create_metadata_app

from tests.unit.compute_libvirt.test_configdrive import make_spec


def client(spec=None, save_password=None):
    spec = spec or make_spec()
    docs = configdrive.instance_documents(spec)
    known = {"10.0.0.5": docs}

    async def lookup(request):  # identifies the instance by a header here; compute uses the source address
        return known.get(request.headers.get("x-forwarded-for", ""))

    headers = {"X-Forwarded-For": "10.0.0.5"}
    return TestClient(create_metadata_app(lookup, save_password=save_password)), headers, docs


def test_openstack_tree():
    http, headers, docs = client()
    versions = http.get("/openstack", headers=headers)
    assert versions.status_code == 200 and versions.text.splitlines()[-1] == "latest"
    assert "2012-08-10" in versions.text.splitlines()
    listing = http.get("/openstack/latest/", headers=headers).text.splitlines()
    assert set(listing) == {"meta_data.json", "user_data", "password", "vendor_data.json", "network_data.json",
                            "vendor_data2.json"}
    assert http.get("/openstack/2012-08-10", headers=headers).text.splitlines() == ["meta_data.json", "user_data"]
    meta = http.get("/openstack/latest/meta_data.json", headers=headers)
    assert meta.headers["content-type"].startswith("application/json")
    assert meta.json()["uuid"] == docs["uuid"] and meta.json()["random_seed"] == docs["meta_data"]["random_seed"]
    assert http.get("/openstack/latest/user_data", headers=headers).content == docs["user_data"]
    assert http.get("/openstack/latest/network_data.json", headers=headers).json() == docs["network_data"]
    assert http.get("/openstack/1999-01-01/meta_data.json", headers=headers).status_code == 404
    assert http.get("/openstack/latest/nope", headers=headers).status_code == 404


def test_unknown_caller_is_refused():
    http, _headers, _docs = client()
    response = http.get("/openstack/latest/meta_data.json", headers={"X-Forwarded-For": "10.9.9.9"})
    assert response.status_code == 404
    assert http.get("/latest/meta-data/", headers={"X-Forwarded-For": "10.9.9.9"}).status_code == 404


def test_ec2_tree():
    http, headers, docs = client()
    root = http.get("/", headers=headers).text.splitlines()
    assert root[0] == "1.0" and "2009-04-04" in root and root[-1] == "latest"
    assert http.get("/latest/", headers=headers).text.splitlines() == ["meta-data/", "user-data"]
    keys = http.get("/2009-04-04/meta-data/", headers=headers).text.splitlines()
    assert "instance-id" in keys and "placement/" in keys and "public-keys/" in keys
    assert http.get("/latest/meta-data/instance-id", headers=headers).text == "i-0000002a"
    assert http.get("/latest/meta-data/placement/availability-zone", headers=headers).text == "az-a"
    assert http.get("/latest/meta-data/public-keys/", headers=headers).text == "0=mykey"
    assert http.get("/latest/meta-data/public-keys/0/", headers=headers).text == "openssh-key"
    assert http.get("/latest/meta-data/public-keys/0/openssh-key", headers=headers).text == "ssh-ed25519 AAAAC3 me@host"
    assert http.get("/latest/meta-data/security-groups", headers=headers).text == "default"
    assert http.get("/latest/user-data", headers=headers).content == docs["user_data"]
    assert http.get("/latest/meta-data/nothing", headers=headers).status_code == 404
    assert http.get("/1999/meta-data/", headers=headers).status_code == 404


def test_no_user_data_is_404():
    http, headers, _ = client(make_spec(user_data=None))
    assert http.get("/openstack/latest/user_data", headers=headers).status_code == 404
    assert http.get("/latest/user-data", headers=headers).status_code == 404
    assert "user_data" not in http.get("/openstack/latest", headers=headers).text.splitlines()


def test_password_post():
    stored = {}

    def save(request, docs, password):
        stored[docs["uuid"]] = password
        docs["password"] = password

    http, headers, docs = client(save_password=save)
    assert http.get("/openstack/latest/password", headers=headers).text == ""
    assert http.post("/openstack/latest/password", headers=headers, content=b"x" * 300).status_code == 400
    assert http.post("/openstack/latest/password", headers=headers, content=b"secret").status_code == 200
    assert stored == {docs["uuid"]: "secret"}
    assert http.get("/openstack/latest/password", headers=headers).text == "secret"
    assert http.post("/openstack/latest/password", headers=headers, content=b"again").status_code == 409
    assert http.post("/openstack/latest/meta_data.json", headers=headers, content=b"{}").status_code == 405
    nosave, headers, _ = client()
    assert nosave.post("/openstack/latest/password", headers=headers, content=b"s").status_code == 404


def test_lookup_may_return_a_spec():
    spec = make_spec()
    app = create_metadata_app(lambda request: spec)
    meta = TestClient(app).get("/openstack/latest/meta_data.json").json()
    assert meta["uuid"] == spec.uuid and json.dumps(meta)


def test_signed_lookup_behind_the_network_proxy():
    import hashlib
    import hmac

    from stratus.compute.metadata import signed_instance_lookup

    spec = make_spec()

    async def find(instance_id):
        return spec if instance_id == spec.uuid else None

    app = create_metadata_app(signed_instance_lookup("s3cret", find))
    http = TestClient(app)
    good = hmac.new(b"s3cret", spec.uuid.encode(), hashlib.sha256).hexdigest()
    headers = {"X-Instance-ID": spec.uuid, "X-Instance-ID-Signature": good}
    first = http.get("/openstack/latest/meta_data.json", headers=headers)
    assert first.status_code == 200 and first.json()["uuid"] == spec.uuid
    # the same random_seed on every read of one instance
    assert http.get("/openstack/latest/meta_data.json", headers=headers).json()["random_seed"] == \
        first.json()["random_seed"]
    forged = hmac.new(b"other", spec.uuid.encode(), hashlib.sha256).hexdigest()
    for bad in ({"X-Instance-ID": spec.uuid, "X-Instance-ID-Signature": forged}, {"X-Instance-ID": spec.uuid}, {}):
        assert http.get("/openstack/latest/meta_data.json", headers=bad).status_code == 404
    other = "00000000-0000-0000-0000-000000000000"
    signed_other = hmac.new(b"s3cret", other.encode(), hashlib.sha256).hexdigest()
    assert http.get("/latest/meta-data/", headers={"X-Instance-ID": other,
                                                   "X-Instance-ID-Signature": signed_other}).status_code == 404
