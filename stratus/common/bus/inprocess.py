"""The embedded bus: every server lives in this process and this event loop.

It is the default of the all-in-one cloud, so it keeps the AMQP transport's semantics (see
``base``): payloads are copied through orjson, handlers run as bounded concurrent tasks, several
servers on a topic take turns, and a call or cast with no server fails at once.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from .base import (
    CALL,
    CAST,
    FANOUT,
    Bus,
    BusError,
    BusTimeout,
    HandlerPool,
    NoServerError,
    Subscription,
    check_names,
    encode_request,
    handle_request,
    log,
    result_from_reply,
)


class InProcessSubscription(Subscription):
    def __init__(self, bus: "InProcessBus", topic: str, endpoint: object, fanout: bool):
        self._bus = bus
        self.topic = topic
        self.endpoint = endpoint
        self.fanout = fanout
        self._pool = HandlerPool()
        self._tasks: set[asyncio.Task] = set()  # strong refs: the loop only keeps weak ones

    def deliver(self, kind: str, method: str, body: bytes, reply: asyncio.Future | None = None) -> None:
        self._bus._trace("received", kind, self.topic, method, len(body))

        async def work() -> None:
            answer = await handle_request(self.endpoint, self.topic, kind, body)
            if reply is not None and not reply.done():  # the caller may have timed out already
                reply.set_result(answer)

        task = asyncio.get_running_loop().create_task(self._pool.run(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self._bus._unregister(self)
        await self._pool.drain()


class InProcessBus(Bus):
    def __init__(self, *, default_timeout: float = 60.0, debug: bool = False):
        super().__init__(default_timeout=default_timeout, debug=debug)
        self._servers: dict[str, list[InProcessSubscription]] = {}
        self._turns: dict[str, itertools.count] = {}
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def close(self) -> None:
        self._started = False
        subscriptions = [s for servers in self._servers.values() for s in servers]
        await asyncio.gather(*(s.stop() for s in subscriptions))

    def _check_started(self) -> None:
        # Same rule as the AMQP bus, so that forgetting start() fails in tests too.
        if not self._started:
            raise BusError("bus is not started (call await bus.start())")

    def _unregister(self, subscription: InProcessSubscription) -> None:
        servers = self._servers.get(subscription.topic, [])
        if subscription in servers:
            servers.remove(subscription)

    def _next_server(self, topic: str, method: str) -> InProcessSubscription:
        servers = self._servers.get(topic)
        if not servers:
            raise NoServerError(f"no server is listening on bus topic {topic!r} (method {method!r})")
        turn = next(self._turns.setdefault(topic, itertools.count()))
        return servers[turn % len(servers)]

    async def call(self, topic: str, method: str, *, timeout: float | None = None, **kwargs) -> Any:
        check_names(topic, method)
        self._check_started()
        timeout = self._timeout(timeout)
        body = encode_request(method, kwargs)
        server = self._next_server(topic, method)
        reply = asyncio.get_running_loop().create_future()
        self._trace("sent", CALL, topic, method, len(body))
        server.deliver(CALL, method, body, reply)
        try:
            answer = await asyncio.wait_for(reply, timeout)
        except TimeoutError:
            raise BusTimeout(f"no reply to {method!r} from bus topic {topic!r} within {timeout}s") from None
        self._trace("received reply", CALL, topic, method, len(answer))
        return result_from_reply(answer)

    async def cast(self, topic: str, method: str, **kwargs) -> None:
        check_names(topic, method)
        self._check_started()
        body = encode_request(method, kwargs)
        server = self._next_server(topic, method)
        self._trace("sent", CAST, topic, method, len(body))
        server.deliver(CAST, method, body)

    async def fanout(self, topic: str, method: str, **kwargs) -> None:
        check_names(topic, method)
        self._check_started()
        body = encode_request(method, kwargs)
        listeners = [s for s in self._servers.get(topic, []) if s.fanout]
        self._trace("sent", FANOUT, topic, method, len(body))
        if not listeners:
            log.debug("fanout %s.%s reached no subscriber", topic, method)
        for server in listeners:
            server.deliver(FANOUT, method, body)

    async def serve(self, topic: str, endpoint: object, *, fanout: bool = False) -> Subscription:
        check_names(topic)
        self._check_started()
        subscription = InProcessSubscription(self, topic, endpoint, fanout)
        self._servers.setdefault(topic, []).append(subscription)
        return subscription
