"""Every refusal the issue names, and the revocation triggers, over plain HTTP."""

from __future__ import annotations

import uuid

from tests.functional.identity.conftest import password_auth


def login(api, name, password, project=None, project_id=None):
    return api("POST", "/auth/tokens", json=password_auth(name, password, project, project_id=project_id))


def make_member(api, project_name=None):
    """A project with a member user; returns (project id, user id, name, password)."""
    project_name = project_name or f"p-{uuid.uuid4().hex[:8]}"
    p = api("POST", "/projects", json={"project": {"name": project_name, "domain_id": "default"}}).json()["project"]
    name, pw = f"u-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    u = api("POST", "/users", json={"user": {"name": name, "password": pw, "domain_id": "default",
                                             "default_project_id": p["id"]}}).json()["user"]
    member = api("GET", "/roles?name=member").json()["roles"][0]
    assert api("PUT", f"/projects/{p['id']}/users/{u['id']}/roles/{member['id']}").status_code == 204
    return p["id"], u["id"], name, pw


def test_discovery_without_token_or_redirect(icloud, api):
    import httpx

    for path in ("/identity", "/identity/"):
        r = httpx.get(icloud.url + path)
        assert r.status_code == 300 and r.json()["versions"]["values"][0]["id"].startswith("v3")
    for path in ("/identity/v3", "/identity/v3/"):
        r = httpx.get(icloud.url + path)
        assert r.status_code == 200 and r.json()["version"]["links"][0]["href"].endswith("/identity/v3/")
        assert r.headers["x-openstack-request-id"].startswith("req-")


def test_wrong_password_is_401(api):
    r = login(api, "admin", "not-the-password", "admin")
    assert r.status_code == 401 and r.json()["error"]["code"] == 401
    assert login(api, "no-such-user", "x").status_code == 401


def test_disabled_user_is_401_and_revoked(api):
    pid, uid, name, pw = make_member(api)
    ok = login(api, name, pw, project_id=pid)
    assert ok.status_code == 201
    token = ok.headers["x-subject-token"]
    assert api("PATCH", f"/users/{uid}", json={"user": {"enabled": False}}).status_code == 200
    assert login(api, name, pw, project_id=pid).status_code == 401
    assert api("GET", "/auth/projects", token=token).status_code == 401


def test_revocation_triggers(api):
    # password change, role removal, project disable and user delete each revoke at once
    pid, uid, name, pw = make_member(api)
    t1 = login(api, name, pw, project_id=pid).headers["x-subject-token"]
    r = api("POST", f"/users/{uid}/password", token=t1,
            json={"user": {"original_password": pw, "password": pw + "2"}})
    assert r.status_code == 204
    assert api("GET", "/auth/projects", token=t1).status_code == 401
    assert login(api, name, pw, project_id=pid).status_code == 401
    pw = pw + "2"

    t2 = login(api, name, pw, project_id=pid).headers["x-subject-token"]
    member = api("GET", "/roles?name=member").json()["roles"][0]
    assert api("DELETE", f"/projects/{pid}/users/{uid}/roles/{member['id']}").status_code == 204
    assert api("GET", "/auth/projects", token=t2).status_code == 401

    assert api("PUT", f"/projects/{pid}/users/{uid}/roles/{member['id']}").status_code == 204
    t3 = login(api, name, pw, project_id=pid).headers["x-subject-token"]
    assert api("PATCH", f"/projects/{pid}", json={"project": {"enabled": False}}).status_code == 200
    assert api("GET", "/auth/projects", token=t3).status_code == 401
    assert api("PATCH", f"/projects/{pid}", json={"project": {"enabled": True}}).status_code == 200

    t4 = login(api, name, pw, project_id=pid).headers["x-subject-token"]
    assert api("DELETE", f"/users/{uid}").status_code == 204
    assert api("GET", "/auth/projects", token=t4).status_code == 401
    assert api("DELETE", f"/projects/{pid}").status_code == 204


def test_rescoped_token_is_revoked_with_its_parent(api):
    pid, uid, name, pw = make_member(api)
    unscoped = api("POST", "/auth/tokens", json={"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"id": uid, "password": pw}}}, "scope": "unscoped"}})
    assert unscoped.status_code == 201 and "project" not in unscoped.json()["token"]
    parent = unscoped.headers["x-subject-token"]
    child = api("POST", "/auth/tokens", json={"auth": {"identity": {"methods": ["token"], "token": {"id": parent}},
                                                       "scope": {"project": {"id": pid}}}})
    assert child.status_code == 201
    body = child.json()["token"]
    assert body["project"]["id"] == pid and set(body["methods"]) == {"password", "token"}
    child_tok = child.headers["x-subject-token"]
    assert api("DELETE", "/auth/tokens", headers={"X-Subject-Token": parent}).status_code == 204
    assert api("GET", "/auth/projects", token=child_tok).status_code == 401


def test_member_cannot_create_project(api):
    pid, uid, name, pw = make_member(api)
    tok = login(api, name, pw, project_id=pid).headers["x-subject-token"]
    r = api("POST", "/projects", token=tok, json={"project": {"name": "nope", "domain_id": "default"}})
    assert r.status_code == 403 and "identity:admin" in r.json()["error"]["message"]
    assert api("GET", "/users", token=tok).status_code == 403


def test_other_projects_assignments_are_403(api):
    pa, ua, na, pwa = make_member(api)
    pb, ub, nb, pwb = make_member(api)
    tok = login(api, na, pwa, project_id=pa).headers["x-subject-token"]
    assert api("GET", f"/role_assignments?scope.project.id={pa}", token=tok).status_code == 200
    assert api("GET", f"/role_assignments?user.id={ua}", token=tok).status_code == 200
    r = api("GET", f"/role_assignments?scope.project.id={pb}", token=tok)
    assert r.status_code == 403
    assert api("GET", "/role_assignments", token=tok).status_code == 403
    assert api("GET", f"/projects/{pb}", token=tok).status_code == 403
    assert api("GET", f"/projects/{pa}", token=tok).status_code == 200
    # and another user's application credentials / EC2 credentials
    assert api("GET", f"/users/{ub}/application_credentials", token=tok).status_code == 403
    assert api("GET", f"/users/{ub}/credentials/OS-EC2", token=tok).status_code == 403


def test_malformed_json_is_400_naming_the_problem(api):
    r = api("POST", "/projects", content=b'{"project": {"name": ', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "Malformed JSON" in r.json()["error"]["message"]
    r = api("POST", "/projects", json={"project": {"name": 12}})
    assert r.status_code == 400 and "project.name" in r.json()["error"]["message"]
    r = api("POST", "/projects", json={"nope": {}})
    assert r.status_code == 400 and "'project'" in r.json()["error"]["message"]
    r = api("POST", "/auth/tokens", json={"auth": {"identity": {"methods": []}}})
    assert r.status_code == 400


def test_duplicate_name_is_409(api):
    name = f"dup-{uuid.uuid4().hex[:8]}"
    assert api("POST", "/projects", json={"project": {"name": name}}).status_code == 201
    r = api("POST", "/projects", json={"project": {"name": name}})
    assert r.status_code == 409 and name in r.json()["error"]["message"]
    assert api("POST", "/roles", json={"role": {"name": "member"}}).status_code == 409


def test_unknown_id_is_404(api):
    for path in ("/projects/nope", "/users/nope", "/groups/nope", "/roles/nope", "/domains/nope",
                 "/services/nope", "/endpoints/nope", "/regions/nope"):
        r = api("GET", path)
        assert r.status_code == 404, path
        assert r.json()["error"]["title"] == "Not Found"
    assert api("GET", "/auth/tokens", headers={"X-Subject-Token": "garbage"}).status_code == 404


def test_app_cred_cannot_delegate_roles_it_lacks(api):
    pid, uid, name, pw = make_member(api)
    tok = login(api, name, pw, project_id=pid).headers["x-subject-token"]
    r = api("POST", f"/users/{uid}/application_credentials", token=tok,
            json={"application_credential": {"name": "x", "roles": [{"name": "admin"}]}})
    assert r.status_code == 403
    r = api("POST", f"/users/{uid}/application_credentials", token=tok,
            json={"application_credential": {"name": "x", "expires_at": "2001-01-01T00:00:00Z"}})
    assert r.status_code == 400


def test_ec2_signature_check(api):
    """/v3/s3tokens accepts a correct SigV4 signature and refuses a wrong one."""
    import base64
    import hashlib
    import hmac

    pid, uid, name, pw = make_member(api)
    tok = login(api, name, pw, project_id=pid).headers["x-subject-token"]
    cred = api("POST", f"/users/{uid}/credentials/OS-EC2", token=tok, json={"tenant_id": pid}).json()["credential"]
    sts = "AWS4-HMAC-SHA256\n20260101T000000Z\n20260101/RegionOne/s3/aws4_request\n" + "a" * 64
    key = ("AWS4" + cred["secret"]).encode()
    for part in ("20260101", "RegionOne", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    body = {"credentials": {"access": cred["access"], "token": base64.urlsafe_b64encode(sts.encode()).decode(),
                            "signature": sig}}
    r = api("POST", "/s3tokens", token=None, json=body)
    assert r.status_code == 200 and r.json()["token"]["project"]["id"] == pid
    body["credentials"]["signature"] = "0" * 64
    assert api("POST", "/s3tokens", token=None, json=body).status_code == 401


def test_rotate_keys_keeps_old_tokens_valid(icloud, api):
    import subprocess
    import time

    from tests.cloudfixture import VENV_BIN

    old = icloud.token("admin")
    out = subprocess.run([str(VENV_BIN / "stratus"), "identity", "rotate-keys"], env=icloud.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "new primary token key" in out.stdout
    new = icloud.token("admin")
    assert api("GET", "/auth/projects", token=old).status_code == 200
    assert api("GET", "/auth/projects", token=new).status_code == 200
