"""A lean pooled HTTP/1.1 client for node-to-node traffic (asyncio protocol + httptools).

The object store makes many small requests between its own processes (proxy → nodes,
object server → container server); a general client costs several hundred microseconds of CPU
per request, this one a small fraction of that. It speaks just what our nodes speak:
HTTP/1.1 keep-alive, Content-Length or chunked bodies both ways, streaming in both
directions with flow control, one request at a time per connection.

    resp = await client.request("127.0.0.1", 6200, "GET", "/sda/12/AUTH_a/c/o")
    async for chunk in resp.iter_body(): ...      # or: body = await resp.read()

Body pieces are bytes-like (``bytes`` or a ``memoryview``): a large body is read by the event
loop straight into 1 MiB buffers and handed out without a copy (see :class:`_Connection`).

A response must be fully read or ``close()``d; a fully read response returns its connection
to the pool. Errors are :class:`NodeConnectionError` (connect/IO failure, including a
response truncated before its announced length) and :class:`asyncio.TimeoutError`.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from typing import AsyncIterable, Callable, Iterable

import httptools

_READ_HIGH_WATER = 2 << 20  # pause the socket when this much response body is buffered
_BODY_CHUNK = 1 << 20       # a response body is read straight into buffers of this size...
_HANDOFF = 256 << 10        # ...and handed to a waiting reader once this much is in one
_SCRATCH_SIZE = 64 << 10    # status line, headers, small and chunked bodies: read here, parsed
_KEEP_BUFFERS = 2           # body buffers a client keeps for reuse (by default)


class NodeConnectionError(ConnectionError):
    """The node could not be reached, or the connection broke mid-response."""


class _Buffers:
    """A client's read buffers: the scratch buffer for heads, and recycled body buffers.

    A fresh 1 MiB bytearray costs a zero-fill and, from fresh pages, 256 page faults: a
    fifth of the proxy's CPU when it relays a large object. A body buffer is reused once
    nothing refers to it any more (no memoryview of it left in a reader, a transport's write
    queue or a connection), which its reference count tells.
    """

    def __init__(self, keep: int = _KEEP_BUFFERS):
        # shared by the client's connections: the event loop calls get_buffer and
        # buffer_updated back to back, and the parser copies what it keeps
        self.scratch = memoryview(bytearray(_SCRATCH_SIZE))
        self.keep = keep
        self._pool: list[bytearray] = []

    def take(self) -> bytearray:
        for buf in self._pool:
            # references: the pool's list, this loop's variable, getrefcount's argument
            if sys.getrefcount(buf) <= 3:
                return buf
        buf = bytearray(_BODY_CHUNK)
        if len(self._pool) < self.keep:
            self._pool.append(buf)
        return buf


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection and the response in flight on it.

    The status line and headers (and chunked or small bodies) are read into the client's
    scratch buffer and parsed by httptools. Once the headers of a response with a
    Content-Length are parsed, the rest of its body bypasses the parser: the event loop reads
    it straight into ``_BODY_CHUNK`` buffers that are handed to the reader as memoryviews (no
    copy in Python). A handed-over slice is never written again while anything refers to it,
    so a reader may keep it (or give it to another transport) as long as it likes.
    """

    def __init__(self, key, buffers: "_Buffers"):
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._write_ok = asyncio.Event()
        self._write_ok.set()
        self._parser = None
        self._buffers = buffers
        self._reset_response()

    # connection lifecycle ----------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        self._write_ok.set()
        self._hand_over()  # bytes the node sent before it stopped are good: give them out
        if not self.complete:
            self.error = NodeConnectionError(f"connection to {self.key} lost: {exc or 'closed'}")
        self._wake()

    def pause_writing(self):
        self._write_ok.clear()

    def resume_writing(self):
        self._write_ok.set()

    def get_buffer(self, sizehint):
        if self._raw_left:
            if self._chunk is None or self._filled == self._limit:
                self._chunk = self._buffers.take()
                self._filled = self._handed = 0
                self._limit = min(self._raw_left, len(self._chunk))
            return memoryview(self._chunk)[self._filled:self._limit]
        return self._buffers.scratch

    def buffer_updated(self, nbytes):
        self.received_any = True
        if self._raw_left:
            self._filled += nbytes
            self._raw_left -= nbytes
            self.buffered += nbytes
            if not self._raw_left:
                self.complete = True
                self._parser = None
            if (self.complete or self._filled == self._limit
                    or (self._waiter is not None and self._filled - self._handed >= _HANDOFF)):
                # a full buffer, the end, or enough for a reader that is waiting: fewer and
                # larger pieces cost less per byte than one per socket read
                self._hand_over()
                self._wake()
            self._check_pause()
            return
        if self._parser is None:
            # unexpected bytes with no request outstanding: the connection is unusable
            self.transport.close()
            return
        try:
            self._parser.feed_data(self._buffers.scratch[:nbytes])
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            self.error = NodeConnectionError(f"bad response from {self.key}: {exc}")
            self.transport.close()
        else:
            if self._length is not None and self.headers_done and not self.complete:
                # the rest of this body goes straight into body buffers (see get_buffer)
                self._raw_left = self._length - self._parsed_body
        self._wake()

    # response parsing ----------------------------------------------------------------------
    def _reset_response(self):
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.headers_done = False
        self.complete = False
        self.error: Exception | None = None
        self.body = collections.deque()
        self.buffered = 0
        self.head_request = False
        self.keep_alive = True
        self.sent_partial = False
        self.got_continue = False
        self.received_any = False
        self.stream_started = False
        self._waiter: asyncio.Future | None = None
        self._paused = False
        self._length: int | None = None   # Content-Length of the response being parsed
        self._chunked = False
        self._parsed_body = 0             # body bytes that went through the parser
        self._raw_left = 0                # body bytes still to read past the parser
        self._chunk: bytearray | None = None
        self._filled = 0                  # bytes of _chunk read so far...
        self._handed = 0                  # ...and handed to the reader
        self._limit = 0                   # bytes of _chunk this body will use

    def start_response(self, head_request: bool):
        self._reset_response()
        self.head_request = head_request
        self._parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes):
        name = name.decode("latin-1").lower()
        value = value.decode("latin-1")
        if name == "content-length" and value.isdigit():
            self._length = int(value)
        elif name == "transfer-encoding":
            self._chunked = True
        self.headers.append((name, value))

    def on_headers_complete(self):
        self.status = self._parser.get_status_code()
        if self.status == 100:
            self.headers = []
            self._length = None
            self._chunked = False
            return
        self.headers_done = True
        self.keep_alive = self._parser.should_keep_alive() and not self.sent_partial
        if self.head_request or self.status in (204, 304) or self._chunked:
            self._length = None  # no body, or one the parser must decode
        if self.head_request:
            self.complete = True
            self._parser = None

    def on_body(self, body: bytes):
        self._parsed_body += len(body)
        self.body.append(body)
        self.buffered += len(body)
        self._check_pause()

    def on_message_complete(self):
        if self.status == 100:
            self.got_continue = True  # the same parser goes on with the final response
            return
        self.complete = True
        self._parser = None

    def hand_over_partial(self) -> bool:
        """Give a reader that found nothing the bytes read so far, if they are worth a send."""
        if self._filled - self._handed >= _HANDOFF:
            self._hand_over()
            return True
        return False

    def _hand_over(self):
        if self._chunk is not None and self._filled > self._handed:
            self.body.append(memoryview(self._chunk)[self._handed:self._filled])
            self._handed = self._filled

    def _check_pause(self):
        if self.buffered > _READ_HIGH_WATER and not self._paused and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def _wake(self):
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait_event(self, timeout: float | None):
        # a timer on the future itself: asyncio.wait_for would wrap it in another future and
        # a done-callback on every wait (several waits per request on the proxy's hot path)
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take_chunk(self):
        """The oldest buffered piece of body (bytes or a memoryview)."""
        data = self.body.popleft()
        self.buffered -= len(data)
        if self._paused and not self.closed and self.buffered <= _READ_HIGH_WATER // 2:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def drain(self, timeout: float | None):
        if not self._write_ok.is_set():
            await asyncio.wait_for(self._write_ok.wait(), timeout)
        if self.closed:
            raise NodeConnectionError(f"connection to {self.key} lost while sending")


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class Response:
    """A node's response; iterate or read its body exactly once."""

    def __init__(self, client: "HttpClient", conn: _Connection, timeout: float | None):
        self._client = client
        self._conn = conn
        self._timeout = timeout
        self.status = conn.status
        self.header_list = conn.headers
        self.headers = {k: v for k, v in conn.headers}
        self._done = False

    def __repr__(self):
        return f"<Response {self.status} from {self._conn.key}>"

    async def iter_body(self):
        if self._done:
            return
        conn = self._conn
        try:
            while True:
                if conn.body:
                    yield conn.take_chunk()
                    continue
                if conn.complete:
                    break
                if conn.error is not None:
                    raise conn.error
                if conn.hand_over_partial():
                    continue
                await conn.wait_event(self._timeout)
        except BaseException:
            self.close()
            raise
        self._finish()

    async def read(self) -> bytes:
        conn = self._conn
        if not self._done and conn.complete and not conn._paused:
            # the whole body is in already (the usual small answer): no iterator needed
            body = conn.body
            data = body[0] if len(body) == 1 else b"".join(body)
            body.clear()
            conn.buffered = 0
            self._finish()
            return data if isinstance(data, bytes) else bytes(data)
        chunks = [c async for c in self.iter_body()]
        if len(chunks) == 1 and isinstance(chunks[0], bytes):
            return chunks[0]
        return b"".join(chunks)

    def detach_socket(self) -> tuple[list, int, int] | None:
        """Hand the rest of a Content-Length body over to be relayed socket to socket
        (splice): the event loop stops reading this response, and the caller gets (the body
        pieces already read, a duplicate of the socket that it must close, the body bytes
        still to come on that socket). The connection is not reused afterwards (its parser
        never sees those bytes); close() the response when done. None when no body is left
        in the socket or the connection has broken: read it the usual way then."""
        conn = self._conn
        if (self._done or conn.complete or conn.error is not None or conn.closed
                or not conn._raw_left):
            return None
        sock = conn.transport.get_extra_info("socket")
        if sock is None:
            return None
        conn.transport.pause_reading()
        conn._paused = True
        conn.keep_alive = False
        conn._hand_over()
        pieces = list(conn.body)
        conn.body.clear()
        conn.buffered = 0
        return pieces, os.dup(sock.fileno()), conn._raw_left

    def _finish(self):
        if not self._done:
            self._done = True
            self._client._release(self._conn, reusable=self._conn.keep_alive)

    def close(self):
        """Abandon the response (the connection is dropped unless it was already complete)."""
        if not self._done:
            self._done = True
            reusable = self._conn.complete and not self._conn.body and self._conn.keep_alive
            self._client._release(self._conn, reusable=reusable)


def _encode_headers(method: str, path: str, host: str, headers: dict | Iterable) -> bytearray:
    items = headers.items() if isinstance(headers, dict) else headers
    lines = [f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"]
    lines += [f"{k}: {v}\r\n" for k, v in items]
    text = "".join(lines)
    try:
        return bytearray(text.encode("latin-1"))
    except UnicodeEncodeError:
        # a value holding text rather than the latin-1 view of bytes (the way headers come
        # in): sent as UTF-8, what a client would have sent for it
        return bytearray(b"".join(line.encode("latin-1") if line.isascii() or
                                  max(line) <= "\xff" else line.encode("utf-8")
                                  for line in lines))


class HttpClient:
    """Keep-alive connection pool keyed by (host, port)."""

    def __init__(self, *, max_idle_per_host: int = 32, connect_timeout: float = 2.0,
                 timeout: float = 30.0, keep_buffers: int = _KEEP_BUFFERS):
        self.max_idle_per_host = max_idle_per_host
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._idle: dict[tuple[str, int], collections.deque] = {}
        # body buffers kept for reuse: a relay of one large body uses about
        # _READ_HIGH_WATER / _BODY_CHUNK + 2 of them at once
        self._buffers = _Buffers(keep_buffers)

    async def _connect(self, host: str, port: int, fresh: bool = False
                       ) -> tuple[_Connection, bool]:
        """(connection, whether it is a reused keep-alive one)."""
        idle = None if fresh else self._idle.get((host, port))
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection((host, port), self._buffers),
                                       host, port),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise NodeConnectionError(f"cannot connect to {host}:{port}: {exc!r}") from None
        return conn, False

    def _release(self, conn: _Connection, reusable: bool):
        # the response is done with its body buffer: an idle connection must not keep it
        # referenced, or the pool (_Buffers.take) never sees it free again and every later
        # large body gets fresh buffers (a mapping, 256 page faults and a zero-fill per MiB:
        # 256 MiB GETs through the proxy ran 10-20% slower after a 1 MiB GET load)
        conn._chunk = None
        if reusable and not conn.closed and conn._parser is None:
            idle = self._idle.setdefault(conn.key, collections.deque())
            if len(idle) < self.max_idle_per_host:
                idle.append(conn)
                return
        if conn.transport is not None:
            conn.transport.close()

    async def request(self, host: str, port: int, method: str, path: str,
                      headers: dict | None = None,
                      body: bytes | AsyncIterable[bytes] | None = None,
                      *, content_length: int | None = None,
                      timeout: float | None = None,
                      expect_continue: asyncio.Event | None = None,
                      trailers: Callable[[], dict] | None = None) -> Response:
        """Send a request; returns once the response headers are in.

        ``path`` must already be percent-encoded. A streaming ``body`` without
        ``content_length`` goes chunked; ``trailers`` (for such a body) is called once the
        body is all sent and its fields go out in the chunked body's trailer. If the node
        answers before the body is fully sent (say 507), sending stops and the connection is
        not reused.

        With ``expect_continue`` (an Event) a streaming body is only sent after the node
        answered ``100 Continue``, and the event is then set: a node that refuses the
        request (507, 409...) never costs the upload any bandwidth.
        """
        if trailers is not None and (content_length is not None
                                     or isinstance(body, (bytes, bytearray, memoryview))):
            raise ValueError("trailers need a streamed, chunked body (no content_length)")
        timeout = self.timeout if timeout is None else timeout
        conn, reused = await self._connect(host, port)
        try:
            return await self._exchange(conn, host, port, method, path, headers, body,
                                        content_length, timeout, expect_continue, trailers)
        except NodeConnectionError:
            # A keep-alive connection the server closed while it sat idle fails before any
            # response byte: that request never ran, so it is safe to send it again.
            if not reused or conn.received_any or conn.stream_started:
                raise
        conn, _ = await self._connect(host, port, fresh=True)
        return await self._exchange(conn, host, port, method, path, headers, body,
                                    content_length, timeout, expect_continue, trailers)

    async def request_all(self, requests: list[tuple], *, timeout: float | None = None
                          ) -> list:
        """Several small requests at once, each ``(host, port, method, path, headers, body)``
        with ``body`` bytes or None; returns once every answer is complete (or failed), one
        :class:`Response` or exception per request, in order.

        The fan-out of a small write (3 replicas) is the proxy's hottest path: requests on
        idle keep-alive connections are written at once and their answers awaited together
        on one future and one timer, with no task per request. A request that needs a new
        connection, or whose idle connection turns out closed by the node, takes the
        ordinary :meth:`request` path.
        """
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        count = len(requests)
        results: list = [None] * count
        conns: list[_Connection | None] = [None] * count
        slow: dict[int, asyncio.Future] = {}
        for i, (host, port, method, path, headers, body) in enumerate(requests):
            idle = self._idle.get((host, port))
            conn = None
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    break
                conn = None
            if conn is None:
                slow[i] = asyncio.ensure_future(
                    self.request(host, port, method, path, headers, body, timeout=timeout))
                continue
            conns[i] = conn
            if headers and "Content-Length" in headers:
                headers = {k: v for k, v in headers.items() if k != "Content-Length"}
            conn.start_response(method == "HEAD")
            payload = body or b""
            head = _encode_headers(method, path, host, headers or ())
            if payload or method in ("PUT", "POST"):
                head += b"Content-Length: %d\r\n" % len(payload)
            head += b"\r\n"
            head += payload
            conn.transport.write(head)
        pending = [i for i in range(count) if conns[i] is not None]
        timer = None
        timed_out = False
        try:
            while pending:
                waiting = []
                for i in pending:
                    conn = conns[i]
                    if not (conn.complete or conn._paused or conn.error is not None
                            or conn.closed):
                        waiting.append(i)
                pending = waiting
                if not pending:
                    break
                waiter = loop.create_future()
                for i in pending:
                    conns[i]._waiter = waiter
                if timer is None and timeout is not None:
                    timer = loop.call_later(timeout, _expire, waiter)
                elif timer is not None:
                    timer.cancel()
                    timer = loop.call_at(timer.when(), _expire, waiter)
                try:
                    await waiter
                except asyncio.TimeoutError:
                    timed_out = True
                    break
                finally:
                    for i in pending:
                        conns[i]._waiter = None
        except BaseException:
            for conn in conns:
                if conn is not None and not conn.complete and conn.transport is not None:
                    conn.transport.close()
            for fut in slow.values():
                fut.cancel()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        for i, conn in enumerate(conns):
            if conn is None:
                continue
            if conn.headers_done and (conn.complete or conn._paused):
                results[i] = Response(self, conn, timeout)
                if conn.complete and not conn.body:
                    results[i]._finish()
            elif timed_out and i in pending:
                conn.transport.close()
                results[i] = asyncio.TimeoutError()
            else:
                # broken before a complete answer; on a reused connection with nothing
                # received the node never ran the request: send it again, as request() does
                if conn.transport is not None:
                    conn.transport.close()
                if conn.received_any:
                    results[i] = conn.error or NodeConnectionError(
                        f"connection to {conn.key} lost")
                else:
                    host, port, method, path, headers, body = requests[i]
                    slow[i] = asyncio.ensure_future(
                        self.request(host, port, method, path, headers, body,
                                     timeout=timeout))
        for i, fut in slow.items():
            try:
                results[i] = await fut
            except (NodeConnectionError, asyncio.TimeoutError, OSError) as exc:
                results[i] = exc
        return results

    @staticmethod
    async def _send_body(conn, body, chunked: bool, timeout, trailers):
        sent_all = False
        conn.stream_started = True
        async for chunk in body:
            if conn.headers_done or conn.closed:
                break  # the node already answered (an error): stop sending
            if chunk:
                if chunked:
                    conn.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    conn.transport.write(chunk)
            await conn.drain(timeout)
        else:
            sent_all = True
            if chunked and not conn.closed:
                if trailers is None:
                    conn.transport.write(b"0\r\n\r\n")
                else:
                    fields = "".join(f"{k}: {v}\r\n" for k, v in trailers().items())
                    conn.transport.write(b"0\r\n" + fields.encode("latin-1") + b"\r\n")
        if not sent_all:
            conn.sent_partial = True

    async def _exchange(self, conn, host, port, method, path, headers, body, content_length,
                        timeout, expect_continue, trailers=None) -> Response:
        headers = dict(headers or {})
        conn.start_response(method == "HEAD")
        try:
            if body is None or isinstance(body, (bytes, bytearray, memoryview)):
                payload = body or b""
                if payload or method in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(payload))
                head = _encode_headers(method, path, host, headers)
                head += b"\r\n"
                head += payload
                conn.transport.write(head)
            else:
                if content_length is not None:
                    headers["Content-Length"] = str(content_length)
                else:
                    headers["Transfer-Encoding"] = "chunked"
                if expect_continue is not None:
                    headers["Expect"] = "100-continue"
                head = _encode_headers(method, path, host, headers)
                head += b"\r\n"
                conn.transport.write(head)
                if expect_continue is not None:
                    while not conn.got_continue and not conn.headers_done:
                        if conn.error is not None:
                            raise conn.error
                        if conn.closed:
                            raise NodeConnectionError(f"connection to {host}:{port} closed")
                        await conn.wait_event(timeout)
                    if conn.got_continue:
                        expect_continue.set()
                chunked = content_length is None
                if conn.headers_done:
                    # refused before any body byte (say 507): do not even start the body
                    # iterator, whose producer may be waiting for this very answer
                    conn.sent_partial = True
                    conn.keep_alive = False
                else:
                    await self._send_body(conn, body, chunked, timeout, trailers)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                if conn.closed:
                    raise NodeConnectionError(f"connection to {host}:{port} closed")
                await conn.wait_event(timeout)
        except BaseException:
            if conn.transport is not None:
                conn.transport.close()
            raise
        if conn.sent_partial:
            conn.keep_alive = False
        resp = Response(self, conn, timeout)
        if conn.complete and not conn.body:
            resp._finish()
        return resp

    async def close(self):
        for idle in self._idle.values():
            while idle:
                conn = idle.pop()
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
