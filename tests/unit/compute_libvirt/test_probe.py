"""The KVM probe's pieces that need no hypervisor: the boot sector and the cached choice."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("libvirt", reason="libvirt-python is not installed (uv sync --all-extras)")

from stratus.compute.drivers.base import DriverError  # noqa: E402
from stratus.compute.drivers.libvirt import probe  # noqa: E402
from stratus.compute.drivers.libvirt.connection import boot_id  # noqa: E402


def test_boot_sector_layout():
    sector = probe.boot_sector()
    assert len(sector) == 512 and sector[-2:] == b"\x55\xaa"
    assert probe.PROBE_MARKER in sector
    # mov si, imm16 points at the message inside the sector loaded at 0x7c00
    address = int.from_bytes(sector[10:12], "little")
    assert sector[address - 0x7C00:].startswith(probe.PROBE_MARKER)


def test_configured_modes_skip_the_probe(tmp_path):
    tcg = asyncio.run(probe.choose_accelerator(None, tmp_path, "tcg"))
    kvm = asyncio.run(probe.choose_accelerator(None, tmp_path, "kvm"))
    assert (tcg["accelerator"], tcg["domain_type"]) == ("tcg", "qemu")
    assert (kvm["accelerator"], kvm["domain_type"]) == ("kvm", "kvm")
    with pytest.raises(DriverError, match="virt_accelerator"):
        asyncio.run(probe.choose_accelerator(None, tmp_path, "fast"))


def test_probe_result_is_cached_per_boot(tmp_path, monkeypatch):
    monkeypatch.setattr(probe.os.path, "exists", lambda p: True if p == "/dev/kvm" else False)
    calls = []

    async def fake_probe(conn, domain_type, workdir, wait, kernel=None):
        calls.append(domain_type)
        return False, wait

    monkeypatch.setattr(probe, "boot_probe", fake_probe)
    cache = tmp_path / "accel.json"
    first = asyncio.run(probe.choose_accelerator(None, tmp_path / "w", "auto", wait=1, cache_file=cache))
    assert first["accelerator"] == "tcg" and "printed nothing" in first["reason"] and calls == ["kvm"]
    second = asyncio.run(probe.choose_accelerator(None, tmp_path / "w", "auto", wait=1, cache_file=cache))
    assert second["accelerator"] == "tcg" and "cached" in second["reason"] and calls == ["kvm"]
    # a different boot id (the host rebooted) probes again
    stale = json.loads(cache.read_text())
    stale["boot_id"] = "another-boot"
    cache.write_text(json.dumps(stale))
    asyncio.run(probe.choose_accelerator(None, tmp_path / "w", "auto", wait=1, cache_file=cache))
    assert calls == ["kvm", "kvm"]
    assert json.loads(cache.read_text())["boot_id"] == boot_id()


def test_probe_kernel_search(tmp_path, monkeypatch):
    kernel = tmp_path / "testimage" / "stratus-test.vmlinuz"
    kernel.parent.mkdir()
    kernel.write_bytes(b"kernel")
    monkeypatch.setenv("STRATUS_TEST_CACHE", str(tmp_path))
    assert probe.find_probe_kernel() == kernel
    assert probe.find_probe_kernel("/configured/vmlinuz") == probe.Path("/configured/vmlinuz")
    xml = probe.probe_domain_xml("p", "kvm", tmp_path / "d", tmp_path / "s", kernel)
    assert f"<kernel>{kernel}</kernel>" in xml and "earlyprintk=ttyS0" in xml


def test_a_boot_sector_alone_does_not_prove_kvm(tmp_path, monkeypatch):
    monkeypatch.setattr(probe.os.path, "exists", lambda p: True if p == "/dev/kvm" else False)
    monkeypatch.setattr(probe, "find_probe_kernel", lambda configured="", extra=None: None)
    kernels = []

    async def fake_probe(conn, domain_type, workdir, wait, kernel=None):
        kernels.append(kernel)
        return True, 0.5  # the boot sector printed under KVM

    monkeypatch.setattr(probe, "boot_probe", fake_probe)
    cache = tmp_path / "accel.json"
    result = asyncio.run(probe.choose_accelerator(None, tmp_path / "w", "auto", wait=1, cache_file=cache))
    assert result["accelerator"] == "tcg" and "not proof" in result["reason"]
    assert kernels == [None] and not cache.exists()  # probed again at the next start


def test_a_kernel_that_prints_under_kvm_chooses_kvm(tmp_path, monkeypatch):
    monkeypatch.setattr(probe.os.path, "exists", lambda p: True if p == "/dev/kvm" else False)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")

    async def fake_probe(conn, domain_type, workdir, wait, kernel=None):
        return kernel is not None, 1.5

    monkeypatch.setattr(probe, "boot_probe", fake_probe)
    result = asyncio.run(probe.choose_accelerator(None, tmp_path / "w", "auto", wait=1,
                                                  cache_file=tmp_path / "c.json", kernel_candidates=[kernel]))
    assert (result["accelerator"], result["domain_type"]) == ("kvm", "kvm") and str(kernel) in result["reason"]
