"""/v3/{project_id}/types: volume types, their extra specs and project access."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.db import new_uuid, utcnow
from stratus.common.errors import BadRequest, Conflict, NotFound
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.volume import models as m
from stratus.volume.api.common import context, field, manager, parse_bool, require_admin, type_view

P = "/v3/{project_id}"


def _specs(value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and k and len(k) <= 255 for k in value):
        raise BadRequest("Invalid input for field/attribute extra_specs: an object of string keys is required.")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool):
            v = str(v)
        if not isinstance(v, (str, int, float)):
            raise BadRequest(f"Invalid input for field/attribute extra_specs: the value of {k!r} must be a string.")
        out[k] = str(v)
    return out


async def _find(request: Request, ctx) -> m.VolumeType:
    return await manager(request).find_type(request.path_params["type_id"], ctx)


async def list_types(request: Request):
    ctx = context(request)
    q = request.query_params
    async with manager(request).db.reader() as s:
        rows = (await s.execute(sa.select(m.VolumeType).order_by(m.VolumeType.name))).scalars().all()
    is_public = q.get("is_public")
    visible = []
    for t in rows:
        if not t.is_public and not ctx.is_admin and ctx.project_id not in (t.projects or []):
            continue
        if is_public not in (None, "None", "") and ctx.is_admin and t.is_public != parse_bool(is_public, "is_public"):
            continue
        visible.append(t)
    return JSONResponse({"volume_types": [type_view(t, admin=ctx.is_admin) for t in visible]})


async def default_type(request: Request):
    ctx = context(request)
    t = await manager(request).find_type(None, ctx)
    return JSONResponse({"volume_type": type_view(t, admin=ctx.is_admin)})


async def show_type(request: Request):
    ctx = context(request)
    if request.path_params["type_id"] == "default":
        return await default_type(request)
    return JSONResponse({"volume_type": type_view(await _find(request, ctx), admin=ctx.is_admin)})


async def create_type(request: Request):
    require_admin(request)
    body = require_object(await read_json(request), "volume_type")
    name = field(body, "name", str, required=True, where="volume_type").strip()
    if not name:
        raise BadRequest("Invalid input for field/attribute name: it must not be empty.")
    mgr = manager(request)
    async with mgr.db.session() as s:
        if (await s.execute(sa.select(m.VolumeType).where(m.VolumeType.name == name))).scalar_one_or_none():
            raise Conflict(f"Volume Type {name} already exists.")
        t = m.VolumeType(id=new_uuid(), name=name, description=field(body, "description", str, where="volume_type"),
                         is_public=parse_bool(body.get("os-volume-type-access:is_public",
                                                       body.get("is_public", True)), "is_public"),
                         extra_specs=_specs(body.get("extra_specs")), projects=[])
        s.add(t)
    return JSONResponse({"volume_type": type_view(t)})


async def update_type(request: Request):
    ctx = require_admin(request)
    t = await _find(request, ctx)
    body = require_object(await read_json(request), "volume_type")
    values = {}
    if "name" in body:
        name = field(body, "name", str, where="volume_type")
        if not name or not name.strip():
            raise BadRequest("Invalid input for field/attribute name: it must not be empty.")
        if t.name == manager(request).settings["default_volume_type"] and name != t.name:
            raise BadRequest("Invalid input received: the default volume type cannot be renamed.")
        values["name"] = name.strip()
    if "description" in body:
        values["description"] = field(body, "description", str, where="volume_type")
    if "is_public" in body:
        values["is_public"] = parse_bool(body["is_public"], "is_public")
    if not values:
        raise BadRequest("Invalid input received: give name, description or is_public to update.")
    await manager(request).update(m.VolumeType, t.id, **values)
    return JSONResponse({"volume_type": type_view(await _find(request, ctx))})


async def delete_type(request: Request):
    ctx = require_admin(request)
    t = await _find(request, ctx)
    mgr = manager(request)
    if t.name == mgr.settings["default_volume_type"]:
        raise BadRequest("Invalid volume type: the default volume type cannot be deleted.")
    if await mgr.type_in_use(t.id):
        raise BadRequest(f"Invalid volume type: volume type {t.name} is still used by volumes.")
    async with mgr.db.session() as s:
        await s.execute(sa.delete(m.VolumeType).where(m.VolumeType.id == t.id))
    return empty(202)


async def extra_specs(request: Request):
    ctx = context(request) if request.method == "GET" else require_admin(request)
    t = await _find(request, ctx)
    if request.method == "GET":
        return JSONResponse({"extra_specs": dict(t.extra_specs or {})})
    body = await read_json(request)
    if not isinstance(body, dict) or "extra_specs" not in body:
        raise BadRequest("Malformed request body: expected {\"extra_specs\": {...}}.")
    specs = {**(t.extra_specs or {}), **_specs(body["extra_specs"])}
    await manager(request).update(m.VolumeType, t.id, extra_specs=specs)
    return JSONResponse({"extra_specs": _specs(body["extra_specs"])})


async def extra_spec_item(request: Request):
    ctx = context(request) if request.method == "GET" else require_admin(request)
    t = await _find(request, ctx)
    key = request.path_params["key"]
    specs = dict(t.extra_specs or {})
    if request.method in ("GET", "DELETE") and key not in specs:
        raise NotFound(f"Volume Type {t.id} has no extra specs with key {key}.")
    if request.method == "GET":
        return JSONResponse({key: specs[key]})
    if request.method == "DELETE":
        specs.pop(key)
        await manager(request).update(m.VolumeType, t.id, extra_specs=specs)
        return empty(202)
    body = _specs(await read_json(request))
    if list(body) != [key]:
        raise BadRequest(f"Invalid input received: the body must be {{\"{key}\": \"value\"}}.")
    specs.update(body)
    await manager(request).update(m.VolumeType, t.id, extra_specs=specs)
    return JSONResponse(body)


async def type_action(request: Request):
    ctx = require_admin(request)
    t = await _find(request, ctx)
    body = await read_json(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("Invalid input received: expected addProjectAccess or removeProjectAccess.")
    name, args = next(iter(body.items()))
    project = field(args or {}, "project", str, required=True)
    projects = list(t.projects or [])
    if t.is_public:
        raise BadRequest("Invalid volume type: access is managed only for private types.")
    if name == "addProjectAccess":
        if project in projects:
            raise Conflict(f"Volume type access for {t.id} / {project} combination already exists.")
        projects.append(project)
    elif name == "removeProjectAccess":
        if project not in projects:
            raise NotFound(f"Volume type access not found for {t.id} / {project} combination.")
        projects.remove(project)
    else:
        raise BadRequest(f"Invalid input received: unknown volume type action {name!r}.")
    await manager(request).update(m.VolumeType, t.id, projects=projects, updated_at=utcnow())
    return empty(202)


async def type_access(request: Request):
    ctx = require_admin(request)
    t = await _find(request, ctx)
    if t.is_public:
        raise NotFound("Access list not available for public volume types.")
    return JSONResponse({"volume_type_access": [{"volume_type_id": t.id, "project_id": p} for p in t.projects or []]})


routes = [
    Route(f"{P}/types", list_types, methods=["GET"]),
    Route(f"{P}/types", create_type, methods=["POST"]),
    Route(f"{P}/types/{{type_id}}", show_type, methods=["GET"]),
    Route(f"{P}/types/{{type_id}}", update_type, methods=["PUT"]),
    Route(f"{P}/types/{{type_id}}", delete_type, methods=["DELETE"]),
    Route(f"{P}/types/{{type_id}}/extra_specs", extra_specs, methods=["GET", "POST"]),
    Route(f"{P}/types/{{type_id}}/extra_specs/{{key}}", extra_spec_item, methods=["GET", "PUT", "DELETE"]),
    Route(f"{P}/types/{{type_id}}/action", type_action, methods=["POST"]),
    Route(f"{P}/types/{{type_id}}/os-volume-type-access", type_access, methods=["GET"]),
]
