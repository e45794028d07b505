"""The embedded (in-process) message bus: call, cast, fanout and their failure modes."""

import asyncio
import logging

import pytest

from stratus.common.bus import BusError, BusTimeout, NoServerError, RemoteError, create_bus
from stratus.common.bus.base import HANDLER_CONCURRENCY


class Recorder:
    """An endpoint that records what reached it, so tests can see which server did the work."""

    def __init__(self, name: str = "server"):
        self.name = name
        self.seen: list[tuple[str, dict]] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.state = {"hosts": ["host1"]}
        self.running = 0
        self.most_running = 0

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

    async def kept_state(self):
        return self.state

    async def hang(self):
        self.arrived.set()
        await self.release.wait()  # released by the test's cleanup so close() never waits
        return "late"

    async def busy(self):
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        self.seen.append(("busy", {}))

    async def _private(self):
        return "secret"

    def not_async(self):
        return "sync"


async def wait_until(predicate, timeout=2.0):
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def bus():
    bus = create_bus(default_timeout=5.0)
    await bus.start()
    yield bus
    await bus.close()


async def test_call_returns_the_endpoint_result(bus):
    await bus.serve("compute", Recorder())
    result = await bus.call("compute", "echo", flavor="m1.tiny", count=2, tags=["a"])
    assert result == {"server": "server", "args": {"flavor": "m1.tiny", "count": 2, "tags": ["a"]}}


async def test_cast_runs_on_the_server_without_waiting(bus):
    server = Recorder()
    await bus.serve("compute", server)
    assert await bus.cast("compute", "note", value=7) is None
    async with asyncio.timeout(2):
        await server.arrived.wait()
    assert server.seen == [("note", {"value": 7})]


async def test_fanout_reaches_every_fanout_subscriber_only(bus):
    first, second, plain = Recorder("first"), Recorder("second"), Recorder("plain")
    await bus.serve("agents", first, fanout=True)
    await bus.serve("agents", second, fanout=True)
    await bus.serve("agents", plain)  # competing consumer only: must not get broadcasts
    await bus.fanout("agents", "note", value="refresh")
    await wait_until(lambda: first.seen and second.seen)
    await asyncio.sleep(0.05)  # give a wrong delivery to `plain` the chance to show up
    assert first.seen == second.seen == [("note", {"value": "refresh"})]
    assert plain.seen == []


async def test_fanout_without_subscribers_is_not_an_error(bus):
    await bus.fanout("nobody-listens", "note", value=1)


async def test_servers_on_one_topic_take_turns(bus):
    first, second = Recorder("first"), Recorder("second")
    await bus.serve("scheduler", first)
    await bus.serve("scheduler", second)
    answered_by = [(await bus.call("scheduler", "echo", n=i))["server"] for i in range(6)]
    assert answered_by.count("first") == 3 and answered_by.count("second") == 3
    assert answered_by[0] != answered_by[1]


@pytest.mark.parametrize("method", ["no_such_method", "_private", "not_async"])
async def test_unknown_or_private_method_is_a_remote_error(bus, method):
    await bus.serve("compute", Recorder())
    with pytest.raises(RemoteError) as info:
        await bus.call("compute", method, timeout=2)
    assert info.value.exc_type == "UnknownMethod"
    assert method in info.value.message


async def test_endpoint_exception_comes_back_with_type_and_message(bus):
    await bus.serve("compute", Recorder())
    with pytest.raises(RemoteError) as info:
        await bus.call("compute", "fail", why="no capacity")
    assert info.value.exc_type == "ValueError"
    assert info.value.message == "refused: no capacity"
    assert isinstance(info.value, BusError)


async def test_wrong_arguments_are_a_remote_type_error(bus):
    await bus.serve("compute", Recorder())
    with pytest.raises(RemoteError) as info:
        await bus.call("compute", "note", wrong=1)
    assert info.value.exc_type == "TypeError"


async def test_failing_cast_is_logged_and_server_keeps_serving(bus, caplog):
    server = Recorder()
    await bus.serve("compute", server)
    with caplog.at_level(logging.ERROR, logger="stratus.bus"):
        await bus.cast("compute", "fail_in_cast")
        async with asyncio.timeout(2):
            await server.arrived.wait()
        await wait_until(lambda: any("fail_in_cast" in r.getMessage() for r in caplog.records))
    assert await bus.call("compute", "echo", still="alive") == {"server": "server", "args": {"still": "alive"}}


async def test_call_that_never_returns_times_out_quickly(bus):
    server = Recorder()
    await bus.serve("compute", server)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BusTimeout):
            await bus.call("compute", "hang", timeout=0.2)
        assert loop.time() - started < 1.0
        # A slow handler occupies one slot, not the server.
        assert (await bus.call("compute", "echo", x=1))["args"] == {"x": 1}
    finally:
        server.release.set()


async def test_call_or_cast_without_server_fails_at_once(bus):
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NoServerError, match="no server is listening on bus topic 'missing'"):
        await bus.call("missing", "echo", timeout=5)
    with pytest.raises(NoServerError):
        await bus.cast("missing", "note", value=1)
    assert loop.time() - started < 0.5


async def test_stopped_subscription_gets_nothing_more(bus):
    first, second = Recorder("first"), Recorder("second")
    first_sub = await bus.serve("scheduler", first)
    await bus.serve("scheduler", second)
    await first_sub.stop()
    for i in range(4):
        assert (await bus.call("scheduler", "echo", n=i))["server"] == "second"
    assert first.seen == []


async def test_stop_waits_for_running_handlers(bus):
    server = Recorder()
    subscription = await bus.serve("compute", server)
    call = asyncio.create_task(bus.call("compute", "hang", timeout=5))
    async with asyncio.timeout(2):
        await server.arrived.wait()
    stopping = asyncio.create_task(subscription.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # still draining the running handler
    server.release.set()
    async with asyncio.timeout(2):
        await stopping
        assert await call == "late"
    with pytest.raises(NoServerError):
        await bus.call("compute", "echo")


async def test_payloads_are_copies_never_shared(bus):
    await bus.serve("compute", Recorder())
    sent = ["client-side"]
    returned = await bus.call("compute", "mutate", items=sent)
    assert sent == ["client-side"]  # the server changed its own copy only
    assert returned == ["client-side", "server-side"]


async def test_returned_values_are_copies_too(bus):
    await bus.serve("compute", Recorder())
    first = await bus.call("compute", "kept_state")
    first["hosts"].append("client-side")
    assert await bus.call("compute", "kept_state") == {"hosts": ["host1"]}


async def test_handler_concurrency_is_bounded_per_subscription(bus):
    server = Recorder()
    await bus.serve("compute", server)
    limit = HANDLER_CONCURRENCY
    try:
        for _ in range(limit + 6):
            await bus.cast("compute", "busy")
        await wait_until(lambda: server.running == limit)
        await asyncio.sleep(0.05)  # the surplus must stay queued, not start
        assert server.most_running == limit
    finally:
        server.release.set()
    await wait_until(lambda: len(server.seen) == limit + 6)


async def test_non_json_payload_is_rejected_at_the_caller(bus):
    await bus.serve("compute", Recorder())
    with pytest.raises(TypeError):
        await bus.call("compute", "echo", thing=object())


async def test_bus_must_be_started():
    bus = create_bus()
    with pytest.raises(BusError, match="not started"):
        await bus.call("compute", "echo")


async def test_debug_logs_traffic_without_payload(caplog):
    bus = create_bus(debug=True)
    await bus.start()
    try:
        await bus.serve("compute", Recorder())
        with caplog.at_level(logging.DEBUG, logger="stratus.bus"):
            await bus.call("compute", "echo", password="hunter2")
        lines = [r.getMessage() for r in caplog.records if r.name == "stratus.bus"]
        assert any("sent call topic=compute method=echo size=" in line for line in lines)
        assert any("received call topic=compute method=echo" in line for line in lines)
        assert not any("hunter2" in line for line in lines)
    finally:
        await bus.close()


def test_unknown_transport_is_refused():
    with pytest.raises(ValueError, match="unknown bus transport"):
        create_bus("carrier-pigeon")
    with pytest.raises(ValueError, match="needs a broker url"):
        create_bus("amqp")


async def test_request_id_travels_to_the_handler():
    from stratus.common.bus import create_bus
    from stratus.common.requestid import request_id_var

    seen = []

    class Endpoint:
        async def where(self):
            seen.append(request_id_var.get())
            return request_id_var.get()

    bus = create_bus()
    await bus.start()
    try:
        await bus.serve("rid", Endpoint())
        request_id_var.set("req-abc")
        assert await bus.call("rid", "where", timeout=2) == "req-abc"
        assert seen == ["req-abc"]
    finally:
        await bus.close()
