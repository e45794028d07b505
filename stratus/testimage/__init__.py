"""The Stratus test guest image: a tiny BIOS-bootable Debian-kernel + busybox guest
that reads OpenStack metadata (config drive or metadata service), runs #! user data,
takes a DHCP lease and starts dropbear for the injected key.

Build with ``python -m stratus.testimage build --out DIR`` or :func:`build`.
See docs/testimage.md.
"""

from .builder import BOOT_MARKER, KERNEL_CMDLINE, OUTPUT_NAMES, READY_MARKER, BuildError, build, cached

__all__ = ["BOOT_MARKER", "KERNEL_CMDLINE", "OUTPUT_NAMES", "READY_MARKER", "BuildError", "build", "cached"]
