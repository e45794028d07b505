"""The proxy's API surface over HTTP (httpx): what swiftclient, openstacksdk and tempest rely on."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cloudfixture import destroy_cloud, start_cloud

from .proxyfixture import Account, login, make_project_user, token_and_project

pytestmark = pytest.mark.timeout(300)
MAX_FILE = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def oscloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-osapi-"))
    c = start_cloud(state, services=["identity", "objectstore"],
                    extra_env={"STRATUS_OBJECTSTORE__MAX_FILE_SIZE": str(MAX_FILE)})
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def demo(oscloud):
    token, project = token_and_project(oscloud, "demo")
    a = Account(oscloud, token, project)
    yield a
    a.close()


@pytest.fixture
def cont(demo):
    name = f"t-{uuid.uuid4().hex[:8]}"
    assert demo.request("PUT", f"/{name}").status_code == 201
    return name


def test_info_healthcheck_and_transaction_ids(oscloud, demo):
    info = httpx.get(f"{oscloud.url}/info").json()
    assert info["swift"]["max_file_size"] == MAX_FILE
    for key in ("slo", "bulk_delete", "tempurl", "versioned_writes", "account_quotas",
                "container_quotas"):
        assert key in info
    assert set(info["tempurl"]["methods"]) >= {"GET", "PUT", "HEAD"}
    r = httpx.get(f"{oscloud.url}/healthcheck")
    assert r.status_code == 200 and r.text == "OK"
    r = demo.request("HEAD", "")
    assert r.status_code == 204
    assert r.headers["x-trans-id"].startswith("tx")
    assert r.headers["x-openstack-request-id"] == r.headers["x-trans-id"]
    r = demo.request("GET", "/nope-container-x")
    assert r.status_code == 404 and "<h1>Not Found</h1>" in r.text
    assert r.headers["x-trans-id"] == r.headers["x-openstack-request-id"]


def test_object_headers_etag_and_bad_inputs(demo, cont):
    body = b"0123456789" * 100
    md5 = hashlib.md5(body).hexdigest()
    r = demo.request("PUT", f"/{cont}/o", content=body,
                     headers={"ETag": md5, "X-Object-Meta-Color": "red",
                              "Content-Type": "text/x-test"})
    assert r.status_code == 201 and r.headers["etag"] == md5
    assert demo.request("PUT", f"/{cont}/bad", content=body,
                        headers={"ETag": "0" * 32}).status_code == 422
    assert demo.request("HEAD", f"/{cont}/bad").status_code == 404
    r = demo.request("HEAD", f"/{cont}/o")
    assert r.status_code == 200 and r.headers["content-length"] == "1000"
    assert r.headers["x-object-meta-color"] == "red" and r.headers["content-type"] == "text/x-test"
    assert r.content == b""
    assert not any(k.startswith("x-backend") or "sysmeta" in k for k in r.headers)
    # If-None-Match: * refuses overwrites
    assert demo.request("PUT", f"/{cont}/o", content=b"x",
                        headers={"If-None-Match": "*"}).status_code == 412
    # POST replaces user metadata
    assert demo.request("POST", f"/{cont}/o", headers={"X-Object-Meta-Size": "big"}).status_code == 202
    h = demo.request("HEAD", f"/{cont}/o").headers
    assert h.get("x-object-meta-size") == "big" and "x-object-meta-color" not in h
    # bad inputs: clear 4xx
    assert demo.request("PUT", f"/{cont}/" + "x" * 1100, content=b"x").status_code == 400
    assert demo.request("PUT", "/" + "c" * 300).status_code == 400
    assert demo.request("PUT", f"/{cont}/m", content=b"x",
                        headers={"X-Object-Meta-" + "n" * 200: "v"}).status_code == 400
    assert demo.request("PUT", f"/{cont}/d", content=b"x",
                        headers={"X-Delete-After": "soon"}).status_code == 400
    assert demo.request("PUT", f"/{cont}/d", content=b"x",
                        headers={"X-Delete-At": "1000"}).status_code == 400
    assert demo.request("GET", f"/{cont}?limit=10001").status_code == 412
    assert demo.request("PUT", "/no-such-container-zz/o", content=b"x").status_code == 404
    assert demo.request("PATCH", f"/{cont}/o").status_code == 405


def test_max_file_size_is_413(demo, cont):
    r = demo.request("PUT", f"/{cont}/big", content=b"\0" * (MAX_FILE + 1))
    assert r.status_code == 413
    def chunks():
        for _ in range(5):
            yield b"\0" * (1024 * 1024)
    r = demo.request("PUT", f"/{cont}/big2", content=chunks())
    assert r.status_code == 413
    assert demo.request("HEAD", f"/{cont}/big2").status_code == 404


def test_ranges_and_conditionals(demo, cont):
    body = bytes(range(256)) * 64
    etag = demo.request("PUT", f"/{cont}/r", content=body).headers["etag"]
    r = demo.request("GET", f"/{cont}/r", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == body[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(body)}"
    r = demo.request("GET", f"/{cont}/r", headers={"Range": "bytes=-5"})
    assert r.content == body[-5:]
    r = demo.request("GET", f"/{cont}/r", headers={"Range": "bytes=0-1,100-101"})
    assert r.status_code == 206 and r.headers["content-type"].startswith("multipart/byteranges")
    assert body[0:2] in r.content and body[100:102] in r.content
    assert demo.request("GET", f"/{cont}/r", headers={"Range": "bytes=99999-"}).status_code == 416
    assert demo.request("GET", f"/{cont}/r", headers={"If-None-Match": etag}).status_code == 304
    assert demo.request("GET", f"/{cont}/r", headers={"If-Match": "nope"}).status_code == 412
    assert demo.request("GET", f"/{cont}/r", headers={"If-Match": etag}).content == body
    lm = demo.request("HEAD", f"/{cont}/r").headers["last-modified"]
    assert demo.request("GET", f"/{cont}/r", headers={"If-Modified-Since": lm}).status_code == 304
    assert demo.request("GET", f"/{cont}/r", headers={
        "If-Unmodified-Since": "Thu, 01 Jan 1998 00:00:00 GMT"}).status_code == 412


def test_listings_formats_and_paging(demo, cont):
    names = ["a", "b/1", "b/2", "c", "d"]
    for n in names:
        assert demo.request("PUT", f"/{cont}/{n}", content=n.encode()).status_code == 201
    plain = demo.request("GET", f"/{cont}")
    assert plain.text.split() == names and plain.headers["content-type"].startswith("text/plain")
    js = demo.request("GET", f"/{cont}?format=json").json()
    assert [i["name"] for i in js] == names and {"hash", "bytes", "content_type",
                                                 "last_modified"} <= set(js[0])
    xml = demo.request("GET", f"/{cont}?format=xml")
    assert xml.headers["content-type"].startswith("application/xml")
    assert f'<container name="{cont}">' in xml.text and "<name>b/1</name>" in xml.text
    q = lambda s: demo.request("GET", f"/{cont}?{s}").text.split()  # noqa: E731
    assert q("limit=2") == ["a", "b/1"]
    assert q("marker=b/1") == ["b/2", "c", "d"]
    assert q("end_marker=c") == ["a", "b/1", "b/2"]
    assert q("prefix=b/") == ["b/1", "b/2"]
    assert q("delimiter=/") == ["a", "b/", "c", "d"]
    assert q("reverse=on") == names[::-1]
    assert demo.request("GET", f"/{cont}?prefix=zzz").status_code == 204
    h = demo.request("HEAD", f"/{cont}").headers
    assert h["x-container-object-count"] == "5" and h["x-storage-policy"] == "Policy-0"
    acct = demo.request("GET", "?format=json").json()
    assert any(i["name"] == cont for i in acct)


def test_account_and_container_metadata(demo, cont):
    assert demo.request("POST", "", headers={"X-Account-Meta-Team": "blue"}).status_code == 204
    assert demo.request("HEAD", "").headers["x-account-meta-team"] == "blue"
    assert demo.request("POST", "", headers={"X-Remove-Account-Meta-Team": "x"}).status_code == 204
    assert "x-account-meta-team" not in demo.request("HEAD", "").headers
    assert demo.request("POST", f"/{cont}", headers={"X-Container-Meta-A": "1"}).status_code == 204
    assert demo.request("HEAD", f"/{cont}").headers["x-container-meta-a"] == "1"
    assert demo.request("PUT", f"/{cont}").status_code == 202
    assert demo.request("POST", f"/{cont}", headers={"X-Container-Read": ".bogus"}).status_code == 400


def test_copy_and_expiry(demo, cont):
    demo.request("PUT", f"/{cont}/src", content=b"copy me", headers={"X-Object-Meta-K": "v"})
    r = demo.request("PUT", f"/{cont}/dst1", headers={"X-Copy-From": f"{cont}/src",
                                                     "Content-Length": "0"})
    assert r.status_code == 201 and r.headers["x-copied-from"] == f"{cont}/src"
    got = demo.request("GET", f"/{cont}/dst1")
    assert got.content == b"copy me" and got.headers["x-object-meta-k"] == "v"
    r = demo.request("COPY", f"/{cont}/src", headers={"Destination": f"{cont}/dst2",
                                                     "X-Object-Meta-New": "n"})
    assert r.status_code == 201
    h = demo.request("HEAD", f"/{cont}/dst2").headers
    assert h["x-object-meta-new"] == "n" and h["x-object-meta-k"] == "v"
    assert demo.request("PUT", f"/{cont}/x", headers={"X-Copy-From": f"{cont}/missing",
                                                     "Content-Length": "0"}).status_code == 404
    # X-Delete-After is truncated to whole seconds (as Swift does): "1" can expire within
    # milliseconds of the PUT, so give the HEAD below at least two seconds
    put_at = time.time()
    r = demo.request("PUT", f"/{cont}/tmp", content=b"short-lived", headers={"X-Delete-After": "3"})
    assert r.status_code == 201
    head = demo.request("HEAD", f"/{cont}/tmp")
    assert head.status_code == 200
    assert int(put_at) + 3 <= int(head.headers["x-delete-at"]) <= int(time.time()) + 3
    time.sleep(max(0.0, int(head.headers["x-delete-at"]) - time.time()) + 0.2)
    assert demo.request("GET", f"/{cont}/tmp").status_code == 404


def test_slo_manifest_api_and_ranges(demo, cont):
    segs = [bytes([i]) * 1000 for i in range(3)]
    manifest = []
    for i, s in enumerate(segs):
        e = demo.request("PUT", f"/{cont}/seg{i}", content=s).headers["etag"]
        manifest.append({"path": f"/{cont}/seg{i}", "etag": e, "size_bytes": 1000})
    r = demo.request("PUT", f"/{cont}/big?multipart-manifest=put", json=manifest)
    assert r.status_code == 201, r.text
    expected = hashlib.md5("".join(m["etag"] for m in manifest).encode()).hexdigest()
    assert r.headers["etag"] == f'"{expected}"'
    g = demo.request("GET", f"/{cont}/big")
    assert g.content == b"".join(segs) and g.headers["x-static-large-object"] == "True"
    assert g.headers["etag"] == f'"{expected}"'
    h = demo.request("HEAD", f"/{cont}/big")
    assert h.headers["content-length"] == "3000"
    r = demo.request("GET", f"/{cont}/big", headers={"Range": "bytes=990-2009"})
    assert r.status_code == 206 and r.content == (b"".join(segs))[990:2010]
    raw = demo.request("GET", f"/{cont}/big?multipart-manifest=get&format=raw").json()
    assert [m["path"] for m in raw] == [m["path"] for m in manifest]
    bad = list(manifest)
    bad[1] = dict(bad[1], etag="0" * 32)
    r = demo.request("PUT", f"/{cont}/bad?multipart-manifest=put", json=bad)
    assert r.status_code == 400 and "Etag Mismatch" in r.text
    assert demo.request("PUT", f"/{cont}/bad?multipart-manifest=put",
                        content=b"not json").status_code == 400
    r = demo.request("DELETE", f"/{cont}/big?multipart-manifest=delete",
                     headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.json()["Number Deleted"] == 4
    assert demo.request("GET", f"/{cont}").status_code == 204


def test_dlo_etag_and_content(demo, cont):
    parts = [b"part-one|", b"part-two|", b"part-three"]
    etags = [demo.request("PUT", f"/{cont}/segs/{i:03d}", content=p).headers["etag"]
             for i, p in enumerate(parts)]
    demo.request("PUT", f"/{cont}/dlo", content=b"",
                 headers={"X-Object-Manifest": f"{cont}/segs/"})
    g = demo.request("GET", f"/{cont}/dlo")
    assert g.content == b"".join(parts)
    assert g.headers["etag"] == '"%s"' % hashlib.md5("".join(etags).encode()).hexdigest()
    r = demo.request("GET", f"/{cont}/dlo", headers={"Range": "bytes=5-12"})
    assert r.status_code == 206 and r.content == b"".join(parts)[5:13]


def test_bulk_delete(demo, cont):
    for n in ("a", "b c", "d"):
        demo.request("PUT", f"/{cont}/{n}", content=b"x")
    body = f"/{cont}/a\n/{cont}/b%20c\n/{cont}/missing\n/{cont}/d\n/{cont}\n"
    r = demo.request("POST", "?bulk-delete", content=body.encode(),
                     headers={"Content-Type": "text/plain", "Accept": "application/json"})
    doc = r.json()
    assert r.status_code == 200 and doc["Number Deleted"] == 4 and doc["Number Not Found"] == 1
    assert doc["Errors"] == [] and doc["Response Status"] == "200 OK"
    assert demo.request("HEAD", f"/{cont}").status_code == 404


@pytest.mark.parametrize("header", ["X-History-Location", "X-Versions-Location"])
def test_versioned_writes(demo, header):
    c, arch = f"v-{uuid.uuid4().hex[:6]}", f"arch-{uuid.uuid4().hex[:6]}"
    assert demo.request("PUT", f"/{arch}").status_code == 201
    assert demo.request("PUT", f"/{c}", headers={header: arch}).status_code == 201
    assert demo.request("HEAD", f"/{c}").headers[header.lower()] == arch
    for v in (b"v1", b"v2", b"v3"):
        assert demo.request("PUT", f"/{c}/o", content=v).status_code == 201
    archived = demo.request("GET", f"/{arch}?format=json").json()
    assert len(archived) == 2 and all(i["name"].startswith("001o/") for i in archived)
    assert demo.request("DELETE", f"/{c}/o").status_code == 204
    if header == "X-Versions-Location":
        assert demo.request("GET", f"/{c}/o").content == b"v2"  # stack: previous restored
        assert len(demo.request("GET", f"/{arch}?format=json").json()) == 1
    else:
        assert demo.request("GET", f"/{c}/o").status_code == 404
        assert len(demo.request("GET", f"/{arch}?format=json").json()) == 3
    assert demo.request("PUT", f"/{c}", headers={"X-Versions-Location": arch,
                                                 "X-History-Location": arch}).status_code == 400


def test_quotas(oscloud, demo, cont):
    assert demo.request("POST", f"/{cont}", headers={"X-Container-Meta-Quota-Bytes": "10",
                                                     "X-Container-Meta-Quota-Count": "2"}).status_code == 204
    assert demo.request("PUT", f"/{cont}/a", content=b"12345").status_code == 201
    assert demo.request("PUT", f"/{cont}/b", content=b"1234567").status_code == 413
    assert demo.request("PUT", f"/{cont}/b", content=b"12").status_code == 201
    assert demo.request("PUT", f"/{cont}/c", content=b"1").status_code == 413
    assert demo.request("POST", f"/{cont}", headers={"X-Container-Meta-Quota-Bytes": "x"}).status_code == 400
    # account quota: only a reseller admin sets it
    assert demo.request("POST", "", headers={"X-Account-Meta-Quota-Bytes": "5"}).status_code == 403
    conn = oscloud.sdk("admin")
    try:
        role = conn.identity.find_role("ResellerAdmin") or conn.identity.create_role(name="ResellerAdmin")
        project, user, password = make_project_user(oscloud, role="ResellerAdmin")
    finally:
        conn.close()
    token, _ = login(oscloud, user, password, project)
    reseller = Account(oscloud, token, demo.project_id)
    try:
        assert reseller.request("GET", f"/{cont}").status_code == 200  # any account
        assert reseller.request("POST", "", headers={"X-Account-Meta-Quota-Bytes": "1"}).status_code == 204
        c2 = f"q-{uuid.uuid4().hex[:6]}"
        demo.request("PUT", f"/{c2}")
        deadline = time.time() + 15
        while time.time() < deadline:  # account usage reaches the account servers async
            if demo.request("PUT", f"/{c2}/o", content=b"123").status_code == 413:
                break
            time.sleep(1)
        else:
            pytest.fail("account quota never enforced")
        assert reseller.request("POST", "", headers={"X-Remove-Account-Meta-Quota-Bytes": "x"}).status_code == 204
    finally:
        reseller.close()


def _sig(key: str, method: str, expires: int, path: str, digest) -> str:
    return hmac.new(key.encode(), f"{method}\n{expires}\n{path}".encode(), digest).hexdigest()


def test_tempurl_sha1_sha256_sha512(oscloud, demo, cont):
    key = uuid.uuid4().hex
    assert demo.request("POST", "", headers={"X-Account-Meta-Temp-URL-Key": key}).status_code == 204
    demo.request("PUT", f"/{cont}/t.txt", content=b"temp data")
    path = f"/v1/AUTH_{demo.project_id}/{cont}/t.txt"
    expires = int(time.time()) + 60
    for digest in (hashlib.sha1, hashlib.sha256, hashlib.sha512):
        sig = _sig(key, "GET", expires, path, digest)
        r = httpx.get(f"{oscloud.url}{path}?temp_url_sig={sig}&temp_url_expires={expires}")
        assert r.status_code == 200 and r.content == b"temp data"
        assert "attachment" in r.headers["content-disposition"]
    raw = hmac.new(key.encode(), f"GET\n{expires}\n{path}".encode(), hashlib.sha512).digest()
    b64 = "sha512:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert httpx.get(f"{oscloud.url}{path}", params={"temp_url_sig": b64,
                                                    "temp_url_expires": expires}).status_code == 200
    # wrong method, expired, tampered, other object: refused
    sig = _sig(key, "GET", expires, path, hashlib.sha256)
    assert httpx.put(f"{oscloud.url}{path}?temp_url_sig={sig}&temp_url_expires={expires}",
                     content=b"x").status_code == 401
    old = int(time.time()) - 10
    sig_old = _sig(key, "GET", old, path, hashlib.sha256)
    assert httpx.get(f"{oscloud.url}{path}?temp_url_sig={sig_old}&temp_url_expires={old}").status_code == 401
    assert httpx.get(f"{oscloud.url}{path}?temp_url_sig={'0' * 64}&temp_url_expires={expires}").status_code == 401
    other = path.replace("t.txt", "u.txt")
    assert httpx.get(f"{oscloud.url}{other}?temp_url_sig={sig}&temp_url_expires={expires}").status_code == 401
    # PUT signature uploads
    psig = _sig(key, "PUT", expires, other, hashlib.sha256)
    assert httpx.put(f"{oscloud.url}{other}?temp_url_sig={psig}&temp_url_expires={expires}",
                     content=b"up").status_code == 201
    assert demo.request("GET", f"/{cont}/u.txt").content == b"up"


def test_v1_auth_endpoint(oscloud, demo):
    import yaml

    auth = yaml.safe_load(oscloud.clouds_yaml.read_text())["clouds"]["demo"]["auth"]
    r = httpx.get(f"{oscloud.url}/auth/v1.0", headers={
        "X-Auth-User": f"{auth['project_name']}:{auth['username']}", "X-Auth-Key": auth["password"]})
    assert r.status_code == 200
    assert r.headers["x-storage-url"] == demo.url
    h = httpx.head(r.headers["x-storage-url"], headers={"X-Auth-Token": r.headers["x-auth-token"]})
    assert h.status_code == 204
    bad = httpx.get(f"{oscloud.url}/auth/v1.0", headers={
        "X-Auth-User": f"{auth['project_name']}:{auth['username']}", "X-Auth-Key": "wrong"})
    assert bad.status_code == 401


def test_reader_reads_but_cannot_write(oscloud, demo, cont):
    demo.request("PUT", f"/{cont}/r", content=b"read me")
    project_id = demo.project_id
    conn = oscloud.sdk("admin")
    try:
        tag = uuid.uuid4().hex[:6]
        password = uuid.uuid4().hex
        user = conn.identity.create_user(name=f"rd-{tag}", password=password, domain_id="default")
        conn.identity.assign_project_role_to_user(project_id, user, conn.identity.find_role("reader"))
        project_name = conn.identity.get_project(project_id).name
    finally:
        conn.close()
    token, _ = login(oscloud, f"rd-{tag}", password, project_name)
    reader = Account(oscloud, token, project_id)
    try:
        assert reader.request("GET", f"/{cont}/r").content == b"read me"
        assert reader.request("PUT", f"/{cont}/w", content=b"x").status_code == 403
    finally:
        reader.close()


def test_tempurl_container_key_and_prefix(oscloud, demo, cont):
    key = uuid.uuid4().hex
    assert demo.request("POST", f"/{cont}", headers={"X-Container-Meta-Temp-URL-Key-2": key}).status_code == 204
    for name in ("pre/a", "pre/b", "other"):
        demo.request("PUT", f"/{cont}/{name}", content=name.encode())
    expires = int(time.time()) + 60
    prefix_path = f"prefix:/v1/AUTH_{demo.project_id}/{cont}/pre/"
    sig = _sig(key, "GET", expires, prefix_path, hashlib.sha256)
    q = f"temp_url_sig={sig}&temp_url_expires={expires}&temp_url_prefix=pre/"
    base = f"{oscloud.url}/v1/AUTH_{demo.project_id}/{cont}"
    assert httpx.get(f"{base}/pre/a?{q}").content == b"pre/a"
    assert httpx.get(f"{base}/pre/b?{q}&inline").headers["content-disposition"].startswith("inline")
    assert httpx.get(f"{base}/other?{q}").status_code == 401
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    sig1 = _sig(key, "GET", expires, f"/v1/AUTH_{demo.project_id}/{cont}/other", hashlib.sha1)
    r = httpx.get(f"{base}/other?temp_url_sig={sig1}&temp_url_expires={iso}&filename=x.txt")
    assert r.status_code == 200 and 'filename="x.txt"' in r.headers["content-disposition"]
    # the key of another container does not open this one
    other = f"t-{uuid.uuid4().hex[:8]}"
    demo.request("PUT", f"/{other}")
    demo.request("PUT", f"/{other}/o", content=b"x")
    sig2 = _sig(key, "GET", expires, f"/v1/AUTH_{demo.project_id}/{other}/o", hashlib.sha256)
    assert httpx.get(f"{oscloud.url}/v1/AUTH_{demo.project_id}/{other}/o?temp_url_sig={sig2}"
                     f"&temp_url_expires={expires}").status_code == 401
