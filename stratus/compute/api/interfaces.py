"""/servers/{id}/os-interface: plugging network ports into servers and unplugging them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import BadRequest, Conflict, NotFound
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.compute.api.common import enforce, field, svc
from stratus.compute.api.servers import get_server

PLUGGABLE = {"active", "paused", "stopped", "suspended"}


def interface_view(info: dict) -> dict:
    return {"port_id": info["port_id"], "net_id": info.get("network_id"), "mac_addr": info.get("mac", ""),
            "port_state": "ACTIVE", "tag": info.get("tag"),
            "fixed_ips": [{"subnet_id": s.get("subnet_id"), "ip_address": s.get("ip_address")}
                          for s in info.get("subnets") or []]}


async def list_interfaces(request: Request):
    inst = await get_server(request)
    enforce(request, "compute:servers:show", project_id=inst.project_id)
    return JSONResponse({"interfaceAttachments": [interface_view(i) for i in inst.network_info or []]})


async def show_interface(request: Request):
    inst = await get_server(request)
    enforce(request, "compute:servers:show", project_id=inst.project_id)
    for info in inst.network_info or []:
        if info["port_id"] == request.path_params["port_id"]:
            return JSONResponse({"interfaceAttachment": interface_view(info)})
    raise NotFound(f"Port {request.path_params['port_id']} is not attached to server {inst.id}.")


async def attach_interface(request: Request):
    inst = await get_server(request)
    c = enforce(request, "compute:servers:action", project_id=inst.project_id)
    body = require_object(await read_json(request), "interfaceAttachment")
    port_id = field(body, "port_id", str, nullable=True, where="interfaceAttachment")
    net_id = field(body, "net_id", str, nullable=True, where="interfaceAttachment")
    fixed_ips = field(body, "fixed_ips", list, nullable=True, where="interfaceAttachment") or []
    if bool(port_id) == bool(net_id):
        raise BadRequest("interfaceAttachment needs exactly one of 'port_id' and 'net_id'.")
    state = svc(request)
    state.manager.check_lock(c, inst)
    if inst.vm_state not in PLUGGABLE or inst.task_state is not None:
        what = f"vm_state {inst.vm_state}" + (f" with task_state {inst.task_state}" if inst.task_state else "")
        raise Conflict(f"Cannot 'attach_interface' instance {inst.id} while it is in {what}")
    requested = [{"port": port_id}] if port_id else [{"uuid": net_id, **(
        {"fixed_ip": fixed_ips[0].get("ip_address")} if fixed_ips and isinstance(fixed_ips[0], dict) else {})}]
    entries = await state.network.validate(inst.project_id, requested)
    info = await state.manager.call(inst.host, "attach_interface", timeout=120, instance_id=inst.id, entry=entries[0])
    return JSONResponse({"interfaceAttachment": interface_view(info)})


async def detach_interface(request: Request):
    inst = await get_server(request)
    c = enforce(request, "compute:servers:action", project_id=inst.project_id)
    port_id = request.path_params["port_id"]
    state = svc(request)
    state.manager.check_lock(c, inst)
    if not any(i["port_id"] == port_id for i in inst.network_info or []):
        raise NotFound(f"Port {port_id} is not attached to server {inst.id}.")
    if inst.task_state is not None:
        raise Conflict(f"Cannot 'detach_interface' instance {inst.id} while it is in task_state {inst.task_state}")
    await state.manager.call(inst.host, "detach_interface", timeout=120, instance_id=inst.id, port_id=port_id)
    return empty(202)


routes = [
    Route("/v2.1/servers/{id}/os-interface", list_interfaces, methods=["GET"]),
    Route("/v2.1/servers/{id}/os-interface", attach_interface, methods=["POST"]),
    Route("/v2.1/servers/{id}/os-interface/{port_id}", show_interface, methods=["GET"]),
    Route("/v2.1/servers/{id}/os-interface/{port_id}", detach_interface, methods=["DELETE"]),
]
