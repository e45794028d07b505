"""The volume agent's backup, incremental backup and restore paths, with real volume files and
an in-memory fake of the object store's Swift API (no processes, no cloud)."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from stratus.common.bus import create_bus
from stratus.common.db import Database, new_uuid, upgrade
from stratus.volume import models as m
from stratus.volume import settings as settings_mod
from stratus.volume.agent import VolumeAgent, backend_host
from stratus.volume.drivers.base import DriverError
from stratus.volume.drivers.file import run
from tests.unit.volume.test_backup_format import FakeSwift

pytestmark = pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img (qemu-utils)")


class FakeClient:
    """The part of ServiceClient the agent uses for backups, answered by a FakeSwift."""

    def __init__(self, swift: FakeSwift):
        self.swift = swift

    async def request(self, service_type, method, path, content=None, **kw):
        assert service_type == "object-store"
        status, body = await self.swift.request(method, path, content)
        return SimpleNamespace(status_code=status, content=body)


@pytest.fixture
async def agent(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/volume.sqlite"
    await upgrade("volume", url)
    db = Database(url)
    bus = create_bus()
    await bus.start()
    settings = {**settings_mod.DEFAULTS, "path": str(tmp_path / "volumes"), "host": "storage-1",
                "export_address": "127.0.0.1", "backup_chunk_size": 1024 * 1024}
    a = VolumeAgent(db=db, bus=bus, settings=settings, client=FakeClient(FakeSwift()))
    yield a
    await bus.close()
    await db.dispose()


async def add(agent, row):
    async with agent.db.session() as s:
        s.add(row)
    return row


def volume_row(size=1, **kw) -> m.Volume:
    return m.Volume(id=new_uuid(), project_id="p", user_id="u", size=size, status="creating",
                    availability_zone="nova", volume_type_id="t", host=backend_host("storage-1"), **kw)


async def get(agent, model, ident):
    async with agent.db.reader() as s:
        return await s.get(model, ident)


async def write(agent, vol_id, pattern, offset=0):
    vol = await get(agent, m.Volume, vol_id)
    await run("qemu-io", "-f", "qcow2", "-c", f"write -P {pattern:#x} {offset} 4096", str(agent.driver.path(vol.provider_location)))


async def has(agent, vol_id, pattern, offset=0) -> bool:
    vol = await get(agent, m.Volume, vol_id)
    try:
        out = await run("qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P {pattern:#x} {offset} 4096",
                        str(agent.driver.path(vol.provider_location)))
    except DriverError:  # qemu-io exits non-zero when the pattern does not match
        return False
    return "verification failed" not in out


async def test_full_and_incremental_backup_then_restore(agent):
    vol = await add(agent, volume_row())
    await agent.create_volume(vol.id)
    assert (await get(agent, m.Volume, vol.id)).status == "available"
    await write(agent, vol.id, 0x61)

    full = await add(agent, m.Backup(id=new_uuid(), project_id="p", user_id="u", volume_id=vol.id, status="creating",
                                     size=1, container="bk"))
    before = (await get(agent, m.Volume, vol.id)).provider_location
    await agent.create_backup(full.id)
    row = await get(agent, m.Backup, full.id)
    assert row.status == "available", row.fail_reason
    # An available volume is read in place: no new overlay in its chain.
    assert (await get(agent, m.Volume, vol.id)).provider_location == before
    assert row.object_count == 2  # one chunk with data + the metadata

    await write(agent, vol.id, 0x62, offset=2 * 1024 * 1024)
    incr = await add(agent, m.Backup(id=new_uuid(), project_id="p", user_id="u", volume_id=vol.id,
                                     status="creating", size=1, container="bk", parent_id=full.id,
                                     is_incremental=True))
    await agent.create_backup(incr.id)
    row = await get(agent, m.Backup, incr.id)
    assert row.status == "available", row.fail_reason
    assert row.object_count == 2  # only the changed chunk is stored again

    # A new volume from the incremental backup holds both writes.
    restored = await add(agent, volume_row(backup_id=incr.id))
    await agent.create_volume(restored.id)
    assert (await get(agent, m.Volume, restored.id)).status == "available"
    assert await has(agent, restored.id, 0x61) and await has(agent, restored.id, 0x62, 2 * 1024 * 1024)

    # Restoring the full backup over an existing volume brings back the older content.
    await agent.restore_backup(full.id, restored.id)
    assert (await get(agent, m.Volume, restored.id)).status == "available"
    assert await has(agent, restored.id, 0x61)
    assert not await has(agent, restored.id, 0x62, 2 * 1024 * 1024)

    await agent.delete_backup(incr.id)
    assert await get(agent, m.Backup, incr.id) is None
    assert not any(n.startswith(f"volume_{vol.id}/{incr.id}/") for n in agent.client.swift.containers["bk"])


async def test_failed_backup_reports_the_reason_and_frees_the_volume(agent):
    vol = await add(agent, volume_row())
    await agent.create_volume(vol.id)

    async def refuse(method, path, body):
        return 507, b"full"

    agent.client.swift.request = refuse
    bk = await add(agent, m.Backup(id=new_uuid(), project_id="p", user_id="u", volume_id=vol.id, status="creating",
                                   size=1, container="bk"))
    await agent.create_backup(bk.id)
    row = await get(agent, m.Backup, bk.id)
    assert row.status == "error" and "507" in row.fail_reason
    assert (await get(agent, m.Volume, vol.id)).status == "available"


async def test_snapshot_clone_and_delete_collect_files(agent):
    vol = await add(agent, volume_row())
    await agent.create_volume(vol.id)
    await write(agent, vol.id, 0x71)
    snap = await add(agent, m.Snapshot(id=new_uuid(), project_id="p", user_id="u", volume_id=vol.id, size=1,
                                       status="creating"))
    await agent.create_snapshot(snap.id)
    assert (await get(agent, m.Snapshot, snap.id)).status == "available"
    await write(agent, vol.id, 0x72)
    clone = await add(agent, volume_row(source_volid=vol.id))
    await agent.create_volume(clone.id)
    assert await has(agent, clone.id, 0x72)
    from_snap = await add(agent, volume_row(snapshot_id=snap.id))
    await agent.create_volume(from_snap.id)
    assert await has(agent, from_snap.id, 0x71)

    for vid in (vol.id, clone.id, from_snap.id):
        await agent.delete_volume(vid)
    await agent.delete_snapshot(snap.id)
    left = [p.name for p in agent.driver.directory.iterdir() if p.is_file()]
    assert left == []


async def test_work_interrupted_by_a_stop_is_settled_at_start(agent):
    done = await add(agent, volume_row())
    await agent.create_volume(done.id)
    stuck = await add(agent, volume_row())  # "creating" and never cast: as if the agent died
    async with agent.db.session() as s:
        (await s.get(m.Volume, done.id)).status = "deleting"
    await agent.recover_interrupted()
    row = await get(agent, m.Volume, stuck.id)
    assert row.status == "error" and "stopped" in row.error_reason
    assert await get(agent, m.Volume, done.id) is None  # the interrupted delete was finished
    async with agent.db.reader() as s:
        import sqlalchemy as sa

        msgs = (await s.execute(sa.select(m.Message).where(m.Message.resource_uuid == stuck.id))).scalars().all()
    assert len(msgs) == 1 and msgs[0].event_id == "VOLUME_VOLUME_CREATE_VOLUME_FAILED"


async def test_layers_left_by_deleted_snapshots_are_folded_back(agent):
    vol = await add(agent, volume_row())
    await agent.create_volume(vol.id)
    await write(agent, vol.id, 0x31)
    snaps = []
    for pattern in (0x32, 0x33):
        snap = await add(agent, m.Snapshot(id=new_uuid(), project_id="p", user_id="u", volume_id=vol.id, size=1,
                                           status="creating"))
        await agent.create_snapshot(snap.id)
        snaps.append(snap)
        await write(agent, vol.id, pattern, offset=pattern * 4096)
    chain = await agent.driver.chain((await get(agent, m.Volume, vol.id)).provider_location)
    assert len(chain) == 3
    # A clone of the first snapshot keeps that layer shared: only the layer above it can fold.
    clone = await add(agent, volume_row(snapshot_id=snaps[0].id))
    await agent.create_volume(clone.id)
    await agent.delete_snapshot(snaps[1].id)
    chain = await agent.driver.chain((await get(agent, m.Volume, vol.id)).provider_location)
    assert len(chain) == 2
    await agent.delete_snapshot(snaps[0].id)  # the clone still reads it
    assert len(await agent.driver.chain((await get(agent, m.Volume, vol.id)).provider_location)) == 2
    await agent.delete_volume(clone.id)  # now nothing else does
    chain = await agent.driver.chain((await get(agent, m.Volume, vol.id)).provider_location)
    assert len(chain) == 1
    for pattern, offset in ((0x31, 0), (0x32, 0x32 * 4096), (0x33, 0x33 * 4096)):
        assert await has(agent, vol.id, pattern, offset)
    files = [p.name for p in agent.driver.directory.iterdir() if p.is_file()]
    assert files == chain
