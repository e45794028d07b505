"""/servers/{id}/os-volume_attachments: hot-plugging block-storage volumes into servers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import BadRequest, Conflict, NotFound
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.compute.api.common import at_least, ctx, enforce, field, svc
from stratus.compute.api.servers import get_server

# Guests can take a disk in these states (nova's list for attach/detach).
ATTACHABLE = {"active", "paused", "stopped", "resized", "suspended"}


def attachment_view(request: Request, server_id: str, record: dict) -> dict:
    view = {"volumeId": record["volume_id"], "serverId": server_id, "device": record.get("device")}
    if not at_least(request, "2.89"):
        view["id"] = record["volume_id"]
    if at_least(request, "2.70"):
        view["tag"] = record.get("tag")
    if at_least(request, "2.79"):
        view["delete_on_termination"] = bool(record.get("delete_on_termination"))
    if at_least(request, "2.89"):
        view["attachment_id"] = record["attachment_id"]
        view["bdm_uuid"] = record.get("bdm_uuid")
    return view


def _records(inst) -> list[dict]:
    return [r for r in inst.block_devices or [] if isinstance(r, dict) and "attachment_id" in r]


async def list_attachments(request: Request):
    inst = await get_server(request)
    enforce(request, "compute:servers:show", project_id=inst.project_id)
    return JSONResponse({"volumeAttachments": [attachment_view(request, inst.id, r) for r in _records(inst)]})


async def show_attachment(request: Request):
    inst = await get_server(request)
    enforce(request, "compute:servers:show", project_id=inst.project_id)
    vid = request.path_params["volume_id"]
    for r in _records(inst):
        if r["volume_id"] == vid:
            return JSONResponse({"volumeAttachment": attachment_view(request, inst.id, r)})
    raise NotFound(f"Volume {vid} is not attached to server {inst.id}.")


async def attach(request: Request):
    inst = await get_server(request)
    c = enforce(request, "compute:servers:action", project_id=inst.project_id)
    body = require_object(await read_json(request), "volumeAttachment")
    volume_id = field(body, "volumeId", str, required=True, where="volumeAttachment")
    device = field(body, "device", str, nullable=True, where="volumeAttachment")
    tag = field(body, "tag", str, nullable=True, where="volumeAttachment")
    delete_on_termination = field(body, "delete_on_termination", bool, default=False, where="volumeAttachment")
    if delete_on_termination and not at_least(request, "2.79"):
        raise BadRequest("'delete_on_termination' needs microversion 2.79 or later.")
    state = svc(request)
    state.manager.check_lock(c, inst)
    if inst.vm_state not in ATTACHABLE or inst.task_state is not None:
        what = f"vm_state {inst.vm_state}" + (f" with task_state {inst.task_state}" if inst.task_state else "")
        raise Conflict(f"Cannot 'attach_volume' instance {inst.id} while it is in {what}")
    volume = await state.volumes.get_volume(inst.project_id, volume_id)
    if any(r["volume_id"] == volume_id for r in _records(inst)):
        raise BadRequest(f"Volume {volume_id} is already attached to server {inst.id}.")
    if volume.get("status") != "available":
        raise BadRequest(f"Volume {volume_id} is {volume.get('status')}; only an available volume can be attached.")
    record = await state.manager.call(inst.host, "attach_volume", timeout=120, instance_id=inst.id,
                                      volume_id=volume_id, device=device,
                                      delete_on_termination=delete_on_termination, tag=tag)
    if at_least(request, "2.101"):
        return empty(202)
    return JSONResponse({"volumeAttachment": attachment_view(request, inst.id, record)})


async def detach(request: Request):
    inst = await get_server(request)
    c = enforce(request, "compute:servers:action", project_id=inst.project_id)
    vid = request.path_params["volume_id"]
    state = svc(request)
    state.manager.check_lock(c, inst)
    if not any(r["volume_id"] == vid for r in _records(inst)):
        raise NotFound(f"Volume {vid} is not attached to server {inst.id}.")
    if inst.task_state is not None:
        raise Conflict(f"Cannot 'detach_volume' instance {inst.id} while it is in task_state {inst.task_state}")
    await state.manager.call(inst.host, "detach_volume", timeout=120, instance_id=inst.id, volume_id=vid)
    return empty(202)


routes = [
    Route("/v2.1/servers/{id}/os-volume_attachments", list_attachments, methods=["GET"]),
    Route("/v2.1/servers/{id}/os-volume_attachments", attach, methods=["POST"]),
    Route("/v2.1/servers/{id}/os-volume_attachments/{volume_id}", show_attachment, methods=["GET"]),
    Route("/v2.1/servers/{id}/os-volume_attachments/{volume_id}", detach, methods=["DELETE"]),
]
