"""/v3/{project_id}/snapshots."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import BadRequest, NotFound
from stratus.common.pagination import parse_limit
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.volume import models as m
from stratus.volume.api.common import (at_least, collection_next, context, field, manager, metadata_dict,
                                       parse_bool, require_admin, snapshot_view)
from stratus.volume.api.volumes import parse_offset, parse_query_metadata, parse_sort

P = "/v3/{project_id}"
SNAPSHOT_STATUSES = {"creating", "available", "deleting", "deleted", "error", "error_deleting", "updating",
                     "unmanaging", "backing-up", "restoring"}


async def list_snapshots(request: Request, detail: bool = False):
    ctx = context(request)
    q = request.query_params
    filters = {k: q[k] for k in ("name", "status", "volume_id") if q.get(k) is not None}
    limit = parse_limit(request, default=None, maximum=1000)
    all_projects = parse_bool(q.get("all_tenants") or q.get("all_projects") or "false", "all_tenants")
    rows = await manager(request).list_snapshots(ctx, all_projects=all_projects, filters=filters,
                                                 sort=parse_sort(request), limit=limit, marker=q.get("marker"),
                                                 offset=parse_offset(request),
                                                 metadata=parse_query_metadata(q.get("metadata")))
    views = [snapshot_view(request, s, ctx) for s in rows]
    if not detail:
        views = [{k: v[k] for k in ("id", "name", "description", "status", "size", "volume_id", "metadata",
                                    "created_at", "updated_at")} for v in views]
    body = {"snapshots": views, **collection_next(request, rows, limit, "snapshots")}
    if at_least(request, "3.45") and parse_bool(q.get("with_count", "false"), "with_count"):
        body["count"] = len(rows)
    return JSONResponse(body)


async def list_snapshots_detail(request: Request):
    return await list_snapshots(request, detail=True)


async def create_snapshot(request: Request):
    ctx = context(request, write=True)
    body = require_object(await read_json(request), "snapshot")
    mgr = manager(request)
    vol = await mgr.get(m.Volume, field(body, "volume_id", str, required=True, where="snapshot"), ctx, kind="volume")
    force = parse_bool(body.get("force") if body.get("force") is not None else False, "force")
    if force is False and body.get("force") is not None and at_least(request, "3.66"):
        raise BadRequest("Invalid input received: since microversion 3.66 'force' may only be true or absent.")
    snap = await mgr.create_snapshot(
        ctx, vol, name=field(body, "name", str, where="snapshot") or field(body, "display_name", str),
        description=field(body, "description", str, where="snapshot"), metadata=metadata_dict(body.get("metadata")),
        allow_in_use=force or at_least(request, "3.66"))
    return JSONResponse({"snapshot": snapshot_view(request, snap, ctx)}, status_code=202)


async def show_snapshot(request: Request):
    ctx = context(request)
    snap = await manager(request).get(m.Snapshot, request.path_params["snapshot_id"], ctx, kind="snapshot")
    return JSONResponse({"snapshot": snapshot_view(request, snap, ctx)})


async def update_snapshot(request: Request):
    ctx = context(request, write=True)
    mgr = manager(request)
    snap = await mgr.get(m.Snapshot, request.path_params["snapshot_id"], ctx, kind="snapshot")
    body = require_object(await read_json(request), "snapshot")
    values = {}
    for key, alias in (("name", "display_name"), ("description", "display_description")):
        if key in body or alias in body:
            values[key] = field(body, key if key in body else alias, str, where="snapshot")
    if "metadata" in body:
        values["metadata_"] = metadata_dict(body["metadata"])
    if not values:
        raise BadRequest("Invalid input received: give at least one of name, description to update.")
    await mgr.update(m.Snapshot, snap.id, **values)
    snap = await mgr.get(m.Snapshot, snap.id, ctx, kind="snapshot")
    return JSONResponse({"snapshot": snapshot_view(request, snap, ctx)})


async def delete_snapshot(request: Request):
    ctx = context(request, write=True)
    mgr = manager(request)
    snap = await mgr.get(m.Snapshot, request.path_params["snapshot_id"], ctx, kind="snapshot")
    await mgr.claim(m.Snapshot, snap.id, ("available", "error", "error_deleting"), {"status": "deleting"},
                    what="Snapshot")
    vol = await mgr.get(m.Volume, snap.volume_id)
    await mgr.cast(vol, "delete_snapshot", snapshot_id=snap.id)
    return empty(202)


async def snapshot_action(request: Request):
    ctx = context(request, write=True)
    mgr = manager(request)
    snap = await mgr.get(m.Snapshot, request.path_params["snapshot_id"], ctx, kind="snapshot")
    body = await read_json(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("Invalid input received: the action body must be an object with exactly one action.")
    name, args = next(iter(body.items()))
    args = args or {}
    if name == "os-reset_status":
        require_admin(request)
        status = field(args, "status", str, required=True)
        if status not in SNAPSHOT_STATUSES:
            raise BadRequest(f"Invalid input received: {status!r} is not a snapshot status.")
        await mgr.update(m.Snapshot, snap.id, status=status)
        return empty(202)
    if name == "os-force_delete":
        require_admin(request)
        await mgr.update(m.Snapshot, snap.id, status="deleting")
        await mgr.cast(await mgr.get(m.Volume, snap.volume_id), "delete_snapshot", snapshot_id=snap.id)
        return empty(202)
    if name == "os-update_snapshot_status":
        status = field(args, "status", str, required=True)
        if status not in SNAPSHOT_STATUSES:
            raise BadRequest(f"Invalid input received: {status!r} is not a snapshot status.")
        await mgr.update(m.Snapshot, snap.id, status=status, progress=field(args, "progress", str, default=snap.progress))
        return empty(202)
    raise BadRequest(f"Invalid input received: unknown snapshot action {name!r}.")


async def snapshot_metadata(request: Request):
    ctx = context(request, write=request.method != "GET")
    mgr = manager(request)
    snap = await mgr.get(m.Snapshot, request.path_params["snapshot_id"], ctx, kind="snapshot")
    if request.method == "GET":
        return JSONResponse({"metadata": dict(snap.metadata_ or {})})
    body = await read_json(request)
    meta = metadata_dict(body.get("metadata") if isinstance(body, dict) else None)
    new = meta if request.method == "PUT" else {**(snap.metadata_ or {}), **meta}
    await mgr.update(m.Snapshot, snap.id, metadata_=new)
    return JSONResponse({"metadata": new})


async def snapshot_metadata_item(request: Request):
    ctx = context(request, write=request.method != "GET")
    mgr = manager(request)
    snap = await mgr.get(m.Snapshot, request.path_params["snapshot_id"], ctx, kind="snapshot")
    key = request.path_params["key"]
    meta = dict(snap.metadata_ or {})
    if request.method in ("GET", "DELETE") and key not in meta:
        raise NotFound(f"Metadata item {key} of snapshot {snap.id} could not be found.")
    if request.method == "GET":
        return JSONResponse({"meta": {key: meta[key]}})
    if request.method == "DELETE":
        meta.pop(key)
        await mgr.update(m.Snapshot, snap.id, metadata_=meta)
        return empty(200)
    body = await read_json(request)
    item = metadata_dict(body.get("meta") if isinstance(body, dict) else None, "meta")
    if list(item) != [key]:
        raise BadRequest(f"Invalid input received: the body must be {{\"meta\": {{\"{key}\": \"value\"}}}}.")
    meta.update(item)
    await mgr.update(m.Snapshot, snap.id, metadata_=meta)
    return JSONResponse({"meta": item})


routes = [
    Route(f"{P}/snapshots", list_snapshots, methods=["GET"]),
    Route(f"{P}/snapshots", create_snapshot, methods=["POST"]),
    Route(f"{P}/snapshots/detail", list_snapshots_detail, methods=["GET"]),
    Route(f"{P}/snapshots/{{snapshot_id}}", show_snapshot, methods=["GET"]),
    Route(f"{P}/snapshots/{{snapshot_id}}", update_snapshot, methods=["PUT"]),
    Route(f"{P}/snapshots/{{snapshot_id}}", delete_snapshot, methods=["DELETE"]),
    Route(f"{P}/snapshots/{{snapshot_id}}/action", snapshot_action, methods=["POST"]),
    Route(f"{P}/snapshots/{{snapshot_id}}/metadata", snapshot_metadata, methods=["GET", "POST", "PUT"]),
    Route(f"{P}/snapshots/{{snapshot_id}}/metadata/{{key}}", snapshot_metadata_item, methods=["GET", "PUT", "DELETE"]),
]
