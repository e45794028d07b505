"""A driver that only remembers the desired state: tests of the API and of the agent loop."""

from __future__ import annotations

from stratus.network.drivers.base import DataPathDriver


class FakeDriver(DataPathDriver):
    name = "fake"

    def __init__(self, settings: dict):
        self.settings = settings
        self.networks: dict[str, dict] = {}
        self.state: dict | None = None
        self.applied = 0

    async def ensure_network(self, network: dict) -> None:
        self.networks[network["id"]] = network

    async def apply(self, state: dict) -> set[str]:
        self.state = state
        self.applied += 1
        self.networks = dict(state["networks"])
        # Every bound port counts as plugged: there is no device to wait for.
        return {p["id"] for p in state["ports"] if p["admin_state_up"]}

    async def teardown(self) -> None:
        self.networks.clear()
        self.state = None
