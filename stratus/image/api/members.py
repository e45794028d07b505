"""/v2/images/{id}/members: sharing an image with other projects."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import BadRequest
from stratus.common.web import JSONResponse, empty, read_json
from stratus.image.api.common import ctx, manager


async def list_members(request: Request):
    members = await manager(request).list_members(ctx(request), request.path_params["image_id"])
    return JSONResponse({"members": members, "schema": "/v2/schemas/members"})


async def add_member(request: Request):
    body = await read_json(request)
    if not isinstance(body, dict) or "member" not in body:
        raise BadRequest("The request body must be {\"member\": \"<project id>\"}.")
    member = await manager(request).add_member(ctx(request), request.path_params["image_id"], body["member"])
    return JSONResponse(member)


async def show_member(request: Request):
    return JSONResponse(await manager(request).show_member(ctx(request), request.path_params["image_id"],
                                                           request.path_params["member_id"]))


async def update_member(request: Request):
    body = await read_json(request)
    return JSONResponse(await manager(request).update_member(ctx(request), request.path_params["image_id"],
                                                             request.path_params["member_id"], body))


async def delete_member(request: Request):
    await manager(request).delete_member(ctx(request), request.path_params["image_id"],
                                         request.path_params["member_id"])
    return empty(204)


routes = [
    Route("/v2/images/{image_id}/members", list_members, methods=["GET"]),
    Route("/v2/images/{image_id}/members", add_member, methods=["POST"]),
    Route("/v2/images/{image_id}/members/{member_id}", show_member, methods=["GET"]),
    Route("/v2/images/{image_id}/members/{member_id}", update_member, methods=["PUT"]),
    Route("/v2/images/{image_id}/members/{member_id}", delete_member, methods=["DELETE"]),
]
