"""The message bus a service's API uses to talk to its own agents (RPC call, cast, fan-out).

    bus = create_bus()                                   # embedded: in-process, same event loop
    bus = create_bus("amqp", "amqp://user:pw@host/")     # fleet: RabbitMQ through aio-pika
    await bus.start()
    sub = await bus.serve("scheduler", SchedulerEndpoint())
    host = await bus.call("scheduler", "select_host", flavor=flavor)

Semantics common to both transports are documented in ``stratus.common.bus.base``.
"""

from __future__ import annotations

from .base import Bus, BusError, BusTimeout, NoServerError, RemoteError, Subscription
from .inprocess import InProcessBus

TRANSPORTS = ("inprocess", "amqp")


def create_bus(
    transport: str = "inprocess",
    url: str | None = None,
    *,
    default_timeout: float = 60.0,
    debug: bool = False,
    namespace: str = "stratus",
) -> Bus:
    """Build (not start) a bus. ``namespace`` prefixes every broker name (AMQP only)."""
    if transport == "inprocess":
        return InProcessBus(default_timeout=default_timeout, debug=debug)
    if transport == "amqp":
        if not url:
            raise ValueError("the amqp bus transport needs a broker url, e.g. amqp://user:password@host:5672/")
        from .amqp import AmqpBus  # imported lazily: the embedded cloud never loads aio-pika

        return AmqpBus(url, namespace=namespace, default_timeout=default_timeout, debug=debug)
    raise ValueError(f"unknown bus transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")


__all__ = [
    "Bus",
    "BusError",
    "BusTimeout",
    "NoServerError",
    "RemoteError",
    "Subscription",
    "create_bus",
]
