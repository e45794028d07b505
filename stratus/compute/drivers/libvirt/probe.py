"""Does KVM really run guests here? Boot a probe guest under KVM and watch its serial port.

On some hosts /dev/kvm exists yet KVM guests hang (the vCPU spins in the host kernel at
100 % sys). So /dev/kvm alone decides nothing: the driver boots a transient domain of type
'kvm' and waits a few seconds for it to print on its serial port. Output means KVM works;
silence means software emulation (TCG, domain type 'qemu').

What the probe boots matters. On these hosts a hand-made boot sector that prints, takes timer
interrupts and even enters long mode with paging runs fine under KVM, while a Linux kernel
hangs right after its real-mode setup code. So the probe boots a Linux kernel directly
(``<kernel>`` with ``earlyprintk=ttyS0``) and waits for "Linux version": the configured
``[compute] accel_probe_kernel``, else the Stratus test image's kernel when it has been built,
else the host's /boot/vmlinuz*. Only when no kernel exists anywhere does it fall back to the
boot sector; since that proves nothing about Linux, a boot sector that runs still leaves the
host on TCG (uncached, so the next start probes again), and the reason says so. The answer is cached per host boot in /run, since
neither the kernel module nor the CPU changes without a reboot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid as uuidlib
from pathlib import Path

from stratus.compute.drivers.base import DriverError
from stratus.compute.drivers.libvirt.connection import LibvirtConnection, boot_id

LOG = logging.getLogger(__name__)

PROBE_MARKER = b"STRATUS-ACCEL-PROBE-OK"
CACHE_FILE = Path("/run/stratus/libvirt-accelerator.json")


def boot_sector(message: bytes = PROBE_MARKER + b"\r\n") -> bytes:
    """A BIOS boot sector: print ``message`` on COM1 (I/O port 0x3f8), then halt forever.

    Real-mode code loaded at 0x7c00 (QEMU's UART needs no set-up to accept bytes):
        cli; cld; xor ax,ax; mov ds,ax; mov dx,0x3f8; mov si,msg
        next: lodsb; test al,al; jz halt; out dx,al; jmp next
        halt: hlt; jmp halt
    """
    code_length = 23
    msg_address = 0x7C00 + code_length
    code = bytes([
        0xFA, 0xFC,                    # cli; cld
        0x31, 0xC0, 0x8E, 0xD8,        # xor ax,ax; mov ds,ax
        0xBA, 0xF8, 0x03,              # mov dx,0x3f8
        0xBE, msg_address & 0xFF, msg_address >> 8,  # mov si,msg
        0xAC,                          # next: lodsb
        0x84, 0xC0,                    # test al,al
        0x74, 0x03,                    # jz halt
        0xEE,                          # out dx,al
        0xEB, 0xF8,                    # jmp next
        0xF4,                          # halt: hlt
        0xEB, 0xFD,                    # jmp halt
    ])
    assert len(code) == code_length
    sector = code + message + b"\0"
    if len(sector) > 510:
        raise ValueError("probe message too long for a boot sector")
    return sector.ljust(510, b"\0") + b"\x55\xaa"


KERNEL_MARKER = b"Linux version"


def find_probe_kernel(configured: str = "", extra: list[Path] | None = None) -> Path | None:
    """The kernel the probe boots: configured, else a test image's (``extra`` first, e.g. the one
    `stratus up` builds under its state directory, then the test cache), else the host's."""
    if configured:
        return Path(configured)
    cache = os.environ.get("STRATUS_TEST_CACHE") or os.path.expanduser("~/.cache/stratus-test")
    candidates = list(extra or []) + [Path(cache) / "testimage" / "stratus-test.vmlinuz", Path("/boot/vmlinuz"),
                                      Path("/vmlinuz")]
    candidates += sorted(Path("/boot").glob("vmlinuz-*"), reverse=True)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.R_OK):
            return candidate
    return None


def probe_domain_xml(name: str, domain_type: str, disk: Path, serial_log: Path, kernel: Path | None = None) -> str:
    if kernel is not None:
        boot = (f"<kernel>{kernel}</kernel>"
                "<cmdline>console=ttyS0 earlyprintk=ttyS0 panic=-1 quiet</cmdline>")
    else:
        boot = "<boot dev='hd'/>"
    return f"""<domain type='{domain_type}'>
  <name>{name}</name>
  <uuid>{uuidlib.uuid4()}</uuid>
  <memory unit='MiB'>{128 if kernel else 32}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{boot}</os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='{disk}'/><target dev='hda' bus='ide'/>
    </disk>
    <serial type='file'><source path='{serial_log}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


async def boot_probe(conn: LibvirtConnection, domain_type: str, workdir: Path, wait: float,
                     kernel: Path | None = None) -> tuple[bool, float]:
    """Boot the probe guest as ``domain_type``; (marker seen, seconds until seen or given up)."""
    marker = KERNEL_MARKER if kernel is not None else PROBE_MARKER
    workdir.mkdir(parents=True, exist_ok=True)
    tag = uuidlib.uuid4().hex[:8]
    disk = workdir / f"probe-{tag}.img"
    serial_log = workdir / f"probe-{tag}.log"
    disk.write_bytes(boot_sector().ljust(1024 * 1024, b"\0"))
    name = f"stratus-accel-probe-{tag}"
    started = time.monotonic()
    domain = None
    try:
        # Transient: it vanishes from libvirt as soon as it is destroyed.
        domain = await conn.call(f"starting the {domain_type} probe guest",
                                 lambda c: c.createXML(probe_domain_xml(name, domain_type, disk, serial_log, kernel), 0),
                                 timeout=30)
        deadline = started + wait
        while time.monotonic() < deadline:
            if serial_log.exists() and marker in serial_log.read_bytes():
                return True, time.monotonic() - started
            await asyncio.sleep(0.1)
        return False, time.monotonic() - started
    finally:
        if domain is not None:
            try:
                await conn.run("stopping the probe guest", domain.destroy, timeout=30)
            except DriverError as exc:
                LOG.warning("could not stop probe guest %s: %s", name, exc)
        disk.unlink(missing_ok=True)
        serial_log.unlink(missing_ok=True)


async def choose_accelerator(conn: LibvirtConnection, workdir: Path, mode: str = "auto", wait: float = 8.0,
                             cache_file: Path = CACHE_FILE, probe_kernel: str = "",
                             kernel_candidates: list[Path] | None = None) -> dict:
    """{"accelerator": "kvm"|"tcg", "domain_type": "kvm"|"qemu", "reason": ...}, probing when needed."""
    if mode == "tcg":
        return {"accelerator": "tcg", "domain_type": "qemu", "reason": "configured ([compute] virt_accelerator)"}
    if mode == "kvm":
        return {"accelerator": "kvm", "domain_type": "kvm", "reason": "configured ([compute] virt_accelerator)"}
    if mode != "auto":
        raise DriverError(f"[compute] virt_accelerator must be auto, kvm or tcg, not {mode!r}")
    if not os.path.exists("/dev/kvm"):
        return {"accelerator": "tcg", "domain_type": "qemu", "reason": "/dev/kvm is absent"}
    current_boot = boot_id()
    try:
        cached = json.loads(cache_file.read_text())
        if cached.get("boot_id") == current_boot and cached.get("accelerator") in ("kvm", "tcg"):
            cached["reason"] = cached.get("reason", "") + " (cached for this boot)"
            return cached
    except (OSError, ValueError):
        pass
    kernel = find_probe_kernel(probe_kernel, kernel_candidates)
    what = f"a Linux kernel ({kernel})" if kernel else "a boot sector (no Linux kernel found to probe with)"
    try:
        works, seconds = await boot_probe(conn, "kvm", workdir, wait, kernel)
    except DriverError as exc:
        works, seconds = False, 0.0
        reason = f"KVM probe guest ({what}) failed to start: {exc}"
    else:
        reason = (f"KVM probe guest, {what}, printed on its serial port after {seconds:.1f}s" if works
                  else f"KVM probe guest, {what}, printed nothing within {wait:.0f}s (KVM hangs here)")
    unproven = works and kernel is None
    if unproven:
        # A boot sector runs under KVM even where Linux hangs: not proof enough to risk guests
        # that never boot. Stay on TCG, and probe again next start (a kernel may exist by then).
        works = False
        reason += ("; a boot sector is not proof that Linux runs, so TCG is used (set "
                   "[compute] accel_probe_kernel, or virt_accelerator = \"kvm\" to force KVM)")
    result = {"accelerator": "kvm" if works else "tcg", "domain_type": "kvm" if works else "qemu",
              "reason": reason, "boot_id": current_boot}
    if not unproven:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(result))
        except OSError as exc:
            LOG.warning("could not cache the accelerator choice in %s: %s", cache_file, exc)
    shutil.rmtree(workdir, ignore_errors=True)
    return result
