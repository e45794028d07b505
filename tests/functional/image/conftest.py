"""A real cloud (identity + image in one `stratus up`) for the image functional tests."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from tests.cloudfixture import destroy_cloud, start_cloud

MiB = 1024 * 1024
COUNT_QUOTA = 30
SIZE_QUOTA = 8 * MiB


@pytest.fixture(scope="package")
def image_cloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-image-test-"))
    c = start_cloud(state, services=["identity", "image"], extra_env={
        "STRATUS_IMAGE__REGISTER_TEST_IMAGE": "false",
        "STRATUS_IMAGE__IMAGE_COUNT_TOTAL": str(COUNT_QUOTA),
        "STRATUS_IMAGE__IMAGE_SIZE_TOTAL": str(SIZE_QUOTA),
    }, timeout=180)
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def add_project_user(cloud, prefix: str = "p") -> tuple[str, str]:
    """A new project with a member user, added to the cloud's clouds.yaml; returns (cloud name, project id)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    h = {"X-Auth-Token": cloud.token("admin")}
    base = f"{cloud.identity_url}/v3"
    with httpx.Client(timeout=30, headers=h) as http:
        project = http.post(f"{base}/projects", json={"project": {"name": name, "domain_id": "default"}})
        project.raise_for_status()
        project_id = project.json()["project"]["id"]
        user = http.post(f"{base}/users", json={"user": {"name": name, "password": password, "domain_id": "default",
                                                          "default_project_id": project_id}})
        user.raise_for_status()
        role = http.get(f"{base}/roles", params={"name": "member"}).json()["roles"][0]["id"]
        http.put(f"{base}/projects/{project_id}/users/{user.json()['user']['id']}/roles/{role}").raise_for_status()
    clouds = yaml.safe_load(cloud.clouds_yaml.read_text())
    entry = dict(clouds["clouds"]["demo"])
    entry["auth"] = {**entry["auth"], "username": name, "password": password, "project_name": name}
    clouds["clouds"][name] = entry
    cloud.clouds_yaml.write_text(yaml.safe_dump(clouds, sort_keys=False))
    return name, project_id


def image_url(cloud) -> str:
    return f"{cloud.url}/image"


def api(cloud, who: str = "demo") -> httpx.Client:
    return httpx.Client(base_url=image_url(cloud), timeout=60, headers={"X-Auth-Token": cloud.token(who)})
