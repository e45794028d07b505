"""Assemble a BIOS-bootable raw disk: MBR (syslinux mbr.bin) + one FAT16 partition
holding SYSLINUX, the kernel and the initramfs.

Everything is done on plain files: the FAT filesystem is created in a file by
mkfs.vfat -C, filled with mtools, made bootable by the mtools flavour of the
syslinux installer, and copied into the disk image at the partition offset.
No loop device, mount or root privilege is needed.
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

SECTOR = 512
PARTITION_START = 2048  # sectors: 1 MiB alignment, like every modern partitioner
_MIB = 1024 * 1024
_FAT16_LBA = 0x0E
_HEADS, _SPT = 255, 63


class DiskError(RuntimeError):
    pass


def _chs(lba: int) -> bytes:
    """Legacy CHS triple for an LBA (saturated the way partitioners do beyond 1024 cylinders)."""
    cylinder, rest = divmod(lba, _HEADS * _SPT)
    head, sector = divmod(rest, _SPT)
    if cylinder > 1023:
        return b"\xfe\xff\xff"
    return bytes([head, ((cylinder >> 2) & 0xC0) | (sector + 1), cylinder & 0xFF])


def _mbr(boot_code: bytes, start: int, count: int) -> bytes:
    if len(boot_code) > 440:
        boot_code = boot_code[:440]
    entry = (b"\x80" + _chs(start) + bytes([_FAT16_LBA]) + _chs(start + count - 1)
             + struct.pack("<II", start, count))
    disk_id = b"STRT"
    return (boot_code.ljust(440, b"\0") + disk_id + b"\0\0" + entry + b"\0" * 48 + b"\x55\xaa")


def _run(argv: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DiskError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stdout + proc.stderr).strip()[-2000:]}")


def build_disk(*, tools_root: Path, kernel: Path, initramfs: Path, cmdline: str,
               work_dir: Path, out_path: Path) -> None:
    """Write a bootable raw disk image to out_path.

    tools_root is an unpacked tree of the syslinux, syslinux-common, mtools and
    dosfstools packages; their programs are run from there.
    """
    env = dict(os.environ)
    env["PATH"] = f"{tools_root / 'usr/bin'}:{tools_root / 'sbin'}:{tools_root / 'usr/sbin'}:{env.get('PATH', '')}"
    # The partition image has no geometry mtools could check against a device.
    env["MTOOLS_SKIP_CHECK"] = "1"
    env["MTOOLS_NO_VFAT"] = "0"

    payload = kernel.stat().st_size + initramfs.stat().st_size
    part_bytes = max(16 * _MIB, -(-(payload + 4 * _MIB) // _MIB) * _MIB)
    part_sectors = part_bytes // SECTOR
    part_img = work_dir / "boot-partition.img"
    part_img.unlink(missing_ok=True)
    _run([str(tools_root / "sbin/mkfs.vfat"), "-C", "-F", "16", "-n", "STRATUSBOOT", "-i", "5354524b",
          "--invariant", "-h", str(PARTITION_START), str(part_img), str(part_bytes // 1024)], env)
    _run([str(tools_root / "usr/bin/syslinux"), "--install", str(part_img)], env)

    config = work_dir / "syslinux.cfg"
    config.write_text(
        "SERIAL 0 115200\n"
        "PROMPT 0\n"
        "TIMEOUT 0\n"
        "DEFAULT stratus\n"
        "LABEL stratus\n"
        "  LINUX /vmlinuz\n"
        "  INITRD /initrd.gz\n"
        f"  APPEND {cmdline}\n")
    mcopy = str(tools_root / "usr/bin/mcopy")
    for source, name in ((kernel, "vmlinuz"), (initramfs, "initrd.gz"), (config, "syslinux.cfg")):
        _run([mcopy, "-o", "-i", str(part_img), str(source), f"::{name}"], env)

    boot_code = (tools_root / "usr/lib/syslinux/mbr/mbr.bin").read_bytes()
    with open(out_path, "wb") as disk:
        disk.write(_mbr(boot_code, PARTITION_START, part_sectors))
        disk.seek(PARTITION_START * SECTOR)
        with open(part_img, "rb") as part:
            while chunk := part.read(_MIB):
                disk.write(chunk)
    part_img.unlink()


def convert_to_qcow2(raw: Path, qcow2: Path) -> None:
    try:
        proc = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
                              capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise DiskError("qemu-img not found: install the Debian package qemu-utils") from exc
    if proc.returncode != 0:
        raise DiskError(f"qemu-img convert failed: {proc.stderr.strip()}")
