"""Account and container quotas (Swift's account_quotas and container_quotas).

* Container: ``X-Container-Meta-Quota-Bytes`` / ``-Quota-Count`` set by the container's owner;
  an object PUT that would go past either gets 413.
* Account: ``X-Account-Meta-Quota-Bytes`` may only be set or removed by a reseller admin
  (403 otherwise); an object PUT that would take the account past it gets 413.

Counts come from the proxy's short-lived container/account info, so, as in Swift, a burst of
parallel uploads can overshoot a quota by what is in flight.
"""

from __future__ import annotations

from .http import Req, Resp, SwiftError


def _quota_value(headers: dict, name: str, label: str) -> None:
    value = headers.get(name)
    if value is not None and value != "" and not value.strip().isdigit():
        raise SwiftError(400, f"{label} must be a non-negative integer, got {value!r}")


class Quotas:
    def __init__(self, app, core):
        self.app = app
        self.core = core

    async def __call__(self, req: Req) -> Resp:
        if req.method in ("PUT", "POST") and req.container and req.obj is None:
            _quota_value(req.headers, "x-container-meta-quota-bytes", "X-Container-Meta-Quota-Bytes")
            _quota_value(req.headers, "x-container-meta-quota-count", "X-Container-Meta-Quota-Count")
        elif req.method in ("POST", "PUT") and req.container is None and req.account:
            touched = [k for k in req.headers if k in ("x-account-meta-quota-bytes",
                                                        "x-remove-account-meta-quota-bytes")]
            if touched and not req.env.get("internal"):
                if not req.env.get("reseller"):
                    raise SwiftError(403, "Only a reseller admin may set account quotas")
            _quota_value(req.headers, "x-account-meta-quota-bytes", "X-Account-Meta-Quota-Bytes")
        elif req.method == "PUT" and req.obj is not None:
            await self.check_put(req)
        return await self.app(req)

    async def check_put(self, req: Req) -> None:
        size = req.content_length
        if size is None:
            size = 0  # chunked: only the count quota and a full container can be judged
        cinfo = await self.core.container_info(req.account, req.container)
        if cinfo.exists:
            qb = cinfo.meta("x-container-meta-quota-bytes")
            if qb.isdigit() and cinfo.int_header("x-container-bytes-used") + size > int(qb):
                raise SwiftError(413, "Upload exceeds quota: the container's "
                                      "X-Container-Meta-Quota-Bytes would be exceeded")
            qc = cinfo.meta("x-container-meta-quota-count")
            if qc.isdigit() and cinfo.int_header("x-container-object-count") + 1 > int(qc):
                raise SwiftError(413, "Upload exceeds quota: the container's "
                                      "X-Container-Meta-Quota-Count would be exceeded")
        ainfo = await self.core.account_info(req.account)
        if ainfo.exists:
            qa = ainfo.meta("x-account-meta-quota-bytes")
            if qa.isdigit() and ainfo.int_header("x-account-bytes-used") + size > int(qa):
                raise SwiftError(413, "Upload exceeds quota: the account's "
                                      "X-Account-Meta-Quota-Bytes would be exceeded")
