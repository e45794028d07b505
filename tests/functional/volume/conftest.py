"""A cloud with identity and block storage only (plus helpers for direct API calls)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cloudfixture import destroy_cloud, start_cloud


@pytest.fixture(scope="module")
def vcloud():
    # STRATUS_TEST_VOLUME_DB=mariadb|postgresql runs the suite on another database back end.
    backend = os.environ.get("STRATUS_TEST_VOLUME_DB", "sqlite")
    state = Path(tempfile.mkdtemp(prefix="stratus-vol-"))
    # A private export port range so that parallel clouds never collide.
    base = 21000 + (uuid.uuid4().int % 400) * 50
    try:
        c = start_cloud(state, services=["identity", "volume"], extra_env={
            "STRATUS_VOLUME__EXPORT_PORT_MIN": str(base), "STRATUS_VOLUME__EXPORT_PORT_MAX": str(base + 49),
            "STRATUS_VOLUME__HEARTBEAT_INTERVAL": "2"}, backend=backend, timeout=180)
    except Exception:
        shutil.rmtree(state, ignore_errors=True)  # start-up failed: nothing else to clean
        raise
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def login(identity_url: str, user: str, password: str, project: str) -> tuple[str, str]:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    r = httpx.post(f"{identity_url}/v3/auth/tokens", json=body, timeout=30)
    r.raise_for_status()
    return r.headers["x-subject-token"], r.json()["token"]["project"]["id"]


class VolumeApi:
    """Direct HTTP to block storage as one user (for microversions, refusals, the attach flow)."""

    def __init__(self, cloud, token: str, project_id: str, version: str = "3.71"):
        self.root = f"{cloud.url}/volume"
        self.base = f"{cloud.url}/volume/v3/{project_id}"
        self.project_id = project_id
        self.token = token
        self.version = version
        self.client = httpx.Client(timeout=60)

    def __call__(self, method: str, path: str, *, version: str | None = None, base: str | None = None, **kw):
        headers = {"X-Auth-Token": self.token, **kw.pop("headers", {})}
        v = self.version if version is None else version  # "" sends no microversion header
        if v:
            headers["OpenStack-API-Version"] = f"volume {v}"
        return self.client.request(method, (base or self.base) + path, headers=headers, **kw)

    def wait(self, path: str, key: str, statuses: tuple[str, ...], timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self("GET", path)
            if r.status_code == 404 and "deleted" in statuses:
                return {"status": "deleted"}
            assert r.status_code == 200, r.text
            body = r.json()[key]
            if body["status"] in statuses:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} stayed {body['status']} (wanted {statuses}): {body}")
            time.sleep(0.2)

    def create_volume(self, size: int = 1, **extra) -> dict:
        r = self("POST", "/volumes", json={"volume": {"size": size, "name": f"v-{uuid.uuid4().hex[:6]}", **extra}})
        assert r.status_code == 202, r.text
        return self.wait(f"/volumes/{r.json()['volume']['id']}", "volume", ("available", "error"))


@pytest.fixture(scope="module")
def demo_api(vcloud):
    token, project = login(vcloud.identity_url, "demo", vcloud.secrets()["demo_password"], "demo")
    return VolumeApi(vcloud, token, project)


@pytest.fixture(scope="module")
def admin_api(vcloud):
    token, project = login(vcloud.identity_url, "admin", vcloud.secrets()["admin_password"], "admin")
    return VolumeApi(vcloud, token, project)


@pytest.fixture(scope="module")
def other_project(vcloud):
    """A second project with its own member user, made with the admin CLI."""
    tag = uuid.uuid4().hex[:6]
    project, user, password = f"vproj-{tag}", f"vuser-{tag}", f"pw-{tag}-{uuid.uuid4().hex}"
    vcloud.osc(f"project create --domain default {project}")
    vcloud.osc(f"user create --domain default --password {password} --project {project} {user}")
    vcloud.osc(f"role add --project {project} --user {user} member", fmt_json=False)
    token, project_id = login(vcloud.identity_url, user, password, project)
    return VolumeApi(vcloud, token, project_id)
