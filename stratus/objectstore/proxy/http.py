"""The proxy's request and response objects, its fault format and the ASGI adapter.

The proxy is a stack of small filters in Swift's spirit (tempurl, auth, bulk, large objects,
versioning, copy, quotas) over a core that talks to the storage nodes. A filter is an object
with ``async def __call__(req) -> Resp`` and a ``app`` it passes requests on to; filters make
*subrequests* (a segment GET, a copy's source read) by building a new :class:`Req` with
:meth:`Req.sub`. Headers are kept lower-case; HTTP header names are case-insensitive and every
client we serve (swiftclient, openstacksdk, requests) treats them so.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import AsyncIterator, Callable
from urllib.parse import parse_qsl, quote, unquote
from xml.sax.saxutils import escape as xml_escape

import orjson

from stratus.common.errors import render_fault

# Headers only the proxy and nodes may set: a client-supplied one is dropped on the way in
# (with the X-Remove- forms of the sysmeta ones, which would clear what a filter stored).
INTERNAL_PREFIXES = ("x-object-sysmeta-", "x-container-sysmeta-", "x-account-sysmeta-",
                     "x-backend-", "x-object-transient-sysmeta-")
_CLIENT_DROPPED = INTERNAL_PREFIXES + ("x-remove-object-sysmeta-", "x-remove-container-sysmeta-",
                                       "x-remove-account-sysmeta-",
                                       "x-remove-object-transient-sysmeta-")
# ...and never shown to clients on the way out.
HIDDEN_PREFIXES = INTERNAL_PREFIXES + ("x-put-timestamp", "x-delete-timestamp")


# The domain of the project an account belongs to, learned from its owner's token: names in
# ACLs are only trusted in the default domain (a name is unique only within its domain).
PROJECT_DOMAIN_SYSMETA = "x-account-sysmeta-project-domain-id"


class SwiftError(Exception):
    """A fault answered in Swift's style (short HTML body), with optional headers."""

    def __init__(self, status: int, message: str = "", headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def new_trans_id() -> str:
    """Swift's transaction id: ``tx`` + 21 hex digits + ``-`` + hex of the unix time.

    It names a request in logs and is no secret: the random module's generator does (uuid4
    reads the kernel's random source, a system call per request on the hot path)."""
    return f"tx{random.getrandbits(84):021x}-{int(time.time()):010x}"


def normalize_timestamp(t: float | None = None) -> str:
    return "%016.05f" % (time.time() if t is None else t)


@dataclass
class Req:
    method: str
    path: str                      # decoded, e.g. /v1/AUTH_p/c/o
    query: dict[str, str]
    headers: dict[str, str]        # lower-case names
    body: bytes | AsyncIterator[bytes] | None = None
    env: dict = field(default_factory=dict)   # ctx, auth decision, trans id, flags
    version: str | None = None
    account: str | None = None
    container: str | None = None
    obj: str | None = None

    def __post_init__(self):
        if self.version is None and self.path.startswith("/v1"):
            self._split()

    def _split(self):
        parts = self.path.split("/", 4)  # '', v1, account, container, object
        self.version = parts[1] if len(parts) > 1 else None
        self.account = parts[2] or None if len(parts) > 2 else None
        self.container = parts[3] or None if len(parts) > 3 else None
        self.obj = parts[4] or None if len(parts) > 4 else None
        if self.container is None and self.obj is None and len(parts) > 4:
            self.obj = None

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("content-length")
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise SwiftError(400, f"Invalid Content-Length {raw!r}") from None
        if value < 0:
            raise SwiftError(400, f"Invalid Content-Length {raw!r}")
        return value

    def sub(self, method: str, path: str, *, headers: dict | None = None, body=None,
            query: dict | None = None, keep_auth: bool = True) -> "Req":
        """A subrequest made by a filter; it keeps the caller's identity (so segment reads
        are authorized as the caller) unless ``keep_auth`` is False (internal work)."""
        env = {"trans_id": self.env.get("trans_id"), "subrequest": True}
        sub_headers = dict(headers or {})
        if keep_auth:
            for key in ("ctx", "tempurl", "authorize", "acl_names"):
                if key in self.env:
                    env[key] = self.env[key]
            # a referrer ACL (".r:") grants by the caller's Referer: segment reads and
            # listings are judged by the same one
            if "referer" in self.headers:
                sub_headers.setdefault("referer", self.headers["referer"])
        else:
            env["internal"] = True
        return Req(method, path, dict(query or {}), sub_headers, body, env)

    async def read_body(self, limit: int) -> bytes:
        """The whole body (bounded): 413 past ``limit`` bytes."""
        body = self.body
        if body is None:
            return b""
        if isinstance(body, (bytes, bytearray)):
            if len(body) > limit:
                raise SwiftError(413, f"Request body is larger than {limit} bytes")
            return bytes(body)
        chunks, total = [], 0
        async for chunk in body:
            total += len(chunk)
            if total > limit:
                raise SwiftError(413, f"Request body is larger than {limit} bytes")
            chunks.append(chunk)
        self.body = b"".join(chunks)
        return self.body

    def object_path(self) -> str:
        return f"/{self.version}/{self.account}/{self.container}/{self.obj}"


@dataclass
class Resp:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | AsyncIterator[bytes] = b""
    # called once the body has been sent (or abandoned): closes node connections
    on_close: Callable | None = None

    async def read(self) -> bytes:
        body = self.body
        if isinstance(body, (bytes, bytearray)):
            return bytes(body)
        chunks = [c async for c in body]
        self.body = b"".join(chunks)
        return self.body

    async def discard(self):
        body = self.body
        if not isinstance(body, (bytes, bytearray)):
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None


def fault(status: int, message: str = "", headers: dict | None = None) -> Resp:
    body, ctype = render_fault("swift", status, message or "")
    h = {"content-type": ctype}
    h.update(headers or {})
    return Resp(status, h, body)


def status_line(status: int) -> str:
    """``404 Not Found``: a status as Swift's reports (bulk delete, manifest PUT) write it."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Error"


HEARTBEAT_INTERVAL = 10.0  # seconds between the spaces a long bulk-style answer sends


async def spaces_until(work: asyncio.Future, interval: float = HEARTBEAT_INTERVAL):
    """A space now and one every ``interval`` seconds until ``work`` is done: what a
    bulk-style answer (manifest PUT with ``heartbeat=on``, archive extraction) sends before
    its report, so that neither the client nor anything between gives up on a quiet
    connection. Its caller reads ``work``'s outcome afterwards (and cancels it if the
    client left)."""
    yield b" "
    while not (await asyncio.wait({work}, timeout=interval))[0]:
        yield b" "


def report_type(accept: str) -> str:
    """The type of a bulk-style report for a request's Accept header (plain text unless the
    client asks for JSON or XML)."""
    accept = accept.lower()
    if "json" in accept:
        return "application/json"
    if "xml" in accept:
        return "application/xml"
    return "text/plain"


def report_body(ctype: str, fields: dict, errors: list, root_tag: str) -> bytes:
    """A report of Swift's bulk-style operations: ``fields`` ("Response Status", ...) and
    ``errors`` ([name, status line], ...) as JSON, XML (root ``root_tag``) or lines."""
    if ctype == "application/json":
        return orjson.dumps({**fields, "Errors": errors})
    if ctype == "application/xml":
        out = [f"<{root_tag}>\n"]
        for key in sorted(fields):
            tag = key.replace(" ", "_").lower()
            out.append(f"<{tag}>{xml_escape(str(fields[key]))}</{tag}>\n")
        out.append("<errors>\n")
        out += [f"<object><name>{xml_escape(n)}</name><status>{xml_escape(st)}</status>"
                "</object>\n" for n, st in errors]
        out.append(f"</errors>\n</{root_tag}>\n")
        return "".join(out).encode()
    lines = [f"{key}: {fields[key]}\n" for key in sorted(fields)]
    lines.append("Errors:\n")
    lines += [f"{n}, {st}\n" for n, st in errors]
    return "".join(lines).encode()


def parse_query(query_string: bytes) -> dict[str, str]:
    if not query_string:
        return {}
    return dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))


def quote_path(path: str) -> str:
    return quote(path.encode("utf-8", "surrogateescape"), safe="/")


def header_text(value: str) -> str:
    """A header value as the text its sender meant: values reach the proxy decoded as latin-1,
    so one sent as UTF-8 (a container or object name, a key) is itself again once its bytes
    are read as UTF-8; a value that is not UTF-8 stays as it came."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def split_source(value: str) -> tuple[str, str]:
    """``/container/object`` or ``container/object`` (URL-encoded) → (container, object)."""
    value = unquote(header_text(value.strip()))
    if value.startswith("/"):
        value = value[1:]
    container, _, obj = value.partition("/")
    if not container or not obj:
        raise SwiftError(412, "The copy source must be given as <container>/<object>")
    return container, obj


def decode_path(raw: bytes) -> str:
    """The request path as the filters see it: percent-decoded, UTF-8 with surrogate escapes
    (the query string is cut off)."""
    return unquote(raw.split(b"?", 1)[0].decode("latin-1"), errors="surrogateescape")


def request_headers(pairs) -> dict[str, str]:
    """A client's raw (name, value) byte pairs → lower-case names, repeated headers joined by
    commas, the internal ones (sysmeta, X-Backend-*) dropped."""
    headers: dict[str, str] = {}
    for k, v in pairs:
        name = k.decode("latin-1").lower()
        if name.startswith(_CLIENT_DROPPED):
            continue
        value = v.decode("latin-1")
        if name in headers:
            headers[name] += "," + value
        else:
            headers[name] = value
    return headers


def s3_env(env: dict, raw_path: bytes, query_string: bytes) -> None:
    """Signature checks need the request exactly as the client encoded it."""
    env["raw_path"] = raw_path.split(b"?", 1)[0].decode("latin-1")
    env["raw_query"] = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)


def response_headers(resp: Resp, trans_id: str) -> tuple[list[tuple[str, str]], bool]:
    """The headers a client sees for ``resp`` (hidden ones dropped, Content-Length and
    Content-Type filled in, the transaction id added) and whether the body is bytes
    (already materialized) rather than a stream. 204 and 304 get no body; a 204 says
    ``Content-Length: 0`` and has a Content-Type, as Swift's do (clients and upstream's
    functional tests read both)."""
    hdrs = []
    has_length = has_type = False
    status = resp.status
    no_body = status in (204, 304)
    for k, v in resp.headers.items():
        if k.startswith(HIDDEN_PREFIXES):
            continue
        if k == "content-length":
            if no_body:
                continue
            has_length = True
        elif k == "content-type":
            has_type = True
        hdrs.append((k, v if type(v) is str else str(v)))
    body = resp.body
    is_bytes = no_body or isinstance(body, (bytes, bytearray))
    if status == 204:
        hdrs.append(("content-length", "0"))
    elif not has_length and is_bytes and not no_body:
        hdrs.append(("content-length", str(len(body))))
    if not has_type and status != 304:
        hdrs.append(("content-type", "text/html; charset=UTF-8"))
    hdrs.append(("x-trans-id", trans_id))
    hdrs.append(("x-openstack-request-id", trans_id))
    return hdrs, is_bytes


class ASGIAdapter:
    """Runs the filter pipeline for each HTTP request and streams the response."""

    def __init__(self, pipeline, small_body: int = 65536, chunk_size: int = 1 << 20):
        self.pipeline = pipeline
        self.small_body = small_body
        self.chunk_size = chunk_size

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        headers = request_headers(scope["headers"])
        method = scope["method"]
        raw = scope.get("raw_path")
        path = decode_path(raw) if raw else scope["path"]
        trans_id = scope.get("stratus.request_id") or new_trans_id()
        env = {"trans_id": trans_id, "ctx": scope.get("stratus.context")}
        if path.startswith("/s3"):
            s3_env(env, raw or scope["path"].encode(), scope.get("query_string", b""))
        try:
            query = parse_query(scope.get("query_string", b""))
            body = None
            if method in ("PUT", "POST") or "content-length" in headers \
                    or "transfer-encoding" in headers:
                body = await self._body(headers, receive)
            req = Req(method, path, query, headers, body, env)
            resp = await self.pipeline(req)
        except SwiftError as exc:
            resp = fault(exc.status, exc.message, exc.headers)
        await self.send(resp, send, method, trans_id)

    async def _body(self, headers, receive):
        cl = headers.get("content-length")
        if cl is not None and cl.isdigit() and int(cl) <= self.small_body:
            chunks = []
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    raise SwiftError(499, "Client disconnected")
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body"):
                    break
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]
        return self._stream(receive)

    async def _stream(self, receive):
        """Request body in big chunks: fewer, larger writes to the nodes.

        A gathered chunk is handed on as the bytearray itself (no copy to bytes) and never
        touched again: the nodes' transports may still be sending it."""
        size = self.chunk_size
        buf = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise SwiftError(499, "Client disconnected")
            data = msg.get("body", b"")
            more = msg.get("more_body", False)
            if not buf and (len(data) >= size or (not more and data)):
                yield data
            else:
                buf += data
                if len(buf) >= size or (not more and buf):
                    chunk, buf = buf, bytearray()
                    yield chunk
            if not more:
                return

    async def send(self, resp: Resp, send, method: str, trans_id: str):
        pairs, is_bytes = response_headers(resp, trans_id)
        hdrs = [(k.encode("latin-1"), v.encode("latin-1", "replace")) for k, v in pairs]
        body = b"" if resp.status in (204, 304) else resp.body
        try:
            await send({"type": "http.response.start", "status": resp.status, "headers": hdrs})
            if method == "HEAD":
                await send({"type": "http.response.body", "body": b""})
                if not is_bytes:
                    await resp.discard()
                return
            if is_bytes:
                await send({"type": "http.response.body", "body": bytes(body)})
                return
            async for chunk in body:
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            if resp.on_close is not None:
                resp.on_close()
