"""Image API v2 as an ASGI app."""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.middleware import Middleware

from stratus.common.auth import AuthMiddleware
from stratus.common.web import RequestIdMiddleware, fault_handlers
from stratus.image.api import images, info, members

# Discovery documents answer without a token, with and without the trailing slash.
_PUBLIC = re.compile(r"^/$|^/versions/?$|^/v2/?$")


def create_app(manager, transfers, validator) -> Starlette:
    app = Starlette(routes=[*info.routes, *images.routes, *members.routes],
                    exception_handlers=fault_handlers("glance"), middleware=[
                        Middleware(RequestIdMiddleware),
                        Middleware(AuthMiddleware, validator=validator, fault_style="glance",
                                   public=lambda path: bool(_PUBLIC.match(path))),
                    ])
    app.router.redirect_slashes = False
    app.state.manager = manager
    app.state.transfers = transfers
    return app


__all__ = ["create_app"]
