"""Server lifecycle on the API side: create (quota + rows + scheduler), delete, actions, state guards.

Every state change an action makes up front is a conditional UPDATE (``WHERE vm_state IN ...
AND task_state IS NULL``): two concurrent actions on one server cannot both start, and the loser
gets a 409 that names the state the server is in.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass, field

import sqlalchemy as sa

from stratus.common.bus import BusError
from stratus.common.context import RequestContext
from stratus.common.db import new_uuid, utcnow
from stratus.common.errors import BadRequest, Conflict, NotFound
from stratus.compute import claims
from stratus.compute import models as m
from stratus.compute import states
from stratus.compute.scheduler import TOPIC as SCHEDULER

log = logging.getLogger("stratus.compute.manager")


@dataclass
class CreateRequest:
    name: str
    flavor: dict  # snapshot
    image: dict | None  # image metadata from the image service
    min_count: int = 1
    max_count: int = 1
    networks: list[dict] = field(default_factory=list)  # resolved: [{network_id}|{port_id}]
    key_name: str | None = None
    key_data: str | None = None
    user_data: str | None = None
    metadata: dict = field(default_factory=dict)
    config_drive: bool = False
    zone: str | None = None
    force_host: str | None = None
    security_groups: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    description: str | None = None
    hostname: str | None = None
    admin_pass: str | None = None
    access_ip_v4: str | None = None
    access_ip_v6: str | None = None
    disk_config: str = "MANUAL"
    block_devices: list[dict] = field(default_factory=list)
    group_id: str | None = None
    scheduler_hints: dict = field(default_factory=dict)
    request_id: str = ""


def sanitize_hostname(name: str) -> str:
    out = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name.lower())
    out = out.strip("-.")[:63]
    return out or "server"


async def record_action(session, inst_id: str, action: str, ctx: RequestContext, request_id: str) -> int:
    row = m.InstanceAction(instance_id=inst_id, request_id=request_id, action=action, project_id=ctx.project_id,
                           user_id=ctx.user_id)
    session.add(row)
    await session.flush()
    return row.id


async def finish_delete(session, state, instance_id: str) -> bool:
    """Mark deleted exactly once; the one that flips the flag gives back quota and claims."""
    inst = await session.get(m.Instance, instance_id)
    if inst is None:
        return False
    now = utcnow()
    result = await session.execute(
        sa.update(m.Instance).where(m.Instance.id == instance_id, m.Instance.deleted.is_(False))
        .values(deleted=True, deleted_at=now, terminated_at=now, vm_state="deleted", task_state=None,
                power_state=0, updated_at=now))
    if result.rowcount != 1:
        return False
    await state.quotas.release(session, inst.project_id,
                               {"instances": 1, "cores": inst.vcpus, "ram": inst.memory_mb})
    c, r, d = claims.resources_of(inst.flavor or {})
    await claims.release(session, inst.host, c, r, d)
    if inst.vm_state == "resized" and inst.old_flavor and inst.migration_host:
        oc, orr, od = claims.resources_of(inst.old_flavor)
        await claims.release(session, inst.migration_host, oc, orr, od,
                             vms=0 if inst.migration_host == inst.host else 1)
    await session.execute(sa.delete(m.ServerGroupMember).where(m.ServerGroupMember.instance_id == instance_id))
    await session.execute(sa.delete(m.ConsoleToken).where(m.ConsoleToken.instance_id == instance_id))
    return True


class ServerManager:
    def __init__(self, state):
        self.state = state
        self.db = state.db

    # -- lookups ---------------------------------------------------------------------------------

    async def get(self, ctx: RequestContext, server_id: str, *, admin_ok: bool = True) -> m.Instance:
        async with self.db.reader() as s:
            inst = await s.get(m.Instance, server_id)
        if inst is None or inst.deleted or (inst.project_id != ctx.project_id and not (admin_ok and ctx.is_admin)):
            raise NotFound(f"Instance {server_id} could not be found.")
        return inst

    async def agent_up(self, host: str | None) -> bool:
        if not host:
            return False
        async with self.db.reader() as s:
            svc = await s.scalar(sa.select(m.Service).where(m.Service.host == host, m.Service.binary == "nova-compute"))
        return svc is not None and self.state.is_up(svc)

    # -- create ----------------------------------------------------------------------------------

    async def create(self, ctx: RequestContext, req: CreateRequest) -> list[m.Instance]:
        quotas = self.state.quotas
        limits = await quotas.limits(ctx.project_id)
        await quotas.ensure_row(ctx.project_id)
        flavor = req.flavor
        count = req.max_count
        now = utcnow()
        reservation = f"r-{secrets.token_hex(4)}"
        instances = []
        actions: list[m.InstanceAction] = []
        async with self.db.session() as s:
            # Try max_count, then fewer down to min_count (nova's multi-create semantics).
            from stratus.compute.quota import QuotaExceeded

            while True:
                try:
                    # A refused reservation changed nothing (the UPDATE matched no row): retry smaller.
                    await quotas.reserve(s, ctx.project_id, {"instances": count, "cores": flavor["vcpus"] * count,
                                                             "ram": flavor["ram"] * count}, limits)
                    break
                except QuotaExceeded:
                    if count <= req.min_count:
                        raise
                    count -= 1
            if req.group_id:
                group = await s.get(m.ServerGroup, req.group_id)
                if group is None or group.project_id != ctx.project_id:
                    raise BadRequest(f"Invalid server group {req.group_id}: not found")
                members = await s.scalar(sa.select(sa.func.count()).select_from(m.ServerGroupMember)
                                         .where(m.ServerGroupMember.group_id == req.group_id)) or 0
                limit = limits.get("server_group_members", -1)
                if limit >= 0 and members + count > limit:
                    from stratus.compute.quota import QuotaExceeded

                    raise QuotaExceeded(f"Quota exceeded for server_group_members: Requested {count}, but already "
                                        f"used {members} of {limit} server_group_members")
            image = req.image or {}
            image_meta = dict(image) if image else {}
            for i in range(count):
                iid = new_uuid()
                name = req.name if count == 1 else f"{req.name}-{i + 1}"
                hostname = req.hostname or sanitize_hostname(name)
                if req.hostname and count > 1:
                    hostname = f"{req.hostname}-{i + 1}"
                inst = m.Instance(
                    id=iid, name=name, hostname=hostname, description=req.description, project_id=ctx.project_id,
                    user_id=ctx.user_id, image_id=image.get("id", ""), image_properties=image_meta,
                    flavor=flavor, vcpus=flavor["vcpus"], memory_mb=flavor["ram"], root_gb=flavor["disk"],
                    vm_state="building", task_state="scheduling", power_state=0, requested_az=req.zone,
                    availability_zone=req.zone, key_name=req.key_name, key_data=req.key_data,
                    user_data=req.user_data, config_drive=req.config_drive, metadata_=dict(req.metadata),
                    tags=list(req.tags), security_groups=list(req.security_groups),
                    requested_networks=list(req.networks), network_info=[], block_devices=list(req.block_devices),
                    scheduler_hints=dict(req.scheduler_hints), reservation_id=reservation, launch_index=i,
                    access_ip_v4=req.access_ip_v4, access_ip_v6=req.access_ip_v6, disk_config=req.disk_config,
                    admin_pass=None, created_at=now + dt.timedelta(microseconds=i), updated_at=now)
                s.add(inst)
                action = m.InstanceAction(instance_id=iid, request_id=req.request_id, action="create",
                                          project_id=ctx.project_id, user_id=ctx.user_id, start_time=now,
                                          updated_at=now)
                s.add(action)
                actions.append(action)
                if req.group_id:
                    s.add(m.ServerGroupMember(group_id=req.group_id, instance_id=iid))
                instances.append(inst)
        spec = {"vcpus": flavor["vcpus"], "memory_mb": flavor["ram"],
                "disk_gb": claims.resources_of(flavor)[2], "zone": req.zone, "force_host": req.force_host,
                "group_id": req.group_id, "extra_specs": flavor.get("extra_specs") or {},
                "image_arch": (image.get("architecture") or image.get("hw_architecture")) if image else None,
                "image_hv_type": (image.get("img_hv_type") or image.get("hypervisor_type")) if image else None,
                "action_ids": {a.instance_id: a.id for a in actions}}
        try:
            await self.state.bus.cast(SCHEDULER, "schedule", instance_ids=[i.id for i in instances], spec=spec)
        except BusError as exc:
            msg = f"The scheduler is not reachable: {exc}"
            async with self.db.session() as s:
                await s.execute(sa.update(m.Instance).where(m.Instance.id.in_([i.id for i in instances])).values(
                    vm_state="error", task_state=None,
                    fault={"code": 500, "message": msg, "created": iso(now), "details": ""}))
        return instances

    # -- delete ----------------------------------------------------------------------------------

    async def delete(self, ctx: RequestContext, inst: m.Instance, request_id: str, *, force: bool = False) -> None:
        self.check_lock(ctx, inst)
        async with self.db.session() as s:
            result = await s.execute(
                sa.update(m.Instance).where(m.Instance.id == inst.id, m.Instance.deleted.is_(False),
                                            sa.or_(m.Instance.task_state.is_(None),
                                                   m.Instance.task_state != "deleting"))
                .values(task_state="deleting", updated_at=utcnow()))
            if result.rowcount != 1:
                return  # already being deleted: deleting again is a no-op (204)
            action_id = await record_action(s, inst.id, "delete", ctx, request_id)
        host = inst.host
        if host and await self.agent_up(host):
            try:
                await self.state.bus.cast(f"compute.{host}", "delete_instance", instance_id=inst.id,
                                          action_id=action_id)
                return
            except BusError as exc:
                log.warning("agent of %s unreachable (%s): deleting %s locally", host, exc, inst.id)
        # No host yet, or its agent is down: delete the record here (nova's "local delete").
        async with self.db.session() as s:
            await finish_delete(s, self.state, inst.id)
        if inst.network_info:
            from stratus.compute.networking import NetworkAPI

            await NetworkAPI(self.state.client()).deallocate(inst.network_info)

    # -- actions ---------------------------------------------------------------------------------

    def check_lock(self, ctx: RequestContext, inst: m.Instance) -> None:
        # A locked server refuses changes from everyone but admins (nova's lock semantics).
        if inst.locked and not ctx.is_admin:
            raise Conflict(f"Instance {inst.id} is locked")

    async def begin(self, ctx: RequestContext, inst: m.Instance, action: str, task_state: str | None,
                    request_id: str, *, guard: str | None = None, extra: dict | None = None,
                    record: str | None = None, allow_task: bool = False) -> int:
        """Move the server into ``task_state`` if its state allows ``guard``; 409 naming the state if not."""
        rule = states.ACTIONS[guard or action]
        vm_ok = rule.get("vm")
        values = {"updated_at": utcnow(), **(extra or {})}
        if task_state is not None:
            values["task_state"] = task_state
        async with self.db.session() as s:
            q = sa.update(m.Instance).where(m.Instance.id == inst.id, m.Instance.deleted.is_(False))
            if vm_ok is not None:
                q = q.where(m.Instance.vm_state.in_(sorted(vm_ok)))
            task_rule = rule.get("task", {None})
            if task_rule is not None and not allow_task:
                allowed_tasks = [t for t in task_rule if t is not None]
                cond = m.Instance.task_state.is_(None)
                if allowed_tasks:
                    cond = sa.or_(cond, m.Instance.task_state.in_(allowed_tasks))
                q = q.where(cond)
            result = await s.execute(q.values(**values))
            if result.rowcount != 1:
                fresh = await s.get(m.Instance, inst.id)
                vm = fresh.vm_state if fresh else inst.vm_state
                task = fresh.task_state if fresh else inst.task_state
                what = f"vm_state {vm}" + (f" with task_state {task}" if task else "")
                raise Conflict(f"Cannot '{record or action}' instance {inst.id} while it is in {what}")
            return await record_action(s, inst.id, record or action, ctx, request_id)

    async def cast(self, host: str | None, method: str, **kwargs) -> None:
        if not host:
            raise Conflict("The server has no host yet; try again when it is built")
        try:
            await self.state.bus.cast(f"compute.{host}", method, **kwargs)
        except BusError as exc:
            iid = kwargs.get("instance_id")
            async with self.db.session() as s:
                await s.execute(sa.update(m.Instance).where(m.Instance.id == iid).values(task_state=None))
            raise Conflict(f"The compute agent of host {host} is not reachable: {exc}") from None

    async def call(self, host: str | None, method: str, timeout: float = 30.0, **kwargs):
        if not host:
            raise Conflict("The server has no host yet; try again when it is built")
        try:
            return await self.state.bus.call(f"compute.{host}", method, timeout=timeout, **kwargs)
        except BusError as exc:
            raise Conflict(f"The compute agent of host {host} did not answer: {exc}") from None

    async def simple_action(self, ctx, inst, action: str, task_state: str | None, request_id: str, *,
                            guard: str | None = None, params: dict | None = None, record: str | None = None,
                            extra: dict | None = None, allow_task: bool = False) -> int:
        self.check_lock(ctx, inst)
        action_id = await self.begin(ctx, inst, action, task_state, request_id, guard=guard, record=record,
                                     extra=extra, allow_task=allow_task)
        await self.cast(inst.host, "run_action", instance_id=inst.id, action=action, params=params or {},
                        action_id=action_id)
        return action_id

    async def select_destination(self, inst: m.Instance, flavor: dict, *, ignore: list[str], force_host=None) -> str:
        spec = {"vcpus": flavor["vcpus"], "memory_mb": flavor["ram"], "disk_gb": claims.resources_of(flavor)[2],
                "zone": inst.requested_az, "ignore_hosts": ignore, "force_host": force_host,
                "extra_specs": flavor.get("extra_specs") or {}}
        async with self.db.reader() as s:
            gid = await s.scalar(sa.select(m.ServerGroupMember.group_id)
                                 .where(m.ServerGroupMember.instance_id == inst.id))
        spec["group_id"] = gid
        try:
            answer = await self.state.bus.call(SCHEDULER, "select_destination", spec=spec, instance_id=inst.id,
                                               timeout=30)
        except BusError as exc:
            raise Conflict(f"The scheduler is not reachable: {exc}") from None
        if not answer.get("host"):
            raise BadRequest(answer.get("reason") or "No host fits")
        return answer["host"]

    async def resize(self, ctx, inst, new_flavor: dict, request_id: str, *, migrate: bool = False,
                     force_host: str | None = None) -> None:
        self.check_lock(ctx, inst)
        action = "migrate" if migrate else "resize"
        if not migrate:
            old = inst.flavor or {}
            if new_flavor["id"] == old.get("id"):
                raise BadRequest("When resizing, instances must change flavor!")
            if new_flavor["disk"] < old.get("disk", 0):
                raise BadRequest(f"Resize error: Unable to resize disk down (flavor {new_flavor['name']} has "
                                 f"{new_flavor['disk']} GB, the server has {old.get('disk')} GB).")
        action_id = await self.begin(ctx, inst, action, "resize_prep", request_id)
        old_flavor = inst.flavor or {}
        delta = {"cores": new_flavor["vcpus"] - old_flavor.get("vcpus", 0),
                 "ram": new_flavor["ram"] - old_flavor.get("ram", 0)}
        try:
            if any(v > 0 for v in delta.values()):
                limits = await self.state.quotas.limits(inst.project_id)
                async with self.db.session() as s:
                    await self.state.quotas.reserve(s, inst.project_id, {k: max(v, 0) for k, v in delta.items()},
                                                    limits)
            ignore = [] if (not migrate and self.state.settings.allow_resize_to_same_host) else [inst.host]
            try:
                dest = await self.select_destination(inst, new_flavor, ignore=ignore, force_host=force_host)
            except Exception:
                if any(v > 0 for v in delta.values()):
                    async with self.db.session() as s:
                        await self.state.quotas.release(s, inst.project_id, {k: max(v, 0) for k, v in delta.items()})
                raise
        except Exception as exc:
            async with self.db.session() as s:
                await s.execute(sa.update(m.Instance).where(m.Instance.id == inst.id).values(task_state=None))
                s.add(m.InstanceActionEvent(action_id=action_id, event="conductor_migrate_server", result="Error",
                                            details=getattr(exc, "message", str(exc)), start_time=utcnow(),
                                            finish_time=utcnow()))
            raise
        # Negative deltas (resize down) are given back at confirm time; record them.
        async with self.db.session() as s:
            await s.execute(sa.update(m.Instance).where(m.Instance.id == inst.id).values(
                old_flavor=old_flavor, flavor=new_flavor, migration_host=inst.host, vcpus=new_flavor["vcpus"],
                memory_mb=new_flavor["ram"], root_gb=new_flavor["disk"], task_state="resize_migrating"))
            if any(v < 0 for v in delta.values()):
                await self.state.quotas.release(s, inst.project_id, {k: -min(v, 0) for k, v in delta.items()})
            s.add(m.Migration(uuid=new_uuid(), instance_id=inst.id, migration_type="migration" if migrate else "resize",
                              source_host=inst.host, dest_host=dest, old_flavor_id=old_flavor.get("id"),
                              new_flavor_id=new_flavor["id"], status="migrating", project_id=inst.project_id,
                              user_id=inst.user_id))
        await self.cast(inst.host, "run_action", instance_id=inst.id, action="resize",
                        params={"dest_host": dest, "new_flavor": new_flavor, "action_id": action_id},
                        action_id=action_id)

    async def confirm_resize(self, ctx, inst, request_id: str) -> None:
        self.check_lock(ctx, inst)
        action_id = await self.begin(ctx, inst, "confirm_resize", "resize_confirming", request_id,
                                     record="confirmResize")
        await self._migration_status(inst.id, "confirmed")
        await self.cast(inst.migration_host or inst.host, "confirm_resize", instance_id=inst.id, action_id=action_id)

    async def revert_resize(self, ctx, inst, request_id: str) -> None:
        self.check_lock(ctx, inst)
        action_id = await self.begin(ctx, inst, "revert_resize", "resize_reverting", request_id,
                                     record="revertResize")
        old = inst.old_flavor or inst.flavor
        delta = {"cores": (inst.flavor or {}).get("vcpus", 0) - old.get("vcpus", 0),
                 "ram": (inst.flavor or {}).get("ram", 0) - old.get("ram", 0)}
        async with self.db.session() as s:
            await self.state.quotas.release(s, inst.project_id, {k: max(v, 0) for k, v in delta.items()})
            if any(v < 0 for v in delta.values()):
                await self.state.quotas.reserve(s, inst.project_id, {k: -min(v, 0) for k, v in delta.items()},
                                                {"cores": -1, "ram": -1})
        await self._migration_status(inst.id, "reverted")
        await self.cast(inst.host, "revert_resize", instance_id=inst.id, action_id=action_id)

    async def _migration_status(self, instance_id: str, status: str) -> None:
        async with self.db.session() as s:
            mig = await s.scalar(sa.select(m.Migration).where(m.Migration.instance_id == instance_id)
                                 .order_by(m.Migration.id.desc()).limit(1))
            if mig is not None:
                mig.status = status
                mig.updated_at = utcnow()

    async def evacuate(self, ctx, inst, request_id: str, target: str | None) -> None:
        if await self.agent_up(inst.host):
            raise Conflict(f"Compute service of {inst.host} is still in use: evacuate only servers of a host that "
                           "is down")
        action_id = await self.begin(ctx, inst, "evacuate", "rebuilding", request_id)
        try:
            dest = await self.select_destination(inst, inst.flavor, ignore=[inst.host] if inst.host else [],
                                                 force_host=target)
        except Exception:
            async with self.db.session() as s:
                await s.execute(sa.update(m.Instance).where(m.Instance.id == inst.id).values(task_state=None))
            raise
        c, r, d = claims.resources_of(inst.flavor or {})
        async with self.db.session() as s:
            await claims.release(s, inst.host, c, r, d)
            await s.execute(sa.update(m.Instance).where(m.Instance.id == inst.id).values(host=dest, node=dest))
            s.add(m.Migration(uuid=new_uuid(), instance_id=inst.id, migration_type="evacuation",
                              source_host=inst.host, dest_host=dest, status="done", project_id=inst.project_id,
                              user_id=inst.user_id))
        await self.cast(dest, "run_action", instance_id=inst.id, action="evacuate", params={}, action_id=action_id)


def iso(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_admin_pass() -> str:
    return secrets.token_urlsafe(9)


__all__ = ["ServerManager", "CreateRequest", "finish_delete"]
