"""The fake virt driver behaves like a hypervisor: state transitions, errors, snapshots."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stratus.compute.drivers.base import ImageRef, InstanceNotFound, InstanceSpec, PowerState
from stratus.compute.drivers.fake import FakeDriver


def spec(uuid="u1", **kw) -> InstanceSpec:
    return InstanceSpec(uuid=uuid, name="instance-u1", hostname="vm", vcpus=1, memory_mb=512, root_gb=1,
                        image=ImageRef(id="img"), **kw)


def test_lifecycle():
    async def run():
        d = FakeDriver(latency=0)
        await d.init_host("h1")
        fetched = []

        async def fetch(ref):
            fetched.append(ref.id)
            return Path("/dev/null")

        await d.spawn(spec(), fetch)
        assert fetched == ["img"]
        assert (await d.get_info("u1")).power_state == PowerState.RUNNING
        await d.power_off("u1")
        assert (await d.get_info("u1")).power_state == PowerState.SHUTDOWN
        await d.power_on("u1")
        await d.pause("u1")
        assert (await d.get_info("u1")).power_state == PowerState.PAUSED
        await d.unpause("u1")
        await d.suspend("u1")
        assert (await d.get_info("u1")).power_state == PowerState.SUSPENDED
        await d.resume("u1")
        uploaded = {}

        async def upload(image_id, path, fmt):
            uploaded[image_id] = (path.read_bytes(), fmt)

        await d.snapshot("u1", "snap", upload)
        assert uploaded["snap"][1] == "raw" and b"u1" in uploaded["snap"][0]
        assert "vm" in await d.console_output("u1")
        assert (await d.console_output("u1", 1)).count("\n") == 1
        await d.destroy("u1")
        await d.destroy("u1")  # idempotent
        with pytest.raises(InstanceNotFound):
            await d.get_info("u1")
        assert (await d.host_resources()).hypervisor_type == "fake"

    asyncio.run(run())
