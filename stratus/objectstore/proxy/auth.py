"""Who may do what: Keystone tokens, container ACLs, temp URLs and the v1 auth endpoint.

Keystone semantics as Swift's keystoneauth middleware has them:

* a token scoped to project P owns account ``AUTH_P`` when it carries an operator role
  (``admin``, ``member`` or ``swiftoperator`` by default); a project ``reader`` may read it;
* the ``ResellerAdmin`` role owns every account (and alone may set account quotas);
* anyone else gets what the container ACLs grant: ``X-Container-Read`` entries
  ``.r:*`` / ``.r:<referrer>`` (anonymous object reads), ``.rlistings`` (anonymous listings),
  ``<project>:<user>``, ``<project>:*``, ``*:<user>``, ``*:*`` (ids or names) for reads
  including listings; ``X-Container-Write`` the same entries for object writes;
* refused: 401 without a valid token, 403 with one.

The auth filter only identifies the caller and leaves an ``authorize(req, container_info)``
callable in the request; the core calls it once the container's ACLs are known.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import httpx

from .http import PROJECT_DOMAIN_SYSMETA, Req, Resp, SwiftError, fault

RESELLER_PREFIX = "AUTH_"
DEFAULT_DOMAIN_ID = "default"  # the identity service's default domain


def parse_acl(value: str) -> tuple[list[str], list[str]]:
    """(referrer rules, user/group rules) of an X-Container-Read/Write value."""
    referrers, groups = [], []
    for item in (v.strip() for v in (value or "").split(",")):
        if not item:
            continue
        if item.startswith(".r:") or item.startswith(".referrer:"):
            rule = item.split(":", 1)[1].strip()
            # "*.example.com" means what ".example.com" does: any host in that domain
            negate = rule.startswith("-")
            host = rule[1:] if negate else rule
            if host.startswith("*.") and len(host) > 2:
                rule = ("-" if negate else "") + host[1:]
            referrers.append(rule)
        elif item.startswith("."):
            if item in (".rlistings",):
                groups.append(item)
            # other dotted directives are ignored, as Swift does with unknown ones
        else:
            groups.append(item)
    return referrers, groups


def referrer_allowed(referrer: str, rules: list[str]) -> bool:
    host = ""
    if referrer:
        try:
            host = httpx.URL(referrer).host or ""
        except Exception:
            host = ""
    allowed = False
    for rule in rules:
        negate = rule.startswith("-")
        rule = rule[1:] if negate else rule
        if rule in ("*", "") or rule == host or (rule.startswith(".") and host.endswith(rule)):
            allowed = not negate
    return allowed


def validate_acl(value: str, header: str) -> None:
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        if item.startswith("."):
            if item == ".rlistings" or item.startswith((".r:", ".referrer:")):
                if item.startswith((".r:", ".referrer:")) and not item.split(":", 1)[1].strip():
                    raise SwiftError(400, f"{header}: referrer rule {item!r} names nothing")
                continue
            raise SwiftError(400, f"{header}: unknown ACL directive {item!r}")


class KeystoneAuth:
    """Identify the caller; install the authorize callable."""

    def __init__(self, app, core=None, *, operator_roles=("admin", "member", "swiftoperator"),
                 reader_roles=("reader",), reseller_admin_role="ResellerAdmin",
                 default_domain_id: str = DEFAULT_DOMAIN_ID):
        self.app = app
        self.core = core
        self.default_domain_id = default_domain_id
        self.operator_roles = {r.lower() for r in operator_roles}
        self.reader_roles = {r.lower() for r in reader_roles}
        self.reseller_admin_role = reseller_admin_role.lower()

    async def __call__(self, req: Req) -> Resp:
        if "authorize" not in req.env and not req.env.get("internal"):
            req.env["authorize"] = self.authorize
        ctx = req.env.get("ctx")
        if ctx is not None and not req.env.get("subrequest"):
            req.env["reseller"] = self.is_reseller(ctx)
            if self.core is not None and req.account:
                await self._learn_domains(req, ctx)
        # ACL headers are only for account owners to set, and must parse
        if req.method in ("PUT", "POST") and req.container and not req.obj:
            for name in ("x-container-read", "x-container-write"):
                if name in req.headers:
                    validate_acl(req.headers[name], name.title())
        return await self.app(req)

    async def _learn_domains(self, req: Req, ctx) -> None:
        """Which accounts this request may reach by ACL names (``env["acl_names"]``, by
        account: the request's own and a copy's other side), and, when the owner creates or
        updates their account, the domain of its project, kept as account sysmeta."""
        own = f"{RESELLER_PREFIX}{ctx.project_id}"
        accounts = {req.account}
        for header in ("x-copy-from-account", "destination-account"):
            value = req.headers.get(header, "").strip().strip("/")
            if value:
                accounts.add(value)
        caller_in_default = (ctx.user_domain_id or self.default_domain_id) == \
            self.default_domain_id and (ctx.project_domain_id or self.default_domain_id) == \
            self.default_domain_id
        names = {}
        for account in accounts:
            if not caller_in_default:
                names[account] = False
            elif account == own:
                names[account] = True  # the caller's project: in the default domain
            else:
                info = await self.core.account_info(account)
                names[account] = info.exists and info.headers.get(
                    PROJECT_DOMAIN_SYSMETA, self.default_domain_id) == self.default_domain_id
        req.env["acl_names"] = names
        # a bulk upload creates the containers its archive names, wherever it is sent
        extracting = req.method == "PUT" and "extract-archive" in req.query
        creating = (req.method == "POST" and req.container is None) or extracting or \
            (req.method == "PUT" and req.container is not None and req.obj is None)
        if creating and req.account == own and ctx.project_domain_id:
            info = await self.core.account_info(own)
            if PROJECT_DOMAIN_SYSMETA not in info.headers:
                if req.container is None and not extracting:
                    req.headers[PROJECT_DOMAIN_SYSMETA] = ctx.project_domain_id
                else:  # a container PUT (a bulk upload's too) creates the account on first use
                    req.env["account_sysmeta"] = {PROJECT_DOMAIN_SYSMETA: ctx.project_domain_id}

    def is_reseller(self, ctx) -> bool:
        return any(r.lower() == self.reseller_admin_role for r in ctx.roles)

    def owner_level(self, req: Req) -> str | None:
        """'owner', 'reader' or None for the caller on the request's account."""
        ctx = req.env.get("ctx")
        if ctx is None:
            return None
        if self.is_reseller(ctx):
            return "owner"
        if req.account != f"{RESELLER_PREFIX}{ctx.project_id}":
            return None
        roles = {r.lower() for r in ctx.roles}
        if roles & self.operator_roles:
            return "owner"
        if roles & self.reader_roles:
            return "reader"
        return None

    def authorize(self, req: Req, cinfo) -> None:
        if not req.account or not req.account.startswith(RESELLER_PREFIX):
            raise self._refuse(req)
        grant = req.env.get("tempurl")
        if grant is not None and grant.permits(req):
            return
        level = self.owner_level(req)
        read = req.method in ("GET", "HEAD")
        if level == "owner" or (level == "reader" and read):
            return
        if cinfo is None or req.container is None:
            raise self._refuse(req)
        ctx = req.env.get("ctx")
        if read:
            referrers, groups = parse_acl(cinfo.meta("x-container-read"))
            if req.obj is not None or ".rlistings" in groups:
                if referrers and referrer_allowed(req.headers.get("referer", ""), referrers):
                    return
            if ctx is not None and self._user_matches(req, ctx, groups):
                return
        elif req.obj is not None and req.method in ("PUT", "POST", "DELETE"):
            _, groups = parse_acl(cinfo.meta("x-container-write"))
            if ctx is not None and self._user_matches(req, ctx, groups):
                return
        raise self._refuse(req)

    @staticmethod
    def _user_matches(req: Req, ctx, groups: list[str]) -> bool:
        """Whether an ACL's ``project:user`` entries name the caller. Names count only where
        both sides are in the default domain (see :meth:`_learn_domains`): elsewhere a name
        could belong to another domain's project or user, so only ids do."""
        projects = {"*", ctx.project_id or ""}
        users = {"*", ctx.user_id}
        if req.env.get("acl_names", {}).get(req.account, False):
            projects.add(ctx.project_name or "")
            users.add(ctx.user_name)
        for entry in groups:
            if ":" not in entry:
                continue
            project, _, user = entry.partition(":")
            if project in projects and user in users:
                return True
        return False

    @staticmethod
    def _refuse(req: Req) -> SwiftError:
        if req.env.get("ctx") is None:
            return SwiftError(401, "Unauthorized: this request requires a valid token",
                              {"www-authenticate": "Swift realm=\"unknown\""})
        return SwiftError(403, "Forbidden: access was denied to this resource")


# -- temp URLs --------------------------------------------------------------------------------
DIGESTS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
HEX_LENGTHS = {40: "sha1", 64: "sha256", 128: "sha512"}


def _key_bytes(key: str) -> bytes:
    """A temp URL key as the bytes its owner set: header values reach the proxy decoded as
    latin-1 (see http.header_text), so encoding it back gives them, UTF-8 keys included."""
    try:
        return key.encode("latin-1")
    except UnicodeEncodeError:
        return key.encode("utf-8")


def parse_expires(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        pass
    for fmt in ("%Y-%m-%dT%H:%M:%SZ",):
        try:
            return int(datetime.strptime(value, fmt).replace(
                tzinfo=__import__("datetime").timezone.utc).timestamp())
        except ValueError:
            continue
    raise SwiftError(401, "Temp URL invalid: temp_url_expires is not a unix time or "
                          "ISO 8601 (YYYY-MM-DDTHH:MM:SSZ)")


def parse_signature(sig: str) -> tuple[str, bytes]:
    """(digest name, raw signature) from hex (sha1/sha256/sha512 by length) or
    ``<digest>:<urlsafe base64>``."""
    if ":" in sig:
        name, _, b64 = sig.partition(":")
        if name not in DIGESTS:
            raise SwiftError(401, "Temp URL invalid: unsupported digest")
        try:
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except ValueError:
            raise SwiftError(401, "Temp URL invalid: bad signature encoding") from None
        return name, raw
    name = HEX_LENGTHS.get(len(sig))
    if name is None:
        raise SwiftError(401, "Temp URL invalid: bad signature length")
    try:
        return name, bytes.fromhex(sig)
    except ValueError:
        raise SwiftError(401, "Temp URL invalid: signature is not hex") from None


def sign(key: str, method: str, expires: int, path: str, digest: str = "sha256") -> str:
    """Hex signature for a temp URL (the same computation ``swift tempurl`` does)."""
    msg = f"{method}\n{expires}\n{path}".encode()
    return hmac.new(key.encode(), msg, DIGESTS[digest]).hexdigest()


@dataclass(frozen=True)
class TempURLGrant:
    """What a valid temp URL lets its holder do. It is checked for the signed request itself
    and for every subrequest the filters make on its behalf (a large object's segments and
    listing, a manifest's checks), as they all carry it.

    ``container`` is None when an account key signed the URL: its reach is the account; a
    container key's reach is that container alone, as in Swift. Within that reach:

    * the signed object may be written as signed, and read (a filter's probe or manifest read);
    * other objects and container listings may only be read, and only while serving a read of
      the signed object: a GET of a large object needs its segments. A write (PUT, POST,
      DELETE) never reaches beyond its one object, so a manifest PUT with a temp URL cannot
      point at segments its holder could not read otherwise.
    """

    account: str
    container: str | None
    target: tuple[str, str]   # (container, object) the URL was used on
    method: str               # the signed request's method

    def permits(self, req: Req) -> bool:
        if req.account != self.account or req.container is None:
            return False
        if self.container is not None and req.container != self.container:
            return False
        read = req.method in ("GET", "HEAD")
        if (req.container, req.obj) == self.target:
            return read or req.method == self.method
        return read and self.method in ("GET", "HEAD")


class TempURL:
    """Grants one object operation to whoever holds a signed, unexpired URL."""

    METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")

    def __init__(self, app, core):
        self.app = app
        self.core = core

    async def __call__(self, req: Req) -> Resp:
        q = req.query
        if "temp_url_sig" not in q and "temp_url_expires" not in q:
            return await self.app(req)
        if req.obj is None or not req.account or req.method not in self.METHODS:
            raise SwiftError(401, "Temp URL invalid: only a GET, HEAD, PUT, POST or DELETE of "
                                  "an object can be signed")
        sig, expires_raw = q.get("temp_url_sig"), q.get("temp_url_expires")
        if not sig or not expires_raw:
            raise SwiftError(401, "Temp URL invalid: temp_url_sig and temp_url_expires "
                                  "are both required")
        expires = parse_expires(expires_raw)
        if expires < time.time():
            raise SwiftError(401, "Temp URL expired")
        digest, raw = parse_signature(sig)
        keys = await self._scoped_keys(req)
        if not keys:
            raise SwiftError(401, "Temp URL invalid: no temp URL key is set")
        prefix = q.get("temp_url_prefix")
        if prefix is not None:
            if not req.obj.startswith(prefix):
                raise SwiftError(401, "Temp URL invalid: object is outside temp_url_prefix")
            path = f"prefix:/{req.version}/{req.account}/{req.container}/{prefix}"
        else:
            path = req.path
        methods = [req.method] if req.method != "HEAD" else ["HEAD", "GET", "PUT", "POST"]
        ok = False
        scope = None
        for key, key_scope in keys:
            for method in methods:
                msg = f"{method}\n{expires}\n{path}"
                mac = hmac.new(_key_bytes(key), msg.encode(), DIGESTS[digest]).digest()
                if hmac.compare_digest(mac, raw) and not ok:
                    ok, scope = True, key_scope
        if not ok:
            raise SwiftError(401, "Temp URL invalid: signature does not match")
        if req.method in ("PUT", "POST"):
            # Refused, not dropped, so that the client knows. A DLO manifest would let whoever
            # may GET the object read any segments it names, and a copy would bring another
            # object's bytes here: this URL grants neither read. (Swift lets a copy read
            # within the key's scope; here a write URL reads nothing but its own object.)
            for name, spelled in (("x-object-manifest", "X-Object-Manifest"),
                                  ("x-copy-from", "X-Copy-From"),
                                  ("x-copy-from-account", "X-Copy-From-Account")):
                if name in req.headers:
                    raise SwiftError(400, f"The header '{spelled}' is not allowed in this "
                                          "temp URL")
        req.env["tempurl"] = TempURLGrant(req.account, scope, (req.container, req.obj),
                                          req.method)
        req.env["ctx"] = None
        resp = await self.app(req)
        if req.method == "GET" and resp.status in (200, 206):
            filename = q.get("filename") or req.obj.rsplit("/", 1)[-1]
            kind = "inline" if "inline" in q else "attachment"
            resp.headers["content-disposition"] = (
                f"{kind}; filename=\"{filename}\"; filename*=UTF-8''{quote(filename)}")
        return resp

    async def _scoped_keys(self, req: Req) -> list[tuple[str, str | None]]:
        """(key, scope) pairs: the account's keys reach the whole account (scope None), the
        container's only that container."""
        keys = []
        ainfo = await self.core.account_info(req.account)
        cinfo = await self.core.container_info(req.account, req.container)
        for info, kind, scope in ((ainfo, "account", None), (cinfo, "container", req.container)):
            if info.exists:
                for suffix in ("", "-2"):
                    key = info.meta(f"x-{kind}-meta-temp-url-key{suffix}")
                    if key:
                        keys.append((key, scope))
        return keys


# -- v1 auth --------------------------------------------------------------------------------
class V1Auth:
    """``GET /auth/v1.0`` with ``X-Auth-User: project:user`` and ``X-Auth-Key: password``:
    a Keystone token and the account's storage URL, for tools that speak only v1 auth."""

    def __init__(self, app, identity_url: str, public_url: str):
        self.app = app
        self.identity_url = identity_url.rstrip("/")
        self.public_url = public_url.rstrip("/")
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, req: Req) -> Resp:
        if not req.path.startswith("/auth"):
            return await self.app(req)
        if req.path.rstrip("/") not in ("/auth/v1.0", "/auth/v1", "/auth/v1.0/tokens"):
            raise SwiftError(404, "Unknown auth path; use /auth/v1.0")
        if req.method not in ("GET", "HEAD"):
            raise SwiftError(405, "Use GET /auth/v1.0", {"allow": "GET, HEAD"})
        user = req.headers.get("x-auth-user") or req.headers.get("x-storage-user")
        key = req.headers.get("x-auth-key") or req.headers.get("x-storage-pass")
        if not user or not key or ":" not in user:
            raise SwiftError(401, "X-Auth-User (project:user) and X-Auth-Key are required")
        project, _, name = user.partition(":")
        body = {"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": name, "domain": {"id": "default"}, "password": key}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=30)
        try:
            r = await self._client.post(f"{self.identity_url}/v3/auth/tokens", json=body)
        except httpx.HTTPError:
            raise SwiftError(503, "Identity service unreachable") from None
        if r.status_code != 201:
            raise SwiftError(401, "Unauthorized: bad X-Auth-User or X-Auth-Key")
        token = r.headers["x-subject-token"]
        doc = r.json()["token"]
        project_id = doc["project"]["id"]
        url = f"{self.public_url}/v1/{RESELLER_PREFIX}{project_id}"
        return Resp(200, {"x-storage-url": url, "x-auth-token": token, "x-storage-token": token,
                          "x-auth-token-expires": str(max(0, int(
                              _iso_to_unix(doc.get("expires_at", "")) - time.time()))),
                          "content-type": "application/json; charset=utf-8"},
                    b'{"storage": {"default": "local", "local": "' + url.encode() + b'"}}')

    async def close(self):
        if self._client is not None:
            await self._client.aclose()


def _iso_to_unix(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time() + 3600


def unauthorized_fault() -> Resp:
    return fault(401, "Unauthorized")
