"""The HTTP/1.1 server of ``stratus serve objectstore``: httptools straight onto the filters.

Why not uvicorn: on this 2-core machine a 4 KiB GET through the proxy cost 0.36-0.41 ms of
proxy CPU, and a py-spy profile put about a third of it in uvicorn's protocol and the ASGI
layers above it (message dicts per send, header validation regexes, a middleware per concern,
headers rebuilt three times). This module parses with the same parser uvicorn uses
(httptools/llhttp) but hands each request to the filter pipeline as a :class:`Req` and writes
the :class:`Resp` in one ``transport.write``. The all-in-one ``stratus up`` still mounts the
ASGI adapter (:class:`stratus.objectstore.proxy.http.ASGIAdapter`); both build their requests
and response headers with the same helpers of :mod:`.http`.

What it keeps from uvicorn's behaviour: keep-alive (75 s idle timeout) and HTTP/1.0
``Connection`` rules, pipelined requests answered in order, ``Expect: 100-continue`` (the
``100 Continue`` goes out when the proxy first asks for the body, so a refused upload is never
sent), chunked and Content-Length request bodies with flow control, streamed responses
(Content-Length when known, else chunked), HEAD, a ``Date`` header, 400 for a request the
parser rejects, 500 (Swift style) for an unexpected error before the response started and a
dropped connection after, graceful stop on SIGINT/SIGTERM. The request id, access-log line and
token check are those of :class:`TransIdMiddleware` and :class:`AuthMiddleware`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import time
from email.utils import formatdate

import httptools

from stratus.common.requestid import request_id_var

from .http import (Req, Resp, SwiftError, decode_path, fault, new_trans_id, parse_query,
                   request_headers, response_headers, s3_env)

log = logging.getLogger("stratus.objectstore.server")
access_log = logging.getLogger("stratus.api")

SMALL_BODY = 65536          # a request body up to this size is read whole before the filters run
BODY_CHUNK = 1 << 20        # a larger one is handed on in pieces of about this size
_BODY_HIGH_WATER = 4 << 20  # stop reading the socket when this much request body is queued
KEEP_ALIVE_TIMEOUT = 75.0

_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        from http import HTTPStatus

        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = {499: "Client Disconnect"}.get(status, "")
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


class _Date:
    """The Date header, formatted once per second."""

    def __init__(self):
        self.second = 0
        self.value = ""

    def get(self) -> str:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True)
        return self.value


_date = _Date()


class _Request:
    """One request on a connection: its head, and its body as it arrives."""

    __slots__ = ("method", "url", "headers", "keep_alive", "http10", "expect_continue",
                 "chunks", "buffered", "complete", "discard", "waiter")

    def __init__(self, method, url, headers, keep_alive, http10, expect_continue):
        self.method = method
        self.url = url
        self.headers = headers
        self.keep_alive = keep_alive
        self.http10 = http10
        self.expect_continue = expect_continue
        self.chunks: collections.deque = collections.deque()
        self.buffered = 0
        self.complete = False
        self.discard = False  # answered already: the rest of the body is read and dropped
        self.waiter: asyncio.Future | None = None

    def wake(self):
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class ProxyHTTP:
    """What every connection shares: the filter pipeline, the token validator, the loop."""

    def __init__(self, pipeline, validator_factory):
        self.pipeline = pipeline
        self._validator_factory = validator_factory
        self._validator = None
        self.connections: set[_Connection] = set()
        self.loop = asyncio.get_running_loop()

    @property
    def validator(self):
        if self._validator is None:
            self._validator = self._validator_factory()
        return self._validator

    def protocol(self) -> "_Connection":
        return _Connection(self)


class _Connection(asyncio.Protocol):
    def __init__(self, http: ProxyHTTP):
        self.http = http
        self.loop = http.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.lost = False
        self._url = b""
        self._headers: list = []
        self._parsing: _Request | None = None   # the request whose bytes the parser is reading
        self._active: asyncio.Task | None = None  # the task answering requests, if any
        self._queue: collections.deque[_Request] = collections.deque()  # pipelined, unanswered
        self._reading_paused = False
        self._write_ok = asyncio.Event()
        self._write_ok.set()
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- connection ----------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self.http.connections.add(self)
        self._idle_timer = self.loop.call_later(KEEP_ALIVE_TIMEOUT, self._idle_timeout)

    def connection_lost(self, exc):
        self.lost = True
        self.http.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._write_ok.set()
        if self._parsing is not None:
            self._parsing.wake()
        for req in self._queue:
            req.wake()

    def pause_writing(self):
        self._write_ok.clear()

    def resume_writing(self):
        self._write_ok.set()

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
                    _status_line(400) + b"content-type: text/plain; charset=utf-8\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            if not self.lost:
                self.transport.close()

    # -- parser callbacks ------------------------------------------------------------------------
    def on_message_begin(self):
        self._url = b""
        self._headers = []

    def on_url(self, url):
        self._url += url

    def on_header(self, name, value):
        self._headers.append((name, value))

    def on_headers_complete(self):
        parser = self.parser
        expect = False
        for name, value in self._headers:
            if len(name) == 6 and name.lower() == b"expect" \
                    and value.lower() == b"100-continue":
                expect = True
        req = _Request(parser.get_method().decode("ascii"), self._url, self._headers,
                       parser.should_keep_alive(), parser.get_http_version() == "1.0", expect)
        self._parsing = req
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._active is None:
            self._active = self.loop.create_task(self._serve(req))
        else:
            self._queue.append(req)
            if not self._reading_paused:  # one pipelined request at a time is enough
                self._reading_paused = True
                self.transport.pause_reading()

    def on_body(self, body):
        req = self._parsing
        if req.discard:
            return
        req.chunks.append(body)
        req.buffered += len(body)
        if req.buffered >= _BODY_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        req.wake()

    def on_message_complete(self):
        req = self._parsing
        req.complete = True
        req.wake()
        self._parsing = None

    # -- request body ------------------------------------------------------------------------------
    def _resume_reading(self):
        if self._reading_paused and not self.lost:
            self._reading_paused = False
            self.transport.resume_reading()

    async def _wait_body(self, req: _Request):
        if req.expect_continue:
            req.expect_continue = False
            if not req.buffered and not req.complete and not self.lost:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._resume_reading()
        if self.lost:
            raise SwiftError(499, "Client disconnected")
        req.waiter = self.loop.create_future()
        try:
            await req.waiter
        finally:
            req.waiter = None
        if self.lost and not req.complete:
            raise SwiftError(499, "Client disconnected")

    def _take(self, req: _Request):
        chunks = req.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        req.buffered = 0
        return data

    async def _small_body(self, req: _Request) -> bytes:
        while not req.complete:
            await self._wait_body(req)
        return self._take(req) if req.chunks else b""

    async def _stream_body(self, req: _Request):
        """The body in pieces of about BODY_CHUNK (fewer, larger writes to the nodes); a piece
        handed on is never touched again (the nodes' transports may still be sending it)."""
        while True:
            while req.buffered < BODY_CHUNK and not req.complete:
                await self._wait_body(req)
            if req.chunks:
                yield self._take(req)
            if req.complete:
                return
            self._resume_reading()

    # -- answering -----------------------------------------------------------------------------------
    async def _serve(self, req: _Request):
        try:
            while True:
                keep_alive = await self._answer(req)
                if not req.complete and keep_alive:
                    # read and drop the rest of the body, so the connection stays usable
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
        self._resume_reading()
        if not self.lost:
            self._idle_timer = self.loop.call_later(KEEP_ALIVE_TIMEOUT, self._idle_timeout)

    async def _answer(self, req: _Request) -> bool:
        """Run one request through the filters and send the answer; False when the
        connection must close afterwards."""
        trans_id = new_trans_id()
        request_id_var.set(trans_id)  # this task's context: log lines carry the id
        logging_on = access_log.isEnabledFor(logging.INFO)
        started = time.perf_counter() if logging_on else 0.0
        method = req.method
        url = req.url
        path = decode_path(url)
        token = None
        for name, value in req.headers:
            if len(name) == 12 and name.lower() == b"x-auth-token":
                token = value.decode("latin-1").strip()
                break
        headers = request_headers(req.headers)
        query_string = url.partition(b"?")[2]
        try:
            ctx = await self.http.validator.validate(token) if token else None
            env = {"trans_id": trans_id, "ctx": ctx}
            if path.startswith("/s3"):
                s3_env(env, url, query_string)
            body = None
            if method in ("PUT", "POST") or "content-length" in headers \
                    or "transfer-encoding" in headers:
                cl = headers.get("content-length")
                if cl is not None and cl.isdigit() and int(cl) <= SMALL_BODY:
                    body = await self._small_body(req)
                else:
                    body = self._stream_body(req)
            resp = await self.http.pipeline(
                Req(method, path, parse_query(query_string), headers, body, env))
        except SwiftError as exc:
            resp = fault(exc.status, exc.message, exc.headers)
        except Exception:
            log.exception("error answering %s %s", method, path)
            resp = fault(500, "An unexpected error occurred in the proxy")
        keep_alive = await self._send(req, resp, trans_id)
        if logging_on:
            access_log.info("%s %s %s %d %.1fms", method, "", path, resp.status,
                            (time.perf_counter() - started) * 1000)
        return keep_alive

    async def _send(self, req: _Request, resp: Resp, trans_id: str) -> bool:
        try:
            pairs, is_bytes = response_headers(resp, trans_id)
            status = resp.status
            keep_alive = req.keep_alive
            if req.expect_continue and not req.complete:
                # the client holds back a body that was never asked for: the connection
                # cannot carry another request
                keep_alive = False
            head_only = req.method == "HEAD"
            chunked = False
            if not is_bytes and not head_only:
                if not any(k == "content-length" for k, _ in pairs):
                    if req.http10:
                        keep_alive = False  # HTTP/1.0: the end of the body is the close
                    else:
                        chunked = True
            lines = [_status_line(status).decode("latin-1")]
            for k, v in pairs:
                if "\n" in v or "\r" in v:  # never let a value split the response
                    v = v.replace("\r", " ").replace("\n", " ")
                lines.append(f"{k}: {v}\r\n")
            lines.append(f"date: {_date.get()}\r\n")
            if chunked:
                lines.append("transfer-encoding: chunked\r\n")
            if not keep_alive:
                lines.append("connection: close\r\n")
            lines.append("\r\n")
            head = "".join(lines).encode("latin-1", "replace")
            if self.lost:
                if not is_bytes:
                    await resp.discard()
                return False
            transport = self.transport
            if head_only or status in (204, 304):
                transport.write(head)
                if not is_bytes:
                    await resp.discard()
                return keep_alive
            if is_bytes:
                transport.write(head + resp.body if resp.body else head)
                return keep_alive
            transport.write(head)
            try:
                async for chunk in resp.body:
                    if not chunk:
                        continue
                    if chunked:
                        transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                    else:
                        transport.write(chunk)
                    if not self._write_ok.is_set():
                        await self._write_ok.wait()
                    if self.lost:
                        await resp.discard()
                        return False
            except Exception:
                # the answer has started: all the client can be told is a cut connection
                log.exception("error streaming the answer to %s %s", req.method,
                              req.url.split(b"?")[0].decode("latin-1", "replace"))
                if not self.lost:
                    transport.close()
                return False
            if chunked:
                transport.write(b"0\r\n\r\n")
            return keep_alive
        finally:
            if resp.on_close is not None:
                resp.on_close()
                resp.on_close = None


async def serve(pipeline, validator_factory, host: str, port: int, *, on_started=None,
                stop: asyncio.Event | None = None, drain_seconds: float = 10.0) -> None:
    """Listen until ``stop`` is set (or SIGINT/SIGTERM), then let busy connections finish
    their answer (at most ``drain_seconds``)."""
    loop = asyncio.get_running_loop()
    http = ProxyHTTP(pipeline, validator_factory)
    stop = stop or asyncio.Event()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller sets ``stop``
    server = await loop.create_server(http.protocol, host, port, reuse_address=True,
                                      backlog=2048)
    try:
        if on_started is not None:
            on_started()
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        server.close()
        for conn in list(http.connections):
            conn.shutdown()
        deadline = loop.time() + drain_seconds
        while http.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
            for conn in list(http.connections):
                conn.shutdown()
        for conn in list(http.connections):
            if conn.transport is not None:
                conn.transport.abort()
