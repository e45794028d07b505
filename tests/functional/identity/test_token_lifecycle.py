"""Token expiry, allow_expired, scopes, inherited grants and key rotation (SQLite, short tokens)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cloudfixture import VENV_BIN, destroy_cloud, start_cloud
from tests.functional.identity.conftest import Api, password_auth


@pytest.fixture(scope="module")
def shortcloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-id-short-"))
    c = start_cloud(state, services=["identity"], extra_env={"STRATUS_IDENTITY__TOKEN_EXPIRATION": "3"})
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def admin_login(cloud, scope: dict | None = None) -> httpx.Response:
    body = password_auth("admin", cloud.secrets()["admin_password"])
    if scope is not None:
        body["auth"]["scope"] = scope
    return httpx.post(f"{cloud.identity_url}/v3/auth/tokens", json=body)


def test_expired_token_is_401_and_allow_expired(shortcloud):
    r = admin_login(shortcloud, {"project": {"name": "admin", "domain": {"id": "default"}}})
    tok = r.headers["x-subject-token"]
    api = Api(shortcloud)
    assert api("GET", "/auth/projects", token=tok).status_code == 200
    time.sleep(3.5)
    assert api("GET", "/auth/projects", token=tok).status_code == 401
    fresh = admin_login(shortcloud, {"project": {"name": "admin", "domain": {"id": "default"}}}).headers["x-subject-token"]
    assert api("GET", "/auth/tokens", token=fresh, headers={"X-Subject-Token": tok}).status_code == 404
    ok = api("GET", "/auth/tokens?allow_expired=1", token=fresh, headers={"X-Subject-Token": tok})
    assert ok.status_code == 200 and ok.json()["token"]["user"]["name"] == "admin"


def test_domain_and_system_scope(shortcloud):
    api = Api(shortcloud, admin_login(shortcloud, {"project": {"name": "admin", "domain": {"id": "default"}}})
              .headers["x-subject-token"])
    admin_id = api("GET", "/users?name=admin").json()["users"][0]["id"]
    admin_role = api("GET", "/roles?name=admin").json()["roles"][0]["id"]
    assert api("PUT", f"/domains/default/users/{admin_id}/roles/{admin_role}").status_code == 204
    d = admin_login(shortcloud, {"domain": {"id": "default"}})
    assert d.status_code == 201
    body = d.json()["token"]
    assert body["domain"]["id"] == "default" and "project" not in body
    assert {"admin", "member", "reader"} <= {x["name"] for x in body["roles"]}
    s = admin_login(shortcloud, {"system": {"all": True}})
    assert s.status_code == 201 and s.json()["token"]["system"] == {"all": True}
    # A user with no system role cannot get a system-scoped token.
    name, pw = f"u-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    api("POST", "/users", json={"user": {"name": name, "password": pw}})
    r = httpx.post(f"{shortcloud.identity_url}/v3/auth/tokens",
                   json={**password_auth(name, pw), "auth": {**password_auth(name, pw)["auth"],
                                                             "scope": {"system": {"all": True}}}})
    assert r.status_code == 401


def test_inherited_domain_grant_reaches_projects(shortcloud):
    api = Api(shortcloud, admin_login(shortcloud, {"project": {"name": "admin", "domain": {"id": "default"}}})
              .headers["x-subject-token"])
    p = api("POST", "/projects", json={"project": {"name": f"inh-{uuid.uuid4().hex[:6]}"}}).json()["project"]
    name, pw = f"u-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    uid = api("POST", "/users", json={"user": {"name": name, "password": pw}}).json()["user"]["id"]
    member = api("GET", "/roles?name=member").json()["roles"][0]["id"]
    path = f"/OS-INHERIT/domains/default/users/{uid}/roles/{member}/inherited_to_projects"
    assert api("PUT", path).status_code == 204
    r = httpx.post(f"{shortcloud.identity_url}/v3/auth/tokens", json=password_auth(name, pw, project_id=p["id"]))
    assert r.status_code == 201 and "member" in {x["name"] for x in r.json()["token"]["roles"]}
    eff = api("GET", f"/role_assignments?effective&user.id={uid}&scope.project.id={p['id']}").json()
    assert {e["role"]["id"] for e in eff["role_assignments"]} >= {member}
    # The domain itself is not granted by an inherited assignment.
    r = httpx.post(f"{shortcloud.identity_url}/v3/auth/tokens",
                   json={"auth": {**password_auth(name, pw)["auth"], "scope": {"domain": {"id": "default"}}}})
    assert r.status_code == 401


def test_bootstrap_applies_config_passwords_only_when_changed(tmp_path):
    state = tmp_path / "st"
    c = start_cloud(state, services=["identity"])
    try:
        demo_pw = c.secrets()["demo_password"]
        body = password_auth("demo", demo_pw, "demo")
        r = httpx.post(f"{c.identity_url}/v3/auth/tokens", json=body)
        tok, uid = r.headers["x-subject-token"], r.json()["token"]["user"]["id"]
        assert Api(c)("POST", f"/users/{uid}/password", token=tok,
                      json={"user": {"original_password": demo_pw, "password": "changed-by-user"}}).status_code == 204
    finally:
        destroy_cloud(c)
    c = start_cloud(state, services=["identity"])
    try:
        # A restart keeps the password the user chose.
        assert httpx.post(f"{c.identity_url}/v3/auth/tokens",
                          json=password_auth("demo", "changed-by-user", "demo")).status_code == 201
    finally:
        destroy_cloud(c)
    c = start_cloud(state, services=["identity"], extra_env={"STRATUS_IDENTITY__DEMO_PASSWORD": "from-config"})
    try:
        # A password changed in the configuration is applied.
        assert httpx.post(f"{c.identity_url}/v3/auth/tokens",
                          json=password_auth("demo", "from-config", "demo")).status_code == 201
        assert httpx.post(f"{c.identity_url}/v3/auth/tokens",
                          json=password_auth("demo", "changed-by-user", "demo")).status_code == 401
    finally:
        destroy_cloud(c)
