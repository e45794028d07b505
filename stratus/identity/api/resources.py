"""/v3 directory resources: domains, projects, users, groups, roles and implied roles."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import BadRequest, Forbidden, NotFound
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.identity.api.common import (collection_links, ctx, domain_view, enforce, extra_fields, field,
                                         group_view, manager, project_view, query_bool, role_view, user_view)
from stratus.identity.manager import DEFAULT_DOMAIN_ID


def _filters(request: Request, names: tuple[str, ...]) -> dict:
    out = {}
    for n in names:
        if n == "enabled":
            v = query_bool(request, "enabled")
            if v is not None:
                out["enabled"] = v
        elif n in request.query_params:
            out[n] = request.query_params[n]
    return out


def _text_changes(body: dict, where: str, keys=("name", "description"), kinds: dict | None = None) -> dict:
    """Fields an update sets; a null description (as OSC sends) means an empty one."""
    kinds = kinds or {}
    changes = {k: field(body, k, kinds.get(k, str), where=where, nullable=k == "description") for k in keys
               if k in body}
    if "description" in changes and changes["description"] is None:
        changes["description"] = ""
    return changes


def _listed(request: Request, key: str, items: list) -> JSONResponse:
    return JSONResponse({key: items, "links": collection_links(request)})


# ---- domains -------------------------------------------------------------------------------

DOMAIN_FIELDS = {"id", "name", "description", "enabled", "links", "tags", "options"}


async def list_domains(request: Request):
    c = ctx(request)
    mgr = manager(request)
    filters = _filters(request, ("name", "enabled"))
    items = await mgr.list("domain", filters)
    if not c.is_admin:
        # Non-admins see the domains they are scoped to, which is what OSC's lookups need.
        mine = {c.domain_id, c.project_domain_id, c.user_domain_id}
        items = [d for d in items if d.id in mine]
    return _listed(request, "domains", [domain_view(request, d) for d in items])


async def create_domain(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "domain")
    d = await manager(request).create_domain(
        name=field(body, "name", str, required=True, where="domain"),
        description=field(body, "description", str, default="", nullable=True, where="domain") or "",
        enabled=field(body, "enabled", bool, default=True, where="domain"),
        id=field(body, "explicit_domain_id", str, where="domain"),
        extra=extra_fields(body, DOMAIN_FIELDS | {"explicit_domain_id"}))
    return JSONResponse({"domain": domain_view(request, d)}, status_code=201)


async def get_domain(request: Request):
    did = request.path_params["id"]
    enforce(request, "identity:get_domain", domain_id=did)
    return JSONResponse({"domain": domain_view(request, await manager(request).get("domain", did))})


async def update_domain(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "domain")
    changes = _text_changes(body, "domain", ("name", "description", "enabled"), {"enabled": bool})
    d = await manager(request).update_domain(request.path_params["id"], changes)
    return JSONResponse({"domain": domain_view(request, d)})


async def delete_domain(request: Request):
    enforce(request, "identity:admin")
    await manager(request).delete_domain(request.path_params["id"])
    return empty()


# ---- projects ------------------------------------------------------------------------------

PROJECT_FIELDS = {"id", "name", "domain_id", "description", "enabled", "parent_id", "is_domain", "tags",
                  "links", "options"}


async def list_projects(request: Request):
    c = ctx(request)
    filters = _filters(request, ("name", "domain_id", "enabled", "parent_id"))
    if not c.is_admin:
        enforce(request, "identity:list_projects", domain_id=filters.get("domain_id") or c.domain_id)
    items = await manager(request).list("project", filters)
    tags = request.query_params.get("tags")
    if tags:
        want = set(tags.split(","))
        items = [p for p in items if want <= set(p.tags or [])]
    tags_any = request.query_params.get("tags-any")
    if tags_any:
        want = set(tags_any.split(","))
        items = [p for p in items if want & set(p.tags or [])]
    if not c.is_admin and c.domain_id:
        items = [p for p in items if p.domain_id == c.domain_id]
    return _listed(request, "projects", [project_view(request, p) for p in items])


async def create_project(request: Request):
    c = enforce(request, "identity:admin")
    body = require_object(await read_json(request), "project")
    if body.get("is_domain"):
        raise BadRequest("Projects acting as domains are not supported; create a domain instead.")
    domain_id = field(body, "domain_id", str, where="project") or c.project_domain_id or DEFAULT_DOMAIN_ID
    tags = field(body, "tags", list, default=[], where="project")
    if not all(isinstance(t, str) and t and len(t) <= 255 and "/" not in t and "," not in t for t in tags):
        raise BadRequest("Invalid input for field 'project.tags': each tag is a non-empty string without '/' or ','.")
    parent_id = field(body, "parent_id", str, nullable=True, where="project")
    if parent_id == domain_id:
        parent_id = None
    p = await manager(request).create_project(
        name=field(body, "name", str, required=True, where="project"), domain_id=domain_id,
        description=field(body, "description", str, default="", nullable=True, where="project") or "",
        enabled=field(body, "enabled", bool, default=True, where="project"), parent_id=parent_id, tags=tags,
        extra=extra_fields(body, PROJECT_FIELDS))
    return JSONResponse({"project": project_view(request, p)}, status_code=201)


async def get_project(request: Request):
    mgr = manager(request)
    p = await mgr.get("project", request.path_params["id"])
    enforce(request, "identity:get_project", project_id=p.id, domain_id=p.domain_id)
    return JSONResponse({"project": project_view(request, p)})


async def update_project(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "project")
    changes = {}
    for key, kind in (("name", str), ("description", str), ("enabled", bool), ("tags", list)):
        if key in body:
            changes[key] = field(body, key, kind, where="project", nullable=key == "description") or (
                "" if key == "description" else body[key])
    if "domain_id" in body:
        p = await manager(request).get("project", request.path_params["id"])
        if body["domain_id"] != p.domain_id:
            raise BadRequest("A project's domain_id cannot be changed.")
    extra = extra_fields(body, PROJECT_FIELDS)
    if extra:
        current = await manager(request).get("project", request.path_params["id"])
        changes["extra"] = {**current.extra, **extra}
    p = await manager(request).update_project(request.path_params["id"], changes)
    return JSONResponse({"project": project_view(request, p)})


async def delete_project(request: Request):
    enforce(request, "identity:admin")
    await manager(request).delete_project(request.path_params["id"])
    return empty()


async def project_tags(request: Request):
    mgr = manager(request)
    p = await mgr.get("project", request.path_params["id"])
    if request.method == "GET":
        enforce(request, "identity:get_project", project_id=p.id, domain_id=p.domain_id)
        return JSONResponse({"tags": list(p.tags or [])})
    enforce(request, "identity:admin")
    body = await read_json(request)
    tags = body.get("tags") if isinstance(body, dict) else None
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise BadRequest("The body must be {\"tags\": [\"tag\", ...]}.")
    p = await mgr.update_project(p.id, {"tags": tags})
    return JSONResponse({"tags": list(p.tags)})


async def project_tag(request: Request):
    mgr = manager(request)
    p = await mgr.get("project", request.path_params["id"])
    tag = request.path_params["tag"]
    if request.method in ("GET", "HEAD"):
        enforce(request, "identity:get_project", project_id=p.id, domain_id=p.domain_id)
        if tag not in (p.tags or []):
            raise NotFound(f"Tag {tag} not found on project {p.id}.")
        return empty(204)
    enforce(request, "identity:admin")
    tags = list(p.tags or [])
    if request.method == "PUT":
        if tag not in tags:
            tags.append(tag)
        await mgr.update_project(p.id, {"tags": tags})
        return JSONResponse({"tags": tags}, status_code=201)
    if tag not in tags:
        raise NotFound(f"Tag {tag} not found on project {p.id}.")
    tags.remove(tag)
    await mgr.update_project(p.id, {"tags": tags})
    return empty()


# ---- users ---------------------------------------------------------------------------------

USER_FIELDS = {"id", "name", "domain_id", "enabled", "default_project_id", "password", "links", "options",
               "password_expires_at", "federated"}


async def list_users(request: Request):
    c = ctx(request)
    filters = _filters(request, ("name", "domain_id", "enabled"))
    if not c.is_admin:
        enforce(request, "identity:list_users", domain_id=filters.get("domain_id") or c.domain_id)
    items = await manager(request).list("user", filters)
    return _listed(request, "users", [user_view(request, u) for u in items])


async def create_user(request: Request):
    c = enforce(request, "identity:admin")
    body = require_object(await read_json(request), "user")
    password = field(body, "password", str, nullable=True, where="user")
    options = field(body, "options", dict, default={}, where="user")
    u = await manager(request).create_user(
        name=field(body, "name", str, required=True, where="user"),
        domain_id=field(body, "domain_id", str, where="user") or c.project_domain_id or DEFAULT_DOMAIN_ID,
        password=password, enabled=field(body, "enabled", bool, default=True, where="user"),
        default_project_id=field(body, "default_project_id", str, nullable=True, where="user"),
        extra=extra_fields(body, USER_FIELDS), options=options)
    return JSONResponse({"user": user_view(request, u)}, status_code=201)


async def get_user(request: Request):
    uid = request.path_params["id"]
    enforce(request, "identity:get_user", user_id=uid)
    return JSONResponse({"user": user_view(request, await manager(request).get("user", uid))})


async def update_user(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "user")
    changes = {}
    for key, kind in (("name", str), ("enabled", bool), ("password", str), ("default_project_id", str),
                      ("options", dict)):
        if key in body:
            changes[key] = field(body, key, kind, where="user", nullable=key == "default_project_id")
    if "domain_id" in body:
        u = await manager(request).get("user", request.path_params["id"])
        if body["domain_id"] != u.domain_id:
            raise BadRequest("A user's domain_id cannot be changed.")
    extra = extra_fields(body, USER_FIELDS)
    if extra:
        current = await manager(request).get("user", request.path_params["id"])
        changes["extra"] = {**current.extra, **extra}
    u = await manager(request).update_user(request.path_params["id"], changes)
    return JSONResponse({"user": user_view(request, u)})


async def delete_user(request: Request):
    enforce(request, "identity:admin")
    await manager(request).delete_user(request.path_params["id"])
    return empty()


async def change_password(request: Request):
    uid = request.path_params["id"]
    c = request.scope.get("stratus.context")
    if c is not None and c.user_id != uid and not c.is_admin:
        raise Forbidden("You can change only your own password.")
    body = require_object(await read_json(request), "user")
    original = field(body, "original_password", str, required=True, where="user")
    new = field(body, "password", str, required=True, where="user")
    if not new:
        raise BadRequest("'user.password' must not be empty.")
    await manager(request).change_password(uid, original, new)
    return empty()


async def user_projects(request: Request):
    uid = request.path_params["id"]
    enforce(request, "identity:list_user_projects", user_id=uid)
    mgr = manager(request)
    await mgr.get("user", uid)
    items = [project_view(request, p) for p in await mgr.user_projects(uid)]
    return _listed(request, "projects", items)


async def user_groups(request: Request):
    uid = request.path_params["id"]
    enforce(request, "identity:list_groups_for_user", user_id=uid)
    mgr = manager(request)
    await mgr.get("user", uid)
    return _listed(request, "groups", [group_view(request, g) for g in await mgr.user_groups(uid)])


# ---- groups --------------------------------------------------------------------------------

async def list_groups(request: Request):
    enforce(request, "identity:admin")
    items = await manager(request).list("group", _filters(request, ("name", "domain_id")))
    return _listed(request, "groups", [group_view(request, g) for g in items])


async def create_group(request: Request):
    c = enforce(request, "identity:admin")
    body = require_object(await read_json(request), "group")
    g = await manager(request).create_group(
        name=field(body, "name", str, required=True, where="group"),
        domain_id=field(body, "domain_id", str, where="group") or c.project_domain_id or DEFAULT_DOMAIN_ID,
        description=field(body, "description", str, default="", nullable=True, where="group") or "",
        extra=extra_fields(body, {"id", "name", "domain_id", "description", "links"}))
    return JSONResponse({"group": group_view(request, g)}, status_code=201)


async def get_group(request: Request):
    enforce(request, "identity:admin")
    return JSONResponse({"group": group_view(request, await manager(request).get("group", request.path_params["id"]))})


async def update_group(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "group")
    changes = _text_changes(body, "group")
    g = await manager(request)._update("group", request.path_params["id"], changes, f"name {changes.get('name')}")
    return JSONResponse({"group": group_view(request, g)})


async def delete_group(request: Request):
    enforce(request, "identity:admin")
    await manager(request).delete_group(request.path_params["id"])
    return empty()


async def group_users(request: Request):
    enforce(request, "identity:admin")
    mgr = manager(request)
    await mgr.get("group", request.path_params["id"])
    users = await mgr.group_members(request.path_params["id"])
    return _listed(request, "users", [user_view(request, u) for u in users])


async def group_member(request: Request):
    enforce(request, "identity:admin")
    mgr = manager(request)
    gid, uid = request.path_params["id"], request.path_params["user_id"]
    if request.method == "PUT":
        await mgr.add_member(gid, uid)
    elif request.method == "DELETE":
        await mgr.remove_member(gid, uid)
    else:
        await mgr.get("group", gid)
        await mgr.get("user", uid)
        if not await mgr.is_member(gid, uid):
            raise NotFound(f"User {uid} is not a member of group {gid}.")
    return empty()


# ---- roles ---------------------------------------------------------------------------------

async def list_roles(request: Request):
    enforce(request, "identity:list_roles")
    filters = _filters(request, ("name", "domain_id"))
    if "domain_id" not in filters:
        filters["domain_id"] = None
    items = await manager(request).list("role", {k: v for k, v in filters.items() if v is not None})
    if filters["domain_id"] is None:
        items = [r for r in items if r.domain_id is None]
    return _listed(request, "roles", [role_view(request, r) for r in items])


async def create_role(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "role")
    r = await manager(request).create_role(
        name=field(body, "name", str, required=True, where="role"),
        domain_id=field(body, "domain_id", str, nullable=True, where="role"),
        description=field(body, "description", str, default="", nullable=True, where="role") or "",
        options=field(body, "options", dict, default={}, where="role"))
    return JSONResponse({"role": role_view(request, r)}, status_code=201)


async def get_role(request: Request):
    enforce(request, "identity:get_role")
    return JSONResponse({"role": role_view(request, await manager(request).get("role", request.path_params["id"]))})


async def update_role(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "role")
    changes = _text_changes(body, "role")
    r = await manager(request)._update("role", request.path_params["id"], changes, f"name {changes.get('name')}")
    return JSONResponse({"role": role_view(request, r)})


async def delete_role(request: Request):
    enforce(request, "identity:admin")
    await manager(request).delete_role(request.path_params["id"])
    return empty()


async def implied_role(request: Request):
    mgr = manager(request)
    prior, implied = request.path_params["prior"], request.path_params["implied"]
    if request.method == "PUT":
        enforce(request, "identity:admin")
        await mgr.add_implied_role(prior, implied)
    elif request.method == "DELETE":
        enforce(request, "identity:admin")
        await mgr.remove_implied_role(prior, implied)
        return empty()
    else:
        enforce(request, "identity:get_role")
        if (prior, implied) not in await mgr.implied_rules():
            raise NotFound(f"Could not find implied role: {prior} implies {implied}.")
        if request.method == "HEAD":
            return empty(204)
    p, i = await mgr.get("role", prior), await mgr.get("role", implied)
    body = {"role_inference": {"prior_role": _brief(request, p), "implies": _brief(request, i)},
            "links": {"self": f"{str(request.url)}"}}
    return JSONResponse(body, status_code=201 if request.method == "PUT" else 200)


def _brief(request, r) -> dict:
    return {"id": r.id, "name": r.name, "links": role_view(request, r)["links"]}


async def list_implied(request: Request):
    enforce(request, "identity:get_role")
    mgr = manager(request)
    prior = await mgr.get("role", request.path_params["prior"])
    implied = [await mgr.get("role", i) for p, i in await mgr.implied_rules() if p == prior.id]
    return JSONResponse({"role_inference": {"prior_role": _brief(request, prior),
                                            "implies": [_brief(request, r) for r in implied]},
                         "links": {"self": str(request.url)}})


async def role_inferences(request: Request):
    enforce(request, "identity:get_role")
    mgr = manager(request)
    by_prior: dict[str, list[str]] = {}
    for p, i in await mgr.implied_rules():
        by_prior.setdefault(p, []).append(i)
    out = []
    for p, implied in by_prior.items():
        prior = await mgr.get("role", p)
        out.append({"prior_role": _brief(request, prior),
                    "implies": [_brief(request, await mgr.get("role", i)) for i in implied]})
    return JSONResponse({"role_inferences": out, "links": {"self": str(request.url)}})


routes = [
    Route("/v3/domains", list_domains, methods=["GET", "HEAD"]),
    Route("/v3/domains", create_domain, methods=["POST"]),
    Route("/v3/domains/{id}", get_domain, methods=["GET", "HEAD"]),
    Route("/v3/domains/{id}", update_domain, methods=["PATCH"]),
    Route("/v3/domains/{id}", delete_domain, methods=["DELETE"]),
    Route("/v3/projects", list_projects, methods=["GET", "HEAD"]),
    Route("/v3/projects", create_project, methods=["POST"]),
    Route("/v3/projects/{id}", get_project, methods=["GET", "HEAD"]),
    Route("/v3/projects/{id}", update_project, methods=["PATCH"]),
    Route("/v3/projects/{id}", delete_project, methods=["DELETE"]),
    Route("/v3/projects/{id}/tags", project_tags, methods=["GET", "PUT"]),
    Route("/v3/projects/{id}/tags/{tag}", project_tag, methods=["GET", "HEAD", "PUT", "DELETE"]),
    Route("/v3/users", list_users, methods=["GET", "HEAD"]),
    Route("/v3/users", create_user, methods=["POST"]),
    Route("/v3/users/{id}", get_user, methods=["GET", "HEAD"]),
    Route("/v3/users/{id}", update_user, methods=["PATCH"]),
    Route("/v3/users/{id}", delete_user, methods=["DELETE"]),
    Route("/v3/users/{id}/password", change_password, methods=["POST"]),
    Route("/v3/users/{id}/projects", user_projects, methods=["GET"]),
    Route("/v3/users/{id}/groups", user_groups, methods=["GET"]),
    Route("/v3/groups", list_groups, methods=["GET", "HEAD"]),
    Route("/v3/groups", create_group, methods=["POST"]),
    Route("/v3/groups/{id}", get_group, methods=["GET", "HEAD"]),
    Route("/v3/groups/{id}", update_group, methods=["PATCH"]),
    Route("/v3/groups/{id}", delete_group, methods=["DELETE"]),
    Route("/v3/groups/{id}/users", group_users, methods=["GET"]),
    Route("/v3/groups/{id}/users/{user_id}", group_member, methods=["PUT", "HEAD", "GET", "DELETE"]),
    Route("/v3/roles", list_roles, methods=["GET", "HEAD"]),
    Route("/v3/roles", create_role, methods=["POST"]),
    Route("/v3/roles/{id}", get_role, methods=["GET", "HEAD"]),
    Route("/v3/roles/{id}", update_role, methods=["PATCH"]),
    Route("/v3/roles/{id}", delete_role, methods=["DELETE"]),
    Route("/v3/roles/{prior}/implies", list_implied, methods=["GET"]),
    Route("/v3/roles/{prior}/implies/{implied}", implied_role, methods=["PUT", "GET", "HEAD", "DELETE"]),
    Route("/v3/role_inferences", role_inferences, methods=["GET"]),
]
