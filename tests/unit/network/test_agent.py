"""The agent loop on the in-process bus with a stand-in network service and the fake driver."""

from __future__ import annotations

import asyncio
import copy

from stratus.common.bus import create_bus
from stratus.network.agent import NetworkAgent
from stratus.network.common import AGENT_FANOUT, PLUGIN_TOPIC
from stratus.network.drivers.fake import FakeDriver

SETTINGS = {"host": "h1", "dhcp": True, "l3": False, "local_ip": "192.0.2.7", "bridge_mappings": {"public": "br-ex"},
            "resync_interval": 60.0, "tap_poll_interval": 0.05}
STATE = {"host": "h1", "networks": {"n1": {"id": "n1", "bridge": "brqn1"}}, "security_groups": {}, "dhcp": [],
         "routers": [], "tunnel_peers": [],
         "ports": [{"id": "p1", "network_id": "n1", "admin_state_up": True, "status": "DOWN", "tap": "tapp1"}]}


class Service:
    """What the network service answers on network.plugin."""

    def __init__(self):
        self.registered = []
        self.state = copy.deepcopy(STATE)
        self.statuses = []
        self.calls = 0

    async def register(self, **kw):
        self.registered.append(kw)
        return True

    async def get_host_state(self, host):
        self.calls += 1
        return copy.deepcopy(self.state)

    async def get_network(self, network_id, host):
        return self.state["networks"].get(network_id)

    async def ports_status(self, up, down):
        self.statuses.append((up, down))
        for p in self.state["ports"]:
            if p["id"] in up:
                p["status"] = "ACTIVE"
        return True


async def _until(pred, timeout=3.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_register_resync_on_nudge_and_report_ports():
    bus = create_bus("inprocess", "", default_timeout=5, debug=False, namespace="t")
    await bus.start()
    service = Service()
    await bus.serve(PLUGIN_TOPIC, service)
    driver = FakeDriver(SETTINGS)
    agent = NetworkAgent(bus, SETTINGS, driver)
    await agent.start()
    try:
        await _until(lambda: service.statuses)
        assert service.registered[0]["host"] == "h1" and service.registered[0]["tunnel_ip"] == "192.0.2.7"
        assert service.registered[0]["roles"] == ["dhcp"]
        assert service.statuses[0] == (["p1"], [])
        calls = service.calls
        # A change elsewhere: the service's fanout wakes the agent at once (resync_interval is 60 s).
        service.state["networks"]["n2"] = {"id": "n2", "bridge": "brqn2"}
        await bus.fanout(AGENT_FANOUT, "resync")
        await _until(lambda: "n2" in driver.networks)
        assert service.calls > calls
        # compute's binding path: ensure_network is a call that returns when the bridge exists.
        assert await bus.call("network.agent.h1", "ensure_network", network_id="n1") is True
        assert await bus.call("network.agent.h1", "ensure_network", network_id="nope") is False
    finally:
        await agent.stop()
        await bus.close()


class FlakyDriver(FakeDriver):
    """Fails to build part of the host until told otherwise."""

    def __init__(self, settings):
        super().__init__(settings)
        self.broken = True

    async def apply(self, state):
        wired = await super().apply(state)
        self.failures = ["DHCP of network n1: dnsmasq missing"] if self.broken else []
        return wired


async def test_partial_failure_still_reports_and_a_nudge_cuts_the_backoff():
    bus = create_bus("inprocess", "", default_timeout=5, debug=False, namespace="t2")
    await bus.start()
    service = Service()
    await bus.serve(PLUGIN_TOPIC, service)
    driver = FlakyDriver(SETTINGS)
    agent = NetworkAgent(bus, SETTINGS, driver)
    await agent.start()
    try:
        # The part that worked is reported even though the pass failed.
        await _until(lambda: service.statuses)
        applied = driver.applied
        driver.broken = False
        # Backing off after the failure (2 s), yet a nudge gets an immediate attempt.
        await bus.fanout(AGENT_FANOUT, "resync")
        await _until(lambda: driver.applied > applied, timeout=1.0)
    finally:
        await agent.stop()
        await bus.close()
