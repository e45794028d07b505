"""The per-host network agent: registers with the network service and keeps the data path converged.

It resyncs (fetches the whole desired state of its host and hands it to the driver) when the
service nudges it over the bus, when a VM's tap appears or vanishes, and every
``resync_interval`` seconds regardless, so a lost message only delays, never breaks.
"""

from __future__ import annotations

import asyncio
import logging
import time

from stratus.network.common import AGENT_FANOUT, PLUGIN_TOPIC, agent_topic

log = logging.getLogger("stratus.network.agent")


class AgentEndpoint:
    """What the network service may ask this agent (its own topic and the fanout)."""

    def __init__(self, agent: "NetworkAgent"):
        self.agent = agent

    async def ensure_network(self, network_id: str) -> bool:
        net = await self.agent.bus.call(PLUGIN_TOPIC, "get_network", network_id=network_id, host=self.agent.host)
        if net is None:
            return False
        await self.agent.driver.ensure_network(net)
        self.agent.request_resync()
        return True

    async def resync(self) -> None:
        self.agent.request_resync()


class NetworkAgent:
    COALESCE_SECONDS = 0.02

    def __init__(self, bus, settings: dict, driver):
        self.bus = bus
        self.settings = settings
        self.driver = driver
        self.host = settings["host"]
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._subs = []
        self._reported: dict[str, str] = {}
        self.last_state: dict | None = None
        self.synced = asyncio.Event()
        # (time a resync was requested, time it finished applying): rule-change latency figures.
        self.last_apply_seconds = 0.0
        self._last_end = 0.0
        self.applies = 0

    def roles(self) -> list[str]:
        return [r for r in ("dhcp", "l3") if self.settings[r]]

    async def start(self) -> None:
        self._subs.append(await self.bus.serve(agent_topic(self.host), AgentEndpoint(self)))
        self._subs.append(await self.bus.serve(AGENT_FANOUT, AgentEndpoint(self), fanout=True))
        self._task = asyncio.create_task(self._run(), name=f"network-agent-{self.host}")

    def request_resync(self) -> None:
        self._wake.set()

    async def _register(self) -> None:
        from stratus.network.settings import default_local_ip

        await self.bus.call(PLUGIN_TOPIC, "register", host=self.host, driver=self.driver.name,
                            tunnel_ip=self.settings["local_ip"] or default_local_ip(), roles=self.roles(),
                            bridge_mappings=dict(self.settings["bridge_mappings"]), timeout=30)

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._register()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("network service not reachable yet (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
        last_full = 0.0
        failures = 0
        poll = self.settings["tap_poll_interval"]
        while True:
            try:
                due = time.monotonic() - last_full >= self.settings["resync_interval"]
                if self._wake.is_set() or due or (self.last_state is not None and
                                                  await self.driver.taps_changed(self.last_state)):
                    # Let a burst of changes (a bulk create, a script) settle into one resync, and
                    # under a steady stream of changes leave at least as much idle time as a resync
                    # takes, so the agent never takes more than half of the process.
                    idle = time.monotonic() - self._last_end
                    busy_gap = max(0.0, min(self.last_apply_seconds, 0.5) - idle)
                    await asyncio.sleep(max(self.COALESCE_SECONDS, busy_gap))
                    self._wake.clear()
                    await self.resync()
                    last_full = time.monotonic()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                # The full story once, then one line per failure, retrying less and less often.
                if failures == 1:
                    log.exception("network agent resync failed; retrying")
                else:
                    log.warning("network agent resync failed again (%d): %s", failures, exc)
                # A nudge (a user's change) still gets an immediate attempt.
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=min(2 ** failures, 30))
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=poll)
            except asyncio.TimeoutError:
                pass

    async def resync(self) -> None:
        started = time.monotonic()
        state = await self.bus.call(PLUGIN_TOPIC, "get_host_state", host=self.host, timeout=30)
        wired = await self.driver.apply(state)
        self.last_state = state
        self.last_apply_seconds = time.monotonic() - started
        self._last_end = time.monotonic()
        self.applies += 1
        up = [p["id"] for p in state["ports"] if p["id"] in wired and p["status"] != "ACTIVE"]
        down = [p["id"] for p in state["ports"] if p["id"] not in wired and p["status"] == "ACTIVE"]
        if up or down:
            await self.bus.call(PLUGIN_TOPIC, "ports_status", up=up, down=down, timeout=30)
        self.synced.set()
        if self.driver.failures:
            raise RuntimeError("the data path is partly not built: " + "; ".join(self.driver.failures))

    async def stop(self, *, teardown: bool = False) -> None:
        for sub in self._subs:
            await sub.stop()
        self._subs.clear()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if teardown:
            await self.driver.teardown()
        await self.driver.close()
