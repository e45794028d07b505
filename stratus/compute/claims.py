"""Resource claims on a host: one conditional UPDATE each, so no two claims can over-commit a host."""

from __future__ import annotations

import sqlalchemy as sa

from stratus.common.db import utcnow
from stratus.compute import models as m


def resources_of(flavor: dict) -> tuple[int, int, int]:
    """(vcpus, memory_mb, disk_gb) a flavor snapshot takes on a host."""
    return (int(flavor.get("vcpus", 0)), int(flavor.get("ram", 0)) + 0,
            int(flavor.get("disk", 0)) + int(flavor.get("ephemeral", 0) or 0) + (int(flavor.get("swap", 0) or 0) + 1023) // 1024)


async def claim(session, host: str, vcpus: int, memory_mb: int, disk_gb: int) -> bool:
    t = m.ComputeNode.__table__
    result = await session.execute(
        sa.update(t).where(
            t.c.host == host,
            t.c.memory_mb * t.c.ram_allocation_ratio - t.c.memory_mb_used >= memory_mb,
            t.c.vcpus * t.c.cpu_allocation_ratio - t.c.vcpus_used >= vcpus,
            t.c.local_gb * t.c.disk_allocation_ratio - t.c.local_gb_used >= disk_gb,
        ).values(memory_mb_used=t.c.memory_mb_used + memory_mb, vcpus_used=t.c.vcpus_used + vcpus,
                 local_gb_used=t.c.local_gb_used + disk_gb, running_vms=t.c.running_vms + 1,
                 updated_at=utcnow()))
    return result.rowcount == 1


async def release(session, host: str | None, vcpus: int, memory_mb: int, disk_gb: int, *, vms: int = 1) -> None:
    if not host:
        return
    t = m.ComputeNode.__table__

    def dec(col, n):
        return sa.case((col - n < 0, 0), else_=col - n)

    await session.execute(
        sa.update(t).where(t.c.host == host).values(
            memory_mb_used=dec(t.c.memory_mb_used, memory_mb), vcpus_used=dec(t.c.vcpus_used, vcpus),
            local_gb_used=dec(t.c.local_gb_used, disk_gb), running_vms=dec(t.c.running_vms, vms),
            updated_at=utcnow()))
