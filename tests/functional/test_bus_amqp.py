"""The AMQP message bus against the real RabbitMQ broker.

Every test uses its own namespace (prefix of all broker names), so tests and other users of the
broker never see each other's traffic, and two Bus instances (client and server), as two
processes would have.
"""

import asyncio
import logging
import os
import socket
import sys
import uuid
from pathlib import Path

import aio_pika
import pytest
import yarl

from stratus.common.bus import BusError, BusTimeout, NoServerError, RemoteError, create_bus

pytestmark = [pytest.mark.backend, pytest.mark.timeout(90)]

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = os.environ.get("STRATUS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class Recorder:
    """An endpoint that records what reached it, so tests can see which server did the work."""

    def __init__(self, name: str = "server"):
        self.name = name
        self.seen: list[tuple[str, dict]] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def echo(self, **kwargs):
        self.seen.append(("echo", kwargs))
        return {"server": self.name, "args": kwargs}

    async def note(self, value):
        self.seen.append(("note", {"value": value}))
        self.arrived.set()

    async def fail(self, why):
        raise ValueError(f"refused: {why}")

    async def fail_in_cast(self):
        self.arrived.set()
        raise RuntimeError("cast handler broke")

    async def mutate(self, items):
        items.append("server-side")
        return items

    async def hang(self):
        self.arrived.set()
        await self.release.wait()  # released by the test so that close() never waits on it
        return "late"


async def wait_until(predicate, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def _broker_reachable() -> bool:
    url = yarl.URL(BROKER_URL)
    try:
        socket.create_connection((url.host, url.port or 5672), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
async def make_bus():
    """Factory of started buses sharing one fresh namespace; removes everything afterwards."""
    if not _broker_reachable():
        pytest.skip(f"RabbitMQ broker not reachable at {yarl.URL(BROKER_URL).with_password('***')}")
    namespace = f"test-bus-{uuid.uuid4().hex[:12]}"
    buses = []

    async def make(**options):
        bus = create_bus("amqp", BROKER_URL, namespace=namespace, default_timeout=10.0, **options)
        await bus.start()
        buses.append(bus)
        return bus

    close_errors = []
    try:
        yield make
    finally:
        for bus in buses:
            try:
                await bus.close()
            except Exception as exc:  # reported below, after the broker is cleaned up
                close_errors.append(exc)
        # Closing the buses removed their queues; the namespace's fanout exchange is never
        # auto-deleted (see the transport's module doc), so drop it here.
        connection = await aio_pika.connect(BROKER_URL)
        try:
            channel = await connection.channel()
            await channel.exchange_delete(f"{namespace}.fanout")
        finally:
            await connection.close()
    assert not close_errors, f"Bus.close() raised: {close_errors!r}"


@pytest.fixture
async def client_and_server(make_bus):
    return await make_bus(), await make_bus()


async def test_call_round_trip(client_and_server):
    client, server = client_and_server
    await server.serve("compute", Recorder())
    result = await client.call("compute", "echo", flavor="m1.tiny", count=2, tags=["a"], ok=True, none=None)
    assert result == {"server": "server", "args": {"flavor": "m1.tiny", "count": 2, "tags": ["a"], "ok": True, "none": None}}


async def test_cast_round_trip(client_and_server):
    client, server = client_and_server
    endpoint = Recorder()
    await server.serve("compute", endpoint)
    assert await client.cast("compute", "note", value=7) is None
    async with asyncio.timeout(5):
        await endpoint.arrived.wait()
    assert endpoint.seen == [("note", {"value": 7})]


async def test_fanout_reaches_every_fanout_subscriber_only(make_bus):
    client, first_bus, second_bus = await make_bus(), await make_bus(), await make_bus()
    first, second, plain = Recorder("first"), Recorder("second"), Recorder("plain")
    await first_bus.serve("agents", first, fanout=True)
    await second_bus.serve("agents", second, fanout=True)
    await second_bus.serve("agents", plain)  # competing consumer only: must not get broadcasts
    await client.fanout("agents", "note", value="refresh")
    await wait_until(lambda: first.seen and second.seen)
    await asyncio.sleep(0.2)  # give a duplicate or a wrong delivery the chance to show up
    assert first.seen == second.seen == [("note", {"value": "refresh"})]
    assert plain.seen == []
    # A fanout subscriber is also a normal server of its topic.
    assert (await client.call("agents", "echo"))["server"] in {"first", "second", "plain"}


async def test_fanout_without_subscribers_is_not_an_error(client_and_server):
    client, _ = client_and_server
    await client.fanout("nobody-listens", "note", value=1)


async def test_servers_on_one_topic_share_the_work(make_bus):
    client, first_bus, second_bus = await make_bus(), await make_bus(), await make_bus()
    await first_bus.serve("scheduler", Recorder("first"))
    await second_bus.serve("scheduler", Recorder("second"))
    answered_by = [(await client.call("scheduler", "echo", n=i))["server"] for i in range(8)]
    # The broker deals competing consumers messages in turn.
    assert answered_by.count("first") == 4 and answered_by.count("second") == 4


async def test_unknown_method_is_a_remote_error(client_and_server):
    client, server = client_and_server
    await server.serve("compute", Recorder())
    with pytest.raises(RemoteError) as info:
        await client.call("compute", "no_such_method", timeout=5)
    assert info.value.exc_type == "UnknownMethod"
    assert "no_such_method" in info.value.message


async def test_endpoint_exception_comes_back_with_type_and_message(client_and_server):
    client, server = client_and_server
    await server.serve("compute", Recorder())
    with pytest.raises(RemoteError) as info:
        await client.call("compute", "fail", why="no capacity")
    assert (info.value.exc_type, info.value.message) == ("ValueError", "refused: no capacity")


async def test_failing_cast_is_logged_and_server_keeps_serving(client_and_server, caplog):
    client, server = client_and_server
    endpoint = Recorder()
    await server.serve("compute", endpoint)
    with caplog.at_level(logging.ERROR, logger="stratus.bus"):
        await client.cast("compute", "fail_in_cast")
        async with asyncio.timeout(5):
            await endpoint.arrived.wait()
        await wait_until(lambda: any("fail_in_cast" in r.getMessage() for r in caplog.records))
    assert (await client.call("compute", "echo", still="alive"))["args"] == {"still": "alive"}


async def test_call_that_never_returns_times_out_quickly(client_and_server):
    client, server = client_and_server
    endpoint = Recorder()
    await server.serve("compute", endpoint)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BusTimeout):
            await client.call("compute", "hang", timeout=0.2)
        assert loop.time() - started < 1.5
        # The slow handler holds one slot, not the server.
        assert (await client.call("compute", "echo", x=1))["args"] == {"x": 1}
    finally:
        endpoint.release.set()


async def test_call_or_cast_without_server_fails_at_once(client_and_server):
    client, _ = client_and_server
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NoServerError, match="no server is listening on bus topic 'missing'"):
        await client.call("missing", "echo", timeout=5)
    with pytest.raises(NoServerError):
        await client.cast("missing", "note", value=1)
    assert loop.time() - started < 2.0


async def test_stopped_subscription_gets_nothing_more(make_bus):
    client, first_bus, second_bus = await make_bus(), await make_bus(), await make_bus()
    first, second = Recorder("first"), Recorder("second")
    first_sub = await first_bus.serve("scheduler", first)
    await second_bus.serve("scheduler", second)
    await first_sub.stop()
    for i in range(4):
        assert (await client.call("scheduler", "echo", n=i))["server"] == "second"
    assert first.seen == []
    await first_sub.stop()  # stopping twice is harmless


async def test_last_server_stopping_means_no_server(client_and_server):
    client, server = client_and_server
    subscription = await server.serve("compute", Recorder())
    assert (await client.call("compute", "echo"))["server"] == "server"
    await subscription.stop()
    with pytest.raises(NoServerError):
        await client.call("compute", "echo", timeout=5)


async def test_payloads_are_copies_never_shared(client_and_server):
    client, server = client_and_server
    await server.serve("compute", Recorder())
    sent = ["client-side"]
    assert await client.call("compute", "mutate", items=sent) == ["client-side", "server-side"]
    assert sent == ["client-side"]


async def test_debug_logs_traffic_without_payload(make_bus, caplog):
    client, server = await make_bus(debug=True), await make_bus(debug=True)
    await server.serve("compute", Recorder())
    with caplog.at_level(logging.DEBUG, logger="stratus.bus"):
        await client.call("compute", "echo", password="hunter2")
    lines = [r.getMessage() for r in caplog.records if r.name == "stratus.bus"]
    assert any("sent call topic=compute method=echo size=" in line for line in lines)
    assert any("received call topic=compute method=echo" in line for line in lines)
    assert not any("hunter2" in line for line in lines)


async def test_unreachable_broker_is_a_clear_error():
    with socket.socket() as probe:  # a port nobody listens on: bind, note it, release it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bus = create_bus("amqp", f"amqp://guest:secret@127.0.0.1:{port}/")
    with pytest.raises(BusError, match="cannot connect to message broker") as info:
        await asyncio.wait_for(bus.start(), 10)
    assert "secret" not in str(info.value)


# -- connection loss ---------------------------------------------------------------------------


async def _rabbitmqctl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"rabbitmqctl {' '.join(args)} failed: {err.decode()}"
    return out.decode()


async def _close_connections_named(*connection_names: str) -> None:
    """Close only our own connections, found by the connection_name client property.

    Other users share this broker, so closing everything is not an option.
    """
    # close_connection takes the connection's Erlang pid (this broker version refuses its name).
    listing = await _rabbitmqctl("list_connections", "--quiet", "--no-table-headers", "pid", "client_properties")
    found = {}
    for line in listing.splitlines():
        for wanted in connection_names:
            if f'"{wanted}"' in line:
                found[wanted] = line.split("\t", 1)[0]
    assert set(found) == set(connection_names), f"connections not listed by the broker: {listing}"
    for pid in found.values():
        await _rabbitmqctl("close_connection", pid, "test: stratus bus reconnection")


async def test_lost_connection_is_noticed_and_recovered(client_and_server, caplog):
    client, server = client_and_server
    await server.serve("compute", Recorder())
    assert (await client.call("compute", "echo", before=True))["args"] == {"before": True}

    with caplog.at_level(logging.INFO, logger="stratus.bus"):
        await _close_connections_named(client.connection_name, server.connection_name)

        def logged(fragment: str, name: str) -> bool:
            return any(
                r.name == "stratus.bus" and fragment in r.getMessage() and name in r.getMessage()
                for r in caplog.records
            )

        for bus in (client, server):
            await wait_until(lambda name=bus.connection_name: logged("lost connection", name), timeout=10)
        # Made while both are still reconnecting: the request waits for the client's channel and
        # then in the surviving topic queue until the server has re-subscribed.
        during = await client.call("compute", "echo", during=True, timeout=15)
        for bus in (client, server):
            await wait_until(lambda name=bus.connection_name: logged("reconnected", name), timeout=20)

    assert during["args"] == {"during": True}
    # The server re-subscribed and the client's reply queue is back: calls work as before.
    assert (await client.call("compute", "echo", after=True, timeout=5))["args"] == {"after": True}


# A server in its own process, killed without any chance to clean up (as a crash would).
SERVER_PROCESS = """
import asyncio, sys
from stratus.common.bus import create_bus

class Endpoint:
    async def echo(self, **kwargs):
        return {"server": "process", "args": kwargs}

async def main():
    bus = create_bus("amqp", sys.argv[1], namespace=sys.argv[2])
    await bus.start()
    await bus.serve("compute", Endpoint())
    print("serving", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_requests_wait_for_a_server_that_died_and_comes_back(make_bus):
    """A topic queue whose server vanished without stopping is kept for a replacement."""
    client = await make_bus()
    namespace = client.namespace
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER_PROCESS, BROKER_URL, namespace, stdout=asyncio.subprocess.PIPE, cwd=REPO_ROOT
    )
    try:
        async with asyncio.timeout(20):
            assert (await process.stdout.readline()).strip() == b"serving"
        assert (await client.call("compute", "echo", n=1, timeout=5))["server"] == "process"
    finally:
        process.kill()
        await process.wait()

    # Published while nobody serves the topic: not NoServerError, it waits in the queue...
    pending = asyncio.create_task(client.call("compute", "echo", n=2, timeout=15))
    await asyncio.sleep(0.5)
    assert not pending.done()
    # ...for the replacement server, which answers it.
    replacement = await make_bus()
    await replacement.serve("compute", Recorder("replacement"))
    async with asyncio.timeout(10):
        assert (await pending) == {"server": "replacement", "args": {"n": 2}}
