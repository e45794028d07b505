"""Block storage logic on the API side: records, state changes, quotas, placement, agent calls.

State changes are claimed with ``UPDATE ... WHERE status IN (...)`` and a rowcount check, so two
requests racing on one volume cannot both win. Data work is cast to the agent of the volume's
host (``volume.<host>``); only connection set-up is a call, because compute needs its answer.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa

from stratus.common.bus import BusError, RemoteError
from stratus.common.context import RequestContext
from stratus.common.db import new_uuid, utcnow
from stratus.common.errors import ApiError, BadRequest, NotFound, PayloadTooLarge
from stratus.volume import messages
from stratus.volume import models as m
from stratus.volume.agent import BINARY, backend_host, topic

log = logging.getLogger("stratus.volume.manager")

DEFAULT_TYPE = "__DEFAULT__"
QUOTA_RESOURCES = ("volumes", "snapshots", "gigabytes", "backups", "backup_gigabytes", "per_volume_gigabytes",
                   "groups")
PER_TYPE = ("volumes", "snapshots", "gigabytes")


class VolumeManager:
    def __init__(self, db, bus, settings: dict, client=None):
        self.db = db
        self.bus = bus
        self.settings = settings
        self.client = client

    # -- generic record access ---------------------------------------------------------------

    async def get(self, model, ident: str, ctx: RequestContext | None = None, *, kind: str = "resource"):
        async with self.db.reader() as s:
            row = await s.get(model, ident)
        if row is None or (ctx is not None and not ctx.is_admin and getattr(row, "project_id", None) not in
                           (None, ctx.project_id)):
            raise NotFound(f"{kind.capitalize()} {ident} could not be found.")
        return row

    async def claim(self, model, ident: str, allowed: tuple[str, ...], values: dict, *, what: str) -> None:
        """Move a record out of one of the ``allowed`` states, or a 400 naming the state it is in."""
        if hasattr(model, "updated_at"):
            values = {**values, "updated_at": utcnow()}
        async with self.db.session() as s:
            res = await s.execute(sa.update(model).where(model.id == ident, model.status.in_(allowed)).values(**values))
            if res.rowcount == 1:
                return
            row = await s.get(model, ident)
        if row is None:
            raise NotFound(f"{what} {ident} could not be found.")
        raise BadRequest(f"Invalid {what.lower()}: {what} status must be {' or '.join(allowed)} to do this, "
                         f"but it is {row.status}.")

    async def update(self, model, ident: str, **values) -> None:
        if hasattr(model, "updated_at"):
            values.setdefault("updated_at", utcnow())
        async with self.db.session() as s:
            await s.execute(sa.update(model).where(model.id == ident).values(**values))

    # -- start-up ----------------------------------------------------------------------------

    async def ensure_default_type(self) -> m.VolumeType:
        name = self.settings["default_volume_type"]
        async with self.db.session() as s:
            row = (await s.execute(sa.select(m.VolumeType).where(m.VolumeType.name == name))).scalar_one_or_none()
            if row is None:
                row = m.VolumeType(id=new_uuid(), name=name, description="Default Volume Type", is_public=True,
                                   extra_specs={})
                s.add(row)
        return row

    # -- placement ---------------------------------------------------------------------------

    def service_up(self, svc: m.Service) -> bool:
        if svc.updated_at is None:
            return False
        return (utcnow() - svc.updated_at).total_seconds() < self.settings["service_down_time"]

    async def services(self) -> list[m.Service]:
        async with self.db.reader() as s:
            return list((await s.execute(sa.select(m.Service).order_by(m.Service.id))).scalars().all())

    async def zones(self) -> list[tuple[str, bool]]:
        zones: dict[str, bool] = {}
        for svc in await self.services():
            zones[svc.availability_zone] = zones.get(svc.availability_zone, False) or (
                self.service_up(svc) and not svc.disabled)
        if not zones:
            zones[self.settings["availability_zone"]] = False
        return sorted(zones.items())

    async def pick_host(self, zone: str | None, size_gb: int) -> str:
        """The up, enabled agent in the zone with the most free space."""
        candidates = [svc for svc in await self.services()
                      if svc.binary == BINARY and not svc.disabled and self.service_up(svc)
                      and (zone is None or svc.availability_zone == zone)]
        if not candidates:
            where = f" in availability zone {zone}" if zone else ""
            raise NoValidHost(f"No valid host was found: no volume agent is up{where}.")
        roomy = [svc for svc in candidates if (svc.capabilities or {}).get("free_gb", 0) >= size_gb]
        if not roomy:
            raise NoValidHost(f"No valid host was found: no volume agent has {size_gb} GiB free.")
        best = max(roomy, key=lambda svc: (svc.capabilities or {}).get("free_gb", 0))
        return backend_host(best.host, (best.capabilities or {}).get("driver", "file"))

    @staticmethod
    def agent_topic(volume: m.Volume) -> str:
        if not volume.host:
            raise BadRequest(f"Volume {volume.id} has no storage host (it never left 'creating' or failed early).")
        return topic(volume.host.split("@")[0])

    async def cast(self, volume: m.Volume, method: str, **kwargs) -> None:
        try:
            await self.bus.cast(self.agent_topic(volume), method, **kwargs)
        except BusError as exc:
            raise ApiError(f"The volume agent of {volume.host} is not reachable: {exc}", status=503) from None

    async def call(self, volume: m.Volume, method: str, **kwargs) -> Any:
        try:
            return await self.bus.call(self.agent_topic(volume), method, timeout=120, **kwargs)
        except RemoteError as exc:
            raise BadRequest(f"The storage host could not {method.replace('_', ' ')}: {exc.message}") from None
        except BusError as exc:
            raise ApiError(f"The volume agent of {volume.host} is not reachable: {exc}", status=503) from None

    # -- volume types ------------------------------------------------------------------------

    async def find_type(self, name_or_id: str | None, ctx: RequestContext | None = None) -> m.VolumeType:
        if not name_or_id:
            return await self.ensure_default_type()
        async with self.db.reader() as s:
            row = await s.get(m.VolumeType, name_or_id)
            if row is None:
                row = (await s.execute(sa.select(m.VolumeType).where(m.VolumeType.name == name_or_id))).scalar_one_or_none()
        if row is None or (ctx is not None and not row.is_public and not ctx.is_admin
                           and ctx.project_id not in (row.projects or [])):
            raise NotFound(f"Volume type {name_or_id} could not be found.")
        return row

    async def type_in_use(self, type_id: str) -> bool:
        async with self.db.reader() as s:
            n = await s.scalar(sa.select(sa.func.count()).select_from(m.Volume).where(m.Volume.volume_type_id == type_id))
        return bool(n)

    # -- quotas ------------------------------------------------------------------------------

    async def quota_limits(self, project_id: str) -> dict[str, int]:
        limits = {r: self.settings[f"quota_{r}"] for r in QUOTA_RESOURCES}
        async with self.db.reader() as s:
            types = (await s.execute(sa.select(m.VolumeType.name))).scalars().all()
            rows = (await s.execute(sa.select(m.Quota).where(m.Quota.project_id == project_id))).scalars().all()
        for t in types:
            for r in PER_TYPE:
                limits[f"{r}_{t}"] = -1
        for row in rows:
            limits[row.resource] = row.hard_limit
        return limits

    async def quota_defaults(self) -> dict[str, int]:
        limits = {r: self.settings[f"quota_{r}"] for r in QUOTA_RESOURCES}
        async with self.db.reader() as s:
            types = (await s.execute(sa.select(m.VolumeType.name))).scalars().all()
        for t in types:
            for r in PER_TYPE:
                limits[f"{r}_{t}"] = -1
        return limits

    async def set_quotas(self, project_id: str, values: dict[str, int]) -> None:
        async with self.db.session() as s:
            for resource, limit in values.items():
                row = await s.get(m.Quota, (project_id, resource))
                if row is None:
                    s.add(m.Quota(project_id=project_id, resource=resource, hard_limit=limit))
                else:
                    row.hard_limit = limit

    async def delete_quotas(self, project_id: str) -> None:
        async with self.db.session() as s:
            await s.execute(sa.delete(m.Quota).where(m.Quota.project_id == project_id))

    async def usage(self, project_id: str) -> dict[str, int]:
        async with self.db.reader() as s:
            vols = (await s.execute(sa.select(m.Volume.size, m.Volume.volume_type_id).where(
                m.Volume.project_id == project_id))).all()
            snaps = (await s.execute(sa.select(m.Snapshot.size, m.Volume.volume_type_id).join(
                m.Volume, m.Volume.id == m.Snapshot.volume_id, isouter=True).where(
                m.Snapshot.project_id == project_id))).all()
            backups = (await s.execute(sa.select(m.Backup.size).where(m.Backup.project_id == project_id))).scalars().all()
            types = {t.id: t.name for t in (await s.execute(sa.select(m.VolumeType))).scalars().all()}
        used = {"volumes": len(vols), "gigabytes": sum(v.size for v in vols) + sum(x.size for x in snaps),
                "snapshots": len(snaps), "backups": len(backups), "backup_gigabytes": sum(backups),
                "per_volume_gigabytes": 0, "groups": 0}
        for name in types.values():
            for r in PER_TYPE:
                used[f"{r}_{name}"] = 0
        for v in vols:
            tname = types.get(v.volume_type_id)
            if tname:
                used[f"volumes_{tname}"] += 1
                used[f"gigabytes_{tname}"] += v.size
        for x in snaps:
            tname = types.get(x.volume_type_id)
            if tname:
                used[f"snapshots_{tname}"] += 1
                used[f"gigabytes_{tname}"] += x.size
        return used

    async def check_quota(self, project_id: str, deltas: dict[str, int]) -> None:
        """413 (overLimit) when adding ``deltas`` would pass a limit, naming which and by how much."""
        limits = await self.quota_limits(project_id)
        if "gigabytes" in deltas:
            per = limits.get("per_volume_gigabytes", -1)
            size = deltas.get("size", deltas["gigabytes"])
            if per >= 0 and size > per:
                raise PayloadTooLarge(f"VolumeSizeExceedsLimit: Requested volume size {size}G is larger than "
                                      f"maximum allowed limit {per}G.")
        used = await self.usage(project_id)
        for resource, delta in deltas.items():
            if resource == "size" or delta <= 0:
                continue
            limit = limits.get(resource, -1)
            if limit < 0:
                continue
            if used.get(resource, 0) + delta > limit:
                if resource.startswith("gigabytes"):
                    raise PayloadTooLarge(
                        f"VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed {resource} "
                        f"quota. Requested {delta}G, quota is {limit}G and {used.get(resource, 0)}G has been consumed.")
                raise PayloadTooLarge(f"Maximum number of {resource} allowed ({limit}) exceeded for quota "
                                      f"'{resource}'.")

    # -- volumes -----------------------------------------------------------------------------

    async def create_volume(self, ctx: RequestContext, *, size: int, name: str | None, description: str | None,
                            vtype: m.VolumeType, zone: str | None, metadata: dict, snapshot: m.Snapshot | None,
                            source: m.Volume | None, image_id: str | None, backup: m.Backup | None,
                            multiattach: bool) -> m.Volume:
        await self.check_quota(ctx.project_id, {"volumes": 1, "gigabytes": size, "size": size,
                                                f"volumes_{vtype.name}": 1, f"gigabytes_{vtype.name}": size})
        origin = source or (await self.get(m.Volume, snapshot.volume_id) if snapshot else None)
        vol = m.Volume(id=new_uuid(), project_id=ctx.project_id, user_id=ctx.user_id, name=name,
                       description=description, size=size, status="creating", availability_zone=zone or
                       self.settings["availability_zone"], volume_type_id=vtype.id, metadata_=metadata,
                       image_metadata=dict(origin.image_metadata or {}) if origin else {},
                       bootable=bool(origin.bootable) if origin else False, multiattach=multiattach,
                       snapshot_id=snapshot.id if snapshot else None, source_volid=source.id if source else None,
                       image_id=image_id, backup_id=backup.id if backup else None)
        try:
            # Data that exists already lives where it is: clones stay on their source's host.
            vol.host = origin.host if origin else await self.pick_host(zone, size)
        except NoValidHost as exc:
            vol.status = "error"
            vol.error_reason = str(exc)
        if backup is not None and vol.status == "creating":
            await self.claim(m.Backup, backup.id, ("available",), {"status": "restoring",
                                                                   "restore_volume_id": vol.id}, what="Backup")
        async with self.db.session() as s:
            s.add(vol)
        if vol.status == "creating":
            try:
                await self.cast(vol, "create_volume", volume_id=vol.id)
            except ApiError as exc:
                await self.update(m.Volume, vol.id, status="error", error_reason=exc.message)
                vol.status, vol.error_reason = "error", exc.message
        if vol.status == "error":
            await messages.record(self.db, project_id=vol.project_id, resource_type="VOLUME", resource_uuid=vol.id,
                                  action="create volume", detail=vol.error_reason or "unknown")
        return vol

    async def list_volumes(self, ctx: RequestContext, *, all_projects: bool, project_id: str | None,
                           filters: dict[str, Any], like: dict[str, str], metadata: dict,
                           time_filters: list[tuple[str, str, dt.datetime]], sort: list[tuple[str, str]],
                           limit: int | None, marker: str | None, offset: int) -> list[m.Volume]:
        q = sa.select(m.Volume)
        if not (ctx.is_admin and all_projects):
            q = q.where(m.Volume.project_id == ctx.project_id)
        elif project_id:
            q = q.where(m.Volume.project_id == project_id)
        for key, value in filters.items():
            q = q.where(getattr(m.Volume, key) == value)
        for key, value in like.items():
            q = q.where(getattr(m.Volume, key).like(f"%{value}%"))
        q = _apply_time_filters(q, m.Volume, time_filters)
        q = _apply_sort(q, m.Volume, sort)
        async with self.db.reader() as s:
            rows = list((await s.execute(q)).scalars().all())
        if metadata:
            rows = [r for r in rows if all((r.metadata_ or {}).get(k) == v for k, v in metadata.items())]
        return _page(rows, marker, limit, offset, "volume")

    async def attachments_of(self, volume_ids: list[str]) -> dict[str, list[m.Attachment]]:
        if not volume_ids:
            return {}
        async with self.db.reader() as s:
            rows = (await s.execute(sa.select(m.Attachment).where(m.Attachment.volume_id.in_(volume_ids))
                                    .order_by(m.Attachment.created_at))).scalars().all()
        out: dict[str, list[m.Attachment]] = {}
        for a in rows:
            out.setdefault(a.volume_id, []).append(a)
        return out

    async def types_by_id(self) -> dict[str, m.VolumeType]:
        async with self.db.reader() as s:
            return {t.id: t for t in (await s.execute(sa.select(m.VolumeType))).scalars().all()}

    async def delete_volume(self, ctx: RequestContext, vol: m.Volume, *, cascade: bool, force: bool) -> None:
        async with self.db.reader() as s:
            snaps = (await s.execute(sa.select(m.Snapshot).where(m.Snapshot.volume_id == vol.id))).scalars().all()
            attached = await s.scalar(sa.select(sa.func.count()).select_from(m.Attachment).where(
                m.Attachment.volume_id == vol.id, m.Attachment.status != "detached"))
        if attached and not force:
            raise BadRequest(f"Invalid volume: Volume {vol.id} status must be available or error or error_restoring "
                             f"or error_extending or error_managing and must not be migrating, attached, belong to "
                             f"a group, have snapshots, awaiting a transfer, or be disassociated from snapshots "
                             f"after volume transfer; it is {vol.status} and attached.")
        if snaps and not cascade:
            raise BadRequest(f"Invalid volume: Volume {vol.id} still has {len(snaps)} dependent snapshot(s); delete "
                             f"them first or pass cascade=true.")
        if snaps and any(sn.status not in ("available", "error") for sn in snaps):
            raise BadRequest("Invalid volume: a snapshot of this volume is busy; wait until it is available.")
        allowed = ("available", "error", "error_restoring", "error_extending", "error_deleting", "error_managing")
        if force:
            allowed += ("in-use", "attaching", "detaching", "creating", "reserved", "deleting", "maintenance")
        await self.claim(m.Volume, vol.id, allowed, {"status": "deleting"}, what="Volume")
        if not vol.host:
            async with self.db.session() as s:
                await s.execute(sa.delete(m.Volume).where(m.Volume.id == vol.id))
            return
        for sn in snaps:
            await self.update(m.Snapshot, sn.id, status="deleting")
            await self.cast(vol, "delete_snapshot", snapshot_id=sn.id)
        try:
            await self.cast(vol, "delete_volume", volume_id=vol.id)
        except ApiError:
            await self.update(m.Volume, vol.id, status="error_deleting",
                              error_reason="the volume agent was not reachable for the delete")
            raise

    async def extend(self, ctx: RequestContext, vol: m.Volume, new_size: int, *, allow_in_use: bool) -> None:
        if new_size <= vol.size:
            raise BadRequest(f"Invalid input received: New size for extend must be greater than current size. "
                             f"(current: {vol.size}, extended: {new_size}).")
        if new_size > self.settings["max_volume_size_gb"]:
            raise BadRequest(f"Invalid input received: the new size {new_size} GiB is larger than this cloud's "
                             f"largest volume ({self.settings['max_volume_size_gb']} GiB).")
        vtype = (await self.types_by_id()).get(vol.volume_type_id)
        delta = new_size - vol.size
        deltas = {"gigabytes": delta, "size": new_size}
        if vtype:
            deltas[f"gigabytes_{vtype.name}"] = delta
        await self.check_quota(vol.project_id, deltas)
        allowed = ("available", "in-use") if allow_in_use else ("available",)
        await self.claim(m.Volume, vol.id, allowed, {"status": "extending"}, what="Volume")
        await self.cast(vol, "extend_volume", volume_id=vol.id, new_size=new_size)

    # -- attachments -------------------------------------------------------------------------

    async def reserve(self, vol: m.Volume, *, instance_uuid: str | None, mode: str) -> m.Attachment:
        if vol.multiattach:
            allowed = ("available", "in-use", "reserved")
        else:
            allowed = ("available",)
        if mode == "rw" and vol.readonly:
            raise BadRequest(f"Invalid volume: volume {vol.id} is read-only; attach it with mode 'ro'.")
        await self.claim(m.Volume, vol.id, allowed, {"status": "reserved"}, what="Volume")
        att = m.Attachment(id=new_uuid(), volume_id=vol.id, project_id=vol.project_id, instance_uuid=instance_uuid,
                           status="reserved", attach_mode=mode)
        async with self.db.session() as s:
            s.add(att)
        return att

    async def connect(self, vol: m.Volume, att: m.Attachment, connector: dict) -> dict:
        """Start the export for an attachment and record the connector; returns connection_info."""
        if not isinstance(connector, dict):
            raise BadRequest("'connector' must be an object with at least 'host' (the compute host).")
        mountpoint = connector.get("mountpoint")
        if mountpoint is not None and not isinstance(mountpoint, str):
            raise BadRequest("'connector.mountpoint' must be a device path such as /dev/vdb.")
        if att.connection_info and (att.connector or {}).get("host") == connector.get("host"):
            # The same host again, typically to say which device the guest got (Nova sends the
            # mountpoint once it knows it): the export stands, only the record changes.
            await self.update(m.Attachment, att.id, connector=connector, mountpoint=mountpoint or att.mountpoint)
            return att.connection_info
        try:
            info = await self.call(vol, "initialize_connection", attachment_id=att.id, connector=connector)
        except ApiError:
            await self.update(m.Attachment, att.id, status="error_attaching")
            raise
        await self.update(m.Attachment, att.id, connector=connector, attached_host=connector.get("host"),
                          status="attaching", connection_info=info, mountpoint=mountpoint)
        await self.update(m.Volume, vol.id, status="attaching")
        return info

    async def complete(self, att: m.Attachment, *, mountpoint: str | None = None,
                       instance_uuid: str | None = None, host: str | None = None) -> None:
        values = {"status": "attached", "attached_at": utcnow()}
        if mountpoint:
            values["mountpoint"] = mountpoint
        if instance_uuid:
            values["instance_uuid"] = instance_uuid
        if host:
            values["attached_host"] = host
        await self.update(m.Attachment, att.id, **values)
        await self.update(m.Volume, att.volume_id, status="in-use", attach_status="attached")

    async def detach(self, vol: m.Volume, att: m.Attachment) -> None:
        """Stop the export, drop the attachment, settle the volume's status."""
        if att.export or att.connection_info:
            await self.call(vol, "terminate_connection", attachment_id=att.id)
        async with self.db.session() as s:
            await s.execute(sa.delete(m.Attachment).where(m.Attachment.id == att.id))
            remaining = (await s.execute(sa.select(m.Attachment.status).where(
                m.Attachment.volume_id == vol.id))).scalars().all()
            if any(st == "attached" for st in remaining):
                status, attach_status = "in-use", "attached"
            elif remaining:
                status, attach_status = "reserved", "detached"
            else:
                status, attach_status = "available", "detached"
            await s.execute(sa.update(m.Volume).where(m.Volume.id == vol.id, m.Volume.status != "deleting").values(
                status=status, attach_status=attach_status, updated_at=utcnow()))

    async def list_attachments(self, ctx: RequestContext, *, all_projects: bool, filters: dict) -> list[m.Attachment]:
        q = sa.select(m.Attachment).order_by(m.Attachment.created_at)
        if not (ctx.is_admin and all_projects):
            q = q.where(m.Attachment.project_id == ctx.project_id)
        for key, value in filters.items():
            q = q.where(getattr(m.Attachment, key) == value)
        async with self.db.reader() as s:
            return list((await s.execute(q)).scalars().all())

    # -- snapshots and backups ---------------------------------------------------------------

    async def create_snapshot(self, ctx: RequestContext, vol: m.Volume, *, name, description, metadata,
                              allow_in_use: bool) -> m.Snapshot:
        allowed = ("available", "in-use") if allow_in_use else ("available",)
        if vol.status not in allowed:
            raise BadRequest(f"Invalid volume: Volume {vol.id} status must be {' or '.join(allowed)}"
                             f"{' (pass force=true for an in-use volume)' if vol.status == 'in-use' else ''}, "
                             f"but it is {vol.status}.")
        vtype = (await self.types_by_id()).get(vol.volume_type_id)
        deltas = {"snapshots": 1, "gigabytes": vol.size}
        if vtype:
            deltas.update({f"snapshots_{vtype.name}": 1, f"gigabytes_{vtype.name}": vol.size})
        await self.check_quota(ctx.project_id, deltas)
        snap = m.Snapshot(id=new_uuid(), project_id=ctx.project_id, user_id=ctx.user_id, volume_id=vol.id,
                          name=name, description=description, size=vol.size, status="creating", metadata_=metadata)
        async with self.db.session() as s:
            s.add(snap)
        await self.cast(vol, "create_snapshot", snapshot_id=snap.id)
        return snap

    async def list_snapshots(self, ctx, *, all_projects: bool, filters: dict, sort, limit, marker, offset,
                             metadata: dict | None = None):
        q = sa.select(m.Snapshot)
        if not (ctx.is_admin and all_projects):
            q = q.where(m.Snapshot.project_id == ctx.project_id)
        for key, value in filters.items():
            q = q.where(getattr(m.Snapshot, key) == value)
        q = _apply_sort(q, m.Snapshot, sort)
        async with self.db.reader() as s:
            rows = list((await s.execute(q)).scalars().all())
        if metadata:
            rows = [r for r in rows if all((r.metadata_ or {}).get(k) == v for k, v in metadata.items())]
        return _page(rows, marker, limit, offset, "snapshot")

    async def object_store_available(self) -> bool:
        if self.client is None:
            return False
        try:
            try:
                await self.client.credentials.endpoint("object-store")
            except LookupError:
                # The catalog is read at login: log in again in case the object store was added since.
                await self.client.credentials.token(force=True)
                await self.client.credentials.endpoint("object-store")
        except LookupError:
            return False
        except Exception as exc:  # identity unreachable: say so rather than guess
            raise ApiError(f"cannot read the service catalog: {exc}", status=503) from None
        return True

    async def list_backups(self, ctx, *, all_projects: bool, filters: dict, sort, limit, marker, offset):
        q = sa.select(m.Backup)
        if not (ctx.is_admin and all_projects):
            q = q.where(m.Backup.project_id == ctx.project_id)
        for key, value in filters.items():
            q = q.where(getattr(m.Backup, key) == value)
        q = _apply_sort(q, m.Backup, sort)
        async with self.db.reader() as s:
            rows = list((await s.execute(q)).scalars().all())
        return _page(rows, marker, limit, offset, "backup")

    async def backup_children(self, backup_id: str) -> int:
        async with self.db.reader() as s:
            return await s.scalar(sa.select(sa.func.count()).select_from(m.Backup).where(m.Backup.parent_id == backup_id))

    async def latest_backup(self, volume_id: str) -> m.Backup | None:
        async with self.db.reader() as s:
            return (await s.execute(sa.select(m.Backup).where(
                m.Backup.volume_id == volume_id, m.Backup.status == "available").order_by(
                m.Backup.data_timestamp.desc()).limit(1))).scalar_one_or_none()


class NoValidHost(Exception):
    pass


SORTABLE = {"id", "name", "status", "size", "created_at", "updated_at", "availability_zone", "bootable",
            "volume_id", "project_id"}


def _apply_sort(q, model, sort: list[tuple[str, str]]):
    if not sort:
        sort = [("created_at", "desc")]
    for key, direction in sort:
        if key not in SORTABLE or not hasattr(model, key):
            raise BadRequest(f"Invalid input received: sort key {key!r} is not supported "
                             f"(use one of {', '.join(sorted(k for k in SORTABLE if hasattr(model, k)))}).")
        col = getattr(model, key)
        q = q.order_by(col.desc() if direction == "desc" else col.asc())
    return q.order_by(model.id.asc())


def _apply_time_filters(q, model, filters):
    ops = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__", "eq": "__eq__", "neq": "__ne__"}
    for key, op, when in filters:
        q = q.where(getattr(getattr(model, key), ops[op])(when))
    return q


def _page(rows: list, marker: str | None, limit: int | None, offset: int, kind: str) -> list:
    if marker:
        ids = [r.id for r in rows]
        if marker not in ids:
            raise BadRequest(f"Invalid input received: marker {marker} of {kind}s could not be found.")
        rows = rows[ids.index(marker) + 1:]
    if offset:
        rows = rows[offset:]
    if limit is not None:
        rows = rows[:limit]
    return rows
