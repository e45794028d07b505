"""Instance disks: the per-host image cache, qcow2 overlays, ephemeral and swap disks.

Every image is converted once into ``<image_cache>/<image id>.qcow2`` (a standalone qcow2 with
no backing file). Root disks are qcow2 overlays on that base, so a boot costs a few KiB of
writes however large the image is. The declared disk_format is what qemu-img is told to read
(``-f``), never a guess: a "raw" image that happens to contain a qcow2 header pointing at a
host file must not be opened as qcow2.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path

from stratus.compute.drivers.base import DriverError, ImageFetcher, ImageRef

LOG = logging.getLogger(__name__)

GiB = 1024 ** 3
MiB = 1024 ** 2
# Formats qemu-img may read an image as; anything else is refused before qemu-img sees it.
READABLE_FORMATS = {"raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx"}
_QEMU_IMG_FORMAT = {"vhd": "vpc"}


async def run_tool(*argv: str, timeout: float = 300.0, what: str | None = None) -> str:
    """Run a host tool; a non-zero exit or a timeout is a DriverError carrying its stderr."""
    what = what or argv[0]
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError as exc:
        raise DriverError(f"{what}: {argv[0]} is not installed") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise DriverError(f"{what}: did not finish within {timeout:.0f}s") from None
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        message = (err or out).decode(errors="replace").strip().splitlines()
        raise DriverError(f"{what}: {message[-1] if message else f'exit status {proc.returncode}'}")
    return out.decode(errors="replace")


async def image_info(path: Path, fmt: str | None = None) -> dict:
    argv = ["qemu-img", "info", "--output=json"]
    if fmt:
        argv += ["-f", _QEMU_IMG_FORMAT.get(fmt, fmt)]
    argv.append(str(path))
    # -U: the disk may be open by a running QEMU; reading its header is still safe.
    argv.insert(2, "-U")
    return json.loads(await run_tool(*argv, timeout=60, what=f"qemu-img info {path.name}"))


async def virtual_size(path: Path, fmt: str | None = None) -> int:
    return int((await image_info(path, fmt))["virtual-size"])


async def create_overlay(base: Path, path: Path, size: int | None) -> None:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path)]
    if size:
        argv.append(str(size))
    await run_tool(*argv, timeout=60, what="creating the root disk")


async def create_ephemeral(path: Path, size_gb: int, label: str = "ephemeral0") -> None:
    """A sparse raw disk with an ext4 file system (as Nova formats ephemeral disks)."""
    with open(path, "wb") as handle:
        handle.truncate(size_gb * GiB)
    if shutil.which("mkfs.ext4") or Path("/usr/sbin/mkfs.ext4").exists():
        await run_tool("mkfs.ext4", "-q", "-F", "-L", label, "-E", "lazy_itable_init=1,lazy_journal_init=1",
                       str(path), timeout=120, what="formatting the ephemeral disk")


async def create_swap(path: Path, size_mb: int) -> None:
    with open(path, "wb") as handle:
        handle.truncate(size_mb * MiB)
    if shutil.which("mkswap") or Path("/usr/sbin/mkswap").exists():
        await run_tool("mkswap", "-q", str(path), timeout=60, what="formatting the swap disk")


async def resize_disk(path: Path, size: int) -> None:
    await run_tool("qemu-img", "resize", "-q", "-f", "qcow2", str(path), str(size), timeout=60,
                   what="growing the root disk")


async def convert(source: Path, source_format: str, dest: Path, dest_format: str = "qcow2",
                  force_share: bool = False, timeout: float = 600.0) -> None:
    argv = ["qemu-img", "convert", "-q", "-f", _QEMU_IMG_FORMAT.get(source_format, source_format),
            "-O", dest_format]
    if force_share:
        argv.insert(2, "-U")
    argv += [str(source), str(dest)]
    await run_tool(*argv, timeout=timeout, what=f"qemu-img convert of {source.name}")


class ImageCache:
    """Base images of this host, each fetched once (per image id) and converted to qcow2."""

    def __init__(self, root: Path):
        self.root = root
        self._locks: dict[str, asyncio.Lock] = {}

    def path_for(self, image_id: str) -> Path:
        if not image_id or "/" in image_id or image_id.startswith("."):
            raise DriverError(f"invalid image id {image_id!r}")
        return self.root / f"{image_id}.qcow2"

    async def base_for(self, image: ImageRef, fetch_image: ImageFetcher) -> Path:
        """The cached base of ``image``, fetching and converting it on first use."""
        path = self.path_for(image.id)
        lock = self._locks.setdefault(image.id, asyncio.Lock())
        async with lock:
            if path.exists():
                return path
            self.root.mkdir(parents=True, exist_ok=True)
            fmt = (image.disk_format or "raw").lower()
            if fmt not in READABLE_FORMATS:
                raise DriverError(f"image {image.id}: disk_format '{fmt}' cannot be booted by the libvirt "
                                  f"driver (supported: {', '.join(sorted(READABLE_FORMATS))})")
            try:
                source = Path(await fetch_image(image))
            except DriverError:
                raise
            except Exception as exc:  # the agent's fetcher: its failure is this spawn's fault
                raise DriverError(f"image {image.id}: download failed: {exc}") from exc
            info = await self._inspect(image, source, fmt)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                await convert(source, fmt, tmp)
                await self._check_bootable(image, tmp)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            LOG.info("image %s cached at %s (%s, virtual size %d)", image.id, path, fmt, info["virtual-size"])
            return path

    async def _inspect(self, image: ImageRef, source: Path, fmt: str) -> dict:
        try:
            info = await image_info(source, fmt)
        except DriverError as exc:
            raise DriverError(f"image {image.id} is not a valid {fmt} disk image: {exc}") from None
        if info.get("backing-filename"):
            raise DriverError(f"image {image.id} refers to a backing file ({info['backing-filename']}); "
                              "images must be self-contained")
        if fmt == "qcow2" and info.get("format") != "qcow2":
            raise DriverError(f"image {image.id} is declared qcow2 but is {info.get('format')}")
        return info

    async def _check_bootable(self, image: ImageRef, base: Path) -> None:
        """Refuse a disk whose first sector lacks the 0x55AA boot signature.

        The guest firmware (SeaBIOS) checks exactly this and otherwise prints "Boot failed: not
        a bootable disk" on a screen nobody watches while the server looks ACTIVE; failing here
        turns that into a fault that says why. GPT disks carry a protective MBR, so they pass.
        """
        first = base.with_name(base.name + ".sector0")
        try:
            await run_tool("qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=512", "count=1", f"if={base}",
                           f"of={first}", timeout=60, what=f"reading the boot sector of image {image.id}")
            sector = first.read_bytes()[:512]
        finally:
            first.unlink(missing_ok=True)
        if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
            raise DriverError(f"image {image.id} is not bootable: its first sector has no boot signature "
                              "(0x55AA), so the BIOS would refuse it")

    def remove_unused(self, in_use: set[str]) -> list[str]:
        """Delete cached bases whose image id is not in ``in_use``; returns the ids removed."""
        removed = []
        if not self.root.exists():
            return removed
        for entry in self.root.glob("*.qcow2"):
            image_id = entry.name[: -len(".qcow2")]
            if image_id not in in_use:
                entry.unlink(missing_ok=True)
                removed.append(image_id)
        return removed
