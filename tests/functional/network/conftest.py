"""A cloud with identity and networking only; the agent uses the fake driver (API tests alone)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from tests.cloudfixture import destroy_cloud, start_cloud

AGENT_HOST = "functional-host"


@pytest.fixture(scope="module")
def ncloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-net-"))
    c = start_cloud(state, services=["identity", "network"], extra_env={
        "STRATUS_NETWORK__AGENT_DRIVER": "fake", "STRATUS_NETWORK__HOST": AGENT_HOST})
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


class Api:
    """Direct HTTP to /network/v2.0 as one user, for what the CLI does not expose."""

    def __init__(self, cloud, token: str):
        self.base = f"{cloud.url}/network/v2.0"
        self.client = httpx.Client(timeout=60, headers={"X-Auth-Token": token})

    def __call__(self, method: str, path: str, **kw) -> httpx.Response:
        return self.client.request(method, self.base + path, **kw)


@pytest.fixture(scope="module")
def admin_api(ncloud):
    return Api(ncloud, ncloud.token("admin"))


@pytest.fixture(scope="module")
def demo_api(ncloud):
    return Api(ncloud, ncloud.token("demo"))


@pytest.fixture(scope="module")
def other(ncloud):
    """A second project with a member user: its clouds.yaml entry `other` and an Api."""
    tag = uuid.uuid4().hex[:6]
    project, user, password = f"nproj-{tag}", f"nuser-{tag}", f"pw-{uuid.uuid4().hex}"
    ncloud.osc(f"project create --domain default {project}")
    ncloud.osc(f"user create --domain default --password {password} --project {project} {user}")
    ncloud.osc(f"role add --project {project} --user {user} member", fmt_json=False)
    clouds = yaml.safe_load(ncloud.clouds_yaml.read_text())
    entry = dict(clouds["clouds"]["demo"])
    entry["auth"] = {**entry["auth"], "username": user, "password": password, "project_name": project}
    clouds["clouds"]["other"] = entry
    path = ncloud.state_dir / "clouds-other.yaml"
    path.write_text(yaml.safe_dump(clouds))
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    r = httpx.post(f"{ncloud.identity_url}/v3/auth/tokens", json=body, timeout=30)
    r.raise_for_status()

    class Other:
        api = Api(ncloud, r.headers["x-subject-token"])
        project_id = r.json()["token"]["project"]["id"]

        @staticmethod
        def osc(command: str, **kw):
            return ncloud.osc(command, cloud="other", env={"OS_CLIENT_CONFIG_FILE": str(path)}, **kw)

    return Other
