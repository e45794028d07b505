"""Boot benchmark of the libvirt driver: spawn → RUNNING and → the guest's boot banner.

Drives LibvirtDriver directly with the Stratus test image (built into $STRATUS_TEST_CACHE or
~/.cache/stratus-test), and prints JSON:
  - baseline: the same image booted by a bare qemu-system-x86_64 process (no libvirt), time
    to the banner — what the hypervisor itself costs here, measured in the same run;
  - cold: the first spawn, which also converts the image into the per-host cache;
  - sequential: p50/max over N boots one after another;
  - concurrent: N boots started together;
  - api (with --api): the same through a whole `stratus up` cloud with the libvirt driver,
    from the server create request (openstacksdk) to ACTIVE and to the banner in the console
    output the API returns (polled every 0.25 s).
Usage: .venv/bin/python bench/boot.py [--boots 5] [--memory 256] [--api]
Needs root, libvirtd (started if missing), qemu-system-x86 and qemu-utils.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stratus.compute.drivers.base import ImageRef, InstanceSpec, PowerState  # noqa: E402
from stratus.compute.drivers.libvirt import LibvirtDriver  # noqa: E402
from stratus.testimage import BOOT_MARKER, READY_MARKER, build  # noqa: E402

BANNER_TIMEOUT = 120.0


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 3)


async def wait_marker(path: Path, marker: bytes, started: float) -> float:
    deadline = started + BANNER_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if marker in path.read_bytes():
                return time.monotonic() - started
        except FileNotFoundError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{marker!r} not seen in {path} within {BANNER_TIMEOUT}s")


async def baseline_qemu(image: Path, workdir: Path, memory_mb: int) -> float:
    """A bare QEMU (TCG) process on an overlay of the same image: seconds to the banner."""
    overlay = workdir / "baseline.qcow2"
    console = workdir / "baseline.log"
    overlay.unlink(missing_ok=True)
    console.unlink(missing_ok=True)  # a previous run's banner must not count
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image), str(overlay)],
                   check=True)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", str(memory_mb), "-nodefaults",
        "-display", "none", "-drive", f"file={overlay},format=qcow2,if=virtio", "-serial", f"file:{console}",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return await wait_marker(console, BOOT_MARKER.encode(), started)
    finally:
        proc.kill()
        await proc.wait()


class Bench:
    def __init__(self, driver: LibvirtDriver, image: Path, memory_mb: int):
        self.driver = driver
        self.image = image
        self.memory_mb = memory_mb
        self.created: list[str] = []

    async def fetch(self, ref: ImageRef) -> Path:
        return self.image

    async def one_boot(self) -> dict:
        uuid = str(uuidlib.uuid4())
        spec = InstanceSpec(uuid=uuid, name=f"stratus-bench-{uuid[:8]}", hostname=f"bench-{uuid[:8]}", vcpus=1,
                            memory_mb=self.memory_mb, root_gb=1, config_drive=True,
                            image=ImageRef(id="stratus-test-bench", disk_format="qcow2"))
        self.created.append(uuid)
        started = time.monotonic()
        await self.driver.spawn(spec, self.fetch)
        running = time.monotonic() - started
        info = await self.driver.get_info(uuid)
        assert info.power_state == PowerState.RUNNING, info
        console = self.driver.paths(uuid).console_log
        banner = await wait_marker(console, BOOT_MARKER.encode(), started)
        ready = await wait_marker(console, READY_MARKER.encode(), started)
        await self.driver.destroy(uuid)
        return {"running": round(running, 3), "banner": round(banner, 3), "ready": round(ready, 3)}

    async def cleanup(self) -> None:
        for uuid in self.created:
            try:
                await self.driver.destroy(uuid)
            except Exception:
                pass


def api_bench(boots: int) -> dict:
    """Server create → ACTIVE and → banner through the compute API of a real all-in-one cloud."""
    import concurrent.futures

    from tests.cloudfixture import destroy_cloud, start_cloud

    state = Path(tempfile.mkdtemp(prefix="stratus-bench-cloud-"))
    cloud = start_cloud(state, extra_env={"STRATUS_COMPUTE__DRIVER": "libvirt"}, timeout=120)
    created: list[str] = []
    try:
        conn = cloud.sdk("demo")
        deadline = time.monotonic() + 180
        image = None
        while image is None:
            image = next((i for i in conn.image.images() if i.name == "stratus-test" and i.status == "active"), None)
            if image is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the stratus-test image was not registered")
                time.sleep(1)
        flavor = conn.compute.find_flavor("m1.tiny")

        def one(index: int) -> dict:
            own = cloud.sdk("demo")  # one connection per thread
            started = time.monotonic()
            server = own.compute.create_server(name=f"bench-{index}", image_id=image.id, flavor_id=flavor.id,
                                               networks="none", config_drive=True)
            created.append(server.id)
            active = banner = None
            while banner is None:
                if time.monotonic() - started > 2 * BANNER_TIMEOUT:
                    raise TimeoutError(f"server {server.id} showed no banner within {2 * BANNER_TIMEOUT}s "
                                       f"(ACTIVE after {active}s):\n{cloud.log_tail(20)}")
                if active is None:
                    current = own.compute.get_server(server.id)
                    if current.status == "ERROR":
                        raise RuntimeError(f"server {server.id} went to ERROR: {current.fault}")
                    if current.status == "ACTIVE":
                        active = time.monotonic() - started
                if active is not None and BOOT_MARKER in (own.compute.get_server_console_output(server.id)
                                                          .get("output") or ""):
                    banner = time.monotonic() - started
                # Polling costs CPU the TCG guests need on a 2-core host: 4 Hz is the resolution.
                time.sleep(0.25)
            own.compute.delete_server(server.id)
            own.compute.wait_for_delete(own.compute.get_server(server.id), wait=120)
            print(f"api boot {index}: ACTIVE {active:.2f}s banner {banner:.2f}s", file=sys.stderr)
            return {"running": round(active, 3), "banner": round(banner, 3), "ready": round(banner, 3)}

        sequential = [one(i) for i in range(boots)]
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(boots) as pool:
            together = list(pool.map(one, range(boots, 2 * boots)))
        wall = time.monotonic() - started

        def shape(rows):
            return {"n": len(rows), "active_p50_s": _p50([r["running"] for r in rows]),
                    "active_max_s": max(r["running"] for r in rows),
                    "banner_p50_s": _p50([r["banner"] for r in rows]), "banner_max_s": max(r["banner"] for r in rows)}

        return {"sequential": shape(sequential), "concurrent": dict(shape(together), wall_s=round(wall, 3))}
    finally:
        try:
            conn = cloud.sdk("demo")
            for server_id in created:
                try:
                    conn.compute.delete_server(server_id, ignore_missing=True)
                except Exception:
                    pass
        finally:
            destroy_cloud(cloud)
            shutil.rmtree(state, ignore_errors=True)


def summary(boots: list[dict]) -> dict:
    out = {"n": len(boots)}
    for key in ("running", "banner", "ready"):
        values = [b[key] for b in boots]
        out[f"{key}_p50_s"] = _p50(values)
        out[f"{key}_max_s"] = round(max(values), 3)
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--memory", type=int, default=256, help="guest RAM in MiB")
    parser.add_argument("--api", action="store_true", help="also boot through the compute API of a real cloud")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"error": "needs root (libvirtd manages QEMU processes)"}))
        return 1
    cache = Path(os.environ.get("STRATUS_TEST_CACHE") or os.path.expanduser("~/.cache/stratus-test")) / "testimage"
    image = Path(build(cache)["qcow2"])
    workdir = Path(tempfile.mkdtemp(prefix="stratus-bench-boot-"))
    driver = LibvirtDriver(workdir / "instances")
    bench = Bench(driver, image, args.memory)
    try:
        await driver.init_host("bench")
        baseline = [await baseline_qemu(image, workdir, args.memory) for _ in range(3)]
        cold = await bench.one_boot()
        sequential = [await bench.one_boot() for _ in range(args.boots)]
        started = time.monotonic()
        concurrent = await asyncio.gather(*(bench.one_boot() for _ in range(args.boots)))
        concurrent_wall = time.monotonic() - started
        resources = await driver.host_resources()
        report = {
            "benchmark": "boot",
            "accelerator": resources.details["accelerator"],
            "accelerator_reason": resources.details["accelerator_reason"],
            "guest": {"vcpus": 1, "memory_mb": args.memory, "image": str(image), "config_drive": True},
            "host_cpus": os.cpu_count(),
            "baseline_bare_qemu_banner_p50_s": _p50(baseline),
            "cold_first_boot": cold,
            "sequential": summary(sequential),
            "concurrent": dict(summary(concurrent), wall_s=round(concurrent_wall, 3)),
            "targets": {"running_s": 1.0, "banner_s": 5.0, "upstream_nova_kvm_active_mean_s": 13.0},
        }
        if args.api:
            report["api"] = await asyncio.get_running_loop().run_in_executor(None, api_bench, args.boots)
        print(json.dumps(report, indent=2))
        return 0
    finally:
        await bench.cleanup()
        await driver.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
