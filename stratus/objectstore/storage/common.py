"""Small pieces every storage-node module shares: timestamps, request parsing, responses."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from urllib.parse import unquote

import orjson


def normalize_timestamp(value: float | str) -> str:
    """Swift's on-the-wire timestamp: 16 digits before the point, 5 after."""
    return "%016.05f" % float(value)


def now_timestamp() -> str:
    return normalize_timestamp(time.time())


def valid_timestamp(raw: str | None) -> str | None:
    """The normalized form of a client-supplied X-Timestamp, or None if it is not one."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    if not (0 < value < 1e10):
        return None
    return normalize_timestamp(value)


def http_date(ts: float) -> str:
    """Last-Modified: whole seconds, rounded up as Swift does (so it is never before the
    X-Timestamp)."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(math.ceil(ts)))


_second_prefixes: dict[str, str] = {}


def row_timestamp(data_ts: str, changed_ts: str | None = None) -> str:
    """A container listing row's timestamp. A POST that changes an object's Content-Type
    sends the object's row again as ``<data timestamp>+<POST timestamp>``: rows are merged
    newest-wins by comparing these strings, and (timestamps being fixed-width) that orders
    them by the data first, so the row a POST sends from a replica that still holds older
    data never hides a newer PUT's, and then by the POST."""
    return data_ts if changed_ts is None else f"{data_ts}+{changed_ts}"


def valid_row_timestamp(raw: str | None) -> str | None:
    """A row timestamp (see :func:`row_timestamp`) normalized, or None if it is not one."""
    if raw is None:
        return None
    data, sep, changed = raw.partition("+")
    data = valid_timestamp(data)
    if not sep or data is None:
        return data
    changed = valid_timestamp(changed)
    return None if changed is None else row_timestamp(data, changed)


def iso_date(ts: str | float) -> str:
    """Listing ``last_modified`` format: 2024-01-01T00:00:00.123450

    Listings format thousands of these per request, so a normalized timestamp string is
    cut rather than parsed, and the date part is cached per second.
    """
    if not isinstance(ts, str) or len(ts) != 16 or ts[10] != ".":
        ts = normalize_timestamp(ts)
    secs = ts[:10]
    prefix = _second_prefixes.get(secs)
    if prefix is None:
        if len(_second_prefixes) > 65536:
            _second_prefixes.clear()
        prefix = _second_prefixes[secs] = time.strftime("%Y-%m-%dT%H:%M:%S",
                                                        time.gmtime(int(secs)))
    return f"{prefix}.{ts[11:]}0"


class BadRequest(Exception):
    """A client error; ``status`` and ``message`` go back to the caller as is."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class NodeRequest:
    method: str
    device: str
    partition: int
    account: str | None
    container: str | None
    obj: str | None
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    path_depth: int  # 2 = /dev/part, 3 = +account, 4 = +container, 5 = +object
    rest: str  # for REPLICATE /dev/part/<rest>
    # the server can send a file's bytes itself (ASGI http.response.zerocopysend)
    zerocopy: bool = False


def parse_request(scope) -> NodeRequest:
    raw = scope.get("raw_path") or scope["path"].encode()
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    raw = raw.split("?", 1)[0]
    if not raw.startswith("/"):
        raise BadRequest(400, "path must start with /")
    parts = raw[1:].split("/", 4)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise BadRequest(400, "path must be /<device>/<partition>/...")
    try:
        decoded = [unquote(p, errors="surrogateescape") for p in parts]
    except Exception:
        raise BadRequest(400, "bad percent-encoding in path") from None
    device = decoded[0]
    if device in (".", "..") or "/" in device:
        raise BadRequest(400, "bad device name")
    try:
        partition = int(decoded[1])
        if partition < 0:
            raise ValueError
    except ValueError:
        raise BadRequest(400, f"bad partition {decoded[1]!r}") from None
    headers = {}
    for k, v in scope["headers"]:
        headers[k.decode("latin-1").lower()] = v.decode("latin-1")
    query = {}
    qs = scope.get("query_string", b"")
    if qs:
        for pair in qs.decode("latin-1").split("&"):
            if not pair:
                continue
            k, _, v = pair.partition("=")
            query[unquote(k)] = unquote(v.replace("+", " "))
    account = decoded[2] if len(decoded) > 2 else None
    container = decoded[3] if len(decoded) > 3 else None
    obj = decoded[4] if len(decoded) > 4 else None
    for name, value in (("account", account), ("container", container), ("object", obj)):
        if value is not None and value == "":
            raise BadRequest(400, f"empty {name} name")
    return NodeRequest(
        method=scope["method"], device=device, partition=partition, account=account,
        container=container, obj=obj, headers=headers, query=query, path_depth=len(decoded),
        rest="/".join(parts[2:]),
        zerocopy="http.response.zerocopysend" in (scope.get("extensions") or {}))


async def send_response(send, status: int, headers: list | None = None, body: bytes = b"",
                        *, head: bool = False, content_length: int | None = None):
    hdrs = [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in (headers or [])]
    if status not in (204, 304):
        length = len(body) if content_length is None else content_length
        hdrs.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def send_error(send, status: int, message: str, *, head: bool = False):
    """Node errors are plain text; the proxy maps statuses to the public fault format."""
    await send_response(send, status, [("content-type", "text/plain; charset=utf-8")],
                        message.encode("utf-8", "replace") + b"\n", head=head)


async def send_json(send, status: int, doc, headers: list | None = None, *, head=False):
    body = orjson.dumps(doc)
    await send_response(send, status, [("content-type", "application/json")] + (headers or []),
                        body, head=head)


async def read_body(receive, limit: int) -> bytes:
    """Read a whole (small) request body, refusing more than ``limit`` bytes."""
    chunks = []
    total = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise BadRequest(499, "client disconnected")
        chunk = msg.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise BadRequest(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not msg.get("more_body"):
            return b"".join(chunks)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def split_hosts(headers: dict, prefix: str) -> list[tuple[str, int, str, int]]:
    """The update targets the proxy named in X-<Prefix>-Host/-Device/-Partition headers.

    Host and device are comma-separated lists of equal length (one entry per target).
    """
    hosts = headers.get(f"x-{prefix}-host")
    devices = headers.get(f"x-{prefix}-device")
    part = headers.get(f"x-{prefix}-partition")
    if not hosts or not devices or part is None:
        return []
    host_list = [h.strip() for h in hosts.split(",") if h.strip()]
    dev_list = [d.strip() for d in devices.split(",") if d.strip()]
    if len(host_list) != len(dev_list):
        raise BadRequest(400, f"X-{prefix.title()}-Host and -Device lists differ in length")
    try:
        part_no = int(part)
    except ValueError:
        raise BadRequest(400, f"bad X-{prefix.title()}-Partition") from None
    out = []
    for h, d in zip(host_list, dev_list):
        ip, _, port = h.rpartition(":")
        try:
            out.append((ip.strip("[]"), int(port), d, part_no))
        except ValueError:
            raise BadRequest(400, f"bad X-{prefix.title()}-Host {h!r}") from None
    return out
