"""The storage node's HTTP/1.1 server (stratus.objectstore.storage.httpserver) serving a scripted
ASGI app, driven over raw sockets on loopback; and a node process that never loads uvicorn."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
import uvloop

from stratus.objectstore.storage import httpserver

from .rawhttp import connect, free_port, read_response


class ScriptedApp:
    """An ASGI app answering by path: /echo (the body back, Content-Length framed), /stream
    (three body messages, no Content-Length), /refuse (never reads the body), /boom (raises
    before answering), /cut (raises half-way through a body), /silent (returns without an
    answer), /wait-disconnect (reads the body, then waits for the client to go away),
    /header (a value with CR LF), /file (``file_path`` but its first 100 and last 7 bytes,
    by zerocopysend in two pieces), /file-chunked (zerocopysend without a Content-Length);
    anything else 204."""

    def __init__(self):
        self.events: list = []
        self.scopes: list = []
        self.disconnected = asyncio.Event()
        self.file_path = None
        self.file_sends_done = 0
        self.trailers: list = []  # /echo: the trailer fields of each body read

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                self.events.append(msg["type"])
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        self.scopes.append(scope)
        path = scope["path"]

        async def start(status=200, headers=()):
            await send({"type": "http.response.start", "status": status,
                        "headers": list(headers)})

        if path == "/echo":
            body = b""
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    self.events.append("disconnect")
                    return
                body += msg["body"]
                if not msg["more_body"]:
                    self.trailers.append(msg.get("trailers"))
                    break
            await start(201, [(b"content-length", b"%d" % len(body)), (b"x-got", b"yes")])
            await send({"type": "http.response.body", "body": body})
        elif path == "/stream":
            await start()
            for i in range(3):
                await send({"type": "http.response.body", "body": b"part%d;" % i,
                            "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/refuse":
            await start(413, [(b"content-length", b"8")])
            await send({"type": "http.response.body", "body": b"too big\n"})
        elif path == "/boom":
            raise RuntimeError("boom")
        elif path == "/cut":
            await start(200, [(b"content-length", b"100")])
            await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
            raise RuntimeError("corrupt block")
        elif path == "/silent":
            return
        elif path == "/wait-disconnect":
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()
        elif path == "/file":
            size = os.path.getsize(self.file_path)
            await start(200, [(b"content-length", b"%d" % (size - 107))])
            mid = 3 << 20
            fd = os.open(self.file_path, os.O_RDONLY)
            try:
                await send({"type": "http.response.zerocopysend", "file": fd, "offset": 100,
                            "count": mid - 100, "more_body": True})
                with open(self.file_path, "rb") as f:  # a file object works as well
                    await send({"type": "http.response.zerocopysend", "file": f,
                                "offset": mid, "count": size - 7 - mid, "more_body": False})
                self.file_sends_done += 1
            finally:
                os.close(fd)
        elif path == "/file-chunked":
            await start(200)
            with open(self.file_path, "rb") as f:
                await send({"type": "http.response.zerocopysend", "file": f, "count": 10})
        elif path == "/header":
            await start(204, [(b"x-bad", b"a\r\nset-cookie: evil")])
            await send({"type": "http.response.body", "body": b""})
        else:
            await start(204)
            await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def server():
    app = ScriptedApp()
    port = free_port()
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(httpserver.serve(app, "127.0.0.1", port, stop=stop,
                                                on_started=started.set))
    await asyncio.wait_for(started.wait(), 5)
    assert app.events == ["lifespan.startup"]
    yield port, app
    stop.set()
    await asyncio.wait_for(task, 15)
    assert app.events[-1] == "lifespan.shutdown"


async def test_keep_alive_pipelining_and_scope(server):
    port, app = server
    r, w = await connect(port)
    w.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /a%20b/c%2Fd?x=1&y=2 HTTP/1.1\r\nHost: x\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n")
    assert (await read_response(r))[::2] == (201, b"")
    status, headers, body = await read_response(r)
    assert (status, body, headers["x-got"]) == (201, b"hello", "yes")
    assert "connection" not in headers
    status, _, _ = await read_response(r)
    assert status == 204
    scope = app.scopes[2]
    assert scope["method"] == "GET" and scope["raw_path"] == b"/a%20b/c%2Fd"
    assert scope["path"] == "/a b/c/d" and scope["query_string"] == b"x=1&y=2"
    assert [v for k, v in scope["headers"] if k == b"x-dup"] == [b"1", b"2"]
    w.close()


async def test_chunked_upload_and_large_body(server):
    port, _ = server
    r, w = await connect(port)
    w.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert (await read_response(r))[::2] == (201, b"hello world")
    big = bytes(range(256)) * (12 * 1024 + 3)  # 3 MiB: above the read-pause threshold
    w.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big))
    w.write(big)
    status, _, body = await read_response(r)
    assert status == 201 and body == big
    w.close()


async def test_chunked_body_trailers_reach_the_app_apart_from_the_headers(server):
    port, app = server
    r, w = await connect(port)
    w.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"X-Timestamp: 1\r\n\r\n5\r\nhello\r\n0\r\nX-Backend-Md5: abc\r\n"
            b"X-Timestamp: 2\r\n\r\n"
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert (await read_response(r))[::2] == (201, b"hello")
    assert (await read_response(r))[::2] == (201, b"hi")
    assert app.trailers == [[(b"x-backend-md5", b"abc"), (b"x-timestamp", b"2")], None]
    # a trailer never poses as a request header (a node trusts X-Timestamp and the length)
    headers = app.scopes[0]["headers"]
    assert (b"x-timestamp", b"1") in headers and (b"x-timestamp", b"2") not in headers
    assert not any(k == b"x-backend-md5" for k, _ in headers)
    w.close()


async def test_streamed_response_head_and_http10(server):
    port, _ = server
    r, w = await connect(port)
    w.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await read_response(r)
    assert headers["transfer-encoding"] == "chunked" and body == b"part0;part1;part2;"
    w.write(b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await read_response(r, head_request=True)
    assert status == 201 and headers["content-length"] == "0"
    w.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")  # nothing stray after the HEAD
    assert (await read_response(r))[0] == 201
    w.close()
    r, w = await connect(port)
    w.write(b"GET /stream HTTP/1.0\r\n\r\n")
    status, headers, body = await read_response(r)
    assert body == b"part0;part1;part2;" and headers["connection"] == "close"
    assert "transfer-encoding" not in headers
    r, w = await connect(port)
    w.write(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = await read_response(r)
    assert headers["connection"] == "keep-alive"
    w.write(b"GET /echo HTTP/1.0\r\n\r\n")
    assert (await read_response(r))[0] == 201
    w.close()


async def test_expect_100_continue(server):
    port, _ = server
    r, w = await connect(port)
    w.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert (await read_response(r))[0] == 100  # sent when the app first asks for the body
    w.write(b"data")
    assert (await read_response(r))[::2] == (201, b"data")
    # refused before the body was asked for: no 100, and the connection ends
    w.write(b"PUT /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 400000\r\n"
            b"Expect: 100-continue\r\n\r\n")
    status, headers, body = await read_response(r)
    assert (status, body, headers["connection"]) == (413, b"too big\n", "close")
    assert await asyncio.wait_for(r.read(), 5) == b""


async def test_unread_body_is_dropped_and_connection_kept(server):
    port, app = server
    r, w = await connect(port)
    w.write(b"PUT /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n")
    w.write(b"z" * 3000000)
    status, headers, _ = await read_response(r)
    assert status == 413 and "connection" not in headers
    w.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
    assert (await read_response(r))[::2] == (201, b"ok")
    w.close()


async def test_app_errors(server):
    port, _ = server
    r, w = await connect(port)
    w.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await read_response(r)
    assert status == 500 and headers["connection"] == "close" and b"internal" in body
    assert await asyncio.wait_for(r.read(), 5) == b""
    r, w = await connect(port)
    w.write(b"GET /silent HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(r))[0] == 500
    r, w = await connect(port)
    w.write(b"GET /header HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = await read_response(r)
    assert status == 204 and "set-cookie" not in headers  # a value cannot split the answer
    # an error after the response started: the body is cut short and the connection closed
    w.write(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert b"content-length: 100" in head
    assert await asyncio.wait_for(r.read(), 5) == b"x" * 10
    r, w = await connect(port)
    w.write(b"NOT HTTP AT ALL\r\n\r\n")
    status, _, body = await read_response(r)
    assert status == 400 and b"Invalid HTTP request" in body


async def test_disconnects_reach_the_app(server):
    port, app = server
    r, w = await connect(port)
    w.write(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.1)
    assert not app.disconnected.is_set()
    w.close()
    await asyncio.wait_for(app.disconnected.wait(), 5)
    # gone half-way through a request body
    r, w = await connect(port)
    w.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"a" * 1000)
    await asyncio.sleep(0.1)
    w.close()
    for _ in range(100):
        if "disconnect" in app.events:
            break
        await asyncio.sleep(0.02)
    assert "disconnect" in app.events


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop],
                         ids=["asyncio", "uvloop"])
def test_zerocopysend_sends_file_ranges(tmp_path, loop_factory):
    """http.response.zerocopysend (what a node's GET uses) on both event loops the node may
    run: exact bytes from the given offsets, a reader slower than the socket (sendfile waits
    for room), keep-alive after it, HEAD, a refused chunked use, a client gone mid-file."""
    content = os.urandom(6 << 20)
    path = tmp_path / "blob"
    path.write_bytes(content)
    expected = content[100:-7]

    async def scenario():
        app = ScriptedApp()
        app.file_path = str(path)
        port = free_port()
        stop, started = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(httpserver.serve(app, "127.0.0.1", port, stop=stop,
                                                    on_started=started.set))
        await asyncio.wait_for(started.wait(), 5)
        fds_before = len(os.listdir("/proc/self/fd"))
        try:
            r, w = await connect(port)
            w.write(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            assert b"content-length: %d" % len(expected) in head
            await asyncio.sleep(0.3)  # the socket fills: the server must wait, not spin or drop
            assert await asyncio.wait_for(r.readexactly(len(expected)), 10) == expected
            w.write(b"HEAD /file HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = await read_response(r, head_request=True)
            assert status == 200 and headers["content-length"] == str(len(expected))
            assert (await read_response(r))[0] == 204  # HEAD sent no body: framing intact
            assert app.scopes[0]["extensions"] == {"http.response.zerocopysend": {}}
            w.close()
            # not framed by Content-Length: refused, the connection dropped without a body
            r, w = await connect(port)
            w.write(b"GET /file-chunked HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(r.read(), 5) == b""
            w.close()
            # a client gone half-way: the send ends, the server goes on serving
            done = app.file_sends_done
            r, w = await connect(port)
            w.write(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(r.readexactly(64 * 1024), 5)
            w.transport.abort()
            for _ in range(250):
                if app.file_sends_done > done or len(app.scopes) > 4:
                    break
                await asyncio.sleep(0.02)
            r, w = await connect(port)
            w.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(r))[0] == 204
            w.close()
            await asyncio.sleep(0.2)
            # every connection's descriptors, the duplicate sendfile waits on included, closed
            assert len(os.listdir("/proc/self/fd")) <= fds_before
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())


def test_node_process_does_not_load_uvicorn(tmp_path):
    """The reason for this server: a node process stays free of uvicorn and what it imports."""
    code = ("import sys, stratus.objectstore.storage.__main__ as m, "
            "stratus.objectstore.storage.httpserver; "
            "print(sorted(n for n in sys.modules if n.split('.')[0] in "
            "('uvicorn', 'click', 'anyio', 'starlette', 'watchfiles')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == "[]"
