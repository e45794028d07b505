"""The agent's connection handling: exports per attachment, restart after the daemon died,
read-only attachments, and stopping exports with the agent."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest

from stratus.common.db import new_uuid
from stratus.volume import models as m
from stratus.volume.transport import Export
from tests.unit.volume.test_agent_backups import add, agent, get, volume_row  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(not shutil.which("qemu-storage-daemon"), reason="needs qemu-utils")


def nbd_ok(info: dict, command: str) -> bool:
    d = info["data"]
    flags = ["-r"] if command.startswith("read") else []
    out = subprocess.run(["qemu-io", *flags, "-f", "raw", "-c", command, f"nbd://{d['host']}:{d['port']}/{d['name']}"],
                         capture_output=True, text=True, timeout=20)
    return out.returncode == 0 and "verification failed" not in out.stdout


async def attachment(agent, vol, mode="rw"):
    return await add(agent, m.Attachment(id=new_uuid(), volume_id=vol.id, project_id="p", instance_uuid="i",
                                         status="reserved", attach_mode=mode))


async def test_export_is_started_again_on_its_port_after_its_daemon_died(agent):
    agent.settings["export_port_min"], agent.settings["export_port_max"] = 20600, 20650
    agent.exporter.port_min, agent.exporter.port_max = 20600, 20650
    vol = await add(agent, volume_row())
    await agent.create_volume(vol.id)
    att = await attachment(agent, vol)
    info = await agent.initialize_connection(att.id, {"host": "c1"})
    assert info["driver_volume_type"] == "nbd" and info["data"]["access_mode"] == "rw"
    # Asking again returns the same export, not a second one.
    assert await agent.initialize_connection(att.id, {"host": "c1"}) == info
    assert nbd_ok(info, "write -P 0x12 0 4096")

    row = await get(agent, m.Attachment, att.id)
    os.kill(Export.from_dict(row.export).pid(), signal.SIGKILL)
    assert not nbd_ok(info, "read 0 4096")
    await agent.readopt_exports()
    again = (await get(agent, m.Attachment, att.id)).connection_info
    assert again["data"]["port"] == info["data"]["port"]
    assert nbd_ok(info, "read -P 0x12 0 4096")

    assert await agent.terminate_connection(att.id) is True
    assert not nbd_ok(info, "read 0 4096")
    assert (await get(agent, m.Attachment, att.id)).export is None


async def test_read_only_attachment_and_exports_stop_with_the_agent(agent):
    agent.exporter.port_min, agent.exporter.port_max = 20660, 20699
    vol = await add(agent, volume_row())
    await agent.create_volume(vol.id)
    ro = await attachment(agent, vol, mode="ro")
    info = await agent.initialize_connection(ro.id, {"host": "c1"})
    assert info["data"]["access_mode"] == "ro"
    assert nbd_ok(info, "read 0 4096") and not nbd_ok(info, "write 0 4096")
    await agent.stop()
    assert not nbd_ok(info, "read 0 4096")
