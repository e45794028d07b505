"""The object-store proxy: Swift's v1 API on top of the storage nodes.

The pipeline, outermost first (each a small filter in its own module, as Swift's middlewares)::

    healthcheck, /info → v1 auth → S3 (/s3) → tempurl → CORS → keystone auth → bulk delete →
    bulk upload → copy → large objects (SLO, DLO) → versioned writes → quotas → core (rings +
    nodes)

``create_proxy_app(...)`` returns the ASGI app; :class:`Proxy` keeps the pieces so that the
service can close them. Settings (``[objectstore]``) are read in :mod:`.settings`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import orjson

from stratus.common.requestid import request_id_var

from .http import HEARTBEAT_INTERVAL, ASGIAdapter, Req, Resp, SwiftError, new_trans_id

access_log = logging.getLogger("stratus.api")  # the logger of every service's access lines


def info_document(settings) -> dict:
    """The /info capabilities (what swiftclient and tempest read)."""
    from . import bulk

    return {
        "swift": {
            "version": "2.34.0",
            "max_file_size": settings.max_file_size,
            "max_meta_name_length": 128, "max_meta_value_length": 256, "max_meta_count": 90,
            "max_meta_overall_size": 4096, "max_header_size": MAX_HEADER_SIZE,
            "strict_cors_mode": True,
            "max_object_name_length": 1024, "container_listing_limit": 10000,
            "account_listing_limit": 10000, "max_account_name_length": 256,
            "max_container_name_length": 256, "valid_api_versions": ["v1", "v1.0"],
            "extra_header_count": 0, "policies": [{"name": "Policy-0", "default": True}],
            "strict_cors_mode": True, "allow_account_management": False,
            "account_autocreate": True,
        },
        "slo": {"max_manifest_segments": settings.max_manifest_segments,
                "max_manifest_size": settings.max_manifest_size,
                "min_segment_size": 1, "yield_frequency": int(HEARTBEAT_INTERVAL),
                "allow_async_delete": False},
        "dlo": {"max_segments": 10000},
        "bulk_delete": {"max_deletes_per_request": settings.max_deletes_per_request,
                        "max_failed_deletes": settings.max_failed_deletes},
        "bulk_upload": {"max_containers_per_extraction": settings.max_containers_per_extraction,
                        "max_failed_extractions": settings.max_failed_extractions},
        "tempurl": {"methods": ["GET", "HEAD", "PUT", "POST", "DELETE"],
                    "incoming_remove_headers": ["x-timestamp"],
                    "incoming_allow_headers": [],
                    "outgoing_remove_headers": ["x-object-meta-*"],
                    "outgoing_allow_headers": ["x-object-meta-public-*"],
                    "allowed_digests": ["sha1", "sha256", "sha512"]},
        "versioned_writes": {"allowed_flags": ["x-versions-location", "x-history-location"]},
        "account_quotas": {},
        "container_quotas": {},
        "copy": {},
        "keystoneauth": {},
    }


MAX_HEADER_SIZE = 8192  # one header line, name and value (the /info constraint)


class Edge:
    """/healthcheck and /info, answered without touching the nodes or the auth."""

    def __init__(self, app, settings):
        self.app = app
        self.info = orjson.dumps(info_document(settings))

    async def __call__(self, req: Req) -> Resp:
        path = req.path
        if path == "/healthcheck":
            return Resp(200, {"content-type": "text/plain"}, b"OK")
        if path in ("/info", "/info/"):
            if req.method == "OPTIONS":
                return Resp(200, {"allow": "GET, HEAD, OPTIONS"}, b"")
            if req.method not in ("GET", "HEAD"):
                raise SwiftError(405, "Use GET /info", {"allow": "GET, HEAD, OPTIONS"})
            return Resp(200, {"content-type": "application/json; charset=UTF-8"}, self.info)
        for name, value in req.headers.items():
            if len(name) + len(value) + 2 > MAX_HEADER_SIZE:
                raise SwiftError(400, f"Header line too long: {name} (a header is limited to "
                                      f"{MAX_HEADER_SIZE} bytes)")
        if path.startswith("/v1") and not valid_name_path(path):
            # Swift's answer, word for word: clients and its functional tests match the body
            return Resp(412, {"content-type": "text/plain; charset=UTF-8"},
                        b"Invalid UTF8 or contains NULL")
        if path.startswith(("/v1", "/auth", "/s3")):
            return await self.app(req)
        raise SwiftError(404, f"The resource could not be found: {path}")


def valid_name_path(path: str) -> bool:
    """No NUL and only valid UTF-8 (the path was decoded with surrogate escapes, so a byte
    that was not UTF-8 is a lone surrogate here and will not encode)."""
    if "\x00" in path:
        return False
    if path.isascii():
        return True
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Proxy:
    def __init__(self, settings, *, identity_url: str, public_url: str,
                 ready: asyncio.Event | None = None):
        from . import auth, bulk, copy, cors, large, quotas, s3, versioning
        from .core import Core

        self.settings = settings
        self.core = Core(Path(settings.ring_dir), max_file_size=settings.max_file_size,
                         info_ttl=settings.info_ttl, node_timeout=settings.node_timeout,
                         ready=ready)
        app = quotas.Quotas(self.core, self.core)
        app = versioning.VersionedWrites(app, self.core)
        self.versioning = app
        app = large.LargeObjects(app, self.core, settings)
        app = copy.Copy(app, self.core)
        app = bulk.BulkUpload(app, self.core,
                              max_containers=settings.max_containers_per_extraction,
                              max_failed=settings.max_failed_extractions)
        app = bulk.BulkDelete(app, self.core, max_deletes=settings.max_deletes_per_request,
                              max_failed=settings.max_failed_deletes)
        app = auth.KeystoneAuth(app, self.core, operator_roles=settings.operator_roles,
                                reader_roles=settings.reader_roles,
                                reseller_admin_role=settings.reseller_admin_role)
        app = cors.CORS(app, self.core)  # above the auth: a preflight carries no token
        app = auth.TempURL(app, self.core)
        app = self.s3 = s3.S3(app, self.core, identity_url)
        self.v1auth = auth.V1Auth(app, identity_url, public_url)
        self.pipeline = Edge(self.v1auth, settings)

    async def close(self):
        await self.v1auth.close()
        await self.s3.close()
        await self.core.close()


class TransIdMiddleware:
    """Swift's transaction id as the request id: in the logs (``request_id_var``), and on every
    response as X-Trans-Id and X-Openstack-Request-Id (the adapter writes both headers).

    The proxy's own take on :class:`stratus.common.web.RequestIdMiddleware` (same access-log
    line, same logger): that module brings Starlette, which the proxy process does not need.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        trans_id = scope.get("stratus.request_id")
        if trans_id is None:
            trans_id = scope["stratus.request_id"] = new_trans_id()
        token = request_id_var.set(trans_id)
        if not access_log.isEnabledFor(logging.INFO):
            try:
                return await self.app(scope, receive, send)
            finally:
                request_id_var.reset(token)
        start = time.perf_counter()
        status = [0]

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            access_log.info("%s %s %s %d %.1fms", scope.get("method"), scope.get("root_path", ""),
                            scope.get("path"), status[0], (time.perf_counter() - start) * 1000)
            request_id_var.reset(token)


def create_proxy_app(proxy: Proxy, validator):
    """The ASGI app: request ids, optional Keystone token check, then the filters."""
    from stratus.common.auth import AuthMiddleware

    app = ASGIAdapter(proxy.pipeline)
    app = AuthMiddleware(app, validator=validator, fault_style="swift", optional=True)
    return TransIdMiddleware(app)
