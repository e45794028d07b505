"""httpwire.Connection.splice_from: a response body relayed from another socket by splice(2)
(what the object-store proxy does with a large object from a node), on both event loops the
servers run: exact bytes at any pace, a source that ends early or goes silent, a client that
goes away, and no descriptor left open."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import pytest
import uvloop

from stratus.common.httpwire import Connection, serve_until_stopped
from tests.unit.objectstore.rawhttp import connect, free_port

pytestmark = pytest.mark.timeout(60)
LOOPS = pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop],
                                ids=["asyncio", "uvloop"])


class Relay(Connection):
    """Answers every request with ``declared`` bytes relayed from ``source`` (the test's
    socketpair end) and records what splice_from returned."""

    def __init__(self, loop, connections, rig):
        super().__init__(loop, connections)
        self.rig = rig

    async def answer(self, req) -> bool:
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n"
                             % self.rig["declared"])
        got = await self.splice_from(self.rig["source"], self.rig["declared"], self.rig["timeout"])
        self.rig["results"].append((got, self.lost))
        return False


def run(loop_factory, scenario):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())


async def with_server(rig, body):
    loop = asyncio.get_running_loop()
    connections: set = set()
    port = free_port()
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve_until_stopped(lambda: Relay(loop, connections, rig),
                                                   connections, "127.0.0.1", port, stop=stop,
                                                   on_started=started.set))
    await asyncio.wait_for(started.wait(), 5)
    try:
        await body(port)
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def source_pair():
    node_side, proxy_side = socket.socketpair()
    node_side.setblocking(False)
    proxy_side.setblocking(False)
    return node_side, proxy_side


async def feed(sock: socket.socket, data: bytes, pieces: int, pause: float, close: bool):
    # on the event loop, never in a thread: a send nobody reads any more must stay
    # cancellable (a thread blocked in sendall would hang the loop's shutdown)
    loop = asyncio.get_running_loop()
    step = len(data) // pieces + 1
    for i in range(0, len(data), step):
        await loop.sock_sendall(sock, data[i:i + step])
        await asyncio.sleep(pause)
    if close:
        sock.close()


@LOOPS
def test_relays_exact_bytes_with_a_slow_source_and_a_slow_reader(loop_factory):
    data = os.urandom((6 << 20) + 333)

    async def scenario():
        node, proxy_end = source_pair()
        rig = {"source": proxy_end.fileno(), "declared": len(data), "timeout": 5, "results": []}
        fds = len(os.listdir("/proc/self/fd"))

        async def body(port):
            r, w = await connect(port)
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            feeder = asyncio.create_task(feed(node, data, 7, 0.02, close=False))
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            assert b"content-length: %d" % len(data) in head
            await asyncio.sleep(0.3)  # the pipe and socket fill: the relay must wait, not spin
            assert await asyncio.wait_for(r.readexactly(len(data)), 10) == data
            await feeder
            w.close()

        await with_server(rig, body)
        assert rig["results"] == [(len(data), False)]
        node.close()
        proxy_end.close()
        assert len(os.listdir("/proc/self/fd")) <= fds  # the pipe and the duplicate closed

    run(loop_factory, scenario)


@LOOPS
def test_a_source_that_ends_early_or_goes_silent_delivers_what_came(loop_factory):
    data = os.urandom(3 << 20)

    async def scenario():
        for close, timeout in ((True, 5), (False, 0.3)):  # ends early; sends nothing more
            node, proxy_end = source_pair()
            rig = {"source": proxy_end.fileno(), "declared": len(data) * 2, "timeout": timeout,
                   "results": []}

            async def body(port):
                r, w = await connect(port)
                w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                await feed(node, data, 3, 0.01, close=close)
                await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
                # everything that came is delivered, then the connection closes short
                assert await asyncio.wait_for(r.read(), 10) == data

            await with_server(rig, body)
            assert rig["results"] == [(len(data), False)]
            if not close:
                node.close()
            proxy_end.close()

    run(loop_factory, scenario)


@LOOPS
def test_a_client_gone_mid_relay_ends_it(loop_factory):
    data = os.urandom(8 << 20)

    async def scenario():
        node, proxy_end = source_pair()
        rig = {"source": proxy_end.fileno(), "declared": len(data), "timeout": 5, "results": []}

        async def body(port):
            r, w = await connect(port)
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            feeder = asyncio.create_task(feed(node, data, 8, 0.0, close=False))
            await asyncio.wait_for(r.readexactly(256 << 10), 5)
            w.transport.abort()
            for _ in range(250):
                if rig["results"]:
                    break
                await asyncio.sleep(0.02)
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder

        await with_server(rig, body)
        [(got, lost)] = rig["results"]
        assert got < len(data) and lost
        node.close()
        proxy_end.close()

    run(loop_factory, scenario)
