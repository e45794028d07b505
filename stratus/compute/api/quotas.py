"""Quota sets, absolute limits, availability zones and simple tenant usage."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.db import utcnow
from stratus.common.errors import BadRequest
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.compute import models as m
from stratus.compute.api.common import at_least, ctx, enforce, iso_micro, parse_time, svc
from stratus.compute.settings import DEFAULT_QUOTAS

P = "/v2.1"

# Shown with fixed values for old microversions (nova-network and personality quotas are gone).
LEGACY_NETWORK = {"fixed_ips": -1, "floating_ips": 10, "security_groups": 10, "security_group_rules": 20,
                  "networks": 10}
LEGACY_FILES = {"injected_files": 5, "injected_file_content_bytes": 10240, "injected_file_path_bytes": 255}


def _shape(request: Request, values: dict, wrap=lambda k, v: v) -> dict:
    out = {k: wrap(k, values.get(k, DEFAULT_QUOTAS[k])) for k in DEFAULT_QUOTAS}
    if not at_least(request, "2.57"):
        out.update({k: wrap(k, v) for k, v in LEGACY_FILES.items()})
    if not at_least(request, "2.36"):
        out.update({k: wrap(k, v) for k, v in LEGACY_NETWORK.items()})
    return out


def _project(request: Request, action: str = "compute:quotas:show") -> str:
    project_id = request.path_params["project_id"]
    enforce(request, action, project_id=project_id)
    return project_id


async def show_quota(request: Request):
    project_id = _project(request)
    limits = await svc(request).quotas.limits(project_id)
    return JSONResponse({"quota_set": {"id": project_id, **_shape(request, limits)}})


async def show_quota_detail(request: Request):
    project_id = _project(request)
    service = svc(request)
    limits = await service.quotas.limits(project_id)
    user_id = request.query_params.get("user_id") or ctx(request).user_id
    used = await service.quotas.usage(project_id, user_id)
    body = _shape(request, limits, lambda k, v: {"limit": v, "in_use": used.get(k, 0), "reserved": 0})
    return JSONResponse({"quota_set": {"id": project_id, **body}})


async def show_defaults(request: Request):
    project_id = request.path_params["project_id"]
    enforce(request, "compute:reader")
    return JSONResponse({"quota_set": {"id": project_id, **_shape(request, await svc(request).quotas.defaults())}})


async def update_quota(request: Request):
    project_id = _project(request, "compute:quotas:update")
    body = require_object(await read_json(request), "quota_set")
    accepted = set(DEFAULT_QUOTAS)
    if not at_least(request, "2.57"):
        accepted |= set(LEGACY_FILES)
    if not at_least(request, "2.36"):
        accepted |= set(LEGACY_NETWORK)
    values = {}
    for key, raw in body.items():
        if key in ("force", "id"):
            continue
        if key not in accepted:
            raise BadRequest(f"Invalid input for field/attribute quota_set. Additional properties are not allowed "
                             f"({key!r} was unexpected)")
        if isinstance(raw, str):
            try:
                raw = int(raw)
            except ValueError:
                raise BadRequest(f"Invalid input for field/attribute {key}. Value: {raw!r} is not an integer") from None
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < -1:
            raise BadRequest(f"Invalid input for field/attribute {key}. Value: {raw!r}: must be an integer >= -1")
        if key in DEFAULT_QUOTAS:
            values[key] = raw
    service = svc(request)
    if not body.get("force"):
        used = await service.quotas.usage(project_id, ctx(request).user_id)
        for key, limit in values.items():
            if limit >= 0 and used.get(key, 0) > limit:
                raise BadRequest(f"Quota limit {limit} for {key} must be greater than or equal to already used "
                                 f"and reserved {used[key]}.")
    await service.quotas.set_limits(project_id, values)
    limits = await service.quotas.limits(project_id)
    return JSONResponse({"quota_set": _shape(request, limits)})


async def delete_quota(request: Request):
    project_id = _project(request, "compute:quotas:update")
    await svc(request).quotas.reset(project_id)
    return empty(202)


async def show_limits(request: Request):
    c = enforce(request, "compute:reader")
    project_id = c.project_id
    if request.query_params.get("tenant_id") and request.query_params["tenant_id"] != project_id:
        enforce(request, "compute:admin")
        project_id = request.query_params["tenant_id"]
    service = svc(request)
    limits = await service.quotas.limits(project_id)
    used = await service.quotas.usage(project_id)
    absolute = {
        "maxTotalCores": limits["cores"], "maxTotalInstances": limits["instances"],
        "maxTotalRAMSize": limits["ram"], "maxTotalKeypairs": limits["key_pairs"],
        "maxServerMeta": limits["metadata_items"], "maxServerGroups": limits["server_groups"],
        "maxServerGroupMembers": limits["server_group_members"],
        "totalCoresUsed": used["cores"], "totalInstancesUsed": used["instances"], "totalRAMUsed": used["ram"],
        "totalServerGroupsUsed": used["server_groups"],
    }
    if not at_least(request, "2.39"):
        absolute["maxImageMeta"] = limits["metadata_items"]
    if not at_least(request, "2.57"):
        absolute["maxPersonality"] = LEGACY_FILES["injected_files"]
        absolute["maxPersonalitySize"] = LEGACY_FILES["injected_file_content_bytes"]
    if not at_least(request, "2.36"):
        absolute.update({"maxTotalFloatingIps": LEGACY_NETWORK["floating_ips"],
                         "maxSecurityGroups": LEGACY_NETWORK["security_groups"],
                         "maxSecurityGroupRules": LEGACY_NETWORK["security_group_rules"],
                         "totalFloatingIpsUsed": 0, "totalSecurityGroupsUsed": 0})
    return JSONResponse({"limits": {"rate": [], "absolute": absolute}})


# ---- availability zones ----------------------------------------------------------------------

async def _zones(request: Request) -> tuple[dict, list]:
    service = svc(request)
    async with service.db.reader() as s:
        rows = list((await s.execute(sa.select(m.Service))).scalars())
    return service, rows


async def list_zones(request: Request):
    enforce(request, "compute:reader")
    service, rows = await _zones(request)
    zones: dict[str, bool] = {}
    for r in rows:
        if r.binary != "nova-compute":
            continue
        up = service.is_up(r)
        zones[r.zone] = zones.get(r.zone, False) or (up and not r.disabled)
    if not zones:
        zones[service.settings.availability_zone] = False
    return JSONResponse({"availabilityZoneInfo": [
        {"zoneName": z, "zoneState": {"available": ok}, "hosts": None} for z, ok in sorted(zones.items())]})


async def list_zones_detail(request: Request):
    enforce(request, "compute:admin")
    service, rows = await _zones(request)
    zones: dict[str, dict] = {}
    for r in rows:
        zone = r.zone if r.binary == "nova-compute" else "internal"
        z = zones.setdefault(zone, {"available": False, "hosts": {}})
        up = service.is_up(r)
        z["hosts"].setdefault(r.host, {})[r.binary] = {"available": up, "active": not r.disabled,
                                                       "updated_at": iso_micro(r.updated_at)}
        z["available"] = z["available"] or (up and not r.disabled)
    return JSONResponse({"availabilityZoneInfo": [
        {"zoneName": name, "zoneState": {"available": z["available"]}, "hosts": z["hosts"]}
        for name, z in sorted(zones.items())]})


# ---- simple tenant usage -------------------------------------------------------------------

def _period(request: Request) -> tuple[dt.datetime, dt.datetime]:
    now = utcnow()
    start = parse_time(request.query_params["start"], "start") if request.query_params.get("start") else now - dt.timedelta(days=1)
    end = parse_time(request.query_params["end"], "end") if request.query_params.get("end") else now
    if end > now:
        end = now
    if start > end:
        raise BadRequest("Invalid start time: the start must be before the end of the period")
    return start, end


def _usage_rows(instances: list[m.Instance], start: dt.datetime, end: dt.datetime, detailed: bool) -> list[dict]:
    by_project: dict[str, dict] = {}
    for inst in instances:
        began = inst.launched_at or inst.created_at
        ended = inst.terminated_at or end
        lo, hi = max(began, start), min(ended, end)
        if hi <= lo:
            continue
        hours = (hi - lo).total_seconds() / 3600.0
        flavor = inst.flavor or {}
        local_gb = (flavor.get("disk") or 0) + (flavor.get("ephemeral") or 0)
        u = by_project.setdefault(inst.project_id, {
            "tenant_id": inst.project_id, "start": iso_micro(start), "stop": iso_micro(end), "total_hours": 0.0,
            "total_vcpus_usage": 0.0, "total_memory_mb_usage": 0.0, "total_local_gb_usage": 0.0,
            "server_usages": []})
        u["total_hours"] += hours
        u["total_vcpus_usage"] += hours * inst.vcpus
        u["total_memory_mb_usage"] += hours * inst.memory_mb
        u["total_local_gb_usage"] += hours * local_gb
        if detailed:
            state = "terminated" if inst.deleted else inst.vm_state
            u["server_usages"].append({
                "instance_id": inst.id, "name": inst.name, "hours": hours, "memory_mb": inst.memory_mb,
                "local_gb": local_gb, "vcpus": inst.vcpus, "tenant_id": inst.project_id,
                "flavor": flavor.get("name"), "started_at": iso_micro(began),
                "ended_at": iso_micro(inst.terminated_at), "state": state,
                "uptime": int((hi - lo).total_seconds())})
    for u in by_project.values():
        if not detailed:
            u.pop("server_usages")
    return list(by_project.values())


async def _instances_in(request: Request, start, end, project_id: str | None) -> list[m.Instance]:
    q = sa.select(m.Instance).where(m.Instance.created_at <= end,
                                    sa.or_(m.Instance.terminated_at.is_(None), m.Instance.terminated_at >= start))
    if project_id:
        q = q.where(m.Instance.project_id == project_id)
    async with svc(request).db.reader() as s:
        return list((await s.execute(q)).scalars())


async def list_usage(request: Request):
    enforce(request, "compute:usage:all")
    start, end = _period(request)
    detailed = request.query_params.get("detailed", "0").lower() in ("1", "true", "yes")
    rows = _usage_rows(await _instances_in(request, start, end, None), start, end, detailed)
    return JSONResponse({"tenant_usages": rows})


async def show_usage(request: Request):
    project_id = request.path_params["project_id"]
    enforce(request, "compute:usage:show", project_id=project_id)
    start, end = _period(request)
    rows = _usage_rows(await _instances_in(request, start, end, project_id), start, end, True)
    return JSONResponse({"tenant_usage": rows[0] if rows else {}})


routes = [
    Route(f"{P}/os-quota-sets/{{project_id}}", show_quota, methods=["GET"]),
    Route(f"{P}/os-quota-sets/{{project_id}}", update_quota, methods=["PUT"]),
    Route(f"{P}/os-quota-sets/{{project_id}}", delete_quota, methods=["DELETE"]),
    Route(f"{P}/os-quota-sets/{{project_id}}/detail", show_quota_detail, methods=["GET"]),
    Route(f"{P}/os-quota-sets/{{project_id}}/defaults", show_defaults, methods=["GET"]),
    Route(f"{P}/limits", show_limits, methods=["GET"]),
    Route(f"{P}/os-availability-zone", list_zones, methods=["GET"]),
    Route(f"{P}/os-availability-zone/detail", list_zones_detail, methods=["GET"]),
    Route(f"{P}/os-simple-tenant-usage", list_usage, methods=["GET"]),
    Route(f"{P}/os-simple-tenant-usage/{{project_id}}", show_usage, methods=["GET"]),
]
