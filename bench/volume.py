"""Block storage latency and volume-from-image throughput, measured through the public API.

Runs its own `stratus up` (identity + volume, and image when present) in a temporary state
directory and measures:
  - create: POST /volumes (1 GiB blank) until the volume is `available`;
  - attach: POST /attachments with a connector (the NBD export is started) + os-complete;
  - detach: DELETE /attachments/{id} (the export is stopped, the volume is `available`);
  - a 1 GiB volume from a 1 GiB raw image (random data) until `available`, compared with a plain
    `cp` of the image file on the same disk (and `cp` + fsync) measured in the same run.
Prints one JSON document and removes everything it created (processes ended by PID).
Usage: .venv/bin/python bench/volume.py [--count N] [--image-mib N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stratus import services  # noqa: E402
from tests.cloudfixture import destroy_cloud, start_cloud  # noqa: E402

MiB = 1024 * 1024
CONNECTOR = {"host": "bench-compute", "ip": "127.0.0.1"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index] * 1000, 1)


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": pct(values, 0.50), "p99_ms": pct(values, 0.99),
            "mean_ms": round(statistics.mean(values) * 1000, 1)}


class Api:
    def __init__(self, cloud, user: str = "demo"):
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": cloud.secrets()[f"{user}_password"]}}},
            "scope": {"project": {"name": user, "domain": {"id": "default"}}}}}
        r = httpx.post(f"{cloud.identity_url}/v3/auth/tokens", json=body, timeout=30)
        r.raise_for_status()
        self.token = r.headers["x-subject-token"]
        project = r.json()["token"]["project"]["id"]
        self.project_id = project
        self.base = f"{cloud.url}/volume/v3/{project}"
        self.image_base = f"{cloud.url}/image"
        self.client = httpx.Client(timeout=600, headers={"X-Auth-Token": self.token,
                                                         "OpenStack-API-Version": "volume 3.71"})

    def __call__(self, method, path, **kw):
        return self.client.request(method, self.base + path, **kw)

    def wait_volume(self, vid: str, want: str = "available", timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            vol = self("GET", f"/volumes/{vid}").json()["volume"]
            if vol["status"] == want:
                return vol
            if vol["status"].startswith("error") or time.monotonic() > deadline:
                raise RuntimeError(f"volume {vid} is {vol['status']}: {vol.get('error_reason')}")
            time.sleep(0.01)


def bench_create_attach(api: Api, count: int) -> dict:
    create, attach, detach, delete_ids = [], [], [], []
    for i in range(count):
        start = time.perf_counter()
        r = api("POST", "/volumes", json={"volume": {"size": 1, "name": f"bench-{i}"}})
        r.raise_for_status()
        vid = r.json()["volume"]["id"]
        api.wait_volume(vid)
        create.append(time.perf_counter() - start)
        delete_ids.append(vid)

        start = time.perf_counter()
        r = api("POST", "/attachments", json={"attachment": {"volume_uuid": vid, "instance_uuid": str(uuid.uuid4()),
                                                             "connector": CONNECTOR, "mode": "rw"}})
        r.raise_for_status()
        att = r.json()["attachment"]
        api("POST", f"/attachments/{att['id']}/action", json={"os-complete": None}).raise_for_status()
        attach.append(time.perf_counter() - start)

        start = time.perf_counter()
        api("DELETE", f"/attachments/{att['id']}").raise_for_status()
        detach.append(time.perf_counter() - start)
    for vid in delete_ids:
        api("DELETE", f"/volumes/{vid}")
    return {"create_1gib_blank": summary(create), "attach": summary(attach), "detach": summary(detach)}


def make_image(path: Path, size: int) -> None:
    block = os.urandom(8 * MiB)
    with open(path, "wb") as f:
        written = 0
        while written < size:
            chunk = (written.to_bytes(8, "little") + block[8:])[: size - written]
            f.write(chunk)
            written += len(chunk)
        f.flush()
        os.fsync(f.fileno())


def bench_from_image(api: Api, state: Path, size: int) -> dict:
    src = state / "bench-image.raw"
    make_image(src, size)
    r = api.client.post(f"{api.image_base}/v2/images", json={"name": "bench", "disk_format": "raw",
                                                               "container_format": "bare"})
    r.raise_for_status()
    image_id = r.json()["id"]
    with open(src, "rb") as f:
        api.client.put(f"{api.image_base}/v2/images/{image_id}/file", content=f,
                       headers={"Content-Type": "application/octet-stream"}).raise_for_status()

    # Baselines on the same disk: a plain copy, and a copy made durable.
    dest = state / "bench-copy.raw"
    start = time.perf_counter()
    shutil.copyfile(src, dest)
    cp_s = time.perf_counter() - start
    dest.unlink()
    start = time.perf_counter()
    subprocess.run(["cp", str(src), str(dest)], check=True)
    with open(dest, "rb") as f:
        os.fsync(f.fileno())
    cp_sync_s = time.perf_counter() - start
    dest.unlink()

    gib = -(-size // (1024 * MiB))
    start = time.perf_counter()
    r = api("POST", "/volumes", json={"volume": {"size": gib, "imageRef": image_id, "name": "bench-from-image"}})
    r.raise_for_status()
    vid = r.json()["volume"]["id"]
    api.wait_volume(vid)
    from_image_s = time.perf_counter() - start
    api("DELETE", f"/volumes/{vid}")
    api.client.delete(f"{api.image_base}/v2/images/{image_id}")
    src.unlink()
    return {"image_bytes": size, "volume_from_image_s": round(from_image_s, 2), "cp_s": round(cp_s, 2),
            "cp_fsync_s": round(cp_sync_s, 2), "ratio_vs_cp": round(from_image_s / cp_s, 2),
            "ratio_vs_cp_fsync": round(from_image_s / cp_sync_s, 2),
            "note": "volume-from-image = download through the image API to a scratch file + qemu-img convert "
                    "to qcow2 + resize; cp = one local copy"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--image-mib", type=int, default=1024)
    args = parser.parse_args()
    names = ["identity", "volume"]
    has_image = "image" in services.available()
    if has_image:
        names.insert(1, "image")
    state = Path(tempfile.mkdtemp(prefix="stratus-bench-vol-"))
    try:
        cloud = start_cloud(state, services=names, extra_env={"STRATUS_VOLUME__EXPORT_PORT_MIN": "22100",
                                                             "STRATUS_VOLUME__EXPORT_PORT_MAX": "22199"}, timeout=180)
    except Exception:
        shutil.rmtree(state, ignore_errors=True)  # start-up failed: nothing else to clean
        raise
    try:
        api = Api(cloud)
        # The bench makes more volumes than the default quota allows.
        Api(cloud, "admin")("PUT", f"/os-quota-sets/{api.project_id}", json={"quota_set": {
            "volumes": -1, "gigabytes": -1}}).raise_for_status()
        result = {"services": names, **bench_create_attach(api, args.count)}
        if has_image:
            result["volume_from_image"] = bench_from_image(api, state, args.image_mib * MiB)
        else:
            result["volume_from_image"] = {"skipped": "the image service is not in this build"}
    finally:
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
