"""Identity through the real `openstack` CLI and openstacksdk, on every database back end."""

from __future__ import annotations

import uuid

import httpx

from tests.functional.identity.conftest import password_auth


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_token_issue_and_revoke(icloud, api):
    tok = icloud.osc("token issue")
    assert tok["project_id"] and tok["user_id"] and tok["expires"]
    # The issued token works, then is revoked through the CLI and stops working at once.
    assert api("GET", "/auth/projects", token=tok["id"]).status_code == 200
    icloud.osc(["token", "revoke", tok["id"]], fmt_json=False)
    assert api("GET", "/auth/projects", token=tok["id"]).status_code == 401
    r = api("GET", "/auth/tokens", headers={"X-Subject-Token": tok["id"]})
    assert r.status_code == 404


def test_catalog_list(icloud):
    catalog = icloud.osc("catalog list")
    types = {e["Type"] for e in catalog}
    assert "identity" in types
    ident = next(e for e in catalog if e["Type"] == "identity")
    assert icloud.identity_url in str(ident["Endpoints"])


def test_project_user_group_role_lifecycle(icloud):
    proj, user, group, role = uniq("proj"), uniq("user"), uniq("grp"), uniq("role")
    p = icloud.osc(f"project create --domain default --description first {proj}")
    assert p["name"] == proj and p["enabled"] is True and p["domain_id"] == "default"
    assert proj in [x["Name"] for x in icloud.osc("project list")]
    icloud.osc(f"project set --description second --disable {proj}", fmt_json=False)
    shown = icloud.osc(f"project show {proj}")
    assert shown["description"] == "second" and shown["enabled"] is False
    icloud.osc(f"project set --enable {proj}", fmt_json=False)

    u = icloud.osc(f"user create --domain default --password pw-{user} --project {proj} --email {user}@x.test {user}")
    assert u["name"] == user and u["default_project_id"] == p["id"]
    icloud.osc(f"user set --description hello {user}", fmt_json=False)
    assert icloud.osc(f"user show {user}")["description"] == "hello"

    g = icloud.osc(f"group create --domain default {group}")
    assert g["name"] == group
    icloud.osc(f"group add user {group} {user}", fmt_json=False)
    assert user in [x["Name"] for x in icloud.osc(f"user list --group {group}")]

    r = icloud.osc(f"role create {role}")
    assert r["name"] == role
    assert role in [x["Name"] for x in icloud.osc("role list")]

    icloud.osc(f"role add --project {proj} --user {user} member", fmt_json=False)
    icloud.osc(f"role add --project {proj} --group {group} {role}", fmt_json=False)
    rows = icloud.osc(f"role assignment list --names --effective --project {proj}")
    got = {(x["Role"], x["User"]) for x in rows}
    # member implies reader; the group's role reaches its member.
    assert (("member", f"{user}@Default") in got and ("reader", f"{user}@Default") in got
            and (role, f"{user}@Default") in got)

    # The new user can log in to the project with its password.
    tok = httpx.post(f"{icloud.identity_url}/v3/auth/tokens", json=password_auth(user, f"pw-{user}", proj))
    assert tok.status_code == 201
    roles = {x["name"] for x in tok.json()["token"]["roles"]}
    assert {"member", "reader", role} <= roles

    icloud.osc(f"role remove --project {proj} --user {user} member", fmt_json=False)
    rows = icloud.osc(f"role assignment list --names --project {proj} --user {user}")
    assert not [x for x in rows if x["Role"] == "member"]

    icloud.osc(f"group remove user {group} {user}", fmt_json=False)
    icloud.osc(f"group delete {group}", fmt_json=False)
    icloud.osc(f"user delete {user}", fmt_json=False)
    icloud.osc(f"role delete {role}", fmt_json=False)
    icloud.osc(f"project delete {proj}", fmt_json=False)
    assert proj not in [x["Name"] for x in icloud.osc("project list")]
    gone = icloud.osc(f"project show {proj}", check=False)
    assert gone.returncode != 0 and "no project" in (gone.stderr + gone.stdout).lower()


def test_application_credential_authenticates(icloud):
    name = uniq("appcred")
    created = icloud.osc(f"application credential create --role reader {name}")
    cred = {"id": created["ID"], "secret": created["Secret"]}
    assert cred["secret"] and cred["id"]
    listed = icloud.osc("application credential list")
    assert name in [x["Name"] for x in listed]
    env = {"OS_AUTH_TYPE": "v3applicationcredential", "OS_APPLICATION_CREDENTIAL_ID": cred["id"],
           "OS_APPLICATION_CREDENTIAL_SECRET": cred["secret"], "OS_AUTH_URL": icloud.identity_url,
           "OS_CLOUD": "", "OS_CLIENT_CONFIG_FILE": "/dev/null", "OS_IDENTITY_API_VERSION": "3"}
    tok = icloud.osc("token issue", env=env)
    assert tok["project_id"]
    # The credential carries only the delegated role.
    body = httpx.get(f"{icloud.identity_url}/v3/auth/tokens",
                     headers={"X-Auth-Token": tok["id"], "X-Subject-Token": tok["id"]}).json()["token"]
    assert [r["name"] for r in body["roles"]] == ["reader"]
    assert body["application_credential"]["id"] == cred["id"]
    # A wrong secret is refused.
    bad = {"auth": {"identity": {"methods": ["application_credential"],
                                 "application_credential": {"id": cred["id"], "secret": "nope"}}}}
    assert httpx.post(f"{icloud.identity_url}/v3/auth/tokens", json=bad).status_code == 401
    icloud.osc(f"application credential delete {name}", fmt_json=False)
    ok = {"auth": {"identity": {"methods": ["application_credential"],
                                "application_credential": {"id": cred["id"], "secret": cred["secret"]}}}}
    assert httpx.post(f"{icloud.identity_url}/v3/auth/tokens", json=ok).status_code == 401


def test_ec2_credentials(icloud):
    created = icloud.osc("ec2 credentials create")
    assert created["access"] and created["secret"]
    listed = icloud.osc("ec2 credentials list")
    assert created["access"] in [x["Access"] for x in listed]
    icloud.osc(["ec2", "credentials", "delete", created["access"]], fmt_json=False)
    assert created["access"] not in [x["Access"] for x in icloud.osc("ec2 credentials list")]


def test_sdk_lookups_and_filters(icloud):
    conn = icloud.sdk("admin")
    name = uniq("sdkproj")
    p = conn.identity.create_project(name=name, domain_id="default", description="via sdk")
    assert conn.identity.find_project(name).id == p.id
    assert conn.identity.find_project(p.id).name == name
    assert [x.id for x in conn.identity.projects(name=name)] == [p.id]
    assert name in [x.name for x in conn.identity.projects(domain_id="default", enabled=True)]
    assert name not in [x.name for x in conn.identity.projects(enabled=False)]
    assert conn.identity.find_user("admin").name == "admin"
    assert conn.identity.find_domain("Default").id == "default"
    conn.identity.delete_project(p)
    assert conn.identity.find_project(name) is None


def test_domain_lifecycle_with_null_fields(icloud):
    # OSC sends "description": null on create; a domain must be disabled before deletion.
    name = uniq("dom")
    d = icloud.osc(f"domain create {name}")
    assert d["name"] == name and d["enabled"] is True
    refused = icloud.osc(f"domain delete {name}", check=False, fmt_json=False)
    assert refused.returncode != 0
    icloud.osc(f"domain set --disable --description later {name}", fmt_json=False)
    assert icloud.osc(f"domain show {name}")["description"] == "later"
    icloud.osc(f"domain delete {name}", fmt_json=False)
    assert name not in [x["Name"] for x in icloud.osc("domain list")]
