"""Token checking for every service.

``AuthMiddleware`` reads ``X-Auth-Token``, asks a validator for the caller's context and puts it
in ``scope["stratus.context"]``. Services other than identity use ``RemoteTokenValidator``, which
validates through Identity's public API (``GET /v3/auth/tokens`` with a service token) and keeps
the answer for a short time. Identity broadcasts every revocation on the bus (topic
``identity.revocations``); validators drop their whole cache when one arrives, so a revoked token
stops working at once everywhere, while the TTL bounds staleness should a broadcast be lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Protocol

import httpx

from stratus.common.context import RequestContext
from stratus.common.errors import render_fault

log = logging.getLogger("stratus.auth")

REVOCATION_TOPIC = "identity.revocations"


class TokenValidator(Protocol):
    async def validate(self, token: str) -> RequestContext | None: ...


class ServiceCredentials:
    """A service user's password login, kept as a token and renewed before it expires."""

    def __init__(self, identity_url: str, username: str, password: str, *,
                 project: str = "service", domain: str = "default", client: httpx.AsyncClient | None = None):
        self.identity_url = identity_url.rstrip("/")
        self.username = username
        self.password = password
        self.project = project
        self.domain = domain
        self.client = client or httpx.AsyncClient(timeout=30)
        self._token: str | None = None
        self._catalog: list[dict] = []
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self, *, force: bool = False) -> str:
        if self._token and not force and time.monotonic() < self._renew_at:
            return self._token
        async with self._lock:
            if self._token and not force and time.monotonic() < self._renew_at:
                return self._token
            body = {"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": self.username, "domain": {"id": self.domain}, "password": self.password}}},
                "scope": {"project": {"name": self.project, "domain": {"id": self.domain}}}}}
            resp = await self.client.post(f"{self.identity_url}/v3/auth/tokens", json=body)
            if resp.status_code != 201:
                raise RuntimeError(f"service user {self.username} could not log in to identity: "
                                   f"{resp.status_code} {resp.text[:200]}")
            self._token = resp.headers["x-subject-token"]
            self._catalog = resp.json()["token"].get("catalog", [])
            # Renew well before expiry; tokens last an hour by default.
            self._renew_at = time.monotonic() + 600
            return self._token

    async def catalog(self) -> list[dict]:
        await self.token()
        return self._catalog

    async def endpoint(self, service_type: str, interface: str = "public") -> str:
        for entry in await self.catalog():
            if entry.get("type") == service_type:
                for ep in entry.get("endpoints", []):
                    if ep.get("interface") == interface:
                        return ep["url"].rstrip("/")
        raise LookupError(f"no {interface} endpoint of type {service_type} in the catalog")


class RemoteTokenValidator:
    """Validates user tokens against Identity, with a short cache that revocations purge."""

    def __init__(self, credentials: ServiceCredentials, *, ttl: float = 30.0, max_entries: int = 50000):
        self.credentials = credentials
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[RequestContext, float]] = {}

    def purge(self) -> None:
        self._cache.clear()

    async def validate(self, token: str) -> RequestContext | None:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        client = self.credentials.client
        url = f"{self.credentials.identity_url}/v3/auth/tokens"
        for attempt in range(2):
            service_token = await self.credentials.token(force=attempt > 0)
            resp = await client.get(url, headers={"X-Auth-Token": service_token, "X-Subject-Token": token})
            if resp.status_code == 401 and attempt == 0:
                continue  # our own service token expired or was revoked: log in again once
            break
        if resp.status_code != 200:
            self._cache.pop(token, None)
            return None
        ctx = RequestContext.from_token_body(resp.json()["token"], token)
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[token] = (ctx, now + self.ttl)
        return ctx


class RevocationListener:
    """Bus endpoint: identity fans out ``revoked`` and every validator here forgets its cache."""

    def __init__(self, validators: list):
        self.validators = validators

    async def revoked(self, **event) -> None:
        for v in self.validators:
            v.purge()


class AuthMiddleware:
    """Pure ASGI: authenticate the caller or answer 401 in the service's fault style.

    ``public(path)`` says which paths need no token (version discovery). With ``optional=True``
    a missing or bad token is not refused here: the service decides (swift public containers).
    """

    def __init__(self, app, validator: TokenValidator | Callable[[], TokenValidator], *, fault_style: str,
                 public: Callable[[str], bool] = lambda path: False, optional: bool = False,
                 www_authenticate: str | None = None):
        self.app = app
        self._validator = validator
        self.fault_style = fault_style
        self.public = public
        self.optional = optional
        self.www_authenticate = www_authenticate

    @property
    def validator(self) -> TokenValidator:
        v = self._validator
        return v() if callable(v) and not hasattr(v, "validate") else v

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = None
        for name, value in scope["headers"]:
            if name == b"x-auth-token":
                token = value.decode("latin-1").strip()
                break
        ctx = None
        if token:
            ctx = await self.validator.validate(token)
        if ctx is not None:
            scope["stratus.context"] = ctx
            return await self.app(scope, receive, send)
        path = scope["path"]
        if self.optional or self.public(path[len(scope.get("root_path", "")):] or "/"):
            return await self.app(scope, receive, send)
        message = ("The request you have made requires authentication." if not token
                   else "The token is not valid: it is malformed, expired or revoked.")
        await self._refuse(scope, send, message)

    async def _refuse(self, scope, send, message: str):
        headers = []
        if self.www_authenticate:
            headers.append((b"www-authenticate", f'Keystone uri="{self.www_authenticate}"'.encode()))
        if scope["method"] == "HEAD":
            body, ctype = b"", "text/plain"
        else:
            body, ctype = render_fault(self.fault_style, 401, message)
        headers += [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class ServiceClient:
    """Service-to-service REST calls: another service's public API with this service's token."""

    def __init__(self, credentials: ServiceCredentials):
        self.credentials = credentials
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10))

    async def request(self, service_type: str, method: str, path: str, **kwargs) -> httpx.Response:
        base = await self.credentials.endpoint(service_type)
        for attempt in range(2):
            headers = dict(kwargs.pop("headers", {}) or {})
            headers["X-Auth-Token"] = await self.credentials.token(force=attempt > 0)
            resp = await self.client.request(method, f"{base}{path}", headers=headers, **kwargs)
            if resp.status_code != 401:
                return resp
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "X-Auth-Token"}
        return resp

    async def aclose(self) -> None:
        await self.client.aclose()
