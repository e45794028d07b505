"""Libvirt domain XML: built from an InstanceSpec, and read back from live domains.

Choices (and why):
- machine ``pc`` (i440FX): the config drive sits on an IDE CD-ROM, and the Debian cloud kernel
  has no SATA driver, so q35's SATA CD-ROM would be invisible to it;
- virtio disks and virtio-net NICs: the fast paths every cloud image supports;
- a ``<serial type='file'>`` console (written through virtlogd, which also rotates it) so the
  console log exists without anyone attached; no pty;
- VNC on 127.0.0.1 with an automatic port: only the host's noVNC proxy reaches it;
- SMBIOS manufacturer "OpenStack Foundation", product "OpenStack Compute": cloud-init uses the
  product name to decide that the OpenStack metadata service is worth asking;
- device aliases ``ua-port-<port id>`` and ``ua-vol-<volume id>`` so interfaces and volumes are
  found again by the ids the agent knows, and the volume id as the disk serial (the guest sees
  /dev/disk/by-id/virtio-<id prefix>);
- a ``<metadata>`` element in Stratus's namespace marks the domains this driver owns.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from stratus.compute.drivers.base import DriverError, ImageRef, InstanceSpec, VolumeConnection, Vif

from stratus.compute.configdrive import tap_name

STRATUS_NS = "https://stratus.dev/xmlns/libvirt/instance/1"
ET.register_namespace("stratus", STRATUS_NS)

SMBIOS_MANUFACTURER = "OpenStack Foundation"
SMBIOS_PRODUCT = "OpenStack Compute"
MACHINE_TYPE = "pc"


# Image properties (Glance ``hw_*``) that pick the guest's virtual hardware, and what they allow.
VIF_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet")
DISK_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}
_MACHINE_TYPE = re.compile(r"^(pc|q35|pc-i440fx-[0-9.]+|pc-q35-[0-9.]+)$")


@dataclass
class Hardware:
    machine: str = MACHINE_TYPE
    disk_bus: str = "virtio"
    cdrom_bus: str = "ide"
    vif_model: str = "virtio"

    @property
    def is_q35(self) -> bool:
        return "q35" in self.machine


def hardware_for(image: ImageRef | None) -> Hardware:
    """The virtual hardware an image asks for (hw_machine_type, hw_disk_bus, hw_cdrom_bus,
    hw_vif_model), validated: a bad value is a DriverError naming the property."""
    props = (image.properties if image else None) or {}
    machine = str(props.get("hw_machine_type") or MACHINE_TYPE)
    if not _MACHINE_TYPE.match(machine):
        raise DriverError(f"image property hw_machine_type={machine!r} is not supported (pc, q35, pc-i440fx-X, pc-q35-X)")
    hardware = Hardware(machine=machine, cdrom_bus="sata" if "q35" in machine else "ide")
    for key, attr in (("hw_disk_bus", "disk_bus"), ("hw_cdrom_bus", "cdrom_bus")):
        value = props.get(key)
        if value is None:
            continue
        if value not in DISK_BUS_PREFIX:
            raise DriverError(f"image property {key}={value!r} is not supported ({', '.join(DISK_BUS_PREFIX)})")
        if value == "ide" and hardware.is_q35:
            raise DriverError(f"image property {key}=ide needs hw_machine_type pc (q35 has no IDE)")
        setattr(hardware, attr, value)
    if hardware.cdrom_bus == "virtio":
        hardware.cdrom_bus = "scsi"  # a CD-ROM cannot sit on virtio-blk; virtio-scsi is the virtio way
    model = props.get("hw_vif_model")
    if model is not None:
        if model not in VIF_MODELS:
            raise DriverError(f"image property hw_vif_model={model!r} is not supported ({', '.join(VIF_MODELS)})")
        hardware.vif_model = model
    return hardware


@dataclass
class InstancePaths:
    """Where one instance's files live: everything under <instances_path>/<uuid>/."""

    root: Path

    @property
    def disk(self) -> Path:
        return self.root / "disk"

    @property
    def ephemeral(self) -> Path:
        return self.root / "disk.eph0"

    @property
    def swap(self) -> Path:
        return self.root / "disk.swap"

    @property
    def config_drive(self) -> Path:
        return self.root / "disk.config"

    @property
    def rescue_disk(self) -> Path:
        return self.root / "disk.rescue"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"

    @property
    def resize_dir(self) -> Path:
        return self.root / "resize"

    @property
    def rescue_dir(self) -> Path:
        return self.root / "rescue"


@dataclass
class Disk:
    target: str  # vda, vdb, hda
    path: str | None = None  # file-backed disks
    format: str = "qcow2"
    bus: str = "virtio"
    device: str = "disk"  # disk | cdrom
    readonly: bool = False
    serial: str | None = None
    alias: str | None = None
    # network disks: {"protocol": "nbd", "host": ..., "port": ..., "name": ...}
    network: dict | None = None
    boot_order: int | None = None


@dataclass
class DomainPlan:
    """Everything the XML needs; built by the driver from a spec and the instance's files."""

    spec: InstanceSpec
    domain_type: str  # 'qemu' (TCG) or 'kvm'
    disks: list[Disk] = field(default_factory=list)
    console_log: Path | None = None
    mode: str = "normal"  # normal | rescue
    hardware: Hardware = field(default_factory=Hardware)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs) -> ET.Element:
    element = ET.SubElement(parent, tag, {k.rstrip("_"): str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        element.text = str(text)
    return element


def port_alias(port_id: str) -> str:
    return f"ua-port-{port_id}"


def volume_alias(volume_id: str) -> str:
    return f"ua-vol-{volume_id}"


def disk_element(disk: Disk) -> ET.Element:
    element = ET.Element("disk", {"type": "network" if disk.network else "file", "device": disk.device})
    _sub(element, "driver", name="qemu", type=disk.format)
    if disk.network:
        source = _sub(element, "source", protocol=disk.network["protocol"], name=disk.network.get("name"))
        _sub(source, "host", name=disk.network["host"], port=disk.network["port"])
    else:
        _sub(element, "source", file=disk.path)
    _sub(element, "target", dev=disk.target, bus=disk.bus)
    if disk.readonly:
        _sub(element, "readonly")
    if disk.serial:
        _sub(element, "serial", disk.serial)
    if disk.boot_order is not None:
        _sub(element, "boot", order=disk.boot_order)
    if disk.alias:
        _sub(element, "alias", name=disk.alias)
    return element


def interface_element(vif: Vif, model: str = "virtio") -> ET.Element:
    if vif.vif_type == "bridge":
        if not vif.bridge_name:
            raise DriverError(f"port {vif.port_id}: vif_type 'bridge' needs a bridge_name")
        element = ET.Element("interface", {"type": "bridge"})
        _sub(element, "source", bridge=vif.bridge_name)
        _sub(element, "target", dev=tap_name(vif))
    elif vif.vif_type == "ethernet":
        element = ET.Element("interface", {"type": "ethernet"})
        # managed='no': the network agent created the tap and wires it itself.
        _sub(element, "target", dev=tap_name(vif), managed="no")
    else:
        raise DriverError(f"port {vif.port_id}: vif_type '{vif.vif_type}' is not supported (bridge, ethernet)")
    _sub(element, "mac", address=vif.mac.lower())
    _sub(element, "model", type=model)
    if vif.mtu:
        _sub(element, "mtu", size=vif.mtu)
    _sub(element, "alias", name=port_alias(vif.port_id))
    return element


def volume_disk(connection: VolumeConnection, target: str) -> Disk:
    """A Disk for a volume connection: 'file' (a path on this host) or 'nbd' (host, port, export)."""
    data = connection.data or {}
    common = dict(target=target, format=str(data.get("format") or "raw"), readonly=connection.read_only,
                  serial=connection.volume_id[:20], alias=volume_alias(connection.volume_id))
    if connection.driver_volume_type in ("file", "local"):
        path = data.get("path") or data.get("device_path")
        if not path:
            raise DriverError(f"volume {connection.volume_id}: a 'file' connection needs data.path")
        return Disk(path=str(path), **common)
    if connection.driver_volume_type == "nbd":
        host, port = data.get("host"), data.get("port")
        if not host or not port:
            raise DriverError(f"volume {connection.volume_id}: an 'nbd' connection needs data.host and data.port")
        return Disk(network={"protocol": "nbd", "host": host, "port": int(port),
                             "name": data.get("name") or data.get("export")}, **common)
    raise DriverError(f"volume {connection.volume_id}: connection type '{connection.driver_volume_type}' "
                      "is not supported by the libvirt driver (file, nbd)")


def build_domain_xml(plan: DomainPlan) -> str:
    spec = plan.spec
    dom = ET.Element("domain", {"type": plan.domain_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    _sub(dom, "title", spec.hostname)
    metadata = _sub(dom, "metadata")
    owner = ET.SubElement(metadata, f"{{{STRATUS_NS}}}instance")
    ET.SubElement(owner, f"{{{STRATUS_NS}}}mode").text = plan.mode
    ET.SubElement(owner, f"{{{STRATUS_NS}}}flavor", {
        "vcpus": str(spec.vcpus), "memory_mb": str(spec.memory_mb), "root_gb": str(spec.root_gb),
        "ephemeral_gb": str(spec.ephemeral_gb), "swap_mb": str(spec.swap_mb)})
    if spec.image:
        ET.SubElement(owner, f"{{{STRATUS_NS}}}image", {"id": spec.image.id})
    ET.SubElement(owner, f"{{{STRATUS_NS}}}project", {"id": spec.project_id or ""})
    hw = plan.hardware
    ET.SubElement(owner, f"{{{STRATUS_NS}}}hardware", {"machine": hw.machine, "disk_bus": hw.disk_bus,
                                                       "cdrom_bus": hw.cdrom_bus, "vif_model": hw.vif_model})
    _sub(dom, "memory", spec.memory_mb, unit="MiB")
    _sub(dom, "currentMemory", spec.memory_mb, unit="MiB")
    _sub(dom, "vcpu", spec.vcpus, placement="static")

    sysinfo = _sub(dom, "sysinfo", type="smbios")
    system = _sub(sysinfo, "system")
    for name, value in (("manufacturer", SMBIOS_MANUFACTURER), ("product", SMBIOS_PRODUCT),
                        ("version", "stratus"), ("serial", spec.uuid), ("uuid", spec.uuid),
                        ("family", "Virtual Machine")):
        _sub(system, "entry", value, name=name)

    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine=plan.hardware.machine)
    _sub(os_el, "smbios", mode="sysinfo")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    if any(disk.bus == "scsi" for disk in plan.disks):
        _sub(devices, "controller", type="scsi", index=0, model="virtio-scsi")
    for disk in plan.disks:
        devices.append(disk_element(disk))
    for vif in spec.vifs:
        devices.append(interface_element(vif, plan.hardware.vif_model))
    if plan.console_log is not None:
        serial = _sub(devices, "serial", type="file")
        _sub(serial, "source", path=plan.console_log, append="on")
        _sub(serial, "target", port=0)
    graphics = _sub(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    _sub(graphics, "listen", type="address", address="127.0.0.1")
    video = _sub(devices, "video")
    _sub(video, "model", type="vga")
    # Entropy for guests that wait on it (the kernel's RNG at boot under TCG is slow otherwise).
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


# ---- reading live XML -------------------------------------------------------------------


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def is_ours(xml: str) -> bool:
    return parse(xml).find(f"metadata/{{{STRATUS_NS}}}instance") is not None


def mode_of(xml: str) -> str:
    element = parse(xml).find(f"metadata/{{{STRATUS_NS}}}instance/{{{STRATUS_NS}}}mode")
    return element.text if element is not None and element.text else "normal"


def vif_model_of(xml: str) -> str:
    """The NIC model the domain was built with (hot-plugged NICs match it)."""
    element = parse(xml).find(f"metadata/{{{STRATUS_NS}}}instance/{{{STRATUS_NS}}}hardware")
    return element.get("vif_model", "virtio") if element is not None else "virtio"


def vnc_endpoint(xml: str) -> tuple[str, int] | None:
    graphics = parse(xml).find("devices/graphics[@type='vnc']")
    if graphics is None:
        return None
    port = int(graphics.get("port") or -1)
    if port <= 0:
        return None
    listen = graphics.get("listen") or "127.0.0.1"
    return listen, port


def disk_targets(xml: str) -> set[str]:
    return {t.get("dev") for t in parse(xml).findall("devices/disk/target") if t.get("dev")}


def free_virtio_target(used: set[str], hint: str | None = None) -> str:
    """The device name for a new virtio disk: ``hint`` (e.g. /dev/vdc) when free, else the first free."""
    if hint:
        wanted = hint.rsplit("/", 1)[-1]
        if len(wanted) == 3 and wanted.startswith("vd") and wanted[2].isalpha() and wanted not in used:
            return wanted
    for letter in "bcdefghijklmnopqrstuvwxyz":
        if f"vd{letter}" not in used:
            return f"vd{letter}"
    raise DriverError("no free virtio disk name left (vdb..vdz all used)")


def device_with_alias(xml: str, tag: str, alias: str) -> str | None:
    """The XML of the <tag> device whose alias is ``alias`` (as libvirt needs for detaching)."""
    for element in parse(xml).findall(f"devices/{tag}"):
        alias_el = element.find("alias")
        if alias_el is not None and alias_el.get("name") == alias:
            return ET.tostring(element, encoding="unicode")
    return None


def file_disks(xml: str) -> list[tuple[str, str]]:
    """(target, source file) of every file-backed disk."""
    out = []
    for element in parse(xml).findall("devices/disk"):
        source, target = element.find("source"), element.find("target")
        if source is not None and target is not None and source.get("file"):
            out.append((target.get("dev"), source.get("file")))
    return out


def carry_over_devices(old_xml: str, new_xml: str) -> str:
    """``new_xml`` plus the interfaces and volumes of ``old_xml`` that it lacks.

    When a domain is redefined from a spec (resize, revert, rebuild, rescue, unrescue), the spec
    may not list what was hot-plugged since the guest was created: those devices (recognised by
    their ua-port-/ua-vol- aliases) are kept, with their PCI addresses dropped so libvirt places
    them anew, and a volume whose disk name the new layout took (rescue shifts the root disk to
    vdb) gets the next free name.
    """
    old, new = parse(old_xml), parse(new_xml)
    devices = new.find("devices")
    present = {a.get("name") for a in new.findall("devices/*/alias") if a.get("name")}
    targets = {t.get("dev") for t in new.findall("devices/disk/target") if t.get("dev")}
    for tag, prefix in (("interface", "ua-port-"), ("disk", "ua-vol-")):
        for element in old.findall(f"devices/{tag}"):
            alias = element.find("alias")
            name = alias.get("name") if alias is not None else None
            if not name or not name.startswith(prefix) or name in present:
                continue
            for address in element.findall("address"):
                element.remove(address)
            if tag == "disk":
                target = element.find("target")
                if target.get("dev") in targets:
                    target.set("dev", next(f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz"
                                           if f"vd{c}" not in targets))
                targets.add(target.get("dev"))
            devices.append(element)
    return ET.tostring(new, encoding="unicode")
