"""What the object store's two hand-written HTTP/1.1 servers share (the proxy's,
stratus.objectstore.proxy.httpserver, and the storage nodes', .storage.httpserver; both parse
with httptools, the parser uvicorn uses, and skip the layers they do not need): status lines,
the ``Date`` value (formatted at most once a second), the connection protocol (keep-alive,
pipelining, flow control, bad requests), sending a body the kernel moves itself (sendfile from
a file, splice from another socket) and the listen/drain/stop loop. Each server adds how it
hands a request to its application and writes the answer."""

from __future__ import annotations

import asyncio
import collections
import errno
import fcntl
import os
import signal
import time
from email.utils import formatdate
from http import HTTPStatus

import httptools

_STATUS_LINES: dict[int, bytes] = {}
# Swift's own: a client that hung up before its request was read
_EXTRA_PHRASES = {499: "Client Disconnect"}
SPLICE_PIPE_SIZE = 1 << 20  # bytes a splice relay's pipe holds: fewer, larger moves
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_GONE = (BrokenPipeError, ConnectionResetError)


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <phrase>\\r\\n``."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = _EXTRA_PHRASES.get(status, "")
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


class _DateCache:
    def __init__(self):
        self.second = 0
        self.value = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True)
        return self.value


_date_cache = _DateCache()


def http_date_now() -> str:
    """The current time as an HTTP ``Date`` value (RFC 7231 IMF-fixdate)."""
    return _date_cache.get()




# -- the connection side both servers share ------------------------------------------------------


class Request:
    """One request on a connection: its head, and its body as the parser delivers it."""

    __slots__ = ("method", "url", "headers", "keep_alive", "http10", "expect_continue",
                 "chunks", "buffered", "complete", "discard", "waiter", "trailers")

    def __init__(self, method: str, url: bytes, headers: list, keep_alive: bool, http10: bool,
                 expect_continue: bool):
        self.method = method
        self.url = url
        self.headers = headers          # [(lower-case name, value)] as bytes, in order
        self.keep_alive = keep_alive
        self.http10 = http10
        self.expect_continue = expect_continue
        self.chunks: collections.deque = collections.deque()
        self.buffered = 0
        self.complete = False           # the parser has the whole body
        self.discard = False            # answered already: the rest of the body is dropped
        self.waiter: asyncio.Future | None = None
        self.trailers: list | None = None  # a chunked body's trailer fields, once complete

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self, loop) -> None:
        """Until the parser brings more body, the body ends, or the connection is lost."""
        self.waiter = loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def take(self):
        """Everything buffered, as one piece."""
        chunks = self.chunks
        if not chunks:
            data = b""
        elif len(chunks) == 1:
            data = chunks.popleft()
        else:
            data = b"".join(chunks)
            chunks.clear()
        self.buffered = 0
        return data


class Connection(asyncio.Protocol):
    """An HTTP/1.1 server connection on httptools: keep-alive with an idle timeout, pipelined
    requests answered one at a time in order, flow control both ways, 400 for bytes the parser
    rejects. A subclass makes its request objects (:meth:`new_request`) and answers them
    (:meth:`answer`, which returns whether the connection may carry another request)."""

    keep_alive_timeout = 75.0
    body_high_water = 4 << 20   # stop reading the socket when this much body waits unread

    def __init__(self, loop, connections: set):
        self.loop = loop
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.lost = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self._url = b""
        self._headers: list = []
        self._parsing: Request | None = None     # the request whose bytes the parser reads
        self._current: Request | None = None     # the request being answered
        self._active: asyncio.Task | None = None  # the task answering requests, if any
        self._queue: collections.deque[Request] = collections.deque()  # pipelined
        self._reading_paused = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self._io_waiter: asyncio.Future | None = None  # a sendfile/splice waiting on a socket

    # -- what a subclass provides (and ``async def answer(req) -> bool``) ---------------------------
    def new_request(self, method: str, url: bytes, headers: list, keep_alive: bool,
                    http10: bool, expect_continue: bool) -> Request:
        return Request(method, url, headers, keep_alive, http10, expect_continue)

    # -- connection ------------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.connections.add(self)
        self._idle_timer = self.loop.call_later(self.keep_alive_timeout, self._idle_timeout)

    def connection_lost(self, exc):
        self.lost = True
        self.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._wake_drain()
        if self._io_waiter is not None and not self._io_waiter.done():
            self._io_waiter.set_result(False)
        for req in (self._parsing, self._current, *self._queue):
            if req is not None:
                req.wake()

    def pause_writing(self):
        self.write_paused = True

    def resume_writing(self):
        self.write_paused = False
        self._wake_drain()

    def _wake_drain(self):
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def drain(self) -> None:
        """Until the transport takes writes again (or the connection is gone)."""
        while self.write_paused and not self.lost:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    # -- bodies the kernel moves ---------------------------------------------------------------
    # Why not asyncio's loop.sendfile: uvloop, which runs these servers, does not implement it,
    # and nothing in asyncio splices. Both loops refuse to watch a transport's own descriptor
    # for anything else, so the waits below watch a duplicate of it (the same socket under
    # another number), made per call and closed after.

    async def _socket_for_kernel_send(self) -> int | None:
        """The socket's descriptor once everything the transport still queues (a response
        head) has reached it, else the bytes would go out of order; None if gone."""
        transport = self.transport
        while transport.get_write_buffer_size() and not self.lost:
            await asyncio.sleep(0.001)  # at most a response head: rare, and short
        sock = transport.get_extra_info("socket")
        if sock is None or self.lost or transport.is_closing():
            return None
        return sock.fileno()

    async def _wait_fd(self, fd: int, write: bool, timeout: float | None = None) -> bool:
        """Until ``fd`` is ready; False on timeout or if this connection is lost meanwhile."""
        loop = self.loop
        waiter = self._io_waiter = loop.create_future()
        ready = lambda: waiter.done() or waiter.set_result(True)  # noqa: E731
        expire = lambda: waiter.done() or waiter.set_result(False)  # noqa: E731
        (loop.add_writer if write else loop.add_reader)(fd, ready)
        timer = loop.call_later(timeout, expire) if timeout is not None else None
        try:
            return await waiter
        finally:
            (loop.remove_writer if write else loop.remove_reader)(fd)
            if timer is not None:
                timer.cancel()
            self._io_waiter = None

    def _client_gone(self) -> None:
        # lost from now on, not only once connection_lost runs (a later loop turn): callers
        # check ``lost`` as soon as a send returns, to tell a gone client from a short source
        self.lost = True
        self.transport.abort()

    async def sendfile(self, fileno: int, offset: int, count: int) -> None:
        """``count`` bytes of file ``fileno`` from ``offset`` onto this connection's socket by
        sendfile(2): the kernel sends them from the page cache, no copy in this process. Stops
        early, without error, if the client goes away (:attr:`lost` then says so)."""
        out = await self._socket_for_kernel_send()
        if out is None:
            return
        watch = os.dup(out)
        try:
            while count > 0 and not self.lost:
                try:
                    sent = os.sendfile(out, fileno, offset, count)
                except BlockingIOError:
                    await self._wait_fd(watch, write=True)
                    continue
                except _GONE:
                    self._client_gone()
                    return
                if sent == 0:
                    raise OSError(errno.EIO, f"file ended {count} bytes early during sendfile")
                offset += sent
                count -= sent
        finally:
            os.close(watch)

    async def splice_from(self, source: int, count: int, timeout: float | None) -> int:
        """Relay ``count`` bytes arriving on socket ``source`` (a descriptor the caller owns,
        not a transport's) onto this connection's socket by splice(2) through a pipe: the
        kernel passes the pages along, no copy in this process. Returns the bytes delivered:
        fewer than ``count`` if the source ended, failed or sent nothing for ``timeout``
        seconds (what it did send is all delivered), or if the client went away
        (:attr:`lost` then says so)."""
        out = await self._socket_for_kernel_send()
        if out is None:
            return 0
        pipe_r, pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        watch = os.dup(out)
        try:
            try:
                capacity = fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, SPLICE_PIPE_SIZE)
            except OSError:
                capacity = fcntl.fcntl(pipe_w, fcntl.F_GETPIPE_SZ)
            pulled = delivered = 0
            in_pipe = 0
            source_open = True
            while not self.lost:
                progress = False
                if source_open and pulled < count and in_pipe < capacity:
                    try:
                        n = os.splice(source, pipe_w, min(count - pulled, capacity - in_pipe),
                                      flags=_SPLICE_FLAGS)
                    except BlockingIOError:
                        n = -1
                    except OSError:
                        n = 0  # the source failed: deliver what came, then stop
                    if n == 0:
                        source_open = False
                    elif n > 0:
                        pulled += n
                        in_pipe += n
                        progress = True
                if in_pipe:
                    try:
                        m = os.splice(pipe_r, out, in_pipe, flags=_SPLICE_FLAGS)
                    except BlockingIOError:
                        m = 0
                    except _GONE:
                        self._client_gone()
                        break
                    if m:
                        in_pipe -= m
                        delivered += m
                        progress = True
                if not in_pipe and (pulled >= count or not source_open):
                    break
                if progress:
                    continue
                if in_pipe:
                    await self._wait_fd(watch, write=True)
                elif not await self._wait_fd(source, write=False, timeout=timeout):
                    source_open = False  # silent too long (or the client is gone)
            return delivered
        finally:
            os.close(watch)
            os.close(pipe_r)
            os.close(pipe_w)

    def pause_reading(self):
        if not self._reading_paused and not self.lost:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self):
        if self._reading_paused and not self.lost:
            self._reading_paused = False
            self.transport.resume_reading()

    def _idle_timeout(self):
        self._idle_timer = None
        if self._active is None and not self.lost:
            self.transport.close()

    def shutdown(self):
        """Graceful stop: an idle connection closes now, a busy one after its answer."""
        if self._active is None and not self.lost:
            self.transport.close()

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here: the request is answered as a plain one
        except httptools.HttpParserError as exc:
            if self._active is None and not self.lost:
                body = f"Invalid HTTP request received: {exc}".encode()
                self.transport.write(
                    status_line(400) + b"content-type: text/plain; charset=utf-8\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            if not self.lost:
                self.transport.close()

    # -- parser callbacks ----------------------------------------------------------------------
    def on_message_begin(self):
        self._url = b""
        self._headers = []

    def on_url(self, url):
        self._url += url

    def on_header(self, name, value):
        if self._parsing is not None:
            # after the head: a trailer field of a chunked body (llhttp reports those through
            # the same callback); kept apart so that no trailer can pose as a request header
            req = self._parsing
            if req.trailers is None:
                req.trailers = []
            req.trailers.append((name.lower(), value))
            return
        self._headers.append((name.lower(), value))

    def on_headers_complete(self):
        parser = self.parser
        expect = False
        for name, value in self._headers:
            if name == b"expect" and value.lower() == b"100-continue":
                expect = True
        http10 = parser.get_http_version() == "1.0"
        req = self.new_request(parser.get_method().decode("ascii"), self._url, self._headers,
                               parser.should_keep_alive(), http10, expect)
        self._parsing = req
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._active is None:
            self._active = self.loop.create_task(self._serve(req))
        else:
            self._queue.append(req)
            self.pause_reading()  # one pipelined request waiting is enough

    def on_body(self, body):
        req = self._parsing
        if req.discard:
            return
        req.chunks.append(body)
        req.buffered += len(body)
        if req.buffered >= self.body_high_water:
            self.pause_reading()
        req.wake()

    def on_message_complete(self):
        req = self._parsing
        req.complete = True
        req.wake()
        self._parsing = None

    # -- answering ---------------------------------------------------------------------------------
    async def _serve(self, req: Request):
        try:
            while True:
                self._current = req
                keep_alive = await self.answer(req)
                if not req.complete:
                    # not all read: drop the rest as it comes, so the connection stays usable
                    req.discard = True
                    req.chunks.clear()
                    req.buffered = 0
                if self.lost:
                    return
                if not keep_alive:
                    self.transport.close()
                    return
                if not self._queue:
                    break
                req = self._queue.popleft()
        finally:
            self._active = None
            self._current = None
        self.resume_reading()
        if not self.lost:
            self._idle_timer = self.loop.call_later(self.keep_alive_timeout, self._idle_timeout)


async def serve_until_stopped(protocol_factory, connections: set, host: str, port: int, *,
                              stop: asyncio.Event, on_started=None,
                              drain_seconds: float = 10.0) -> None:
    """Listen until ``stop`` is set or the process gets SIGINT/SIGTERM, then let busy
    connections finish their answer (at most ``drain_seconds``) and cut the rest."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller sets ``stop``
    server = await loop.create_server(protocol_factory, host, port, reuse_address=True,
                                      backlog=2048)
    try:
        if on_started is not None:
            on_started()
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        server.close()
        for conn in list(connections):
            conn.shutdown()
        deadline = loop.time() + drain_seconds
        while connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
            for conn in list(connections):
                conn.shutdown()
        for conn in list(connections):
            if conn.transport is not None:
                conn.transport.abort()


__all__ = ["Connection", "Request", "http_date_now", "serve_until_stopped", "status_line"]
