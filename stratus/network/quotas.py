"""Per-project quotas (mixed into NetworkManager). -1 means unlimited."""

from __future__ import annotations

import sqlalchemy as sa

from stratus.common.context import RequestContext
from stratus.common.errors import BadRequest, Conflict, Forbidden
from stratus.network import models as m

COUNTED = {"network": m.Network, "subnet": m.Subnet, "port": m.Port, "router": m.Router,
           "floatingip": m.FloatingIP, "security_group": m.SecurityGroup,
           "security_group_rule": m.SecurityGroupRule}


class QuotaMixin:
    def default_quotas(self) -> dict[str, int]:
        return dict(self.settings["quotas"])

    async def _limits(self, s, project_id: str) -> dict[str, int]:
        limits = self.default_quotas()
        for q in (await s.scalars(sa.select(m.Quota).where(m.Quota.project_id == project_id))).all():
            limits[q.resource] = q.limit
        return limits

    async def _used(self, s, project_id: str, resource: str) -> int:
        model = COUNTED.get(resource)
        if model is None:
            return 0
        return await s.scalar(sa.select(sa.func.count()).select_from(model).where(model.project_id == project_id)) or 0

    async def check_quota(self, s, project_id: str, resource: str, adding: int = 1) -> None:
        if not project_id:
            return
        limit = (await self._limits(s, project_id)).get(resource, -1)
        if limit < 0:
            return
        used = await self._used(s, project_id, resource)
        if used + adding > limit:
            raise Conflict(f"Quota exceeded for resources: ['{resource}'].", kind="OverQuota")

    def _may_read(self, ctx: RequestContext, project_id: str) -> None:
        if not ctx.is_admin and project_id != ctx.project_id:
            raise Forbidden("Non-admin users may only see their own project's quotas.", kind="PolicyNotAuthorized")

    async def get_quota(self, ctx: RequestContext, project_id: str) -> dict:
        self._may_read(ctx, project_id)
        async with self.db.reader() as s:
            return await self._limits(s, project_id)

    async def quota_details(self, ctx: RequestContext, project_id: str) -> dict:
        self._may_read(ctx, project_id)
        async with self.db.reader() as s:
            limits = await self._limits(s, project_id)
            return {r: {"limit": limit, "used": await self._used(s, project_id, r), "reserved": 0}
                    for r, limit in limits.items()}

    async def list_quotas(self, ctx: RequestContext) -> list[dict]:
        if not ctx.is_admin:
            raise Forbidden("Only administrators may list every project's quotas.", kind="PolicyNotAuthorized")
        async with self.db.reader() as s:
            projects = sorted(set((await s.scalars(sa.select(m.Quota.project_id))).all()))
            out = []
            for p in projects:
                limits = await self._limits(s, p)
                out.append({**limits, "project_id": p, "tenant_id": p})
            return out

    async def update_quota(self, ctx: RequestContext, project_id: str, body: dict) -> dict:
        if not ctx.is_admin:
            raise Forbidden("Only administrators may change quotas.", kind="PolicyNotAuthorized")
        known = self.default_quotas()
        for key, value in body.items():
            if key in ("project_id", "tenant_id", "force", "check_limit"):
                continue
            if key not in known:
                raise BadRequest(f"Unrecognized attribute(s) '{key}'", kind="HTTPBadRequest")
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise BadRequest(f"Invalid input for {key}: {value!r} is not an integer.", kind="InvalidInput") from None
            if value < -1:
                raise BadRequest(f"Invalid input for {key}: {value} is smaller than -1.", kind="InvalidInput")
            async with self.db.session() as s:
                row = await s.get(m.Quota, (project_id, key))
                if row is None:
                    s.add(m.Quota(project_id=project_id, resource=key, limit=value))
                else:
                    row.limit = value
        return await self.get_quota(ctx, project_id)

    async def reset_quota(self, ctx: RequestContext, project_id: str) -> None:
        if not ctx.is_admin:
            raise Forbidden("Only administrators may change quotas.", kind="PolicyNotAuthorized")
        async with self.db.session() as s:
            await s.execute(sa.delete(m.Quota).where(m.Quota.project_id == project_id))
