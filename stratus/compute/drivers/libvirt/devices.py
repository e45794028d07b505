"""Hot-plugged devices (volumes, NICs) and consoles (serial log, VNC endpoint).

Mixed into LibvirtDriver (driver.py), whose helpers they use.
"""

from __future__ import annotations

import asyncio
import os
import time
import xml.etree.ElementTree as ET

import libvirt

from stratus.compute.drivers.base import ConsoleEndpoint, DriverError, Vif, VolumeConnection
from stratus.compute.drivers.libvirt import domain as dx

# Seconds a guest gets to release a hot-unplugged device (ACPI eject) before the detach fails.
DETACH_TIMEOUT = 30.0
# How much of the end of the serial log console_output reads.
CONSOLE_TAIL_BYTES = 1024 * 1024


class DeviceMixin:

    async def _device_flags(self, dom) -> int:
        state, _ = await self._state(dom)
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if state != libvirt.VIR_DOMAIN_SHUTOFF:
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        return flags

    async def _xml(self, dom, flags: int = 0) -> str:
        return await self.conn.run("reading the domain", lambda: dom.XMLDesc(flags))

    async def _attach(self, dom, device_xml: str, what: str) -> None:
        flags = await self._device_flags(dom)
        await self.conn.run(what, lambda: dom.attachDeviceFlags(device_xml, flags), timeout=60)

    async def _detach(self, dom, tag: str, alias: str, what: str) -> None:
        flags = await self._device_flags(dom)
        live = bool(flags & libvirt.VIR_DOMAIN_AFFECT_LIVE)
        device = dx.device_with_alias(await self._xml(dom), tag, alias)
        if device is None:
            device = dx.device_with_alias(await self._xml(dom, libvirt.VIR_DOMAIN_XML_INACTIVE), tag, alias)
            live = False
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if device is None:
            return  # already gone
        await self.conn.run(what, lambda: dom.detachDeviceFlags(device, flags), timeout=60)
        if not live:
            return
        # A live unplug needs the guest's cooperation (ACPI hot-unplug): wait until QEMU drops it.
        deadline = time.monotonic() + DETACH_TIMEOUT
        while dx.device_with_alias(await self._xml(dom), tag, alias) is not None:
            if time.monotonic() >= deadline:
                raise DriverError(f"{what}: the guest did not release the device within {DETACH_TIMEOUT:.0f}s "
                                  "(it stays attached; try again once the guest has booted)")
            await asyncio.sleep(0.3)

    async def attach_volume(self, uuid: str, connection: VolumeConnection) -> str:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            xml = await self._xml(dom)
            existing = dx.device_with_alias(xml, "disk", dx.volume_alias(connection.volume_id))
            if existing is not None:
                return "/dev/" + ET.fromstring(existing).find("target").get("dev")
            inactive = await self._xml(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
            target = dx.free_virtio_target(dx.disk_targets(xml) | dx.disk_targets(inactive), connection.device_name)
            disk = dx.volume_disk(connection, target)
            await self._attach(dom, ET.tostring(dx.disk_element(disk), encoding="unicode"),
                               f"attaching volume {connection.volume_id}")
            return f"/dev/{target}"

    async def detach_volume(self, uuid: str, volume_id: str) -> None:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            await self._detach(dom, "disk", dx.volume_alias(volume_id), f"detaching volume {volume_id}")

    async def attach_interface(self, uuid: str, vif: Vif) -> None:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            if dx.device_with_alias(await self._xml(dom), "interface", dx.port_alias(vif.port_id)) is not None:
                return
            await self._wait_for_bridges([vif])
            model = dx.vif_model_of(await self._xml(dom))
            await self._attach(dom, ET.tostring(dx.interface_element(vif, model), encoding="unicode"),
                               f"attaching port {vif.port_id}")

    async def detach_interface(self, uuid: str, port_id: str) -> None:
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            await self._detach(dom, "interface", dx.port_alias(port_id), f"detaching port {port_id}")

    # ---- consoles ----------------------------------------------------------------------------

    async def console_output(self, uuid: str, length: int | None = None) -> str:
        log = self.paths(uuid).console_log
        if not log.exists():
            await self.conn.lookup(uuid)  # InstanceNotFound when there is no such guest at all
            return ""

        def tail() -> str:
            with open(log, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - CONSOLE_TAIL_BYTES))
                data = handle.read()
            if size > CONSOLE_TAIL_BYTES:
                data = data.split(b"\n", 1)[-1]  # drop the partial first line
            return data.replace(b"\r", b"").replace(b"\x00", b"").decode("utf-8", errors="replace")

        text = await asyncio.get_running_loop().run_in_executor(None, tail)
        if length is not None:
            if length <= 0:
                return ""
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-length:])
        return text

    async def console(self, uuid: str) -> ConsoleEndpoint:
        dom = await self.conn.lookup(uuid)
        state, _ = await self._state(dom)
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            raise DriverError(f"instance {uuid} is not running, so it has no console")
        endpoint = dx.vnc_endpoint(await self._xml(dom))
        if endpoint is None:
            raise DriverError(f"instance {uuid} has no VNC display")
        return ConsoleEndpoint(protocol="vnc", host=endpoint[0], port=endpoint[1])
