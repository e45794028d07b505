"""Actions that replace or copy an instance's disks: snapshot, resize (confirm, revert), rebuild,
rescue and unrescue. Mixed into LibvirtDriver (driver.py), whose helpers they use: per-instance
lock, bounded libvirt calls, state waits, domain (re)definition.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil

import libvirt

from stratus.compute.drivers.base import DriverError, ImageFetcher, ImageRef, ImageUploader, InstanceSpec
from stratus.compute.drivers.libvirt import disks
from stratus.compute.drivers.libvirt import domain as dx

LOG = logging.getLogger(__name__)

GiB = disks.GiB


class DiskActionsMixin:

    async def snapshot(self, uuid: str, image_id: str, upload: ImageUploader) -> None:
        paths = self.paths(uuid)
        out = paths.root / f"snapshot-{image_id}.qcow2"
        async with self._locked(uuid):
            dom = await self.conn.lookup(uuid)
            if not paths.disk.exists():
                raise DriverError(f"instance {uuid} boots from a volume: snapshot its volume instead")
            state, _ = await self._state(dom)
            paused_here = state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED)
            # Pausing makes QEMU drain and flush the disk (qcow2 metadata included), so the file
            # read below is a consistent point-in-time copy while the guest is frozen.
            if paused_here:
                await self.conn.run("pausing the guest for the snapshot", dom.suspend)
            try:
                await disks.convert(paths.disk, "qcow2", out, "qcow2", force_share=True)
            except BaseException:
                out.unlink(missing_ok=True)
                raise
            finally:
                if paused_here:
                    await self.conn.run("resuming the guest after the snapshot", dom.resume)
        try:
            await upload(image_id, out, "qcow2")
        except DriverError:
            raise
        except Exception as exc:
            raise DriverError(f"snapshot upload to image {image_id} failed: {exc}") from exc
        finally:
            out.unlink(missing_ok=True)

    async def resize(self, spec: InstanceSpec) -> None:
        async with self._locked(spec.uuid):
            dom = await self.conn.lookup(spec.uuid)
            paths = self.paths(spec.uuid)
            if paths.resize_dir.exists():
                raise DriverError(f"instance {spec.uuid} has a resize waiting for confirm or revert")
            state, _ = await self._state(dom)
            was_running = state != libvirt.VIR_DOMAIN_SHUTOFF
            old_xml = await self.conn.run("reading the domain", lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            has_disk = paths.disk.exists()
            current = await disks.virtual_size(paths.disk, "qcow2") if has_disk else 0
            wanted = spec.root_gb * GiB
            if has_disk and wanted and wanted < current:
                raise DriverError(f"resize to a smaller root disk ({spec.root_gb} GiB < "
                                  f"{current / GiB:.2f} GiB) is not possible")
            await self._clean_stop(dom, min(self.soft_reboot_timeout, 30.0))
            await self._drop_managed_save(dom)
            paths.resize_dir.mkdir()
            (paths.resize_dir / "domain.xml").write_text(old_xml)
            (paths.resize_dir / "state.json").write_text(json.dumps({"was_running": was_running}))
            try:
                if has_disk:
                    await asyncio.get_running_loop().run_in_executor(
                        None, shutil.copyfile, paths.disk, paths.resize_dir / "disk")
                    if wanted > current:
                        await disks.resize_disk(paths.disk, wanted)
                await self._redefine(dom, spec, paths)
                if was_running:
                    await self._start(dom)
            except BaseException as exc:
                LOG.warning("resize of %s failed (%s); restoring the old flavor", spec.uuid, exc)
                await asyncio.shield(self._restore_resize(dom, paths, old_xml, was_running))
                raise

    async def _restore_resize(self, dom, paths: dx.InstancePaths, old_xml: str, start: bool) -> None:
        await self._hard_stop(dom)
        saved_disk = paths.resize_dir / "disk"
        if saved_disk.exists():
            os.replace(saved_disk, paths.disk)
        await self._define(old_xml)
        if start:
            await self._start(dom)
        shutil.rmtree(paths.resize_dir, ignore_errors=True)

    async def confirm_resize(self, uuid: str) -> None:
        async with self._locked(uuid):
            resize_dir = self.paths(uuid).resize_dir
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: shutil.rmtree(resize_dir, ignore_errors=True))

    async def revert_resize(self, spec: InstanceSpec) -> None:
        async with self._locked(spec.uuid):
            dom = await self.conn.lookup(spec.uuid)
            paths = self.paths(spec.uuid)
            state_file = paths.resize_dir / "state.json"
            if not state_file.exists():
                raise DriverError(f"instance {spec.uuid} has no resize to revert")
            was_running = json.loads(state_file.read_text()).get("was_running", True)
            await self._hard_stop(dom)
            await self._drop_managed_save(dom)
            saved_disk = paths.resize_dir / "disk"
            if saved_disk.exists():
                os.replace(saved_disk, paths.disk)
            await self._redefine(dom, spec, paths)
            if was_running:
                await self._start(dom)
            shutil.rmtree(paths.resize_dir, ignore_errors=True)

    async def rebuild(self, spec: InstanceSpec, fetch_image: ImageFetcher) -> None:
        async with self._locked(spec.uuid):
            dom = await self.conn.lookup(spec.uuid)
            if spec.image is None:
                raise DriverError(f"instance {spec.uuid}: rebuild needs an image")
            paths = self.paths(spec.uuid)
            fresh = paths.root / "disk.rebuild"
            try:
                await self._root_disk(spec, fetch_image, fresh)
            except BaseException:
                fresh.unlink(missing_ok=True)
                raise
            await self._hard_stop(dom)
            await self._drop_managed_save(dom)
            os.replace(fresh, paths.disk)
            paths.rescue_disk.unlink(missing_ok=True)
            await self._write_config_drive(spec, paths)
            await self._redefine(dom, spec, paths)
            await self._start(dom)

    async def rescue(self, spec: InstanceSpec, rescue_image: ImageRef, fetch_image: ImageFetcher) -> None:
        async with self._locked(spec.uuid):
            dom = await self.conn.lookup(spec.uuid)
            paths = self.paths(spec.uuid)
            xml = await self.conn.run("reading the domain", lambda: dom.XMLDesc(0))
            if dx.mode_of(xml) == "rescue":
                raise DriverError(f"instance {spec.uuid} is already in rescue mode")
            base = await self.image_cache.base_for(rescue_image, fetch_image)
            paths.rescue_disk.unlink(missing_ok=True)
            await disks.create_overlay(base, paths.rescue_disk, None)
            await self._hard_stop(dom)
            await self._drop_managed_save(dom)
            try:
                await self._redefine(dom, spec, paths, rescue=True)
                await self._start(dom)
            except BaseException as exc:
                LOG.warning("rescue of %s failed (%s); restoring its normal domain", spec.uuid, exc)
                await asyncio.shield(self._leave_rescue(dom, spec, paths))
                raise

    async def _leave_rescue(self, dom, spec: InstanceSpec, paths: dx.InstancePaths) -> None:
        await self._hard_stop(dom)
        await self._redefine(dom, spec, paths)
        paths.rescue_disk.unlink(missing_ok=True)
        await self._start(dom)

    async def unrescue(self, spec: InstanceSpec) -> None:
        async with self._locked(spec.uuid):
            dom = await self.conn.lookup(spec.uuid)
            await self._leave_rescue(dom, spec, self.paths(spec.uuid))
