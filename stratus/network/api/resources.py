"""The standard collections: list/create/show/update/delete, tags, router actions.

All collections share one set of handlers driven by a table, because neutron treats them
uniformly: filters on every attribute, ``fields=``, sorting and limit/marker pagination.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.context import get_context
from stratus.common.errors import BadRequest, NotFound
from stratus.common.pagination import parse_limit
from stratus.common.web import JSONResponse, empty, read_json
from stratus.network.common import apply_filters, project_fields

NON_FILTERS = {"fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir", "verbose"}


@dataclass
class Collection:
    path: str
    singular: str
    plural: str
    list: str
    get: str
    create: str | None
    update: str | None
    delete: str | None
    pass_query: bool = False


COLLECTIONS = [
    Collection("networks", "network", "networks", "list_networks", "get_network", "create_network",
               "update_network", "delete_network"),
    Collection("subnets", "subnet", "subnets", "list_subnets", "get_subnet", "create_subnet", "update_subnet",
               "delete_subnet"),
    Collection("ports", "port", "ports", "list_ports", "get_port", "create_port", "update_port", "delete_port",
               pass_query=True),
    Collection("routers", "router", "routers", "list_routers", "get_router", "create_router", "update_router",
               "delete_router"),
    Collection("floatingips", "floatingip", "floatingips", "list_floatingips", "get_floatingip",
               "create_floatingip", "update_floatingip", "delete_floatingip"),
    Collection("security-groups", "security_group", "security_groups", "list_security_groups",
               "get_security_group", "create_security_group", "update_security_group", "delete_security_group"),
    Collection("security-group-rules", "security_group_rule", "security_group_rules", "list_rules", "get_rule",
               "create_rule", None, "delete_rule"),
]
BY_PATH = {c.path: c for c in COLLECTIONS}


def manager(request: Request):
    return request.app.state.manager


def fields_of(request: Request) -> list[str]:
    return [f for v in request.query_params.getlist("fields") for f in v.split(",") if f]


def _sort(items: list[dict], request: Request) -> list[dict]:
    keys = request.query_params.getlist("sort_key")
    dirs = request.query_params.getlist("sort_dir")
    if not keys:
        return items
    for d in dirs:
        if d not in ("asc", "desc"):
            raise BadRequest(f"{d} is invalid attribute for sort_dir; use asc or desc.", kind="HTTPBadRequest")
    for i, key in reversed(list(enumerate(keys))):
        if items and key not in items[0]:
            raise BadRequest(f"{key} is invalid attribute for sort_key.", kind="HTTPBadRequest")
        reverse = (dirs[i] if i < len(dirs) else "asc") == "desc"
        items = sorted(items, key=lambda x: (x.get(key) is None, str(x.get(key)) if not isinstance(
            x.get(key), (int, float)) or isinstance(x.get(key), bool) else f"{x.get(key):020}"), reverse=reverse)
    return items


def _page(items: list[dict], request: Request, plural: str) -> tuple[list[dict], list[dict]]:
    limit = parse_limit(request, default=None, maximum=10000)
    marker = request.query_params.get("marker")
    reverse = request.query_params.get("page_reverse", "").lower() == "true"
    if marker:
        idx = next((i for i, x in enumerate(items) if x.get("id") == marker), None)
        if idx is None:
            raise NotFound(f"Marker {marker} could not be found.", kind="NotFound")
        items = items[:idx] if reverse else items[idx + 1:]
    links = []
    if limit:
        if reverse:
            more = len(items) > limit
            items = items[-limit:]
        else:
            more = len(items) > limit
            items = items[:limit]
        if items and more:
            from urllib.parse import urlencode

            params = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
            params.append(("marker", items[-1]["id"]))
            links.append({"rel": "next", "href": str(request.url.replace(query=urlencode(params)))})
    return items, links


def collection_handlers(c: Collection):
    async def list_items(request: Request):
        ctx = get_context(request)
        fn = getattr(manager(request), c.list)
        items = await (fn(ctx, request.query_params) if c.pass_query else fn(ctx))
        items = apply_filters(items, request.query_params, NON_FILTERS)
        items = _sort(items, request)
        items, links = _page(items, request, c.plural)
        fields = fields_of(request)
        if fields and "id" not in fields and request.query_params.get("limit"):
            fields = [*fields, "id"]
        body = {c.plural: [project_fields(i, fields) for i in items]}
        if links:
            body[f"{c.plural}_links"] = links
        return JSONResponse(body)

    async def create_item(request: Request):
        ctx = get_context(request)
        body = await read_json(request)
        fn = getattr(manager(request), c.create)
        if isinstance(body, dict) and c.plural in body and c.singular not in body:
            bulk = body[c.plural]
            if not isinstance(bulk, list) or not all(isinstance(x, dict) for x in bulk):
                raise BadRequest(f"'{c.plural}' must be a list of objects.", kind="HTTPBadRequest")
            made = []
            try:
                for item in bulk:
                    made.append(await fn(ctx, item))
            except Exception:
                # Bulk creation is all or nothing.
                for done in made:
                    try:
                        await getattr(manager(request), c.delete)(ctx, done["id"])
                    except Exception:
                        pass
                raise
            return JSONResponse({c.plural: made}, status_code=201)
        if not isinstance(body, dict) or not isinstance(body.get(c.singular), dict):
            raise BadRequest(f"Resource body required: a JSON object with a '{c.singular}' object.",
                             kind="HTTPBadRequest")
        return JSONResponse({c.singular: await fn(ctx, body[c.singular])}, status_code=201)

    async def show_item(request: Request):
        ctx = get_context(request)
        item = await getattr(manager(request), c.get)(ctx, request.path_params["id"])
        return JSONResponse({c.singular: project_fields(item, fields_of(request))})

    async def update_item(request: Request):
        ctx = get_context(request)
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get(c.singular), dict):
            raise BadRequest(f"Resource body required: a JSON object with a '{c.singular}' object.",
                             kind="HTTPBadRequest")
        changes = body[c.singular]
        for key in ("id", "project_id", "tenant_id", "created_at", "updated_at", "status"):
            if key in changes and key != "status":
                raise BadRequest(f"Cannot update read-only attribute {key}", kind="HTTPBadRequest")
        item = await getattr(manager(request), c.update)(ctx, request.path_params["id"], changes)
        return JSONResponse({c.singular: item})

    async def delete_item(request: Request):
        await getattr(manager(request), c.delete)(get_context(request), request.path_params["id"])
        return empty()

    routes = [Route(f"/v2.0/{c.path}", list_items, methods=["GET"]),
              Route(f"/v2.0/{c.path}", create_item, methods=["POST"]),
              Route(f"/v2.0/{c.path}/{{id}}", show_item, methods=["GET"])]
    if c.update:
        routes.append(Route(f"/v2.0/{c.path}/{{id}}", update_item, methods=["PUT"]))
    if c.delete:
        routes.append(Route(f"/v2.0/{c.path}/{{id}}", delete_item, methods=["DELETE"]))
    return routes


# ---- tags ------------------------------------------------------------------------------------

TAGGABLE = ("networks", "subnets", "ports", "routers", "floatingips", "security-groups")


def tag_routes(collection: str) -> list[Route]:
    async def tags_get(request: Request):
        tags = await manager(request).get_tags(get_context(request), collection, request.path_params["id"])
        return JSONResponse({"tags": tags})

    async def tags_put(request: Request):
        body = await read_json(request)
        if not isinstance(body, dict) or "tags" not in body:
            raise BadRequest("The request body must be {\"tags\": [...]}.", kind="HTTPBadRequest")
        tags = await manager(request).set_tags(get_context(request), collection, request.path_params["id"],
                                              body["tags"])
        return JSONResponse({"tags": tags})

    async def tags_delete_all(request: Request):
        await manager(request).set_tags(get_context(request), collection, request.path_params["id"], [])
        return empty()

    async def tag_check(request: Request):
        tags = await manager(request).get_tags(get_context(request), collection, request.path_params["id"])
        if request.path_params["tag"] not in tags:
            raise NotFound(f"Tag {request.path_params['tag']} could not be found.", kind="TagNotFound")
        return empty()

    async def tag_add(request: Request):
        await manager(request).set_tags(get_context(request), collection, request.path_params["id"], None,
                                        add=request.path_params["tag"])
        return empty(201)

    async def tag_remove(request: Request):
        await manager(request).set_tags(get_context(request), collection, request.path_params["id"], None,
                                        remove=request.path_params["tag"])
        return empty()

    base = f"/v2.0/{collection}/{{id}}/tags"
    return [Route(base, tags_get, methods=["GET"]), Route(base, tags_put, methods=["PUT"]),
            Route(base, tags_delete_all, methods=["DELETE"]), Route(base + "/{tag}", tag_check, methods=["GET"]),
            Route(base + "/{tag}", tag_add, methods=["PUT"]), Route(base + "/{tag}", tag_remove, methods=["DELETE"])]


# ---- router actions --------------------------------------------------------------------------

async def _action_body(request: Request) -> dict:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", kind="HTTPBadRequest")
    return body


async def add_interface(request: Request):
    out = await manager(request).add_interface(get_context(request), request.path_params["id"],
                                               await _action_body(request))
    return JSONResponse(out)


async def remove_interface(request: Request):
    out = await manager(request).remove_interface(get_context(request), request.path_params["id"],
                                                  await _action_body(request))
    return JSONResponse(out)


async def add_extraroutes(request: Request):
    body = (await _action_body(request)).get("router") or {}
    return JSONResponse({"router": await manager(request).change_routes(get_context(request),
                                                                        request.path_params["id"], body, True)})


async def remove_extraroutes(request: Request):
    body = (await _action_body(request)).get("router") or {}
    return JSONResponse({"router": await manager(request).change_routes(get_context(request),
                                                                        request.path_params["id"], body, False)})


routes = [
    Route("/v2.0/routers/{id}/add_router_interface", add_interface, methods=["PUT"]),
    Route("/v2.0/routers/{id}/remove_router_interface", remove_interface, methods=["PUT"]),
    Route("/v2.0/routers/{id}/add_extraroutes", add_extraroutes, methods=["PUT"]),
    Route("/v2.0/routers/{id}/remove_extraroutes", remove_extraroutes, methods=["PUT"]),
]
for _t in TAGGABLE:
    routes += tag_routes(_t)
for _c in COLLECTIONS:
    routes += collection_handlers(_c)
