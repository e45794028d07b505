"""/v2/images: records, JSON patch, data, import, actions and tags."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from stratus.common.errors import BadRequest, UnsupportedMediaType
from stratus.common.web import JSONResponse, empty, read_json
from stratus.image.api.common import ctx, image_location, manager, transfers

PATCH_MEDIA_TYPE = "application/openstack-images-v2.1-json-patch"


async def list_images(request: Request):
    images, next_marker = await manager(request).list(ctx(request), request.query_params)
    body = {"images": images, "first": "/v2/images", "schema": "/v2/schemas/images"}
    if next_marker:
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
        params.append(("marker", next_marker))
        body["next"] = f"/v2/images?{urlencode(params)}"
    return JSONResponse(body)


async def create_image(request: Request):
    body = await read_json(request)
    image = await manager(request).create(ctx(request), body)
    headers = {"Location": image_location(request, image["id"]),
               "OpenStack-image-import-methods": ",".join(transfers(request).import_methods())}
    return JSONResponse(image, status_code=201, headers=headers)


async def show_image(request: Request):
    return JSONResponse(await manager(request).show(ctx(request), request.path_params["image_id"]))


async def update_image(request: Request):
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype != PATCH_MEDIA_TYPE:
        raise UnsupportedMediaType(f"PATCH needs Content-Type {PATCH_MEDIA_TYPE}, not {ctype or 'none'!r}.",
                                   headers={"Accept-Patch": PATCH_MEDIA_TYPE})
    ops = await read_json(request)
    return JSONResponse(await manager(request).update(ctx(request), request.path_params["image_id"], ops))


async def delete_image(request: Request):
    img = await manager(request).delete(ctx(request), request.path_params["image_id"])
    await transfers(request).delete_data(img)
    return empty(204)


def _declared_size(request: Request) -> int | None:
    for name in ("x-openstack-image-size", "content-length"):
        raw = request.headers.get(name)
        if raw:
            try:
                value = int(raw)
            except ValueError:
                raise BadRequest(f"Header {name} must be an integer, not {raw!r}.") from None
            if value < 0:
                raise BadRequest(f"Header {name} must not be negative.")
            return value
    return None


def _require_octet_stream(request: Request) -> None:
    ctype = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
    if ctype != "application/octet-stream":
        raise UnsupportedMediaType(f"Image data must be sent as application/octet-stream, not {ctype!r}.")


async def upload_file(request: Request):
    _require_octet_stream(request)
    await transfers(request).upload(ctx(request), request.path_params["image_id"], request.stream(),
                                    _declared_size(request))
    return empty(204)


async def stage_file(request: Request):
    _require_octet_stream(request)
    await transfers(request).upload(ctx(request), request.path_params["image_id"], request.stream(),
                                    _declared_size(request), stage=True)
    return empty(204)


async def import_image(request: Request):
    body = await read_json(request)
    await transfers(request).start_import(ctx(request), request.path_params["image_id"], body)
    return empty(202)


async def download_file(request: Request):
    t = transfers(request)
    img, offset, length, partial = await t.open_download(ctx(request), request.path_params["image_id"],
                                                         request.headers.get("range"))
    if offset is None:
        return empty(204)
    headers = {"Content-Length": str(length), "Accept-Ranges": "bytes"}
    if partial:
        headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{img.size}"
    elif img.checksum:
        headers["Content-MD5"] = img.checksum
    if request.method == "HEAD":
        return Response(status_code=206 if partial else 200, headers=headers, media_type="application/octet-stream")
    return StreamingResponse(t.read(img, offset, length), status_code=206 if partial else 200,
                             headers=headers, media_type="application/octet-stream")


async def deactivate(request: Request):
    await manager(request).set_active_state(ctx(request), request.path_params["image_id"], True)
    return empty(204)


async def reactivate(request: Request):
    await manager(request).set_active_state(ctx(request), request.path_params["image_id"], False)
    return empty(204)


async def add_tag(request: Request):
    await manager(request).add_tag(ctx(request), request.path_params["image_id"], request.path_params["tag"])
    return empty(204)


async def delete_tag(request: Request):
    await manager(request).delete_tag(ctx(request), request.path_params["image_id"], request.path_params["tag"])
    return empty(204)


routes = [
    Route("/v2/images", list_images, methods=["GET"]),
    Route("/v2/images", create_image, methods=["POST"]),
    Route("/v2/images/{image_id}", show_image, methods=["GET"]),
    Route("/v2/images/{image_id}", update_image, methods=["PATCH"]),
    Route("/v2/images/{image_id}", delete_image, methods=["DELETE"]),
    Route("/v2/images/{image_id}/file", upload_file, methods=["PUT"]),
    Route("/v2/images/{image_id}/file", download_file, methods=["GET", "HEAD"]),
    Route("/v2/images/{image_id}/stage", stage_file, methods=["PUT"]),
    Route("/v2/images/{image_id}/import", import_image, methods=["POST"]),
    Route("/v2/images/{image_id}/actions/deactivate", deactivate, methods=["POST"]),
    Route("/v2/images/{image_id}/actions/reactivate", reactivate, methods=["POST"]),
    Route("/v2/images/{image_id}/tags/{tag}", add_tag, methods=["PUT"]),
    Route("/v2/images/{image_id}/tags/{tag}", delete_tag, methods=["DELETE"]),
]
