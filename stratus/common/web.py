"""Small helpers every API uses: JSON in and out, request ids, error handling middleware."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from stratus.common.errors import ApiError, BadRequest, UnsupportedMediaType, render_fault
from stratus.common.requestid import request_id_var

log = logging.getLogger("stratus.api")


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


class JSONResponse(Response):
    """orjson-encoded JSON; fast and handles datetimes."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def empty(status: int = 204, headers: dict | None = None) -> Response:
    return Response(status_code=status, headers=headers)


async def read_json(request: Request, *, required: bool = True) -> Any:
    """The request body as JSON, or a 400 that says what is wrong with it."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise BadRequest("The request body is empty; a JSON document is required.")
        return None
    ctype = request.headers.get("content-type", "application/json")
    if "json" not in ctype and not ctype.startswith("text/plain") and ctype != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(f"Content-Type {ctype!r} is not supported; send application/json.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Malformed JSON in request body: {exc}") from None


def require_object(body: Any, key: str) -> dict:
    """``body[key]`` as a dict, or a 400 naming the missing/invalid member."""
    if not isinstance(body, dict) or key not in body:
        raise BadRequest(f"The request body must be a JSON object with a '{key}' member.")
    value = body[key]
    if not isinstance(value, dict):
        raise BadRequest(f"'{key}' must be a JSON object.")
    return value


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


class RequestIdMiddleware:
    """Gives every request an id, puts it in the logs and on the response.

    Pure ASGI (not BaseHTTPMiddleware) so bodies stream and context variables propagate.
    ``extra_headers`` lets a service add aliases (nova's X-Compute-Request-Id).
    """

    def __init__(self, app, extra_headers: tuple[str, ...] = (), access_log: bool = True):
        self.app = app
        self.header_names = [b"x-openstack-request-id", *(h.lower().encode() for h in extra_headers)]
        self.access_log = access_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = scope.get("stratus.request_id")
        if rid is None:
            rid = new_request_id()
            scope["stratus.request_id"] = rid
        token = request_id_var.set(rid)
        start = time.perf_counter()
        status_holder = [0]
        rid_bytes = rid.encode()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for name in self.header_names:
                    if name not in present:
                        headers.append((name, rid_bytes))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log and log.isEnabledFor(logging.INFO):
                log.info("%s %s %s %d %.1fms", scope.get("method"), scope.get("root_path", ""),
                         scope.get("path"), status_holder[0], (time.perf_counter() - start) * 1000)
            request_id_var.reset(token)


def fault_handlers(style: str) -> dict:
    """Starlette exception handlers that render every error in the service's fault style."""

    def respond(status: int, message: str, kind: str | None = None, headers: dict | None = None,
                method: str = "GET") -> Response:
        if method == "HEAD" or status in (204, 304):
            return Response(status_code=status, headers=headers)
        body, ctype = render_fault(style, status, message, kind)
        return Response(body, status_code=status, media_type=ctype, headers=headers)

    async def on_api_error(request: Request, exc: ApiError):
        return respond(exc.status, exc.message, exc.kind, exc.headers, request.method)

    async def on_http_exception(request: Request, exc: HTTPException):
        message = exc.detail
        if exc.status_code == 404:
            message = f"The resource could not be found: {request.url.path}"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
        return respond(exc.status_code, message, None, getattr(exc, "headers", None), request.method)

    async def on_unexpected(request: Request, exc: Exception):
        log.exception("unexpected error handling %s %s", request.method, request.url.path)
        return respond(500, "An unexpected error prevented the server from fulfilling your request.",
                       None, None, request.method)

    return {ApiError: on_api_error, HTTPException: on_http_exception, Exception: on_unexpected}
