"""Identity's logic: the directory (domains, projects, users, groups, roles), role assignments,
the catalog, and credentials. Authentication and tokens are in ``authn.py``."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from stratus.common.auth import REVOCATION_TOPIC
from stratus.common.db import Database, new_id, utcnow
from stratus.common.errors import BadRequest, Conflict, Forbidden, NotFound
from stratus.identity import models as m
from stratus.identity.passwords import Hasher
from stratus.identity.revocation import RevocationList
from stratus.identity.tokens import CredentialCipher, KeyRing

log = logging.getLogger("stratus.identity")

DEFAULT_DOMAIN_ID = "default"
MEMO_SECONDS = 30.0

# Which model a kind of thing is, for messages and lookups.
KINDS = {
    "domain": m.Domain, "project": m.Project, "user": m.User, "group": m.Group, "role": m.Role,
    "region": m.Region, "service": m.Service, "endpoint": m.Endpoint,
    "application credential": m.ApplicationCredential, "credential": m.Credential,
}


def not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"Could not find {kind}: {ident}.")


class IdentityManager:
    def __init__(self, db: Database, *, bus=None, hasher: Hasher | None = None, token_expiration: int = 3600,
                 allow_expired_window: int = 172800, max_active_keys: int = 3):
        self.db = db
        self.bus = bus
        self.hasher = hasher or Hasher()
        self.keyring = KeyRing(db)
        self.cipher = CredentialCipher(db)
        self.revocations = RevocationList(db)
        self.token_expiration = token_expiration
        self.allow_expired_window = allow_expired_window
        self.max_active_keys = max_active_keys
        # Bumped on every local write; cached token validations are recomputed after it moves.
        self.generation = 0
        # Rarely-changing reads (catalog, implied-role rules) cached per generation; the TTL
        # bounds how long another worker's change takes to show here.
        self._memo: dict[str, tuple[int, float, object]] = {}

    async def _memoized(self, key: str, load):
        now = time.monotonic()
        hit = self._memo.get(key)
        if hit is not None and hit[0] == self.generation and hit[1] > now:
            return hit[2]
        value = await load()
        self._memo[key] = (self.generation, now + MEMO_SECONDS, value)
        return value

    async def start(self) -> None:
        await self.keyring.ensure()
        await self.revocations.refresh(force=True)

    # ---- generic helpers -------------------------------------------------------------------

    def changed(self) -> None:
        self.generation += 1

    async def get(self, kind: str, ident: str, session=None):
        model = KINDS[kind]
        if session is not None:
            obj = await session.get(model, ident)
        else:
            async with self.db.reader() as s:
                obj = await s.get(model, ident)
        if obj is None:
            raise not_found(kind, ident)
        return obj

    async def list(self, kind: str, filters: dict[str, Any] | None = None, *, order=None) -> list:
        model = KINDS[kind]
        q = sa.select(model)
        for key, value in (filters or {}).items():
            q = q.where(getattr(model, key) == value)
        q = q.order_by(order if order is not None else (model.name if hasattr(model, "name") else model.id))
        async with self.db.reader() as s:
            return list((await s.execute(q)).scalars().all())

    async def _insert(self, obj, kind: str, describe: str):
        try:
            async with self.db.session() as s:
                s.add(obj)
        except IntegrityError:
            raise Conflict(f"Conflict occurred attempting to store {kind} - Duplicate entry found with {describe}.") from None
        self.changed()
        return obj

    async def _update(self, kind: str, ident: str, changes: dict[str, Any], describe=None):
        try:
            async with self.db.session() as s:
                obj = await self.get(kind, ident, s)
                for key, value in changes.items():
                    setattr(obj, key, value)
        except IntegrityError:
            raise Conflict(f"Conflict occurred attempting to update {kind} - Duplicate entry found with "
                           f"{describe or changes}.") from None
        self.changed()
        return obj

    async def _delete(self, kind: str, ident: str) -> None:
        async with self.db.session() as s:
            obj = await self.get(kind, ident, s)
            await s.delete(obj)
        self.changed()

    async def broadcast_revocation(self, **event) -> None:
        self.changed()
        if self.bus is not None:
            try:
                await self.bus.fanout(REVOCATION_TOPIC, "revoked", **event)
            except Exception:
                log.exception("could not broadcast a revocation; caches expire by TTL")

    async def revoke(self, **fields) -> None:
        await self.revocations.revoke(**fields)
        await self.broadcast_revocation(**{k: v for k, v in fields.items() if isinstance(v, str)})

    # ---- domains ---------------------------------------------------------------------------

    async def create_domain(self, name: str, description: str = "", enabled: bool = True, id: str | None = None,
                            extra: dict | None = None) -> m.Domain:
        return await self._insert(m.Domain(id=id or new_id(), name=name, description=description,
                                           enabled=enabled, extra=extra or {}), "domain", f"name {name}")

    async def update_domain(self, domain_id: str, changes: dict) -> m.Domain:
        obj = await self._update("domain", domain_id, changes, f"name {changes.get('name')}")
        if changes.get("enabled") is False:
            await self.revoke(domain_id=domain_id)
        return obj

    async def delete_domain(self, domain_id: str) -> None:
        dom = await self.get("domain", domain_id)
        if dom.enabled:
            raise Forbidden(f"Cannot delete a domain that is enabled, please disable it first.")
        if domain_id == DEFAULT_DOMAIN_ID:
            raise Forbidden("The default domain cannot be deleted.")
        async with self.db.session() as s:
            for model in (m.Project, m.User, m.Group):
                if await s.scalar(sa.select(sa.func.count()).select_from(model).where(model.domain_id == domain_id)):
                    raise Conflict(f"Domain {domain_id} still owns {model.__tablename__}; delete them first.")
            await s.execute(sa.delete(m.Assignment).where(m.Assignment.target_id == domain_id))
            await s.delete(await s.get(m.Domain, domain_id))
        await self.revoke(domain_id=domain_id)

    async def find_domain(self, ref: dict) -> m.Domain:
        """A domain named in an auth or scope body by {"id"} or {"name"}."""
        if not isinstance(ref, dict) or not (ref.get("id") or ref.get("name")):
            raise BadRequest("A domain must be given by 'id' or 'name'.")
        async with self.db.reader() as s:
            if ref.get("id"):
                dom = await s.get(m.Domain, ref["id"])
            else:
                dom = (await s.execute(sa.select(m.Domain).where(m.Domain.name == ref["name"]))).scalar_one_or_none()
        if dom is None:
            raise not_found("domain", ref.get("id") or ref.get("name"))
        return dom

    # ---- projects --------------------------------------------------------------------------

    async def create_project(self, *, name: str, domain_id: str, description: str = "", enabled: bool = True,
                             parent_id: str | None = None, tags: list | None = None, is_domain: bool = False,
                             extra: dict | None = None, id: str | None = None) -> m.Project:
        await self.get("domain", domain_id)
        if parent_id:
            parent = await self.get("project", parent_id)
            if parent.domain_id != domain_id:
                raise BadRequest("A project's parent must be in the same domain.")
        return await self._insert(m.Project(id=id or new_id(), name=name, domain_id=domain_id,
                                            description=description, enabled=enabled, parent_id=parent_id,
                                            tags=tags or [], extra=extra or {}),
                                  "project", f"name {name} at domain ID {domain_id}")

    async def update_project(self, project_id: str, changes: dict) -> m.Project:
        obj = await self._update("project", project_id, changes, f"name {changes.get('name')}")
        if changes.get("enabled") is False:
            await self.revoke(project_id=project_id)
        return obj

    async def delete_project(self, project_id: str) -> None:
        async with self.db.session() as s:
            obj = await self.get("project", project_id, s)
            children = await s.scalar(sa.select(sa.func.count()).select_from(m.Project)
                                      .where(m.Project.parent_id == project_id))
            if children:
                raise Forbidden(f"Cannot delete project {project_id}: it has child projects.")
            await s.execute(sa.delete(m.Assignment).where(m.Assignment.target_id == project_id))
            await s.delete(obj)
        await self.revoke(project_id=project_id)

    # ---- users -----------------------------------------------------------------------------

    async def create_user(self, *, name: str, domain_id: str, password: str | None = None, enabled: bool = True,
                          default_project_id: str | None = None, extra: dict | None = None,
                          options: dict | None = None, id: str | None = None) -> m.User:
        await self.get("domain", domain_id)
        if default_project_id:
            await self.get("project", default_project_id)
        pw_hash = await self.hasher.hash(password) if password else None
        return await self._insert(m.User(id=id or new_id(), name=name, domain_id=domain_id, enabled=enabled,
                                         default_project_id=default_project_id, password_hash=pw_hash,
                                         password_created_at=utcnow() if password else None,
                                         extra=extra or {}, options=options or {}),
                                  "user", f"name {name} at domain ID {domain_id}")

    async def update_user(self, user_id: str, changes: dict) -> m.User:
        password = changes.pop("password", None)
        if password is not None:
            changes["password_hash"] = await self.hasher.hash(password)
            changes["password_created_at"] = utcnow()
        if changes.get("default_project_id"):
            await self.get("project", changes["default_project_id"])
        obj = await self._update("user", user_id, changes, f"name {changes.get('name')}")
        if changes.get("enabled") is False or password is not None:
            await self.revoke(user_id=user_id)
        return obj

    async def delete_user(self, user_id: str) -> None:
        async with self.db.session() as s:
            obj = await self.get("user", user_id, s)
            await s.execute(sa.delete(m.Assignment).where(m.Assignment.actor_id == user_id))
            await s.delete(obj)
        await self.revoke(user_id=user_id)

    async def change_password(self, user_id: str, original: str, new: str) -> None:
        user = await self.get("user", user_id)
        if not await self.hasher.verify(user.password_hash, original):
            from stratus.common.errors import Unauthorized

            raise Unauthorized("The original password is not correct.")
        await self.update_user(user_id, {"password": new})

    async def find_user(self, ref: dict) -> m.User:
        if not isinstance(ref, dict):
            raise BadRequest("'user' must be an object with 'id', or 'name' and 'domain'.")
        async with self.db.reader() as s:
            if ref.get("id"):
                user = await s.get(m.User, ref["id"])
            elif ref.get("name"):
                dom = await self.find_domain(ref.get("domain") or {})
                user = (await s.execute(sa.select(m.User).where(m.User.name == ref["name"],
                                                                m.User.domain_id == dom.id))).scalar_one_or_none()
            else:
                raise BadRequest("'user' must be given by 'id', or 'name' and 'domain'.")
        return user

    # ---- groups ----------------------------------------------------------------------------

    async def create_group(self, *, name: str, domain_id: str, description: str = "", extra=None,
                           id=None) -> m.Group:
        await self.get("domain", domain_id)
        return await self._insert(m.Group(id=id or new_id(), name=name, domain_id=domain_id,
                                          description=description, extra=extra or {}),
                                  "group", f"name {name} at domain ID {domain_id}")

    async def delete_group(self, group_id: str) -> None:
        members = await self.group_members(group_id)
        async with self.db.session() as s:
            obj = await self.get("group", group_id, s)
            await s.execute(sa.delete(m.Assignment).where(m.Assignment.actor_id == group_id))
            await s.delete(obj)
        for user in members:
            await self.revoke(user_id=user.id)

    async def add_member(self, group_id: str, user_id: str) -> None:
        await self.get("group", group_id)
        await self.get("user", user_id)
        async with self.db.session() as s:
            if await s.get(m.Membership, (user_id, group_id)) is None:
                s.add(m.Membership(user_id=user_id, group_id=group_id))
        self.changed()

    async def remove_member(self, group_id: str, user_id: str) -> None:
        async with self.db.session() as s:
            row = await s.get(m.Membership, (user_id, group_id))
            if row is None:
                raise NotFound(f"User {user_id} is not a member of group {group_id}.")
            await s.delete(row)
        await self.revoke(user_id=user_id)

    async def is_member(self, group_id: str, user_id: str) -> bool:
        async with self.db.reader() as s:
            return await s.get(m.Membership, (user_id, group_id)) is not None

    async def group_members(self, group_id: str) -> list[m.User]:
        async with self.db.reader() as s:
            q = sa.select(m.User).join(m.Membership, m.Membership.user_id == m.User.id).where(
                m.Membership.group_id == group_id).order_by(m.User.name)
            return list((await s.execute(q)).scalars().all())

    async def user_groups(self, user_id: str) -> list[m.Group]:
        async with self.db.reader() as s:
            q = sa.select(m.Group).join(m.Membership, m.Membership.group_id == m.Group.id).where(
                m.Membership.user_id == user_id).order_by(m.Group.name)
            return list((await s.execute(q)).scalars().all())

    # ---- roles -----------------------------------------------------------------------------

    async def create_role(self, *, name: str, domain_id: str | None = None, description: str = "",
                          options=None, id=None) -> m.Role:
        if domain_id:
            await self.get("domain", domain_id)
        return await self._insert(m.Role(id=id or new_id(), name=name, domain_id=domain_id,
                                         domain_key=domain_id or "", description=description,
                                         options=options or {}), "role", f"name {name}")

    async def delete_role(self, role_id: str) -> None:
        async with self.db.session() as s:
            obj = await self.get("role", role_id, s)
            holders = (await s.execute(sa.select(m.Assignment.actor_id).where(m.Assignment.role_id == role_id))).all()
            await s.execute(sa.delete(m.Assignment).where(m.Assignment.role_id == role_id))
            await s.execute(sa.delete(m.ImpliedRole).where(sa.or_(m.ImpliedRole.prior_role_id == role_id,
                                                                  m.ImpliedRole.implied_role_id == role_id)))
            await s.delete(obj)
        for (actor,) in holders:
            await self.revoke(user_id=actor)
        if not holders:
            self.changed()

    async def add_implied_role(self, prior_id: str, implied_id: str) -> None:
        await self.get("role", prior_id)
        await self.get("role", implied_id)
        if prior_id == implied_id or prior_id in await self._implied_closure([implied_id]):
            raise Forbidden(f"Role {prior_id} implying {implied_id} would make an implication loop.")
        async with self.db.session() as s:
            if await s.get(m.ImpliedRole, (prior_id, implied_id)) is None:
                s.add(m.ImpliedRole(prior_role_id=prior_id, implied_role_id=implied_id))
        self.changed()

    async def remove_implied_role(self, prior_id: str, implied_id: str) -> None:
        async with self.db.session() as s:
            row = await s.get(m.ImpliedRole, (prior_id, implied_id))
            if row is None:
                raise NotFound(f"Could not find implied role: {prior_id} implies {implied_id}.")
            await s.delete(row)
        await self.broadcast_revocation()

    async def implied_rules(self) -> list[tuple[str, str]]:
        async def load():
            async with self.db.reader() as s:
                return [(r.prior_role_id, r.implied_role_id)
                        for r in (await s.execute(sa.select(m.ImpliedRole))).scalars().all()]

        return list(await self._memoized("implied", load))

    async def _implied_closure(self, role_ids: Iterable[str]) -> set[str]:
        rules = await self.implied_rules()
        out = set(role_ids)
        frontier = list(out)
        while frontier:
            rid = frontier.pop()
            for prior, implied in rules:
                if prior == rid and implied not in out:
                    out.add(implied)
                    frontier.append(implied)
        return out

    # ---- assignments -----------------------------------------------------------------------

    async def _check_actor_target(self, actor_kind: str, actor_id: str, target_kind: str, target_id: str,
                                  role_id: str) -> None:
        await self.get(actor_kind, actor_id)
        if target_kind != "system":
            await self.get(target_kind, target_id)
        await self.get("role", role_id)

    async def grant(self, actor_kind: str, actor_id: str, target_kind: str, target_id: str, role_id: str,
                    inherited: bool = False) -> None:
        await self._check_actor_target(actor_kind, actor_id, target_kind, target_id, role_id)
        atype = f"{actor_kind.capitalize()}{target_kind.capitalize()}"
        async with self.db.session() as s:
            key = (atype, actor_id, target_id, role_id, inherited)
            if await s.get(m.Assignment, key) is None:
                s.add(m.Assignment(type=atype, actor_id=actor_id, target_id=target_id, role_id=role_id,
                                   inherited=inherited))
        self.changed()

    async def revoke_grant(self, actor_kind: str, actor_id: str, target_kind: str, target_id: str, role_id: str,
                           inherited: bool = False) -> None:
        atype = f"{actor_kind.capitalize()}{target_kind.capitalize()}"
        async with self.db.session() as s:
            row = await s.get(m.Assignment, (atype, actor_id, target_id, role_id, inherited))
            if row is None:
                raise NotFound(f"Could not find role assignment with role: {role_id}, {actor_kind}: {actor_id}, "
                               f"{target_kind}: {target_id}.")
            await s.delete(row)
        users = [actor_id] if actor_kind == "user" else [u.id for u in await self.group_members(actor_id)]
        scope = {"project_id": target_id} if target_kind == "project" else {}
        for uid in users:
            await self.revoke(user_id=uid, **scope)

    async def check_grant(self, actor_kind, actor_id, target_kind, target_id, role_id, inherited=False) -> bool:
        await self._check_actor_target(actor_kind, actor_id, target_kind, target_id, role_id)
        atype = f"{actor_kind.capitalize()}{target_kind.capitalize()}"
        async with self.db.reader() as s:
            return await s.get(m.Assignment, (atype, actor_id, target_id, role_id, inherited)) is not None

    async def list_grants(self, actor_kind, actor_id, target_kind, target_id, inherited=False) -> list[m.Role]:
        await self.get(actor_kind, actor_id)
        if target_kind != "system":
            await self.get(target_kind, target_id)
        atype = f"{actor_kind.capitalize()}{target_kind.capitalize()}"
        async with self.db.reader() as s:
            q = (sa.select(m.Role).join(m.Assignment, m.Assignment.role_id == m.Role.id)
                 .where(m.Assignment.type == atype, m.Assignment.actor_id == actor_id,
                        m.Assignment.target_id == target_id, m.Assignment.inherited == inherited)
                 .order_by(m.Role.name))
            return list((await s.execute(q)).scalars().all())

    async def roles_for(self, user_id: str, scope_kind: str, scope_id: str | None) -> list[m.Role]:
        """The user's effective roles on a scope: direct, through groups, inherited, and implied."""
        if scope_kind == "unscoped":
            return []
        async with self.db.reader() as s:
            group_ids = [g for (g,) in (await s.execute(sa.select(m.Membership.group_id)
                                                       .where(m.Membership.user_id == user_id))).all()]
            actors = [user_id, *group_ids]
            conds = []
            if scope_kind == "project":
                project = await s.get(m.Project, scope_id)
                if project is None:
                    return []
                conds.append(sa.and_(m.Assignment.type.in_(("UserProject", "GroupProject")),
                                     m.Assignment.target_id == scope_id, m.Assignment.inherited.is_(False)))
                # Inherited grants on the domain or on any ancestor project reach this project.
                ancestors = [project.domain_id]
                parent = project.parent_id
                while parent:
                    ancestors.append(parent)
                    p = await s.get(m.Project, parent)
                    parent = p.parent_id if p else None
                conds.append(sa.and_(m.Assignment.target_id.in_(ancestors), m.Assignment.inherited.is_(True)))
            elif scope_kind == "domain":
                conds.append(sa.and_(m.Assignment.type.in_(("UserDomain", "GroupDomain")),
                                     m.Assignment.target_id == scope_id, m.Assignment.inherited.is_(False)))
            elif scope_kind == "system":
                conds.append(m.Assignment.type.in_(("UserSystem", "GroupSystem")))
            q = sa.select(m.Assignment.role_id).where(m.Assignment.actor_id.in_(actors), sa.or_(*conds))
            direct = {r for (r,) in (await s.execute(q)).all()}
        if not direct:
            return []
        ids = await self._implied_closure(direct)
        async with self.db.reader() as s:
            return list((await s.execute(sa.select(m.Role).where(m.Role.id.in_(ids)).order_by(m.Role.name)))
                        .scalars().all())

    async def list_assignments(self, *, user_id=None, group_id=None, role_id=None, project_id=None,
                               domain_id=None, system=False, effective=False, inherited=None) -> list[dict]:
        """Role assignments as keystone lists them; ``effective`` expands groups, inheritance and
        implied roles into the user assignments they produce."""
        async with self.db.reader() as s:
            rows = list((await s.execute(sa.select(m.Assignment))).scalars().all())
            memberships = (await s.execute(sa.select(m.Membership))).scalars().all()
            projects = {p.id: p for p in (await s.execute(sa.select(m.Project))).scalars().all()}
        members: dict[str, list[str]] = {}
        for ms in memberships:
            members.setdefault(ms.group_id, []).append(ms.user_id)
        out: list[dict] = []
        if not effective:
            for a in rows:
                entry = self._assignment_entry(a.type, a.actor_id, a.target_id, a.role_id, a.inherited)
                out.append(entry)
        else:
            rules = await self.implied_rules()
            for a in rows:
                actor_kind = "user" if a.type.startswith("User") else "group"
                target_kind = a.type[len("User"):] if actor_kind == "user" else a.type[len("Group"):]
                users = [a.actor_id] if actor_kind == "user" else members.get(a.actor_id, [])
                targets: list[tuple[str, str]]
                if a.inherited:
                    # An inherited grant applies to the projects below its target, not the target.
                    targets = [("Project", p.id) for p in projects.values()
                               if p.domain_id == a.target_id or self._descends(p, a.target_id, projects)]
                else:
                    targets = [(target_kind, a.target_id)]
                roles = [a.role_id]
                frontier = [a.role_id]
                while frontier:
                    rid = frontier.pop()
                    for prior, implied in rules:
                        if prior == rid and implied not in roles:
                            roles.append(implied)
                            frontier.append(implied)
                for uid in users:
                    for tkind, tid in targets:
                        for rid in roles:
                            entry = self._assignment_entry(f"User{tkind}", uid, tid, rid, False)
                            if actor_kind == "group":
                                entry["links"]["membership"] = f"/v3/groups/{a.actor_id}/users/{uid}"
                            out.append(entry)
            seen = set()
            unique = []
            for e in out:
                key = (e["role"]["id"], e.get("user", {}).get("id"), str(e["scope"]))
                if key not in seen:
                    seen.add(key)
                    unique.append(e)
            out = unique

        def keep(e: dict) -> bool:
            if user_id and e.get("user", {}).get("id") != user_id:
                return False
            if group_id and e.get("group", {}).get("id") != group_id:
                return False
            if role_id and e["role"]["id"] != role_id:
                return False
            if project_id and e["scope"].get("project", {}).get("id") != project_id:
                return False
            if domain_id and e["scope"].get("domain", {}).get("id") != domain_id:
                return False
            if system and "system" not in e["scope"]:
                return False
            if inherited is not None and bool(e["scope"].get("OS-INHERIT:inherited_to")) != inherited:
                return False
            return True

        return [e for e in out if keep(e)]

    @staticmethod
    def _descends(project, ancestor_id, projects) -> bool:
        parent = project.parent_id
        while parent:
            if parent == ancestor_id:
                return True
            parent = projects[parent].parent_id if parent in projects else None
        return False

    @staticmethod
    def _assignment_entry(atype: str, actor_id: str, target_id: str, role_id: str, inherited: bool) -> dict:
        actor_kind = "user" if atype.startswith("User") else "group"
        target_kind = atype[len("User"):] if actor_kind == "user" else atype[len("Group"):]
        target_kind = target_kind.lower()
        if target_kind == "system":
            scope = {"system": {"all": True}}
        else:
            scope = {target_kind: {"id": target_id}}
        if inherited:
            scope["OS-INHERIT:inherited_to"] = "projects"
        link_target = "system" if target_kind == "system" else f"{target_kind}s/{target_id}"
        link = f"/v3/{link_target}/{actor_kind}s/{actor_id}/roles/{role_id}"
        if inherited:
            link = f"/v3/OS-INHERIT/{link_target}/{actor_kind}s/{actor_id}/roles/{role_id}/inherited_to_projects"
        return {"role": {"id": role_id}, actor_kind: {"id": actor_id}, "scope": scope,
                "links": {"assignment": link}}

    async def user_projects(self, user_id: str) -> list[m.Project]:
        """Projects the user has any role on (directly, through groups or inherited)."""
        entries = await self.list_assignments(user_id=user_id, effective=True)
        ids = {e["scope"]["project"]["id"] for e in entries if "project" in e["scope"]}
        if not ids:
            return []
        async with self.db.reader() as s:
            return list((await s.execute(sa.select(m.Project).where(m.Project.id.in_(ids))
                                         .order_by(m.Project.name))).scalars().all())

    async def user_domains(self, user_id: str) -> list[m.Domain]:
        entries = await self.list_assignments(user_id=user_id, effective=True)
        ids = {e["scope"]["domain"]["id"] for e in entries if "domain" in e["scope"]}
        if not ids:
            return []
        async with self.db.reader() as s:
            return list((await s.execute(sa.select(m.Domain).where(m.Domain.id.in_(ids))
                                         .order_by(m.Domain.name))).scalars().all())

    # ---- catalog ---------------------------------------------------------------------------

    async def catalog(self, project_id: str | None) -> list[dict]:
        async def load():
            async with self.db.reader() as s:
                services = (await s.execute(sa.select(m.Service).where(m.Service.enabled.is_(True))
                                            .order_by(m.Service.type))).scalars().all()
                endpoints = (await s.execute(sa.select(m.Endpoint).where(m.Endpoint.enabled.is_(True)))
                             ).scalars().all()
            return services, endpoints

        services, endpoints = await self._memoized("catalog", load)
        by_service: dict[str, list] = {}
        for ep in endpoints:
            url = ep.url
            if "project_id" in url or "tenant_id" in url:
                if not project_id:
                    continue
                for template in ("%(project_id)s", "$(project_id)s", "%(tenant_id)s", "$(tenant_id)s"):
                    url = url.replace(template, project_id)
            by_service.setdefault(ep.service_id, []).append(
                {"id": ep.id, "interface": ep.interface, "region": ep.region_id, "region_id": ep.region_id,
                 "url": url})
        return [{"id": svc.id, "type": svc.type, "name": svc.name, "endpoints": by_service.get(svc.id, [])}
                for svc in services]
