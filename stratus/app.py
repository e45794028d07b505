"""The ASGI application of a Stratus process: every service it runs, under its path prefixes."""

from __future__ import annotations

import os

import orjson

from stratus import config as config_mod
from stratus.common.lifespan import serve_lifespan
from stratus.runtime import Runtime


class RootApp:
    """Dispatches by path prefix (DevStack style) and runs the process's start-up and shut-down.

    A plain prefix table instead of Starlette's Mount: Mount redirects ``/identity`` to
    ``/identity/`` and discovery URLs must answer both forms without a redirect.
    """

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        routes = []
        for spec in runtime.specs:
            app = spec.create_app(runtime)
            for i, prefix in enumerate(spec.mounts):
                routes.append((prefix.rstrip("/"), spec.strip_prefix and i == 0, app))
        # Longest prefix first so /v1 never shadows /v1x and nested prefixes work.
        self.routes = sorted(routes, key=lambda r: len(r[0]), reverse=True)

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "lifespan":
            return await serve_lifespan(self.runtime, receive, send)
        path = scope["path"]
        for prefix, strip, app in self.routes:
            if path == prefix or path.startswith(prefix + "/") or (prefix == "" and path.startswith("/")):
                if strip and prefix:
                    scope = dict(scope)
                    scope["root_path"] = scope.get("root_path", "") + prefix
                    if path == prefix:
                        scope["path"] = prefix + "/"
                return await app(scope, receive, send)
        if kind != "http":
            return
        if path == "/":
            body = orjson.dumps({"stratus": {"services": {
                s.name: f"{self.runtime.public_url}{s.mounts[0]}" for s in self.runtime.specs}}})
            status = 200
        else:
            body = orjson.dumps({"error": {"code": 404, "title": "Not Found",
                                           "message": f"No service is mounted at {path}"}})
            status = 404
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

def create_app_from_env() -> RootApp:
    """uvicorn worker factory: configuration comes from STRATUS_* variables set by the CLI."""
    from stratus.common import log as logmod

    cfg = config_mod.load()
    logmod.setup(cfg["debug"])
    names = os.environ.get("STRATUS_SERVE_SERVICES")
    runtime = Runtime(cfg, names.split(",") if names else None)
    return RootApp(runtime)
