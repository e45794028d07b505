"""Write a gzip-compressed cpio "newc" archive, the format the kernel unpacks as initramfs.

Written in Python rather than with the cpio tool so that every entry is owned
by root, device nodes (/dev/console must exist before /init runs) can be added
without root privileges or mknod, and the output is reproducible (fixed mtime).
"""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

_ALIGN = 4


class NewcWriter:
    def __init__(self, out, mtime: int = 0):
        self._out = out
        self._ino = 1
        self._mtime = mtime
        self._seen: set[str] = set()

    def _pad(self, length: int) -> None:
        if length % _ALIGN:
            self._out.write(b"\0" * (_ALIGN - length % _ALIGN))

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/") or "."
        if name in self._seen:
            raise ValueError(f"duplicate initramfs entry {name}")
        self._seen.add(name)
        encoded = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (self._ino, mode, 0, 0, nlink, self._mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self._out.write(header + encoded)
        self._pad(len(header) + len(encoded))
        self._out.write(data)
        self._pad(len(data))
        self._ino += 1

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def tree(self, root: Path) -> None:
        """Add every entry under root (directories first, sorted, reproducible)."""
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            base = Path(dirpath)
            rel = base.relative_to(root).as_posix()
            if rel != ".":
                self.directory(rel, stat.S_IMODE(base.stat().st_mode))
            for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
                path = base / name
                relname = path.relative_to(root).as_posix()
                info = path.lstat()
                if stat.S_ISLNK(info.st_mode):
                    self.symlink(relname, os.readlink(path))
                elif stat.S_ISREG(info.st_mode):
                    self.file(relname, path.read_bytes(), stat.S_IMODE(info.st_mode))
            # os.walk would descend into symlinked directories only with followlinks.
            dirnames[:] = [d for d in dirnames if not (base / d).is_symlink()]

    def finish(self) -> None:
        self._entry("TRAILER!!!", 0)


def write_initramfs(root: Path, out_path: Path) -> None:
    """Pack root into out_path (gzip newc) and add the device nodes the kernel needs at once."""
    with open(out_path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        writer = NewcWriter(gz)
        writer.directory(".")
        writer.tree(root)
        if not (root / "dev").exists():
            writer.directory("dev")
        writer.char_device("dev/console", 5, 1)
        writer.char_device("dev/null", 1, 3, 0o666)
        writer.finish()
