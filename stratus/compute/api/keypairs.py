"""/os-keypairs: SSH (and x509) public keys a user can inject into servers."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import BadRequest, Conflict, NotFound
from stratus.common.pagination import parse_limit
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.compute import models as m
from stratus.compute.api.common import (at_least, check_query, ctx, enforce, field, iso_micro, paginate_links, svc)
from stratus.compute.quota import check_limit

P = "/v2.1"
_NAME = re.compile(r"^[a-zA-Z0-9 _.@\-]{1,255}$")


def ssh_fingerprint(public_key: str) -> str:
    parts = public_key.strip().split()
    if len(parts) < 2:
        raise BadRequest("Keypair data is invalid: expected '<type> <base64 key> [comment]'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Keypair data is invalid: the key is not valid base64") from None
    # The blob starts with its own type name; a key whose type and blob disagree is malformed.
    if len(blob) < 4 or blob[4:4 + int.from_bytes(blob[:4], "big")].decode(errors="replace") != parts[0]:
        raise BadRequest("Keypair data is invalid: failed to generate fingerprint (type and key data disagree)")
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 — nova's fingerprint format, not security
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def x509_fingerprint(pem: str) -> str:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise BadRequest("Keypair data is invalid: not a PEM x509 certificate") from None
    from cryptography.hazmat.primitives import hashes

    digest = cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 — nova's fingerprint format
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def generate_ssh_key(comment: str) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def keypair_view(request: Request, k: m.KeyPair, *, full: bool) -> dict:
    view = {"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint}
    if at_least(request, "2.2"):
        view["type"] = k.type
    if full:
        view.update({"user_id": k.user_id, "created_at": iso_micro(k.created_at), "deleted": False,
                     "deleted_at": None, "updated_at": None, "id": zlib.crc32(f"{k.user_id}/{k.name}".encode())})
    return view


def _target_user(request: Request, source: dict | None = None) -> str:
    c = ctx(request)
    user_id = None
    if source is not None and "user_id" in source:
        user_id = source["user_id"]
    elif "user_id" in request.query_params:
        user_id = request.query_params["user_id"]
    if user_id is None or user_id == c.user_id:
        return c.user_id
    if not at_least(request, "2.10"):
        raise BadRequest("user_id needs microversion 2.10")
    enforce(request, "compute:admin")
    return user_id


async def list_keypairs(request: Request):
    enforce(request, "compute:reader")
    check_query(request, {"user_id", "limit", "marker"})
    user_id = _target_user(request)
    q = sa.select(m.KeyPair).where(m.KeyPair.user_id == user_id).order_by(m.KeyPair.name)
    limit = None
    if at_least(request, "2.35"):
        marker = request.query_params.get("marker")
        if marker:
            q = q.where(m.KeyPair.name > marker)
        limit = parse_limit(request, default=None, maximum=svc(request).settings.max_limit)
        if limit is not None:
            q = q.limit(limit)
    async with svc(request).db.reader() as s:
        rows = list((await s.execute(q)).scalars())
    items = [keypair_view(request, k, full=False) for k in rows]
    body = {"keypairs": [{"keypair": i} for i in items]}
    links = paginate_links(request, "keypairs", items, limit, key="name")
    if links:
        body["keypairs_links"] = links
    return JSONResponse(body)


async def create_keypair(request: Request):
    c = enforce(request, "compute:member")
    body = require_object(await read_json(request), "keypair")
    name = field(body, "name", str, required=True, where="keypair")
    if not _NAME.match(name) or name != name.strip():
        raise BadRequest("Keypair name contains unsafe characters or has leading/trailing spaces; use letters, "
                         "digits, spaces, '_', '.', '@' and '-' (1-255 characters)")
    key_type = "ssh"
    if "type" in body:
        if not at_least(request, "2.2"):
            raise BadRequest("Invalid input for field/attribute keypair: 'type' needs microversion 2.2")
        key_type = field(body, "type", str)
        if key_type not in ("ssh", "x509"):
            raise BadRequest(f"Invalid keypair type {key_type!r}: use ssh or x509")
    user_id = _target_user(request, body)
    public_key = field(body, "public_key", str)
    private_key = None
    if public_key is None:
        if at_least(request, "2.92"):
            raise BadRequest("Invalid input for field/attribute keypair. 'public_key' is a required property "
                             "(key generation was removed in microversion 2.92)")
        if key_type != "ssh":
            raise BadRequest("Only ssh keypairs can be generated")
        private_key, public_key = generate_ssh_key(f"Generated-by-Stratus {name}")
    fingerprint = x509_fingerprint(public_key) if key_type == "x509" else ssh_fingerprint(public_key)
    service = svc(request)
    limits = await service.quotas.limits(c.project_id)
    async with service.db.reader() as s:
        count = await s.scalar(sa.select(sa.func.count()).select_from(m.KeyPair).where(m.KeyPair.user_id == user_id))
    check_limit("key_pairs", count or 0, 1, limits.get("key_pairs", -1))
    k = m.KeyPair(user_id=user_id, name=name, type=key_type, public_key=public_key.strip(), fingerprint=fingerprint)
    try:
        async with service.db.session() as s:
            if await s.get(m.KeyPair, (user_id, name)) is not None:
                raise Conflict(f"Key pair '{name}' already exists.")
            s.add(k)
    except IntegrityError:
        raise Conflict(f"Key pair '{name}' already exists.") from None
    view = keypair_view(request, k, full=False)
    view["user_id"] = user_id
    if private_key is not None:
        view["private_key"] = private_key
    return JSONResponse({"keypair": view}, status_code=201 if at_least(request, "2.2") else 200)


async def _get(request: Request) -> m.KeyPair:
    user_id = _target_user(request)
    async with svc(request).db.reader() as s:
        k = await s.get(m.KeyPair, (user_id, request.path_params["name"]))
    if k is None:
        raise NotFound(f"Keypair {request.path_params['name']} not found for user {user_id}")
    return k


async def show_keypair(request: Request):
    enforce(request, "compute:reader")
    return JSONResponse({"keypair": keypair_view(request, await _get(request), full=True)})


async def delete_keypair(request: Request):
    enforce(request, "compute:member")
    k = await _get(request)
    async with svc(request).db.session() as s:
        await s.execute(sa.delete(m.KeyPair).where(m.KeyPair.user_id == k.user_id, m.KeyPair.name == k.name))
    return empty(204 if at_least(request, "2.2") else 202)


routes = [
    Route(f"{P}/os-keypairs", list_keypairs, methods=["GET"]),
    Route(f"{P}/os-keypairs", create_keypair, methods=["POST"]),
    Route(f"{P}/os-keypairs/{{name}}", show_keypair, methods=["GET"]),
    Route(f"{P}/os-keypairs/{{name}}", delete_keypair, methods=["DELETE"]),
]
