"""Server-side copy: ``PUT`` with ``X-Copy-From: <container>/<object>`` and ``COPY`` with
``Destination: <container>/<object>``.

The source is read through the layers below this one as the caller (so a large object is copied
as its assembled content, or as its manifest with ``?multipart-manifest=get``), streamed into
a PUT of the destination. The destination keeps the source's content type and user metadata,
overlaid by the request's own (or only the request's with ``X-Fresh-Metadata: true``). A
``Range`` header copies only that range of the source; ``X-Copy-From-Account`` (and, for
``COPY``, ``Destination-Account``) copy between accounts, each side authorized as the caller.
"""

from __future__ import annotations

from urllib.parse import quote

from .http import Req, Resp, SwiftError, split_source

COPIED_HEADERS = ("content-type", "content-encoding", "content-disposition", "content-language",
                  "cache-control", "expires", "x-delete-at", "x-object-manifest")


def _account(value: str | None, default: str, header: str) -> str:
    """The account a copy reads from or writes to: ``value`` (a header's) or ``default``."""
    if value is None:
        return default
    account = value.strip().strip("/")
    if not account or "/" in account:
        raise SwiftError(400, f"{header} must name one account, got {value!r}")
    return account


class Copy:
    def __init__(self, app, core):
        self.app = app
        self.core = core

    async def __call__(self, req: Req) -> Resp:
        if req.obj is not None and req.method == "COPY":
            dest = req.headers.get("destination")
            if not dest:
                raise SwiftError(412, "COPY needs a Destination header: <container>/<object>")
            container, obj = split_source(dest)
            dest_account = _account(req.headers.get("destination-account"), req.account,
                                    "Destination-Account")
            headers = {k: v for k, v in req.headers.items()
                       if k not in ("destination", "destination-account")}
            headers["x-copy-from"] = quote(f"/{req.container}/{req.obj}")
            headers["x-copy-from-account"] = req.account
            headers["content-length"] = "0"
            put = Req("PUT", f"/{req.version}/{dest_account}/{container}/{obj}", dict(req.query),
                      headers, b"", req.env)
            return await self(put)
        if req.obj is not None and req.method == "PUT" and "x-copy-from" in req.headers:
            return await self.copy_put(req)
        return await self.app(req)

    async def copy_put(self, req: Req) -> Resp:
        if req.content_length not in (None, 0):
            raise SwiftError(400, "A copy (X-Copy-From) must have an empty body")
        container, obj = split_source(req.headers["x-copy-from"])
        # another account's object (X-Copy-From-Account): read as the caller, so their
        # rights there (an ACL) decide
        src_account = _account(req.headers.get("x-copy-from-account"), req.account,
                               "X-Copy-From-Account")
        query = {}
        manifest_only = req.query.get("multipart-manifest") == "get"
        if manifest_only:
            # an SLO's manifest is read in the form it was written, and written again as a
            # manifest PUT: its segments are then checked, as the caller, in the destination
            # account, and the copy gets everything a written manifest has
            query = {"multipart-manifest": "get", "format": "raw"}
        if "part-number" in req.query:  # applies to the source: copies that part
            query["part-number"] = req.query["part-number"]
        # a Range copies just those bytes of the source (one range: a multi-range answer
        # would store its multipart framing)
        source_range = req.headers.get("range")
        get = req.sub("GET", f"/{req.version}/{src_account}/{container}/{obj}", query=query,
                      headers={"range": source_range} if source_range else None)
        src = await self.app(get)
        if src.status == 206 and "content-range" not in src.headers:
            await src.discard()
            raise SwiftError(400, "A copy can take one byte range of its source, not several")
        if src.status not in (200, 206):
            await src.discard()
            if src.status == 404:
                raise SwiftError(404, f"The copy source {container}/{obj} does not exist")
            raise SwiftError(src.status if src.status < 500 else 503,
                             f"Could not read the copy source {container}/{obj}")
        headers = {}
        fresh = req.headers.get("x-fresh-metadata", "").lower() in ("true", "1", "yes")
        if not fresh:
            for k, v in src.headers.items():
                if k in COPIED_HEADERS or k.startswith("x-object-meta-"):
                    headers[k] = v
        if not manifest_only:
            # a DLO read whole is copied as the bytes it is now, not as another manifest
            # (whose content would change with its segment container)
            headers.pop("x-object-manifest", None)
        put_query = {k: v for k, v in req.query.items()
                     if k not in ("multipart-manifest", "part-number")}
        if manifest_only and src.headers.get("x-static-large-object", "").lower() == "true":
            put_query["multipart-manifest"] = "put"
        for k, v in req.headers.items():
            if k in ("x-copy-from", "x-copy-from-account", "content-length",
                     "x-fresh-metadata", "etag", "transfer-encoding", "range"):
                continue
            headers[k] = v
        length = src.headers.get("content-length")
        if length is not None:
            headers["content-length"] = length
        else:
            headers["transfer-encoding"] = "chunked"
        put = Req("PUT", req.path, put_query, headers, src.body, req.env)
        try:
            resp = await self.app(put)
        finally:
            await src.discard()
        if resp.status == 201:
            resp.headers["x-copied-from"] = quote(f"{container}/{obj}")
            if src_account != req.account:
                resp.headers["x-copied-from-account"] = quote(src_account)
            if "last-modified" in src.headers:
                resp.headers["x-copied-from-last-modified"] = src.headers["last-modified"]
        return resp
