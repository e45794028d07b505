"""/v3/{project_id}/messages (3.3+): why an asynchronous operation failed."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import NotFound
from stratus.common.pagination import parse_limit
from stratus.common.web import JSONResponse, empty
from stratus.volume import models as m
from stratus.volume.api.common import at_least, collection_next, context, iso, link, manager

P = "/v3/{project_id}"


def _require_mv(request: Request) -> None:
    if not at_least(request, "3.3"):
        raise NotFound("The resource could not be found: messages need microversion 3.3.")


def view(request: Request, msg: m.Message) -> dict:
    return {"id": msg.id, "resource_type": msg.resource_type, "resource_uuid": msg.resource_uuid,
            "request_id": msg.request_id, "event_id": msg.event_id, "message_level": msg.message_level,
            "user_message": msg.user_message, "created_at": iso(msg.created_at),
            "guaranteed_until": iso(msg.expires_at), "links": link(request, msg.project_id, f"messages/{msg.id}")}


async def list_messages(request: Request):
    _require_mv(request)
    ctx = context(request)
    q = request.query_params
    query = sa.select(m.Message).where(m.Message.project_id == ctx.project_id).order_by(
        m.Message.created_at.desc(), m.Message.id)
    for key in ("resource_uuid", "resource_type", "event_id", "message_level"):
        if q.get(key):
            query = query.where(getattr(m.Message, key) == q[key])
    limit = parse_limit(request, default=None, maximum=1000)
    async with manager(request).db.reader() as s:
        rows = list((await s.execute(query)).scalars().all())
    if q.get("marker"):
        ids = [r.id for r in rows]
        if q["marker"] not in ids:
            from stratus.common.errors import BadRequest

            raise BadRequest(f"Invalid input received: marker {q['marker']} of messages could not be found.")
        rows = rows[ids.index(q["marker"]) + 1:]
    if limit is not None:
        rows = rows[:limit]
    return JSONResponse({"messages": [view(request, r) for r in rows], **collection_next(request, rows, limit,
                                                                                          "messages")})


async def _get(request: Request, ctx) -> m.Message:
    return await manager(request).get(m.Message, request.path_params["message_id"], ctx, kind="message")


async def show_message(request: Request):
    _require_mv(request)
    ctx = context(request)
    return JSONResponse({"message": view(request, await _get(request, ctx))})


async def delete_message(request: Request):
    _require_mv(request)
    ctx = context(request, write=True)
    msg = await _get(request, ctx)
    async with manager(request).db.session() as s:
        await s.execute(sa.delete(m.Message).where(m.Message.id == msg.id))
    return empty(204)


routes = [
    Route(f"{P}/messages", list_messages, methods=["GET"]),
    Route(f"{P}/messages/{{message_id}}", show_message, methods=["GET"]),
    Route(f"{P}/messages/{{message_id}}", delete_message, methods=["DELETE"]),
]
