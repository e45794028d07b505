"""The virt driver contract: everything the compute agent asks of a hypervisor.

The compute agent (one per host) owns all bookkeeping — database, instance states, quotas,
the image service and the network/volume services. A driver only turns intent into a running
(or stopped, or gone) guest on its host and reports what is there. Rules:

- Every method is a coroutine and must return within a bounded time: a driver that talks to a
  blocking library (libvirt) runs it in an executor and puts a timeout on waits; a guest that
  does not respond is an error (``DriverError``) with a message saying what happened, never a
  hang.
- Methods are idempotent where they can be: destroying a guest that is already gone succeeds;
  powering off a stopped guest succeeds.
- On failure a driver cleans up what that call created (disks, domains, files) before raising.
- Drivers never touch the database or the message bus; images come from ``ImageFetcher`` and
  go back through ``ImageUploader``, both given by the agent.
- ``spawn`` returns when the guest has been started (power state RUNNING), not when the guest
  OS has finished booting.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable


class PowerState(enum.IntEnum):
    """Nova's power_state numbers, which the API exposes as OS-EXT-STS:power_state."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


class DriverError(Exception):
    """The hypervisor could not do what was asked; the message is shown to the user as the fault."""


class InstanceNotFound(DriverError):
    pass


@dataclass
class ImageRef:
    id: str
    name: str = ""
    disk_format: str = "raw"
    container_format: str = "bare"
    size: int = 0
    checksum: str | None = None  # md5, as the image service reports it
    os_hash_value: str | None = None  # sha512
    min_disk: int = 0
    properties: dict = field(default_factory=dict)  # hw_*, architecture, os_distro, ...


@dataclass
class Vif:
    """One network interface, as the network service bound it to this host."""

    port_id: str
    mac: str
    network_id: str
    # How the guest NIC is wired: 'bridge' (plug a tap into bridge_name) or 'ethernet' (a tap
    # device named tap_name that the network agent wires itself).
    vif_type: str = "bridge"
    bridge_name: str | None = None
    tap_name: str | None = None
    mtu: int = 1500
    # [{"ip_address", "subnet_id", "cidr", "gateway_ip", "version", "dns_nameservers", "host_routes"}]
    fixed_ips: list[dict] = field(default_factory=list)


@dataclass
class VolumeConnection:
    """How to reach a volume from this host (from the volume service's attachment)."""

    volume_id: str
    # 'file' (a path on this host), 'nbd' (host, port, export name), 'iscsi', ...
    driver_volume_type: str
    data: dict = field(default_factory=dict)
    device_name: str | None = None  # e.g. /dev/vdb (a hint; the driver reports what it used)
    read_only: bool = False


@dataclass
class InstanceSpec:
    """Everything a driver needs to build a guest."""

    uuid: str
    name: str  # the hypervisor-side name, e.g. instance-0000002a
    hostname: str
    vcpus: int
    memory_mb: int
    root_gb: int
    image: ImageRef | None  # None when booting from a volume
    ephemeral_gb: int = 0
    swap_mb: int = 0
    project_id: str = ""
    user_id: str = ""
    availability_zone: str = "nova"
    launch_index: int = 0
    metadata: dict = field(default_factory=dict)
    user_data: bytes | None = None
    key_name: str | None = None
    public_key: str | None = None
    config_drive: bool = False
    vifs: list[Vif] = field(default_factory=list)
    volumes: list[VolumeConnection] = field(default_factory=list)
    flavor_extra_specs: dict = field(default_factory=dict)
    # Served at openstack/latest/vendor_data.json etc. on the config drive.
    extra_metadata: dict = field(default_factory=dict)


@dataclass
class InstanceInfo:
    uuid: str
    power_state: PowerState
    vcpus: int = 0
    memory_mb: int = 0


@dataclass
class HostResources:
    hypervisor_hostname: str
    hypervisor_type: str  # e.g. QEMU, KVM, fake
    hypervisor_version: int
    vcpus: int
    memory_mb: int
    local_gb: int
    cpu_arch: str = "x86_64"
    # Free-form details shown by `openstack hypervisor show` (e.g. {"accelerator": "tcg"}).
    details: dict = field(default_factory=dict)


@dataclass
class ConsoleEndpoint:
    """Where a graphical console listens on the host; the console proxy connects to it."""

    protocol: str  # 'vnc'
    host: str
    port: int


# Given by the agent: download an image (once per host, checksum verified) and return its path.
ImageFetcher = Callable[[ImageRef], Awaitable[Path]]
# Given by the agent: upload a file as the data of an existing image record.
ImageUploader = Callable[[str, Path, str], Awaitable[None]]  # (image_id, path, disk_format)


class VirtDriver(abc.ABC):
    """One hypervisor host (or, for the fake driver, one simulated host)."""

    #: hypervisor type reported to the API
    hypervisor_type: str = ""

    @abc.abstractmethod
    async def init_host(self, host: str) -> None:
        """Prepare the host (connect, probe acceleration). Called once before anything else."""

    @abc.abstractmethod
    async def host_resources(self) -> HostResources:
        """Totals of this host; the agent reports them with its heartbeat."""

    @abc.abstractmethod
    async def list_instances(self) -> list[InstanceInfo]:
        """Every guest the hypervisor has, for power-state reconciliation."""

    @abc.abstractmethod
    async def get_info(self, uuid: str) -> InstanceInfo:
        """Raises InstanceNotFound when the guest does not exist."""

    @abc.abstractmethod
    async def spawn(self, spec: InstanceSpec, fetch_image: ImageFetcher) -> None:
        """Create disks and config drive, define and start the guest."""

    @abc.abstractmethod
    async def destroy(self, uuid: str) -> None:
        """Stop the guest and remove it with its disks, logs and config drive."""

    @abc.abstractmethod
    async def reboot(self, uuid: str, hard: bool) -> None:
        """Soft: ask the guest (ACPI) and fall back to hard after a timeout. Hard: reset."""

    @abc.abstractmethod
    async def power_off(self, uuid: str, timeout: float = 30.0) -> None:
        """Clean shutdown within ``timeout``, then forced off."""

    @abc.abstractmethod
    async def power_on(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def pause(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def unpause(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def suspend(self, uuid: str) -> None:
        """Save the guest's memory to disk and stop it (resume restores it)."""

    @abc.abstractmethod
    async def resume(self, uuid: str) -> None: ...

    @abc.abstractmethod
    async def snapshot(self, uuid: str, image_id: str, upload: ImageUploader) -> None:
        """Copy the root disk (consistent) and upload it as the data of ``image_id``."""

    @abc.abstractmethod
    async def resize(self, spec: InstanceSpec) -> None:
        """Apply a new flavor (vCPUs, RAM, bigger disk), keeping what revert needs."""

    @abc.abstractmethod
    async def confirm_resize(self, uuid: str) -> None:
        """Drop what was kept for revert."""

    @abc.abstractmethod
    async def revert_resize(self, spec: InstanceSpec) -> None:
        """Restore the guest (and its old disk) as it was before resize, with the old flavor."""

    @abc.abstractmethod
    async def rebuild(self, spec: InstanceSpec, fetch_image: ImageFetcher) -> None:
        """Replace the root disk with a fresh one from ``spec.image`` and start again."""

    @abc.abstractmethod
    async def rescue(self, spec: InstanceSpec, rescue_image: ImageRef, fetch_image: ImageFetcher) -> None:
        """Boot from the rescue image with the original root disk attached as a second disk."""

    @abc.abstractmethod
    async def unrescue(self, spec: InstanceSpec) -> None: ...

    @abc.abstractmethod
    async def attach_volume(self, uuid: str, connection: VolumeConnection) -> str:
        """Hot-plug a volume; returns the device name the guest sees (e.g. /dev/vdb)."""

    @abc.abstractmethod
    async def detach_volume(self, uuid: str, volume_id: str) -> None: ...

    @abc.abstractmethod
    async def attach_interface(self, uuid: str, vif: Vif) -> None: ...

    @abc.abstractmethod
    async def detach_interface(self, uuid: str, port_id: str) -> None: ...

    @abc.abstractmethod
    async def console_output(self, uuid: str, length: int | None = None) -> str:
        """The serial console log (the last ``length`` lines when given)."""

    @abc.abstractmethod
    async def console(self, uuid: str) -> ConsoleEndpoint:
        """The graphical console endpoint for the noVNC proxy."""

    async def close(self) -> None:
        """Release connections when the agent stops."""
