"""The message bus contract shared by every transport, and the pieces both transports reuse.

A service's API talks to its own agents through a Bus: ``call`` (request/reply), ``cast`` (one
server, no reply) and ``fanout`` (every fanout subscriber). Servers expose an *endpoint*: any
object whose public async methods become remotely callable as ``await endpoint.method(**kwargs)``.

Delivery semantics (identical for every transport, so tests on the in-process bus hold for
RabbitMQ too):

* At most once. A server takes a message off the bus when a handler slot frees up, then runs it;
  if the server dies mid-handler the work is lost and a caller gets ``BusTimeout``, never a
  duplicate execution (re-running "create a VM" twice is worse than reporting a timeout).
* A call or cast to a topic that has no server fails at once with ``NoServerError`` (a
  ``BusError``), instead of waiting out the timeout: "nobody is listening" is a different fault
  from "the server is slow", and the caller should be able to tell them apart.
* A fanout to a topic with no fanout subscriber is not an error: broadcasting to nobody is normal.
* ``serve(topic, endpoint)`` makes a competing consumer: several servers on one topic share calls
  and casts. ``fanout=True`` additionally delivers every ``fanout(topic, ...)`` to this server.
* Payloads are JSON-compatible data, always serialized with orjson (also in-process), so a
  caller never shares mutable state with a server and both transports accept the same types.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
from typing import Any, Awaitable, Callable

import orjson

from stratus.common.requestid import request_id_var

log = logging.getLogger("stratus.bus")

# How many handlers of one subscription may run at once. Bounds memory and lets a slow handler
# coexist with fast ones without one subscription starving the event loop.
HANDLER_CONCURRENCY = 64

# How long Subscription.stop() lets in-flight handlers finish before cancelling them. Agents
# shutting down should finish e.g. a VM spawn rather than leave it half done, but never hang.
STOP_GRACE_SECONDS = 10.0

CALL, CAST, FANOUT = "call", "cast", "fanout"


class BusError(Exception):
    """Any failure of the bus itself (as opposed to an error raised by the remote endpoint)."""


class BusTimeout(BusError):
    """An RPC call whose reply never came within its timeout."""


class NoServerError(BusError):
    """A call or cast to a topic that no server is subscribed to."""


class RemoteError(BusError):
    """The remote endpoint raised; ``exc_type`` is the exception class name, ``message`` its text."""

    def __init__(self, exc_type: str, message: str):
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message


class Subscription(abc.ABC):
    """A running server on a topic, returned by ``Bus.serve``."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop delivery to this server, let in-flight handlers finish (bounded), then return."""


class Bus(abc.ABC):
    def __init__(self, *, default_timeout: float = 60.0, debug: bool = False):
        if default_timeout <= 0:
            raise ValueError("default_timeout must be positive")
        self.default_timeout = default_timeout
        self.debug = debug

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def call(self, topic: str, method: str, *, timeout: float | None = None, **kwargs) -> Any:
        """Run ``method(**kwargs)`` on one server of ``topic`` and return its result."""

    @abc.abstractmethod
    async def cast(self, topic: str, method: str, **kwargs) -> None:
        """Ask one server of ``topic`` to run ``method(**kwargs)``; do not wait for it."""

    @abc.abstractmethod
    async def fanout(self, topic: str, method: str, **kwargs) -> None:
        """Ask every server that serves ``topic`` with ``fanout=True`` to run the method."""

    @abc.abstractmethod
    async def serve(self, topic: str, endpoint: object, *, fanout: bool = False) -> Subscription: ...

    async def __aenter__(self) -> "Bus":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    # -- helpers for transports -------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        timeout = self.default_timeout if timeout is None else timeout
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        return timeout

    def _trace(self, direction: str, kind: str, topic: str, method: str, size: int) -> None:
        # Never log payloads: they carry passwords, tokens and user data.
        if self.debug:
            log.debug("%s %s topic=%s method=%s size=%dB", direction, kind, topic, method, size)


def check_names(topic: str, method: str | None = None) -> None:
    if not isinstance(topic, str) or not topic or topic.strip() != topic:
        raise ValueError(f"invalid bus topic {topic!r}")
    if method is not None and (not isinstance(method, str) or not method):
        raise ValueError(f"invalid bus method name {method!r}")


def encode_request(method: str, kwargs: dict) -> bytes:
    # A non-JSON payload is a programming error in the caller: let orjson's TypeError surface.
    # The request id travels along so that the agent's log lines name the API request.
    return orjson.dumps({"method": method, "kwargs": kwargs, "request_id": request_id_var.get()})


def decode_request(body: bytes) -> tuple[str, dict]:
    request = orjson.loads(body)
    return request["method"], request["kwargs"]


def request_id_of(body: bytes) -> str:
    try:
        return orjson.loads(body).get("request_id") or "-"
    except (orjson.JSONDecodeError, AttributeError):
        return "-"


def result_from_reply(body: bytes) -> Any:
    reply = orjson.loads(body)
    if "error" in reply:
        raise RemoteError(reply["error"]["type"], reply["error"]["message"])
    return reply["result"]


def _error_reply(exc_type: str, message: str) -> bytes:
    return orjson.dumps({"error": {"type": exc_type, "message": message}})


def _find_method(endpoint: object, method: str) -> Callable[..., Awaitable[Any]] | None:
    if method.startswith("_"):
        return None  # private helpers of the endpoint are never reachable from the bus
    bound = getattr(endpoint, method, None)
    return bound if inspect.iscoroutinefunction(bound) else None


async def handle_request(endpoint: object, topic: str, kind: str, body: bytes) -> bytes:
    """Run one request against ``endpoint`` and return the encoded reply (success or error).

    Never raises (except on cancellation): a broken message or a failing endpoint must not take
    the consumer down. Casts and fanouts have nobody to report to, so their failures are logged
    with a traceback; call failures go back to the caller and are logged more quietly.
    """
    request_id_var.set(request_id_of(body))  # handlers run in their own task: no reset needed
    try:
        method, kwargs = decode_request(body)
    except Exception as exc:  # garbage on the wire: report it, keep consuming
        log.error("undecodable %s message on topic %s: %s", kind, topic, exc)
        return _error_reply("BadMessage", f"undecodable message: {exc}")

    handler = _find_method(endpoint, method)
    if handler is None:
        log.warning("%s on topic %s: endpoint has no public async method %r", kind, topic, method)
        return _error_reply(
            "UnknownMethod",
            f"endpoint {type(endpoint).__name__} on topic {topic!r} has no public async method {method!r}",
        )
    try:
        result = await handler(**kwargs)
        return orjson.dumps({"result": result})
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if kind == CALL:
            log.warning("%s.%s raised %s: %s", topic, method, type(exc).__name__, exc, exc_info=True)
        else:
            log.exception("%s %s.%s failed", kind, topic, method)
        if isinstance(exc, orjson.JSONEncodeError):
            return _error_reply("TypeError", f"result of {method!r} is not JSON-compatible: {exc}")
        return _error_reply(type(exc).__name__, str(exc))


class HandlerPool:
    """The running handlers of one subscription: bounded concurrency and a bounded drain on stop."""

    def __init__(self, limit: int = HANDLER_CONCURRENCY):
        self._slots = asyncio.Semaphore(limit)
        self._running: set[asyncio.Task] = set()
        self.stopping = False

    async def run(
        self,
        work: Callable[[], Awaitable[None]],
        *,
        accept: Callable[[], Awaitable[None]] | None = None,
        decline: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Wait for a free slot, ``accept()`` the message, then do the work.

        A message whose slot comes only after ``drain`` began is ``decline()``d instead, so that
        a transport can hand it to another server. Must be awaited inside the message's own task
        (that task is what ``drain`` waits for).
        """
        task = asyncio.current_task()
        self._running.add(task)
        try:
            async with self._slots:
                if self.stopping:
                    if decline is not None:
                        await decline()
                    return
                if accept is not None:
                    await accept()
                await work()
        finally:
            self._running.discard(task)

    async def drain(self, grace: float = STOP_GRACE_SECONDS) -> None:
        self.stopping = True
        current = asyncio.current_task()
        running = [t for t in self._running if t is not current]
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=grace)
        if late:
            log.warning("cancelling %d bus handler(s) still running after %.1fs", len(late), grace)
            for task in late:
                task.cancel()
            await asyncio.wait(late)
