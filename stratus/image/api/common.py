"""What every image route needs: the caller, the manager, the transfer engine."""

from __future__ import annotations

from starlette.requests import Request

from stratus.common.context import RequestContext, get_context


def ctx(request: Request) -> RequestContext:
    return get_context(request)


def manager(request: Request):
    return request.app.state.manager


def transfers(request: Request):
    return request.app.state.transfers


def image_location(request: Request, image_id: str) -> str:
    from stratus.common.versions import base_url

    return f"{base_url(request)}/v2/images/{image_id}"
