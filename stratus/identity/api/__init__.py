"""Identity v3 as an ASGI app."""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.auth import AuthMiddleware
from stratus.common.context import RequestContext
from stratus.common.errors import NotFound
from stratus.common.versions import base_url
from stratus.common.web import JSONResponse, RequestIdMiddleware, fault_handlers
from stratus.identity.api import assignments, auth, catalog, credentials, resources
from stratus.identity.api.common import POLICY

VERSION = {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z"}

_PUBLIC = re.compile(r"^/(v3/?)?$|^/v3/auth/tokens$|^/v3/(s3|ec2)tokens$|^/v3/users/[^/]+/password$")


def _version_entry(request: Request) -> dict:
    return {**VERSION, "links": [{"rel": "self", "href": f"{base_url(request)}/v3/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}


async def versions(request: Request):
    return JSONResponse({"versions": {"values": [_version_entry(request)]}}, status_code=300)


async def version(request: Request):
    return JSONResponse({"version": _version_entry(request)})


class LocalValidator:
    """Identity checks its own callers' tokens directly, with the same cache as validation."""

    def __init__(self, tokens):
        self.tokens = tokens

    async def validate(self, token: str) -> RequestContext | None:
        try:
            body = await self.tokens.validate(token)
        except NotFound:
            return None
        ctx = body.get("__ctx__")
        if ctx is None:
            ctx = RequestContext.from_token_body(body["token"], token)
            body["__ctx__"] = ctx
        return ctx


def create_app(manager, tokens, enforcer, public_identity_url: str | None = None) -> Starlette:
    routes = [Route("/", versions, methods=["GET", "HEAD"]), Route("/v3", version, methods=["GET", "HEAD"]),
              Route("/v3/", version, methods=["GET", "HEAD"]),
              *auth.routes, *resources.routes, *assignments.routes, *catalog.routes, *credentials.routes]
    app = Starlette(routes=routes, exception_handlers=fault_handlers("keystone"), middleware=[
        Middleware(RequestIdMiddleware),
        Middleware(AuthMiddleware, validator=LocalValidator(tokens), fault_style="keystone",
                   public=lambda path: bool(_PUBLIC.match(path)), www_authenticate=public_identity_url),
    ])
    app.router.redirect_slashes = False
    app.state.manager = manager
    app.state.tokens = tokens
    app.state.enforcer = enforcer
    return app


__all__ = ["create_app", "POLICY"]
