"""API errors and how each service renders them.

Every OpenStack API has its own fault body (see docs/api-compat.md): keystone wraps errors in
``{"error": {...}}``, nova and cinder name the fault (``{"itemNotFound": {...}}``), neutron uses
``{"NeutronError": {...}}``, glance a flat object and swift plain text. A service picks its style
once; handlers just raise :class:`ApiError` (or a subclass) and never build fault bodies.
"""

from __future__ import annotations

import html
from http import HTTPStatus

import orjson


class ApiError(Exception):
    """An error the client caused (4xx) or one we report (5xx), with a message saying what to fix."""

    status = 400

    def __init__(self, message: str, *, status: int | None = None, kind: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        # neutron's "type" (e.g. NetworkNotFound); other styles ignore it.
        self.kind = kind
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class NotAcceptable(ApiError):
    status = 406


class Conflict(ApiError):
    status = 409


class PreconditionFailed(ApiError):
    status = 412


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class RangeNotSatisfiable(ApiError):
    status = 416


class UnprocessableEntity(ApiError):
    status = 422


class ServiceUnavailable(ApiError):
    status = 503


NOVA_FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    406: "notAcceptable",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def render_fault(style: str, status: int, message: str, kind: str | None = None) -> tuple[bytes, str]:
    """Return (body, content type) of a fault in the given API style."""
    if style == "keystone":
        body = {"error": {"code": status, "title": _title(status), "message": message}}
    elif style == "nova":
        name = NOVA_FAULT_NAMES.get(status, "computeFault")
        body = {name: {"code": status, "message": message}}
    elif style == "neutron":
        body = {"NeutronError": {"type": kind or _title(status).replace(" ", ""),
                                 "message": message, "detail": ""}}
    elif style == "glance":
        body = {"code": status, "title": _title(status), "message": message}
    elif style == "swift":
        if status == 400 and message:
            # Swift answers a malformed request with just the sentence saying what is wrong
            # ("Non-integer X-Delete-At"), typed as its default HTML; upstream's functional
            # tests read both. Escaped, so that no value quoted in it can become markup.
            return html.escape(message, quote=False).encode(), "text/html; charset=UTF-8"
        return (f"<html><h1>{_title(status)}</h1><p>{html.escape(message)}</p></html>".encode(),
                "text/html; charset=UTF-8")
    else:
        body = {"error": {"code": status, "message": message}}
    return orjson.dumps(body), "application/json"
