"""Backups through the real `openstack volume backup ...` commands, into an in-memory stand-in
for the object store's Swift API registered in the catalog with the admin CLI.

This runs whether or not the object store service is in the build; test_backup_cli.py runs
the same flow against the real object store once it is present."""

from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pytest

from tests.functional.volume.conftest import VolumeApi, login

CONNECTOR = {"host": "compute-1", "ip": "127.0.0.1"}


class SwiftStandIn(BaseHTTPRequestHandler):
    """PUT/GET/DELETE of containers and objects under /v1/AUTH_<project>/, kept in memory."""

    store: dict = {}
    lock = threading.Lock()

    def _split(self):
        parts = unquote(urlparse(self.path).path).split("/", 4)  # '', v1, AUTH_x, container, object
        if len(parts) < 4 or parts[1] != "v1" or not parts[2].startswith("AUTH_"):
            return None
        return parts[2], parts[3], parts[4] if len(parts) > 4 else None

    def _answer(self, status: int, body: bytes = b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _checked(self):
        if not self.headers.get("X-Auth-Token"):
            self._answer(401)
            return None
        where = self._split()
        if where is None:
            self._answer(404)
        return where

    def do_PUT(self):  # noqa: N802
        where = self._checked()
        if where is None:
            return
        account, container, obj = where
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            if obj is None:
                created = (account, container) not in self.store
                self.store.setdefault((account, container), {})
                return self._answer(201 if created else 202)
            objects = self.store.get((account, container))
            if objects is None:
                return self._answer(404)
            objects[obj] = body
        self._answer(201)

    def do_GET(self):  # noqa: N802
        where = self._checked()
        if where is None:
            return
        account, container, obj = where
        with self.lock:
            data = (self.store.get((account, container)) or {}).get(obj)
        self._answer(200, data) if data is not None else self._answer(404)

    def do_DELETE(self):  # noqa: N802
        where = self._checked()
        if where is None:
            return
        account, container, obj = where
        with self.lock:
            found = (self.store.get((account, container)) or {}).pop(obj, None)
        self._answer(204 if found is not None else 404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def swift(vcloud):
    server = ThreadingHTTPServer(("127.0.0.1", 0), SwiftStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    svc = vcloud.osc("service create --name swift-stand-in object-store")
    vcloud.osc(["endpoint", "create", "--region", "RegionOne", svc["id"], "public",
                f"http://127.0.0.1:{port}/v1/AUTH_%(project_id)s"])
    try:
        yield SwiftStandIn.store
    finally:
        vcloud.osc(f"service delete {svc['id']}", fmt_json=False)
        server.shutdown()
        server.server_close()


def wait(vcloud, kind, name, status, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        shown = vcloud.osc(f"{kind} show {name}", cloud="demo")
        if shown["status"] == status:
            return shown
        assert "error" not in shown["status"], shown
        assert time.monotonic() < deadline, f"{kind} {name} stayed {shown['status']}"
        time.sleep(0.5)


def nbd(api: VolumeApi, volume_id: str, command: str) -> subprocess.CompletedProcess:
    r = api("POST", "/attachments", json={"attachment": {"volume_uuid": volume_id, "instance_uuid": "i-bk",
                                                         "connector": CONNECTOR}})
    assert r.status_code == 200, r.text
    att = r.json()["attachment"]
    d = att["connection_info"]["data"]
    try:
        return subprocess.run(["qemu-io", "-f", "raw", "-c", command, f"nbd://{d['host']}:{d['port']}/{d['name']}"],
                              capture_output=True, text=True, timeout=30)
    finally:
        api("DELETE", f"/attachments/{att['id']}")


def test_backup_create_incremental_restore_delete_through_the_cli(vcloud, swift, other_project):
    token, project = login(vcloud.identity_url, "demo", vcloud.secrets()["demo_password"], "demo")
    api = VolumeApi(vcloud, token, project)
    vcloud.osc("volume create --size 1 bsrc", cloud="demo")
    src = wait(vcloud, "volume", "bsrc", "available")
    assert nbd(api, src["id"], "write -P 0x4d 0 4096").returncode == 0

    vcloud.osc("volume backup create --name bfull bsrc", cloud="demo")
    full = wait(vcloud, "volume backup", "bfull", "available")
    assert full["is_incremental"] is False and full["object_count"] == 2
    # The chunks really are in the object store, in the volume service's account.
    names = [name for objects in swift.values() for name in objects]
    assert f"volume_{src['id']}/{full['id']}/metadata" in names

    assert nbd(api, src["id"], "write -P 0x4e 67108864 4096").returncode == 0
    vcloud.osc("volume backup create --incremental --name bincr bsrc", cloud="demo")
    incr = wait(vcloud, "volume backup", "bincr", "available")
    assert incr["is_incremental"] is True and incr["object_count"] == 2  # only the changed chunk
    listed = {b["Name"] for b in vcloud.osc("volume backup list", cloud="demo")}
    assert {"bfull", "bincr"} <= listed

    # Another project's user cannot see or restore it.
    assert other_project("GET", f"/backups/{full['id']}").status_code == 404
    assert other_project("POST", f"/backups/{full['id']}/restore", json={"restore": {}}).status_code == 404

    # A backup with dependents cannot be deleted.
    proc = vcloud.osc("volume backup delete bfull", cloud="demo", check=False, fmt_json=False)
    assert proc.returncode != 0 and "depend" in proc.stderr

    vcloud.osc("volume create --size 1 btarget", cloud="demo")
    target = wait(vcloud, "volume", "btarget", "available")
    vcloud.osc("volume backup restore --force bincr btarget", cloud="demo")
    wait(vcloud, "volume", "btarget", "available")
    for command in ("read -P 0x4d 0 4096", "read -P 0x4e 67108864 4096"):
        out = nbd(api, target["id"], command)
        assert out.returncode == 0 and "verification failed" not in out.stdout, out.stdout

    # Restoring into a new volume (no volume given) makes one.
    r = api("POST", f"/backups/{full['id']}/restore", json={"restore": {"name": "bnew"}})
    assert r.status_code == 202
    made = api.wait(f"/volumes/{r.json()['restore']['volume_id']}", "volume", ("available", "error"))
    assert made["status"] == "available"
    out = nbd(api, made["id"], "read -P 0x4d 0 4096")
    assert out.returncode == 0 and "verification failed" not in out.stdout
    out = nbd(api, made["id"], "read -P 0x4e 67108864 4096")
    assert out.returncode != 0 or "verification failed" in out.stdout  # the full backup predates it

    vcloud.osc("volume backup delete bincr", cloud="demo", fmt_json=False)
    deadline = time.monotonic() + 60
    while "bincr" in {b["Name"] for b in vcloud.osc("volume backup list", cloud="demo")}:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert not any(n.startswith(f"volume_{src['id']}/{incr['id']}/") for objs in swift.values() for n in objs)
    vcloud.osc("volume backup delete bfull", cloud="demo", fmt_json=False)
    for vid in (src["id"], target["id"], made["id"]):
        assert api("DELETE", f"/volumes/{vid}").status_code == 202
