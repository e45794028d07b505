"""/v3/{project_id}/attachments (3.27+): how compute attaches volumes.

create (reserve, and connect when a connector is given) → update with a connector (connect) →
action os-complete (3.44, the guest sees the disk: volume in-use) → delete (disconnect; the
volume is available again once no attachment is left).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import BadRequest, NotFound
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.volume import models as m
from stratus.volume.api.common import at_least, attachment_view, context, field, manager, parse_bool

P = "/v3/{project_id}"


def _require_mv(request: Request, version: str = "3.27") -> None:
    if not at_least(request, version):
        raise NotFound(f"The resource could not be found: the attachments API needs microversion {version} "
                       f"(send OpenStack-API-Version: volume {version}).")


async def _get(request: Request, ctx) -> m.Attachment:
    return await manager(request).get(m.Attachment, request.path_params["attachment_id"], ctx, kind="attachment")


async def list_attachments(request: Request, detail: bool = False):
    _require_mv(request)
    ctx = context(request)
    q = request.query_params
    filters = {}
    if q.get("volume_id"):
        filters["volume_id"] = q["volume_id"]
    if q.get("instance_id") or q.get("instance_uuid"):
        filters["instance_uuid"] = q.get("instance_id") or q.get("instance_uuid")
    if q.get("status"):
        filters["status"] = q["status"]
    all_projects = parse_bool(q.get("all_tenants") or "false", "all_tenants")
    rows = await manager(request).list_attachments(ctx, all_projects=all_projects, filters=filters)
    return JSONResponse({"attachments": [attachment_view(a, detail=detail) for a in rows]})


async def list_attachments_detail(request: Request):
    return await list_attachments(request, detail=True)


async def create_attachment(request: Request):
    _require_mv(request)
    ctx = context(request, write=True)
    body = require_object(await read_json(request), "attachment")
    mgr = manager(request)
    volume_id = field(body, "volume_uuid", str, required=True, where="attachment")
    instance_uuid = field(body, "instance_uuid", str, where="attachment")
    connector = body.get("connector")
    if connector is not None and not isinstance(connector, dict):
        raise BadRequest("Invalid input for field/attribute connector: it must be an object with 'host'.")
    mode = field(body, "mode", str, default="rw", where="attachment") if at_least(request, "3.54") else "rw"
    if mode not in ("rw", "ro"):
        raise BadRequest("Invalid input for field/attribute mode: it must be rw or ro.")
    vol = await mgr.get(m.Volume, volume_id, ctx, kind="volume")
    if not instance_uuid:
        raise BadRequest("Invalid input for field/attribute instance_uuid. 'instance_uuid' is a required property.")
    if vol.readonly and mode == "rw":
        mode = "ro"
    att = await mgr.reserve(vol, instance_uuid=instance_uuid, mode=mode)
    if connector:
        try:
            await mgr.connect(vol, att, connector)
        except Exception:
            await mgr.detach(vol, await mgr.get(m.Attachment, att.id))
            raise
    att = await mgr.get(m.Attachment, att.id)
    return JSONResponse({"attachment": attachment_view(att)}, status_code=200)


async def show_attachment(request: Request):
    _require_mv(request)
    ctx = context(request)
    return JSONResponse({"attachment": attachment_view(await _get(request, ctx))})


async def update_attachment(request: Request):
    _require_mv(request)
    ctx = context(request, write=True)
    att = await _get(request, ctx)
    body = require_object(await read_json(request), "attachment")
    connector = body.get("connector")
    if not isinstance(connector, dict) or not connector:
        raise BadRequest("Invalid input for field/attribute connector: an object with 'host' is required.")
    mgr = manager(request)
    vol = await mgr.get(m.Volume, att.volume_id)
    if att.status not in ("reserved", "attaching", "error_attaching"):
        raise BadRequest(f"Invalid attachment: attachment {att.id} is {att.status}; only a reserved attachment "
                         f"takes a connector.")
    await mgr.connect(vol, att, connector)
    return JSONResponse({"attachment": attachment_view(await mgr.get(m.Attachment, att.id))})


async def delete_attachment(request: Request):
    _require_mv(request)
    ctx = context(request, write=True)
    att = await _get(request, ctx)
    mgr = manager(request)
    vol = await mgr.get(m.Volume, att.volume_id)
    await mgr.detach(vol, att)
    return JSONResponse({"attachments": []})


async def attachment_action(request: Request):
    _require_mv(request, "3.44")
    ctx = context(request, write=True)
    att = await _get(request, ctx)
    body = await read_json(request)
    if not isinstance(body, dict) or list(body) != ["os-complete"]:
        raise BadRequest("Invalid input received: the only attachment action is {\"os-complete\": null}.")
    if att.status not in ("attaching", "attached", "reserved"):
        raise BadRequest(f"Invalid attachment: attachment {att.id} is {att.status}; it cannot be completed.")
    if not att.connection_info:
        raise BadRequest(f"Invalid attachment: attachment {att.id} has no connector yet; update it with the "
                         f"compute host's connector first.")
    await manager(request).complete(att)
    return empty(204)


routes = [
    Route(f"{P}/attachments", list_attachments, methods=["GET"]),
    Route(f"{P}/attachments", create_attachment, methods=["POST"]),
    Route(f"{P}/attachments/detail", list_attachments_detail, methods=["GET"]),
    Route(f"{P}/attachments/{{attachment_id}}", show_attachment, methods=["GET"]),
    Route(f"{P}/attachments/{{attachment_id}}", update_attachment, methods=["PUT"]),
    Route(f"{P}/attachments/{{attachment_id}}", delete_attachment, methods=["DELETE"]),
    Route(f"{P}/attachments/{{attachment_id}}/action", attachment_action, methods=["POST"]),
]
