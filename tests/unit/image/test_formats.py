"""The format inspector against real images made by qemu-img and hand-built hostile headers."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from stratus.image import formats

GiB = 1024 ** 3
LIMIT = 4 * GiB

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                    reason="needs qemu-img (Debian package qemu-utils) to make test images")


def make(tmp_path, fmt: str, size: str = "64M", *opts: str) -> bytes:
    path = tmp_path / f"disk.{fmt}"
    cmd = ["qemu-img", "create", "-q", "-f", fmt]
    for o in opts:
        cmd += ["-o", o]
    subprocess.run([*cmd, str(path), size], check=True)
    return path.read_bytes()


def inspect(data: bytes, declared: str, limit: int = LIMIT, chunk: int = 65536) -> int:
    ins = formats.Inspector(declared, limit)
    for i in range(0, len(data), chunk):
        ins.feed(data[i:i + chunk])
    return ins.finish()


@needs_qemu_img
@pytest.mark.parametrize("fmt,size", [("qcow2", 64 * 1024 ** 2), ("vmdk", 64 * 1024 ** 2), ("vdi", 64 * 1024 ** 2)])
def test_virtual_size_read_from_header(tmp_path, fmt, size):
    data = make(tmp_path, fmt, "64M")
    assert formats.detect(data[:formats.HEAD_BYTES]).format == fmt
    assert inspect(data, fmt) == size


@needs_qemu_img
def test_vhd_dynamic_and_fixed(tmp_path):
    dynamic = make(tmp_path, "vpc", "64M")
    assert formats.detect(dynamic).format == "vhd"
    # qemu rounds VHD sizes to its CHS geometry; the header's value is what we report.
    assert abs(inspect(dynamic, "vhd") - 64 * 1024 ** 2) < 1024 ** 2
    fixed = make(tmp_path, "vpc", "4M", "subformat=fixed")
    assert formats.detect(fixed[:4096], fixed[-512:]).format == "vhd-fixed"
    assert inspect(fixed, "vhd") > 0
    # A fixed VHD is raw sectors plus a footer: acceptable as raw too.
    assert inspect(fixed, "raw") == len(fixed)


@needs_qemu_img
def test_vhdx_virtual_size_from_metadata_region(tmp_path):
    data = make(tmp_path, "vhdx", "64M")
    assert formats.detect(data[:formats.HEAD_BYTES]).format == "vhdx"
    # Whatever the chunking, the metadata region (past the head) is captured as it streams by.
    for chunk in (65536, 100003, 3 * 1024 * 1024 + 7, len(data)):
        assert inspect(data, "vhdx", chunk=chunk) == 64 * 1024 ** 2, chunk
    with pytest.raises(formats.FormatError, match="over the limit"):
        inspect(data, "vhdx", limit=32 * 1024 ** 2)
    with pytest.raises(formats.FormatError, match="truncated"):
        inspect(data[:2 * 1024 * 1024], "vhdx")
    with pytest.raises(formats.FormatError, match="disk_format=vhdx"):
        inspect(data, "raw")


@needs_qemu_img
def test_differencing_vhdx_refused(tmp_path):
    base = tmp_path / "base.vhdx"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", str(base), "16M"], check=True)
    data = bytearray(base.read_bytes())
    offset, _ = formats.vhdx_metadata_range(bytes(data[:formats.HEAD_BYTES]))
    # Turn the first metadata entry into a parent locator, as a differencing disk has.
    data[offset + 32:offset + 48] = formats.VHDX_PARENT_LOCATOR
    with pytest.raises(formats.FormatError, match="differencing vhdx"):
        inspect(bytes(data), "vhdx")


@needs_qemu_img
def test_qcow2_with_backing_file_refused(tmp_path):
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    top = tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)], check=True)
    with pytest.raises(formats.FormatError, match="backing file"):
        inspect(top.read_bytes(), "qcow2")


@needs_qemu_img
def test_qcow2_with_external_data_file_refused(tmp_path):
    data = make(tmp_path, "qcow2", "16M", f"data_file={tmp_path / 'data.raw'}")
    with pytest.raises(formats.FormatError, match="external data file"):
        inspect(data, "qcow2")


@needs_qemu_img
def test_vmdk_referencing_other_files_refused(tmp_path):
    # A monolithicFlat VMDK is a text descriptor pointing at a separate -flat file.
    make(tmp_path, "vmdk", "16M", "subformat=monolithicFlat")
    descriptor = (tmp_path / "disk.vmdk").read_bytes()
    with pytest.raises(formats.FormatError, match="descriptor"):
        inspect(descriptor, "vmdk")
    split = make(tmp_path, "vmdk", "16M", "subformat=twoGbMaxExtentSparse")
    with pytest.raises(formats.FormatError):
        inspect(split, "vmdk")


def test_hand_built_vmdk_with_extra_extent_refused():
    descriptor = (b'# Disk DescriptorFile\nversion=1\ncreateType="monolithicSparse"\n'
                  b'RW 32768 SPARSE "disk.vmdk"\nRW 32768 FLAT "/etc/shadow" 0\n')
    header = bytearray(1024 * 4)
    header[0:4] = formats.VMDK_MAGIC
    struct.pack_into("<IIQQQQ", header, 4, 1, 3, 65536, 128, 1, 4)
    header[512:512 + len(descriptor)] = descriptor
    with pytest.raises(formats.FormatError, match="exactly one SPARSE extent"):
        formats.detect(bytes(header))


@needs_qemu_img
def test_declared_format_must_match(tmp_path):
    qcow = make(tmp_path, "qcow2", "16M")
    with pytest.raises(formats.FormatError, match="set disk_format=qcow2"):
        inspect(qcow, "raw")
    with pytest.raises(formats.FormatError, match="is qcow2 but the uploaded data is raw"):
        inspect(b"\0" * 100000, "qcow2")
    with pytest.raises(formats.FormatError, match="is vmdk but the uploaded data is qcow2"):
        inspect(qcow, "vmdk")


def test_virtual_size_over_limit_refused():
    header = bytearray(512)
    header[0:4] = formats.QCOW2_MAGIC
    struct.pack_into(">I", header, 4, 2)
    struct.pack_into(">Q", header, 24, 8 * GiB)
    with pytest.raises(formats.FormatError, match="over the limit"):
        formats.check("qcow2", bytes(header), b"", 512, max_virtual_size=4 * GiB)
    assert formats.check("qcow2", bytes(header), b"", 512, max_virtual_size=16 * GiB) == 8 * GiB


def test_early_check_stops_a_large_mismatch_on_the_first_mib():
    ins = formats.Inspector("qcow2", LIMIT)
    with pytest.raises(formats.FormatError):
        for _ in range(4):
            ins.feed(b"\1" * (512 * 1024))
    assert ins.size <= formats.HEAD_BYTES


def test_raw_iso_and_empty():
    iso = bytearray(40000)
    iso[formats.ISO_OFFSET:formats.ISO_OFFSET + 5] = b"CD001"
    assert inspect(bytes(iso), "iso") == len(iso)
    assert inspect(bytes(iso), "raw") == len(iso)
    assert inspect(b"hello" * 1000, "raw") == 5000
    assert inspect(b"", "raw") == 0
    with pytest.raises(formats.FormatError):
        inspect(b"", "qcow2")
    with pytest.raises(formats.FormatError, match="descriptor"):
        inspect(b'# Disk DescriptorFile\ncreateType="vmfs"\n', "raw")


def test_differencing_vhd_refused():
    footer = bytearray(512)
    footer[0:8] = formats.VHD_MAGIC
    struct.pack_into(">Q", footer, 48, GiB)
    struct.pack_into(">I", footer, 60, 4)
    with pytest.raises(formats.FormatError, match="differencing"):
        formats.detect(bytes(footer))
