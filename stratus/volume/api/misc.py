"""Quotas, limits, availability zones, services (admin) and extensions."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import BadRequest, NotFound
from stratus.common.web import JSONResponse, empty, read_json
from stratus.volume import models as m
from stratus.volume.api.common import context, iso, manager, parse_bool, require_admin

P = "/v3/{project_id}"


def _target_project(request: Request, ctx) -> str:
    target = request.path_params["target"]
    if target != ctx.project_id and not ctx.is_admin:
        raise NotFound(f"Project {target} could not be found.")  # someone else's project: as if absent
    return target


async def quota_show(request: Request):
    ctx = context(request)
    target = _target_project(request, ctx)
    mgr = manager(request)
    limits = await mgr.quota_limits(target)
    if parse_bool(request.query_params.get("usage", "false"), "usage"):
        used = await mgr.usage(target)
        body = {k: {"limit": v, "in_use": used.get(k, 0), "reserved": 0, "allocated": 0} for k, v in limits.items()}
    else:
        body = dict(limits)
    return JSONResponse({"quota_set": {"id": target, **body}})


async def quota_defaults(request: Request):
    ctx = context(request)
    target = request.path_params["target"]
    if target != ctx.project_id and not ctx.is_admin:
        raise NotFound(f"Project {target} could not be found.")
    return JSONResponse({"quota_set": {"id": target, **await manager(request).quota_defaults()}})


async def quota_update(request: Request):
    require_admin(request)
    target = request.path_params["target"]
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("quota_set"), dict):
        raise BadRequest("Malformed request body: expected {\"quota_set\": {...}}.")
    mgr = manager(request)
    known = await mgr.quota_defaults()
    values = {}
    for key, value in body["quota_set"].items():
        if key in ("id", "tenant_id"):
            continue
        if key not in known:
            raise BadRequest(f"Invalid input received: bad quota set key {key!r} (known: {', '.join(sorted(known))}).")
        try:
            limit = int(value)
        except (TypeError, ValueError):
            raise BadRequest(f"Invalid input received: quota {key} must be an integer, not {value!r}.") from None
        if limit < -1 or isinstance(value, bool):
            raise BadRequest(f"Invalid input received: quota {key} must be -1 (unlimited) or more.")
        values[key] = limit
    used = await mgr.usage(target)
    for key, limit in values.items():
        if limit >= 0 and used.get(key, 0) > limit and key != "per_volume_gigabytes":
            raise BadRequest(f"Invalid input received: quota {key} of {limit} is less than the {used[key]} in use.")
    await mgr.set_quotas(target, values)
    return JSONResponse({"quota_set": await mgr.quota_limits(target)})


async def quota_delete(request: Request):
    require_admin(request)
    await manager(request).delete_quotas(request.path_params["target"])
    return empty(200)


async def limits(request: Request):
    ctx = context(request)
    mgr = manager(request)
    project = ctx.project_id
    if ctx.is_admin and request.query_params.get("project_id"):
        project = request.query_params["project_id"]
    lim = await mgr.quota_limits(project)
    used = await mgr.usage(project)
    return JSONResponse({"limits": {"rate": [], "absolute": {
        "maxTotalVolumes": lim["volumes"], "maxTotalSnapshots": lim["snapshots"],
        "maxTotalVolumeGigabytes": lim["gigabytes"], "maxTotalBackups": lim["backups"],
        "maxTotalBackupGigabytes": lim["backup_gigabytes"], "totalVolumesUsed": used["volumes"],
        "totalSnapshotsUsed": used["snapshots"], "totalGigabytesUsed": used["gigabytes"],
        "totalBackupsUsed": used["backups"], "totalBackupGigabytesUsed": used["backup_gigabytes"]}}})


async def availability_zones(request: Request):
    context(request)
    zones = await manager(request).zones()
    return JSONResponse({"availabilityZoneInfo": [{"zoneName": z, "zoneState": {"available": up}} for z, up in zones]})


def _service_view(mgr, svc: m.Service) -> dict:
    return {"binary": svc.binary, "host": f"{svc.host}@{(svc.capabilities or {}).get('driver', 'file')}",
            "zone": svc.availability_zone, "status": "disabled" if svc.disabled else "enabled",
            "state": "up" if mgr.service_up(svc) else "down", "updated_at": iso(svc.updated_at),
            "disabled_reason": svc.disabled_reason, "cluster": None, "replication_status": "disabled",
            "active_backend_id": None, "frozen": False, "backend_state": "up" if mgr.service_up(svc) else "down"}


async def services(request: Request):
    require_admin(request)
    mgr = manager(request)
    q = request.query_params
    rows = await mgr.services()
    out = []
    for svc in rows:
        view = _service_view(mgr, svc)
        if q.get("host") and q["host"] not in (svc.host, view["host"]):
            continue
        if q.get("binary") and q["binary"] != svc.binary:
            continue
        out.append(view)
    return JSONResponse({"services": out})


async def service_update(request: Request):
    require_admin(request)
    action = request.path_params["action"]
    if action not in ("enable", "disable", "disable-log-reason"):
        raise NotFound(f"Unknown service action {action}.")
    body = await read_json(request)
    if not isinstance(body, dict) or not body.get("host") or not body.get("binary"):
        raise BadRequest("Invalid input received: 'host' and 'binary' are required.")
    host = str(body["host"]).split("@")[0]
    mgr = manager(request)
    disabled = action != "enable"
    reason = body.get("disabled_reason") if action == "disable-log-reason" else None
    async with mgr.db.session() as s:
        res = await s.execute(sa.update(m.Service).where(m.Service.host == host, m.Service.binary == body["binary"])
                              .values(disabled=disabled, disabled_reason=reason))
        if res.rowcount == 0:
            raise NotFound(f"Service {body['binary']} on host {body['host']} could not be found.")
    return JSONResponse({"host": body["host"], "binary": body["binary"],
                         "status": "disabled" if disabled else "enabled", "disabled": disabled,
                         "disabled_reason": reason})


EXTENSIONS = [
    ("os-availability-zone", "AvailabilityZones"), ("backups", "Backups"), ("os-extended-snapshot-attributes",
                                                                            "ExtendedSnapshotAttributes"),
    ("os-quota-sets", "Quotas"), ("os-services", "Services"), ("os-vol-host-attr", "VolumeHostAttribute"),
    ("os-vol-tenant-attr", "VolumeTenantAttribute"), ("os-vol-image-meta", "VolumeImageMetadata"),
    ("os-volume-actions", "VolumeActions"), ("os-types-manage", "TypesManage"),
    ("os-types-extra-specs", "TypesExtraSpecs"), ("os-volume-type-access", "VolumeTypeAccess"),
    ("os-admin-actions", "AdminActions"),
]


async def extensions(request: Request):
    context(request)
    return JSONResponse({"extensions": [{"alias": a, "name": n, "description": n, "links": [],
                                         "updated": "2026-01-01T00:00:00+00:00"} for a, n in EXTENSIONS]})


routes = [
    Route(f"{P}/os-quota-sets/{{target}}", quota_show, methods=["GET"]),
    Route(f"{P}/os-quota-sets/{{target}}", quota_update, methods=["PUT"]),
    Route(f"{P}/os-quota-sets/{{target}}", quota_delete, methods=["DELETE"]),
    Route(f"{P}/os-quota-sets/{{target}}/defaults", quota_defaults, methods=["GET"]),
    Route(f"{P}/limits", limits, methods=["GET"]),
    Route(f"{P}/os-availability-zone", availability_zones, methods=["GET"]),
    Route(f"{P}/os-services", services, methods=["GET"]),
    Route(f"{P}/os-services/{{action}}", service_update, methods=["PUT"]),
    Route(f"{P}/extensions", extensions, methods=["GET"]),
]
