"""The `file` back end: every volume is a qcow2 (default) or raw file in one directory.

qcow2 volumes are chains of overlays. Freezing a volume (for a snapshot, a clone or a backup)
makes its current top file read-only for ever and puts a new empty overlay on top, so snapshots
and clones cost one small file and no copy; a snapshot's handle is the frozen file, a volume
made from it is a new overlay whose backing file is that frozen file. Files are only removed by
``collect``, which keeps every file some live handle reaches through its backing chain: deleting
a snapshot whose file a clone still reads is therefore safe.

raw volumes are plain files; freezing copies them with ``cp --reflink=auto``, which shares
blocks on filesystems that can (XFS, btrfs) and makes a full copy elsewhere (ext4).

Backing files of overlays made offline are recorded relative to the directory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from stratus.volume.drivers.base import GiB, Capacity, DriverError, LiveImage, VolumeDriver

log = logging.getLogger("stratus.volume.file")

FORMATS = ("qcow2", "raw")
_OURS = re.compile(r"^(volume|snapshot)-([0-9a-f-]+)-[0-9a-f]{8}\.(qcow2|raw)$")


async def run(*args: str, timeout: float = 3600) -> str:
    """Run a command; its stdout, or a DriverError carrying its stderr."""
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise DriverError(f"{args[0]} {args[1] if len(args) > 1 else ''} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise DriverError(f"{' '.join(args[:2])} failed: {err.decode(errors='replace').strip()[-500:]}")
    return out.decode()


async def image_info(path: Path, *, chain: bool = False, fmt: str | None = None) -> dict | list:
    args = ["qemu-img", "info", "-U", "--output=json"]
    if chain:
        args.append("--backing-chain")
    if fmt:
        args += ["-f", fmt]
    return json.loads(await run(*args, str(path)))


class FileDriver(VolumeDriver):
    name = "file"

    def __init__(self, directory: Path, fmt: str = "qcow2"):
        if fmt not in FORMATS:
            raise ValueError(f"configuration key 'volume.format' must be one of {', '.join(FORMATS)}, not {fmt!r}")
        self.directory = Path(directory)
        self.format = fmt
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)

    @classmethod
    def from_settings(cls, settings: dict) -> "FileDriver":
        return cls(Path(settings["path"]), settings.get("format", "qcow2"))

    # -- handles -----------------------------------------------------------------------------

    def _new_name(self, kind: str, owner: str, fmt: str | None = None) -> str:
        return f"{kind}-{owner}-{uuid.uuid4().hex[:8]}.{fmt or self.format}"

    def path(self, location: str) -> Path:
        if "/" in location or not _OURS.match(location):
            raise DriverError(f"{location!r} is not a file of this back end")
        return self.directory / location

    def image_format(self, location: str) -> str:
        return location.rsplit(".", 1)[1]

    def scratch_dir(self) -> Path:
        return self.directory / "tmp"

    def capacity(self) -> Capacity:
        usage = shutil.disk_usage(self.directory)
        return Capacity(total_gb=round(usage.total / GiB, 2), free_gb=round(usage.free / GiB, 2))

    # -- creation ----------------------------------------------------------------------------

    async def create_blank(self, volume_id: str, size_gb: int) -> str:
        name = self._new_name("volume", volume_id)
        await run("qemu-img", "create", "-q", "-f", self.format, str(self.directory / name), f"{size_gb}G")
        return name

    async def create_from_file(self, volume_id: str, source: Path, source_format: str, size_gb: int) -> str:
        info = await image_info(source, fmt=source_format)
        virtual = int(info["virtual-size"])
        if virtual > size_gb * GiB:
            raise DriverError(f"the image's virtual size ({virtual} bytes) is larger than the volume ({size_gb} GiB);"
                              f" create a volume of at least {-(-virtual // GiB)} GiB")
        name = self._new_name("volume", volume_id)
        dest = self.directory / name
        try:
            # -W: out-of-order writes into the new file (about twice as fast here, safe for a fresh target).
            await run("qemu-img", "convert", "-q", "-W", "-f", source_format, "-O", self.format, str(source), str(dest))
            await run("qemu-img", "resize", "-q", "-f", self.format, str(dest), f"{size_gb}G")
        except DriverError:
            dest.unlink(missing_ok=True)
            raise
        return name

    async def create_from_snapshot(self, volume_id: str, snapshot_location: str, size_gb: int) -> str:
        source = self.path(snapshot_location)
        name = self._new_name("volume", volume_id)
        dest = self.directory / name
        try:
            if self.image_format(snapshot_location) == "qcow2" and self.format == "qcow2":
                await run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", source.name, str(dest),
                          f"{size_gb}G")
            else:
                await run("qemu-img", "convert", "-q", "-f", self.image_format(snapshot_location), "-O",
                          self.format, str(source), str(dest))
                await run("qemu-img", "resize", "-q", "-f", self.format, str(dest), f"{size_gb}G")
        except DriverError:
            dest.unlink(missing_ok=True)
            raise
        return name

    async def import_raw(self, volume_id: str, source: Path, size_gb: int) -> str:
        return await self.create_from_file(volume_id, source, "raw", size_gb)

    # -- changes -----------------------------------------------------------------------------

    async def freeze(self, volume_id: str, location: str, live: LiveImage | None) -> tuple[str, str]:
        current = self.path(location)
        if self.image_format(location) == "qcow2":
            name = self._new_name("volume", volume_id, "qcow2")
            new = self.directory / name
            if live is not None:
                # The export process switches to the new overlay atomically.
                size = int((await image_info(current))["virtual-size"])
                await live.snapshot(new, current, size)
            else:
                size = int((await image_info(current))["virtual-size"])
                await run("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", current.name, str(new),
                          str(size))
            return location, name
        # raw: the frozen content is a copy; the volume keeps its file.
        name = self._new_name("snapshot", volume_id, "raw")
        dest = self.directory / name
        try:
            if live is not None:
                # The export holds the file open for writing: read it through a shared lock
                # (crash-consistent, like pulling the power on the guest at this instant).
                await run("qemu-img", "convert", "-q", "-U", "-f", "raw", "-O", "raw", str(current), str(dest))
            else:
                await run("cp", "--reflink=auto", "--sparse=always", str(current), str(dest))
        except DriverError:
            dest.unlink(missing_ok=True)
            raise
        return name, location

    async def extend(self, location: str, size_gb: int, live: LiveImage | None) -> None:
        if live is not None:
            await live.resize(size_gb * GiB)
            return
        await run("qemu-img", "resize", "-q", "-f", self.image_format(location), str(self.path(location)),
                  f"{size_gb}G")

    async def export_raw(self, location: str, dest: Path, fmt: str = "raw") -> None:
        await run("qemu-img", "convert", "-q", "-U", "-f", self.image_format(location), "-O", fmt,
                  str(self.path(location)), str(dest))

    async def backing_of(self, location: str) -> str | None:
        if self.image_format(location) != "qcow2":
            return None
        info = await image_info(self.path(location))
        backing = info.get("full-backing-filename") or info.get("backing-filename")
        return Path(backing).name if backing else None

    async def chain(self, location: str) -> list[str]:
        """The handle and every file under it, top first."""
        return [Path(entry["filename"]).name for entry in await image_info(self.path(location), chain=True)]

    @staticmethod
    def owner_of(location: str) -> str | None:
        """The volume a file was made for (frozen layers keep their volume's id in the name)."""
        match = _OURS.match(location)
        return match.group(2) if match else None

    async def merge_top(self, location: str) -> str:
        parent = await self.backing_of(location)
        if parent is None:
            raise DriverError(f"{location} has no backing file to merge into")
        # commit writes the top's clusters into its backing file (growing it if the top was
        # extended); -d leaves the top as it is, it is dropped afterwards anyway.
        await run("qemu-img", "commit", "-q", "-d", "-f", "qcow2", str(self.path(location)))
        return parent

    async def delete(self, location: str | None) -> None:
        # Nothing to do per handle: a file may still be another handle's backing file, and
        # ``collect`` decides with the whole picture.
        return None

    async def collect(self, live_locations: set[str], busy_owners: frozenset[str] = frozenset()) -> list[str]:
        needed: set[str] = set()
        for location in live_locations:
            path = self.directory / location
            if not path.exists():
                continue
            try:
                chain = await image_info(path, chain=True)
            except DriverError as exc:
                # Unreadable chain: keep everything rather than risk deleting a backing file.
                log.warning("not collecting files: cannot read the chain of %s: %s", location, exc)
                return []
            for entry in chain:
                needed.add(Path(entry["filename"]).name)
        removed = []
        for entry in self.directory.iterdir():
            match = _OURS.match(entry.name)
            # Files of a volume whose operation is still running are not in the database yet.
            if entry.is_file() and match and entry.name not in needed and match.group(2) not in busy_owners:
                entry.unlink(missing_ok=True)
                removed.append(entry.name)
        if removed:
            log.info("removed %d unreferenced volume file(s): %s", len(removed), ", ".join(sorted(removed)))
        return removed

    def allocated_bytes(self, location: str) -> int:
        try:
            return os.stat(self.path(location)).st_blocks * 512
        except OSError:
            return 0
