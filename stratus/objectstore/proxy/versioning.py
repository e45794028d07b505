"""Versioned writes: a container with ``X-Versions-Location: <archive>`` (stack mode) or
``X-History-Location: <archive>`` (history mode) keeps overwritten objects in the archive
container as ``<3 hex digits: length of name><name>/<timestamp>``.

* PUT (or COPY onto) an existing object: the current version is copied into the archive first.
* DELETE, history mode: the current version (if any) is archived, a *delete marker* (an empty
  archive entry of type ``application/x-deleted;swift_versions_deleted=1``, named with the
  time of the deletion) records the deletion, then the object is deleted (404 if it was not
  there: the marker is written all the same).
* DELETE, stack mode: the newest archive entry is undone. A version is restored in place and
  removed from the archive. A delete marker (left by history mode) is removed; if the object
  is absent, the version before the marker (unless that is a marker too) is restored first,
  and if the object was written again after the deletion, only the object is deleted. With
  no archive entry the object is simply deleted.

Only a caller who may write the versioned container gets this far; the archive reads and
writes are then the proxy's own (as in Swift), so a user granted writes on the versioned
container by its ACL is versioned too, without any right on the archive container. Archive
copies are raw: a large object's manifest is archived, not its content.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

import orjson

from .http import Req, Resp, SwiftError, header_text, normalize_timestamp

KEPT_HEADERS = ("content-type", "content-encoding", "content-disposition", "content-language",
                "cache-control", "expires", "x-delete-at", "x-object-manifest")
DELETE_MARKER_TYPE = "application/x-deleted;swift_versions_deleted=1"
LISTING_PAGE = 100


def archive_prefix(obj: str) -> str:
    return "%03x%s/" % (len(obj.encode("utf-8", "surrogateescape")), obj)


def archive_failure(status: int, what: str) -> SwiftError:
    """A failed archive step: the client's write is refused before anything changes.
    A 4xx there means the archive container is missing or refuses the write (412, as Swift
    answers), anything else that the version could not be kept (503)."""
    if 400 <= status < 500:
        return SwiftError(412, f"{what}: the archive container is missing or refused it")
    return SwiftError(503, f"{what}: a storage node did not answer")


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
        # the archive work below is the proxy's own: only a caller who may make the change
        # gets it done
        self.core.authorize(req, cinfo)
        archive = unquote(location)
        if req.method == "PUT":
            await self.archive_current(req, archive)
            return await self.app(req)
        if history:
            await self.archive_current(req, archive)
            await self.write_delete_marker(req, archive)
            return await self.app(req)
        return await self.undo_newest(req, archive)

    @staticmethod
    def check_container_headers(req: Req) -> None:
        h = req.headers
        if h.get("x-versions-location") and h.get("x-history-location"):
            raise SwiftError(400, "Only one of X-Versions-Location and X-History-Location "
                                  "may be set")
        removes = ("x-remove-versions-location", "x-remove-history-location")
        removing = any(h.get(k) for k in removes)
        setting = False
        for name in ("x-versions-location", "x-history-location"):
            value = h.get(name)
            if value is None:
                continue
            if value == "":
                removing = True
                del h[name]
                continue
            setting = True
            # a name sent unquoted arrives as its UTF-8 bytes read as latin-1
            target = unquote(header_text(value))
            if "/" in target.strip("/") or not target.strip("/"):
                raise SwiftError(400, f"{name.title()} must name a container in this account")
            if target.strip("/") == req.container:
                raise SwiftError(400, f"{name.title()} cannot be the container itself")
            # kept percent-encoded: a header value goes to the nodes as bytes, and a name
            # may hold any Unicode (it is unquoted again where it is used)
            h[name] = quote(target.strip("/"), safe="")
            # setting a location wins over removing one in the same request (as in Swift);
            # the other mode's location is cleared, a container has one mode at a time
            h.pop("x-remove-versions-location", None)
            h.pop("x-remove-history-location", None)
            other = "x-history-location" if name == "x-versions-location" else "x-versions-location"
            h["x-remove-" + other[2:]] = "1"
        if removing and not setting:
            # either X-Remove- header (or an empty location) ends versioning, whichever mode
            # the container was in, as in Swift
            for k in removes:
                h[k] = "1"

    def _path(self, req: Req, container: str, obj: str) -> str:
        return f"/{req.version}/{req.account}/{container}/{obj}"

    @staticmethod
    def _internal(req: Req, method: str, path: str, **kw) -> Req:
        """A subrequest of the proxy's own (the caller was authorized on the versioned
        container), not versioned again."""
        sub = req.sub(method, path, keep_auth=False, **kw)
        sub.env["versioning"] = True
        return sub

    async def _copy(self, req: Req, src_path: str, dst_path: str) -> bool:
        """Raw copy src → dst; False when there is no source (nothing to copy)."""
        src = await self.app(self._internal(req, "GET", src_path))
        if src.status == 404:
            await src.discard()
            return False
        if src.status != 200:
            await src.discard()
            raise archive_failure(src.status, "Could not read the version to copy")
        headers = {k: v for k, v in src.headers.items()
                   if k in KEPT_HEADERS or k.startswith("x-object-meta-")}
        headers["content-length"] = src.headers.get("content-length", "0")
        put = self._internal(req, "PUT", dst_path, headers=headers, body=src.body)
        put.env["sysmeta"] = {k: v for k, v in src.headers.items()
                              if k.startswith("x-object-sysmeta-")
                              or k == "x-static-large-object"}
        try:
            resp = await self.app(put)
        finally:
            await src.discard()
        if resp.status // 100 != 2:
            raise archive_failure(resp.status, "Could not write the version")
        return True

    async def archive_current(self, req: Req, archive: str) -> None:
        current = await self.app(self._internal(req, "HEAD", req.path))
        await current.discard()
        if current.status == 404:
            return
        if current.status != 200:
            raise archive_failure(current.status, "Could not read the current version")
        ts = current.headers.get("x-timestamp", "0")
        name = archive_prefix(req.obj) + ts
        await self._copy(req, req.path, self._path(req, archive, name))

    async def write_delete_marker(self, req: Req, archive: str) -> None:
        name = archive_prefix(req.obj) + normalize_timestamp()
        put = self._internal(req, "PUT", self._path(req, archive, name), body=b"",
                             headers={"content-type": DELETE_MARKER_TYPE,
                                      "content-length": "0"})
        resp = await self.app(put)
        await resp.discard()
        if resp.status // 100 != 2:
            raise archive_failure(resp.status, "Could not record the deletion")

    async def _archive_newest_first(self, req: Req, archive: str):
        """The archive's entries for the object, newest first, a page at a time."""
        marker = ""
        while True:
            query = {"format": "json", "prefix": archive_prefix(req.obj), "reverse": "on",
                     "limit": str(LISTING_PAGE)}
            if marker:
                query["marker"] = marker
            resp = await self.app(self._internal(req, "GET", f"/{req.version}/{req.account}/"
                                                 f"{archive}", query=query))
            body = await resp.read()
            if resp.status == 404:
                return  # no archive container: nothing was kept
            if resp.status != 200:
                raise archive_failure(resp.status, "Could not list the archived versions")
            items = orjson.loads(body)
            for item in items:
                yield item
            if len(items) < LISTING_PAGE:
                return
            marker = items[-1]["name"]

    async def _delete(self, req: Req, path: str, *, missing_ok: bool = False) -> Resp:
        try:
            return await self.app(self._internal(req, "DELETE", path))
        except SwiftError as e:
            if missing_ok and e.status == 404:
                return Resp(404, {}, b"")
            raise

    async def _object_exists(self, req: Req) -> bool:
        head = await self.app(self._internal(req, "HEAD", req.path))
        await head.discard()
        if head.status not in (200, 404):
            raise archive_failure(head.status, "Could not read the current version")
        return head.status == 200

    async def undo_newest(self, req: Req, archive: str) -> Resp:
        """Stack-mode DELETE: undo the newest archive entry (see the module's docstring)."""
        entries = self._archive_newest_first(req, archive)
        try:
            async for newest in entries:
                newest_path = self._path(req, archive, newest["name"])
                if newest["content_type"] != DELETE_MARKER_TYPE:
                    if not await self._copy(req, newest_path, req.path):
                        continue  # deleted since it was listed: the one before it, then
                    return await self._delete(req, newest_path)
                if await self._object_exists(req):
                    # written again since that deletion: deleting it returns to the deletion
                    break
                async for older in entries:
                    if older["content_type"] == DELETE_MARKER_TYPE:
                        break  # deleted before that too: nothing to bring back
                    older_path = self._path(req, archive, older["name"])
                    if await self._copy(req, older_path, req.path):
                        await self._delete(req, older_path, missing_ok=True)
                        break
                return await self._delete(req, newest_path)
        finally:
            await entries.aclose()
        return await self.app(req)
