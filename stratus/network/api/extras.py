"""Extensions, quotas, availability zones and the auto-allocated topology."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.context import get_context
from stratus.common.errors import BadRequest, NotFound
from stratus.common.web import JSONResponse, empty, read_json
from stratus.network.common import apply_filters, project_fields

# Only what works here. `external-gateway-multihoming` is deliberately absent: OSC would then use
# the add/remove_external_gateways API instead of external_gateway_info.
EXTENSIONS = [
    ("router", "Neutron L3 Router", "Router abstraction for L3 forwarding between L2 networks"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Enable/disable SNAT on the gateway"),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    ("extraroute-atomic", "Atomically add/remove extra routes", "Edit extra routes of a router atomically"),
    ("security-group", "security-group", "The security groups extension."),
    ("stateful-security-group", "Stateful security group", "Security groups may be stateful"),
    ("quotas", "Quota management support", "Expose functions for quotas management per project"),
    ("quota_details", "Quota details management support", "Expose quota usage and limits per project"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to resources"),
    ("standard-attr-tag", "Tag support for resources with standard attribute", "Enables tags on resources"),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields"),
    ("standard-attr-revisions", "Resource revision numbers", "Adds revision_number to resources"),
    ("port-security", "Port Security", "Provides port security"),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("availability_zone", "Availability Zone", "The availability zone extension."),
    ("network_availability_zone", "Network Availability Zone", "Availability zone support for network."),
    ("router_availability_zone", "Router Availability Zone", "Availability zone support for router."),
    ("fip-port-details", "Floating IP Port Details Extension", "Add port_details attribute to Floating IP resource"),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("auto-allocated-topology", "Auto Allocated Topology Services", "Auto Allocated Topology Services."),
    ("network-ip-availability", "Network IP Availability", "Provides IP availability data for each network and subnet."),
    ("tag-ports-during-bulk-creation", "Tag Ports During Bulk Creation", "Allow to tag ports during bulk creation"),
]


def _ext(alias, name, description):
    return {"alias": alias, "name": name, "description": description, "updated": "2026-01-01T00:00:00-00:00",
            "links": []}


async def list_extensions(request: Request):
    return JSONResponse({"extensions": [_ext(*e) for e in EXTENSIONS]})


async def show_extension(request: Request):
    alias = request.path_params["alias"]
    for e in EXTENSIONS:
        if e[0] == alias:
            return JSONResponse({"extension": _ext(*e)})
    raise NotFound(f"Extension with alias {alias} does not exist", kind="ExtensionNotFound")


def manager(request):
    return request.app.state.manager


async def list_quotas(request: Request):
    return JSONResponse({"quotas": await manager(request).list_quotas(get_context(request))})


async def show_quota(request: Request):
    return JSONResponse({"quota": await manager(request).get_quota(get_context(request),
                                                                   request.path_params["project"])})


async def quota_details(request: Request):
    return JSONResponse({"quota": await manager(request).quota_details(get_context(request),
                                                                       request.path_params["project"])})


async def quota_default(request: Request):
    get_context(request)
    return JSONResponse({"quota": manager(request).default_quotas()})


async def update_quota(request: Request):
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("quota"), dict):
        raise BadRequest("The request body must be {\"quota\": {...}}.", kind="HTTPBadRequest")
    return JSONResponse({"quota": await manager(request).update_quota(get_context(request),
                                                                      request.path_params["project"], body["quota"])})


async def delete_quota(request: Request):
    await manager(request).reset_quota(get_context(request), request.path_params["project"])
    return empty()


async def availability_zones(request: Request):
    get_context(request)
    az = manager(request).az
    items = [{"name": az, "resource": r, "state": "available"} for r in ("network", "router")]
    items = apply_filters(items, request.query_params, {"fields"})
    fields = [f for v in request.query_params.getlist("fields") for f in v.split(",") if f]
    return JSONResponse({"availability_zones": [project_fields(i, fields) for i in items]})


async def auto_topology_get(request: Request):
    dry = "dry-run" in request.query_params.getlist("fields")
    out = await manager(request).get_auto_topology(get_context(request), request.path_params["project"], dry)
    return JSONResponse({"auto_allocated_topology": out})


async def auto_topology_delete(request: Request):
    await manager(request).delete_auto_topology(get_context(request), request.path_params["project"])
    return empty()


async def ip_availabilities(request: Request):
    items = await manager(request).ip_availability(get_context(request))
    items = apply_filters(items, request.query_params, {"fields"})
    fields = [f for v in request.query_params.getlist("fields") for f in v.split(",") if f]
    return JSONResponse({"network_ip_availabilities": [project_fields(i, fields) for i in items]})


async def ip_availability(request: Request):
    items = await manager(request).ip_availability(get_context(request), request.path_params["id"])
    return JSONResponse({"network_ip_availability": items[0]})


routes = [
    Route("/v2.0/network-ip-availabilities", ip_availabilities, methods=["GET"]),
    Route("/v2.0/network-ip-availabilities/{id}", ip_availability, methods=["GET"]),
    Route("/v2.0/extensions", list_extensions, methods=["GET"]),
    Route("/v2.0/extensions/{alias}", show_extension, methods=["GET"]),
    Route("/v2.0/quotas", list_quotas, methods=["GET"]),
    Route("/v2.0/quotas/{project}/details", quota_details, methods=["GET"]),
    Route("/v2.0/quotas/{project}/default", quota_default, methods=["GET"]),
    Route("/v2.0/quotas/{project}", show_quota, methods=["GET"]),
    Route("/v2.0/quotas/{project}", update_quota, methods=["PUT"]),
    Route("/v2.0/quotas/{project}", delete_quota, methods=["DELETE"]),
    Route("/v2.0/availability_zones", availability_zones, methods=["GET"]),
    Route("/v2.0/auto-allocated-topology/{project}", auto_topology_get, methods=["GET"]),
    Route("/v2.0/auto-allocated-topology/{project}", auto_topology_delete, methods=["DELETE"]),
]
