"""The object store through the real `swift` CLI and openstacksdk (`stratus up` with
identity + objectstore: the proxy in the main process, 3 storage-node processes)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.cloudfixture import destroy_cloud, start_cloud

from .proxyfixture import (Account, make_project_user, md5_file, swift, swift_env,
                           token_and_project, login)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def oscloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-os-"))
    c = start_cloud(state, services=["identity", "objectstore"])
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def work(tmp_path):
    return tmp_path


def _random_file(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_upload_download_stat_list_post_delete(oscloud, work):
    env = swift_env(oscloud)
    c = f"cli-{uuid.uuid4().hex[:6]}"
    big = _random_file(work / "data" / "big.bin", 3 * 1024 * 1024 + 17)
    small = _random_file(work / "data" / "docs" / "a.txt", 100)
    _random_file(work / "data" / "docs" / "b.txt", 10)
    swift(env, "upload", c, "data", cwd=work)
    listing = swift(env, "list", c).stdout.split()
    assert listing == ["data/big.bin", "data/docs/a.txt", "data/docs/b.txt"]
    assert swift(env, "list", c, "--prefix", "data/docs/").stdout.split() == [
        "data/docs/a.txt", "data/docs/b.txt"]
    assert swift(env, "list", c, "--delimiter", "/").stdout.split() == ["data/"]
    assert swift(env, "list", c, "--prefix", "data/", "--delimiter", "/").stdout.split() == [
        "data/big.bin", "data/docs/"]
    out = work / "out"
    out.mkdir()
    swift(env, "download", c, "data/big.bin", "-o", str(out / "big.bin"))  # md5 checked by swift
    assert md5_file(out / "big.bin") == md5_file(big)
    swift(env, "download", c, "data/docs/a.txt", "-o", str(out / "a.txt"))
    assert (out / "a.txt").read_bytes() == small.read_bytes()

    stat = swift(env, "stat", c).stdout
    assert "Objects: 3" in stat and f"Bytes: {3 * 1024 * 1024 + 17 + 110}" in stat
    swift(env, "post", c, "-m", "color:blue")
    assert "Meta Color: blue" in swift(env, "stat", c).stdout
    swift(env, "post", c, "data/big.bin", "-m", "kind:random")
    ostat = swift(env, "stat", c, "data/big.bin").stdout
    assert "Meta Kind: random" in ostat and f"ETag: {md5_file(big)}" in ostat
    acct = swift(env, "stat").stdout
    assert "Containers:" in acct and "X-Trans-Id" in acct

    swift(env, "delete", c, "data/docs/b.txt")
    assert swift(env, "list", c).stdout.split() == ["data/big.bin", "data/docs/a.txt"]
    swift(env, "delete", c)
    assert c not in swift(env, "list").stdout.split()


@pytest.mark.parametrize("mode", ["--use-slo", "--use-dlo"])
def test_segmented_upload_and_download(oscloud, work, mode):
    env = swift_env(oscloud)
    c = f"seg-{uuid.uuid4().hex[:6]}"
    big = _random_file(work / "big.bin", 5 * 1024 * 1024 + 333)
    swift(env, "upload", c, "big.bin", "--segment-size", str(1024 * 1024), mode, cwd=work)
    segments = swift(env, "list", f"{c}_segments").stdout.split()
    assert len(segments) == 6
    stat = swift(env, "stat", c, "big.bin").stdout
    assert f"Content Length: {5 * 1024 * 1024 + 333}" in stat
    assert ("Manifest:" in stat) == (mode == "--use-dlo")
    swift(env, "download", c, "big.bin", "-o", str(work / "back.bin"))
    assert md5_file(work / "back.bin") == md5_file(big)
    swift(env, "delete", c, "big.bin")  # removes the segments too
    assert swift(env, "list", f"{c}_segments").stdout.split() == []
    swift(env, "delete", c)
    swift(env, "delete", f"{c}_segments", check=False)


def test_openstacksdk_object_store(oscloud):
    conn = oscloud.sdk("demo")
    try:
        c = f"sdk-{uuid.uuid4().hex[:6]}"
        conn.object_store.create_container(name=c)
        conn.object_store.upload_object(container=c, name="hello.txt", data=b"hello sdk")
        assert conn.object_store.download_object("hello.txt", container=c) == b"hello sdk"
        names = [o.name for o in conn.object_store.objects(c)]
        assert names == ["hello.txt"]
        conn.object_store.set_container_metadata(c, owner="sdk")
        meta = conn.object_store.get_container_metadata(c)
        assert meta.metadata.get("owner") == "sdk"
        conn.object_store.delete_object("hello.txt", container=c)
        conn.object_store.delete_container(c)
        assert c not in [x.name for x in conn.object_store.containers()]
    finally:
        conn.close()


def test_other_project_refused_unless_acl_allows(oscloud, work):
    env = swift_env(oscloud)
    c = f"acl-{uuid.uuid4().hex[:6]}"
    (work / "obj.txt").write_bytes(b"secret data")
    swift(env, "upload", c, "obj.txt", cwd=work)
    demo_token, demo_project = token_and_project(oscloud, "demo")
    project, user, password = make_project_user(oscloud)
    other_token, other_project = login(oscloud, user, password, project)
    other = Account(oscloud, other_token, demo_project)
    anon = Account(oscloud, None, demo_project)
    try:
        assert other.request("GET", f"/{c}/obj.txt").status_code == 403
        assert other.request("GET", f"/{c}").status_code == 403
        assert other.request("PUT", f"/{c}/new", content=b"x").status_code == 403
        assert other.request("GET", "").status_code == 403
        assert anon.request("GET", f"/{c}/obj.txt").status_code == 401
        # the other user's CLI against the demo account is refused too
        oenv = swift_env(oscloud, user=user, password=password, project=project)
        refused = swift(oenv, "--os-storage-url", anon.url, "list", c, check=False)
        assert refused.returncode != 0 and "403" in refused.stderr

        # a project:user read ACL lets that user read and list, not write
        swift(env, "post", c, "-r", f"{other_project}:{user}")
        assert other.request("GET", f"/{c}/obj.txt").content == b"secret data"
        assert other.request("GET", f"/{c}").text.split() == ["obj.txt"]
        assert other.request("PUT", f"/{c}/new", content=b"x").status_code == 403
        assert anon.request("GET", f"/{c}/obj.txt").status_code == 401
        # ... a write ACL lets them write
        swift(env, "post", c, "-w", f"{project}:*")
        assert other.request("PUT", f"/{c}/new", content=b"x").status_code == 201
        # .r:* is public object read; listing needs .rlistings as well
        swift(env, "post", c, "-r", ".r:*")
        assert anon.request("GET", f"/{c}/obj.txt").content == b"secret data"
        assert anon.request("GET", f"/{c}").status_code == 401
        assert other.request("GET", f"/{c}/obj.txt").status_code == 200
        swift(env, "post", c, "-r", ".r:*,.rlistings")
        assert anon.request("GET", f"/{c}").text.split() == ["new", "obj.txt"]
        assert anon.request("PUT", f"/{c}/x", content=b"x").status_code == 401
        assert anon.request("DELETE", f"/{c}/obj.txt").status_code == 401
    finally:
        other.close()
        anon.close()
    swift(env, "delete", c)


def test_openstack_cli_container_and_object_commands(oscloud, work):
    c = f"osc-{uuid.uuid4().hex[:6]}"
    created = oscloud.osc(f"container create {c}", cloud="demo")
    assert created[0]["container"] == c and created[0]["x-trans-id"].startswith("tx")
    (work / "f.txt").write_bytes(b"osc data\n")
    obj = oscloud.osc(["object", "create", c, str(work / "f.txt"), "--name", "f.txt"], cloud="demo")
    assert obj[0]["etag"] == md5_file(work / "f.txt")
    assert [o["Name"] for o in oscloud.osc(f"object list {c}", cloud="demo")] == ["f.txt"]
    shown = oscloud.osc(f"object show {c} f.txt", cloud="demo")
    assert shown["content-length"] == "9"
    oscloud.osc(f"object set --property k=v {c} f.txt", cloud="demo", fmt_json=False)
    assert "k" in oscloud.osc(f"object show {c} f.txt", cloud="demo")["properties"]
    cont = oscloud.osc(f"container show {c}", cloud="demo")
    assert cont["object_count"] == "1" and cont["storage_policy"] == "Policy-0"
    oscloud.osc(["object", "save", c, "f.txt", "--file", str(work / "back.txt")], cloud="demo")
    assert (work / "back.txt").read_bytes() == b"osc data\n"
    oscloud.osc(f"object delete {c} f.txt", cloud="demo")
    oscloud.osc(f"container delete {c}", cloud="demo")
    assert c not in [x["Name"] for x in oscloud.osc("container list", cloud="demo")]
