"""The proxy's own HTTP/1.1 server (stratus.objectstore.proxy.httpserver) with a scripted
filter pipeline in place of the object store, driven over raw sockets on loopback."""

from __future__ import annotations

import asyncio

import pytest

from stratus.objectstore.proxy import httpserver
from stratus.objectstore.proxy.http import Req, Resp, SwiftError

from .rawhttp import connect, free_port, read_response


class Ctx:
    project_id = "p"


class Validator:
    def __init__(self):
        self.seen = []

    async def validate(self, token):
        self.seen.append(token)
        return Ctx() if token == "good" else None


class Pipeline:
    """Answers by path: /echo (the body back), /stream (a body of unknown length),
    /slow-body (reads the body only after a pause), /refuse (never reads the body),
    /boom (an unexpected error), /cut (a stream that fails half-way)."""

    def __init__(self):
        self.requests: list[Req] = []
        self.errors: list[BaseException] = []

    async def __call__(self, req: Req) -> Resp:
        self.requests.append(req)
        if req.path == "/echo":
            body = req.body
            if body is not None and not isinstance(body, (bytes, bytearray)):
                try:
                    body = b"".join([bytes(c) async for c in body])
                except SwiftError as exc:
                    self.errors.append(exc)
                    raise
            ctx = req.env.get("ctx")
            return Resp(200, {"content-type": "application/octet-stream",
                              "x-who": ctx.project_id if ctx else "anonymous",
                              "x-object-sysmeta-secret": "hidden"}, body or b"")
        if req.path == "/slow-echo":
            # a consumer that holds each piece a while (a slow node): the rest of the body,
            # end included, arrives meanwhile
            got = []
            async for piece in req.body:
                got.append(bytes(piece))
                await asyncio.sleep(0.05)
            return Resp(200, {"content-type": "application/octet-stream"}, b"".join(got))
        if req.path == "/stream":
            async def gen():
                for i in range(3):
                    yield b"part%d;" % i
            return Resp(200, {"content-type": "text/plain"}, gen())
        if req.path == "/refuse":
            raise SwiftError(413, "too large", {"x-extra": "1"})
        if req.path == "/boom":
            raise RuntimeError("boom")
        if req.path == "/cut":
            async def gen():
                yield b"x" * 10
                raise ConnectionError("node went away")
            return Resp(200, {"content-length": "100"}, gen())
        if req.path == "/header":
            return Resp(200, {"x-bad": "a\r\nset-cookie: evil"}, b"")
        return Resp(404, {}, b"nope")


@pytest.fixture
async def server():
    pipeline, validator = Pipeline(), Validator()
    port = free_port()
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(httpserver.serve(pipeline, lambda: validator, "127.0.0.1", port,
                                                on_started=started.set, stop=stop,
                                                drain_seconds=1))
    await asyncio.wait_for(started.wait(), 5)
    yield port, pipeline, validator
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_keep_alive_pipelining_and_headers(server):
    port, pipeline, validator = server
    r, w = await connect(port)
    # three requests in one write: answered in order on the same connection
    w.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Auth-Token: good\r\n\r\n"
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /missing?a=1&b=%20 HTTP/1.1\r\nHost: x\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n")
    s1, h1, b1 = await read_response(r)
    s2, h2, b2 = await read_response(r)
    s3, h3, b3 = await read_response(r)
    assert (s1, b1, h1["x-who"]) == (200, b"", "p")
    assert (s2, b2, h2["x-who"]) == (200, b"hello", "anonymous")
    assert (s3, b3) == (404, b"nope")
    assert "x-object-sysmeta-secret" not in h1  # internal headers never leave the proxy
    for h in (h1, h2, h3):
        assert h["x-trans-id"].startswith("tx") and h["x-openstack-request-id"] == h["x-trans-id"]
        assert h["date"].endswith("GMT")
    assert len({h1["x-trans-id"], h2["x-trans-id"], h3["x-trans-id"]}) == 3
    assert pipeline.requests[2].query == {"a": "1", "b": " "}
    assert pipeline.requests[2].headers["x-dup"] == "1,2"
    assert validator.seen == ["good"]
    w.close()


async def test_path_is_percent_decoded_utf8(server):
    port, pipeline, _ = server
    r, w = await connect(port)
    w.write(b"GET /v1/AUTH_p/c/%C3%A9t%C3%A9/x%2Fy HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_response(r)
    req = pipeline.requests[-1]
    assert req.path == "/v1/AUTH_p/c/\u00e9t\u00e9/x/y"
    assert (req.account, req.container, req.obj) == ("AUTH_p", "c", "\u00e9t\u00e9/x/y")
    w.close()


async def test_chunked_upload_and_large_body_stream(server):
    port, pipeline, _ = server
    r, w = await connect(port)
    w.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    status, _, body = await read_response(r)
    assert (status, body) == (200, b"hello world")
    big = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB: several pieces of the body stream
    w.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big))
    w.write(big)
    status, _, body = await read_response(r)
    assert status == 200 and body == big
    w.close()


async def test_expect_100_continue(server):
    port, pipeline, _ = server
    r, w = await connect(port)
    w.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    status, _, _ = await read_response(r)
    assert status == 100  # asked for only when the proxy reads the body
    w.write(b"data")
    status, _, body = await read_response(r)
    assert (status, body) == (200, b"data")
    # a large body refused before it is asked for: no 100, a final answer, and the connection
    # ends (the client still holds the body back). (A small body is read before the filters
    # run, so its 100 Continue goes out at once, as above.)
    w.write(b"PUT /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 400000\r\n"
            b"Expect: 100-continue\r\n\r\n")
    status, headers, body = await read_response(r)
    assert status == 413 and headers["x-extra"] == "1" and b"too large" in body
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(r.read(), 5) == b""


async def test_refused_body_is_drained_and_connection_kept(server):
    port, _, _ = server
    r, w = await connect(port)
    w.write(b"PUT /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")
    w.write(b"z" * 200000)
    status, headers, _ = await read_response(r)
    assert status == 413 and "connection" not in headers
    w.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, _ = await read_response(r)
    assert status == 200
    w.close()


async def test_head_stream_and_http10(server):
    port, _, _ = server
    r, w = await connect(port)
    w.write(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await read_response(r, head_request=True)
    assert status == 200 and headers["content-length"] == "0"
    w.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await read_response(r)
    assert headers["transfer-encoding"] == "chunked" and body == b"part0;part1;part2;"
    w.close()
    r, w = await connect(port)
    w.write(b"GET /stream HTTP/1.0\r\n\r\n")
    status, headers, body = await read_response(r)
    assert status == 200 and body == b"part0;part1;part2;" and headers["connection"] == "close"
    assert "transfer-encoding" not in headers


async def test_bad_requests_and_errors(server):
    port, _, _ = server
    r, w = await connect(port)
    w.write(b"NOT A REQUEST\r\n\r\n")
    status, headers, body = await read_response(r)
    assert status == 400 and b"Invalid HTTP request" in body
    assert await asyncio.wait_for(r.read(), 5) == b""
    r, w = await connect(port)
    w.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await read_response(r)
    assert status == 500 and headers["content-type"].startswith("text/html") and b"<h1>" in body
    w.write(b"GET /header HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await read_response(r)
    assert status == 200 and "set-cookie" not in headers  # a value cannot split the answer
    # a stream that breaks after the head: the connection is cut (short body)
    w.write(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert b"content-length: 100" in head.lower()
    assert await asyncio.wait_for(r.read(), 5) == b"x" * 10


async def test_client_gone_mid_body_is_a_499(server):
    port, pipeline, _ = server
    r, w = await connect(port)
    w.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"a" * 1000)
    await asyncio.sleep(0.1)
    w.close()
    for _ in range(50):
        if pipeline.errors:
            break
        await asyncio.sleep(0.02)
    assert pipeline.errors and pipeline.errors[0].status == 499


async def test_body_end_arriving_while_a_piece_is_held_is_not_lost(server):
    port, _, _ = server
    r, w = await connect(port)
    big = bytes(range(256)) * (4096 * 2 + 300)  # 2 MiB + 75 KiB: the tail is a short piece
    w.write(b"PUT /slow-echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big)
            + big)
    status, _, body = await read_response(r)
    assert status == 200 and len(body) == len(big) and body == big
    w.close()
