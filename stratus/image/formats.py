"""What an image's bytes really are, judged from headers only while the upload streams.

Hypervisors interpret disk images: a qcow2 that names a backing file or an external data file,
or a VMDK whose extents point at other files, makes the host read files the uploader chose
(upstream Glance had several CVEs here). So the service never trusts ``disk_format``: it looks
at the first bytes (kept in a bounded buffer while the rest streams to the store) and at the
last 512 bytes (where a fixed VHD keeps its footer), and refuses a mismatch or an unsafe image.

Formats recognized by their magic: qcow2, vmdk (sparse), vhd (dynamic/differencing by the footer
copy at offset 0, fixed by the footer at the end), vhdx, vdi, iso. Anything else is "raw".

Rules (see docs/image.md):
- declared qcow2/vmdk/vhd/vhdx/vdi/iso: the bytes must be that format;
- declared raw (and ami/aki/ari/ploop, which have no header of their own that we check): the bytes
  must not be one of the *container* formats above (qcow2, vmdk, vhd dynamic, vhdx, vdi) — a qcow2
  uploaded as "raw" would be handed to a hypervisor as raw today and probed as qcow2 tomorrow. An
  ISO is accepted as raw (a hybrid ISO is a valid raw disk) and so is a fixed VHD (its data is
  raw sectors followed by a footer);
- qcow2 with a backing file, an external data file or an unknown incompatible feature, a VMDK
  that is not a single-extent monolithicSparse/streamOptimized file, a differencing VHD or VDI:
  refused;
- a header claiming a virtual size above the configured limit: refused.
"""

from __future__ import annotations

import re
import struct
import uuid
from dataclasses import dataclass

# How much of the start of an image is kept for inspection (ISO needs 32 KiB + a sector; a VMDK
# descriptor normally sits in the first few KiB but may be placed further on).
HEAD_BYTES = 1024 * 1024
TAIL_BYTES = 512

CONTAINER_FORMATS = ("qcow2", "vmdk", "vhd", "vhdx", "vdi")
RECOGNIZED = (*CONTAINER_FORMATS, "iso")
RAW_LIKE = ("raw", "ami", "aki", "ari", "ploop")

QCOW2_MAGIC = b"QFI\xfb"
VMDK_MAGIC = b"KDMV"
VHD_MAGIC = b"conectix"
VHDX_MAGIC = b"vhdxfile"
VDI_SIGNATURE = 0xBEDA107F
ISO_OFFSET = 0x8001  # "CD001" in the primary volume descriptor (sector 16, byte 1)

QCOW2_EXT_DATA_FILE = 0x44415441
QCOW2_EXT_END = 0
# Incompatible feature bits qemu defines: dirty, corrupt, external data file, compression type,
# extended L2. Anything else is a feature we cannot vouch for.
QCOW2_KNOWN_INCOMPATIBLE = 0b11111
QCOW2_INCOMPAT_DATA_FILE = 1 << 2


VHDX_REGION_TABLE = 0x30000
VHDX_METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e").bytes_le
VHDX_VIRTUAL_DISK_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8").bytes_le
VHDX_FILE_PARAMETERS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b").bytes_le
VHDX_PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c").bytes_le
VHDX_MAX_METADATA = 1024 * 1024


class FormatError(Exception):
    """The bytes are not what was declared, or are unsafe to hand to a hypervisor."""


@dataclass
class Verdict:
    format: str               # what the bytes are ("raw" when nothing else matched)
    virtual_size: int | None  # from the header; None when the format's header has none we read


def _qcow2(head: bytes) -> Verdict:
    if len(head) < 72:
        raise FormatError("qcow2 header is truncated")
    version, backing_offset, backing_size = struct.unpack_from(">IQI", head, 4)
    size = struct.unpack_from(">Q", head, 24)[0]
    if version not in (2, 3):
        raise FormatError(f"qcow2 version {version} is not supported")
    if backing_offset != 0 or backing_size != 0:
        raise FormatError("qcow2 images with a backing file are not allowed; flatten it first "
                          "(qemu-img convert -O qcow2 in.qcow2 out.qcow2)")
    header_length = 72
    if version == 3:
        if len(head) < 104:
            raise FormatError("qcow2 v3 header is truncated")
        incompatible = struct.unpack_from(">Q", head, 72)[0]
        if incompatible & QCOW2_INCOMPAT_DATA_FILE:
            raise FormatError("qcow2 images with an external data file are not allowed")
        if incompatible & ~QCOW2_KNOWN_INCOMPATIBLE:
            raise FormatError(f"qcow2 image uses unknown incompatible features {incompatible:#x}")
        header_length = struct.unpack_from(">I", head, 100)[0]
        if header_length < 104 or header_length > 65536:
            raise FormatError(f"qcow2 header length {header_length} is invalid")
    # Header extensions follow the header; walk them within what we hold.
    pos = (header_length + 7) & ~7 if version == 3 else 72
    while pos + 8 <= len(head):
        ext_type, ext_len = struct.unpack_from(">II", head, pos)
        if ext_type == QCOW2_EXT_END:
            break
        if ext_type == QCOW2_EXT_DATA_FILE:
            raise FormatError("qcow2 images with an external data file are not allowed")
        pos += 8 + ((ext_len + 7) & ~7)
    return Verdict("qcow2", size)


_EXTENT = re.compile(r'^\s*(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)")?', re.MULTILINE)
_CREATE_TYPE = re.compile(r'^\s*createType\s*=\s*"([^"]+)"', re.MULTILINE)


def _vmdk(head: bytes) -> Verdict:
    if len(head) < 64:
        raise FormatError("vmdk header is truncated")
    capacity, _grain, desc_offset, desc_size = struct.unpack_from("<QQQQ", head, 12)
    if desc_offset == 0 or desc_size == 0:
        # streamOptimized images may keep the descriptor elsewhere only when it is embedded; a
        # sparse header without one cannot be checked for references to other files.
        raise FormatError("vmdk image has no embedded descriptor; only monolithicSparse and "
                          "streamOptimized single-file images are accepted")
    start, length = desc_offset * 512, desc_size * 512
    if start + min(length, 512) > len(head) or length > HEAD_BYTES:
        raise FormatError("vmdk descriptor lies outside the first MiB of the image")
    text = head[start:start + length].split(b"\0", 1)[0].decode("latin-1")
    create = _CREATE_TYPE.search(text)
    create_type = create.group(1) if create else ""
    if create_type not in ("monolithicSparse", "streamOptimized"):
        raise FormatError(f"vmdk createType {create_type or 'missing'!r} is not allowed; only "
                          "single-file monolithicSparse and streamOptimized images are accepted")
    extents = _EXTENT.findall(text)
    if len(extents) != 1 or extents[0][2] != "SPARSE":
        raise FormatError("vmdk image must have exactly one SPARSE extent (it references other files)")
    return Verdict("vmdk", capacity * 512)


def _vhd(head: bytes) -> Verdict:
    if len(head) < 64:
        raise FormatError("vhd footer is truncated")
    size = struct.unpack_from(">Q", head, 48)[0]
    disk_type = struct.unpack_from(">I", head, 60)[0]
    if disk_type == 4:
        raise FormatError("differencing vhd images (with a parent disk) are not allowed")
    if disk_type not in (2, 3):
        raise FormatError(f"vhd disk type {disk_type} is not valid")
    return Verdict("vhd", size)


def vhdx_metadata_range(head: bytes) -> tuple[int, int]:
    """(offset, length) of a VHDX's metadata region, from the region table in the head."""
    if len(head) < VHDX_REGION_TABLE + 16 or head[VHDX_REGION_TABLE:VHDX_REGION_TABLE + 4] != b"regi":
        raise FormatError("vhdx region table is missing or truncated")
    count = struct.unpack_from("<I", head, VHDX_REGION_TABLE + 8)[0]
    for i in range(min(count, 2047)):
        pos = VHDX_REGION_TABLE + 16 + 32 * i
        if pos + 32 > len(head):
            break
        guid, offset, length, _required = struct.unpack_from("<16sQII", head, pos)
        if guid == VHDX_METADATA_REGION:
            if length > VHDX_MAX_METADATA or length < 32:
                raise FormatError(f"vhdx metadata region of {length} bytes is not supported")
            return offset, length
    raise FormatError("vhdx image has no metadata region")


def vhdx_virtual_size(metadata: bytes) -> int:
    """The virtual size from a VHDX metadata region; refuses differencing disks."""
    if metadata[:8] != b"metadata":
        raise FormatError("vhdx metadata table signature is missing")
    count = struct.unpack_from("<H", metadata, 10)[0]
    size = None
    for i in range(min(count, 2047)):
        pos = 32 + 32 * i
        if pos + 32 > len(metadata):
            break
        guid, offset, length, _flags = struct.unpack_from("<16sIII", metadata, pos)
        if guid == VHDX_PARENT_LOCATOR:
            raise FormatError("differencing vhdx images (with a parent disk) are not allowed")
        if guid == VHDX_FILE_PARAMETERS and offset + 8 <= len(metadata):
            if struct.unpack_from("<I", metadata, offset + 4)[0] & 0b10:
                raise FormatError("differencing vhdx images (with a parent disk) are not allowed")
        if guid == VHDX_VIRTUAL_DISK_SIZE and offset + 8 <= len(metadata) and length >= 8:
            size = struct.unpack_from("<Q", metadata, offset)[0]
    if size is None:
        raise FormatError("vhdx metadata has no virtual disk size")
    return size


def _vdi(head: bytes) -> Verdict:
    if len(head) < 0x178:
        raise FormatError("vdi header is truncated")
    image_type = struct.unpack_from("<I", head, 0x4C)[0]
    if image_type == 4:
        raise FormatError("differencing vdi images (with a parent disk) are not allowed")
    return Verdict("vdi", struct.unpack_from("<Q", head, 0x170)[0])


def detect(head: bytes, tail: bytes = b"") -> Verdict:
    """What the image is, from its first bytes (and its last 512, for a fixed VHD)."""
    if head[:4] == QCOW2_MAGIC:
        return _qcow2(head)
    if head[:4] == VMDK_MAGIC:
        return _vmdk(head)
    if head[:8] == VHD_MAGIC:
        return _vhd(head)
    if head[:8] == VHDX_MAGIC:
        return Verdict("vhdx", None)
    if len(head) >= 0x44 and struct.unpack_from("<I", head, 0x40)[0] == VDI_SIGNATURE:
        return _vdi(head)
    if head[:21] == b"# Disk DescriptorFile":
        raise FormatError("a bare vmdk descriptor references other files and is not allowed")
    if head[ISO_OFFSET:ISO_OFFSET + 5] == b"CD001":
        return Verdict("iso", None)
    if len(tail) == TAIL_BYTES and tail[:8] == VHD_MAGIC:
        verdict = _vhd(tail)
        return Verdict("vhd-fixed", verdict.virtual_size)
    return Verdict("raw", None)


def check(declared: str | None, head: bytes, tail: bytes, size: int, *, max_virtual_size: int) -> int:
    """Refuse (FormatError) bytes that do not match ``declared`` or are unsafe; return the
    virtual size to record."""
    verdict = detect(head, tail)
    found = verdict.format
    declared = declared or "raw"
    if declared in RECOGNIZED:
        ok = found == declared or (declared == "vhd" and found == "vhd-fixed")
        if not ok:
            what = "raw data" if found == "raw" else found.replace("-fixed", "")
            raise FormatError(f"disk_format is {declared} but the uploaded data is {what}; "
                              f"set disk_format to match the data")
    elif found in CONTAINER_FORMATS:
        raise FormatError(f"disk_format is {declared} but the uploaded data is a {found} image; "
                          f"set disk_format={found}")
    virtual = verdict.virtual_size
    if found in ("raw", "iso") or (found == "vhd-fixed" and declared != "vhd"):
        virtual = size
    if virtual is not None and virtual > max_virtual_size:
        raise FormatError(f"the image's virtual size {virtual} bytes is over the limit of "
                          f"{max_virtual_size} bytes")
    return virtual if virtual is not None else size


def early_check(declared: str | None, head: bytes, *, max_virtual_size: int) -> None:
    """Checks that can fail on the first bytes alone, so a bad upload stops before it is stored.

    A fixed VHD's footer is only seen at the end, so a raw-looking head declared vhd passes here."""
    if (declared or "raw") == "vhd" and detect(head).format == "raw":
        return
    check(declared, head, b"", len(head), max_virtual_size=max_virtual_size)


class Inspector:
    """Fed every chunk of an upload; keeps the first HEAD_BYTES and the last TAIL_BYTES only."""

    def __init__(self, declared: str | None, max_virtual_size: int):
        self.declared = declared
        self.max_virtual_size = max_virtual_size
        self.head = bytearray()
        self.tail = b""
        self.size = 0
        self.early_done = False
        # A VHDX keeps its virtual size in a metadata region past the head (qemu puts it at 3 MiB):
        # once the head says where, those bytes (at most 1 MiB) are kept as they stream by.
        self.extra_range: tuple[int, int] | None = None
        self.extra = bytearray()

    def _capture_extra(self, chunk, start: int) -> None:
        offset, length = self.extra_range
        lo, hi = max(offset, start), min(offset + length, start + len(chunk))
        if lo < hi:
            self.extra += chunk[lo - start:hi - start]

    def feed(self, chunk: bytes | memoryview) -> None:
        n = len(chunk)
        start = self.size
        if self.extra_range is not None:
            self._capture_extra(chunk, start)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
        if n >= TAIL_BYTES:
            self.tail = bytes(chunk[-TAIL_BYTES:])
        else:
            self.tail = (self.tail + bytes(chunk))[-TAIL_BYTES:]
        self.size += n
        if not self.early_done and len(self.head) >= HEAD_BYTES:
            self.early_done = True
            head = bytes(self.head)
            early_check(self.declared, head, max_virtual_size=self.max_virtual_size)
            if head[:8] == VHDX_MAGIC:
                self.extra_range = vhdx_metadata_range(head)
                # Bytes of the region already seen (it may start inside the head).
                self._capture_extra(head, 0)
                self._capture_extra(chunk[HEAD_BYTES - start:] if start < HEAD_BYTES else chunk,
                                    max(start, HEAD_BYTES))

    def finish(self) -> int:
        """The final verdict once every byte was seen; returns the virtual size."""
        head = bytes(self.head)
        if head[:8] == VHDX_MAGIC:
            if self.extra_range is None:
                self.extra_range = vhdx_metadata_range(head)
                self._capture_extra(head, 0)
            if len(self.extra) < self.extra_range[1]:
                raise FormatError("vhdx image is truncated before its metadata region")
            virtual = vhdx_virtual_size(bytes(self.extra))
            check(self.declared, head, b"", self.size, max_virtual_size=self.max_virtual_size)
            if virtual > self.max_virtual_size:
                raise FormatError(f"the image's virtual size {virtual} bytes is over the limit of "
                                  f"{self.max_virtual_size} bytes")
            return virtual
        return check(self.declared, head, self.tail if self.size >= TAIL_BYTES else b"",
                     self.size, max_virtual_size=self.max_virtual_size)
