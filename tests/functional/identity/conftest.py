"""An identity-only cloud per database back end: the identity suite runs on all three."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.cloudfixture import destroy_cloud, start_cloud


@pytest.fixture(scope="module", params=["sqlite", "mariadb", "postgresql"])
def icloud(request):
    state = Path(tempfile.mkdtemp(prefix=f"stratus-id-{request.param}-"))
    c = start_cloud(state, services=["identity"], backend=request.param)
    c.backend = request.param
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


class Api:
    """Direct HTTP to identity, for refusals and details the CLI hides."""

    def __init__(self, cloud, token: str | None = None):
        self.base = f"{cloud.identity_url}/v3"
        self.client = httpx.Client(timeout=30)
        self.token = token

    def __call__(self, method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        tok = token or self.token
        if tok:
            headers["X-Auth-Token"] = tok
        return self.client.request(method, self.base + path, headers=headers, **kw)


def password_auth(name: str, password: str, project: str | None = None, domain: str = "Default",
                  project_id: str | None = None) -> dict:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": name, "domain": {"name": domain}, "password": password}}}}}
    if project_id:
        body["auth"]["scope"] = {"project": {"id": project_id}}
    elif project:
        body["auth"]["scope"] = {"project": {"name": project, "domain": {"name": domain}}}
    return body


@pytest.fixture(scope="module")
def api(icloud):
    return Api(icloud, icloud.token("admin"))
