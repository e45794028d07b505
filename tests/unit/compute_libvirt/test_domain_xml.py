"""Domain XML built from a spec, and what the driver reads back from live XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("libvirt", reason="libvirt-python is not installed (uv sync --all-extras)")

from stratus.compute.drivers.base import DriverError, VolumeConnection, Vif  # noqa: E402
from stratus.compute.drivers.libvirt import domain as dx  # noqa: E402
from stratus.compute.drivers.libvirt.driver import LibvirtDriver  # noqa: E402

from tests.unit.compute_libvirt.test_configdrive import make_spec  # noqa: E402


def build(tmp_path: Path, rescue: bool = False, **overrides) -> ET.Element:
    driver = LibvirtDriver(tmp_path, start_libvirtd=False)
    spec = make_spec(**overrides)
    paths = driver.paths(spec.uuid)
    paths.root.mkdir(parents=True)
    for f in (paths.disk, paths.ephemeral, paths.swap, paths.config_drive):
        f.touch()
    return ET.fromstring(driver._domain_xml(spec, paths, rescue=rescue)), paths


def test_domain_from_flavor_with_smbios_machine_and_devices(tmp_path):
    dom, paths = build(tmp_path, vcpus=2, memory_mb=384)
    assert dom.get("type") == "qemu"  # TCG until init_host's probe says KVM works
    assert dom.findtext("vcpu") == "2" and dom.findtext("memory") == "384" and dom.find("memory").get("unit") == "MiB"
    assert dom.find("os/type").get("machine") == "pc"
    entries = {e.get("name"): e.text for e in dom.findall("sysinfo/system/entry")}
    assert entries["manufacturer"] == "OpenStack Foundation" and entries["product"] == "OpenStack Compute"
    assert dom.find("os/smbios").get("mode") == "sysinfo"
    disks = [(d.find("target").get("dev"), d.find("target").get("bus"), d.get("device"), d.find("source").get("file"))
             for d in dom.findall("devices/disk")]
    assert disks == [("vda", "virtio", "disk", str(paths.disk)), ("vdb", "virtio", "disk", str(paths.ephemeral)),
                     ("vdc", "virtio", "disk", str(paths.swap)), ("hda", "ide", "cdrom", str(paths.config_drive))]
    assert dom.find("devices/disk/boot").get("order") == "1"
    serial = dom.find("devices/serial")
    assert serial.get("type") == "file" and serial.find("source").get("path") == str(paths.console_log)
    graphics = dom.find("devices/graphics")
    assert graphics.get("type") == "vnc" and graphics.get("listen") == "127.0.0.1" and graphics.get("autoport") == "yes"
    assert dx.is_ours(ET.tostring(dom, encoding="unicode"))


def test_interfaces(tmp_path):
    dom, _ = build(tmp_path)
    bridge, ethernet = dom.findall("devices/interface")
    assert bridge.get("type") == "bridge" and bridge.find("source").get("bridge") == "brq1"
    assert bridge.find("target").get("dev") == "tap3f0b6c1a-00" and bridge.find("mac").get("address") == "fa:16:3e:aa:bb:01"
    assert bridge.find("model").get("type") == "virtio" and bridge.find("mtu").get("size") == "1450"
    assert bridge.find("alias").get("name") == "ua-port-3f0b6c1a-0000-4000-8000-000000000001"
    assert ethernet.get("type") == "ethernet"
    assert ethernet.find("target").get("dev") == "tapcustom0" and ethernet.find("target").get("managed") == "no"
    with pytest.raises(DriverError, match="bridge_name"):
        dx.interface_element(Vif(port_id="p", mac="fa:16:3e:00:00:01", network_id="n"))
    with pytest.raises(DriverError, match="not supported"):
        dx.interface_element(Vif(port_id="p", mac="fa:16:3e:00:00:01", network_id="n", vif_type="ovs"))


def test_rescue_puts_the_rescue_disk_first(tmp_path):
    dom, paths = build(tmp_path, rescue=True)
    sources = [d.find("source").get("file") for d in dom.findall("devices/disk")]
    assert sources[:2] == [str(paths.rescue_disk), str(paths.disk)]
    assert dx.mode_of(ET.tostring(dom, encoding="unicode")) == "rescue"


def test_volumes_file_and_nbd(tmp_path):
    volumes = [VolumeConnection(volume_id="vol-file-0000000000000001", driver_volume_type="file",
                                data={"path": "/srv/v1.raw"}, device_name="/dev/vdf"),
               VolumeConnection(volume_id="vol-nbd", driver_volume_type="nbd",
                                data={"host": "127.0.0.1", "port": 10809, "name": "exp"}, read_only=True)]
    dom, _ = build(tmp_path, volumes=volumes)
    by_target = {d.find("target").get("dev"): d for d in dom.findall("devices/disk")}
    file_disk = by_target["vdf"]  # the device name hint is honoured when free
    assert file_disk.find("source").get("file") == "/srv/v1.raw" and file_disk.findtext("serial") == "vol-file-00000000000"
    nbd = next(d for d in dom.findall("devices/disk") if d.get("type") == "network")
    assert nbd.find("source").get("protocol") == "nbd" and nbd.find("source").get("name") == "exp"
    assert nbd.find("source/host").get("port") == "10809" and nbd.find("readonly") is not None
    with pytest.raises(DriverError, match="not supported"):
        dx.volume_disk(VolumeConnection(volume_id="v", driver_volume_type="iscsi"), "vdb")
    with pytest.raises(DriverError, match="needs data.path"):
        dx.volume_disk(VolumeConnection(volume_id="v", driver_volume_type="file"), "vdb")


def test_boot_from_volume_marks_the_first_volume_bootable(tmp_path):
    volumes = [VolumeConnection(volume_id="root-vol", driver_volume_type="file", data={"path": "/srv/root.raw"})]
    dom, _ = build(tmp_path, image=None, volumes=volumes)
    first = dom.findall("devices/disk")[0]
    assert first.find("source").get("file") == "/srv/root.raw" and first.find("boot").get("order") == "1"


def test_reading_live_xml():
    live = """<domain><devices>
      <disk type='file' device='disk'><source file='/a'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><source file='/b'/><target dev='vdb' bus='virtio'/><alias name='ua-vol-x'/></disk>
      <graphics type='vnc' port='5903' autoport='yes' listen='127.0.0.1'/></devices></domain>"""
    assert dx.vnc_endpoint(live) == ("127.0.0.1", 5903)
    used = dx.disk_targets(live)
    assert used == {"vda", "vdb"}
    assert dx.free_virtio_target(used) == "vdc" and dx.free_virtio_target(used, "/dev/vdk") == "vdk"
    assert dx.free_virtio_target(used, "/dev/vda") == "vdc" and dx.free_virtio_target(used, "/dev/sdb") == "vdc"
    assert "/b" in dx.device_with_alias(live, "disk", "ua-vol-x") and dx.device_with_alias(live, "disk", "nope") is None
    assert dx.vnc_endpoint("<domain><devices><graphics type='vnc' port='-1'/></devices></domain>") is None
    assert not dx.is_ours(live)


def test_from_config_validates(tmp_path):
    class Config:
        state_dir = tmp_path

        def __init__(self, section):
            self._section = section

        def section(self, name):
            return self._section

    driver = LibvirtDriver.from_config(Config({}))
    assert driver.instances_path == tmp_path / "instances"
    assert driver.image_cache.root == tmp_path / "instances" / "_base"
    with pytest.raises(DriverError, match="virt_accelerator"):
        LibvirtDriver.from_config(Config({"virt_accelerator": "xen"}))
    with pytest.raises(DriverError, match="soft_reboot_timeout"):
        LibvirtDriver.from_config(Config({"soft_reboot_timeout": -1}))


def test_redefinition_keeps_hot_plugged_devices():
    old = """<domain><devices>
      <disk type='file' device='disk'><source file='/root'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><source file='/vol'/><target dev='vdb' bus='virtio'/><alias name='ua-vol-v1'/>
        <address type='pci' slot='0x07'/></disk>
      <interface type='bridge'><source bridge='br0'/><mac address='fa:16:3e:00:00:09'/><alias name='ua-port-p9'/></interface>
      <interface type='bridge'><source bridge='br0'/><mac address='fa:16:3e:00:00:01'/><alias name='ua-port-p1'/></interface>
    </devices></domain>"""
    new = """<domain><devices>
      <disk type='file' device='disk'><source file='/rescue'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><source file='/root'/><target dev='vdb' bus='virtio'/></disk>
      <interface type='bridge'><source bridge='br0'/><mac address='fa:16:3e:00:00:01'/><alias name='ua-port-p1'/></interface>
    </devices></domain>"""
    merged = ET.fromstring(dx.carry_over_devices(old, new))
    volume = next(d for d in merged.findall("devices/disk") if d.find("source").get("file") == "/vol")
    assert volume.find("target").get("dev") == "vdc" and volume.find("address") is None
    macs = [i.find("mac").get("address") for i in merged.findall("devices/interface")]
    assert sorted(macs) == ["fa:16:3e:00:00:01", "fa:16:3e:00:00:09"]  # p1 not duplicated, p9 kept


def test_missing_bridge_is_a_clear_error(tmp_path):
    import asyncio

    from stratus.compute.drivers.base import Vif as V

    driver = LibvirtDriver(tmp_path, start_libvirtd=False)
    vif = V(port_id="p1", mac="fa:16:3e:00:00:01", network_id="n", bridge_name="brq-not-here")
    with pytest.raises(DriverError, match="bridge brq-not-here does not exist"):
        asyncio.run(driver._wait_for_bridges([vif], timeout=0.3))
    asyncio.run(driver._wait_for_bridges([V(port_id="p2", mac="fa:16:3e:00:00:02", network_id="n",
                                            bridge_name="lo")], timeout=0.3))  # exists: returns at once


def test_image_properties_choose_the_hardware(tmp_path):
    from stratus.compute.drivers.base import ImageRef

    image = ImageRef(id="img", properties={"hw_machine_type": "q35", "hw_disk_bus": "scsi", "hw_vif_model": "e1000"})
    dom, paths = build(tmp_path, image=image)
    assert dom.find("os/type").get("machine") == "q35"
    disks = [(d.find("target").get("dev"), d.find("target").get("bus"), d.get("device"))
             for d in dom.findall("devices/disk")]
    # root, ephemeral and swap on virtio-scsi; the config drive on SATA (q35 has no IDE)
    assert disks == [("sda", "scsi", "disk"), ("sdb", "scsi", "disk"), ("sdc", "scsi", "disk"), ("sdd", "sata", "cdrom")]
    assert dom.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    assert {i.find("model").get("type") for i in dom.findall("devices/interface")} == {"e1000"}
    assert dx.vif_model_of(ET.tostring(dom, encoding="unicode")) == "e1000"

    ide, _ = build(tmp_path / "ide", image=ImageRef(id="img", properties={"hw_disk_bus": "ide"}))
    assert [d.find("target").get("dev") for d in ide.findall("devices/disk")] == ["hda", "hdb", "hdc", "hdd"]

    for props, message in (({"hw_machine_type": "virt"}, "hw_machine_type"), ({"hw_disk_bus": "usb"}, "hw_disk_bus"),
                           ({"hw_machine_type": "q35", "hw_cdrom_bus": "ide"}, "needs hw_machine_type pc"),
                           ({"hw_vif_model": "vmxnet9"}, "hw_vif_model")):
        with pytest.raises(DriverError, match=message):
            dx.hardware_for(ImageRef(id="img", properties=props))
    assert dx.hardware_for(None) == dx.Hardware()
