"""Networking v2.0 as an ASGI app (mounted at /network; clients append /v2.0 themselves)."""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.auth import AuthMiddleware
from stratus.common.versions import base_url
from stratus.common.web import JSONResponse, RequestIdMiddleware, fault_handlers
from stratus.network.api import extras, resources

_PUBLIC = re.compile(r"^/(v2\.0/?)?$")


async def versions(request: Request):
    return JSONResponse({"versions": [{"id": "v2.0", "status": "CURRENT", "links": [
        {"rel": "self", "href": f"{base_url(request)}/v2.0/"}]}]})


async def version_root(request: Request):
    base = f"{base_url(request)}/v2.0"
    names = [("network", "networks"), ("subnet", "subnets"), ("port", "ports"), ("router", "routers"),
             ("floatingip", "floatingips"), ("security_group", "security-groups"),
             ("security_group_rule", "security-group-rules"), ("quota", "quotas")]
    return JSONResponse({"resources": [{"name": n, "collection": c, "links": [{"rel": "self",
                                                                              "href": f"{base}/{c}"}]}
                                       for n, c in names]})


def create_app(manager, validator) -> Starlette:
    routes = [Route("/", versions, methods=["GET", "HEAD"]), Route("/v2.0", version_root, methods=["GET", "HEAD"]),
              Route("/v2.0/", version_root, methods=["GET", "HEAD"]), *extras.routes, *resources.routes]
    app = Starlette(routes=routes, exception_handlers=fault_handlers("neutron"), middleware=[
        Middleware(RequestIdMiddleware),
        Middleware(AuthMiddleware, validator=validator, fault_style="neutron",
                   public=lambda path: bool(_PUBLIC.match(path))),
    ])
    app.router.redirect_slashes = False
    app.state.manager = manager
    return app
