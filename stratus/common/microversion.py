"""Microversion negotiation for the APIs that have them (compute, volume).

Clients send ``OpenStack-API-Version: <service type> X.Y`` (and nova clients also the legacy
``X-OpenStack-Nova-API-Version``). No header means the minimum; ``latest`` means the maximum;
outside the range is 406. The chosen version is echoed back with ``Vary``.
"""

from __future__ import annotations

import functools

from stratus.common.errors import ApiError, BadRequest


@functools.total_ordering
class Version:
    __slots__ = ("major", "minor")

    def __init__(self, major: int, minor: int):
        self.major = major
        self.minor = minor

    @classmethod
    def parse(cls, text: str) -> "Version":
        try:
            major, minor = text.strip().split(".")
            return cls(int(major), int(minor))
        except ValueError:
            raise BadRequest(f"Invalid microversion {text!r}: expected MAJOR.MINOR such as 2.1") from None

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = Version.parse(other)
        return (self.major, self.minor) == (other.major, other.minor)

    def __lt__(self, other) -> bool:
        if isinstance(other, str):
            other = Version.parse(other)
        return (self.major, self.minor) < (other.major, other.minor)

    def __hash__(self):
        return hash((self.major, self.minor))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    __repr__ = __str__


class MicroversionMiddleware:
    """Chooses the request's microversion and echoes it on the response (pure ASGI)."""

    def __init__(self, app, *, service_type: str, minimum: str, maximum: str,
                 legacy_header: str | None = None, fault_style: str = "nova",
                 exempt=lambda path: False):
        self.app = app
        self.service_type = service_type.lower()
        self.minimum = Version.parse(minimum)
        self.maximum = Version.parse(maximum)
        self.legacy = legacy_header.lower().encode() if legacy_header else None
        self.fault_style = fault_style
        self.exempt = exempt

    def choose(self, headers: dict[bytes, bytes]) -> Version:
        requested = None
        raw = headers.get(b"openstack-api-version")
        if raw is not None:
            for part in raw.decode("latin-1").split(","):
                words = part.strip().split()
                if len(words) == 2 and words[0].lower() == self.service_type:
                    requested = words[1]
        if requested is None and self.legacy is not None and self.legacy in headers:
            requested = headers[self.legacy].decode("latin-1").strip()
        if requested is None:
            return self.minimum
        if requested.lower() == "latest":
            return self.maximum
        version = Version.parse(requested)
        if not (self.minimum <= version <= self.maximum):
            raise ApiError(
                f"Version {version} is not supported by the API. Minimum is {self.minimum} and maximum is {self.maximum}.",
                status=406)
        return version

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.exempt(scope["path"]):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        try:
            version = self.choose(headers)
        except ApiError as exc:
            from stratus.common.errors import render_fault

            body, ctype = render_fault(self.fault_style, exc.status, exc.message)
            await send({"type": "http.response.start", "status": exc.status,
                        "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        scope["stratus.microversion"] = version
        echo = [(b"openstack-api-version", f"{self.service_type} {version}".encode()),
                (b"vary", b"OpenStack-API-Version" + (b", " + self.legacy if self.legacy else b""))]
        if self.legacy:
            echo.append((self.legacy, str(version).encode()))

        async def send_with_version(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *echo]}
            await send(message)

        await self.app(scope, receive, send_with_version)


def request_version(request) -> Version:
    return request.scope.get("stratus.microversion") or Version(2, 1)
