"""The data-path driver contract: make this host's networking match the desired state.

The agent hands a driver the complete desired state of its host (see NetworkManager.host_state)
and the driver converges: creates what is missing, changes what differs and removes what it
created earlier that is no longer wanted. Drivers are idempotent, touch only objects they
created (recognizable names: brq*, vxlan-*, tap*/ns-*/qr-*/qg-* veths, qdhcp-*/qrouter-*
namespaces, the agent's own nftables tables) and never talk to the database or the bus.
"""

from __future__ import annotations

import abc


class DataPathDriver(abc.ABC):
    name = "abstract"
    # What the last apply could not do (the rest was done); the agent reports and retries.
    failures: list[str] = []

    @abc.abstractmethod
    async def ensure_network(self, network: dict) -> None:
        """Create the network's bridge and uplink now (a VM is about to plug into it)."""

    @abc.abstractmethod
    async def apply(self, state: dict) -> set[str]:
        """Converge on ``state``; return the ids of VM ports whose device is wired up."""

    async def taps_changed(self, state: dict) -> bool:
        """Cheap check, polled often: did a VM port's device appear or vanish since the last apply?"""
        return False

    @abc.abstractmethod
    async def teardown(self) -> None:
        """Remove everything this driver created (agent shutdown with cleanup, tests)."""

    async def close(self) -> None:
        """Stop background work without tearing the data path down (VMs keep their network)."""
