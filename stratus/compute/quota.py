"""Quotas: limits per project, usage counters changed only by conditional UPDATEs (race-free).

``reserve`` adds to a project's counters with ``UPDATE ... WHERE used + n <= limit``: two
concurrent creates cannot both pass, on any back end, because the database applies the check and
the increment as one statement on one row. It runs inside the caller's transaction, so a create
that fails later rolls the reservation back with everything else.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from stratus.common.errors import Forbidden
from stratus.compute import models as m
from stratus.compute.settings import DEFAULT_QUOTAS

COUNTED = ("instances", "cores", "ram", "server_groups")


class QuotaExceeded(Forbidden):
    pass


class Quotas:
    # Limits are read on every create; a short cache keeps that off the database. Changes made
    # through this process drop it at once; other API processes see them within this many seconds.
    CACHE_SECONDS = 3.0

    def __init__(self, db, defaults: dict[str, int]):
        self.db = db
        self.config_defaults = dict(defaults)
        self._cache: dict[str, tuple[float, dict[str, int]]] = {}
        self._rows: set[str] = set()

    async def defaults(self) -> dict[str, int]:
        out = dict(self.config_defaults)
        async with self.db.reader() as s:
            for row in (await s.execute(sa.select(m.QuotaDefault))).scalars():
                out[row.resource] = row.hard_limit
        return out

    async def limits(self, project_id: str) -> dict[str, int]:
        hit = self._cache.get(project_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return dict(hit[1])
        out = await self._read_limits(project_id)
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[project_id] = (now + self.CACHE_SECONDS, out)
        return dict(out)

    async def _read_limits(self, project_id: str) -> dict[str, int]:
        out = await self.defaults()
        async with self.db.reader() as s:
            rows = (await s.execute(sa.select(m.Quota).where(m.Quota.project_id == project_id))).scalars()
            for row in rows:
                out[row.resource] = row.hard_limit
        return out

    async def set_limits(self, project_id: str, values: dict[str, int]) -> None:
        self._cache.clear()
        async with self.db.session() as s:
            for resource, limit in values.items():
                row = await s.get(m.Quota, (project_id, resource))
                if row is None:
                    s.add(m.Quota(project_id=project_id, resource=resource, hard_limit=limit))
                else:
                    row.hard_limit = limit

    async def reset(self, project_id: str) -> None:
        self._cache.clear()
        async with self.db.session() as s:
            await s.execute(sa.delete(m.Quota).where(m.Quota.project_id == project_id))

    async def usage(self, project_id: str, user_id: str | None = None) -> dict[str, int]:
        async with self.db.reader() as s:
            row = await s.get(m.ProjectUsage, project_id)
            out = {k: (getattr(row, k) if row else 0) for k in COUNTED}
            if user_id:
                out["key_pairs"] = await s.scalar(
                    sa.select(sa.func.count()).select_from(m.KeyPair).where(m.KeyPair.user_id == user_id)) or 0
            else:
                out["key_pairs"] = 0
        out["metadata_items"] = 0
        out["server_group_members"] = 0
        return out

    async def ensure_row(self, project_id: str) -> None:
        if project_id in self._rows:
            return
        async with self.db.reader() as s:
            if await s.get(m.ProjectUsage, project_id) is not None:
                self._rows.add(project_id)
                return
        try:
            async with self.db.session() as s:
                s.add(m.ProjectUsage(project_id=project_id))
        except IntegrityError:
            pass  # another request created it first
        self._rows.add(project_id)

    async def reserve(self, session, project_id: str, deltas: dict[str, int], limits: dict[str, int]) -> None:
        """Add ``deltas`` to the project's counters, or raise QuotaExceeded naming the resource."""
        t = m.ProjectUsage.__table__
        values = {}
        conditions = [t.c.project_id == project_id]
        for resource, n in deltas.items():
            if n == 0:
                continue
            values[resource] = t.c[resource] + n
            limit = limits.get(resource, DEFAULT_QUOTAS.get(resource, -1))
            if n > 0 and limit >= 0:
                conditions.append(t.c[resource] + n <= limit)
        if not values:
            return
        result = await session.execute(sa.update(t).where(*conditions).values(**values))
        if result.rowcount == 1:
            return
        row = (await session.execute(sa.select(t).where(t.c.project_id == project_id))).first()
        used = {k: (getattr(row, k) if row else 0) for k in COUNTED}
        for resource, n in deltas.items():
            limit = limits.get(resource, -1)
            if n > 0 and limit >= 0 and used[resource] + n > limit:
                raise QuotaExceeded(
                    f"Quota exceeded for {resource}: Requested {n}, but already used {used[resource]} "
                    f"of {limit} {resource}")
        raise QuotaExceeded(f"Quota exceeded for project {project_id}")

    async def release(self, session, project_id: str, deltas: dict[str, int]) -> None:
        t = m.ProjectUsage.__table__
        values = {k: sa.case((t.c[k] - n < 0, 0), else_=t.c[k] - n) for k, n in deltas.items() if n}
        if values:
            await session.execute(sa.update(t).where(t.c.project_id == project_id).values(**values))


def check_limit(resource: str, used: int, requested: int, limit: int) -> None:
    if limit >= 0 and used + requested > limit:
        raise QuotaExceeded(f"Quota exceeded for {resource}: Requested {requested}, but already used {used} "
                            f"of {limit} {resource}")
