"""First start: the default domain, roles, admin and demo users and projects, service users,
the region and the catalog; then clouds.yaml and openrc files for the clients. Idempotent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from pathlib import Path

import sqlalchemy as sa
import yaml

from stratus.common.db import new_id
from stratus.identity import models as m
from stratus.identity.manager import DEFAULT_DOMAIN_ID, IdentityManager

log = logging.getLogger("stratus.identity.bootstrap")

ROLES = ("admin", "member", "reader", "service", "ResellerAdmin")
# admin implies member implies reader (what keystone-manage bootstrap sets up).
IMPLIES = (("admin", "member"), ("member", "reader"))


async def _one(mgr: IdentityManager, model, **where):
    async with mgr.db.reader() as s:
        q = sa.select(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return (await s.execute(q)).scalars().first()


def _fingerprint(name: str, password: str) -> str:
    return hashlib.sha256(f"{name}\0{password}".encode()).hexdigest()


async def ensure(mgr: IdentityManager, *, admin_password: str, demo_password: str, service_password: str,
                 service_users: list[str], region: str, catalog: list[tuple[str, str, str]],
                 applied_file: Path | None = None) -> dict:
    if await _one(mgr, m.Domain, id=DEFAULT_DOMAIN_ID) is None:
        await mgr.create_domain("Default", "The default domain", id=DEFAULT_DOMAIN_ID)
    roles = {}
    for name in ROLES:
        role = await _one(mgr, m.Role, name=name, domain_key="")
        roles[name] = role or await mgr.create_role(name=name)
    rules = set(await mgr.implied_rules())
    for prior, implied in IMPLIES:
        if (roles[prior].id, roles[implied].id) not in rules:
            await mgr.add_implied_role(roles[prior].id, roles[implied].id)

    async def project(name: str, description: str):
        return await _one(mgr, m.Project, name=name, domain_id=DEFAULT_DOMAIN_ID) or await mgr.create_project(
            name=name, domain_id=DEFAULT_DOMAIN_ID, description=description)

    # Which configured passwords were last applied: a configured password is set on a user only
    # when the configuration changed, so a password changed through the API survives restarts
    # and a restart costs no Argon2 work.
    applied = json.loads(applied_file.read_text()) if applied_file and applied_file.exists() else {}

    async def user(name: str, password: str, default_project: str):
        existing = await _one(mgr, m.User, name=name, domain_id=DEFAULT_DOMAIN_ID)
        fp = _fingerprint(name, password)
        if existing is None:
            created = await mgr.create_user(name=name, domain_id=DEFAULT_DOMAIN_ID, password=password,
                                            default_project_id=default_project)
            applied[name] = fp
            return created
        if applied.get(name) != fp:
            await mgr.update_user(existing.id, {"password": password})
            applied[name] = fp
        return existing

    admin_p = await project("admin", "Bootstrap project for the cloud administrator")
    demo_p = await project("demo", "A project for trying the cloud as an ordinary member")
    service_p = await project("service", "Service users' project")
    # Each check is an Argon2 verify (or hash): run them side by side, not one after another.
    admin_u, demo_u, *service_us = await asyncio.gather(
        user("admin", admin_password, admin_p.id), user("demo", demo_password, demo_p.id),
        *(user(svc, service_password, service_p.id) for svc in service_users))
    grants = [(admin_u.id, admin_p.id, "admin"), (demo_u.id, demo_p.id, "member")]
    for u in service_us:
        grants += [(u.id, service_p.id, "admin"), (u.id, service_p.id, "service")]
    for uid, pid, role in grants:
        if not await mgr.check_grant("user", uid, "project", pid, roles[role].id):
            await mgr.grant("user", uid, "project", pid, roles[role].id)
    async with mgr.db.reader() as s:
        sys_grant = await s.get(m.Assignment, ("UserSystem", admin_u.id, "system", roles["admin"].id, False))
    if sys_grant is None:
        await mgr.grant("user", admin_u.id, "system", "system", roles["admin"].id)
    if applied_file is not None:
        _write_private(applied_file, json.dumps(applied))
    if await _one(mgr, m.Region, id=region) is None:
        await mgr._insert(m.Region(id=region, description="", extra={}), "region", region)
    await sync_catalog(mgr, region, catalog)
    return {"admin_project_id": admin_p.id, "demo_project_id": demo_p.id}


async def sync_catalog(mgr: IdentityManager, region: str, catalog: list[tuple[str, str, str]]) -> None:
    """Make the catalog list exactly these (type, name, url) services, one endpoint per interface."""
    for stype, name, url in catalog:
        svc = await _one(mgr, m.Service, type=stype)
        if svc is None:
            svc = await mgr._insert(m.Service(id=new_id(), type=stype, name=name, description="", enabled=True,
                                              extra={}), "service", stype)
        async with mgr.db.session() as s:
            eps = (await s.execute(sa.select(m.Endpoint).where(m.Endpoint.service_id == svc.id))).scalars().all()
            have = {e.interface: e for e in eps}
            for interface in ("public", "internal", "admin"):
                ep = have.get(interface)
                if ep is None:
                    s.add(m.Endpoint(id=new_id(), service_id=svc.id, interface=interface, region_id=region,
                                     url=url, enabled=True, extra={}))
                elif ep.url != url:
                    ep.url = url
    mgr.changed()


def write_client_files(state_dir: Path, *, auth_url: str, region: str, admin_password: str,
                       demo_password: str) -> None:
    """clouds.yaml (clouds 'admin' and 'demo') and openrc.admin / openrc.demo, mode 0600."""
    clouds = {"clouds": {}}
    for name, password in (("admin", admin_password), ("demo", demo_password)):
        clouds["clouds"][name] = {
            "auth": {"auth_url": auth_url, "username": name, "password": password, "project_name": name,
                     "user_domain_name": "Default", "project_domain_name": "Default"},
            "region_name": region, "interface": "public", "identity_api_version": 3,
        }
        rc = (f"# Source this file to use the Stratus cloud as {name}.\n"
              f"export OS_AUTH_URL={auth_url}\nexport OS_USERNAME={name}\nexport OS_PASSWORD='{password}'\n"
              f"export OS_PROJECT_NAME={name}\nexport OS_USER_DOMAIN_NAME=Default\n"
              f"export OS_PROJECT_DOMAIN_NAME=Default\nexport OS_REGION_NAME={region}\n"
              f"export OS_IDENTITY_API_VERSION=3\nexport OS_INTERFACE=public\n")
        _write_private(state_dir / f"openrc.{name}", rc)
    _write_private(state_dir / "clouds.yaml", yaml.safe_dump(clouds, sort_keys=False))


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
