"""A simulated hypervisor: guests are records in memory with the state transitions of a real one.

Used by tests and by scale benchmarks (many simulated hosts per agent process), never as the
driver a user gets by default. Each call sleeps a tiny, configurable latency so that races between
API, scheduler and agent show up as they would with a real hypervisor.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from stratus.compute.drivers.base import (ConsoleEndpoint, DriverError, HostResources, ImageFetcher, ImageRef,
                                          ImageUploader, InstanceInfo, InstanceNotFound, InstanceSpec, PowerState,
                                          VirtDriver, VolumeConnection, Vif)


@dataclass
class FakeGuest:
    spec: InstanceSpec
    power_state: PowerState = PowerState.RUNNING
    rescued: bool = False
    previous_spec: InstanceSpec | None = None
    volumes: dict[str, str] = field(default_factory=dict)
    vifs: dict[str, Vif] = field(default_factory=dict)
    console: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%H:%M:%S")
        self.console.append(f"[{stamp}] {line}")


class FakeDriver(VirtDriver):
    hypervisor_type = "fake"

    def __init__(self, *, vcpus: int = 16, memory_mb: int = 32768, local_gb: int = 500,
                 latency: float = 0.002, cpu_arch: str = "x86_64", fetch_images: bool = True):
        self.vcpus = vcpus
        self.memory_mb = memory_mb
        self.local_gb = local_gb
        self.latency = latency
        self.cpu_arch = cpu_arch
        # Whether spawn downloads the image through the agent's fetcher (off for huge fleets).
        self.fetch_images = fetch_images
        self.host = ""
        self.guests: dict[str, FakeGuest] = {}

    async def _tick(self) -> None:
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    def _guest(self, uuid: str) -> FakeGuest:
        guest = self.guests.get(uuid)
        if guest is None:
            raise InstanceNotFound(f"instance {uuid} does not exist on fake host {self.host}")
        return guest

    async def init_host(self, host: str) -> None:
        self.host = host

    async def host_resources(self) -> HostResources:
        return HostResources(hypervisor_hostname=self.host, hypervisor_type="fake", hypervisor_version=1000,
                             vcpus=self.vcpus, memory_mb=self.memory_mb, local_gb=self.local_gb,
                             cpu_arch=self.cpu_arch, details={"simulated": True})

    async def list_instances(self) -> list[InstanceInfo]:
        return [InstanceInfo(u, g.power_state, g.spec.vcpus, g.spec.memory_mb) for u, g in self.guests.items()]

    async def get_info(self, uuid: str) -> InstanceInfo:
        g = self._guest(uuid)
        return InstanceInfo(uuid, g.power_state, g.spec.vcpus, g.spec.memory_mb)

    async def spawn(self, spec: InstanceSpec, fetch_image: ImageFetcher) -> None:
        await self._tick()
        if spec.image is not None and self.fetch_images:
            await fetch_image(spec.image)
        if spec.flavor_extra_specs.get("fake:fail_spawn"):
            raise DriverError(f"simulated spawn failure requested by flavor extra spec on {self.host}")
        guest = FakeGuest(spec)
        guest.log(f"Booting {spec.hostname} ({spec.uuid}) on {self.host}")
        guest.log(f"{spec.hostname} login:")
        self.guests[spec.uuid] = guest

    async def destroy(self, uuid: str) -> None:
        await self._tick()
        self.guests.pop(uuid, None)

    async def reboot(self, uuid: str, hard: bool) -> None:
        await self._tick()
        g = self._guest(uuid)
        g.power_state = PowerState.RUNNING
        g.log("hard reset" if hard else "reboot: the system is going down")

    async def power_off(self, uuid: str, timeout: float = 30.0) -> None:
        await self._tick()
        g = self._guest(uuid)
        g.power_state = PowerState.SHUTDOWN
        g.log("power off")

    async def power_on(self, uuid: str) -> None:
        await self._tick()
        g = self._guest(uuid)
        g.power_state = PowerState.RUNNING
        g.log("power on")

    async def pause(self, uuid: str) -> None:
        await self._tick()
        self._guest(uuid).power_state = PowerState.PAUSED

    async def unpause(self, uuid: str) -> None:
        await self._tick()
        self._guest(uuid).power_state = PowerState.RUNNING

    async def suspend(self, uuid: str) -> None:
        await self._tick()
        self._guest(uuid).power_state = PowerState.SUSPENDED

    async def resume(self, uuid: str) -> None:
        await self._tick()
        self._guest(uuid).power_state = PowerState.RUNNING

    async def snapshot(self, uuid: str, image_id: str, upload: ImageUploader) -> None:
        await self._tick()
        g = self._guest(uuid)
        # A small deterministic "disk" so that the uploaded data can be checked end to end.
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "snapshot.raw"
            path.write_bytes(f"fake snapshot of {uuid} ({g.spec.hostname})\n".encode() * 64)
            await upload(image_id, path, "raw")

    async def resize(self, spec: InstanceSpec) -> None:
        await self._tick()
        g = self._guest(spec.uuid)
        g.previous_spec = g.spec
        g.spec = spec

    async def confirm_resize(self, uuid: str) -> None:
        await self._tick()
        self._guest(uuid).previous_spec = None

    async def revert_resize(self, spec: InstanceSpec) -> None:
        await self._tick()
        g = self._guest(spec.uuid)
        g.spec = spec
        g.previous_spec = None
        g.power_state = PowerState.RUNNING

    async def rebuild(self, spec: InstanceSpec, fetch_image: ImageFetcher) -> None:
        await self._tick()
        if spec.image is not None and self.fetch_images:
            await fetch_image(spec.image)
        g = self.guests.get(spec.uuid) or FakeGuest(spec)
        g.spec = spec
        g.power_state = PowerState.RUNNING
        g.log(f"rebuilt from image {spec.image.id if spec.image else '-'}")
        self.guests[spec.uuid] = g

    async def rescue(self, spec: InstanceSpec, rescue_image: ImageRef, fetch_image: ImageFetcher) -> None:
        await self._tick()
        g = self._guest(spec.uuid)
        g.rescued = True
        g.power_state = PowerState.RUNNING

    async def unrescue(self, spec: InstanceSpec) -> None:
        await self._tick()
        g = self._guest(spec.uuid)
        g.rescued = False
        g.power_state = PowerState.RUNNING

    async def attach_volume(self, uuid: str, connection: VolumeConnection) -> str:
        await self._tick()
        g = self._guest(uuid)
        device = connection.device_name or f"/dev/vd{chr(ord('b') + len(g.volumes))}"
        g.volumes[connection.volume_id] = device
        return device

    async def detach_volume(self, uuid: str, volume_id: str) -> None:
        await self._tick()
        self._guest(uuid).volumes.pop(volume_id, None)

    async def attach_interface(self, uuid: str, vif: Vif) -> None:
        await self._tick()
        self._guest(uuid).vifs[vif.port_id] = vif

    async def detach_interface(self, uuid: str, port_id: str) -> None:
        await self._tick()
        self._guest(uuid).vifs.pop(port_id, None)

    async def console_output(self, uuid: str, length: int | None = None) -> str:
        lines = self._guest(uuid).console
        if length is not None:
            lines = lines[-length:] if length > 0 else []
        return "\n".join(lines) + ("\n" if lines else "")

    async def console(self, uuid: str) -> ConsoleEndpoint:
        self._guest(uuid)
        # Simulated guests have no VNC server; a port that is never listened on is honest.
        return ConsoleEndpoint("vnc", "127.0.0.1", 5900 + (abs(hash(uuid)) % 1000))
