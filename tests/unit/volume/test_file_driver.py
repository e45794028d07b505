"""The file back end and the NBD exporter with the real qemu tools (no cloud, no bus)."""

from __future__ import annotations

import shutil

import pytest

from stratus.volume.drivers.base import DriverError
from stratus.volume.drivers.file import FileDriver, image_info, run
from stratus.volume.transport import Exporter, LiveExport, port_is_free

pytestmark = pytest.mark.skipif(not shutil.which("qemu-img") or not shutil.which("qemu-storage-daemon"),
                                reason="needs qemu-img and qemu-storage-daemon (Debian package qemu-utils)")

VID = "0b7c2f9e-1111-4222-8333-944455556666"
CLONE = "0b7c2f9e-aaaa-4222-8333-944455556666"


async def write(path, pattern: int, offset: int = 0, length: int = 4096, fmt: str = "qcow2"):
    await run("qemu-io", "-f", fmt, "-c", f"write -P {pattern:#x} {offset} {length}", str(path))


async def reads(path, pattern: int, offset: int = 0, length: int = 4096, fmt: str = "qcow2") -> bool:
    try:
        out = await run("qemu-io", "-r", "-U", "-f", fmt, "-c", f"read -P {pattern:#x} {offset} {length}", str(path))
    except DriverError:
        return False
    return "Pattern verification failed" not in out


async def test_snapshot_and_clone_share_data_without_copies(tmp_path):
    drv = FileDriver(tmp_path / "v")
    loc = await drv.create_blank(VID, 1)
    await write(drv.path(loc), 0x11)
    frozen, active = await drv.freeze(VID, loc, None)
    assert frozen == loc and active != loc
    await write(drv.path(active), 0x22)
    # The snapshot keeps the old content, the volume has the new one.
    assert await reads(drv.path(frozen), 0x11)
    assert not await reads(drv.path(frozen), 0x22)
    assert await reads(drv.path(active), 0x22)
    clone = await drv.create_from_snapshot(CLONE, frozen, 2)
    assert await reads(drv.path(clone), 0x11)
    info = await image_info(drv.path(clone))
    assert info["virtual-size"] == 2 * 1024 ** 3
    assert info["actual-size"] < 1024 * 1024  # an overlay, not a copy

    # Collection keeps what live handles reach and removes the rest.
    assert await drv.collect({active, clone}) == []
    removed = await drv.collect({clone})
    assert removed == [active]
    assert drv.path(frozen).exists()  # still the clone's backing file
    assert sorted(await drv.collect(set())) == sorted([clone, frozen])


async def test_collect_spares_files_of_busy_volumes(tmp_path):
    drv = FileDriver(tmp_path / "v")
    loc = await drv.create_blank(VID, 1)
    assert await drv.collect(set(), frozenset({VID})) == []
    assert await drv.collect(set()) == [loc]


async def test_from_file_checks_size_and_converts(tmp_path):
    drv = FileDriver(tmp_path / "v")
    src = tmp_path / "img.raw"
    with open(src, "wb") as f:
        f.write(b"\x5a" * 4096)
        f.truncate(2 * 1024 ** 3)
    with pytest.raises(DriverError, match="larger than the volume"):
        await drv.create_from_file(VID, src, "raw", 1)
    loc = await drv.create_from_file(VID, src, "raw", 3)
    assert (await image_info(drv.path(loc)))["virtual-size"] == 3 * 1024 ** 3
    assert await reads(drv.path(loc), 0x5a)
    await drv.extend(loc, 4, None)
    assert (await image_info(drv.path(loc)))["virtual-size"] == 4 * 1024 ** 3


async def test_raw_format_freezes_by_copy(tmp_path):
    drv = FileDriver(tmp_path / "v", "raw")
    loc = await drv.create_blank(VID, 1)
    await write(drv.path(loc), 0x33, fmt="raw")
    frozen, active = await drv.freeze(VID, loc, None)
    assert active == loc and frozen != loc
    await write(drv.path(active), 0x44, fmt="raw")
    assert await reads(drv.path(frozen), 0x33, fmt="raw")


def test_unknown_handles_and_formats_are_refused(tmp_path):
    drv = FileDriver(tmp_path / "v")
    with pytest.raises(DriverError):
        drv.path("../../etc/passwd")
    with pytest.raises(ValueError, match="volume.format"):
        FileDriver(tmp_path / "w", "vmdk")


async def test_export_serves_nbd_and_survives_live_snapshot_and_resize(tmp_path):
    drv = FileDriver(tmp_path / "v")
    loc = await drv.create_blank(VID, 1)
    exporter = Exporter(tmp_path / "run", "127.0.0.1", 20900, 20999)
    export = await exporter.start(attachment_id="a1", volume_id=VID, path=drv.path(loc), image_format="qcow2",
                                  read_only=False, ports_in_use=set())
    url = f"nbd://127.0.0.1:{export.port}/{VID}"
    try:
        assert export.alive() and not port_is_free("127.0.0.1", export.port)
        await write(url, 0x5a, fmt="raw")
        live = LiveExport(export)
        frozen, active = await drv.freeze(VID, loc, live)
        assert export.node == "n1"
        await write(url, 0x6b, fmt="raw")  # goes to the new overlay
        assert await reads(drv.path(frozen), 0x5a)
        await drv.extend(active, 2, live)
        info = await image_info(url)
        assert info["virtual-size"] == 2 * 1024 ** 3
        assert await reads(url, 0x6b, fmt="raw")
    finally:
        await exporter.stop(export)
    assert not export.alive()
    assert await reads(drv.path(active), 0x6b)


async def test_read_only_export_refuses_writes(tmp_path):
    drv = FileDriver(tmp_path / "v")
    loc = await drv.create_blank(VID, 1)
    exporter = Exporter(tmp_path / "run", "127.0.0.1", 20900, 20999)
    export = await exporter.start(attachment_id="a2", volume_id=VID, path=drv.path(loc), image_format="qcow2",
                                  read_only=True, ports_in_use={20900})
    try:
        assert export.port != 20900
        with pytest.raises(DriverError):
            await write(f"nbd://127.0.0.1:{export.port}/{VID}", 0x1, fmt="raw")
    finally:
        await exporter.stop(export)
