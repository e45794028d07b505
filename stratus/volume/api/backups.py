"""/v3/{project_id}/backups: full and incremental backups to the object store, and restores."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.db import new_uuid
from stratus.common.errors import BadRequest
from stratus.common.pagination import parse_limit
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.volume import models as m
from stratus.volume.api.common import (at_least, backup_view, collection_next, context, field, manager,
                                       metadata_dict, parse_bool, require_admin)
from stratus.volume.api.volumes import parse_offset, parse_sort

P = "/v3/{project_id}"


async def _view(request, ctx, b: m.Backup) -> dict:
    children = await manager(request).backup_children(b.id)
    return backup_view(request, b, ctx, has_dependents=children > 0)


async def list_backups(request: Request, detail: bool = False):
    ctx = context(request)
    q = request.query_params
    filters = {k: q[k] for k in ("name", "status", "volume_id") if q.get(k) is not None}
    limit = parse_limit(request, default=None, maximum=1000)
    all_projects = parse_bool(q.get("all_tenants") or "false", "all_tenants")
    rows = await manager(request).list_backups(ctx, all_projects=all_projects, filters=filters,
                                               sort=parse_sort(request), limit=limit, marker=q.get("marker"),
                                               offset=parse_offset(request))
    if detail:
        views = [await _view(request, ctx, b) for b in rows]
    else:
        views = [{"id": b.id, "name": b.name, "links": (await _view(request, ctx, b))["links"]} for b in rows]
    body = {"backups": views, **collection_next(request, rows, limit, "backups")}
    if at_least(request, "3.45") and parse_bool(q.get("with_count", "false"), "with_count"):
        body["count"] = len(rows)
    return JSONResponse(body)


async def list_backups_detail(request: Request):
    return await list_backups(request, detail=True)


async def create_backup(request: Request):
    ctx = context(request, write=True)
    body = require_object(await read_json(request), "backup")
    mgr = manager(request)
    if not await mgr.object_store_available():
        raise BadRequest("Invalid input received: object-store is not available: backups need the object store "
                         "service in the catalog.")
    vol = await mgr.get(m.Volume, field(body, "volume_id", str, required=True, where="backup"), ctx, kind="volume")
    incremental = parse_bool(body.get("incremental") if body.get("incremental") is not None else False, "incremental")
    force = parse_bool(body.get("force") if body.get("force") is not None else False, "force")
    snapshot = None
    if body.get("snapshot_id"):
        snapshot = await mgr.get(m.Snapshot, field(body, "snapshot_id", str, where="backup"), ctx, kind="snapshot")
        if snapshot.volume_id != vol.id:
            raise BadRequest(f"Invalid input received: snapshot {snapshot.id} is not a snapshot of volume {vol.id}.")
        if snapshot.status != "available":
            raise BadRequest(f"Invalid snapshot: snapshot {snapshot.id} is {snapshot.status}, not available.")
    allowed = ("available", "in-use") if force else ("available",)
    if vol.status not in allowed:
        raise BadRequest(f"Invalid volume: volume {vol.id} is {vol.status}; it must be available"
                         f"{' (or in-use with force=true)' if vol.status == 'in-use' else ''} to be backed up.")
    parent = None
    if incremental:
        parent = await mgr.latest_backup(vol.id)
        if parent is None:
            raise BadRequest(f"Invalid backup: no full backup of volume {vol.id} exists to make an incremental "
                             f"backup on; make a full backup first.")
    await mgr.check_quota(ctx.project_id, {"backups": 1, "backup_gigabytes": vol.size})
    container = field(body, "container", str, where="backup") or (parent.container if parent else
                                                                  mgr.settings["backup_container"])
    if "/" in container:
        raise BadRequest("Invalid input for field/attribute container: it must not contain '/'.")
    previous = vol.status
    await mgr.claim(m.Volume, vol.id, allowed, {"status": "backing-up"}, what="Volume")
    if snapshot:
        await mgr.update(m.Snapshot, snapshot.id, status="backing-up")
    backup = m.Backup(id=new_uuid(), project_id=ctx.project_id, user_id=ctx.user_id, volume_id=vol.id,
                      snapshot_id=snapshot.id if snapshot else None, parent_id=parent.id if parent else None,
                      name=field(body, "name", str, where="backup"),
                      description=field(body, "description", str, where="backup"), status="creating",
                      size=vol.size, container=container, is_incremental=parent is not None,
                      availability_zone=vol.availability_zone,
                      metadata_=metadata_dict(body.get("metadata")) if at_least(request, "3.43") else {})
    async with mgr.db.session() as s:
        s.add(backup)
    try:
        await mgr.cast(vol, "create_backup", backup_id=backup.id)
    except Exception:
        await mgr.update(m.Volume, vol.id, status=previous)
        await mgr.update(m.Backup, backup.id, status="error", fail_reason="the volume agent was not reachable")
        raise
    return JSONResponse({"backup": {"id": backup.id, "name": backup.name,
                                    "links": backup_view(request, backup, ctx, has_dependents=False)["links"]}},
                        status_code=202)


async def show_backup(request: Request):
    ctx = context(request)
    b = await manager(request).get(m.Backup, request.path_params["backup_id"], ctx, kind="backup")
    return JSONResponse({"backup": await _view(request, ctx, b)})


async def update_backup(request: Request):
    ctx = context(request, write=True)
    mgr = manager(request)
    b = await mgr.get(m.Backup, request.path_params["backup_id"], ctx, kind="backup")
    body = require_object(await read_json(request), "backup")
    values = {}
    for key in ("name", "description"):
        if key in body:
            values[key] = field(body, key, str, where="backup")
    if "metadata" in body and at_least(request, "3.43"):
        values["metadata_"] = metadata_dict(body["metadata"])
    if not values:
        raise BadRequest("Invalid input received: give name, description or metadata to update.")
    await mgr.update(m.Backup, b.id, **values)
    return JSONResponse({"backup": await _view(request, ctx, await mgr.get(m.Backup, b.id))})


async def delete_backup(request: Request):
    ctx = context(request, write=True)
    mgr = manager(request)
    b = await mgr.get(m.Backup, request.path_params["backup_id"], ctx, kind="backup")
    if await mgr.backup_children(b.id):
        raise BadRequest(f"Invalid backup: incremental backups depend on backup {b.id}; delete them first.")
    await mgr.claim(m.Backup, b.id, ("available", "error", "error_deleting"), {"status": "deleting"}, what="Backup")
    await _cast_backup(mgr, b, "delete_backup", backup_id=b.id)
    return empty(202)


async def _cast_backup(mgr, b: m.Backup, method: str, **kwargs) -> None:
    """Backups are handled by an agent: the one of the source volume if it still exists."""
    try:
        vol = await mgr.get(m.Volume, b.volume_id)
    except Exception:
        vol = None
    if vol is None or not vol.host:
        host = await mgr.pick_host(None, 0)
        vol = m.Volume(id=b.volume_id, host=host)
    await mgr.cast(vol, method, **kwargs)


async def restore_backup(request: Request):
    ctx = context(request, write=True)
    mgr = manager(request)
    b = await mgr.get(m.Backup, request.path_params["backup_id"], ctx, kind="backup")
    body = require_object(await read_json(request), "restore")
    if b.status != "available":
        raise BadRequest(f"Invalid backup: backup {b.id} is {b.status}, not available.")
    volume_id = field(body, "volume_id", str, where="restore")
    if volume_id:
        vol = await mgr.get(m.Volume, volume_id, ctx, kind="volume")
        if vol.size < b.size:
            raise BadRequest(f"Invalid volume: volume {vol.id} ({vol.size} GiB) is smaller than the backup "
                             f"({b.size} GiB).")
        await mgr.claim(m.Volume, vol.id, ("available",), {"status": "restoring-backup"}, what="Volume")
        await mgr.claim(m.Backup, b.id, ("available",), {"status": "restoring", "restore_volume_id": vol.id},
                        what="Backup")
        await mgr.cast(vol, "restore_backup", backup_id=b.id, volume_id=vol.id)
    else:
        vtype = await mgr.find_type(None, ctx)
        vol = await mgr.create_volume(ctx, size=b.size, name=field(body, "name", str, where="restore") or
                                      f"restore_backup_{b.id}", description=None, vtype=vtype, zone=None,
                                      metadata={}, snapshot=None, source=None, image_id=None, backup=b,
                                      multiattach=False)
    return JSONResponse({"restore": {"backup_id": b.id, "volume_id": vol.id, "volume_name": vol.name}},
                        status_code=202)


async def backup_action(request: Request):
    require_admin(request)
    mgr = manager(request)
    b = await mgr.get(m.Backup, request.path_params["backup_id"])
    body = await read_json(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("Invalid input received: expected os-reset_status or os-force_delete.")
    name, args = next(iter(body.items()))
    if name == "os-reset_status":
        status = field(args or {}, "status", str, required=True)
        if status not in ("available", "error"):
            raise BadRequest("Invalid input received: a backup's status can be reset to available or error.")
        await mgr.update(m.Backup, b.id, status=status)
        return empty(202)
    if name == "os-force_delete":
        await mgr.update(m.Backup, b.id, status="deleting")
        await _cast_backup(mgr, b, "delete_backup", backup_id=b.id)
        return empty(202)
    raise BadRequest(f"Invalid input received: unknown backup action {name!r}.")


routes = [
    Route(f"{P}/backups", list_backups, methods=["GET"]),
    Route(f"{P}/backups", create_backup, methods=["POST"]),
    Route(f"{P}/backups/detail", list_backups_detail, methods=["GET"]),
    Route(f"{P}/backups/{{backup_id}}", show_backup, methods=["GET"]),
    Route(f"{P}/backups/{{backup_id}}", update_backup, methods=["PUT"]),
    Route(f"{P}/backups/{{backup_id}}", delete_backup, methods=["DELETE"]),
    Route(f"{P}/backups/{{backup_id}}/restore", restore_backup, methods=["POST"]),
    Route(f"{P}/backups/{{backup_id}}/action", backup_action, methods=["POST"]),
]
