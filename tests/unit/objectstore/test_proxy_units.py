"""Pure pieces of the proxy: ranges, conditions, ACLs, temp-URL signatures, settings, faults."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import os
from types import SimpleNamespace

import orjson
import pytest

from stratus.config import ConfigError
from stratus.objectstore.proxy.auth import (KeystoneAuth, TempURLGrant, parse_acl, parse_signature,
                                            validate_acl)
from stratus.objectstore.proxy.bulk import MEMBER_PIECE, BulkDelete, BulkUpload
from stratus.objectstore.proxy.core import Info, check_metadata
from stratus.objectstore.proxy.http import ASGIAdapter, Req, Resp, SwiftError, fault, split_source
from stratus.objectstore.proxy.large import check_conditions, parse_range, slo_etag
from stratus.objectstore.proxy.settings import ObjectStoreSettings
from stratus.objectstore.proxy.versioning import archive_prefix
from tests.archives import tar_archive


def test_parse_range_forms():
    assert parse_range("bytes=0-9", 100) == [(0, 10)]
    assert parse_range("bytes=90-", 100) == [(90, 100)]
    assert parse_range("bytes=-5", 100) == [(95, 100)]
    assert parse_range("bytes=0-0,50-59", 100) == [(0, 1), (50, 60)]
    assert parse_range("bytes=200-300", 100) == []
    assert parse_range("bytes=5-1", 100) is None      # malformed → whole object
    assert parse_range("items=0-1", 100) is None
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-999", 100) == [(0, 100)]


def test_conditions():
    lm = "Sat, 21 Nov 2026 07:00:00 GMT"
    assert check_conditions({"if-match": '"abc"'}, "abc", lm) is None
    assert check_conditions({"if-match": "zzz"}, "abc", lm) == 412
    assert check_conditions({"if-match": "*"}, "abc", lm) is None
    assert check_conditions({"if-none-match": "abc"}, "abc", lm) == 304
    assert check_conditions({"if-modified-since": lm}, "abc", lm) == 304
    assert check_conditions({"if-modified-since": "Sat, 21 Nov 2026 06:00:00 GMT"}, "abc", lm) is None
    assert check_conditions({"if-unmodified-since": "Sat, 21 Nov 2026 06:00:00 GMT"}, "abc", lm) == 412


def test_slo_etag_matches_swift_rule():
    segs = [{"hash": "a" * 32}, {"hash": "b" * 32, "range": "0-9"}]
    expected = hashlib.md5(("a" * 32 + "b" * 32 + ":0-9;").encode()).hexdigest()
    assert slo_etag(segs) == expected


def test_acl_parsing_and_validation():
    refs, groups = parse_acl(".r:*, .rlistings, proj:user, *:bob")
    assert refs == ["*"] and groups == [".rlistings", "proj:user", "*:bob"]
    validate_acl(".r:*,.rlistings,p:u", "X-Container-Read")
    with pytest.raises(SwiftError) as exc:
        validate_acl(".bogus", "X-Container-Read")
    assert exc.value.status == 400


def _ctx(project_id="p1", roles=("member",), user="u1"):
    return SimpleNamespace(project_id=project_id, project_name="pname", user_id=user,
                           user_name="uname", roles=list(roles))


def _req(method, path, ctx):
    return Req(method, path, {}, {}, None, {"ctx": ctx})


def test_authorize_owner_reseller_acl_and_anonymous():
    auth = KeystoneAuth(app=None)
    info = Info(204, {"x-container-read": "p2:u2", "x-container-write": ""}, 10)
    auth.authorize(_req("PUT", "/v1/AUTH_p1/c/o", _ctx()), info)            # owner
    auth.authorize(_req("PUT", "/v1/AUTH_p1/c/o", _ctx("p9", ("ResellerAdmin",))), info)
    auth.authorize(_req("GET", "/v1/AUTH_p1/c/o", _ctx("p2", ("member",), "u2")), info)
    with pytest.raises(SwiftError) as exc:
        auth.authorize(_req("PUT", "/v1/AUTH_p1/c/o", _ctx("p2", ("member",), "u2")), info)
    assert exc.value.status == 403
    with pytest.raises(SwiftError) as exc:
        auth.authorize(_req("GET", "/v1/AUTH_p1/c/o", None), info)
    assert exc.value.status == 401
    with pytest.raises(SwiftError):
        auth.authorize(_req("GET", "/v1/AUTH_p1/c/o", _ctx("p1", ("other",))), info)
    reader = _ctx("p1", ("reader",))
    auth.authorize(_req("GET", "/v1/AUTH_p1/c/o", reader), info)
    with pytest.raises(SwiftError):
        auth.authorize(_req("DELETE", "/v1/AUTH_p1/c/o", reader), info)
    public = Info(204, {"x-container-read": ".r:*"}, 10)
    auth.authorize(_req("GET", "/v1/AUTH_p1/c/o", None), public)
    with pytest.raises(SwiftError):  # listing needs .rlistings
        auth.authorize(_req("GET", "/v1/AUTH_p1/c", None), public)


def test_tempurl_grant_reach():
    auth = KeystoneAuth(app=None)
    info = Info(204, {}, 10)

    def check(grant, method, path, allowed):
        req = Req(method, path, {}, {}, None, {"ctx": None, "tempurl": grant})
        if allowed:
            auth.authorize(req, info)
            return
        with pytest.raises(SwiftError) as exc:
            auth.authorize(req, info)
        assert exc.value.status == 401

    account_get = TempURLGrant("AUTH_p1", None, ("c", "o"), "GET")
    check(account_get, "GET", "/v1/AUTH_p1/c/o", True)
    check(account_get, "GET", "/v1/AUTH_p1/segs/s1", True)     # a large object's segment
    check(account_get, "GET", "/v1/AUTH_p1/segs", True)        # a DLO's listing
    check(account_get, "GET", "/v1/AUTH_p2/c/o", False)        # never another account
    check(account_get, "GET", "/v1/AUTH_p2/segs/s1", False)
    check(account_get, "GET", "/v1/AUTH_p1", False)
    check(account_get, "PUT", "/v1/AUTH_p1/c/o", False)
    check(account_get, "DELETE", "/v1/AUTH_p1/segs/s1", False)
    container_get = TempURLGrant("AUTH_p1", "c", ("c", "o"), "GET")
    check(container_get, "GET", "/v1/AUTH_p1/c/s1", True)
    check(container_get, "GET", "/v1/AUTH_p1/segs/s1", False)
    check(container_get, "GET", "/v1/AUTH_p1/segs", False)
    put = TempURLGrant("AUTH_p1", None, ("c", "o"), "PUT")
    check(put, "PUT", "/v1/AUTH_p1/c/o", True)
    check(put, "HEAD", "/v1/AUTH_p1/c/o", True)
    check(put, "HEAD", "/v1/AUTH_p1/segs/s1", False)   # a manifest's segment check
    check(put, "PUT", "/v1/AUTH_p1/c/other", False)
    check(put, "GET", "/v1/AUTH_p1/c", False)


def test_tempurl_signature_forms():
    raw = hmac.new(b"k", b"GET\n1\n/v1/a/c/o", hashlib.sha256).digest()
    assert parse_signature(raw.hex()) == ("sha256", raw)
    b64 = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert parse_signature("sha256:" + b64) == ("sha256", raw)
    assert parse_signature("a" * 40)[0] == "sha1"
    assert parse_signature("a" * 128)[0] == "sha512"
    for bad in ("abc", "md5:xxxx", "z" * 64):
        with pytest.raises(SwiftError):
            parse_signature(bad)


def test_metadata_limits_and_names():
    check_metadata({"x-object-meta-a": "b"}, "object")
    with pytest.raises(SwiftError):
        check_metadata({"x-object-meta-" + "a" * 129: "b"}, "object")
    with pytest.raises(SwiftError):
        check_metadata({"x-object-meta-a": "b" * 257}, "object")
    with pytest.raises(SwiftError):
        check_metadata({f"x-object-meta-{i}": "v" for i in range(91)}, "object")
    assert split_source("/c/o/p") == ("c", "o/p")
    assert split_source("c%20x/o") == ("c x", "o")
    with pytest.raises(SwiftError):
        split_source("justcontainer")
    assert archive_prefix("o") == "001o/" and archive_prefix("x" * 300) == "12c" + "x" * 300 + "/"


def test_request_path_split():
    r = Req("GET", "/v1/AUTH_a/c/o/with/slashes", {}, {})
    assert (r.version, r.account, r.container, r.obj) == ("v1", "AUTH_a", "c", "o/with/slashes")
    r = Req("GET", "/v1/AUTH_a/c/", {}, {})
    assert (r.container, r.obj) == ("c", None)
    r = Req("GET", "/v1/AUTH_a", {}, {})
    assert (r.account, r.container) == ("AUTH_a", None)
    with pytest.raises(SwiftError):
        _ = Req("PUT", "/v1/a/c/o", {}, {"content-length": "-1"}).content_length


def test_settings_validation(tmp_path):
    s = ObjectStoreSettings.from_section({}, tmp_path)
    assert s.ring_dir == str(tmp_path / "objectstore" / "rings") and s.replicas == 3
    s = ObjectStoreSettings.from_section({"devices_per_node": "1,1", "run_nodes": "false"}, tmp_path)
    assert s.devices_per_node == [1, 1] and s.run_nodes is False
    # one node: a single count, as an environment variable parsed to a number gives it
    assert ObjectStoreSettings.from_section({"devices_per_node": 4}, tmp_path).devices_per_node == [4]
    from stratus.objectstore.service import node_command

    assert "--per-file-sync" not in node_command(s, tmp_path, 6200, ["d0"])
    s = ObjectStoreSettings.from_section({"group_sync": "false"}, tmp_path)
    assert node_command(s, tmp_path, 6200, ["d0"])[-1] == "--per-file-sync"
    for bad in ({"nope": 1}, {"replicas": 0}, {"devices_per_node": [0]}, {"max_file_size": "x"},
                {"part_power": 30}, {"max_deletes_per_request": 0},
                {"max_failed_extractions": "many"}):
        with pytest.raises(ConfigError) as exc:
            ObjectStoreSettings.from_section(bad, tmp_path)
        assert "objectstore." in str(exc.value)


def test_bulk_limits_are_settings_shown_in_info():
    from stratus.objectstore.proxy import info_document

    s = ObjectStoreSettings.from_section({"max_deletes_per_request": "2", "max_failed_deletes": 1,
                                          "max_containers_per_extraction": 3,
                                          "max_failed_extractions": 4}, "/tmp")
    info = info_document(s)
    assert info["bulk_delete"] == {"max_deletes_per_request": 2, "max_failed_deletes": 1}
    assert info["bulk_upload"] == {"max_containers_per_extraction": 3,
                                   "max_failed_extractions": 4}
    store = _RecordingStore({"locked"})

    def bulk_delete(body: bytes):
        async def run():
            req = Req("POST", "/v1/AUTH_a", {"bulk-delete": ""},
                      {"accept": "application/json", "content-length": str(len(body))}, body,
                      {"authorize": lambda *a: None})
            return await BulkDelete(store, store, max_deletes=s.max_deletes_per_request,
                                    max_failed=s.max_failed_deletes)(req)
        return asyncio.run(run())

    with pytest.raises(SwiftError) as exc:
        bulk_delete(b"c/a\nc/b\nc/c\n")
    assert exc.value.status == 413 and "is 2" in str(exc.value.message)
    assert store.calls == []  # refused before anything was deleted
    # the run stops at the failure limit, for containers and for objects alike
    for body in (b"locked\nlocked\n", b"locked/a\nlocked/b\n"):
        doc = orjson.loads(bulk_delete(body).body)
        assert len(doc["Errors"]) == 1 and doc["Errors"][0][1] == "403 Forbidden"
        assert doc["Response Status"] == "400 Bad Request"
        assert doc["Response Body"] == "Max delete failures exceeded"
    # an empty list deletes nothing and says so, as Swift does
    doc = orjson.loads(bulk_delete(b"\n").body)
    assert doc["Response Status"] == "400 Bad Request"
    assert doc["Response Body"] == "Invalid bulk delete."


def test_faults_are_swift_html_and_adapter_adds_trans_id():
    f = fault(404, "Container not found")
    assert f.status == 404 and b"<h1>Not Found</h1>" in f.body

    async def pipeline(req):
        raise SwiftError(409, "conflict here")

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": "GET", "path": "/v1/AUTH_a/c", "raw_path": b"/v1/AUTH_a/c",
             "query_string": b"", "headers": [], "stratus.request_id": "txabc-1"}
    asyncio.run(ASGIAdapter(pipeline)(scope, receive, send))
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 409 and headers[b"x-trans-id"] == b"txabc-1"
    assert headers[b"x-openstack-request-id"] == b"txabc-1"
    assert b"conflict here" in sent[1]["body"]


# -- bulk upload over a stand-in for the rest of the pipeline -----------------------------------
class _RecordingStore:
    """What the filters below bulk upload would do, in memory: containers and objects of one
    account, a container named "locked" that the caller may neither read nor write."""

    def __init__(self, containers=()):
        self.containers = set(containers)
        self.objects: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.max_file_size = 1 << 30

    async def __call__(self, req):
        self.calls.append((req.method, req.path))
        if req.container == "locked":
            raise SwiftError(403, "Forbidden")
        if req.obj is None:
            if req.method == "HEAD":
                return Resp(204 if req.container in self.containers else 404, {}, b"")
            self.containers.add(req.container)
            return Resp(201, {}, b"")
        if req.container not in self.containers:
            return Resp(404, {}, b"")
        body = req.body
        if not isinstance(body, bytes):
            body = b"".join([bytes(piece) async for piece in body])
        assert len(body) == int(req.headers["content-length"])
        self.objects[f"{req.container}/{req.obj}"] = body
        return Resp(201, {}, b"")


async def _pieces(data: bytes, size: int):
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i:i + size]


def _extract(store, path, body, fmt="tar", accept="application/json", **limits):
    async def run():
        upload = BulkUpload(store, store, **limits)
        req = Req("PUT", path, {"extract-archive": fmt},
                  {"accept": accept, "transfer-encoding": "chunked"}, body,
                  {"authorize": lambda *a: None})
        resp = await upload(req)
        return resp, await resp.read()
    return asyncio.run(run())


def test_bulk_upload_streams_a_compressed_archive_in_small_pieces():
    big = os.urandom(3 * MEMBER_PIECE + 5)  # streamed to the store in pieces, not held
    archive = tar_archive({"c/a.txt": b"alpha", "c/deep/big": big, "top-level": b"ignored"}, "gz",
                   dirs=["c/emptydir"])
    store = _RecordingStore()
    resp, raw = _extract(store, "/v1/AUTH_a", _pieces(archive, 1000), "tar.gz")
    doc = orjson.loads(raw)
    assert resp.status == 200 and doc["Response Status"] == "201 Created", doc
    assert doc["Number Files Created"] == 2 and doc["Errors"] == []
    assert store.objects == {"c/a.txt": b"alpha", "c/deep/big": big}
    # the container is checked once, created once
    assert [c for c in store.calls if c[1] == "/v1/AUTH_a/c"] == [
        ("HEAD", "/v1/AUTH_a/c"), ("PUT", "/v1/AUTH_a/c")]


def test_bulk_upload_reports_refusals_bad_names_and_limits():
    archive = tar_archive({"x/one": b"1", "./p/two": b"2", "locked/three": b"3",
                    "x/" + "n" * 1100: b"4", "x/bad\udcfename": b"5"})
    store = _RecordingStore({"x"})
    _, raw = _extract(store, "/v1/AUTH_a", archive, accept="text/plain")
    text = raw.decode()
    assert "Number Files Created: 2\n" in text and "Response Status: 400 Bad Request\n" in text
    assert "/v1/AUTH_a/locked, 403 Forbidden\n" in text
    assert "locked/three, 403 Forbidden\n" in text
    assert "x/" + "n" * 1100 + ", 400 Bad Request\n" in text
    assert "x/bad%FEname, 412 Precondition Failed\n" in text
    assert set(store.objects) == {"x/one", "p/two"}
    # at a prefix in a container: every path lands under it
    store = _RecordingStore({"c"})
    _, raw = _extract(store, "/v1/AUTH_a/c/pre/", tar_archive({"a/b": b"ab", "z": b"z"}), "tar")
    assert orjson.loads(raw)["Number Files Created"] == 2
    assert set(store.objects) == {"c/pre/a/b", "c/pre/z"}
    # no more containers than allowed are created; the report says why it stopped
    store = _RecordingStore()
    _, raw = _extract(store, "/v1/AUTH_a", tar_archive({"c1/o": b"1", "c2/o": b"2"}),
                      max_containers=1)
    doc = orjson.loads(raw)
    assert doc["Response Status"] == "400 Bad Request" and "More than 1 container" in \
        doc["Response Body"] and store.containers == {"c1"} and doc["Number Files Created"] == 1
    # nor more failures than allowed: the rest of the archive is not read
    store = _RecordingStore()
    _, raw = _extract(store, "/v1/AUTH_a", tar_archive({"locked/a": b"", "locked/b": b"",
                                                 "ok/c": b""}), max_failed=2)
    assert orjson.loads(raw)["Errors"] == [["/v1/AUTH_a/locked", "403 Forbidden"],
                                           ["locked/a", "403 Forbidden"]]
    assert store.objects == {}


def test_bulk_upload_bad_archives_are_400_reports():
    store = _RecordingStore({"c"})
    for body, fmt, message in ((b"not a tar at all" * 100, "tar", "Invalid Tar File: "),
                               (tar_archive({"c/o": b"x"}), "tar.gz", "not a gzip file"),
                               (tar_archive({"c/o": b"x"}, "gz")[:-30], "tar.gz", "truncated"),
                               # cut in the middle of a member being streamed to the nodes
                               (tar_archive({"o": os.urandom(2 * MEMBER_PIECE)})[:MEMBER_PIECE * 3 // 2],
                                "tar", "unexpected end of data"),
                               (b"", "tar.bz2", "Invalid Tar File"),
                               (tar_archive({}), "tar", "No Valid Files")):
        # in small pieces: headers and members split across them
        piece = min(7 + len(body) // 20, 65536)
        resp, raw = _extract(store, "/v1/AUTH_a/c", _pieces(body, piece), fmt)
        doc = orjson.loads(raw)
        assert resp.status == 200 and doc["Response Status"] == "400 Bad Request", (fmt, doc)
        assert message in doc["Response Body"], doc
    assert store.objects == {}
    resp, raw = _extract(store, "/v1/AUTH_a/c", b"", "zip")
    assert resp.status == 400 and b"Unsupported archive format 'zip'" in raw


def test_bulk_upload_sends_spaces_while_it_works():
    class SlowStore(_RecordingStore):
        async def __call__(self, req):
            if req.obj is not None:
                await asyncio.sleep(0.15)
            return await super().__call__(req)

    store = SlowStore({"c"})
    archive = tar_archive({f"c/{i}": b"x" for i in range(4)})
    resp, raw = _extract(store, "/v1/AUTH_a", archive, heartbeat_interval=0.1)
    assert raw.startswith(b" ") and b"\r\n\r\n{" in raw
    doc = orjson.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert doc["Number Files Created"] == 4 and doc["Response Status"] == "201 Created"


def test_http_dates_are_those_of_formatdate_across_second_changes():
    from email.utils import formatdate

    from stratus.objectstore.proxy.core import _http_date

    for t in (0.5, 1700000000.0, 1700000000.999, 1700000001.2, 1700000000.5, 2000000000.75):
        assert _http_date(t) == formatdate(t, usegmt=True)
