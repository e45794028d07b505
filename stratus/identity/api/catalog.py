"""/v3/regions, /v3/services and /v3/endpoints."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.db import new_id
from stratus.common.errors import BadRequest
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.identity import models as m
from stratus.identity.api.common import (collection_links, endpoint_view, enforce, extra_fields, field, manager,
                                         region_view, service_view)

INTERFACES = ("public", "internal", "admin")


async def list_regions(request: Request):
    enforce(request, "identity:get_catalog_item")
    filters = {}
    if "parent_region_id" in request.query_params:
        filters["parent_region_id"] = request.query_params["parent_region_id"]
    items = await manager(request).list("region", filters, order=m.Region.id)
    return JSONResponse({"regions": [region_view(request, r) for r in items], "links": collection_links(request)})


async def create_region(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "region")
    mgr = manager(request)
    parent = field(body, "parent_region_id", str, nullable=True, where="region")
    if parent:
        await mgr.get("region", parent)
    rid = field(body, "id", str, where="region") or new_id()
    r = await mgr._insert(m.Region(id=rid, description=field(body, "description", str, default="", nullable=True,
                                                             where="region") or "",
                                   parent_region_id=parent,
                                   extra=extra_fields(body, {"id", "description", "parent_region_id", "links"})),
                          "region", f"id {rid}")
    return JSONResponse({"region": region_view(request, r)}, status_code=201)


async def get_region(request: Request):
    enforce(request, "identity:get_catalog_item")
    return JSONResponse({"region": region_view(request, await manager(request).get("region", request.path_params["id"]))})


async def update_region(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "region")
    changes = {k: field(body, k, str, nullable=True, where="region") for k in ("description", "parent_region_id")
               if k in body}
    r = await manager(request)._update("region", request.path_params["id"], changes)
    return JSONResponse({"region": region_view(request, r)})


async def delete_region(request: Request):
    enforce(request, "identity:admin")
    await manager(request)._delete("region", request.path_params["id"])
    return empty()


async def list_services(request: Request):
    enforce(request, "identity:get_catalog_item")
    filters = {k: request.query_params[k] for k in ("type", "name") if k in request.query_params}
    items = await manager(request).list("service", filters)
    return JSONResponse({"services": [service_view(request, s) for s in items], "links": collection_links(request)})


async def create_service(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "service")
    s = m.Service(id=new_id(), type=field(body, "type", str, required=True, where="service"),
                  name=field(body, "name", str, default="", where="service") or "",
                  description=field(body, "description", str, default="", nullable=True, where="service") or "",
                  enabled=field(body, "enabled", bool, default=True, where="service"),
                  extra=extra_fields(body, {"id", "type", "name", "description", "enabled", "links"}))
    await manager(request)._insert(s, "service", f"id {s.id}")
    return JSONResponse({"service": service_view(request, s)}, status_code=201)


async def get_service(request: Request):
    enforce(request, "identity:get_catalog_item")
    return JSONResponse({"service": service_view(request, await manager(request).get("service", request.path_params["id"]))})


async def update_service(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "service")
    changes = {}
    for k, kind in (("type", str), ("name", str), ("description", str), ("enabled", bool)):
        if k in body:
            changes[k] = field(body, k, kind, where="service", nullable=k == "description") or (
                "" if k == "description" else body[k])
    s = await manager(request)._update("service", request.path_params["id"], changes)
    return JSONResponse({"service": service_view(request, s)})


async def delete_service(request: Request):
    enforce(request, "identity:admin")
    await manager(request)._delete("service", request.path_params["id"])
    return empty()


async def list_endpoints(request: Request):
    enforce(request, "identity:get_catalog_item")
    filters = {k: request.query_params[k] for k in ("service_id", "interface", "region_id")
               if k in request.query_params}
    items = await manager(request).list("endpoint", filters, order=m.Endpoint.id)
    return JSONResponse({"endpoints": [endpoint_view(request, e) for e in items], "links": collection_links(request)})


async def create_endpoint(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "endpoint")
    mgr = manager(request)
    service_id = field(body, "service_id", str, required=True, where="endpoint")
    await mgr.get("service", service_id)
    interface = field(body, "interface", str, required=True, where="endpoint")
    if interface not in INTERFACES:
        raise BadRequest(f"Invalid input for field 'endpoint.interface': must be one of {', '.join(INTERFACES)}.")
    url = field(body, "url", str, required=True, where="endpoint")
    if not url.startswith(("http://", "https://")):
        raise BadRequest("Invalid input for field 'endpoint.url': it must be an http(s) URL.")
    region = field(body, "region_id", str, nullable=True, where="endpoint") or field(
        body, "region", str, nullable=True, where="endpoint")
    if region:
        await mgr.get("region", region)
    e = m.Endpoint(id=new_id(), service_id=service_id, interface=interface, url=url, region_id=region,
                   enabled=field(body, "enabled", bool, default=True, where="endpoint"),
                   extra=extra_fields(body, {"id", "service_id", "interface", "url", "region", "region_id",
                                             "enabled", "links"}))
    await mgr._insert(e, "endpoint", f"id {e.id}")
    return JSONResponse({"endpoint": endpoint_view(request, e)}, status_code=201)


async def get_endpoint(request: Request):
    enforce(request, "identity:get_catalog_item")
    return JSONResponse({"endpoint": endpoint_view(request, await manager(request).get("endpoint", request.path_params["id"]))})


async def update_endpoint(request: Request):
    enforce(request, "identity:admin")
    body = require_object(await read_json(request), "endpoint")
    changes = {}
    for k, kind in (("url", str), ("interface", str), ("region_id", str), ("enabled", bool), ("service_id", str)):
        if k in body:
            changes[k] = field(body, k, kind, where="endpoint", nullable=k == "region_id")
    if "interface" in changes and changes["interface"] not in INTERFACES:
        raise BadRequest(f"Invalid input for field 'endpoint.interface': must be one of {', '.join(INTERFACES)}.")
    e = await manager(request)._update("endpoint", request.path_params["id"], changes)
    return JSONResponse({"endpoint": endpoint_view(request, e)})


async def delete_endpoint(request: Request):
    enforce(request, "identity:admin")
    await manager(request)._delete("endpoint", request.path_params["id"])
    return empty()


routes = [
    Route("/v3/regions", list_regions, methods=["GET", "HEAD"]),
    Route("/v3/regions", create_region, methods=["POST"]),
    Route("/v3/regions/{id}", get_region, methods=["GET", "HEAD"]),
    Route("/v3/regions/{id}", update_region, methods=["PATCH"]),
    Route("/v3/regions/{id}", delete_region, methods=["DELETE"]),
    Route("/v3/services", list_services, methods=["GET", "HEAD"]),
    Route("/v3/services", create_service, methods=["POST"]),
    Route("/v3/services/{id}", get_service, methods=["GET", "HEAD"]),
    Route("/v3/services/{id}", update_service, methods=["PATCH"]),
    Route("/v3/services/{id}", delete_service, methods=["DELETE"]),
    Route("/v3/endpoints", list_endpoints, methods=["GET", "HEAD"]),
    Route("/v3/endpoints", create_endpoint, methods=["POST"]),
    Route("/v3/endpoints/{id}", get_endpoint, methods=["GET", "HEAD"]),
    Route("/v3/endpoints/{id}", update_endpoint, methods=["PATCH"]),
    Route("/v3/endpoints/{id}", delete_endpoint, methods=["DELETE"]),
]
