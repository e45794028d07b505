"""A cloud with identity, image and compute (fake driver, 3 simulated hosts) for the compute tests."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from stratus import services as registry
from tests.cloudfixture import destroy_cloud, start_cloud

FAKE_ENV = {
    "STRATUS_COMPUTE__DRIVER": "fake",
    "STRATUS_COMPUTE__FAKE_HOSTS": "3",
    "STRATUS_COMPUTE__FAKE_MEMORY_MB": "8192",
    "STRATUS_COMPUTE__FAKE_VCPUS": "4",
    "STRATUS_COMPUTE__HEARTBEAT_INTERVAL": "1",
    "STRATUS_COMPUTE__SERVICE_DOWN_TIME": "6",
    "STRATUS_COMPUTE__SCHEDULER_REFRESH_INTERVAL": "0.5",
    "STRATUS_COMPUTE__RECONCILE_INTERVAL": "1",
}


def compute_services() -> list[str]:
    present = registry.available()
    return [s for s in ("identity", "image", "compute") if s in present]


def token_for(url: str, user: str, password: str, project: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    r = httpx.post(f"{url}/identity/v3/auth/tokens", json=body, timeout=30)
    r.raise_for_status()
    return r.headers["x-subject-token"]


class Api:
    """httpx against /compute/v2.1 with a token and a microversion, for the bulk of the checks."""

    def __init__(self, base: str, token: str, version: str = "2.100"):
        self.client = httpx.Client(base_url=f"{base}/compute/v2.1", timeout=60,
                                   headers={"X-Auth-Token": token, "OpenStack-API-Version": f"compute {version}"})

    def __getattr__(self, name):
        return getattr(self.client, name)

    def wait(self, server_id: str, status: str | set, timeout: float = 30.0) -> dict:
        want = {status} if isinstance(status, str) else set(status)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            r = self.client.get(f"/servers/{server_id}")
            if r.status_code == 404 and "DELETED" in want:
                return {}
            last = r.json().get("server", {})
            if last.get("status") in want and not last.get("OS-EXT-STS:task_state"):
                return last
            time.sleep(0.1)
        raise AssertionError(f"server {server_id} did not reach {want}: {last}")

    def create(self, name: str, image: str, flavor: str = "1", **extra) -> dict:
        body = {"server": {"name": name, "imageRef": image, "flavorRef": flavor, "networks": "none", **extra}}
        r = self.client.post("/servers", json=body)
        assert r.status_code == 202, r.text
        return r.json()["server"]


def image_id(cloud, timeout: float = 60.0) -> str | None:
    """The test image the image service registers after start (None when image is absent)."""
    if "image" not in cloud.services:
        return None
    tok = cloud.token("admin")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{cloud.url}/image/v2/images", headers={"X-Auth-Token": tok}, timeout=30)
        if r.status_code == 200:
            for img in r.json().get("images", []):
                if img.get("status") == "active" and img.get("visibility") == "public":
                    return img["id"]
        time.sleep(0.5)
    return None


@pytest.fixture(scope="session")
def ccloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-compute-"))
    c = start_cloud(state, services=compute_services(), extra_env=FAKE_ENV)
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def image(ccloud):
    img = image_id(ccloud)
    if img is None:
        pytest.skip("the image service is not present in this build (servers need an image)")
    return img


@pytest.fixture(scope="session")
def demo(ccloud):
    api = Api(ccloud.url, ccloud.token("demo"))
    yield api
    api.client.close()


@pytest.fixture(scope="session")
def admin(ccloud):
    api = Api(ccloud.url, ccloud.token("admin"))
    yield api
    api.client.close()


@pytest.fixture(scope="session")
def other(ccloud):
    """A member of another project, to check tenancy."""
    ccloud.osc("project create --domain default other", cloud="admin")
    ccloud.osc("user create --domain default --project other --password other-pw other", cloud="admin")
    ccloud.osc("role add --project other --user other member", cloud="admin", fmt_json=False)
    api = Api(ccloud.url, token_for(ccloud.url, "other", "other-pw", "other"))
    yield api
    api.client.close()
