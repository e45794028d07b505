"""Compute v2.1 as an ASGI app (mounted at /compute in the all-in-one)."""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.auth import AuthMiddleware
from stratus.common.microversion import MicroversionMiddleware
from stratus.common.versions import base_url
from stratus.common.web import JSONResponse, RequestIdMiddleware, fault_handlers
from stratus.compute.api import flavors, keypairs, quotas
from stratus.compute.api.common import MAX_VERSION, MIN_VERSION, POLICY

_DISCOVERY = re.compile(r"^/(v2(\.1)?/?)?$")
_METADATA = re.compile(r"^(/compute)?/metadata(/|$)")
# The legacy URL form with the project id: /v2.1/{project_id}/servers → /v2.1/servers.
_PROJECT_PREFIX = re.compile(r"^(/v2\.1)/([0-9a-fA-F]{32}|[0-9a-fA-F-]{36})(/.*)?$")


def _v21(request: Request) -> dict:
    return {"id": "v2.1", "status": "CURRENT", "version": MAX_VERSION, "min_version": MIN_VERSION,
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base_url(request)}/v2.1/"},
                      {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.compute+json;version=2.1"}]}


def _v20(request: Request) -> dict:
    return {"id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": "",
            "updated": "2025-07-04T12:00:00Z", "links": [{"rel": "self", "href": f"{base_url(request)}/v2/"}]}


async def versions(request: Request):
    return JSONResponse({"versions": [_v20(request), _v21(request)]})


async def version(request: Request):
    return JSONResponse({"version": _v21(request)})


def _is_discovery(path: str) -> bool:
    """Version documents (and the metadata service) answer whatever microversion is asked for."""
    tail = path.rstrip("/")
    return tail == "" or tail.endswith(("/compute", "/v2.1", "/v2")) or bool(_METADATA.search(path))


class ProjectPrefixMiddleware:
    """Accept /v2.1/{project_id}/... (old catalogs put the project id in the URL)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            root = scope.get("root_path", "")
            path = scope["path"]
            rel = path[len(root):] if root and path.startswith(root) else path
            match = _PROJECT_PREFIX.match(rel)
            if match and match.group(3):
                scope = dict(scope)
                scope["path"] = (root if path.startswith(root) else "") + match.group(1) + match.group(3)
                scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


def create_app(state, enforcer, validator) -> Starlette:
    from stratus.compute.api import actions, admin, groups, interfaces, metadata, servers, volume_attachments

    routes = [Route("/", versions, methods=["GET"]), Route("/v2.1", version, methods=["GET"]),
              Route("/v2.1/", version, methods=["GET"]),
              *flavors.routes, *keypairs.routes, *quotas.routes, *servers.routes, *actions.routes, *groups.routes,
              *admin.routes, *metadata.routes, *volume_attachments.routes,
              *interfaces.routes]

    def public(path: str) -> bool:
        # The metadata service authenticates the proxy's signature instead of a token.
        return bool(_DISCOVERY.match(path)) or path == "/metadata" or path.startswith("/metadata/")

    app = Starlette(routes=routes, exception_handlers=fault_handlers("nova"), middleware=[
        Middleware(RequestIdMiddleware, extra_headers=("X-Compute-Request-Id",)),
        Middleware(ProjectPrefixMiddleware),
        Middleware(MicroversionMiddleware, service_type="compute", minimum=MIN_VERSION, maximum=MAX_VERSION,
                   legacy_header="X-OpenStack-Nova-API-Version", fault_style="nova",
                   exempt=_is_discovery),
        Middleware(AuthMiddleware, validator=validator, fault_style="nova", public=public),
    ])
    app.router.redirect_slashes = False
    app.state.compute = state
    app.state.enforcer = enforcer
    return app


__all__ = ["create_app", "POLICY"]
