"""Bulk delete: ``POST /v1/<account>?bulk-delete`` (or ``DELETE ...?bulk-delete``) with a
newline-separated list of URL-encoded ``/container/object`` or ``/container`` names.

Each name is deleted through the rest of the pipeline as the caller (so ACLs apply). The reply
is 200 with Swift's report — JSON when the client accepts it (swiftclient does), plain text
otherwise: Number Deleted, Number Not Found, Response Status, Response Body, Errors.
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

import orjson

from .http import Req, Resp, SwiftError, report_body, report_type, status_line

MAX_DELETES = 10000
MAX_FAILED = 1000
MAX_PATH = 1024 + 256 + 2


class BulkDelete:
    def __init__(self, app, core):
        self.app = app
        self.core = core

    async def __call__(self, req: Req) -> Resp:
        if "bulk-delete" not in req.query or req.method not in ("POST", "DELETE"):
            return await self.app(req)
        if req.container is not None:
            raise SwiftError(400, "bulk-delete is an account-level request: POST /v1/<account>"
                                  "?bulk-delete")
        raw = await req.read_body(MAX_DELETES * (MAX_PATH + 1))
        names = [unquote(line.strip()) for line in raw.decode("utf-8", "surrogateescape")
                 .splitlines() if line.strip()]
        if len(names) > MAX_DELETES:
            raise SwiftError(413, f"Maximum bulk deletes per request is {MAX_DELETES}")
        deleted = not_found = 0
        errors: list[list] = []
        # objects first (in parallel, bounded), then containers, so "c/o, c" in one list works
        objects = [n for n in names if "/" in n.lstrip("/")]
        containers = [n for n in names if "/" not in n.lstrip("/")]
        sem = asyncio.Semaphore(16)

        async def delete_one(name: str):
            nonlocal deleted, not_found
            path = "/" + name.lstrip("/")
            if len(path) > MAX_PATH:
                errors.append([name, "400 Bad Request"])
                return
            sub = req.sub("DELETE", f"/{req.version}/{req.account}{path}")
            async with sem:
                try:
                    resp = await self.app(sub)
                    status = resp.status
                    await resp.discard()
                except SwiftError as exc:
                    status = exc.status
            if status // 100 == 2:
                deleted += 1
            elif status == 404:
                not_found += 1
            else:
                errors.append([name, status_line(status)])

        await asyncio.gather(*(delete_one(n) for n in objects))
        for name in containers:
            await delete_one(name)
            if len(errors) >= MAX_FAILED:
                break
        if errors:
            statuses = {int(e[1].split()[0]) for e in errors}
            top = 400 if all(s < 500 for s in statuses) else 502
            if statuses == {401}:
                top = 401
            elif statuses <= {403, 401}:
                top = 403
            elif statuses == {409}:
                top = 409
            response_status, response_body = status_line(top), "There were errors deleting."
        else:
            response_status, response_body = "200 OK", ""
        fields = {"Number Deleted": deleted, "Number Not Found": not_found,
                  "Response Status": response_status, "Response Body": response_body}
        ctype = report_type(req.headers.get("accept", ""))
        return Resp(200, {"content-type": ctype}, report_body(ctype, fields, errors, "delete"))
