"""Raw-socket HTTP/1.1 helpers for the tests of our two hand-written servers (proxy and node):
requests are written as bytes, so the tests control framing exactly."""

from __future__ import annotations

import asyncio
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def read_response(reader, head_request=False):
    """(status, headers dict, body) of one response, honouring Content-Length or chunked."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if head_request or status in (100, 204, 304):
        return status, headers, b""
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return status, headers, body
            body += data[:-2]
    if "content-length" in headers:
        return status, headers, await asyncio.wait_for(
            reader.readexactly(int(headers["content-length"])), 5)
    return status, headers, await asyncio.wait_for(reader.read(), 5)


async def connect(port):
    return await asyncio.open_connection("127.0.0.1", port)
