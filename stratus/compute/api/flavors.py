"""/flavors: sizes of servers, their extra specs and (for private flavors) who may use them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.db import new_uuid
from stratus.common.errors import BadRequest, Conflict, NotFound
from stratus.common.pagination import parse_limit
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.compute import models as m
from stratus.compute.api.common import (at_least, check_query, ctx, enforce, field, int_field, name_field,
                                        paginate_links, query_bool, self_links, svc)

P = "/v2.1"


def flavor_view(request: Request, f: m.Flavor, *, detail: bool = True) -> dict:
    view = {"id": f.id, "name": f.name, "links": self_links(request, "flavors", f.id)}
    if at_least(request, "2.55"):
        view["description"] = f.description
    if not detail:
        return view
    view.update({
        "ram": f.memory_mb, "vcpus": f.vcpus, "disk": f.root_gb,
        "swap": f.swap if (f.swap or at_least(request, "2.75")) else "",
        "OS-FLV-EXT-DATA:ephemeral": f.ephemeral_gb,
        "os-flavor-access:is_public": f.is_public,
    })
    if not at_least(request, "2.102"):
        view["rxtx_factor"] = f.rxtx_factor
        view["OS-FLV-DISABLED:disabled"] = f.disabled
    if at_least(request, "2.61"):
        view["extra_specs"] = dict(f.extra_specs or {})
    return view


def embedded_flavor(f_snapshot: dict, request: Request) -> dict:
    """A server's flavor: {id, links} before 2.47, the flavor's values after."""
    if at_least(request, "2.47"):
        out = {"vcpus": f_snapshot["vcpus"], "ram": f_snapshot["ram"], "disk": f_snapshot["disk"],
               "ephemeral": f_snapshot.get("ephemeral", 0), "swap": f_snapshot.get("swap", 0),
               "original_name": f_snapshot["name"]}
        out["extra_specs"] = dict(f_snapshot.get("extra_specs") or {})
        return out
    return {"id": f_snapshot["id"], "links": [{"rel": "bookmark", "href": self_links(request, "flavors", f_snapshot["id"])[1]["href"]}]}


async def visible_flavor(request: Request, flavor_id: str) -> m.Flavor:
    c = ctx(request)
    async with svc(request).db.reader() as s:
        f = await s.get(m.Flavor, flavor_id)
        if f is not None and not f.is_public and not c.is_admin:
            access = await s.get(m.FlavorAccess, (f.id, c.project_id))
            if access is None:
                f = None
    if f is None:
        raise NotFound(f"Flavor {flavor_id} could not be found.")
    return f


LIST_PARAMS = {"is_public", "minRam", "minDisk", "sort_key", "sort_dir", "limit", "marker", "name"}
SORT_KEYS = {"created_at", "description", "disabled", "ephemeral_gb", "flavorid", "id", "is_public",
             "memory_mb", "name", "root_gb", "rxtx_factor", "swap", "vcpus"}


async def _list(request: Request, detail: bool):
    c = enforce(request, "compute:reader")
    check_query(request, LIST_PARAMS, since="2.75")
    q = sa.select(m.Flavor)
    raw_public = request.query_params.get("is_public")
    if raw_public is None:
        public: bool | None = True
    elif raw_public.lower() == "none":
        public = None
    else:
        public = query_bool(request, "is_public")
    if not c.is_admin:
        # Non-admins see public flavors and the private ones shared with their project.
        shared = sa.select(m.FlavorAccess.flavor_id).where(m.FlavorAccess.project_id == c.project_id)
        if public is True:
            q = q.where(m.Flavor.is_public.is_(True))
        elif public is False:
            q = q.where(m.Flavor.is_public.is_(False), m.Flavor.id.in_(shared))
        else:
            q = q.where(sa.or_(m.Flavor.is_public.is_(True), m.Flavor.id.in_(shared)))
    elif public is not None:
        q = q.where(m.Flavor.is_public.is_(public))
    for param, col in (("minRam", m.Flavor.memory_mb), ("minDisk", m.Flavor.root_gb)):
        if param in request.query_params:
            try:
                q = q.where(col >= int(request.query_params[param]))
            except ValueError:
                raise BadRequest(f"Invalid {param} filter {request.query_params[param]!r}: expected an integer") from None
    if "name" in request.query_params and at_least(request, "2.102"):
        q = q.where(m.Flavor.name == request.query_params["name"])
    sort_key = request.query_params.get("sort_key", "flavorid")
    if sort_key not in SORT_KEYS:
        raise BadRequest(f"Invalid sort_key {sort_key!r}: choose one of {', '.join(sorted(SORT_KEYS))}")
    sort_dir = request.query_params.get("sort_dir", "asc")
    if sort_dir not in ("asc", "desc"):
        raise BadRequest(f"Invalid sort_dir {sort_dir!r}: choose asc or desc")
    column = {"flavorid": m.Flavor.id, "id": m.Flavor.id}.get(sort_key) or getattr(m.Flavor, sort_key)
    async with svc(request).db.reader() as s:
        rows = list((await s.execute(q)).scalars())
    # Numeric-looking ids ("1".."10") sort as numbers, like nova's integer primary key order.
    def key(f):
        v = getattr(f, column.key)
        if column.key == "id":
            return (0, int(v), "") if v.isdigit() else (1, 0, v)
        return (v is None, v)
    rows.sort(key=key, reverse=sort_dir == "desc")
    marker = request.query_params.get("marker")
    if marker:
        ids = [f.id for f in rows]
        if marker not in ids:
            raise BadRequest(f"marker [{marker}] not found")
        rows = rows[ids.index(marker) + 1:]
    limit = parse_limit(request, default=None, maximum=svc(request).settings.max_limit)
    if limit is not None:
        rows = rows[:limit]
    items = [flavor_view(request, f, detail=detail) for f in rows]
    body = {"flavors": items}
    links = paginate_links(request, "flavors", items, limit)
    if links:
        body["flavors_links"] = links
    return JSONResponse(body)


async def list_flavors(request: Request):
    return await _list(request, False)


async def list_flavors_detail(request: Request):
    return await _list(request, True)


async def show_flavor(request: Request):
    enforce(request, "compute:reader")
    f = await visible_flavor(request, request.path_params["id"])
    return JSONResponse({"flavor": flavor_view(request, f)})


async def create_flavor(request: Request):
    enforce(request, "compute:flavors:manage")
    body = require_object(await read_json(request), "flavor")
    name = name_field(body, "name", where="flavor")
    fid = body.get("id")
    if fid is None or fid == "auto":
        fid = new_uuid()
    elif isinstance(fid, int) and not isinstance(fid, bool):
        fid = str(fid)
    elif not isinstance(fid, str) or not fid or len(fid) > 255 or fid != fid.strip():
        raise BadRequest(f"Invalid input for field/attribute id. Value: {fid!r}: must be a non-empty string")
    ram = int_field(body, "ram", minimum=1, required=True, where="flavor")
    vcpus = int_field(body, "vcpus", minimum=1, required=True, where="flavor")
    disk = int_field(body, "disk", minimum=0, required=True, where="flavor")
    swap = int_field(body, "swap", minimum=0, default=0) if body.get("swap") not in ("", None) else 0
    ephemeral = int_field(body, "OS-FLV-EXT-DATA:ephemeral", minimum=0, default=0)
    rxtx = body.get("rxtx_factor", 1.0)
    if isinstance(rxtx, bool) or not isinstance(rxtx, (int, float)) or rxtx <= 0:
        raise BadRequest(f"Invalid input for field/attribute rxtx_factor. Value: {rxtx!r}: must be a positive number")
    is_public = field(body, "os-flavor-access:is_public", bool, default=True)
    description = None
    if "description" in body:
        if not at_least(request, "2.55"):
            raise BadRequest("Invalid input for field/attribute flavor: 'description' needs microversion 2.55")
        description = field(body, "description", str, nullable=True)
        if description is not None and len(description) > 65535:
            raise BadRequest("Invalid input for field/attribute description: longer than 65535 characters")
    f = m.Flavor(id=fid, name=name, memory_mb=ram, vcpus=vcpus, root_gb=disk, swap=swap, ephemeral_gb=ephemeral,
                 rxtx_factor=float(rxtx), is_public=is_public, description=description, extra_specs={})
    try:
        async with svc(request).db.session() as s:
            if await s.get(m.Flavor, fid) is not None:
                raise Conflict(f"Flavor with ID {fid} already exists.")
            taken = await s.scalar(sa.select(m.Flavor.id).where(m.Flavor.name == name))
            if taken:
                raise Conflict(f"Flavor with name {name} already exists.")
            s.add(f)
    except IntegrityError:
        raise Conflict(f"Flavor with ID {fid} or name {name} already exists.") from None
    return JSONResponse({"flavor": flavor_view(request, f)})


async def update_flavor(request: Request):
    enforce(request, "compute:flavors:manage")
    if not at_least(request, "2.55"):
        raise NotFound("Updating a flavor needs microversion 2.55")
    body = require_object(await read_json(request), "flavor")
    if set(body) - {"description"} or "description" not in body:
        raise BadRequest("Only 'description' can be updated on a flavor")
    desc = field(body, "description", str, nullable=True)
    async with svc(request).db.session() as s:
        f = await s.get(m.Flavor, request.path_params["id"])
        if f is None:
            raise NotFound(f"Flavor {request.path_params['id']} could not be found.")
        f.description = desc
    return JSONResponse({"flavor": flavor_view(request, f)})


async def delete_flavor(request: Request):
    enforce(request, "compute:flavors:manage")
    async with svc(request).db.session() as s:
        f = await s.get(m.Flavor, request.path_params["id"])
        if f is None:
            raise NotFound(f"Flavor {request.path_params['id']} could not be found.")
        await s.execute(sa.delete(m.FlavorAccess).where(m.FlavorAccess.flavor_id == f.id))
        await s.delete(f)
    return empty(202)


# ---- extra specs ---------------------------------------------------------------------------

def _check_specs(specs) -> dict[str, str]:
    if not isinstance(specs, dict):
        raise BadRequest("Invalid input for field/attribute extra_specs: must be an object")
    out = {}
    for k, v in specs.items():
        if not isinstance(k, str) or not 1 <= len(k) <= 255:
            raise BadRequest(f"Invalid extra spec key {k!r}: must be 1-255 characters")
        if isinstance(v, bool):
            v = str(v)
        if isinstance(v, (int, float)):
            v = str(v)
        if not isinstance(v, str) or len(v) > 255:
            raise BadRequest(f"Invalid extra spec value for {k!r}: must be a string of at most 255 characters")
        out[k] = v
    return out


async def list_specs(request: Request):
    enforce(request, "compute:reader")
    f = await visible_flavor(request, request.path_params["id"])
    return JSONResponse({"extra_specs": dict(f.extra_specs or {})})


async def create_specs(request: Request):
    enforce(request, "compute:flavors:manage")
    body = await read_json(request)
    if not isinstance(body, dict) or "extra_specs" not in body:
        raise BadRequest("The request body must be an object with an 'extra_specs' member")
    specs = _check_specs(body["extra_specs"])
    async with svc(request).db.session() as s:
        f = await s.get(m.Flavor, request.path_params["id"])
        if f is None:
            raise NotFound(f"Flavor {request.path_params['id']} could not be found.")
        f.extra_specs = {**(f.extra_specs or {}), **specs}
    return JSONResponse({"extra_specs": specs})


async def show_spec(request: Request):
    enforce(request, "compute:reader")
    f = await visible_flavor(request, request.path_params["id"])
    key = request.path_params["key"]
    if key not in (f.extra_specs or {}):
        raise NotFound(f"Flavor {f.id} has no extra specs with key {key}.")
    return JSONResponse({key: f.extra_specs[key]})


async def update_spec(request: Request):
    enforce(request, "compute:flavors:manage")
    key = request.path_params["key"]
    body = await read_json(request)
    if not isinstance(body, dict) or len(body) != 1 or key not in body:
        raise BadRequest(f"The request body must be an object with exactly the key {key!r} of the URL")
    specs = _check_specs(body)
    async with svc(request).db.session() as s:
        f = await s.get(m.Flavor, request.path_params["id"])
        if f is None:
            raise NotFound(f"Flavor {request.path_params['id']} could not be found.")
        f.extra_specs = {**(f.extra_specs or {}), **specs}
    return JSONResponse(specs)


async def delete_spec(request: Request):
    enforce(request, "compute:flavors:manage")
    key = request.path_params["key"]
    async with svc(request).db.session() as s:
        f = await s.get(m.Flavor, request.path_params["id"])
        if f is None:
            raise NotFound(f"Flavor {request.path_params['id']} could not be found.")
        specs = dict(f.extra_specs or {})
        if key not in specs:
            raise NotFound(f"Flavor {f.id} has no extra specs with key {key}.")
        del specs[key]
        f.extra_specs = specs
    return empty(200)


# ---- access ------------------------------------------------------------------------------

async def _access_list(s, flavor_id: str) -> list[dict]:
    rows = (await s.execute(sa.select(m.FlavorAccess).where(m.FlavorAccess.flavor_id == flavor_id))).scalars()
    return [{"flavor_id": r.flavor_id, "tenant_id": r.project_id} for r in rows]


async def list_access(request: Request):
    enforce(request, "compute:flavors:manage")
    async with svc(request).db.reader() as s:
        f = await s.get(m.Flavor, request.path_params["id"])
        if f is None:
            raise NotFound(f"Flavor {request.path_params['id']} could not be found.")
        if f.is_public:
            raise NotFound("Access list not available for public flavors.")
        return JSONResponse({"flavor_access": await _access_list(s, f.id)})


async def flavor_action(request: Request):
    enforce(request, "compute:flavors:manage")
    body = await read_json(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("The action body must be an object with one action: addTenantAccess or removeTenantAccess")
    action, args = next(iter(body.items()))
    if action not in ("addTenantAccess", "removeTenantAccess") or not isinstance(args, dict):
        raise BadRequest(f"Unknown flavor action {action!r}: use addTenantAccess or removeTenantAccess")
    tenant = field(args, "tenant", str, required=True, where=action)
    async with svc(request).db.session() as s:
        f = await s.get(m.Flavor, request.path_params["id"])
        if f is None:
            raise NotFound(f"Flavor {request.path_params['id']} could not be found.")
        if f.is_public:
            raise Conflict("Can not add access to a public flavor.")
        existing = await s.get(m.FlavorAccess, (f.id, tenant))
        if action == "addTenantAccess":
            if existing is not None:
                raise Conflict(f"Flavor access already exists for flavor {f.id} and project {tenant} combination.")
            s.add(m.FlavorAccess(flavor_id=f.id, project_id=tenant))
        else:
            if existing is None:
                raise NotFound(f"Flavor access not found for {f.id} / {tenant} combination.")
            await s.delete(existing)
        await s.flush()
        return JSONResponse({"flavor_access": await _access_list(s, f.id)})


routes = [
    Route(f"{P}/flavors", list_flavors, methods=["GET"]),
    Route(f"{P}/flavors", create_flavor, methods=["POST"]),
    Route(f"{P}/flavors/detail", list_flavors_detail, methods=["GET"]),
    Route(f"{P}/flavors/{{id}}", show_flavor, methods=["GET"]),
    Route(f"{P}/flavors/{{id}}", update_flavor, methods=["PUT"]),
    Route(f"{P}/flavors/{{id}}", delete_flavor, methods=["DELETE"]),
    Route(f"{P}/flavors/{{id}}/os-extra_specs", list_specs, methods=["GET"]),
    Route(f"{P}/flavors/{{id}}/os-extra_specs", create_specs, methods=["POST"]),
    Route(f"{P}/flavors/{{id}}/os-extra_specs/{{key}}", show_spec, methods=["GET"]),
    Route(f"{P}/flavors/{{id}}/os-extra_specs/{{key}}", update_spec, methods=["PUT"]),
    Route(f"{P}/flavors/{{id}}/os-extra_specs/{{key}}", delete_spec, methods=["DELETE"]),
    Route(f"{P}/flavors/{{id}}/os-flavor-access", list_access, methods=["GET"]),
    Route(f"{P}/flavors/{{id}}/action", flavor_action, methods=["POST"]),
]

DEFAULT_FLAVORS = [
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
]


async def ensure_default_flavors(db) -> None:
    async with db.session() as s:
        for fid, name, vcpus, ram, disk in DEFAULT_FLAVORS:
            if await s.get(m.Flavor, fid) is None:
                taken = await s.scalar(sa.select(m.Flavor.id).where(m.Flavor.name == name))
                if not taken:
                    s.add(m.Flavor(id=fid, name=name, vcpus=vcpus, memory_mb=ram, root_gb=disk, extra_specs={}))


def flavor_snapshot(f: m.Flavor) -> dict:
    """What a server keeps of its flavor (the flavor may change or go away later)."""
    return {"id": f.id, "name": f.name, "vcpus": f.vcpus, "ram": f.memory_mb, "disk": f.root_gb,
            "ephemeral": f.ephemeral_gb, "swap": f.swap, "extra_specs": dict(f.extra_specs or {})}


__all__ = ["routes", "visible_flavor", "flavor_snapshot", "embedded_flavor"]
