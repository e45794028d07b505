"""The libvirt virt driver: real QEMU guests (KVM when it works here, else TCG) via libvirtd.

Files of one instance live in ``<instances_path>/<uuid>/`` (see domain.InstancePaths): the root
disk overlay ``disk``, ``disk.eph0``, ``disk.swap``, the config drive ``disk.config``, the serial
console log ``console.log``, and while a resize waits for confirm/revert the ``resize/`` folder
with the old disk. Base images are in the image cache (``<instances_path>/_base`` by default).

Every libvirt call runs in the connection's thread pool with a timeout, and every guest
operation on one instance is serialised by a per-instance lock, so two actions never interleave
on the same domain. Disk-replacing actions (snapshot, resize, rebuild, rescue) live in
disk_actions.py and hot-plug and consoles in devices.py, mixed into the class below. See
docs/libvirt.md for the operator's view.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path

import libvirt

from stratus.compute import configdrive
from stratus.compute.drivers.base import (
    DriverError,
    HostResources,
    ImageFetcher,
    InstanceInfo,
    InstanceNotFound,
    InstanceSpec,
    PowerState,
    VirtDriver,
    Vif,
)
from stratus.compute.drivers.libvirt import disks
from stratus.compute.drivers.libvirt import domain as dx
from stratus.compute.drivers.libvirt.connection import DEFAULT_URI, LibvirtConnection, ensure_libvirtd
from stratus.compute.drivers.libvirt.devices import DeviceMixin
from stratus.compute.drivers.libvirt.disk_actions import DiskActionsMixin
from stratus.compute.drivers.libvirt.probe import choose_accelerator

LOG = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/var/lib/stratus"
GiB = disks.GiB
# Seconds allowed for libvirt operations that start or save a QEMU process.
START_TIMEOUT = 90.0
SAVE_TIMEOUT = 180.0
BRIDGE_WAIT = 15.0
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")

_POWER_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: PowerState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: PowerState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PowerState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: PowerState.RUNNING,  # shutting down: still running until it is off
    libvirt.VIR_DOMAIN_SHUTOFF: PowerState.SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: PowerState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: PowerState.SUSPENDED,
}
_UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                   | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


class LibvirtDriver(DiskActionsMixin, DeviceMixin, VirtDriver):
    hypervisor_type = "QEMU"

    def __init__(self, instances_path: Path | str | None = None, image_cache_path: Path | str | None = None, *,
                 state_dir: Path | str | None = None, uri: str = DEFAULT_URI, accelerator: str = "auto",
                 probe_kernel: str = "", soft_reboot_timeout: float = 60.0, start_libvirtd: bool = True):
        """``instances_path`` defaults to ``<state_dir>/instances`` (state_dir: /var/lib/stratus)."""
        if instances_path is None:
            instances_path = Path(state_dir or DEFAULT_STATE_DIR) / "instances"
        self.instances_path = Path(instances_path)
        self.image_cache = disks.ImageCache(Path(image_cache_path) if image_cache_path
                                            else self.instances_path / "_base")
        self.conn = LibvirtConnection(uri)
        self.accelerator_mode = accelerator
        self.probe_kernel = probe_kernel
        self.soft_reboot_timeout = soft_reboot_timeout
        self.start_libvirtd = start_libvirtd
        self.host = ""
        self.accel: dict = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_config(cls, config) -> "LibvirtDriver":
        """Build from ``[compute]``: instances_path, image_cache_path, libvirt_uri, virt_accelerator,
        accel_probe_kernel, soft_reboot_timeout, start_libvirtd."""
        section = config.section("compute")
        instances = section.get("instances_path") or str(Path(config.state_dir) / "instances")
        accelerator = section.get("virt_accelerator", "auto")
        if accelerator not in ("auto", "kvm", "tcg"):
            raise DriverError(f"[compute] virt_accelerator must be auto, kvm or tcg, not {accelerator!r}")
        timeout = section.get("soft_reboot_timeout", 60.0)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise DriverError("[compute] soft_reboot_timeout must be a positive number of seconds")
        return cls(instances, section.get("image_cache_path") or None, uri=section.get("libvirt_uri", DEFAULT_URI),
                   accelerator=accelerator, probe_kernel=section.get("accel_probe_kernel", ""),
                   soft_reboot_timeout=float(timeout), start_libvirtd=bool(section.get("start_libvirtd", True)))

    # ---- host ----------------------------------------------------------------------------

    async def init_host(self, host: str) -> None:
        self.host = host
        if self.start_libvirtd:
            await asyncio.get_running_loop().run_in_executor(None, ensure_libvirtd, self.conn.uri)
        version = await self.conn.call("connecting to libvirtd", lambda c: c.getLibVersion())
        self.instances_path.mkdir(parents=True, exist_ok=True)
        # `stratus up` builds the test image under the state directory (instances' parent).
        built_kernel = self.instances_path.parent / "testimage" / "stratus-test.vmlinuz"
        self.accel = await choose_accelerator(self.conn, self.instances_path / "_probe", self.accelerator_mode,
                                              probe_kernel=self.probe_kernel, kernel_candidates=[built_kernel])
        self.hypervisor_type = "KVM" if self.accel["accelerator"] == "kvm" else "QEMU"
        LOG.info("libvirt driver on %s: libvirt %s, accelerator %s (%s), instances in %s", host,
                 _version_string(version), self.accel["accelerator"], self.accel["reason"], self.instances_path)

    @property
    def domain_type(self) -> str:
        return self.accel.get("domain_type", "qemu")

    async def host_resources(self) -> HostResources:
        def read(c):
            return c.getInfo(), c.getVersion(), c.getLibVersion()

        info, qemu_version, lib_version = await self.conn.call("reading host information", read)
        stat = os.statvfs(self.instances_path)
        return HostResources(
            hypervisor_hostname=self.host, hypervisor_type=self.hypervisor_type, hypervisor_version=qemu_version,
            vcpus=int(info[2]), memory_mb=int(info[1]), local_gb=stat.f_blocks * stat.f_frsize // GiB,
            cpu_arch=str(info[0]),
            details={"accelerator": self.accel.get("accelerator", "tcg"),
                     "accelerator_reason": self.accel.get("reason", ""),
                     "domain_type": self.domain_type, "machine_type": dx.MACHINE_TYPE,
                     "libvirt_version": _version_string(lib_version),
                     "qemu_version": _version_string(qemu_version),
                     "local_gb_free": stat.f_bavail * stat.f_frsize // GiB,
                     "instances_path": str(self.instances_path)})

    async def close(self) -> None:
        self.conn.close()

    # ---- helpers ---------------------------------------------------------------------------

    def paths(self, uuid: str) -> dx.InstancePaths:
        if not uuid or "/" in uuid or uuid.startswith("."):
            raise DriverError(f"invalid instance uuid {uuid!r}")
        return dx.InstancePaths(self.instances_path / uuid)

    @asynccontextmanager
    async def _locked(self, uuid: str):
        lock = self._locks.setdefault(uuid, asyncio.Lock())
        async with lock:
            yield

    async def _state(self, dom) -> tuple[int, bool]:
        """(libvirt state, has a managed-save image)."""
        def read():
            state = dom.state()[0]
            saved = state == libvirt.VIR_DOMAIN_SHUTOFF and bool(dom.hasManagedSaveImage(0))
            return state, saved

        return await self.conn.run("reading the domain state", read)

    async def _info(self, dom) -> InstanceInfo:
        def read():
            state, max_kib, _mem, vcpus, _cpu = dom.info()
            saved = state == libvirt.VIR_DOMAIN_SHUTOFF and bool(dom.hasManagedSaveImage(0))
            return dom.UUIDString(), state, saved, vcpus, max_kib

        uuid, state, saved, vcpus, max_kib = await self.conn.run("reading the domain", read)
        power = PowerState.SUSPENDED if saved else _POWER_STATES.get(state, PowerState.NOSTATE)
        return InstanceInfo(uuid=uuid, power_state=power, vcpus=int(vcpus), memory_mb=int(max_kib) // 1024)

    async def _wait_for_state(self, dom, wanted: set[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            state, _ = await self._state(dom)
            if state in wanted:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)

    async def _hard_stop(self, dom) -> None:
        """Force the QEMU process off (no-op when it is already off)."""
        for attempt in range(3):
            state, _ = await self._state(dom)
            if state == libvirt.VIR_DOMAIN_SHUTOFF:
                return
            try:
                await self.conn.run("stopping the guest", dom.destroy, timeout=60)
                return
            except InstanceNotFound:
                return
            except DriverError as exc:
                # A destroy racing a guest shutdown reports "domain is not running": fine.
                if "not running" in str(exc):
                    return
                if attempt == 2:
                    raise
                await asyncio.sleep(1)

    async def _clean_stop(self, dom, timeout: float) -> bool:
        """ACPI shutdown, waiting up to ``timeout``; forced off after. True when the guest obliged."""
        state, _ = await self._state(dom)
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            return True
        if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_SHUTDOWN):
            try:
                await self.conn.run("asking the guest to shut down", dom.shutdown)
            except DriverError as exc:
                LOG.warning("ACPI shutdown request failed (%s); forcing the guest off", exc)
            else:
                if await self._wait_for_state(dom, {libvirt.VIR_DOMAIN_SHUTOFF}, timeout):
                    return True
                LOG.info("guest %s did not shut down within %.0fs; forcing it off", dom.UUIDString(), timeout)
        await self._hard_stop(dom)
        return False

    async def _start(self, dom) -> None:
        state, _ = await self._state(dom)
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            await self.conn.run("starting the guest", dom.create, timeout=START_TIMEOUT)

    async def _drop_managed_save(self, dom) -> None:
        _, saved = await self._state(dom)
        if saved:
            await self.conn.run("discarding the saved memory image", lambda: dom.managedSaveRemove(0))

    async def _define(self, xml: str):
        return await self.conn.call("defining the domain", lambda c: c.defineXML(xml))

    async def _redefine(self, dom, spec: InstanceSpec, paths: dx.InstancePaths, rescue: bool = False) -> None:
        """Define the domain anew from ``spec``, keeping hot-plugged NICs and volumes the spec omits."""
        old = await self._xml(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
        await self._define(dx.carry_over_devices(old, self._domain_xml(spec, paths, rescue)))

    def _disk_plan(self, spec: InstanceSpec, paths: dx.InstancePaths, hardware: dx.Hardware,
                   rescue: bool = False) -> list[dx.Disk]:
        planned: list[dx.Disk] = []
        used: set[str] = set()
        bus = hardware.disk_bus

        def target(on_bus: str, hint: str | None = None) -> str:
            prefix = dx.DISK_BUS_PREFIX[on_bus]
            if hint and hint.startswith(prefix) and len(hint) == 3 and hint not in used:
                used.add(hint)
                return hint
            for letter in "abcdefghijklmnopqrstuvwxyz"[: 4 if prefix == "hd" else 26]:
                if prefix + letter not in used:
                    used.add(prefix + letter)
                    return prefix + letter
            raise DriverError(f"too many disks on the {on_bus} bus")

        volumes = list(spec.volumes)
        if rescue:
            planned.append(dx.Disk(target=target(bus), bus=bus, path=str(paths.rescue_disk), boot_order=1))
        if spec.image is not None:
            planned.append(dx.Disk(target=target(bus), bus=bus, path=str(paths.disk),
                                   boot_order=None if rescue else 1))
        elif volumes:
            # Boot from volume: the first volume is the root disk, right after any rescue disk.
            root = dx.volume_disk(volumes.pop(0), target("virtio"))
            root.boot_order = None if rescue else 1
            planned.append(root)
        if paths.ephemeral.exists():
            planned.append(dx.Disk(target=target(bus), bus=bus, path=str(paths.ephemeral), format="raw"))
        if paths.swap.exists():
            planned.append(dx.Disk(target=target(bus), bus=bus, path=str(paths.swap), format="raw"))
        for connection in volumes:  # volumes are always virtio disks (hot-pluggable)
            hint = (connection.device_name or "").rsplit("/", 1)[-1]
            planned.append(dx.volume_disk(connection, target("virtio", hint)))
        if paths.config_drive.exists():
            cdrom_bus = hardware.cdrom_bus
            planned.append(dx.Disk(target=target(cdrom_bus), path=str(paths.config_drive), format="raw",
                                   bus=cdrom_bus, device="cdrom", readonly=True))
        return planned

    def _domain_xml(self, spec: InstanceSpec, paths: dx.InstancePaths, rescue: bool = False) -> str:
        hardware = dx.hardware_for(spec.image)
        plan = dx.DomainPlan(spec=spec, domain_type=self.domain_type,
                             disks=self._disk_plan(spec, paths, hardware, rescue), console_log=paths.console_log,
                             mode="rescue" if rescue else "normal", hardware=hardware)
        return dx.build_domain_xml(plan)

    async def _root_disk(self, spec: InstanceSpec, fetch_image: ImageFetcher, dest: Path) -> None:
        assert spec.image is not None
        base = await self.image_cache.base_for(spec.image, fetch_image)
        image_size = await disks.virtual_size(base, "qcow2")
        wanted = spec.root_gb * GiB
        if wanted and wanted < image_size:
            raise DriverError(f"the flavor's root disk ({spec.root_gb} GiB) is smaller than image "
                              f"{spec.image.id} ({image_size / GiB:.2f} GiB)")
        await disks.create_overlay(base, dest, max(wanted, image_size))

    async def _wait_for_bridges(self, vifs: list[Vif], timeout: float = BRIDGE_WAIT) -> None:
        """Bridge NICs need their bridge: the network agent may still be creating it, so wait a little."""
        deadline = time.monotonic() + timeout
        for vif in vifs:
            if vif.vif_type != "bridge" or not vif.bridge_name:
                continue
            while not Path("/sys/class/net", vif.bridge_name).exists():
                if time.monotonic() >= deadline:
                    raise DriverError(f"port {vif.port_id}: bridge {vif.bridge_name} does not exist on this host "
                                      f"after {timeout:.0f}s (is the network agent running here?)")
                await asyncio.sleep(0.2)

    async def _write_config_drive(self, spec: InstanceSpec, paths: dx.InstancePaths) -> None:
        if spec.config_drive:
            await asyncio.get_running_loop().run_in_executor(None, configdrive.build_config_drive, spec,
                                                             paths.config_drive)
        else:
            paths.config_drive.unlink(missing_ok=True)

    # ---- lifecycle -------------------------------------------------------------------------

    async def list_instances(self) -> list[InstanceInfo]:
        def ours(c):
            return [d for d in c.listAllDomains(0) if dx.is_ours(d.XMLDesc(0))]

        out = []
        for dom in await self.conn.call("listing domains", ours):
            try:
                out.append(await self._info(dom))
            except InstanceNotFound:
                continue  # undefined between the listing and the read
        return out

    async def get_info(self, uuid: str) -> InstanceInfo:
        return await self._info(await self.conn.lookup(uuid))

    async def spawn(self, spec: InstanceSpec, fetch_image: ImageFetcher) -> None:
        async with self._locked(spec.uuid):
            if await self.conn.lookup_or_none(spec.uuid) is not None:
                raise DriverError(f"instance {spec.uuid} already has a domain on this host")
            if spec.image is None and not spec.volumes:
                raise DriverError(f"instance {spec.uuid} has neither an image nor a volume to boot from")
            paths = self.paths(spec.uuid)
            paths.root.mkdir(parents=True, exist_ok=True)
            try:
                if spec.image is not None:
                    await self._root_disk(spec, fetch_image, paths.disk)
                if spec.ephemeral_gb:
                    await disks.create_ephemeral(paths.ephemeral, spec.ephemeral_gb)
                if spec.swap_mb:
                    await disks.create_swap(paths.swap, spec.swap_mb)
                await self._write_config_drive(spec, paths)
                await self._wait_for_bridges(spec.vifs)
                dom = await self._define(self._domain_xml(spec, paths))
                await self.conn.run("starting the guest", dom.create, timeout=START_TIMEOUT)
            except BaseException as exc:
                LOG.warning("spawn of %s failed (%s); removing what it created", spec.uuid, exc)
                await asyncio.shield(self._remove(spec.uuid))
                raise
            LOG.info("spawned %s (%s) as a %s guest", spec.uuid, spec.name, self.domain_type)

    async def _remove(self, uuid: str) -> None:
        dom = await self.conn.lookup_or_none(uuid)
        if dom is not None:
            name = await self.conn.run("reading the domain name", dom.name)
            await self._hard_stop(dom)
            try:
                await self.conn.run("undefining the domain", lambda: dom.undefineFlags(_UNDEFINE_FLAGS))
            except InstanceNotFound:
                pass
            # libvirt's own log of the QEMU process (its command line and stderr) goes too.
            for log in QEMU_LOG_DIR.glob(f"{name}.log*"):
                log.unlink(missing_ok=True)
        root = self.paths(uuid).root
        await asyncio.get_running_loop().run_in_executor(None, lambda: shutil.rmtree(root, ignore_errors=True))
        if root.exists():
            raise DriverError(f"could not remove {root}")

    async def destroy(self, uuid: str) -> None:
        async with self._locked(uuid):
            await self._remove(uuid)
        self._locks.pop(uuid, None)
        LOG.info("destroyed %s", uuid)

    async def reboot(self, uuid: str, hard: bool) -> None:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            state, _ = await self._state(dom)
            if hard or state not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
                await self._hard_stop(dom)
                await self._drop_managed_save(dom)
            elif not await self._clean_stop(dom, self.soft_reboot_timeout):
                LOG.info("soft reboot of %s fell back to a hard reboot", uuid)
            await self._start(dom)

    async def power_off(self, uuid: str, timeout: float = 30.0) -> None:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            await self._clean_stop(dom, timeout)
            await self._drop_managed_save(dom)

    async def power_on(self, uuid: str) -> None:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            state, _ = await self._state(dom)
            if state == libvirt.VIR_DOMAIN_PAUSED:
                await self.conn.run("resuming the guest", dom.resume)
            else:
                await self._start(dom)

    async def pause(self, uuid: str) -> None:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            state, _ = await self._state(dom)
            if state == libvirt.VIR_DOMAIN_PAUSED:
                return
            if state not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
                raise DriverError(f"instance {uuid} is not running, so it cannot be paused")
            await self.conn.run("pausing the guest", dom.suspend)

    async def unpause(self, uuid: str) -> None:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            state, _ = await self._state(dom)
            if state == libvirt.VIR_DOMAIN_PAUSED:
                await self.conn.run("unpausing the guest", dom.resume)
            elif state not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
                raise DriverError(f"instance {uuid} is not paused")

    async def suspend(self, uuid: str) -> None:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            state, saved = await self._state(dom)
            if saved:
                return
            if state == libvirt.VIR_DOMAIN_SHUTOFF:
                raise DriverError(f"instance {uuid} is not running, so it cannot be suspended")
            # SAVE_RUNNING: a guest suspended while paused comes back running on resume.
            await self.conn.run("saving the guest's memory",
                                lambda: dom.managedSave(libvirt.VIR_DOMAIN_SAVE_RUNNING), timeout=SAVE_TIMEOUT)

    async def resume(self, uuid: str) -> None:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            state, saved = await self._state(dom)
            if state == libvirt.VIR_DOMAIN_PAUSED:
                await self.conn.run("resuming the guest", dom.resume)
            elif state == libvirt.VIR_DOMAIN_SHUTOFF:
                if not saved:
                    raise DriverError(f"instance {uuid} has no saved memory to resume from")
                await self.conn.run("restoring the guest's memory", dom.create, timeout=SAVE_TIMEOUT)


def _version_string(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"
