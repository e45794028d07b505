"""Authentication (password, token, application credential) and token validation.

Validation results are cached per token in this process. A cached answer is used only while
both the revocation list and the local directory are unchanged (their generation counters) and
for at most ``CACHE_SECONDS``, which bounds how stale a benign change made by another worker
can look (a revocation is never stale: it moves the generation).
"""

from __future__ import annotations

import datetime as dt
import time

import orjson
import sqlalchemy as sa

from stratus.common.db import new_id
from stratus.common.errors import BadRequest, Forbidden, NotFound, Unauthorized
from stratus.identity import models as m
from stratus.identity.manager import IdentityManager
from stratus.identity.tokens import InvalidToken, TokenData, new_audit_id

CACHE_SECONDS = 60.0


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid timestamp {text!r}: use ISO 8601, e.g. 2030-01-01T00:00:00Z") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


class TokenService:
    def __init__(self, manager: IdentityManager):
        self.mgr = manager
        self._cache: dict[str, tuple[dict, int, int, float]] = {}

    # ---- issuing ---------------------------------------------------------------------------

    async def authenticate(self, auth: dict) -> tuple[str, dict]:
        """Check the identity in an auth body and issue a token; returns (token id, token body)."""
        if not isinstance(auth, dict):
            raise BadRequest("'auth' must be an object.")
        identity = auth.get("identity")
        if not isinstance(identity, dict) or not isinstance(identity.get("methods"), list) or not identity["methods"]:
            raise BadRequest("'auth.identity.methods' must be a non-empty list of authentication methods.")
        methods = identity["methods"]
        unknown = [x for x in methods if x not in ("password", "token", "application_credential")]
        if unknown:
            raise Unauthorized(f"Unsupported authentication method: {', '.join(map(str, unknown))}.")
        now = time.time()
        expires = now + self.mgr.token_expiration
        audit_ids = [new_audit_id()]
        app_cred_id = None
        scope_req = auth.get("scope")
        if "token" in methods:
            ref = identity.get("token") or {}
            if not isinstance(ref, dict) or not ref.get("id"):
                raise BadRequest("'auth.identity.token.id' is required for the token method.")
            parent = await self._decode_valid(ref["id"])
            if parent.app_cred_id:
                raise Forbidden("A token from an application credential cannot be used to get another token.")
            user = await self._active_user(parent.user_id)
            expires = parent.expires_at  # rescoped tokens never outlive their parent
            audit_ids.append(parent.audit_ids[0])
            methods_out = list(dict.fromkeys([*parent.methods, "token"]))
        elif "application_credential" in methods:
            user, cred = await self._check_app_cred(identity.get("application_credential"))
            app_cred_id = cred.id
            if cred.expires_at is not None:
                expires = min(expires, cred.expires_at.replace(tzinfo=dt.timezone.utc).timestamp())
            if scope_req not in (None, "unscoped") and not (
                    isinstance(scope_req, dict) and (scope_req.get("project") or {}).get("id") == cred.project_id):
                raise Unauthorized("An application credential token is always scoped to its own project.")
            scope_req = {"project": {"id": cred.project_id}}
            methods_out = ["application_credential"]
        else:
            user = await self._check_password(identity.get("password"))
            methods_out = ["password"]
        scope_kind, scope_id = await self._resolve_scope(scope_req, user)
        data = TokenData(user.id, methods_out, scope_kind, scope_id, now, expires, audit_ids, app_cred_id)
        await self.mgr.keyring.ensure()
        token = self.mgr.keyring.seal(data.pack())
        body = await self._render(data, nocatalog=False)
        return token, body

    async def _check_password(self, pw: dict | None) -> m.User:
        if not isinstance(pw, dict) or not isinstance(pw.get("user"), dict):
            raise BadRequest("'auth.identity.password.user' is required for the password method.")
        ref = pw["user"]
        if not isinstance(ref.get("password"), str):
            raise BadRequest("'auth.identity.password.user.password' must be a string.")
        try:
            user = await self.mgr.find_user(ref)
        except NotFound:
            user = None
        # Hash even for unknown users so that timing does not reveal which names exist.
        ok = await self.mgr.hasher.verify(user.password_hash if user else _DUMMY_HASH, ref["password"])
        if user is None or not ok:
            raise Unauthorized("The request you have made requires authentication.")
        return await self._active_user(user.id)

    async def _check_app_cred(self, ref: dict | None) -> tuple[m.User, m.ApplicationCredential]:
        if not isinstance(ref, dict) or not isinstance(ref.get("secret"), str):
            raise BadRequest("'auth.identity.application_credential' needs 'secret' and 'id' or 'name'+'user'.")
        async with self.mgr.db.reader() as s:
            if ref.get("id"):
                cred = await s.get(m.ApplicationCredential, ref["id"])
            elif ref.get("name") and isinstance(ref.get("user"), dict):
                owner = await self.mgr.find_user(ref["user"])
                cred = None if owner is None else (await s.execute(sa.select(m.ApplicationCredential).where(
                    m.ApplicationCredential.user_id == owner.id,
                    m.ApplicationCredential.name == ref["name"]))).scalar_one_or_none()
            else:
                raise BadRequest("An application credential is named by 'id', or by 'name' and 'user'.")
        ok = await self.mgr.hasher.verify(cred.secret_hash if cred else _DUMMY_HASH, ref["secret"])
        if cred is None or not ok:
            raise Unauthorized("The request you have made requires authentication.")
        if cred.expires_at is not None and cred.expires_at < dt.datetime.utcnow():
            raise Unauthorized("The application credential has expired.")
        return await self._active_user(cred.user_id), cred

    async def _active_user(self, user_id: str) -> m.User:
        async with self.mgr.db.reader() as s:
            user = await s.get(m.User, user_id)
            dom = await s.get(m.Domain, user.domain_id) if user else None
        if user is None or not user.enabled or dom is None or not dom.enabled:
            raise Unauthorized("The user is disabled or no longer exists.")
        return user

    async def _resolve_scope(self, scope, user: m.User) -> tuple[str, str | None]:
        if scope is None:
            if user.default_project_id:
                try:
                    project = await self.mgr.get("project", user.default_project_id)
                    if project.enabled and await self.mgr.roles_for(user.id, "project", project.id):
                        return "project", project.id
                except NotFound:
                    pass
            return "unscoped", None
        if scope == "unscoped":
            return "unscoped", None
        if not isinstance(scope, dict):
            raise BadRequest("'auth.scope' must be an object naming a project, domain or system.")
        if "project" in scope:
            ref = scope["project"]
            if not isinstance(ref, dict):
                raise BadRequest("'auth.scope.project' must be an object.")
            async with self.mgr.db.reader() as s:
                if ref.get("id"):
                    project = await s.get(m.Project, ref["id"])
                elif ref.get("name"):
                    dom = await self.mgr.find_domain(ref.get("domain") or {})
                    project = (await s.execute(sa.select(m.Project).where(
                        m.Project.name == ref["name"], m.Project.domain_id == dom.id))).scalar_one_or_none()
                else:
                    raise BadRequest("A project scope needs 'id', or 'name' and 'domain'.")
            if project is None:
                raise Unauthorized(f"Could not find project: {ref.get('id') or ref.get('name')}.")
            if not project.enabled:
                raise Unauthorized(f"Project {project.id} is disabled.")
            if not await self.mgr.roles_for(user.id, "project", project.id):
                raise Unauthorized(f"User {user.id} has no access to project {project.id}.")
            return "project", project.id
        if "domain" in scope:
            dom = await self.mgr.find_domain(scope["domain"])
            if not dom.enabled:
                raise Unauthorized(f"Domain {dom.id} is disabled.")
            if not await self.mgr.roles_for(user.id, "domain", dom.id):
                raise Unauthorized(f"User {user.id} has no access to domain {dom.id}.")
            return "domain", dom.id
        if "system" in scope:
            if not await self.mgr.roles_for(user.id, "system", None):
                raise Unauthorized(f"User {user.id} has no access to the system.")
            return "system", "all"
        if "OS-TRUST:trust" in scope:
            raise Forbidden("Trusts are not supported by this cloud.")
        raise BadRequest("'auth.scope' must name a project, a domain or the system.")

    # ---- validation ------------------------------------------------------------------------

    async def _decode_valid(self, token: str, *, allow_expired: bool = False) -> TokenData:
        try:
            data = TokenData.unpack(await self.mgr.keyring.open(token))
        except (InvalidToken, ValueError, KeyError, TypeError):
            raise NotFound("The token is malformed, was sealed with a retired key, or was not issued here.") from None
        now = time.time()
        if data.expires_at <= now:
            if not allow_expired or data.expires_at + self.mgr.allow_expired_window <= now:
                raise NotFound("The token has expired.")
        await self.mgr.revocations.refresh()
        if self.mgr.revocations.is_revoked(audit_ids=data.audit_ids, user_id=data.user_id,
                                           project_id=data.scope_id if data.scope_kind == "project" else None,
                                           domain_id=data.scope_id if data.scope_kind == "domain" else None,
                                           issued_at=data.issued_at):
            raise NotFound("The token has been revoked.")
        return data

    async def validate(self, token: str, *, allow_expired: bool = False, nocatalog: bool = False) -> dict:
        """The token body for a valid token, or NotFound saying why not."""
        key = f"{int(allow_expired)}{int(nocatalog)}{token}"
        await self.mgr.revocations.refresh()
        hit = self._cache.get(key)
        now = time.monotonic()
        if (hit is not None and hit[1] == self.mgr.revocations.generation and hit[2] == self.mgr.generation
                and hit[3] > now):
            body = hit[0]
            if allow_expired or _epoch(body["token"]["expires_at"]) > time.time():
                return body
        data = await self._decode_valid(token, allow_expired=allow_expired)
        body = await self._render(data, nocatalog=nocatalog)
        if len(self._cache) > 100000:
            self._cache.clear()
        self._cache[key] = (body, self.mgr.revocations.generation, self.mgr.generation, now + CACHE_SECONDS)
        return body

    async def validate_json(self, token: str, *, allow_expired=False, nocatalog=False) -> bytes:
        """Like validate, but the encoded JSON (cached too: encoding is the hot path's cost)."""
        body = await self.validate(token, allow_expired=allow_expired, nocatalog=nocatalog)
        encoded = body.get("__json__")
        if encoded is None:
            encoded = orjson.dumps({"token": body["token"]})
            body["__json__"] = encoded
        return encoded

    async def _render(self, data: TokenData, *, nocatalog: bool) -> dict:
        async with self.mgr.db.reader() as s:
            user = await s.get(m.User, data.user_id)
            udom = await s.get(m.Domain, user.domain_id) if user else None
            if user is None or not user.enabled or udom is None or not udom.enabled:
                raise NotFound("The token's user is disabled or no longer exists.")
            body: dict = {
                "methods": data.methods,
                "user": {"id": user.id, "name": user.name, "domain": {"id": udom.id, "name": udom.name},
                         "password_expires_at": None},
                "audit_ids": data.audit_ids,
                "expires_at": iso(data.expires_at),
                "issued_at": iso(data.issued_at),
            }
            project_id = None
            if data.scope_kind == "project":
                project = await s.get(m.Project, data.scope_id)
                pdom = await s.get(m.Domain, project.domain_id) if project else None
                if project is None or not project.enabled or pdom is None or not pdom.enabled:
                    raise NotFound("The token's project is disabled or no longer exists.")
                project_id = project.id
                body["project"] = {"id": project.id, "name": project.name,
                                   "domain": {"id": pdom.id, "name": pdom.name}}
                body["is_domain"] = False
            elif data.scope_kind == "domain":
                dom = await s.get(m.Domain, data.scope_id)
                if dom is None or not dom.enabled:
                    raise NotFound("The token's domain is disabled or no longer exists.")
                body["domain"] = {"id": dom.id, "name": dom.name}
            elif data.scope_kind == "system":
                body["system"] = {"all": True}
            cred = await s.get(m.ApplicationCredential, data.app_cred_id) if data.app_cred_id else None
        if data.scope_kind != "unscoped":
            roles = await self.mgr.roles_for(user.id, data.scope_kind, data.scope_id)
            if data.app_cred_id:
                if cred is None:
                    raise NotFound("The token's application credential was deleted.")
                allowed = await self.mgr._implied_closure(cred.role_ids)
                roles = [r for r in roles if r.id in allowed]
                body["application_credential"] = {"id": cred.id, "name": cred.name,
                                                  "restricted": not cred.unrestricted}
            if not roles:
                raise NotFound("The token's user no longer has any role on its scope.")
            body["roles"] = [{"id": r.id, "name": r.name} for r in roles]
            if not nocatalog:
                body["catalog"] = await self.mgr.catalog(project_id)
        return {"token": body}

    async def revoke(self, token: str) -> None:
        data = await self._decode_valid(token)
        # Revoking by audit id also revokes every token rescoped from this one.
        await self.mgr.revoke(audit_id=data.audit_ids[0])

    async def token_data(self, token: str) -> TokenData:
        return await self._decode_valid(token)


def _epoch(iso_text: str) -> float:
    return dt.datetime.strptime(iso_text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()


# A valid Argon2id hash of a random string, verified for unknown users to keep timing flat.
_DUMMY_HASH = "$argon2id$v=19$m=19456,t=2,p=1$5uPBcKsIovujORGKbSzkjw$Gya9ficN1c5qTGFf2PjnJj99ej1ziCk+gJqYgNfcDnM"


async def create_app_credential(mgr: IdentityManager, user_id: str, project_id: str, token_roles: list[dict],
                                body: dict) -> tuple[m.ApplicationCredential, str]:
    """Create an application credential; returns it and its secret (shown once)."""
    import secrets

    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("'application_credential.name' is required.")
    secret = body.get("secret") or secrets.token_urlsafe(48)
    if not isinstance(secret, str):
        raise BadRequest("'application_credential.secret' must be a string.")
    held = {r["id"]: r["name"] for r in token_roles}
    requested = body.get("roles")
    if requested is None:
        role_ids = list(held)
    else:
        if not isinstance(requested, list):
            raise BadRequest("'application_credential.roles' must be a list of {id} or {name}.")
        role_ids = []
        for ref in requested:
            rid = None
            if isinstance(ref, dict) and ref.get("id"):
                rid = ref["id"]
            elif isinstance(ref, dict) and ref.get("name"):
                rid = next((i for i, n in held.items() if n == ref["name"]), None)
            if rid is None or rid not in held:
                raise Forbidden(f"Cannot delegate role {ref}: the token does not hold it on project {project_id}.")
            role_ids.append(rid)
    expires_at = body.get("expires_at")
    expires = parse_iso(expires_at) if expires_at else None
    if expires is not None and expires < dt.datetime.utcnow():
        raise BadRequest("'application_credential.expires_at' is in the past.")
    unrestricted = body.get("unrestricted", False)
    if not isinstance(unrestricted, bool):
        raise BadRequest("'application_credential.unrestricted' must be a boolean.")
    cred = m.ApplicationCredential(id=new_id(), name=name, user_id=user_id, project_id=project_id,
                                   secret_hash=await mgr.hasher.hash(secret),
                                   description=body.get("description") or "", expires_at=expires,
                                   unrestricted=unrestricted, role_ids=role_ids,
                                   access_rules=body.get("access_rules") or [])
    await mgr._insert(cred, "application credential", f"name {name}")
    return cred, secret
