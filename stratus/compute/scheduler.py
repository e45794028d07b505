"""The scheduler: picks a host for each new server, claims its resources, hands it to that host's agent.

It serves the bus topic ``compute.scheduler``. Its view of the fleet is an in-memory
:class:`HostTable` loaded once and then refreshed with only the rows changed since the last look
(heartbeats and claims bump ``updated_at``), so a placement never reads the whole fleet from the
database. The claim itself is a conditional UPDATE in the database: several schedulers, or a stale
view, can never over-commit a host; a lost race just moves on to the next candidate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import sqlalchemy as sa

from stratus.common.bus import BusError
from stratus.common.db import utcnow
from stratus.compute import claims
from stratus.compute import models as m
from stratus.compute.hoststate import HostState, HostTable, Request

log = logging.getLogger("stratus.compute.scheduler")

TOPIC = "compute.scheduler"
CLAIM_ATTEMPTS = 6


class NoValidHost(Exception):
    pass


class InstanceGone(Exception):
    """The instance was deleted while the scheduler was placing it."""


def _epoch(value: dt.datetime | None) -> float:
    return value.replace(tzinfo=dt.timezone.utc).timestamp() if value else 0.0


class Scheduler:
    def __init__(self, state):
        self.state = state
        self.db = state.db
        s = state.settings
        self.table = HostTable(down_after=s.service_down_time, subset_size=4)
        self.pack = s.weigher == "pack"
        self._services: dict[str, tuple[bool, bool, str]] = {}
        self._aggregates: dict[str, dict] = {}
        self._last_refresh: dt.datetime | None = None
        self._group_locks: dict[str, asyncio.Lock] = {}
        self._refresh_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._sub = None

    async def start(self) -> None:
        await self.refresh()
        try:
            await self.heartbeat()
        except Exception:  # two schedulers registering at once: the other one wrote the row
            log.debug("scheduler service registration raced", exc_info=True)
        self._sub = await self.state.bus.serve(TOPIC, SchedulerEndpoint(self))
        self._task = asyncio.create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._sub:
            await self._sub.stop()

    async def _refresh_loop(self) -> None:
        last_beat = 0.0
        while True:
            try:
                if time.monotonic() - last_beat >= self.state.settings.heartbeat_interval:
                    await self.heartbeat()
                    last_beat = time.monotonic()
                await self.refresh()
            except Exception:
                log.exception("refreshing the host table failed")
            await asyncio.sleep(self.state.settings.scheduler_refresh_interval)

    async def heartbeat(self) -> None:
        """The scheduler shows in `compute service list` like every other piece."""
        import socket
        import uuid as uuidlib

        host = socket.gethostname()
        now = utcnow()
        async with self.db.session() as s:
            row = await s.scalar(sa.select(m.Service).where(m.Service.host == host,
                                                            m.Service.binary == "nova-scheduler"))
            if row is None:
                s.add(m.Service(id=str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"nova-scheduler.{host}")), host=host,
                                binary="nova-scheduler", topic=TOPIC, zone="internal", last_seen_up=now))
            else:
                row.last_seen_up = now

    # -- host table ------------------------------------------------------------------------------

    async def refresh(self) -> None:
        async with self._refresh_lock:
            started = utcnow()
            # Re-read a little overlap: rows committed just before our last read are not missed.
            since = self._last_refresh - dt.timedelta(seconds=5) if self._last_refresh else None
            async with self.db.reader() as s:
                q = sa.select(m.Service).where(m.Service.binary == "nova-compute")
                if since:
                    q = q.where(m.Service.updated_at >= since)
                changed_services = list((await s.execute(q)).scalars())
                aggs = list((await s.execute(sa.select(m.Aggregate))).scalars())
                q = sa.select(m.ComputeNode)
                if since:
                    q = q.where(m.ComputeNode.updated_at >= since)
                nodes = list((await s.execute(q)).scalars())
            for svc in changed_services:
                self._services[svc.host] = (svc.disabled, svc.forced_down, svc.zone)
            agg_meta: dict[str, dict] = {}
            for a in aggs:
                for h in a.hosts or []:
                    agg_meta.setdefault(h, {}).update(a.metadata_ or {})
            touched = {n.host for n in nodes} | {s.host for s in changed_services}
            touched |= set(agg_meta) ^ set(self._aggregates) | {h for h in agg_meta if agg_meta[h] != self._aggregates.get(h)}
            self._aggregates = agg_meta
            by_host = {n.host: n for n in nodes}
            for host in touched:
                node = by_host.get(host)
                if node is not None:
                    self.table.upsert(self._state_of(node))
                else:
                    st = self.table.hosts.get(host)
                    if st is not None:
                        disabled, forced, zone = self._services.get(host, (False, False, st.zone))
                        st2 = HostState(**{k: getattr(st, k) for k in HostState.__slots__ if k != "bucket"})
                        st2.disabled, st2.forced_down, st2.zone = disabled, forced, zone
                        st2.aggregate_meta = self._aggregates.get(host, {})
                        self.table.upsert(st2)
            self._last_refresh = started

    def _state_of(self, node: m.ComputeNode) -> HostState:
        disabled, forced, zone = self._services.get(node.host, (False, False, self.state.settings.availability_zone))
        return HostState(host=node.host, node_id=node.id, zone=zone, vcpus=node.vcpus, memory_mb=node.memory_mb,
                         local_gb=node.local_gb, vcpus_used=node.vcpus_used, memory_mb_used=node.memory_mb_used,
                         local_gb_used=node.local_gb_used, cpu_ratio=node.cpu_allocation_ratio,
                         ram_ratio=node.ram_allocation_ratio, disk_ratio=node.disk_allocation_ratio,
                         disabled=disabled, forced_down=forced, heartbeat=_epoch(node.heartbeat_at),
                         cpu_arch=node.cpu_arch, hypervisor_type=node.hypervisor_type,
                         aggregate_meta=self._aggregates.get(node.host, {}))

    async def _reload_host(self, host: str) -> None:
        async with self.db.reader() as s:
            node = await s.scalar(sa.select(m.ComputeNode).where(m.ComputeNode.host == host))
        if node is None:
            self.table.remove(host)
        else:
            self.table.upsert(self._state_of(node))

    # -- placement -------------------------------------------------------------------------------

    async def build_request(self, spec: dict, instance_id: str | None = None) -> Request:
        req = Request(vcpus=spec["vcpus"], memory_mb=spec["memory_mb"], disk_gb=spec["disk_gb"],
                      zone=spec.get("zone"), force_host=spec.get("force_host"),
                      ignore_hosts=set(spec.get("ignore_hosts") or []),
                      aggregate_specs=_aggregate_specs(spec.get("extra_specs") or {}),
                      image_arch=spec.get("image_arch"), image_hv_type=spec.get("image_hv_type"))
        group_id = spec.get("group_id")
        if group_id:
            async with self.db.reader() as s:
                group = await s.get(m.ServerGroup, group_id)
                if group is not None:
                    req.group_policy = group.policy
                    req.max_server_per_host = (group.rules or {}).get("max_server_per_host")
                    rows = await s.execute(
                        sa.select(m.Instance.host).join(m.ServerGroupMember,
                                                        m.ServerGroupMember.instance_id == m.Instance.id)
                        .where(m.ServerGroupMember.group_id == group_id, m.Instance.deleted.is_(False),
                               m.Instance.host.is_not(None), m.Instance.id != (instance_id or "")))
                    for (host,) in rows:
                        req.group_hosts.add(host)
                        req.group_host_counts[host] = req.group_host_counts.get(host, 0) + 1
        return req

    async def place(self, req: Request, instance_id: str | None = None, zone_hint: str | None = None) -> str:
        """Pick and claim a host for ``req``; raises NoValidHost with the per-filter reasons.

        With ``instance_id`` the instance is assigned to the host in the claim's transaction.
        """
        tried: set[str] = set()
        refreshed = False
        for _ in range(CLAIM_ATTEMPTS):
            st = self.table.pick(req, pack=self.pack)
            if st is None and not refreshed:
                # Our view may be older than a release or a heartbeat: look again once.
                refreshed = True
                await self.refresh()
                st = self.table.pick(req, pack=self.pack)
            if st is None or st.host in tried:
                break
            tried.add(st.host)
            async with self.db.session() as s:
                ok = await claims.claim(s, st.host, req.vcpus, req.memory_mb, req.disk_gb)
                if ok and instance_id is not None:
                    result = await s.execute(
                        sa.update(m.Instance).where(m.Instance.id == instance_id, m.Instance.deleted.is_(False),
                                                    m.Instance.vm_state == "building")
                        .values(host=st.host, node=st.host, availability_zone=zone_hint or st.zone,
                                task_state="spawning", updated_at=utcnow()))
                    if result.rowcount != 1:
                        # Deleted while we were choosing: raising rolls the claim back too.
                        raise InstanceGone(instance_id)
            if ok:
                self.table.adjust(st.host, req.vcpus, req.memory_mb, req.disk_gb)
                return st.host
            # Our view was stale (another scheduler claimed, or the agent changed totals).
            await self._reload_host(st.host)
        raise NoValidHost(self.table.explain(req))

    async def schedule(self, instance_ids: list[str], spec: dict) -> None:
        group_id = spec.get("group_id")
        lock = self._group_locks.setdefault(group_id, asyncio.Lock()) if group_id else None
        for instance_id in instance_ids:
            if lock is not None:
                # Members of one group are placed one at a time so (anti-)affinity sees each choice.
                async with lock:
                    await self._schedule_one(instance_id, spec)
            else:
                await self._schedule_one(instance_id, spec)

    async def _schedule_one(self, instance_id: str, spec: dict) -> None:
        req = await self.build_request(spec, instance_id)
        started = utcnow()
        try:
            host = await self.place(req, instance_id=instance_id, zone_hint=spec.get("zone"))
        except NoValidHost as exc:
            await self._fail(instance_id, str(exc), started)
            return
        except InstanceGone:
            return
        action_id = (spec.get("action_ids") or {}).get(instance_id)
        try:
            await self.state.bus.cast(f"compute.{host}", "build_instance", instance_id=instance_id,
                                      action_id=action_id)
        except BusError as exc:
            async with self.db.session() as s:
                await claims.release(s, host, req.vcpus, req.memory_mb, req.disk_gb)
            self.table.adjust(host, -req.vcpus, -req.memory_mb, -req.disk_gb)
            await self._fail(instance_id, f"The compute agent of host {host} is not reachable: {exc}", started,
                             clear_host=True)

    async def _fail(self, instance_id: str, message: str, started: dt.datetime, clear_host: bool = False) -> None:
        log.info("instance %s: %s", instance_id, message)
        now = utcnow()
        values = dict(vm_state="error", task_state=None, updated_at=now,
                      fault={"code": 500, "message": message, "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "details": ""})
        if clear_host:
            values.update(host=None, node=None)
        async with self.db.session() as s:
            await s.execute(sa.update(m.Instance).where(m.Instance.id == instance_id, m.Instance.deleted.is_(False))
                            .values(**values))
            action_id = await s.scalar(sa.select(m.InstanceAction.id).where(
                m.InstanceAction.instance_id == instance_id, m.InstanceAction.action == "create"))
            if action_id:
                s.add(m.InstanceActionEvent(action_id=action_id, event="schedule_instances", result="Error",
                                            details=message, start_time=started, finish_time=now))


def _aggregate_specs(extra_specs: dict) -> dict:
    """Flavor extra specs the aggregate filter matches: scoped ones, and unscoped plain keys."""
    out = {}
    for key, value in extra_specs.items():
        if key.startswith("aggregate_instance_extra_specs:"):
            out[key.split(":", 1)[1]] = value
        elif ":" not in key:
            out[key] = value
    return out


class SchedulerEndpoint:
    def __init__(self, scheduler: Scheduler):
        self._s = scheduler

    async def schedule(self, instance_ids: list[str], spec: dict) -> None:
        await self._s.schedule(instance_ids, spec)

    async def select_destination(self, spec: dict, instance_id: str | None = None) -> dict:
        """Pick and claim a host for a resize/migration/evacuation; the reason when none fits."""
        req = await self._s.build_request(spec, instance_id)
        try:
            host = await self._s.place(req)
        except NoValidHost as exc:
            return {"host": None, "reason": str(exc)}
        return {"host": host}

    async def refresh(self) -> None:
        await self._s.refresh()
