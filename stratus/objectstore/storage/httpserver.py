"""The HTTP/1.1 server of a storage node: httptools (llhttp) straight onto the node's ASGI app.

Why not uvicorn, which served the nodes before: a node is one of three to five processes of the
all-in-one object store, and only ever talks to the proxy and to other nodes. Importing uvicorn
brings click, anyio, watchfiles and multiprocessing into every node, about 9 MB of resident
memory each (the object store's memory target covers the proxy and all its nodes), and its
protocol layer costs about 28 us of CPU per request more than this module (a trivial app
measured 22k against 58k requests/s on one core). The app stays a plain ASGI callable, so
tests and other servers can still drive :class:`~stratus.objectstore.storage.server.StorageNode`
directly; this module implements the part of ASGI 3 (HTTP and lifespan scopes) the node uses.

What it keeps from uvicorn: keep-alive with an idle timeout, HTTP/1.0 ``Connection`` rules,
pipelined requests answered in order, ``Expect: 100-continue`` (the ``100 Continue`` goes out
on the app's first ``receive()``, so a refused upload is never sent), Content-Length and chunked
request bodies with flow control in both directions, HEAD, responses framed by Content-Length
or else chunked, ``http.disconnect`` once the client is gone (a body already read, ``receive()``
waits for it), 400 for a request the parser rejects, 500 for an app error before the response
started and a dropped connection after it (a node cuts a corrupt GET short that way), lifespan
startup/shutdown and a graceful stop on SIGINT/SIGTERM. What it adds: a chunked request body's
trailer fields, as ``trailers`` (``[(name, value)]``, bytes, names in lower case) in the last
``http.request`` message; and ASGI's
``http.response.zerocopysend`` extension (the file's bytes sent by sendfile(2), see
:meth:`stratus.common.httpwire.Connection.sendfile`), which a node's large GET uses.
"""

from __future__ import annotations

import asyncio
import logging
import os
from urllib.parse import unquote

from stratus.common.httpwire import Connection, Request, serve_until_stopped, status_line

log = logging.getLogger("stratus.objectstore.node.http")

BODY_HIGH_WATER = 1 << 20   # stop reading a socket when this much request body waits unread
KEEP_ALIVE_TIMEOUT = 60.0
_ERROR_500 = (status_line(500) + b"content-type: text/plain; charset=utf-8\r\n"
              b"content-length: 22\r\nconnection: close\r\n\r\ninternal server error\n")


class _Cycle(Request):
    """One request and its response: the ASGI ``receive``/``send`` pair the app gets."""

    __slots__ = ("conn", "scope", "body_sent", "started", "finished", "chunked", "head_only",
                 "head_lines", "pending_head", "needs_framing")

    def __init__(self, conn: "_Connection", scope: dict, *head):
        super().__init__(*head)
        self.conn = conn
        self.scope = scope
        self.body_sent = False     # the app was given the last piece of the body
        self.started = False       # http.response.start seen
        self.finished = False      # the last http.response.body sent
        self.chunked = False
        self.head_only = self.method == "HEAD"
        self.head_lines: list[bytes] = []
        self.pending_head: bytes | None = None  # held back to go out with the first body
        self.needs_framing = False  # no Content-Length from the app: the first body decides

    # -- ASGI receive --------------------------------------------------------------------------
    async def receive(self) -> dict:
        conn = self.conn
        if self.expect_continue:
            self.expect_continue = False
            if not self.buffered and not self.complete and not conn.lost and not self.started:
                conn.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.body_sent:
            # the body is all read: what is left to learn is whether the client goes away
            while not conn.lost and not self.finished:
                await self.wait(conn.loop)
            return {"type": "http.disconnect"}
        while not self.chunks and not self.complete and not conn.lost:
            conn.resume_reading()
            await self.wait(conn.loop)
        if conn.lost and not self.complete:
            return {"type": "http.disconnect"}
        body = self.take()
        conn.resume_reading()
        if self.complete:
            self.body_sent = True
            if self.trailers:
                # not in ASGI 3 (which has response trailers only): the proxy sends the md5
                # of a streamed object body after the body (see StorageNode.object_put)
                return {"type": "http.request", "body": body, "more_body": False,
                        "trailers": self.trailers}
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.request", "body": body, "more_body": True}

    # -- ASGI send -------------------------------------------------------------------------------
    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self._build_head(message)
            return
        if kind == "http.response.zerocopysend":
            await self._send_file(message)
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.finished:
            raise RuntimeError("http.response.body after the response ended")
        conn = self.conn
        if conn.write_paused:
            # wait for the previous piece before queueing this one, not after: the app
            # prepares its next piece while this one drains (waiting after each write let the
            # socket run dry between pieces: 256 MiB GETs ran at half speed)
            await conn.drain()
        body = message.get("body", b"")
        more = message.get("more_body", False)
        head = self.pending_head
        if self.needs_framing:
            self.needs_framing = False
            head = self._frame(len(body), more)
        elif head is not None:
            self.pending_head = None
        if conn.lost:
            if not more:
                self._finish()
            return
        transport = conn.transport
        if self.head_only:
            if head is not None:
                transport.write(head)
        elif self.chunked:
            if body:
                transport.writelines((head or b"", b"%x\r\n" % len(body), body, b"\r\n"))
            elif head is not None:
                transport.write(head)
            if not more:
                transport.write(b"0\r\n\r\n")
        elif head is not None:
            transport.write(head + body if body else head)
        elif body:
            transport.write(body)
        if not more:
            self._finish()

    async def _send_file(self, message: dict) -> None:
        """ASGI ``http.response.zerocopysend``: ``count`` bytes of ``file`` from ``offset``,
        sent by the kernel (sendfile) without passing through this process. Only for a
        response framed by Content-Length: a chunked one would need its chunk sizes
        interleaved with the file."""
        if not self.started or self.finished:
            raise RuntimeError("http.response.zerocopysend outside a started response")
        if self.chunked or self.needs_framing:
            raise RuntimeError("http.response.zerocopysend needs a Content-Length response")
        conn = self.conn
        head, self.pending_head = self.pending_head, None
        more = message.get("more_body", False)
        if conn.write_paused:
            await conn.drain()
        if not conn.lost:
            if head is not None:
                conn.transport.write(head)
            count = message.get("count")
            if not self.head_only and count != 0:
                file = message["file"]
                fileno = file if isinstance(file, int) else file.fileno()
                offset = message.get("offset", 0)
                if count is None:
                    count = os.fstat(fileno).st_size - offset
                await conn.sendfile(fileno, offset, count)
        if not more:
            self._finish()

    def _build_head(self, message: dict) -> None:
        lines = [status_line(message["status"])]
        framed = False
        for name, value in message.get("headers", ()):
            lname = name.lower()
            if lname == b"content-length":
                framed = True
            elif lname == b"connection":
                if value.lower() == b"close":
                    self.keep_alive = False
                continue  # written below, from what this server decides
            if b"\n" in value or b"\r" in value:  # never let a value split the response
                value = value.replace(b"\r", b" ").replace(b"\n", b" ")
            lines.append(b"%s: %s\r\n" % (name, value))
        if self.expect_continue and not self.complete:
            # answered without asking for the body the client holds back: the connection
            # cannot carry another request
            self.keep_alive = False
        if framed or self.head_only or message["status"] in (204, 304):
            self.pending_head = self._close_head(lines)
        else:
            self.head_lines = lines
            self.needs_framing = True

    def _frame(self, first_len: int, more: bool) -> bytes:
        lines = self.head_lines
        if not more:
            lines.append(b"content-length: %d\r\n" % first_len)
        elif self.http10:
            self.keep_alive = False  # HTTP/1.0: the end of the body is the close
        else:
            self.chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        return self._close_head(lines)

    def _close_head(self, lines: list) -> bytes:
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        elif self.http10:
            lines.append(b"connection: keep-alive\r\n")  # an HTTP/1.0 client asked for it
        lines.append(b"\r\n")
        return b"".join(lines)

    def _finish(self) -> None:
        self.finished = True
        self.discard = True  # whatever body is still to come is not for anybody
        self.wake()


class _Connection(Connection):
    keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    body_high_water = BODY_HIGH_WATER

    def __init__(self, server: "NodeHTTPServer"):
        super().__init__(server.loop, server.connections)
        self.server = server
        self.app = server.app
        self._client = None

    def connection_made(self, transport):
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._client = (peer[0], peer[1]) if isinstance(peer, tuple) else None

    def new_request(self, method, url, headers, keep_alive, http10, expect_continue):
        raw_path, _, query = url.partition(b"?")
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.0" if http10 else "1.1", "method": method, "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
            "query_string": query, "root_path": "", "headers": headers,
            "client": self._client, "server": self.server.address,
            "extensions": {"http.response.zerocopysend": {}},
        }
        return _Cycle(self, scope, method, url, headers, keep_alive, http10, expect_continue)

    async def answer(self, cycle: _Cycle) -> bool:
        await self._run_app(cycle)
        return cycle.keep_alive

    async def _run_app(self, cycle: _Cycle):
        try:
            await self.app(cycle.scope, cycle.receive, cycle.send)
        except Exception:
            if not cycle.started:
                log.exception("error answering %s %s", cycle.scope["method"],
                              cycle.scope["path"])
                if not self.lost:
                    self.transport.write(_ERROR_500)
            # after the start, all the client can be told is a cut connection (a storage
            # node cuts a corrupt GET short this way on purpose: no log)
            cycle.keep_alive = False
            cycle.finished = True
            return
        if not cycle.finished:
            # the app returned without ending its response
            if not cycle.started and not self.lost:
                log.error("%s %s: the app sent no response", cycle.scope["method"],
                          cycle.scope["path"])
                self.transport.write(_ERROR_500)
            cycle.keep_alive = False
            cycle.finished = True


class NodeHTTPServer:
    """What every connection of one served ASGI app shares."""

    def __init__(self, app, host: str, port: int):
        self.app = app
        self.address = (host, port)
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self._lifespan = _Lifespan(app)

    async def start_lifespan(self) -> None:
        await self._lifespan.startup()

    async def stop_lifespan(self) -> None:
        await self._lifespan.shutdown()


class _Lifespan:
    """The ASGI lifespan protocol: startup before the first request, shutdown after the last."""

    def __init__(self, app):
        self.app = app
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._replies: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def _call(self, event: str) -> None:
        await self._inbox.put({"type": f"lifespan.{event}"})
        getter = asyncio.ensure_future(self._replies.get())
        done, _ = await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            exc = self._task.exception()
            raise RuntimeError(f"the app's lifespan {event} failed") from exc
        reply = getter.result()
        if reply["type"] != f"lifespan.{event}.complete":
            raise RuntimeError(f"the app's lifespan {event} failed: "
                               f"{reply.get('message', reply['type'])}")

    async def startup(self) -> None:
        self._task = asyncio.ensure_future(self.app(
            {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}},
            self._inbox.get, self._replies.put))
        await self._call("startup")

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._call("shutdown")
        await self._task


async def serve(app, host: str, port: int, *, stop: asyncio.Event | None = None,
                on_started=None) -> None:
    """Serve ``app`` until ``stop`` is set or the process gets SIGINT/SIGTERM."""
    server = NodeHTTPServer(app, host, port)
    await server.start_lifespan()
    try:
        await serve_until_stopped(lambda: _Connection(server), server.connections, host, port,
                                  stop=stop or asyncio.Event(), on_started=on_started)
    finally:
        await server.stop_lifespan()


__all__ = ["NodeHTTPServer", "serve"]
