"""The compute agent: one per host, serving ``compute.<host>`` on the bus and running the virt driver.

The API and the scheduler decide; the agent does: it builds the driver's InstanceSpec from the
instance row, fetches images (verified, cached under the state directory), binds ports through
the network service, calls the driver, and writes the outcome (states, fault, action event) in
one transaction. It also reports its host's resources with a heartbeat and reconciles the power
state recorded in the database with what the hypervisor says.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import traceback
import uuid as uuidlib
import sqlalchemy as sa

from stratus.common.db import utcnow
from stratus.common.errors import ApiError
from stratus.compute import claims
from stratus.compute import models as m
from stratus.compute.drivers.base import (DriverError, InstanceNotFound, InstanceSpec, PowerState,
                                          VirtDriver)
from stratus.compute.images import ImageCache, image_ref
from stratus.compute import volumes as volumes_mod
from stratus.compute.networking import NetworkAPI

log = logging.getLogger("stratus.compute.agent")

NODE_NAMESPACE = uuidlib.UUID("5f7c1f0e-8a43-4c39-9d0b-2f3f0b8a7c11")


class AgentStartError(Exception):
    pass


def load_driver(state, index: int = 0) -> VirtDriver:
    s = state.settings
    if s.driver == "fake":
        from stratus.compute.drivers.fake import FakeDriver

        return FakeDriver(vcpus=s.fake_vcpus, memory_mb=s.fake_memory_mb, local_gb=s.fake_local_gb,
                          latency=s.fake_latency, fetch_images=s.fake_hosts <= 8)
    try:
        module = importlib.import_module("stratus.compute.drivers.libvirt")
    except ImportError as exc:
        raise AgentStartError(f"compute.driver is 'libvirt' but its module cannot be imported ({exc}); install "
                              "libvirt and its Python binding, or set compute.driver = 'fake' for a "
                              "simulated host") from None
    cls = getattr(module, "LibvirtDriver")
    try:
        if hasattr(cls, "from_config"):
            return cls.from_config(state.runtime.config)
        return cls(state_dir=state.runtime.config.state_dir)
    except DriverError as exc:
        raise AgentStartError(f"the libvirt driver refused its configuration: {exc}") from None


def instance_name(instance_id: str) -> str:
    return f"instance-{instance_id[:8]}"


def build_spec(inst: m.Instance, flavor: dict | None = None, vifs=None) -> InstanceSpec:
    flavor = flavor or inst.flavor or {}
    meta = inst.image_properties or {}
    image = image_ref(meta) if meta.get("id") else None
    user_data = None
    if inst.user_data:
        import base64

        user_data = base64.b64decode(inst.user_data)
    return InstanceSpec(uuid=inst.id, name=instance_name(inst.id), hostname=inst.hostname or inst.name,
                        vcpus=flavor.get("vcpus", inst.vcpus), memory_mb=flavor.get("ram", inst.memory_mb),
                        root_gb=flavor.get("disk", inst.root_gb), image=image,
                        ephemeral_gb=flavor.get("ephemeral", 0) or 0, swap_mb=flavor.get("swap", 0) or 0,
                        project_id=inst.project_id, user_id=inst.user_id,
                        availability_zone=inst.availability_zone or "nova", launch_index=inst.launch_index,
                        metadata=dict(inst.metadata_ or {}), user_data=user_data, key_name=inst.key_name,
                        public_key=inst.key_data, config_drive=inst.config_drive, vifs=list(vifs or []),
                        flavor_extra_specs=dict(flavor.get("extra_specs") or {}))


# Final states of each action on success: (vm_state, power_state); None keeps the current value.
OUTCOME = {
    "reboot": ("active", PowerState.RUNNING),
    "stop": ("stopped", PowerState.SHUTDOWN),
    "start": ("active", PowerState.RUNNING),
    "pause": ("paused", PowerState.PAUSED),
    "unpause": ("active", PowerState.RUNNING),
    "suspend": ("suspended", PowerState.SUSPENDED),
    "resume": ("active", PowerState.RUNNING),
    "rescue": ("rescued", PowerState.RUNNING),
    "unrescue": ("active", PowerState.RUNNING),
    "rebuild": ("active", PowerState.RUNNING),
    "evacuate": ("active", PowerState.RUNNING),
    "snapshot": (None, None),
}


class ComputeAgent:
    """The agent of one host (a real one, or one simulated host of the fake driver)."""

    def __init__(self, state, host: str, driver: VirtDriver, images: ImageCache, network: NetworkAPI):
        self.state = state
        self.db = state.db
        self.host = host
        self.driver = driver
        self.images = images
        self.network = network
        self.sub = None
        self.totals = None

    async def register(self) -> None:
        await self.driver.init_host(self.host)
        res = await self.driver.host_resources()
        self.totals = res
        s = self.state.settings
        now = utcnow()
        node_id = str(uuidlib.uuid5(NODE_NAMESPACE, self.host))
        async with self.db.session() as ses:
            node = await ses.scalar(sa.select(m.ComputeNode).where(m.ComputeNode.host == self.host))
            if node is None:
                node = m.ComputeNode(id=node_id, host=self.host, details={})
                ses.add(node)
            node.hypervisor_hostname = res.hypervisor_hostname or self.host
            node.hypervisor_type = res.hypervisor_type
            node.hypervisor_version = res.hypervisor_version
            node.cpu_arch = res.cpu_arch
            node.vcpus, node.memory_mb, node.local_gb = res.vcpus, res.memory_mb, res.local_gb
            node.cpu_allocation_ratio = s.cpu_allocation_ratio
            node.ram_allocation_ratio = s.ram_allocation_ratio
            node.disk_allocation_ratio = s.disk_allocation_ratio
            node.details = dict(res.details or {})
            node.heartbeat_at = now
            node.updated_at = now
            svc = await ses.scalar(sa.select(m.Service).where(m.Service.host == self.host,
                                                              m.Service.binary == "nova-compute"))
            if svc is None:
                svc = m.Service(id=str(uuidlib.uuid5(NODE_NAMESPACE, "svc/" + self.host)), host=self.host,
                                binary="nova-compute", topic="compute", zone=s.availability_zone)
                ses.add(svc)
            svc.last_seen_up = now
            svc.updated_at = now
            svc.forced_down = False
        await self._recount()

    async def _recount(self) -> None:
        """Claims are the truth of what is used; re-derive them from this host's instances at start."""
        async with self.db.session() as ses:
            rows = (await ses.execute(sa.select(m.Instance).where(
                m.Instance.host == self.host, m.Instance.deleted.is_(False)))).scalars().all()
            extra = (await ses.execute(sa.select(m.Instance).where(
                m.Instance.migration_host == self.host, m.Instance.deleted.is_(False),
                m.Instance.vm_state == "resized"))).scalars().all()
            vcpus = ram = disk = vms = 0
            for inst in rows:
                c, r, d = claims.resources_of(inst.flavor or {})
                vcpus, ram, disk, vms = vcpus + c, ram + r, disk + d, vms + 1
            for inst in extra:
                if inst.old_flavor and inst.migration_host:
                    c, r, d = claims.resources_of(inst.old_flavor)
                    vcpus, ram, disk = vcpus + c, ram + r, disk + d
            await ses.execute(sa.update(m.ComputeNode).where(m.ComputeNode.host == self.host).values(
                vcpus_used=vcpus, memory_mb_used=ram, local_gb_used=disk, running_vms=vms, updated_at=utcnow()))

    async def serve(self) -> None:
        self.sub = await self.state.bus.serve(f"compute.{self.host}", AgentEndpoint(self))

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.stop()
        await self.driver.close()

    # -- helpers ---------------------------------------------------------------------------------

    async def _load(self, instance_id: str) -> m.Instance | None:
        async with self.db.reader() as s:
            return await s.get(m.Instance, instance_id)

    async def _finish(self, instance_id: str, values: dict, *, action_id: int | None, event: str,
                      started, error: str | None = None, tb: str | None = None) -> bool:
        """Write the outcome and the action event in one transaction; False if the server is gone."""
        now = utcnow()
        values = {**values, "updated_at": now}
        async with self.db.session() as s:
            q = sa.update(m.Instance).where(m.Instance.id == instance_id, m.Instance.deleted.is_(False))
            updated = (await s.execute(q.values(**values))).rowcount == 1
            if action_id:
                s.add(m.InstanceActionEvent(action_id=action_id, event=event, host=self.host,
                                            result="Error" if error else "Success", traceback=tb,
                                            details=error, start_time=started, finish_time=now))
                await s.execute(sa.update(m.InstanceAction).where(m.InstanceAction.id == action_id)
                                .values(updated_at=now, message="Error" if error else None))
        return updated

    def _fault(self, message: str, code: int = 500) -> dict:
        return {"code": code, "message": message, "created": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"), "details": ""}

    # -- build -----------------------------------------------------------------------------------

    async def build_instance(self, instance_id: str, action_id: int | None = None) -> None:
        inst = await self._load(instance_id)
        if inst is None or inst.deleted or inst.host != self.host:
            return
        started = utcnow()
        if action_id is None:
            action_id = await self._action_id(instance_id, "create")
        network_info: list[dict] = []
        try:
            vifs = []
            requested = inst.requested_networks or []
            if requested:
                network_info, vifs = await self.network.allocate(
                    inst.id, inst.project_id, self.host, inst.availability_zone or "nova", requested,
                    list(inst.security_groups or []))
            spec = build_spec(inst, vifs=vifs)
            spec.volumes, volume_records = await volumes_mod.prepare_boot_volumes(self, inst)
            try:
                await self.driver.spawn(spec, self.images.fetch)
                await volumes_mod.complete_boot_volumes(self, inst, volume_records)
            except Exception:
                await volumes_mod.undo_boot_volumes(self, inst, volume_records)
                raise
            if volume_records:
                async with self.db.session() as s:
                    row = (await s.execute(sa.select(m.Instance).where(m.Instance.id == instance_id)
                                           .with_for_update())).scalar_one_or_none()
                    if row is not None:
                        row.block_devices = [b for b in row.block_devices or [] if not (
                            isinstance(b, dict) and b.get("destination_type") == "volume")] + volume_records
        except Exception as exc:
            message = str(exc) if isinstance(exc, (DriverError, ApiError)) else f"{type(exc).__name__}: {exc}"
            log.warning("building %s on %s failed: %s", instance_id, self.host, message)
            await self.network.deallocate(network_info)
            # The resources stay claimed while the server exists in ERROR (as nova's do).
            await self._finish(instance_id, {"vm_state": "error", "task_state": None, "network_info": [],
                                             "fault": self._fault(message)},
                               action_id=action_id, event="compute_build_and_run_instance", started=started,
                               error=message, tb=traceback.format_exc(limit=5))
            return
        still_there = await self._finish(
            instance_id, {"vm_state": "active", "task_state": None, "power_state": int(PowerState.RUNNING),
                          "launched_at": utcnow(), "network_info": network_info, "fault": None},
            action_id=action_id, event="compute_build_and_run_instance", started=started)
        if not still_there:
            # Deleted while building: the delete found no guest to destroy; do it now.
            await self.driver.destroy(instance_id)
            await self.network.deallocate(network_info)

    async def _action_id(self, instance_id: str, action: str) -> int | None:
        async with self.db.reader() as s:
            return await s.scalar(sa.select(m.InstanceAction.id).where(
                m.InstanceAction.instance_id == instance_id, m.InstanceAction.action == action)
                .order_by(m.InstanceAction.id.desc()).limit(1))

    # -- actions ---------------------------------------------------------------------------------

    async def run_action(self, instance_id: str, action: str, params: dict, action_id: int | None) -> None:
        inst = await self._load(instance_id)
        if inst is None or inst.deleted:
            return
        started = utcnow()
        event = f"compute_{action}_instance"
        try:
            extra = await getattr(self, f"_do_{action}")(inst, params) or {}
        except Exception as exc:
            message = str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
            log.warning("%s of %s on %s failed: %s", action, instance_id, self.host, message)
            values = {"task_state": None, "fault": self._fault(message)}
            if action in ("rebuild", "evacuate"):
                values["vm_state"] = "error"
            try:
                values["power_state"] = int((await self.driver.get_info(instance_id)).power_state)
            except DriverError:
                values["power_state"] = int(PowerState.NOSTATE)
            await self._finish(instance_id, values, action_id=action_id, event=event, started=started,
                               error=message, tb=traceback.format_exc(limit=5))
            return
        vm_state, power = OUTCOME.get(action, (None, None))
        values = {"task_state": None, **extra}
        if vm_state is not None:
            values.setdefault("vm_state", vm_state)
        if power is not None:
            values.setdefault("power_state", int(power))
        await self._finish(instance_id, values, action_id=action_id, event=event, started=started)

    async def _do_reboot(self, inst, p):
        await self.driver.reboot(inst.id, hard=p.get("type", "SOFT").upper() == "HARD")

    async def _do_stop(self, inst, p):
        await self.driver.power_off(inst.id)

    async def _do_start(self, inst, p):
        await self.driver.power_on(inst.id)

    async def _do_pause(self, inst, p):
        await self.driver.pause(inst.id)

    async def _do_unpause(self, inst, p):
        await self.driver.unpause(inst.id)

    async def _do_suspend(self, inst, p):
        await self.driver.suspend(inst.id)

    async def _do_resume(self, inst, p):
        await self.driver.resume(inst.id)

    async def _do_rescue(self, inst, p):
        spec = build_spec(inst)
        rescue = image_ref(p["rescue_image"]) if p.get("rescue_image") else spec.image
        await self.driver.rescue(spec, rescue, self.images.fetch)

    async def _do_unrescue(self, inst, p):
        await self.driver.unrescue(build_spec(inst))

    async def _do_rebuild(self, inst, p):
        vifs = await self.network.vifs_for(inst.network_info or []) if inst.network_info else []
        await self.driver.rebuild(build_spec(inst, vifs=vifs), self.images.fetch)
        return {"launched_at": utcnow()}

    async def _do_evacuate(self, inst, p):
        """Rebuild on this host a server whose host died (the scheduler already claimed here)."""
        old_info = inst.network_info or []
        network_info, vifs = [], []
        if old_info:
            requested = [{"port_id": i["port_id"], "network_id": i["network_id"]} for i in old_info]
            network_info, vifs = await self.network.allocate(inst.id, inst.project_id, self.host,
                                                             inst.availability_zone or "nova", requested, [])
            for new, old in zip(network_info, old_info):
                new["created"] = old.get("created", True)
        await self.driver.spawn(build_spec(inst, vifs=vifs), self.images.fetch)
        return {"network_info": network_info or old_info}

    async def _do_snapshot(self, inst, p):
        try:
            await self.driver.snapshot(inst.id, p["image_id"], self.images.upload)
        except BaseException:
            await self.images.delete(p["image_id"])
            raise

    async def _do_resize(self, inst, p):
        dest = p["dest_host"]
        new_flavor = p["new_flavor"]
        if dest == self.host:
            await self.driver.resize(build_spec(inst, flavor=new_flavor))
            return {"vm_state": "resized", "power_state": int(PowerState.RUNNING)}
        # To another host: keep the source guest (stopped) for a revert, start the copy there.
        await self.driver.power_off(inst.id)
        await self.state.bus.cast(f"compute.{dest}", "finish_migration", instance_id=inst.id, params=p,
                                  action_id=p.get("action_id"))
        return {"task_state": "resize_migrated", "power_state": int(PowerState.SHUTDOWN)}

    async def finish_migration(self, instance_id: str, params: dict, action_id: int | None) -> None:
        inst = await self._load(instance_id)
        if inst is None or inst.deleted:
            return
        started = utcnow()
        try:
            vifs = await self.network.vifs_for(inst.network_info or []) if inst.network_info else []
            await self.driver.spawn(build_spec(inst, flavor=params["new_flavor"], vifs=vifs), self.images.fetch)
        except Exception as exc:
            message = str(exc)
            await self._finish(instance_id, {"vm_state": "error", "task_state": None,
                                             "fault": self._fault(message)},
                               action_id=action_id, event="compute_finish_resize", started=started, error=message)
            return
        await self._finish(instance_id, {"vm_state": "resized", "task_state": None, "host": self.host,
                                         "node": self.host, "power_state": int(PowerState.RUNNING)},
                           action_id=action_id, event="compute_finish_resize", started=started)

    async def confirm_resize(self, instance_id: str, action_id: int | None) -> None:
        """Runs on the source host: drop what was kept for a revert, give back the old claim."""
        inst = await self._load(instance_id)
        if inst is None or inst.deleted:
            return
        started = utcnow()
        if inst.host == self.host:
            await self.driver.confirm_resize(inst.id)
        else:
            await self.driver.destroy(inst.id)
        c, r, d = claims.resources_of(inst.old_flavor or {})
        async with self.db.session() as s:
            await claims.release(s, self.host, c, r, d, vms=0 if inst.host == self.host else 1)
        vm_state = "stopped" if inst.power_state == int(PowerState.SHUTDOWN) else "active"
        await self._finish(instance_id, {"vm_state": vm_state, "task_state": None, "old_flavor": None,
                                         "migration_host": None},
                           action_id=action_id, event="compute_confirm_resize", started=started)

    async def revert_resize(self, instance_id: str, action_id: int | None) -> None:
        """Runs on the destination host: undo there, give back the new claim, restore the source."""
        inst = await self._load(instance_id)
        if inst is None or inst.deleted:
            return
        started = utcnow()
        c, r, d = claims.resources_of(inst.flavor or {})
        old = inst.old_flavor or inst.flavor
        source = inst.migration_host or self.host
        if source == self.host:
            await self.driver.revert_resize(build_spec(inst, flavor=old))
        else:
            await self.driver.destroy(inst.id)
        async with self.db.session() as s:
            await claims.release(s, self.host, c, r, d, vms=0 if source == self.host else 1)
        values = {"vm_state": "active", "task_state": None, "flavor": old, "old_flavor": None,
                  "migration_host": None, "host": source, "node": source, "power_state": int(PowerState.RUNNING)}
        oc, orr, od = claims.resources_of(old)
        values.update(vcpus=oc, memory_mb=old.get("ram", inst.memory_mb), root_gb=old.get("disk", inst.root_gb))
        if source != self.host:
            await self.state.bus.cast(f"compute.{source}", "power_on_after_revert", instance_id=instance_id)
        await self._finish(instance_id, values, action_id=action_id, event="compute_revert_resize",
                           started=started)

    async def power_on_after_revert(self, instance_id: str) -> None:
        try:
            await self.driver.power_on(instance_id)
        except DriverError as exc:
            log.warning("restarting %s after revert failed: %s", instance_id, exc)

    # -- delete, consoles ------------------------------------------------------------------------

    async def delete_instance(self, instance_id: str, action_id: int | None = None) -> None:
        from stratus.compute.manager import finish_delete

        inst = await self._load(instance_id)
        if inst is None or inst.deleted:
            return
        try:
            await self.driver.destroy(instance_id)
        except DriverError as exc:
            log.warning("destroying %s on %s: %s (deleting the record anyway)", instance_id, self.host, exc)
        await self.network.deallocate(inst.network_info or [])
        await volumes_mod.release_all(self, inst)
        async with self.db.session() as s:
            await finish_delete(s, self.state, instance_id)

    # -- volumes ----------------------------------------------------------------------------------

    async def attach_volume(self, instance_id: str, volume_id: str, device: str | None,
                            delete_on_termination: bool, tag: str | None) -> dict:
        inst = await self._load(instance_id)
        if inst is None or inst.deleted:
            raise InstanceNotFound(f"server {instance_id} is not on host {self.host}")
        if any(isinstance(r, dict) and r.get("volume_id") == volume_id for r in inst.block_devices or []):
            raise ValueError(f"volume {volume_id} is already attached to server {instance_id}")
        record = await volumes_mod.attach(self, inst, volume_id, device, delete_on_termination, tag)
        async with self.db.session() as s:
            row = (await s.execute(sa.select(m.Instance).where(m.Instance.id == instance_id)
                                   .with_for_update())).scalar_one()
            row.block_devices = [*(row.block_devices or []), record]
            row.updated_at = utcnow()
        return record

    async def detach_volume(self, instance_id: str, volume_id: str) -> None:
        inst = await self._load(instance_id)
        if inst is None:
            raise InstanceNotFound(f"server {instance_id} is not on host {self.host}")
        record = next((r for r in inst.block_devices or [] if isinstance(r, dict) and r.get("volume_id") == volume_id
                       and "attachment_id" in r), None)
        if record is None:
            raise ValueError(f"volume {volume_id} is not attached to server {instance_id}")
        await volumes_mod.detach(self, inst, record)
        async with self.db.session() as s:
            row = (await s.execute(sa.select(m.Instance).where(m.Instance.id == instance_id)
                                   .with_for_update())).scalar_one()
            row.block_devices = [r for r in row.block_devices or []
                                 if not (isinstance(r, dict) and r.get("volume_id") == volume_id)]
            row.updated_at = utcnow()

    # -- interfaces -------------------------------------------------------------------------------

    async def attach_interface(self, instance_id: str, entry: dict) -> dict:
        inst = await self._load(instance_id)
        if inst is None or inst.deleted:
            raise InstanceNotFound(f"server {instance_id} is not on host {self.host}")
        network_info, vifs = await self.network.allocate(inst.id, inst.project_id, self.host,
                                                         inst.availability_zone or "nova", [entry],
                                                         list(inst.security_groups or []))
        try:
            await self.driver.attach_interface(inst.id, vifs[0])
        except Exception:
            await self.network.deallocate(network_info)
            raise
        async with self.db.session() as s:
            row = (await s.execute(sa.select(m.Instance).where(m.Instance.id == instance_id)
                                   .with_for_update())).scalar_one()
            row.network_info = [*(row.network_info or []), network_info[0]]
            row.updated_at = utcnow()
        return network_info[0]

    async def detach_interface(self, instance_id: str, port_id: str) -> None:
        inst = await self._load(instance_id)
        if inst is None:
            raise InstanceNotFound(f"server {instance_id} is not on host {self.host}")
        info = next((i for i in inst.network_info or [] if i["port_id"] == port_id), None)
        if info is None:
            raise ValueError(f"port {port_id} is not attached to server {instance_id}")
        try:
            await self.driver.detach_interface(inst.id, port_id)
        except InstanceNotFound:
            pass
        await self.network.deallocate([info])
        async with self.db.session() as s:
            row = (await s.execute(sa.select(m.Instance).where(m.Instance.id == instance_id)
                                   .with_for_update())).scalar_one()
            row.network_info = [i for i in row.network_info or [] if i["port_id"] != port_id]
            row.updated_at = utcnow()

    async def console_output(self, instance_id: str, length: int | None) -> str:
        try:
            return await self.driver.console_output(instance_id, length)
        except InstanceNotFound:
            return ""

    async def console(self, instance_id: str) -> dict:
        ep = await self.driver.console(instance_id)
        return {"protocol": ep.protocol, "host": ep.host, "port": ep.port}

    # -- periodic ---------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make recorded power states match the hypervisor (the hypervisor is right about power)."""
        guests = {i.uuid: i for i in await self.driver.list_instances()}
        async with self.db.reader() as s:
            rows = (await s.execute(sa.select(m.Instance.id, m.Instance.vm_state, m.Instance.power_state).where(
                m.Instance.host == self.host, m.Instance.deleted.is_(False),
                m.Instance.task_state.is_(None)))).all()
        for iid, vm_state, power in rows:
            info = guests.get(iid)
            actual = int(info.power_state) if info else int(PowerState.NOSTATE)
            if vm_state == "building" or actual == power:
                continue
            values: dict = {"power_state": actual}
            if vm_state == "active" and actual in (int(PowerState.SHUTDOWN), int(PowerState.CRASHED)):
                values["vm_state"] = "stopped"  # the guest shut itself down
            elif vm_state == "stopped" and actual == int(PowerState.RUNNING):
                # Stopped in the API means stopped: power it off again.
                try:
                    await self.driver.power_off(iid)
                    continue
                except DriverError:
                    pass
            async with self.db.session() as s:
                await s.execute(sa.update(m.Instance).where(m.Instance.id == iid, m.Instance.task_state.is_(None))
                                .values(**values, updated_at=utcnow()))


class AgentEndpoint:
    """What the bus can ask of one host's agent."""

    def __init__(self, agent: ComputeAgent):
        self._a = agent

    async def build_instance(self, instance_id: str, action_id: int | None = None) -> None:
        await self._a.build_instance(instance_id, action_id)

    async def run_action(self, instance_id: str, action: str, params: dict | None = None,
                         action_id: int | None = None) -> None:
        if action not in OUTCOME and action != "resize":
            raise ValueError(f"unknown action {action!r}")
        await self._a.run_action(instance_id, action, params or {}, action_id)

    async def finish_migration(self, instance_id: str, params: dict, action_id: int | None = None) -> None:
        await self._a.finish_migration(instance_id, params, action_id)

    async def confirm_resize(self, instance_id: str, action_id: int | None = None) -> None:
        await self._a.confirm_resize(instance_id, action_id)

    async def revert_resize(self, instance_id: str, action_id: int | None = None) -> None:
        await self._a.revert_resize(instance_id, action_id)

    async def power_on_after_revert(self, instance_id: str) -> None:
        await self._a.power_on_after_revert(instance_id)

    async def delete_instance(self, instance_id: str, action_id: int | None = None) -> None:
        await self._a.delete_instance(instance_id, action_id)

    async def console_output(self, instance_id: str, length: int | None = None) -> str:
        return await self._a.console_output(instance_id, length)

    async def attach_volume(self, instance_id: str, volume_id: str, device: str | None = None,
                            delete_on_termination: bool = False, tag: str | None = None) -> dict:
        return await self._a.attach_volume(instance_id, volume_id, device, delete_on_termination, tag)

    async def detach_volume(self, instance_id: str, volume_id: str) -> None:
        await self._a.detach_volume(instance_id, volume_id)

    async def attach_interface(self, instance_id: str, entry: dict) -> dict:
        return await self._a.attach_interface(instance_id, entry)

    async def detach_interface(self, instance_id: str, port_id: str) -> None:
        await self._a.detach_interface(instance_id, port_id)

    async def console(self, instance_id: str) -> dict:
        return await self._a.console(instance_id)


class AgentGroup:
    """The agents of one process: this host, or N simulated hosts of the fake driver."""

    def __init__(self, state, agents: list[ComputeAgent], images: list[ImageCache]):
        self.state = state
        self.agents = agents
        self._images = images
        self._tasks: list[asyncio.Task] = []

    @property
    def hosts(self) -> list[str]:
        return [a.host for a in self.agents]

    @classmethod
    async def from_settings(cls, state) -> "AgentGroup":
        s = state.settings
        base = s.host_name
        count = s.fake_hosts if s.driver == "fake" else 1
        names = [base] if count == 1 else [f"{base}-{i}" for i in range(count)]
        client = state.client()
        network = NetworkAPI(client)
        cache_root = state.runtime.config.state_dir / "compute" / "images"
        agents, caches = [], []
        shared_cache = ImageCache(client.credentials, cache_root / base)
        caches.append(shared_cache)
        for i, name in enumerate(names):
            driver = load_driver(state, i)
            # Simulated hosts of one process share one cache directory (they share a disk).
            agents.append(ComputeAgent(state, name, driver, shared_cache, network))
        return cls(state, agents, caches)

    async def start(self) -> None:
        for agent in self.agents:
            try:
                await agent.register()
            except DriverError as exc:
                raise AgentStartError(f"host {agent.host}: {exc}") from None
            await agent.serve()
        self._tasks.append(asyncio.create_task(self._heartbeat_loop()))
        self._tasks.append(asyncio.create_task(self._reconcile_loop()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for agent in self.agents:
            await agent.stop()
        for cache in self._images:
            await cache.aclose()

    async def heartbeat(self) -> None:
        now = utcnow()
        hosts = self.hosts
        changed = []
        for agent in self.agents:
            # The host's totals can change (memory hot-added, disk grown): report them when they do.
            try:
                res = await agent.driver.host_resources()
            except DriverError as exc:
                log.warning("host %s cannot report its resources: %s", agent.host, exc)
                continue
            if agent.totals is None or (res.vcpus, res.memory_mb, res.local_gb) != (
                    agent.totals.vcpus, agent.totals.memory_mb, agent.totals.local_gb):
                agent.totals = res
                changed.append(agent)
        async with self.state.db.session() as s:
            for agent in changed:
                r = agent.totals
                await s.execute(sa.update(m.ComputeNode).where(m.ComputeNode.host == agent.host).values(
                    vcpus=r.vcpus, memory_mb=r.memory_mb, local_gb=r.local_gb))
            for i in range(0, len(hosts), 500):
                chunk = hosts[i:i + 500]
                await s.execute(sa.update(m.ComputeNode).where(m.ComputeNode.host.in_(chunk))
                                .values(heartbeat_at=now, updated_at=now))
                await s.execute(sa.update(m.Service).where(m.Service.host.in_(chunk),
                                                           m.Service.binary == "nova-compute")
                                .values(last_seen_up=now))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.heartbeat_interval)
            try:
                await self.heartbeat()
            except Exception:
                log.exception("heartbeat failed")

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.reconcile_interval)
            for agent in self.agents:
                try:
                    await agent.reconcile()
                except Exception:
                    log.exception("power state reconciliation of %s failed", agent.host)
