"""Cross-origin requests from browsers (CORS), as Swift answers them.

A container opts in with metadata: ``X-Container-Meta-Access-Control-Allow-Origin`` (origins
separated by spaces, or ``*``), ``-Max-Age`` (seconds a browser may cache a preflight) and
``-Expose-Headers`` (more response headers a page may read).

* ``OPTIONS`` needs no token. Without an ``Origin`` it answers 200 with ``Allow``. A preflight
  (``Origin`` and ``Access-Control-Request-Method``) to a container or object answers 200
  with the ``Access-Control-Allow-*`` headers if the container allows that origin and the
  method is one of ours, else 401 (so does an ``Origin`` without a method).
* Any other request with an ``Origin`` runs as usual (authorized as usual); if the container
  allows the origin, the answer gets ``Access-Control-Allow-Origin`` and
  ``Access-Control-Expose-Headers`` (the simple response headers, Swift's own, the answer's
  user metadata and the container's extra list). Strict mode, as Swift's default: an origin
  the container does not allow gets no CORS headers at all.

Requests without an ``Origin`` pay one dictionary lookup here.
"""

from __future__ import annotations

from .http import Req, Resp

OBJECT_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "COPY")
CONTAINER_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT")
ACCOUNT_METHODS = ("GET", "HEAD", "OPTIONS", "POST")
ALWAYS_EXPOSED = ("cache-control", "content-language", "content-type", "expires",
                  "last-modified", "pragma", "etag", "x-timestamp", "x-trans-id",
                  "x-openstack-request-id")


def _origin_allowed(allowed: str, origin: str) -> bool:
    origins = allowed.split()
    return "*" in origins or origin in origins


class CORS:
    def __init__(self, app, core):
        self.app = app
        self.core = core

    async def __call__(self, req: Req) -> Resp:
        if req.method == "OPTIONS" and req.account:
            return await self.options(req)
        origin = req.headers.get("origin")
        if not origin or not req.container:
            return await self.app(req)
        resp = await self.app(req)
        cinfo, allowed = await self._allowed_origins(req)
        if not _origin_allowed(allowed, origin):
            return resp
        h = resp.headers
        if "access-control-expose-headers" not in h:
            exposed = set(ALWAYS_EXPOSED)
            exposed.update(k for k in h if k.startswith(("x-object-meta-", "x-container-meta-")))
            exposed.update(name.lower() for name in cinfo.meta(
                "x-container-meta-access-control-expose-headers").split())
            h["access-control-expose-headers"] = ", ".join(sorted(exposed))
        if "access-control-allow-origin" not in h:
            if allowed.strip() == "*":
                h["access-control-allow-origin"] = "*"
            else:
                h["access-control-allow-origin"] = origin
                h["vary"] = f"{h['vary']}, Origin" if "vary" in h else "Origin"
        return resp

    async def _allowed_origins(self, req: Req):
        """(the container's info, the origins it allows: '' when none or no container)."""
        cinfo = await self.core.container_info(req.account, req.container)
        allowed = cinfo.meta("x-container-meta-access-control-allow-origin") \
            if cinfo.exists else ""
        return cinfo, allowed

    async def options(self, req: Req) -> Resp:
        methods = OBJECT_METHODS if req.obj else \
            CONTAINER_METHODS if req.container else ACCOUNT_METHODS
        headers = {"allow": ", ".join(methods)}
        origin = req.headers.get("origin")
        if not origin or not req.container:
            return Resp(200, headers, b"")
        cinfo, allowed = await self._allowed_origins(req)
        if not _origin_allowed(allowed, origin) or \
                req.headers.get("access-control-request-method") not in methods:
            return Resp(401, headers, b"")
        if allowed.strip() == "*":
            headers["access-control-allow-origin"] = "*"
        else:
            headers["access-control-allow-origin"] = origin
            headers["vary"] = "Origin"
        max_age = cinfo.meta("x-container-meta-access-control-max-age")
        if max_age:
            headers["access-control-max-age"] = max_age
        headers["access-control-allow-methods"] = ", ".join(methods)
        asked = [h.strip() for h in req.headers.get("access-control-request-headers",
                                                    "").split(",") if h.strip()]
        if asked:
            # every header asked for is allowed: which ones a request may carry is decided
            # when it comes, by the usual rules
            headers["access-control-allow-headers"] = ", ".join(dict.fromkeys(asked))
            headers["vary"] = f"{headers['vary']}, Access-Control-Request-Headers" \
                if "vary" in headers else "Access-Control-Request-Headers"
        return Resp(200, headers, b"")
