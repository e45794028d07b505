"""Account and container quotas (Swift's account_quotas and container_quotas).

* Container: ``X-Container-Meta-Quota-Bytes`` / ``-Quota-Count`` set by the container's owner;
  an object PUT that would go past either gets 413.
* Account: ``X-Account-Quota-Bytes`` and ``X-Account-Quota-Count`` (and, per storage policy,
  ``X-Account-Quota-Bytes-Policy-<name>`` / ``-Count-Policy-<name>``; the only policy here
  is Policy-0, so those limit the same objects) may only be set, or removed with
  ``X-Remove-...``, by a reseller admin (403 otherwise; an empty value removes too). They are
  kept as account sysmeta, which a client cannot write, and shown under their own names.
  The older ``X-Account-Meta-Quota-Bytes`` is still honoured: it is the same bytes quota.
  An object PUT that would take the account past a quota gets 413.

Counts come from the proxy's short-lived container/account info, so, as in Swift, a burst of
parallel uploads can overshoot a quota by what is in flight.
"""

from __future__ import annotations

from .http import Req, Resp, SwiftError


def _quota_value(headers: dict, name: str, label: str) -> None:
    value = headers.get(name)
    if value is not None and value != "" and not value.strip().isdigit():
        raise SwiftError(400, f"{label} must be a non-negative integer, got {value!r}")


POLICY = "Policy-0"
# (what a client sends, the sysmeta it is kept as): the overall quotas, then the policy's
ACCOUNT_QUOTAS = (("x-account-quota-bytes", "x-account-sysmeta-quota-bytes"),
                  ("x-account-quota-count", "x-account-sysmeta-quota-count"),
                  (f"x-account-quota-bytes-policy-{POLICY.lower()}",
                   "x-account-sysmeta-quota-bytes-policy-0"),
                  (f"x-account-quota-count-policy-{POLICY.lower()}",
                   "x-account-sysmeta-quota-count-policy-0"))
LEGACY_BYTES = "x-account-meta-quota-bytes"


def account_quota_changes(headers: dict) -> dict[str, str]:
    """{sysmeta name: new value ('' removes)} for the account quotas a request sets or removes
    (``X-Remove-`` wins over a value, as in Swift); the legacy meta header counts as
    X-Account-Quota-Bytes when that is not given."""
    changes = {}
    for public, sysmeta in ACCOUNT_QUOTAS:
        value = headers.get(public)
        if public == "x-account-quota-bytes":
            if value is None:
                value = headers.get(LEGACY_BYTES)
            if headers.get("x-remove-" + LEGACY_BYTES[2:]):
                value = ""
        if headers.get("x-remove-" + public[2:]):
            value = ""
        if value is not None:
            changes[sysmeta] = value.strip()
    return changes


def account_quota_limits(info) -> tuple[int | None, int | None]:
    """(bytes, objects) an account may hold, None for no limit: the tighter of its overall
    quota (for bytes, the legacy meta one when no other is set) and its policy's quota."""
    def value(name):
        raw = info.meta(name)
        return int(raw) if raw.isdigit() else None

    def tighter(*values):
        present = [v for v in values if v is not None]
        return min(present) if present else None

    overall_bytes = value("x-account-sysmeta-quota-bytes")
    if overall_bytes is None:
        overall_bytes = value(LEGACY_BYTES)
    return (tighter(overall_bytes, value("x-account-sysmeta-quota-bytes-policy-0")),
            tighter(value("x-account-sysmeta-quota-count"),
                    value("x-account-sysmeta-quota-count-policy-0")))


def show_account_quotas(headers: dict) -> None:
    """Put the account's quotas in an account HEAD/GET answer under their public names."""
    for public, sysmeta in ACCOUNT_QUOTAS:
        value = headers.get(sysmeta)
        if value:
            name = public if "policy" not in public else public[:-len(POLICY)] + POLICY
            headers[name] = value


class Quotas:
    def __init__(self, app, core):
        self.app = app
        self.core = core

    async def __call__(self, req: Req) -> Resp:
        if req.method in ("PUT", "POST") and req.container and req.obj is None:
            _quota_value(req.headers, "x-container-meta-quota-bytes", "X-Container-Meta-Quota-Bytes")
            _quota_value(req.headers, "x-container-meta-quota-count", "X-Container-Meta-Quota-Count")
        elif req.container is None and req.account:
            if req.method in ("POST", "PUT"):
                self.translate_account_quotas(req)
            resp = await self.app(req)
            if req.method in ("GET", "HEAD"):
                show_account_quotas(resp.headers)
            return resp
        elif req.method == "PUT" and req.obj is not None:
            await self.check_put(req)
        return await self.app(req)

    @staticmethod
    def translate_account_quotas(req: Req) -> None:
        changes = account_quota_changes(req.headers)
        if not changes and LEGACY_BYTES not in req.headers:
            return
        if not req.env.get("internal") and not req.env.get("reseller"):
            raise SwiftError(403, "Only a reseller admin may set account quotas")
        for sysmeta, value in changes.items():
            if value and not value.isdigit():
                public = next(p for p, s in ACCOUNT_QUOTAS if s == sysmeta)
                raise SwiftError(400, f"{public} must be a non-negative integer, got {value!r}")
            req.headers[sysmeta] = value
        # the legacy header, as sent, stays account metadata (older clients read it back)
        _quota_value(req.headers, LEGACY_BYTES, "X-Account-Meta-Quota-Bytes")

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
            max_bytes, max_objects = account_quota_limits(ainfo)
            if max_bytes is not None and \
                    ainfo.int_header("x-account-bytes-used") + size > max_bytes:
                raise SwiftError(413, "Upload exceeds quota: the account's "
                                      "X-Account-Quota-Bytes would be exceeded")
            if max_objects is not None and \
                    ainfo.int_header("x-account-object-count") + 1 > max_objects:
                raise SwiftError(413, "Upload exceeds quota: the account's "
                                      "X-Account-Quota-Count would be exceeded")
