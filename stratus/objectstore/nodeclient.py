"""What the proxy needs to talk to storage nodes: fan-out with quorum, failover reads.

All calls take ring devices (dicts with ``ip``, ``port``, ``device``) and the partition, build
the node path ``/<device>/<part>/<account>[/<container>[/<object>]]`` and speak the node API
documented in :mod:`stratus.objectstore.storage`. Transport is the lean keep-alive pool of
:mod:`stratus.objectstore.httpclient` (one per proxy process).

* :meth:`NodeClient.put_object` streams one body to N nodes at once (``Expect:
  100-continue``, so refusing nodes are replaced by handoffs before any byte is sent) and
  succeeds when a quorum (majority) stored it.
* :meth:`NodeClient.get_object` returns the first good response from the nodes in order
  (primaries, then handoffs), keeping the newest tombstone timestamp among 404s;
  :meth:`NodeClient.iter_object_body` streams it (or relays it socket to socket by splice,
  :meth:`ObjectBody.relay_to`) and, if the node cuts the body short (a corrupt replica or a
  dead node), resumes on the next node with a Range from where it broke.
* :meth:`NodeClient.fanout` sends one small request to many nodes (DELETE, POST, container
  and account operations) and :func:`quorum_status` picks the answer a majority agrees on.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
from dataclasses import dataclass, field
from typing import AsyncIterable, AsyncIterator, Iterable, Iterator
from urllib.parse import quote

from .httpclient import HttpClient, NodeConnectionError, Response
from .backend import MD5_TRAILER, MD5_TRAILER_REQUEST, MULTIPART_BOUNDARY, OBJ_CONTENT_LENGTH

__all__ = ["NodeClient", "NodeResult", "PutResult", "quorum_size", "quorum_status",
           "node_path", "update_target_headers"]


def quorum_size(replicas: int) -> int:
    return replicas // 2 + 1


def _q(name: str, safe: str = "") -> str:
    return quote(name.encode("utf-8", "surrogateescape"), safe=safe)


_DEVICE_PATHS: dict[str, str] = {}


def names_path(account: str, container: str | None = None, obj: str | None = None) -> str:
    """The percent-encoded ``/<account>[/<container>[/<object>]]`` tail of a node path."""
    path = "/" + _q(account)
    if container is not None:
        path += "/" + _q(container)
        if obj is not None:
            path += "/" + _q(obj, safe="/")
    return path


def node_path(device: str, part: int, account: str, container: str | None = None,
              obj: str | None = None, *, tail: str | None = None) -> str:
    """``/<device>/<part>/<account>[/<container>[/<object>]]``, percent-encoded; ``tail``
    is :func:`names_path` of the names when the caller already has it (one request to
    several nodes quotes the names once)."""
    dev = _DEVICE_PATHS.get(device)
    if dev is None:
        if len(_DEVICE_PATHS) > 10000:
            _DEVICE_PATHS.clear()
        dev = _DEVICE_PATHS[device] = "/" + _q(device) + "/"
    return f"{dev}{part}{tail if tail is not None else names_path(account, container, obj)}"


def pair_colocated(targets: list[dict], requesters: list[dict]) -> list[dict]:
    """``targets`` reordered so that the i-th is, where the rings allow it, on the same node
    (ip and port) as ``requesters[i]``; the rest keep their ring order. A storage node merges
    a listing update for one of its own devices in-process, without an HTTP round trip."""
    remaining = list(targets)
    placed: list[dict | None] = []
    for requester in requesters[:len(targets)]:
        match = next((t for t in remaining if t["ip"] == requester["ip"]
                      and t["port"] == requester["port"]), None)
        if match is not None:
            remaining.remove(match)
        placed.append(match)
    ordered = [slot if slot is not None else remaining.pop(0) for slot in placed]
    return ordered + remaining


def update_target_headers(kind: str, count: int, nodes: list[dict], part: int,
                          base: dict | None = None,
                          requesters: list[dict] | None = None) -> list[dict]:
    """Per-request headers that tell ``count`` storage requests where to send listing updates.

    ``kind`` is "container" (object PUT/DELETE → container servers) or "account" (container
    PUT/DELETE → account servers); ``nodes``/``part`` are the ring's nodes for the container
    or account. Every target is named at least once and, when there are fewer requests than
    targets, some requests carry several (as Swift's proxy does), so one failed object
    node never leaves a container replica without its update. Each dict starts from ``base``.
    ``requesters`` (the nodes the requests go to) pairs requests and targets on the same node.
    """
    prefix = f"X-{kind.title()}"
    if requesters:
        nodes = pair_colocated(nodes, requesters)
    out = []
    for i in range(count):
        mine = [nodes[j] for j in range(len(nodes)) if j % count == i % count] if nodes else []
        if not mine and nodes:
            mine = [nodes[i % len(nodes)]]
        headers = dict(base or {})
        if mine:
            headers[f"{prefix}-Host"] = ",".join(f"{n['ip']}:{n['port']}" for n in mine)
            headers[f"{prefix}-Device"] = ",".join(n["device"] for n in mine)
            headers[f"{prefix}-Partition"] = str(part)
        out.append(headers)
    return out


@dataclass
class NodeResult:
    """One node's answer to a small request (body fully read). Status 503 = unreachable."""

    node: dict
    status: int
    headers: dict = field(default_factory=dict)
    body: bytes = b""


@dataclass
class PutResult:
    status: int                 # 201 on quorum; else the best failure (409, 422, 499, 503)
    etag: str | None
    results: list[NodeResult]   # every node that was tried, handoffs included


def quorum_status(statuses: list[int], replicas: int) -> int:
    """The status class a quorum agrees on (Swift's rule); 503 when there is none."""
    need = quorum_size(replicas)
    for klass in (2, 4, 3, 5):
        matching = [s for s in statuses if s // 100 == klass]
        if len(matching) >= need:
            return collections.Counter(matching).most_common(1)[0][0]
    return 503


class _Pipe:
    """A bounded per-node queue of body chunks; a dead consumer never blocks the producer."""

    # Two 1 MiB chunks queued per node keep a disk-bound upload streaming; each one more is
    # another MiB the proxy holds (the chunks are shared by the nodes' queues).
    def __init__(self, depth: int = 2):
        self.items: collections.deque = collections.deque()
        self.depth = depth
        self.dead = False
        self._space = asyncio.Event()
        self._ready = asyncio.Event()

    async def put(self, item):
        while len(self.items) >= self.depth and not self.dead:
            self._space.clear()
            await self._space.wait()
        if not self.dead:
            self.items.append(item)
            self._ready.set()

    def try_put(self, item) -> bool:
        """Append without waiting if there is room (the common case: no task switch)."""
        if self.dead:
            return True
        if len(self.items) < self.depth:
            self.items.append(item)
            self._ready.set()
            return True
        return False

    def kill(self):
        self.dead = True
        self._space.set()

    async def __aiter__(self):
        while True:
            while not self.items:
                self._ready.clear()
                await self._ready.wait()
            item = self.items.popleft()
            self._space.set()
            if item is None:
                return
            yield item


class NodeClient:
    def __init__(self, http: HttpClient | None = None, *, node_timeout: float = 10.0):
        # enough recycled body buffers for a large GET relayed at full speed
        self.http = http or HttpClient(timeout=node_timeout, keep_buffers=4)
        self.node_timeout = node_timeout

    async def close(self):
        await self.http.close()

    # single requests -----------------------------------------------------------------------
    async def request(self, node: dict, part: int, method: str, account: str,
                      container: str | None = None, obj: str | None = None,
                      headers: dict | None = None, body=None, *, query: str = "",
                      content_length: int | None = None) -> Response:
        """One request, response left open for streaming (raises NodeConnectionError)."""
        path = node_path(node["device"], part, account, container, obj)
        if query:
            path += "?" + query
        return await self.http.request(node["ip"], node["port"], method, path, headers, body,
                                       content_length=content_length,
                                       timeout=self.node_timeout)

    async def _small(self, node, part, method, names, headers, body, query) -> NodeResult:
        try:
            resp = await self.request(node, part, method, *names, headers=headers, body=body,
                                      query=query)
            data = await resp.read()
        except (NodeConnectionError, asyncio.TimeoutError, OSError) as exc:
            return NodeResult(node, 503, {}, repr(exc).encode())
        return NodeResult(node, resp.status, resp.headers, data)

    async def _small_many(self, nodes: list[dict], part: int, method: str, names: tuple,
                          per_node: list, body: bytes | None, query: str
                          ) -> list[NodeResult]:
        """One small request per node, all at once (see HttpClient.request_all)."""
        tail = names_path(*names)
        if query:
            tail += "?" + query
        requests = [(n["ip"], n["port"], method, node_path(n["device"], part, *names, tail=tail),
                     h, body) for n, h in zip(nodes, per_node)]
        answers = await self.http.request_all(requests, timeout=self.node_timeout)
        out = []
        for node, resp in zip(nodes, answers):
            if isinstance(resp, BaseException):
                out.append(NodeResult(node, 503, {}, repr(resp).encode()))
                continue
            try:
                data = await resp.read()
            except (NodeConnectionError, asyncio.TimeoutError, OSError) as exc:
                out.append(NodeResult(node, 503, {}, repr(exc).encode()))
                continue
            out.append(NodeResult(node, resp.status, resp.headers, data))
        return out

    async def fanout(self, nodes: list[dict], part: int, method: str, account: str,
                     container: str | None = None, obj: str | None = None, *,
                     headers: dict | list[dict] | None = None, body: bytes | None = None,
                     query: str = "") -> list[NodeResult]:
        """Send the same small request to every node in parallel (``headers`` may be a list,
        one dict per node, e.g. for per-node X-Container-Host)."""
        names = (account, container, obj)
        per_node = headers if isinstance(headers, list) else [headers or {}] * len(nodes)
        return await self._small_many(nodes, part, method, names, per_node, body, query)

    # objects -------------------------------------------------------------------------------
    async def put_object(self, nodes: list[dict], handoffs: Iterator[dict], part: int,
                         account: str, container: str, obj: str,
                         body: bytes | AsyncIterable[bytes], headers: list[dict], *,
                         content_length: int | None = None,
                         replicas: int | None = None) -> PutResult:
        """Store one object on ``nodes`` (one header dict each: X-Timestamp, Content-Type,
        X-Container-Host...), replacing refusing nodes by ``handoffs`` (a handoff gets the
        headers of the node it replaces). Success needs a quorum of ``replicas``."""
        replicas = replicas or len(nodes)
        need = quorum_size(replicas)
        names = (account, container, obj)
        if isinstance(body, (bytes, bytearray, memoryview)):
            return await self._put_small(nodes, handoffs, part, names, bytes(body), headers,
                                         need)
        pipes: list[_Pipe] = []
        tasks: list[asyncio.Task] = []
        started: list[asyncio.Event] = []
        # the body's md5 is computed here, once, and sent after the body (storage.common,
        # MD5_TRAILER): each replica would otherwise hash the same bytes again
        md5 = hashlib.md5()
        backend = {MD5_TRAILER_REQUEST: "1"}
        if content_length is not None:
            backend[OBJ_CONTENT_LENGTH] = str(content_length)
        slots: list[tuple[dict, dict]] = [(n, {**h, **backend}) for n, h in zip(nodes, headers)]
        tried: list[NodeResult] = []

        def md5_trailer() -> dict:
            return {MD5_TRAILER: md5.hexdigest()}

        async def send_to(node, hdrs, pipe, event):
            try:
                resp = await self.http.request(
                    node["ip"], node["port"], "PUT", node_path(node["device"], part, *names),
                    hdrs, pipe, timeout=self.node_timeout, expect_continue=event,
                    trailers=md5_trailer)
                data = await resp.read()
                return NodeResult(node, resp.status, resp.headers, data)
            except (NodeConnectionError, asyncio.TimeoutError, OSError) as exc:
                return NodeResult(node, 503, {}, repr(exc).encode())
            finally:
                pipe.kill()

        async def start(node, hdrs):
            """Connect and wait for 100 Continue; returns True if the node takes the body."""
            pipe, event = _Pipe(), asyncio.Event()
            task = asyncio.ensure_future(send_to(node, hdrs, pipe, event))
            waiter = asyncio.ensure_future(event.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED,
                               timeout=self.node_timeout)
            waiter.cancel()
            if event.is_set() and not task.done():
                pipes.append(pipe)
                tasks.append(task)
                started.append(event)
                return True
            if not task.done():
                task.cancel()
                tried.append(NodeResult(node, 503, {}, b"no 100 Continue"))
            else:
                tried.append(task.result())
            return False

        async def start_slot(node, hdrs):
            if await start(node, hdrs):
                return
            for handoff in handoffs:
                if await start(handoff, hdrs):
                    return

        await asyncio.gather(*(start_slot(n, h) for n, h in slots))
        if len(tasks) < need:
            for t in tasks:
                t.cancel()
            return PutResult(self._failure_status(tried), None, tried)
        lost_quorum = False
        try:
            async for chunk in body:
                if not chunk:
                    continue
                md5.update(chunk)
                live = [p for p in pipes if not p.dead]
                if len(live) < need:
                    lost_quorum = True
                    break
                for p in live:
                    if not p.try_put(chunk):
                        await p.put(chunk)
            if not lost_quorum:
                for p in pipes:
                    await p.put(None)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        if lost_quorum:
            # the survivors must not store a truncated body: drop their connections
            for t in tasks:
                t.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            results = [r if isinstance(r, NodeResult) else NodeResult({}, 503) for r in done]
            return PutResult(self._failure_status(tried + results), None, tried + results)
        results = list(await asyncio.gather(*tasks))
        return self._put_outcome(tried + results, results, need)

    async def _put_small(self, nodes, handoffs, part, names, body, headers, need):
        first = await self._small_many(nodes, part, "PUT", names, headers, body, "")
        tried: list[NodeResult] = list(first)
        done: list[NodeResult] = []

        async def replace(r, hdrs):
            """A refusing or unreachable node: the next handoffs, until one answers."""
            for handoff in handoffs:
                r = await self._small(handoff, part, "PUT", names, hdrs, body, "")
                tried.append(r)
                if r.status != 507 and r.status < 500:
                    break
            done.append(r)

        retries = []
        for r, hdrs in zip(first, headers):
            if r.status == 507 or r.status >= 500:
                retries.append(replace(r, hdrs))
            else:
                done.append(r)
        if retries:
            await asyncio.gather(*retries)
        return self._put_outcome(tried, done, need)

    def _put_outcome(self, tried, final, need) -> PutResult:
        ok = [r for r in final if r.status == 201]
        if len(ok) >= need:
            etags = {r.headers.get("etag") for r in ok}
            if len(etags) == 1:
                return PutResult(201, etags.pop(), tried)
            return PutResult(503, None, tried)  # replicas disagree on what they stored
        return PutResult(self._failure_status(final or tried), None, tried)

    @staticmethod
    def _failure_status(results: list[NodeResult]) -> int:
        statuses = [r.status for r in results]
        for status in (412, 422, 409, 413, 499, 400):
            if status in statuses:
                return status
        return 503

    async def get_object(self, nodes: Iterable[dict], part: int, account: str,
                         container: str | None, obj: str | None,
                         headers: dict | None = None, *, method: str = "GET",
                         query: str = "", max_tries: int | None = None
                         ) -> tuple[Response | None, NodeResult]:
        """First usable answer among ``nodes`` (tried in order). Also serves container and
        account GET/HEAD (``obj``/``container`` None, listing options in ``query``).

        Returns ``(response, result)``: ``response`` is the open 2xx/416 response (stream
        it with :meth:`iter_object_body`), or None when every node failed, in which case
        ``result`` summarizes: 404 (with the newest ``x-backend-timestamp`` seen, the
        tombstone) if any node said 404, else 503.
        """
        best_404: NodeResult | None = None
        tried = 0
        for node in nodes:
            if max_tries is not None and tried >= max_tries:
                break
            tried += 1
            try:
                resp = await self.request(node, part, method, account, container, obj,
                                          headers=headers, query=query)
            except (NodeConnectionError, asyncio.TimeoutError, OSError):
                continue
            if resp.status < 300 or resp.status == 416 or resp.status == 304 \
                    or resp.status == 412:
                return resp, NodeResult(node, resp.status, resp.headers)
            await resp.read()
            if resp.status == 404:
                ts = resp.headers.get("x-backend-timestamp", "")
                if best_404 is None or ts > best_404.headers.get("x-backend-timestamp", ""):
                    best_404 = NodeResult(node, 404, resp.headers)
        if best_404 is not None:
            return None, best_404
        return None, NodeResult({}, 503)

    get_first = get_object  # the name that reads better for container/account requests

    def iter_object_body(self, resp: Response, more_nodes: Iterator[dict], part: int,
                         account: str, container: str, obj: str, *,
                         request_headers: dict | None = None) -> "ObjectBody":
        """The body of an object GET's 200 or 206 response: iterate it for its pieces, or let
        a server relay it (:meth:`ObjectBody.relay_to`); on a short body it resumes from the
        next node (see :class:`ObjectBody`). ``request_headers``: those the GET was sent
        with (a 206's Range among them), for the resuming request."""
        return ObjectBody(self, resp, more_nodes, part, account, container, obj,
                          request_headers=request_headers)


# a body at least this long left in the node's socket is relayed by splice; a shorter one is
# read, where the pipe and the extra system calls would cost more than the copy they save
SPLICE_MIN = 4 << 20


class ObjectBody:
    """An object GET's body from one node, resumed from the next node if that node cuts it
    short: a corrupt replica (the node's signal) or a node gone. A whole object or a single
    range resumes with a Range from the first byte missing; a multi-range body (its own
    framing) restarts only if nothing of it was sent. The resumed read must come from the same
    version (same X-Timestamp and ETag), else it fails with NodeConnectionError (the caller
    has already sent headers).

    ``async for`` gives its pieces. A server that can move bytes socket to socket calls
    :meth:`relay_to` instead, so that a large body never passes through this process."""

    def __init__(self, nodes: "NodeClient", resp: Response, more_nodes: Iterator[dict],
                 part: int, account: str, container: str, obj: str, *,
                 request_headers: dict | None = None):
        self._nodes = nodes
        self._current: Response | None = resp
        self._more_nodes = more_nodes
        self._where = (part, account, container, obj)
        self._headers = {k.lower(): v for k, v in (request_headers or {}).items()}
        # -1: a length the node did not give; the body then ends where the node's ends
        self.expected = int(resp.headers.get("content-length", "-1"))
        self._version = (resp.headers.get("x-timestamp"), resp.headers.get("etag"))
        self._span: tuple[int, int] | None = None   # a 206's single range, first-last
        self._boundary: str | None = None            # a multi-range 206's part boundary
        if resp.status == 206:
            crange = resp.headers.get("content-range", "")
            if crange.startswith("bytes ") and "-" in crange:
                first, last = crange[6:].split("/")[0].split("-")
                self._span = (int(first), int(last))
            else:
                ctype = resp.headers.get("content-type", "")
                self._boundary = ctype.partition("boundary=")[2].split(";")[0].strip('" ')
        self.sent = 0

    def _resume_headers(self) -> dict:
        """The request that asks another replica for exactly what is still missing."""
        if self._span is not None:
            return dict(self._headers, range=f"bytes={self._span[0] + self.sent}-{self._span[1]}")
        if self._boundary is not None:
            if self.sent:
                raise NodeConnectionError("multi-range body cut short")
            # nothing sent yet: the same ranges again, framed as the client was told
            return dict(self._headers, **{MULTIPART_BOUNDARY: self._boundary})
        return dict(self._headers, range=f"bytes={self.sent}-")

    def __aiter__(self):
        return self._pieces()

    async def aclose(self) -> None:
        """Abandon the body (its node connection is dropped unless already complete)."""
        if self._current is not None:
            self._current.close()

    async def _pieces(self) -> AsyncIterator[bytes]:
        while True:
            if self._current is not None:
                try:
                    async for chunk in self._current.iter_body():
                        self.sent += len(chunk)
                        yield chunk
                except (NodeConnectionError, asyncio.TimeoutError):
                    pass
            if self.expected < 0 or self.sent >= self.expected:
                return
            await self._resume()

    async def _resume(self) -> None:
        """The next node's answer from the first byte not yet sent, as the current one."""
        if self._current is not None:
            self._current.close()
        self._current = None
        headers = self._resume_headers()
        part, account, container, obj = self._where
        for node in self._more_nodes:
            try:
                r = await self._nodes.request(node, part, "GET", account, container, obj,
                                              headers=headers)
            except (NodeConnectionError, asyncio.TimeoutError, OSError):
                continue
            if r.status == 206 and (r.headers.get("x-timestamp"),
                                    r.headers.get("etag")) == self._version:
                self._current = r
                return
            await r.read()
        raise NodeConnectionError(f"object body cut at {self.sent} of {self.expected} bytes; "
                                  "no replica could resume")

    async def relay_to(self, sink) -> None:
        """Send the whole body to ``sink``: what a node's socket still holds by
        ``await sink.splice_from(fd, count, timeout)`` (bytes delivered), what was read
        already or comes from a short body's resumption by ``await sink.write_piece(data)``.
        Returns early, without error, if the sink's client goes away (``sink.lost``)."""
        while not sink.lost:
            current = self._current
            detached = None
            if current is not None and self.expected - self.sent >= SPLICE_MIN:
                detached = current.detach_socket()
            if detached is None:
                # small, or the socket is not usable: the pieces, as an iterator would give
                async for chunk in self._pieces():
                    await sink.write_piece(chunk)
                    if sink.lost:
                        return
                return
            pieces, fd, left = detached
            try:
                for piece in pieces:
                    self.sent += len(piece)
                    await sink.write_piece(piece)
                if sink.lost:
                    return
                self.sent += await sink.splice_from(fd, left, current._timeout)
            finally:
                os.close(fd)
                current.close()  # not reusable: its parser never saw the spliced bytes
            if self.sent >= self.expected or sink.lost:
                return
            await self._resume()
