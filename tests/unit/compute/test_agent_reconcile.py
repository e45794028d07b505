"""The agent's power-state reconciliation against the fake driver and a real (SQLite) database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from stratus.common.db import Database
from stratus.compute import models as m
from stratus.compute import settings
from stratus.compute.agent import ComputeAgent, build_spec
from stratus.compute.drivers.base import PowerState
from stratus.compute.drivers.fake import FakeDriver


def test_reconcile(tmp_path: Path):
    async def run():
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/c.sqlite")
        async with db.engine.begin() as conn:
            await conn.run_sync(m.Base.metadata.create_all)
        state = SimpleNamespace(db=db, settings=settings.load({"driver": "fake"}), bus=None)
        driver = FakeDriver(latency=0, fetch_images=False)
        await driver.init_host("h1")
        agent = ComputeAgent(state, "h1", driver, images=None, network=None)
        flavor = {"id": "1", "name": "m1.tiny", "vcpus": 1, "ram": 512, "disk": 1}
        rows = {
            "died": ("active", int(PowerState.RUNNING)),
            "woke": ("stopped", int(PowerState.SHUTDOWN)),
            "gone": ("active", int(PowerState.RUNNING)),
            "fine": ("active", int(PowerState.RUNNING)),
        }
        async with db.session() as s:
            for iid, (vm, power) in rows.items():
                s.add(m.Instance(id=iid, name=iid, project_id="p", user_id="u", flavor=flavor, vcpus=1,
                                 memory_mb=512, root_gb=1, vm_state=vm, power_state=power, host="h1"))
        async with db.reader() as s:
            insts = {i: await s.get(m.Instance, i) for i in rows}
        for iid in ("died", "woke", "fine"):
            await driver.spawn(build_spec(insts[iid]), None)
        await driver.power_off("died")  # the guest shut itself down
        # "woke" runs on the hypervisor although the API says it is stopped
        await agent.reconcile()
        async with db.reader() as s:
            after = {i: await s.get(m.Instance, i) for i in rows}
        await db.dispose()
        return after, driver

    after, driver = asyncio.run(run())
    assert after["died"].vm_state == "stopped" and after["died"].power_state == int(PowerState.SHUTDOWN)
    assert after["gone"].power_state == int(PowerState.NOSTATE)
    assert after["fine"].vm_state == "active" and after["fine"].power_state == int(PowerState.RUNNING)
    assert driver.guests["woke"].power_state == PowerState.SHUTDOWN  # powered off again
    assert after["woke"].vm_state == "stopped"
