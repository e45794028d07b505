"""Role grants (PUT/HEAD/DELETE .../roles/{role}) and /v3/role_assignments."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import BadRequest, Forbidden, NotFound
from stratus.common.web import JSONResponse, empty
from stratus.identity.api.common import collection_links, ctx, enforce, flag, manager, role_view


def _grant_handler(target_kind: str, actor_kind: str, inherited: bool = False):
    async def handler(request: Request):
        enforce(request, "identity:admin") if request.method in ("PUT", "DELETE") else None
        mgr = manager(request)
        p = request.path_params
        target_id = p.get("target", "system")
        actor_id = p["actor"]
        if request.method in ("GET", "HEAD") and "role" not in p:
            c = ctx(request)
            if not c.is_admin and not (target_kind == "project" and c.project_id == target_id and c.has_role("reader")):
                raise Forbidden(f"Policy doesn't allow listing role grants on {target_kind} {target_id}.")
            roles = await mgr.list_grants(actor_kind, actor_id, target_kind, target_id, inherited)
            return JSONResponse({"roles": [role_view(request, r) for r in roles], "links": collection_links(request)})
        role_id = p["role"]
        if request.method == "PUT":
            await mgr.grant(actor_kind, actor_id, target_kind, target_id, role_id, inherited)
        elif request.method == "DELETE":
            await mgr.revoke_grant(actor_kind, actor_id, target_kind, target_id, role_id, inherited)
        else:
            c = ctx(request)
            if not c.is_admin and not (target_kind == "project" and c.project_id == target_id):
                raise Forbidden(f"Policy doesn't allow checking role grants on {target_kind} {target_id}.")
            if not await mgr.check_grant(actor_kind, actor_id, target_kind, target_id, role_id, inherited):
                raise NotFound(f"Could not find role assignment with role: {role_id}, {actor_kind}: {actor_id}, "
                               f"{target_kind}: {target_id}.")
        return empty(204)

    return handler


async def role_assignments(request: Request):
    c = ctx(request)
    q = request.query_params
    user_id = q.get("user.id")
    group_id = q.get("group.id")
    role_id = q.get("role.id")
    project_id = q.get("scope.project.id")
    domain_id = q.get("scope.domain.id")
    system = q.get("scope.system") == "all"
    effective = flag(request, "effective")
    if effective and group_id:
        raise BadRequest("'effective' cannot be combined with 'group.id': effective assignments are per user.")
    if sum(bool(x) for x in (project_id, domain_id, system)) > 1:
        raise BadRequest("Only one of scope.project.id, scope.domain.id and scope.system may be given.")
    if not c.is_admin:
        allowed = ((project_id and project_id == c.project_id and c.has_role("reader"))
                   or (user_id and user_id == c.user_id)
                   or (domain_id and domain_id == c.domain_id and c.has_role("reader")))
        if not allowed:
            raise Forbidden("Policy doesn't allow identity:list_role_assignments to be performed: "
                            "filter on your own user or on your current project.")
    inherited = None
    if "scope.OS-INHERIT:inherited_to" in q:
        inherited = True
    mgr = manager(request)
    entries = await mgr.list_assignments(user_id=user_id, group_id=group_id, role_id=role_id,
                                         project_id=project_id, domain_id=domain_id, system=system,
                                         effective=effective, inherited=inherited)
    if flag(request, "include_names"):
        await _add_names(mgr, entries)
    base = str(request.base_url).rstrip("/")
    for e in entries:
        e["links"] = {k: f"{base}{v}" for k, v in e["links"].items()}
    return JSONResponse({"role_assignments": entries, "links": collection_links(request)})


async def _add_names(mgr, entries: list[dict]) -> None:
    cache: dict[tuple[str, str], dict] = {}

    async def named(kind: str, ident: str) -> dict:
        key = (kind, ident)
        if key not in cache:
            try:
                obj = await mgr.get(kind, ident)
            except NotFound:
                cache[key] = {"id": ident}
                return cache[key]
            info = {"id": obj.id, "name": obj.name}
            dom_id = getattr(obj, "domain_id", None)
            if dom_id:
                dom = await mgr.get("domain", dom_id)
                info["domain"] = {"id": dom.id, "name": dom.name}
            cache[key] = info
        return dict(cache[key])

    for e in entries:
        e["role"] = await named("role", e["role"]["id"])
        for kind in ("user", "group"):
            if kind in e:
                e[kind] = await named(kind, e[kind]["id"])
        scope = e["scope"]
        for kind in ("project", "domain"):
            if kind in scope:
                scope[kind] = await named(kind, scope[kind]["id"])


def _grant_routes() -> list[Route]:
    out = []
    for target_kind, prefix in (("project", "/v3/projects/{target}"), ("domain", "/v3/domains/{target}"),
                                ("system", "/v3/system")):
        for actor_kind in ("user", "group"):
            base = f"{prefix}/{actor_kind}s/{{actor}}/roles"
            handler = _grant_handler(target_kind, actor_kind)
            out.append(Route(base, handler, methods=["GET", "HEAD"]))
            out.append(Route(base + "/{role}", handler, methods=["PUT", "GET", "HEAD", "DELETE"]))
            if target_kind != "system":
                inh = _grant_handler(target_kind, actor_kind, inherited=True)
                ibase = f"/v3/OS-INHERIT{prefix.removeprefix('/v3')}/{actor_kind}s/{{actor}}/roles"
                out.append(Route(ibase + "/inherited_to_projects", inh, methods=["GET", "HEAD"]))
                out.append(Route(ibase + "/{role}/inherited_to_projects", inh, methods=["PUT", "GET", "HEAD", "DELETE"]))
    return out


routes = [Route("/v3/role_assignments", role_assignments, methods=["GET", "HEAD"]), *_grant_routes()]
