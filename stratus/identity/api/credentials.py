"""Application credentials, stored credentials (/v3/credentials), EC2 credentials (OS-EC2) and
the S3 signature check (/v3/s3tokens) that the object store's S3 API uses."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid

import orjson
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stratus.common.errors import BadRequest, Forbidden, NotFound, Unauthorized
from stratus.common.web import JSONResponse, dumps, empty, read_json, require_object
from stratus.identity import models as m
from stratus.identity.api.common import collection_links, ctx, enforce, field, link, manager
from stratus.identity.authn import create_app_credential, iso
from stratus.identity.tokens import TokenData, new_audit_id


def _owner(request: Request) -> str:
    uid = request.path_params["user_id"]
    enforce(request, "identity:owner_credentials", user_id=uid)
    return uid


# ---- application credentials ---------------------------------------------------------------

def app_cred_view(request, cred: m.ApplicationCredential, roles: dict[str, str]) -> dict:
    return {"id": cred.id, "name": cred.name, "description": cred.description, "user_id": cred.user_id,
            "project_id": cred.project_id,
            "expires_at": cred.expires_at.strftime("%Y-%m-%dT%H:%M:%S.%f") if cred.expires_at else None,
            "unrestricted": cred.unrestricted, "access_rules": cred.access_rules or [],
            "roles": [{"id": rid, "name": roles.get(rid, rid), "domain_id": None} for rid in cred.role_ids],
            "links": link(request, f"users/{cred.user_id}/application_credentials/{cred.id}")}


async def _role_names(mgr) -> dict[str, str]:
    return {r.id: r.name for r in await mgr.list("role")}


async def create_app_cred(request: Request):
    uid = _owner(request)
    c = ctx(request)
    if c.user_id != uid:
        raise Forbidden("Application credentials can be created only by their own user.")
    if c.project_id is None:
        raise Forbidden("Application credentials are created with a project-scoped token.")
    if c.application_credential_id:
        raise Forbidden("An application credential cannot create another one.")
    body = require_object(await read_json(request), "application_credential")
    mgr = manager(request)
    roles = await mgr.roles_for(c.user_id, "project", c.project_id)
    cred, secret = await create_app_credential(mgr, uid, c.project_id, [{"id": r.id, "name": r.name} for r in roles],
                                               body)
    view = app_cred_view(request, cred, await _role_names(mgr))
    view["secret"] = secret
    return JSONResponse({"application_credential": view}, status_code=201)


async def list_app_creds(request: Request):
    uid = _owner(request)
    mgr = manager(request)
    filters = {"user_id": uid}
    if "name" in request.query_params:
        filters["name"] = request.query_params["name"]
    items = await mgr.list("application credential", filters)
    names = await _role_names(mgr)
    return JSONResponse({"application_credentials": [app_cred_view(request, x, names) for x in items],
                         "links": collection_links(request)})


async def get_app_cred(request: Request):
    uid = _owner(request)
    mgr = manager(request)
    cred = await mgr.get("application credential", request.path_params["id"])
    if cred.user_id != uid:
        raise NotFound(f"Could not find application credential: {cred.id}.")
    return JSONResponse({"application_credential": app_cred_view(request, cred, await _role_names(mgr))})


async def delete_app_cred(request: Request):
    uid = _owner(request)
    mgr = manager(request)
    cred = await mgr.get("application credential", request.path_params["id"])
    if cred.user_id != uid:
        raise NotFound(f"Could not find application credential: {cred.id}.")
    await mgr._delete("application credential", cred.id)
    await mgr.broadcast_revocation(user_id=uid)
    return empty()


# ---- stored credentials --------------------------------------------------------------------

async def credential_view(request, mgr, cred: m.Credential) -> dict:
    return {"id": cred.id, "user_id": cred.user_id, "project_id": cred.project_id, "type": cred.type,
            "blob": await mgr.cipher.decrypt(cred.blob), **(cred.extra or {}),
            "links": link(request, f"credentials/{cred.id}")}


async def _store_credential(mgr, *, user_id: str, project_id: str | None, cred_type: str, blob: str,
                            cred_id: str | None = None) -> m.Credential:
    access = None
    if cred_type == "ec2":
        try:
            parsed = orjson.loads(blob)
        except orjson.JSONDecodeError:
            raise BadRequest("An ec2 credential's blob must be a JSON string with 'access' and 'secret'.") from None
        if not isinstance(parsed, dict) or not parsed.get("access") or not parsed.get("secret"):
            raise BadRequest("An ec2 credential's blob must contain 'access' and 'secret'.")
        if not project_id:
            raise BadRequest("An ec2 credential needs a project_id.")
        access = parsed["access"]
        cred_id = hashlib.sha256(access.encode()).hexdigest()
    cred = m.Credential(id=cred_id or uuid.uuid4().hex, user_id=user_id, project_id=project_id, type=cred_type,
                        blob=await mgr.cipher.encrypt(blob), access_key=access, extra={})
    return await mgr._insert(cred, "credential", f"access {access}" if access else f"id {cred.id}")


async def create_credential(request: Request):
    c = ctx(request)
    body = require_object(await read_json(request), "credential")
    user_id = field(body, "user_id", str, required=True, where="credential")
    if user_id != c.user_id and not c.is_admin:
        raise Forbidden("You can create credentials only for yourself.")
    mgr = manager(request)
    await mgr.get("user", user_id)
    cred = await _store_credential(mgr, user_id=user_id,
                                   project_id=field(body, "project_id", str, nullable=True, where="credential"),
                                   cred_type=field(body, "type", str, required=True, where="credential"),
                                   blob=field(body, "blob", str, required=True, where="credential"))
    return JSONResponse({"credential": await credential_view(request, mgr, cred)}, status_code=201)


async def list_credentials(request: Request):
    c = ctx(request)
    mgr = manager(request)
    filters = {k: request.query_params[k] for k in ("user_id", "type") if k in request.query_params}
    if not c.is_admin:
        if filters.get("user_id", c.user_id) != c.user_id:
            raise Forbidden("You can list only your own credentials.")
        filters["user_id"] = c.user_id
    items = await mgr.list("credential", filters, order=m.Credential.id)
    return JSONResponse({"credentials": [await credential_view(request, mgr, x) for x in items],
                         "links": collection_links(request)})


async def _own_credential(request: Request) -> m.Credential:
    c = ctx(request)
    cred = await manager(request).get("credential", request.path_params["id"])
    if cred.user_id != c.user_id and not c.is_admin:
        raise NotFound(f"Could not find credential: {cred.id}.")
    return cred


async def get_credential(request: Request):
    cred = await _own_credential(request)
    return JSONResponse({"credential": await credential_view(request, manager(request), cred)})


async def update_credential(request: Request):
    cred = await _own_credential(request)
    body = require_object(await read_json(request), "credential")
    mgr = manager(request)
    changes = {}
    if "blob" in body:
        changes["blob"] = await mgr.cipher.encrypt(field(body, "blob", str, where="credential"))
    if "project_id" in body:
        changes["project_id"] = field(body, "project_id", str, nullable=True, where="credential")
    cred = await mgr._update("credential", cred.id, changes)
    return JSONResponse({"credential": await credential_view(request, mgr, cred)})


async def delete_credential(request: Request):
    cred = await _own_credential(request)
    await manager(request)._delete("credential", cred.id)
    return empty()


# ---- OS-EC2 ---------------------------------------------------------------------------------

async def ec2_view(request, mgr, cred: m.Credential) -> dict:
    blob = orjson.loads(await mgr.cipher.decrypt(cred.blob))
    return {"user_id": cred.user_id, "tenant_id": cred.project_id, "access": blob["access"],
            "secret": blob["secret"], "trust_id": blob.get("trust_id"),
            "links": link(request, f"users/{cred.user_id}/credentials/OS-EC2/{blob['access']}")}


async def create_ec2(request: Request):
    uid = _owner(request)
    c = ctx(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("The body must be an object with 'tenant_id'.")
    project_id = body.get("tenant_id") or body.get("project_id")
    if not isinstance(project_id, str) or not project_id:
        raise BadRequest("'tenant_id' (the project the credential acts in) is required.")
    mgr = manager(request)
    await mgr.get("project", project_id)
    if not await mgr.roles_for(uid, "project", project_id):
        raise Forbidden(f"User {uid} has no role on project {project_id}.")
    if not c.is_admin and c.user_id != uid:
        raise Forbidden("You can create EC2 credentials only for yourself.")
    blob = orjson.dumps({"access": uuid.uuid4().hex, "secret": secrets.token_hex(16), "trust_id": None}).decode()
    cred = await _store_credential(mgr, user_id=uid, project_id=project_id, cred_type="ec2", blob=blob)
    return JSONResponse({"credential": await ec2_view(request, mgr, cred)}, status_code=201)


async def list_ec2(request: Request):
    uid = _owner(request)
    mgr = manager(request)
    items = await mgr.list("credential", {"user_id": uid, "type": "ec2"}, order=m.Credential.id)
    return JSONResponse({"credentials": [await ec2_view(request, mgr, x) for x in items],
                         "links": collection_links(request)})


async def _ec2_by_access(mgr, uid: str, access: str) -> m.Credential:
    async with mgr.db.reader() as s:
        cred = (await s.execute(sa.select(m.Credential).where(m.Credential.access_key == access))).scalar_one_or_none()
    if cred is None or cred.user_id != uid:
        raise NotFound(f"Could not find credential: {access}.")
    return cred


async def get_ec2(request: Request):
    uid = _owner(request)
    mgr = manager(request)
    cred = await _ec2_by_access(mgr, uid, request.path_params["access"])
    return JSONResponse({"credential": await ec2_view(request, mgr, cred)})


async def delete_ec2(request: Request):
    uid = _owner(request)
    mgr = manager(request)
    cred = await _ec2_by_access(mgr, uid, request.path_params["access"])
    await mgr._delete("credential", cred.id)
    return empty()


# ---- S3 signature check ------------------------------------------------------------------------

def _sigv4_signature(secret: str, string_to_sign: str) -> str:
    lines = string_to_sign.split("\n")
    if len(lines) < 4:
        raise BadRequest("The SigV4 string to sign is malformed.")
    scope = lines[2].split("/")
    if len(scope) != 4:
        raise BadRequest("The SigV4 credential scope is malformed.")
    date, region, service, terminator = scope
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, terminator):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


async def s3tokens(request: Request):
    body = await read_json(request)
    creds = body.get("credentials") if isinstance(body, dict) else None
    if not isinstance(creds, dict) or not all(isinstance(creds.get(k), str) for k in ("access", "token", "signature")):
        raise BadRequest("The body must be {\"credentials\": {\"access\", \"token\", \"signature\"}}.")
    mgr = manager(request)
    async with mgr.db.reader() as s:
        cred = (await s.execute(sa.select(m.Credential).where(m.Credential.access_key == creds["access"]))
                ).scalar_one_or_none()
    if cred is None:
        raise Unauthorized("The EC2 access key is not known.")
    secret = orjson.loads(await mgr.cipher.decrypt(cred.blob))["secret"]
    try:
        string_to_sign = base64.urlsafe_b64decode(creds["token"] + "=" * (-len(creds["token"]) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("'credentials.token' must be the base64 string to sign.") from None
    if string_to_sign.startswith("AWS4-HMAC-SHA256"):
        expected = _sigv4_signature(secret, string_to_sign)
    else:
        expected = base64.b64encode(hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected, creds["signature"]):
        raise Unauthorized("The request signature does not match.")
    tokens = request.app.state.tokens
    now = time.time()
    data = TokenData(cred.user_id, ["ec2credential"], "project", cred.project_id, now,
                     now + mgr.token_expiration, [new_audit_id()], None)
    await mgr.keyring.ensure()
    token = mgr.keyring.seal(data.pack())
    rendered = await tokens._render(data, nocatalog=False)
    return Response(dumps(rendered), status_code=200, media_type="application/json",
                    headers={"X-Subject-Token": token})


routes = [
    Route("/v3/users/{user_id}/application_credentials", list_app_creds, methods=["GET", "HEAD"]),
    Route("/v3/users/{user_id}/application_credentials", create_app_cred, methods=["POST"]),
    Route("/v3/users/{user_id}/application_credentials/{id}", get_app_cred, methods=["GET", "HEAD"]),
    Route("/v3/users/{user_id}/application_credentials/{id}", delete_app_cred, methods=["DELETE"]),
    Route("/v3/credentials", list_credentials, methods=["GET", "HEAD"]),
    Route("/v3/credentials", create_credential, methods=["POST"]),
    Route("/v3/credentials/{id}", get_credential, methods=["GET", "HEAD"]),
    Route("/v3/credentials/{id}", update_credential, methods=["PATCH"]),
    Route("/v3/credentials/{id}", delete_credential, methods=["DELETE"]),
    Route("/v3/users/{user_id}/credentials/OS-EC2", list_ec2, methods=["GET"]),
    Route("/v3/users/{user_id}/credentials/OS-EC2", create_ec2, methods=["POST"]),
    Route("/v3/users/{user_id}/credentials/OS-EC2/{access}", get_ec2, methods=["GET"]),
    Route("/v3/users/{user_id}/credentials/OS-EC2/{access}", delete_ec2, methods=["DELETE"]),
    Route("/v3/s3tokens", s3tokens, methods=["POST"]),
]
