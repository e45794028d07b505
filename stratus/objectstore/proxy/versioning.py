"""Versioned writes: a container with ``X-Versions-Location: <archive>`` (stack mode) or
``X-History-Location: <archive>`` (history mode) keeps overwritten objects in the archive
container as ``<3 hex digits: length of name><name>/<timestamp>``.

* PUT (or COPY onto) an existing object: the current version is copied into the archive first.
* DELETE, history mode: the current version is archived, then deleted.
* DELETE, stack mode: the newest archived version is restored in place and removed from the
  archive; with no archived version the object is simply deleted.

Archive copies are raw (a large object's manifest is archived, not its content) and are made as
the caller, so the caller needs write access to the archive container; a temp URL's holder, whose
URL reaches one object, has them made on the proxy's authority once the change is authorized.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

import orjson

from .http import Req, Resp, SwiftError

KEPT_HEADERS = ("content-type", "content-encoding", "content-disposition", "content-language",
                "cache-control", "expires", "x-delete-at", "x-object-manifest")


def archive_prefix(obj: str) -> str:
    return "%03x%s/" % (len(obj.encode("utf-8", "surrogateescape")), obj)


class VersionedWrites:
    def __init__(self, app, core):
        self.app = app
        self.core = core

    async def __call__(self, req: Req) -> Resp:
        if req.container and req.obj is None and req.method in ("PUT", "POST"):
            self.check_container_headers(req)
            return await self.app(req)
        if req.obj is None or req.method not in ("PUT", "DELETE") or req.env.get("versioning"):
            return await self.app(req)
        cinfo = await self.core.container_info(req.account, req.container)
        if not cinfo.exists:
            return await self.app(req)
        stack = cinfo.meta("x-versions-location")
        history = cinfo.meta("x-history-location")
        location = history or stack
        if not location or req.query.get("multipart-manifest") == "delete":
            return await self.app(req)
        self.core.authorize(req, cinfo)  # archive only for callers who may make the change
        archive = unquote(location)
        if req.method == "PUT":
            await self.archive_current(req, archive)
            return await self.app(req)
        if history:
            await self.archive_current(req, archive)
            return await self.app(req)
        return await self.restore_previous(req, archive)

    @staticmethod
    def check_container_headers(req: Req) -> None:
        h = req.headers
        if h.get("x-versions-location") and h.get("x-history-location"):
            raise SwiftError(400, "Only one of X-Versions-Location and X-History-Location "
                                  "may be set")
        for name in ("x-versions-location", "x-history-location"):
            value = h.get(name)
            if value is None:
                continue
            if value == "":
                h["x-remove-" + name[2:]] = "1"
                del h[name]
                continue
            target = unquote(value)
            if "/" in target.strip("/") or not target.strip("/"):
                raise SwiftError(400, f"{name.title()} must name a container in this account")
            if target.strip("/") == req.container:
                raise SwiftError(400, f"{name.title()} cannot be the container itself")
            # kept percent-encoded: a header value goes to the nodes as bytes, and a name
            # may hold any Unicode (it is unquoted again where it is used)
            h[name] = quote(target.strip("/"), safe="")
            other = "x-history-location" if name == "x-versions-location" else "x-versions-location"
            h["x-remove-" + other[2:]] = "1"

    @staticmethod
    def _sub(req: Req, method: str, path: str, **kwargs) -> Req:
        """A subrequest of the archiving (or restoring) work, which is part of the change the
        caller was authorized for in :meth:`__call__`. It runs as the caller, except for a temp
        URL's holder: the URL reaches its one object only, so the archive side is done on the
        proxy's own authority, as Swift does it for everyone."""
        sub = req.sub(method, path, keep_auth="tempurl" not in req.env, **kwargs)
        sub.env["versioning"] = True
        return sub

    def _path(self, req: Req, container: str, obj: str) -> str:
        return f"/{req.version}/{req.account}/{container}/{obj}"

    async def _copy(self, req: Req, src_path: str, dst_path: str) -> int:
        """Raw copy src → dst (authorized as :meth:`_sub` says); returns the source status
        (404: nothing to copy)."""
        get = self._sub(req, "GET", src_path)
        src = await self.app(get)
        if src.status == 404:
            await src.discard()
            return 404
        if src.status != 200:
            await src.discard()
            raise SwiftError(503 if src.status >= 500 else src.status,
                             "Could not read the current version to archive it")
        headers = {k: v for k, v in src.headers.items()
                   if k in KEPT_HEADERS or k.startswith("x-object-meta-")}
        headers["content-length"] = src.headers.get("content-length", "0")
        put = self._sub(req, "PUT", dst_path, headers=headers, body=src.body)
        put.env["sysmeta"] = {k: v for k, v in src.headers.items()
                              if k.startswith("x-object-sysmeta-")
                              or k == "x-static-large-object"}
        try:
            resp = await self.app(put)
        finally:
            await src.discard()
        if resp.status // 100 != 2:
            raise SwiftError(resp.status if resp.status < 500 else 503,
                             "Could not write the version into the archive container")
        return 200

    async def archive_current(self, req: Req, archive: str) -> None:
        head = self._sub(req, "HEAD", req.path)
        current = await self.app(head)
        await current.discard()
        if current.status != 200:
            return
        ts = current.headers.get("x-timestamp", "0")
        name = archive_prefix(req.obj) + ts
        await self._copy(req, req.path, self._path(req, archive, name))

    async def restore_previous(self, req: Req, archive: str) -> Resp:
        listing = self._sub(req, "GET", f"/{req.version}/{req.account}/{archive}",
                            query={"format": "json", "prefix": archive_prefix(req.obj),
                                   "reverse": "on", "limit": "1"})
        resp = await self.app(listing)
        items = orjson.loads(await resp.read()) if resp.status == 200 else []
        if not items:
            return await self.app(req)
        previous = self._path(req, archive, items[0]["name"])
        await self._copy(req, previous, req.path)
        delete = self._sub(req, "DELETE", previous)
        gone = await self.app(delete)
        await gone.discard()
        return Resp(204, {}, b"")
