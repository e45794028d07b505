"""The fleet bus: aio-pika on RabbitMQ.

Broker topology, every name prefixed with the namespace (default "stratus") so that several
clouds, or several test runs, can share one broker without seeing each other:

* ``<ns>.<topic>``: one queue per topic, shared by all its servers (competing consumers; the
  broker deals messages out in turn). Calls and casts go there through the default exchange
  with ``mandatory=True``, so a topic without a queue is reported by the broker at once
  (``NoServerError``). Non-durable: bus traffic is transient control traffic. The last server
  to stop deletes the queue, so callers learn at once that nobody serves the topic. A queue
  left without consumers by accident (a server's connection blipped, a process died) is kept
  for ``ABANDONED_QUEUE_TTL`` seconds instead of being auto-deleted: requests wait there for a
  reconnecting server (each request expires with its caller's timeout), and only a server
  gone for longer turns into ``NoServerError``.
* ``<ns>.fanout``: one direct exchange; each ``fanout=True`` server binds its own exclusive
  queue ``<ns>.fanout.<topic>.<id>`` with routing key ``<topic>``, so each gets a copy. One
  exchange per namespace rather than one per topic: a publisher never has to declare anything
  per topic and no per-topic exchange can be auto-deleted under a publisher's feet.
* ``<ns>.reply.<id>``: one exclusive reply queue per Bus; replies carry the call's correlation id.

Connection loss is survived by ``connect_robust``: it reconnects by itself and re-declares the
queues, bindings and consumers above (same names, so replies and servers resume); this module
logs the loss and the recovery on "stratus.bus". Calls in flight during an outage end in
``BusTimeout``; calls made during an outage wait (within their timeout) for the reconnection.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import aio_pika
import yarl
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, PublishError

from .base import (
    CALL,
    CAST,
    FANOUT,
    HANDLER_CONCURRENCY,
    Bus,
    BusError,
    BusTimeout,
    HandlerPool,
    NoServerError,
    Subscription,
    check_names,
    decode_request,
    encode_request,
    handle_request,
    log,
    result_from_reply,
)

# aio-pika's default is 5 s; a control plane should be back sooner after a broker blip.
# A ``reconnect_interval`` in the URL query still wins.
DEFAULT_RECONNECT_INTERVAL = 1.0

# How long the broker keeps a topic queue nobody consumes from (see the module doc). Must be
# the same in every process: RabbitMQ refuses to re-declare a queue with other arguments.
ABANDONED_QUEUE_TTL = 30.0

# What a dead or dying broker connection raises. aiormq's ChannelInvalidStateError ("channel
# closed") is a RuntimeError, not an AMQPError, hence the tuple.
BROKER_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError)

# Pause between publish attempts while the channel is known closed but not yet marked as
# recovering, so that waiting for a reconnection never spins.
REPUBLISH_PAUSE = 0.1


def _safe_url(url: str) -> str:
    parsed = yarl.URL(url)
    return str(parsed.with_password("******")) if parsed.password else str(parsed)


class AmqpSubscription(Subscription):
    def __init__(self, bus: "AmqpBus", topic: str, endpoint: object, channel: AbstractRobustChannel):
        self._bus = bus
        self.topic = topic
        self.endpoint = endpoint
        self._channel = channel
        self._consumers: list[tuple[aio_pika.abc.AbstractQueue, str]] = []
        self.topic_queue: aio_pika.abc.AbstractQueue | None = None
        self._pool = HandlerPool()
        self._stopped = False

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika runs this in its own task per delivery, so handlers are already concurrent;
        # the pool bounds how many run at once (together with the channel's prefetch).
        kind = message.type or CAST
        if self._bus.debug:  # decoding just for the log line is not free: only when asked
            self._bus._trace("received", kind, self.topic, _method_name(message.body), len(message.body))

        async def accept() -> None:
            # Acknowledge before running: at-most-once (see base). Messages still waiting for a
            # slot stay unacknowledged, so the broker can re-deliver them if we go away.
            await message.ack()

        async def decline() -> None:
            await message.reject(requeue=True)  # we are stopping: let another server have it

        async def work() -> None:
            answer = await handle_request(self.endpoint, self.topic, kind, message.body)
            if kind == CALL and message.reply_to:
                await self._bus._send_reply(message.reply_to, message.correlation_id, answer)

        try:
            await self._pool.run(work, accept=accept, decline=decline)
        except BROKER_ERRORS as exc:
            # The channel died under us. Not yet acknowledged: the broker re-delivers it.
            # Already running: its reply (if any) is lost and the caller times out.
            log.warning("bus message on topic %s interrupted by connection loss: %s", self.topic, exc)

    async def consume(self, queue: aio_pika.abc.AbstractQueue) -> None:
        tag = await queue.consume(self.on_message)
        self._consumers.append((queue, tag))

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._bus._subscriptions.discard(self)
        # Each broker step may fail when the connection is down (the broker then has dropped
        # our consumers already); none of that may keep the subscription from stopping.
        try:
            try:
                for queue, tag in self._consumers:
                    await queue.cancel(tag)  # no new deliveries (exclusive fanout queues then vanish)
            except BROKER_ERRORS as exc:
                log.debug("cancelling consumers of %s: %s", self.topic, exc)
            # Handlers finish (and messages still waiting for a slot go back to the queue, for
            # another server) before the channel closes.
            await self._pool.drain()
            if self.topic_queue is not None:
                try:
                    await self._delete_topic_queue_if_last()
                except BROKER_ERRORS as exc:
                    log.debug("deleting queue of %s: %s", self.topic, exc)
        finally:
            try:
                await self._channel.close()  # also tells the robust connection not to restore it
            except BROKER_ERRORS as exc:
                log.debug("closing channel of %s: %s", self.topic, exc)

    async def _delete_topic_queue_if_last(self) -> None:
        # A deliberate stop of the last server means "nobody serves this topic": delete the
        # queue so callers get NoServerError now, not BusTimeout for ABANDONED_QUEUE_TTL.
        # if_unused makes the broker refuse (and close this channel, which is closing anyway)
        # if another server subscribed in the meantime.
        declared = await self.topic_queue.declare()
        if declared.consumer_count == 0:
            await self.topic_queue.delete(if_unused=True, if_empty=False)


def _method_name(body: bytes) -> str:
    try:
        return decode_request(body)[0]
    except Exception:
        return "?"


class AmqpBus(Bus):
    def __init__(
        self,
        url: str,
        *,
        namespace: str = "stratus",
        default_timeout: float = 60.0,
        debug: bool = False,
    ):
        super().__init__(default_timeout=default_timeout, debug=debug)
        check_names(namespace)
        self.url = url
        self.namespace = namespace
        # Unique per Bus, visible in `rabbitmqctl list_connections name client_properties`, so an
        # operator (or a test) can tell which process owns which connection.
        self.connection_name = f"stratus-bus:{namespace}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._fanout_exchange: aio_pika.abc.AbstractExchange | None = None
        self._reply_queue_name = f"{namespace}.reply.{uuid.uuid4().hex}"
        self._pending: dict[str, asyncio.Future] = {}
        self._subscriptions: set[AmqpSubscription] = set()
        self._closing = False

    async def start(self) -> None:
        if self._connection is not None:
            return
        self._closing = False
        extra: dict[str, Any] = {}
        if "reconnect_interval" not in yarl.URL(self.url).query:
            extra["reconnect_interval"] = DEFAULT_RECONNECT_INTERVAL
        try:
            connection = await aio_pika.connect_robust(
                self.url, client_properties={"connection_name": self.connection_name}, **extra
            )
        except Exception as exc:
            raise BusError(f"cannot connect to message broker {_safe_url(self.url)}: {exc}") from exc
        self._connection = connection
        connection.close_callbacks.add(self._on_connection_lost)
        connection.reconnect_callbacks.add(self._on_reconnected)
        try:
            await self._open_channels(connection)
        except BaseException as exc:
            # A robust connection left open would reconnect forever in the background.
            await self.close()
            if isinstance(exc, Exception):
                raise BusError(f"cannot set up the bus on {_safe_url(self.url)}: {exc}") from exc
            raise
        log.info("bus connected to %s as %s", _safe_url(self.url), self.connection_name)

    async def _open_channels(self, connection: AbstractRobustConnection) -> None:
        # Confirms + on_return_raises: publish() returns only once the broker has routed the
        # message, and raises PublishError when mandatory routing found no queue.
        self._publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
        self._fanout_exchange = await self._publisher.declare_exchange(
            f"{self.namespace}.fanout", aio_pika.ExchangeType.DIRECT, durable=False
        )
        replies = await connection.channel(publisher_confirms=False)
        reply_queue = await replies.declare_queue(self._reply_queue_name, exclusive=True, auto_delete=True)
        await reply_queue.consume(self._on_reply, no_ack=True)

    async def close(self) -> None:
        if self._connection is None:
            return
        self._closing = True
        try:
            outcomes = await asyncio.gather(*(s.stop() for s in list(self._subscriptions)), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    log.warning("error while stopping a bus subscription: %s", outcome)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BusError("bus closed while waiting for a reply"))
            # Always reached: aio-pika keeps reconnecting until the connection is closed.
            connection, self._connection = self._connection, None
            await connection.close()

    def _on_connection_lost(self, _connection: Any, exc: BaseException | None = None) -> None:
        if not self._closing:
            log.warning("lost connection %s to message broker (%s); reconnecting", self.connection_name, exc)

    def _on_reconnected(self, _connection: Any) -> None:
        if self._closing:
            return
        log.warning(
            "reconnected %s to message broker; %d subscription(s) re-subscribed",
            self.connection_name,
            len(self._subscriptions),
        )

    def _check_started(self) -> None:
        if self._connection is None:
            raise BusError("bus is not started (call await bus.start())")

    def _queue_name(self, topic: str) -> str:
        return f"{self.namespace}.{topic}"

    async def _publish(
        self, exchange: aio_pika.abc.AbstractExchange, routing_key: str, message: aio_pika.Message, *, mandatory: bool
    ) -> None:
        # During an outage wait for the robust channel to come back; callers bound the wait.
        while True:
            await self._publisher.ready()
            try:
                await exchange.publish(message, routing_key, mandatory=mandatory)
                return
            except ChannelInvalidStateError:
                # Refused before anything was sent (channel already closed), so retrying cannot
                # duplicate the message: wait for the reconnection instead of failing.
                await asyncio.sleep(REPUBLISH_PAUSE)
            except PublishError:
                raise NoServerError(f"no server is listening on bus topic {routing_key!r}") from None
            except BROKER_ERRORS as exc:
                # May or may not have reached the broker: never re-send (at most once).
                raise BusError(f"could not publish to {routing_key!r}: {exc}") from exc

    async def call(self, topic: str, method: str, *, timeout: float | None = None, **kwargs) -> Any:
        check_names(topic, method)
        self._check_started()
        timeout = self._timeout(timeout)
        body = encode_request(method, kwargs)
        correlation_id = uuid.uuid4().hex
        reply = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = reply
        message = aio_pika.Message(
            body,
            type=CALL,
            correlation_id=correlation_id,
            reply_to=self._reply_queue_name,
            # A request nobody picked up before the caller gave up must not run later.
            expiration=timeout,
        )
        try:
            async with asyncio.timeout(timeout):
                try:
                    await self._publish(self._publisher.default_exchange, self._queue_name(topic), message, mandatory=True)
                except NoServerError:
                    raise NoServerError(f"no server is listening on bus topic {topic!r} (method {method!r})") from None
                self._trace("sent", CALL, topic, method, len(body))
                answer = await reply
        except TimeoutError:
            raise BusTimeout(f"no reply to {method!r} from bus topic {topic!r} within {timeout}s") from None
        finally:
            self._pending.pop(correlation_id, None)
        self._trace("received reply", CALL, topic, method, len(answer))
        return result_from_reply(answer)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            log.debug("dropping late or unknown bus reply %s", message.correlation_id)
            return
        future.set_result(message.body)

    async def _send_reply(self, reply_to: str, correlation_id: str | None, answer: bytes) -> None:
        # Not mandatory: if the caller is gone its reply queue is gone, and nobody needs to know.
        message = aio_pika.Message(answer, correlation_id=correlation_id)
        try:
            # Bounded like any publish: a reply nobody can receive must not pin a handler slot.
            async with asyncio.timeout(self.default_timeout):
                await self._publish(self._publisher.default_exchange, reply_to, message, mandatory=False)
        except TimeoutError:
            log.warning("gave up sending a bus reply to %s after %ss", reply_to, self.default_timeout)

    async def _send_one_way(self, kind: str, topic: str, method: str, kwargs: dict) -> None:
        check_names(topic, method)
        self._check_started()
        body = encode_request(method, kwargs)
        if kind == CAST:
            exchange, routing_key, mandatory = self._publisher.default_exchange, self._queue_name(topic), True
        else:
            exchange, routing_key, mandatory = self._fanout_exchange, topic, False
        try:
            # Nobody waits for a reply, but the publish itself must still never hang.
            async with asyncio.timeout(self.default_timeout):
                await self._publish(exchange, routing_key, aio_pika.Message(body, type=kind), mandatory=mandatory)
        except NoServerError:
            raise NoServerError(f"no server is listening on bus topic {topic!r} (method {method!r})") from None
        except TimeoutError:
            raise BusTimeout(f"could not publish {method!r} to bus topic {topic!r} within {self.default_timeout}s") from None
        self._trace("sent", kind, topic, method, len(body))

    async def cast(self, topic: str, method: str, **kwargs) -> None:
        await self._send_one_way(CAST, topic, method, kwargs)

    async def fanout(self, topic: str, method: str, **kwargs) -> None:
        await self._send_one_way(FANOUT, topic, method, kwargs)

    async def serve(self, topic: str, endpoint: object, *, fanout: bool = False) -> Subscription:
        check_names(topic)
        self._check_started()
        # A channel per subscription: its prefetch bounds this subscription alone, and stopping
        # it cannot disturb the others.
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=HANDLER_CONCURRENCY)
        subscription = AmqpSubscription(self, topic, endpoint, channel)
        try:
            queue = await channel.declare_queue(
                self._queue_name(topic), durable=False, arguments={"x-expires": int(ABANDONED_QUEUE_TTL * 1000)}
            )
            subscription.topic_queue = queue
            await subscription.consume(queue)
            if fanout:
                exchange = await channel.declare_exchange(
                    f"{self.namespace}.fanout", aio_pika.ExchangeType.DIRECT, durable=False
                )
                own = await channel.declare_queue(
                    f"{self.namespace}.fanout.{topic}.{uuid.uuid4().hex}", exclusive=True, auto_delete=True
                )
                await own.bind(exchange, routing_key=topic)
                await subscription.consume(own)
        except BaseException as exc:
            await subscription.stop()
            if isinstance(exc, BROKER_ERRORS):
                raise BusError(f"cannot serve bus topic {topic!r}: {exc}") from exc
            raise
        self._subscriptions.add(subscription)
        return subscription
