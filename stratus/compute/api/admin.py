"""Operator resources: hypervisors, services, aggregates, migrations (admin only)."""

from __future__ import annotations


import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.db import new_uuid, utcnow
from stratus.common.errors import BadRequest, Conflict, NotFound
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.compute import models as m
from stratus.compute.api.common import at_least, enforce, field, iso_micro, name_field, svc

P = "/v2.1"


# ---- hypervisors --------------------------------------------------------------------------

async def _nodes_and_services(request: Request):
    async with svc(request).db.reader() as s:
        nodes = list((await s.execute(sa.select(m.ComputeNode).order_by(m.ComputeNode.host))).scalars())
        services = {r.host: r for r in (await s.execute(
            sa.select(m.Service).where(m.Service.binary == "nova-compute"))).scalars()}
    return nodes, services


def _hypervisor_view(request: Request, n: m.ComputeNode, svc_row, detail: bool, servers=None) -> dict:
    state = svc(request)
    up = svc_row is not None and state.is_up(svc_row)
    v = {"id": n.id, "hypervisor_hostname": n.hypervisor_hostname, "state": "up" if up else "down",
         "status": "disabled" if svc_row is not None and svc_row.disabled else "enabled"}
    if detail:
        v.update({"hypervisor_type": n.hypervisor_type, "hypervisor_version": n.hypervisor_version,
                  "host_ip": n.host_ip,
                  "service": {"host": n.host, "id": svc_row.id if svc_row else None,
                              "disabled_reason": svc_row.disabled_reason if svc_row else None}})
        if at_least(request, "2.88"):
            v["uptime"] = None
        else:
            v.update({"vcpus": n.vcpus, "memory_mb": n.memory_mb, "local_gb": n.local_gb,
                      "vcpus_used": n.vcpus_used, "memory_mb_used": n.memory_mb_used,
                      "local_gb_used": n.local_gb_used, "free_ram_mb": n.memory_mb - n.memory_mb_used,
                      "free_disk_gb": n.local_gb - n.local_gb_used, "current_workload": 0,
                      "running_vms": n.running_vms, "disk_available_least": n.local_gb - n.local_gb_used,
                      "cpu_info": {"arch": n.cpu_arch, "model": "", "vendor": "", "features": [],
                                   "topology": {}}})
    if servers is not None:
        v["servers"] = servers
    return v


async def _servers_on(request: Request, hosts: list[str]) -> dict[str, list]:
    async with svc(request).db.reader() as s:
        rows = await s.execute(sa.select(m.Instance.host, m.Instance.id, m.Instance.name).where(
            m.Instance.host.in_(hosts), m.Instance.deleted.is_(False)))
        out: dict[str, list] = {h: [] for h in hosts}
        for host, iid, name in rows:
            out[host].append({"uuid": iid, "name": f"instance-{iid[:8]}"})
    return out


async def _list_hypervisors(request: Request, detail: bool):
    enforce(request, "compute:hosts")
    nodes, services = await _nodes_and_services(request)
    pattern = request.query_params.get("hypervisor_hostname_pattern")
    if pattern:
        nodes = [n for n in nodes if pattern in n.hypervisor_hostname]
        if not nodes:
            raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
    marker = request.query_params.get("marker")
    if marker:
        ids = [n.id for n in nodes]
        if marker not in ids:
            raise BadRequest(f"marker [{marker}] not found")
        nodes = nodes[ids.index(marker) + 1:]
    limit = request.query_params.get("limit")
    if limit:
        try:
            nodes = nodes[:int(limit)]
        except ValueError:
            raise BadRequest(f"Invalid limit {limit!r}") from None
    with_servers = request.query_params.get("with_servers", "").lower() in ("1", "true", "yes")
    servers = await _servers_on(request, [n.host for n in nodes]) if with_servers else None
    items = [_hypervisor_view(request, n, services.get(n.host), detail,
                              servers.get(n.host) if servers is not None else None) for n in nodes]
    body = {"hypervisors": items}
    if limit and len(items) == int(limit) and items:
        from stratus.common.pagination import next_link

        body["hypervisors_links"] = [{"rel": "next", "href": next_link(request, items[-1]["id"])}]
    return JSONResponse(body)


async def list_hypervisors(request: Request):
    return await _list_hypervisors(request, False)


async def list_hypervisors_detail(request: Request):
    return await _list_hypervisors(request, True)


async def show_hypervisor(request: Request):
    enforce(request, "compute:hosts")
    nodes, services = await _nodes_and_services(request)
    hid = request.path_params["id"]
    node = next((n for n in nodes if n.id == hid), None)
    if node is None:
        raise NotFound(f"Hypervisor with ID '{hid}' could not be found.")
    with_servers = request.query_params.get("with_servers", "").lower() in ("1", "true", "yes")
    servers = (await _servers_on(request, [node.host]))[node.host] if with_servers else None
    return JSONResponse({"hypervisor": _hypervisor_view(request, node, services.get(node.host), True, servers)})


async def hypervisor_statistics(request: Request):
    enforce(request, "compute:hosts")
    if at_least(request, "2.88"):
        raise NotFound("os-hypervisors/statistics was removed in microversion 2.88")
    nodes, _ = await _nodes_and_services(request)
    stats = {"count": len(nodes), "vcpus": sum(n.vcpus for n in nodes), "memory_mb": sum(n.memory_mb for n in nodes),
             "local_gb": sum(n.local_gb for n in nodes), "vcpus_used": sum(n.vcpus_used for n in nodes),
             "memory_mb_used": sum(n.memory_mb_used for n in nodes),
             "local_gb_used": sum(n.local_gb_used for n in nodes),
             "running_vms": sum(n.running_vms for n in nodes), "current_workload": 0}
    stats["free_ram_mb"] = stats["memory_mb"] - stats["memory_mb_used"]
    stats["free_disk_gb"] = stats["local_gb"] - stats["local_gb_used"]
    stats["disk_available_least"] = stats["free_disk_gb"]
    return JSONResponse({"hypervisor_statistics": stats})


# ---- services --------------------------------------------------------------------------------

def _service_view(request: Request, r: m.Service) -> dict:
    v = {"id": r.id, "binary": r.binary, "host": r.host, "zone": r.zone if r.binary == "nova-compute" else "internal",
         "status": "disabled" if r.disabled else "enabled", "state": "up" if svc(request).is_up(r) else "down",
         "updated_at": iso_micro(r.last_seen_up), "disabled_reason": r.disabled_reason}
    if at_least(request, "2.11"):
        v["forced_down"] = r.forced_down
    return v


async def list_services(request: Request):
    enforce(request, "compute:hosts")
    q = sa.select(m.Service).order_by(m.Service.binary, m.Service.host)
    if request.query_params.get("host"):
        q = q.where(m.Service.host == request.query_params["host"])
    if request.query_params.get("binary"):
        q = q.where(m.Service.binary == request.query_params["binary"])
    async with svc(request).db.reader() as s:
        rows = list((await s.execute(q)).scalars())
    return JSONResponse({"services": [_service_view(request, r) for r in rows]})


async def _touch_node(s, host: str) -> None:
    # Schedulers refresh hosts by updated_at: make them re-read this host's service flags.
    await s.execute(sa.update(m.ComputeNode).where(m.ComputeNode.host == host).values(updated_at=utcnow()))


async def update_service(request: Request):
    enforce(request, "compute:hosts")
    sid = request.path_params["id"]
    if not at_least(request, "2.53"):
        return await _legacy_service_action(request, sid)
    body = await read_json(request)
    if not isinstance(body, dict) or not body or set(body) - {"status", "disabled_reason", "forced_down"}:
        raise BadRequest("The body may set 'status', 'disabled_reason' and 'forced_down' only")
    async with svc(request).db.session() as s:
        r = await s.get(m.Service, sid)
        if r is None:
            raise NotFound(f"Service {sid} could not be found.")
        if "status" in body:
            if body["status"] not in ("enabled", "disabled"):
                raise BadRequest("status must be 'enabled' or 'disabled'")
            r.disabled = body["status"] == "disabled"
            r.disabled_reason = body.get("disabled_reason") if r.disabled else None
        elif "disabled_reason" in body:
            raise BadRequest("disabled_reason can only be given with status 'disabled'")
        if "forced_down" in body:
            if not isinstance(body["forced_down"], bool):
                raise BadRequest("forced_down must be a boolean")
            r.forced_down = body["forced_down"]
        r.updated_at = utcnow()
        await _touch_node(s, r.host)
    return JSONResponse({"service": _service_view(request, r)})


async def _legacy_service_action(request: Request, action: str):
    body = await read_json(request)
    if not isinstance(body, dict) or "host" not in body or "binary" not in body:
        raise BadRequest("The body needs 'host' and 'binary'")
    async with svc(request).db.session() as s:
        r = await s.scalar(sa.select(m.Service).where(m.Service.host == body["host"],
                                                      m.Service.binary == body["binary"]))
        if r is None:
            raise NotFound(f"Service {body['binary']} on host {body['host']} could not be found.")
        if action == "enable":
            r.disabled, r.disabled_reason = False, None
        elif action == "disable":
            r.disabled = True
        elif action == "disable-log-reason":
            r.disabled, r.disabled_reason = True, body.get("disabled_reason")
        elif action == "force-down":
            r.forced_down = bool(body.get("forced_down"))
        else:
            raise NotFound(f"Unknown service action {action}")
        r.updated_at = utcnow()
        await _touch_node(s, r.host)
        out = {"host": r.host, "binary": r.binary, "status": "disabled" if r.disabled else "enabled"}
        if action == "disable-log-reason":
            out["disabled_reason"] = r.disabled_reason
        if action == "force-down":
            out["forced_down"] = r.forced_down
    return JSONResponse({"service": out})


async def delete_service(request: Request):
    enforce(request, "compute:hosts")
    sid = request.path_params["id"]
    async with svc(request).db.session() as s:
        r = await s.get(m.Service, sid)
        if r is None:
            raise NotFound(f"Service {sid} could not be found.")
        if r.binary == "nova-compute":
            busy = await s.scalar(sa.select(sa.func.count()).select_from(m.Instance).where(
                m.Instance.host == r.host, m.Instance.deleted.is_(False)))
            if busy:
                raise Conflict(f"Unable to delete compute service that is hosting instances ({busy} on {r.host}).")
            await s.execute(sa.delete(m.ComputeNode).where(m.ComputeNode.host == r.host))
        await s.delete(r)
    return empty(204)


# ---- aggregates ------------------------------------------------------------------------------

def _agg_view(request: Request, a: m.Aggregate) -> dict:
    meta = dict(a.metadata_ or {})
    if a.availability_zone:
        meta["availability_zone"] = a.availability_zone
    v = {"id": a.id, "name": a.name, "availability_zone": a.availability_zone, "hosts": list(a.hosts or []),
         "metadata": meta, "created_at": iso_micro(a.created_at), "updated_at": iso_micro(a.updated_at),
         "deleted": False, "deleted_at": None}
    if at_least(request, "2.41"):
        v["uuid"] = a.uuid
    return v


async def _sync_zones(s, hosts: set[str], default_zone: str) -> None:
    """A host's availability zone is that of an aggregate it belongs to (or the default)."""
    if not hosts:
        return
    aggs = list((await s.execute(sa.select(m.Aggregate))).scalars())
    for host in hosts:
        zone = next((a.availability_zone for a in aggs if a.availability_zone and host in (a.hosts or [])),
                    default_zone)
        await s.execute(sa.update(m.Service).where(m.Service.host == host, m.Service.binary == "nova-compute")
                        .values(zone=zone, updated_at=utcnow()))
        await _touch_node(s, host)


async def _agg(s, request: Request) -> m.Aggregate:
    raw = request.path_params["id"]
    a = None
    if raw.isdigit():
        a = await s.get(m.Aggregate, int(raw))
    if a is None:
        a = await s.scalar(sa.select(m.Aggregate).where(m.Aggregate.uuid == raw))
    if a is None:
        raise NotFound(f"Aggregate {raw} could not be found.")
    return a


async def list_aggregates(request: Request):
    enforce(request, "compute:hosts")
    async with svc(request).db.reader() as s:
        rows = list((await s.execute(sa.select(m.Aggregate).order_by(m.Aggregate.id))).scalars())
    return JSONResponse({"aggregates": [_agg_view(request, a) for a in rows]})


async def create_aggregate(request: Request):
    enforce(request, "compute:hosts")
    body = require_object(await read_json(request), "aggregate")
    name = name_field(body, "name", where="aggregate")
    az = field(body, "availability_zone", str, nullable=True)
    a = m.Aggregate(uuid=new_uuid(), name=name, availability_zone=az or None, metadata_={}, hosts=[])
    try:
        async with svc(request).db.session() as s:
            if await s.scalar(sa.select(m.Aggregate.id).where(m.Aggregate.name == name)):
                raise Conflict(f"Aggregate {name} already exists.")
            s.add(a)
    except IntegrityError:
        raise Conflict(f"Aggregate {name} already exists.") from None
    return JSONResponse({"aggregate": _agg_view(request, a)})


async def show_aggregate(request: Request):
    enforce(request, "compute:hosts")
    async with svc(request).db.reader() as s:
        a = await _agg(s, request)
    return JSONResponse({"aggregate": _agg_view(request, a)})


async def update_aggregate(request: Request):
    enforce(request, "compute:hosts")
    body = require_object(await read_json(request), "aggregate")
    state = svc(request)
    async with state.db.session() as s:
        a = await _agg(s, request)
        if "name" in body:
            a.name = name_field(body, "name")
        if "availability_zone" in body:
            a.availability_zone = field(body, "availability_zone", str, nullable=True) or None
            await s.flush()
            await _sync_zones(s, set(a.hosts or []), state.settings.availability_zone)
        a.updated_at = utcnow()
    return JSONResponse({"aggregate": _agg_view(request, a)})


async def delete_aggregate(request: Request):
    enforce(request, "compute:hosts")
    async with svc(request).db.session() as s:
        a = await _agg(s, request)
        if a.hosts:
            raise BadRequest(f"Aggregate {a.id} still has hosts; remove them first.")
        await s.delete(a)
    return empty(200)


async def aggregate_action(request: Request):
    enforce(request, "compute:hosts")
    body = await read_json(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("The action body must have exactly one of add_host, remove_host, set_metadata")
    action, args = next(iter(body.items()))
    if not isinstance(args, dict):
        raise BadRequest(f"{action} takes an object")
    state = svc(request)
    async with state.db.session() as s:
        a = await _agg(s, request)
        hosts = list(a.hosts or [])
        if action == "add_host":
            host = field(args, "host", str, required=True)
            known = await s.scalar(sa.select(m.Service.id).where(m.Service.host == host,
                                                                 m.Service.binary == "nova-compute"))
            if not known:
                raise NotFound(f"Compute host {host} could not be found.")
            if host in hosts:
                raise Conflict(f"Aggregate {a.id} already has host {host}.")
            if a.availability_zone:
                others = (await s.execute(sa.select(m.Aggregate).where(m.Aggregate.id != a.id))).scalars()
                for o in others:
                    if host in (o.hosts or []) and o.availability_zone and o.availability_zone != a.availability_zone:
                        raise Conflict(f"Host {host} is already in availability zone {o.availability_zone}")
            a.hosts = hosts + [host]
            await s.flush()
            await _sync_zones(s, {host}, state.settings.availability_zone)
        elif action == "remove_host":
            host = field(args, "host", str, required=True)
            if host not in hosts:
                raise NotFound(f"Cannot remove host {host} from aggregate {a.id}: it is not a member.")
            a.hosts = [h for h in hosts if h != host]
            await s.flush()
            await _sync_zones(s, {host}, state.settings.availability_zone)
        elif action == "set_metadata":
            meta = args.get("metadata")
            if not isinstance(meta, dict):
                raise BadRequest("set_metadata needs {\"metadata\": {...}}")
            merged = dict(a.metadata_ or {})
            for k, v in meta.items():
                if k == "availability_zone":
                    a.availability_zone = v or None
                elif v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = str(v)
            a.metadata_ = merged
            await s.flush()
            await _sync_zones(s, set(hosts), state.settings.availability_zone)
            for h in hosts:
                await _touch_node(s, h)
        else:
            raise BadRequest(f"Unknown aggregate action {action}: use add_host, remove_host or set_metadata")
        a.updated_at = utcnow()
    return JSONResponse({"aggregate": _agg_view(request, a)})


# ---- migrations ------------------------------------------------------------------------------

async def list_migrations(request: Request):
    enforce(request, "compute:hosts")
    q = sa.select(m.Migration).order_by(m.Migration.id.desc())
    if request.query_params.get("instance_uuid"):
        q = q.where(m.Migration.instance_id == request.query_params["instance_uuid"])
    async with svc(request).db.reader() as s:
        rows = list((await s.execute(q)).scalars())
    out = []
    for r in rows:
        v = {"id": r.id, "instance_uuid": r.instance_id, "source_compute": r.source_host,
             "dest_compute": r.dest_host, "source_node": r.source_host, "dest_node": r.dest_host,
             "dest_host": r.dest_host, "old_instance_type_id": r.old_flavor_id,
             "new_instance_type_id": r.new_flavor_id, "status": r.status, "created_at": iso_micro(r.created_at),
             "updated_at": iso_micro(r.updated_at)}
        if at_least(request, "2.23"):
            v["migration_type"] = r.migration_type
        if at_least(request, "2.59"):
            v["uuid"] = r.uuid
        if at_least(request, "2.80"):
            v.update(project_id=r.project_id, user_id=r.user_id)
        out.append(v)
    return JSONResponse({"migrations": out})


routes = [
    Route(f"{P}/os-hypervisors", list_hypervisors, methods=["GET"]),
    Route(f"{P}/os-hypervisors/detail", list_hypervisors_detail, methods=["GET"]),
    Route(f"{P}/os-hypervisors/statistics", hypervisor_statistics, methods=["GET"]),
    Route(f"{P}/os-hypervisors/{{id}}", show_hypervisor, methods=["GET"]),
    Route(f"{P}/os-services", list_services, methods=["GET"]),
    Route(f"{P}/os-services/{{id}}", update_service, methods=["PUT"]),
    Route(f"{P}/os-services/{{id}}", delete_service, methods=["DELETE"]),
    Route(f"{P}/os-aggregates", list_aggregates, methods=["GET"]),
    Route(f"{P}/os-aggregates", create_aggregate, methods=["POST"]),
    Route(f"{P}/os-aggregates/{{id}}", show_aggregate, methods=["GET"]),
    Route(f"{P}/os-aggregates/{{id}}", update_aggregate, methods=["PUT"]),
    Route(f"{P}/os-aggregates/{{id}}", delete_aggregate, methods=["DELETE"]),
    Route(f"{P}/os-aggregates/{{id}}/action", aggregate_action, methods=["POST"]),
    Route(f"{P}/os-migrations", list_migrations, methods=["GET"]),
]

__all__ = ["routes"]
