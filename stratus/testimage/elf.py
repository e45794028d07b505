"""Just enough ELF64 reading to bundle binaries and kernel modules.

The builder needs two facts from ELF files without running them: the
``.modinfo`` strings of kernel modules (to learn their dependencies, since
the Debian kernel package ships no modules.dep) and the ``DT_NEEDED`` /
``PT_INTERP`` entries of dynamically linked programs (to bundle the shared
libraries they load from the unpacked packages rather than from the host).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_DT_NEEDED = 1
_SHT_DYNAMIC = 6


class ElfError(ValueError):
    pass


@dataclass
class _Section:
    name: str
    type: int
    offset: int
    size: int
    link: int


def _sections(data: bytes) -> list[_Section]:
    if data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("only little-endian ELF64 is supported")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = []
    for index in range(shnum):
        base = shoff + index * shentsize
        name_off, sh_type = struct.unpack_from("<II", data, base)
        offset, size, link = struct.unpack_from("<QQI", data, base + 0x18)
        raw.append((name_off, sh_type, offset, size, link))
    if not raw:
        return []
    strtab_off, strtab_size = raw[shstrndx][2], raw[shstrndx][3]
    names = data[strtab_off:strtab_off + strtab_size]
    result = []
    for name_off, sh_type, offset, size, link in raw:
        end = names.find(b"\0", name_off)
        result.append(_Section(names[name_off:end].decode(), sh_type, offset, size, link))
    return result


def module_info(path: Path) -> dict[str, list[str]]:
    """Return the ``key=value`` strings of a kernel module's .modinfo section."""
    data = path.read_bytes()
    info: dict[str, list[str]] = {}
    for section in _sections(data):
        if section.name == ".modinfo":
            blob = data[section.offset:section.offset + section.size]
            for entry in blob.split(b"\0"):
                if b"=" in entry:
                    key, _, value = entry.decode(errors="replace").partition("=")
                    info.setdefault(key, []).append(value)
    return info


def dynamic_needs(path: Path) -> tuple[str | None, list[str]]:
    """Return (program interpreter, DT_NEEDED library names) of an ELF file."""
    data = path.read_bytes()
    sections = _sections(data)
    interpreter = None
    needed: list[str] = []
    for section in sections:
        if section.name == ".interp":
            interpreter = data[section.offset:section.offset + section.size].rstrip(b"\0").decode()
        if section.type == _SHT_DYNAMIC:
            strtab = sections[section.link]
            for pos in range(section.offset, section.offset + section.size, 16):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == 0:
                    break
                if tag == _DT_NEEDED:
                    start = strtab.offset + value
                    needed.append(data[start:data.find(b"\0", start)].decode())
    return interpreter, needed
