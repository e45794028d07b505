"""/os-server-groups: affinity and anti-affinity groups (hard and soft)."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.db import new_uuid
from stratus.common.errors import BadRequest, NotFound
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.compute import models as m
from stratus.compute.api.common import at_least, ctx, enforce, name_field, query_bool, svc

P = "/v2.1"


def group_view(request: Request, g: m.ServerGroup, members: list[str]) -> dict:
    v = {"id": g.id, "name": g.name, "members": members}
    if at_least(request, "2.64"):
        v.update(policy=g.policy, rules=dict(g.rules or {}))
    else:
        v.update(policies=[g.policy], metadata={})
    if at_least(request, "2.13"):
        v.update(project_id=g.project_id, user_id=g.user_id)
    return v


async def _members(s, group_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {gid: [] for gid in group_ids}
    if group_ids:
        rows = await s.execute(sa.select(m.ServerGroupMember.group_id, m.ServerGroupMember.instance_id)
                               .where(m.ServerGroupMember.group_id.in_(group_ids)))
        for gid, iid in rows:
            out[gid].append(iid)
    return out


async def list_groups(request: Request):
    c = enforce(request, "compute:reader")
    q = sa.select(m.ServerGroup).order_by(m.ServerGroup.created_at)
    if not (c.is_admin and query_bool(request, "all_projects", False)):
        q = q.where(m.ServerGroup.project_id == c.project_id)
    async with svc(request).db.reader() as s:
        rows = list((await s.execute(q)).scalars())
        offset = int(request.query_params.get("offset", 0) or 0)
        limit = request.query_params.get("limit")
        rows = rows[offset:offset + int(limit)] if limit else rows[offset:]
        members = await _members(s, [g.id for g in rows])
    return JSONResponse({"server_groups": [group_view(request, g, members[g.id]) for g in rows]})


POLICIES_215 = {"affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"}


async def create_group(request: Request):
    c = enforce(request, "compute:member")
    body = require_object(await read_json(request), "server_group")
    name = name_field(body, "name", where="server_group")
    allowed = POLICIES_215 if at_least(request, "2.15") else {"affinity", "anti-affinity"}
    rules = {}
    if at_least(request, "2.64"):
        if "policies" in body:
            raise BadRequest("Invalid input for field/attribute server_group: use 'policy' (a string) from 2.64 on")
        policy = body.get("policy")
        rules = body.get("rules") or {}
        if not isinstance(rules, dict):
            raise BadRequest("Invalid input for field/attribute rules: must be an object")
        if rules:
            if policy != "anti-affinity" or set(rules) - {"max_server_per_host"}:
                raise BadRequest("Only the anti-affinity policy takes a rule, max_server_per_host")
            v = rules["max_server_per_host"]
            if isinstance(v, str) and v.isdigit():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise BadRequest("max_server_per_host must be a positive integer")
            rules = {"max_server_per_host": v}
    else:
        policies = body.get("policies")
        if not isinstance(policies, list) or len(policies) != 1:
            raise BadRequest("Invalid input for field/attribute policies: exactly one policy is required")
        policy = policies[0]
    if policy not in allowed:
        raise BadRequest(f"Invalid server group policy {policy!r}: choose one of {', '.join(sorted(allowed))}")
    state = svc(request)
    limits = await state.quotas.limits(c.project_id)
    await state.quotas.ensure_row(c.project_id)
    g = m.ServerGroup(id=new_uuid(), name=name, project_id=c.project_id, user_id=c.user_id, policy=policy, rules=rules)
    async with state.db.session() as s:
        await state.quotas.reserve(s, c.project_id, {"server_groups": 1}, limits)
        s.add(g)
    return JSONResponse({"server_group": group_view(request, g, [])})


async def _get(request: Request) -> m.ServerGroup:
    c = ctx(request)
    async with svc(request).db.reader() as s:
        g = await s.get(m.ServerGroup, request.path_params["id"])
    if g is None or (g.project_id != c.project_id and not c.is_admin):
        raise NotFound(f"Server group {request.path_params['id']} could not be found.")
    return g


async def show_group(request: Request):
    enforce(request, "compute:reader")
    g = await _get(request)
    async with svc(request).db.reader() as s:
        members = await _members(s, [g.id])
    return JSONResponse({"server_group": group_view(request, g, members[g.id])})


async def delete_group(request: Request):
    enforce(request, "compute:member")
    g = await _get(request)
    state = svc(request)
    async with state.db.session() as s:
        await s.execute(sa.delete(m.ServerGroupMember).where(m.ServerGroupMember.group_id == g.id))
        await s.execute(sa.delete(m.ServerGroup).where(m.ServerGroup.id == g.id))
        await state.quotas.release(s, g.project_id, {"server_groups": 1})
    return empty(204)


routes = [
    Route(f"{P}/os-server-groups", list_groups, methods=["GET"]),
    Route(f"{P}/os-server-groups", create_group, methods=["POST"]),
    Route(f"{P}/os-server-groups/{{id}}", show_group, methods=["GET"]),
    Route(f"{P}/os-server-groups/{{id}}", delete_group, methods=["DELETE"]),
]
