"""The lean node client against a scripted HTTP server on loopback (no Stratus processes).

The server answers each request with whatever the test's handler writes, so bodies can be
split in odd places, cut short, chunked or sent after a pause.
"""

from __future__ import annotations

import asyncio
import os

import pytest
import uvloop

from stratus.objectstore import httpclient
from stratus.objectstore.httpclient import HttpClient, NodeConnectionError


class ScriptedServer:
    """Reads one request head (and a Content-Length body), then runs ``handler(writer, req)``."""

    def __init__(self, handler):
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[str, str, bytes]] = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in lines[1:] if line)}
                body = b""
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                self.requests.append((method, path, body))
                if not await self.handler(writer, method, path):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _payload(size: int) -> bytes:
    return os.urandom(size)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Runs a scenario on both loops: uvloop in the services, the default loop in tools."""
    runner = uvloop.run if request.param == "uvloop" else asyncio.run
    return lambda scenario: runner(asyncio.wait_for(scenario(), 30))


def test_large_body_in_odd_pieces_is_exact_and_connection_reused(run):
    run(_large_body_in_odd_pieces_is_exact_and_connection_reused)


async def _large_body_in_odd_pieces_is_exact_and_connection_reused():
    data = _payload(3 * httpclient._BODY_CHUNK + 12345)

    async def handler(writer, method, path):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data[:7])
        pos = 7
        for size in (1, 70000, 300001, 2 << 20):
            writer.write(data[pos:pos + size])
            pos += size
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(data[pos:])
        await writer.drain()
        return True

    async with ScriptedServer(handler) as srv:
        client = HttpClient()
        for _ in range(2):
            resp = await client.request("127.0.0.1", srv.port, "GET", "/d/1/a/c/o")
            assert resp.status == 200
            pieces = [bytes(p) async for p in resp.iter_body()]
            assert b"".join(pieces) == data
            # read straight into body buffers: no piece is larger than one of them
            assert max(len(p) for p in pieces) <= httpclient._BODY_CHUNK
        assert srv.connections == 1  # the second request reused the keep-alive connection
        resp = await client.request("127.0.0.1", srv.port, "GET", "/d/1/a/c/o")
        assert await resp.read() == data
        await client.close()


def test_pieces_handed_out_are_never_overwritten(run):
    run(_pieces_handed_out_are_never_overwritten)


async def _pieces_handed_out_are_never_overwritten():
    data = _payload(5 * httpclient._BODY_CHUNK // 2)

    async def handler(writer, method, path):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data))
        for i in range(0, len(data), 100_000):
            writer.write(data[i:i + 100_000])
            await writer.drain()
        return True

    async with ScriptedServer(handler) as srv:
        client = HttpClient()
        resp = await client.request("127.0.0.1", srv.port, "GET", "/o")
        kept = []
        async for piece in resp.iter_body():
            kept.append(piece)          # keep the views themselves, not copies
            await asyncio.sleep(0.005)  # let more of the body arrive meanwhile
        assert b"".join(kept) == data
        await client.close()


def test_body_cut_short_gives_what_arrived_then_an_error(run):
    run(_body_cut_short_gives_what_arrived_then_an_error)


async def _body_cut_short_gives_what_arrived_then_an_error():
    data = _payload(2 * httpclient._BODY_CHUNK + 999)
    cut = httpclient._BODY_CHUNK + 4321

    async def handler(writer, method, path):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data))
        writer.write(data[:cut])
        await writer.drain()
        await asyncio.sleep(0.05)
        return False  # close: the node's signal for a corrupt replica

    async with ScriptedServer(handler) as srv:
        client = HttpClient()
        resp = await client.request("127.0.0.1", srv.port, "GET", "/o")
        got = bytearray()
        with pytest.raises(NodeConnectionError):
            async for piece in resp.iter_body():
                got += piece
        assert bytes(got) == data[:cut]
        await client.close()


def test_stalled_body_times_out(run):
    run(_stalled_body_times_out)


async def _stalled_body_times_out():
    async def handler(writer, method, path):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(2)
        return False

    async with ScriptedServer(handler) as srv:
        client = HttpClient(timeout=0.3)
        resp = await client.request("127.0.0.1", srv.port, "GET", "/o")
        with pytest.raises(asyncio.TimeoutError):
            await resp.read()
        await client.close()


def test_chunked_small_and_head_responses(run):
    run(_chunked_small_and_head_responses)


async def _chunked_small_and_head_responses():
    big = _payload(200_000)

    async def handler(writer, method, path):
        if path == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n")
        elif method == "HEAD":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 123456\r\nEtag: x\r\n\r\n")
        elif path == "/empty":
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsmol")
        await writer.drain()
        return True

    async with ScriptedServer(handler) as srv:
        client = HttpClient()
        r = await client.request("127.0.0.1", srv.port, "GET", "/chunked")
        assert await r.read() == b"hello" + big
        r = await client.request("127.0.0.1", srv.port, "HEAD", "/o")
        assert r.status == 200 and r.headers["content-length"] == "123456"
        assert await r.read() == b""
        r = await client.request("127.0.0.1", srv.port, "GET", "/empty")
        assert r.status == 204 and await r.read() == b""
        r = await client.request("127.0.0.1", srv.port, "GET", "/small")
        assert await r.read() == b"smol"
        assert srv.connections == 1
        await client.close()


def test_extra_bytes_after_a_body_drop_the_connection(run):
    run(_extra_bytes_after_a_body_drop_the_connection)


async def _extra_bytes_after_a_body_drop_the_connection():
    async def handler(writer, method, path):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcJUNK")
        await writer.drain()
        return True

    async with ScriptedServer(handler) as srv:
        client = HttpClient()
        r = await client.request("127.0.0.1", srv.port, "GET", "/o")
        assert await r.read() == b"abc"
        r = await client.request("127.0.0.1", srv.port, "GET", "/o")
        assert await r.read() == b"abc"
        assert srv.connections == 2  # the first connection was not trusted again
        await client.close()


def test_put_streams_a_body_with_100_continue(run):
    run(_put_streams_a_body_with_100_continue)


async def _put_streams_a_body_with_100_continue():
    async def handler(writer, method, path):
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        return True

    async def body():
        for part in (b"a" * 70000, b"b" * 5):
            yield part

    async with ScriptedServer(handler) as srv:
        client = HttpClient()
        r = await client.request("127.0.0.1", srv.port, "PUT", "/o", {}, body(),
                                 content_length=70005)
        assert r.status == 201 and await r.read() == b""
        assert srv.requests[-1][2] == b"a" * 70000 + b"b" * 5
        await client.close()


def test_body_buffers_are_recycled_only_when_free(run):
    run(_body_buffers_are_recycled_only_when_free)


async def _body_buffers_are_recycled_only_when_free():
    bodies = [_payload(3 * httpclient._BODY_CHUNK) for _ in range(4)]  # a new body each time
    served = []

    async def handler(writer, method, path):
        data = bodies[len(served)]
        served.append(data)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data))
        writer.write(data)
        await writer.drain()
        return True

    async with ScriptedServer(handler) as srv:
        client = HttpClient(keep_buffers=8)  # enough for the read-ahead of a whole body

        async def buffers_used(keep_pieces: list | None):
            resp = await client.request("127.0.0.1", srv.port, "GET", "/o")
            used, got = set(), bytearray()
            async for piece in resp.iter_body():
                if isinstance(piece, memoryview):
                    used.add(id(piece.obj))
                got += piece
                if keep_pieces is not None:
                    keep_pieces.append(piece)
            assert bytes(got) == served[-1]
            return used

        await buffers_used(None)
        pool = {id(b) for b in client._buffers._pool}
        second = await buffers_used(None)
        assert second and second <= pool  # the pooled buffers again: no new allocation
        assert {id(b) for b in client._buffers._pool} == pool
        kept: list = []
        await buffers_used(kept)
        await buffers_used(None)  # must not write into buffers the caller still holds
        assert b"".join(kept) == bodies[2]
        assert len(client._buffers._pool) <= client._buffers.keep
        await client.close()


def test_idle_connections_do_not_pin_body_buffers(run):
    run(_idle_connections_do_not_pin_body_buffers)


async def _idle_connections_do_not_pin_body_buffers():
    """After many large bodies on many connections, the next large body is read into pooled
    buffers only: a connection that went idle keeps no reference to its last buffer (which
    would make every later body allocate, map and zero fresh ones)."""
    size = 3 * httpclient._BODY_CHUNK
    data = _payload(size)

    async def handler(writer, method, path):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(data)
        await writer.drain()
        return True

    async with ScriptedServer(handler) as srv:
        client = HttpClient(max_idle_per_host=16, keep_buffers=4)

        async def get():
            resp = await client.request("127.0.0.1", srv.port, "GET", "/o")
            used, got = set(), 0
            async for piece in resp.iter_body():
                if isinstance(piece, memoryview):
                    used.add(id(piece.obj))
                got += len(piece)
                del piece
            assert got == size
            return used

        await asyncio.gather(*(get() for _ in range(8)))  # 8 connections, all idle after
        assert srv.connections == 8
        pool = {id(b) for b in client._buffers._pool}
        assert len(pool) == 4
        for _ in range(3):
            assert await get() <= pool  # pooled buffers only, nothing allocated
        await client.close()


def test_request_all_fans_out_on_kept_connections_and_recovers(run):
    run(_request_all_fans_out_on_kept_connections_and_recovers)


async def _request_all_fans_out_on_kept_connections_and_recovers():
    closing = {"once": False}

    async def handler(writer, method, path):
        if path == "/slow":
            await asyncio.sleep(1.0)
        body = f"{method} {path}".encode()
        writer.write(b"HTTP/1.1 201 Created\r\nEtag: x\r\nContent-Length: %d\r\n\r\n"
                     % len(body) + body)
        await writer.drain()
        if path == "/close-after" and not closing["once"]:
            closing["once"] = True
            return False  # the node drops this keep-alive connection once it answered
        return True

    async with ScriptedServer(handler) as a, ScriptedServer(handler) as b:
        client = HttpClient()
        reqs = [("127.0.0.1", a.port, "PUT", "/close-after", {"X-Timestamp": "1"}, b"abc"),
                ("127.0.0.1", b.port, "PUT", "/p", {"X-Timestamp": "1"}, b"abc"),
                ("127.0.0.1", a.port, "DELETE", "/q", {}, None)]
        # first round: new connections (the ordinary path)
        answers = await client.request_all(reqs)
        assert [r.status for r in answers] == [201, 201, 201]
        assert [await r.read() for r in answers] == [b"PUT /close-after", b"PUT /p",
                                                     b"DELETE /q"]
        await asyncio.sleep(0.05)  # the node's close of the first connection arrives
        # second round: kept connections; the one the node closed is replaced transparently
        answers = await client.request_all(reqs)
        assert [await r.read() for r in answers] == [b"PUT /close-after", b"PUT /p",
                                                     b"DELETE /q"]
        assert a.requests[-3:].count(("PUT", "/close-after", b"abc")) == 1
        assert ("PUT", "/p", b"abc") in b.requests
        # an answer that does not come in time is a TimeoutError; the others still arrive
        answers = await client.request_all(
            [("127.0.0.1", a.port, "GET", "/slow", {}, None),
             ("127.0.0.1", b.port, "GET", "/fast", {}, None)], timeout=0.3)
        assert isinstance(answers[0], asyncio.TimeoutError)
        assert await answers[1].read() == b"GET /fast"
        # nobody listening: a connection error in place of the answer
        dead = HttpClient(connect_timeout=0.5)
        port = a.port
        await a.__aexit__(None, None, None)
        [err] = await dead.request_all([("127.0.0.1", port, "GET", "/x", {}, None)])
        assert isinstance(err, httpclient.NodeConnectionError)
        await client.close()
        await dead.close()


def test_trailers_need_a_streamed_chunked_body(run):
    run(_trailers_need_a_streamed_chunked_body)


async def _trailers_need_a_streamed_chunked_body():
    async def body():
        yield b"x"

    client = HttpClient()
    try:
        for payload, length in ((body(), 1), (b"x", None)):
            with pytest.raises(ValueError, match="chunked"):
                await client.request("127.0.0.1", 9, "PUT", "/d/1/a/c/o", {}, payload,
                                     content_length=length, trailers=lambda: {"x-a": "1"})
        assert client._idle == {}  # refused before any connection was made
    finally:
        await client.close()
