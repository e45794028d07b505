"""Block Storage v3 as an ASGI app (mounted at /volume)."""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.auth import AuthMiddleware
from stratus.common.microversion import MicroversionMiddleware
from stratus.common.versions import version_entry
from stratus.common.web import JSONResponse, RequestIdMiddleware, fault_handlers
from stratus.volume.api import attachments, backups, messages, misc, snapshots, types, volumes
from stratus.volume.api.common import POLICY

MIN_VERSION = "3.0"
MAX_VERSION = "3.71"

_DISCOVERY = re.compile(r"^/(v3/?)?$")
# The microversion middleware sees the full path, mount prefix included (/volume/v3/).
_DISCOVERY_FULL = re.compile(r"^(/[^/]+)?/(v3/?)?$")
# Collections that may follow /v3/ directly since 3.67 (no project id in the URL).
COLLECTIONS = {"volumes", "snapshots", "attachments", "types", "backups", "os-quota-sets", "limits",
               "os-availability-zone", "os-services", "extensions", "messages"}


def _entry(request: Request) -> dict:
    return version_entry(request, "v3.0", "/v3/", min_version=MIN_VERSION, max_version=MAX_VERSION,
                         media_type="application/vnd.openstack.volume+json;version=3")


async def versions(request: Request):
    return JSONResponse({"versions": [_entry(request)]}, status_code=300)


async def version(request: Request):
    return JSONResponse({"versions": [_entry(request)]})


class ProjectlessUrls:
    """Since 3.67 the project id may be left out of URLs: /v3/volumes means /v3/<token project>/volumes.

    Runs after authentication so the token's project is known; rewrites the path for the router.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            root = scope.get("root_path", "")
            path = scope["path"][len(root):] if scope["path"].startswith(root) else scope["path"]
            parts = path.split("/", 3)
            ctx = scope.get("stratus.context")
            if len(parts) >= 3 and parts[1] == "v3" and parts[2] in COLLECTIONS and ctx is not None:
                scope = dict(scope)
                scope["path"] = f"{root}/v3/{ctx.project_id}/" + "/".join(parts[2:])
                scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)


def create_app(manager, enforcer, validator, runtime_client=None) -> Starlette:
    routes = [Route("/", versions, methods=["GET", "HEAD"]), Route("/v3", version, methods=["GET", "HEAD"]),
              Route("/v3/", version, methods=["GET", "HEAD"]),
              *volumes.routes, *snapshots.routes, *attachments.routes, *types.routes, *backups.routes, *misc.routes,
              *messages.routes]
    app = Starlette(routes=routes, exception_handlers=fault_handlers("nova"), middleware=[
        Middleware(RequestIdMiddleware),
        Middleware(AuthMiddleware, validator=validator, fault_style="nova",
                   public=lambda path: bool(_DISCOVERY.match(path))),
        Middleware(MicroversionMiddleware, service_type="volume", minimum=MIN_VERSION, maximum=MAX_VERSION,
                   fault_style="nova", exempt=lambda path: bool(_DISCOVERY_FULL.match(path))),
        Middleware(ProjectlessUrls),
    ])
    app.router.redirect_slashes = False
    app.state.manager = manager
    app.state.enforcer = enforcer
    app.state.runtime_client = runtime_client
    return app


__all__ = ["create_app", "POLICY"]
