"""The libvirt/QEMU virt driver (see driver.py and docs/libvirt.md).

Import ``LibvirtDriver`` from here; the submodules are connection (bounded libvirt calls,
starting libvirtd), probe (KVM or TCG), domain (XML), disks (image cache, qemu-img), driver, and
its mixins disk_actions (snapshot, resize, rebuild, rescue) and devices (hot-plug, consoles).
"""

from stratus.compute.drivers.libvirt.driver import LibvirtDriver

__all__ = ["LibvirtDriver"]
