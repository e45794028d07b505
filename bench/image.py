"""Image service throughput and memory: a 1 GiB upload and download through the API, compared
with a plain `cp` of the same file on the same disk, and the image service's peak RSS.

Runs its own `stratus up` (identity + image) in a temporary state directory plus a second,
image-only process (`stratus serve image`) on the same state and database: the transfers go to
that process, so its RSS is the image service's alone. Prints one JSON document and removes
everything it created (processes are ended by PID). Usage: .venv/bin/python bench/image.py [--size-mib N]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cloudfixture import VENV_BIN, destroy_cloud, free_port, start_cloud  # noqa: E402

MiB = 1024 * 1024


def proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    """Samples VmRSS of a process every 20 ms; keeps the peak seen while running."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.running = True

    def run(self):
        while self.running:
            self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmRSS"))
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.join()
        return self.peak_kib


def make_source(path: Path, size: int) -> str:
    md5 = hashlib.md5()
    block = os.urandom(8 * MiB)
    with open(path, "wb") as f:
        written = 0
        while written < size:
            # Vary each block a little so no layer can deduplicate it.
            chunk = (written.to_bytes(8, "little") + block[8:])[: size - written]
            f.write(chunk)
            md5.update(chunk)
            written += len(chunk)
    return md5.hexdigest()


def hash_ceiling(path: Path) -> float:
    """Seconds to MD5 and SHA-512 the file in two parallel threads: the floor for any upload that
    must produce both digests (what Glance clients verify), whatever the transport."""
    md5, sha = hashlib.md5(), hashlib.sha512()
    start = time.perf_counter()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            a = threading.Thread(target=md5.update, args=(block,))
            a.start()
            sha.update(block)
            a.join()
    return time.perf_counter() - start


def upload(host: str, port: int, token: str, image_id: str, path: Path) -> float:
    conn = http.client.HTTPConnection(host, port, timeout=600, blocksize=MiB)
    size = path.stat().st_size
    start = time.perf_counter()
    with open(path, "rb") as f:
        conn.request("PUT", f"/image/v2/images/{image_id}/file", body=f, headers={
            "X-Auth-Token": token, "Content-Type": "application/octet-stream", "Content-Length": str(size)})
        resp = conn.getresponse()
        resp.read()
    elapsed = time.perf_counter() - start
    conn.close()
    if resp.status != 204:
        raise RuntimeError(f"upload answered {resp.status}")
    return elapsed


def download(host: str, port: int, token: str, image_id: str, out: Path) -> tuple[float, str]:
    conn = http.client.HTTPConnection(host, port, timeout=600)
    buf = bytearray(MiB)
    view = memoryview(buf)
    start = time.perf_counter()
    conn.request("GET", f"/image/v2/images/{image_id}/file", headers={"X-Auth-Token": token})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"download answered {resp.status}")
    with open(out, "wb") as f:
        while n := resp.readinto(buf):
            f.write(view[:n])
    elapsed = time.perf_counter() - start
    header_md5 = resp.getheader("Content-MD5", "")
    conn.close()
    return elapsed, header_md5


def start_image_process(cloud, work: Path) -> tuple[subprocess.Popen, int]:
    """`stratus serve image` on its own port, validating tokens against the cloud's identity."""
    import httpx

    port = free_port()
    env = dict(cloud.env)
    env.update(STRATUS_SERVER__PORT=str(port), STRATUS_AUTH__IDENTITY_URL=cloud.identity_url)
    log = open(work / "image-serve.log", "w")
    proc = subprocess.Popen([str(VENV_BIN / "stratus"), "serve", "image"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=str(REPO))
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/image/versions", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("stratus serve image did not start: " + (work / "image-serve.log").read_text()[-2000:])
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--no-verify-downloads", action="store_true",
                        help="run the service with [image] verify_downloads = false")
    args = parser.parse_args()
    size = args.size_mib * MiB

    work = Path(tempfile.mkdtemp(prefix="stratus-bench-image-"))
    state = work / "state"
    cloud = None
    image_proc = None
    try:
        cloud = start_cloud(state, services=["identity", "image"], extra_env={
            "STRATUS_IMAGE__REGISTER_TEST_IMAGE": "false",
            "STRATUS_IMAGE__IMAGE_SIZE_TOTAL": str(4 * size + MiB),
            "STRATUS_IMAGE__VERIFY_DOWNLOADS": "false" if args.no_verify_downloads else "true"}, timeout=180)
        image_proc, port = start_image_process(cloud, work)
        base = f"http://127.0.0.1:{port}/image"
        src = work / "source.raw"
        source_md5 = make_source(src, size)

        # Baseline: a plain copy on the same disk (the state directory lives under `work`).
        start = time.perf_counter()
        subprocess.run(["cp", "--reflink=never", str(src), str(work / "copy.raw")], check=True)
        cp_seconds = time.perf_counter() - start
        (work / "copy.raw").unlink()
        # A copy through user space in 1 MiB blocks, like the service's own data path.
        start = time.perf_counter()
        subprocess.run(["dd", f"if={src}", f"of={work / 'copy.raw'}", "bs=1M", "status=none"], check=True)
        dd_seconds = time.perf_counter() - start
        (work / "copy.raw").unlink()
        hash_seconds = hash_ceiling(src)

        import httpx

        token = cloud.token("admin")
        r = httpx.post(f"{base}/v2/images", headers={"X-Auth-Token": token}, timeout=30,
                       json={"name": "bench", "disk_format": "raw", "container_format": "bare"})
        r.raise_for_status()
        image_id = r.json()["id"]
        pid = image_proc.pid
        rss_idle_kib = proc_status_kib(pid, "VmRSS")
        hwm_before_kib = proc_status_kib(pid, "VmHWM")

        sampler = RssSampler(pid)
        sampler.start()
        up_seconds = upload("127.0.0.1", port, token, image_id, src)
        peak_upload_kib = sampler.stop()

        record = httpx.get(f"{base}/v2/images/{image_id}", headers={"X-Auth-Token": token}).json()
        sampler = RssSampler(pid)
        sampler.start()
        down_seconds, header_md5 = download("127.0.0.1", port, token, image_id, work / "down.raw")
        peak_download_kib = sampler.stop()
        hwm_after_kib = proc_status_kib(pid, "VmHWM")
        downloaded_ok = (work / "down.raw").stat().st_size == size and header_md5 == source_md5

        def rate(seconds):
            return round(size / MiB / seconds, 1)

        result = {
            "bench": "image",
            "size_bytes": size,
            "baseline_cp": {"seconds": round(cp_seconds, 3), "MiB_per_s": rate(cp_seconds)},
            "baseline_dd_bs1M": {"seconds": round(dd_seconds, 3), "MiB_per_s": rate(dd_seconds)},
            "md5_and_sha512_only": {"seconds": round(hash_seconds, 3), "MiB_per_s": rate(hash_seconds)},
            "upload": {"seconds": round(up_seconds, 3), "MiB_per_s": rate(up_seconds),
                       "ratio_vs_cp": round(cp_seconds / up_seconds, 3),
                       "ratio_vs_dd": round(dd_seconds / up_seconds, 3),
                       "ratio_vs_hashing_alone": round(hash_seconds / up_seconds, 3),
                       "checksum_ok": record["checksum"] == source_md5, "status": record["status"]},
            "download": {"server_verifies_md5": not args.no_verify_downloads, "seconds": round(down_seconds, 3), "MiB_per_s": rate(down_seconds),
                         "ratio_vs_cp": round(cp_seconds / down_seconds, 3),
                         "ratio_vs_dd": round(dd_seconds / down_seconds, 3), "content_ok": downloaded_ok},
            "image_service_rss_mib": {
                "idle_before": round(rss_idle_kib / 1024, 1),
                "peak_during_upload": round(peak_upload_kib / 1024, 1),
                "peak_during_download": round(peak_download_kib / 1024, 1),
                "vmhwm_before_transfers": round(hwm_before_kib / 1024, 1),
                "vmhwm_after_transfers": round(hwm_after_kib / 1024, 1),
            },
            "targets": {"ratio_vs_cp": 0.7, "peak_rss_mib": 100},
            "notes": "transfers go to an image-only process (stratus serve image); cp and the service share the disk and "
                     "the page cache; the client is Python http.client with 1 MiB blocks on the same 2 cores",
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        if image_proc is not None and image_proc.poll() is None:
            image_proc.terminate()
            try:
                image_proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                image_proc.kill()
                image_proc.wait()
        if cloud is not None:
            destroy_cloud(cloud)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
