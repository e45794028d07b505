"""Compute benchmarks, printed as JSON.

1. create→ACTIVE: N servers created through the API (real `stratus up`, fake virt driver, SQLite,
   in-process bus) at a fixed client concurrency; latency is the server's launched_at minus the
   moment the client sent its POST; throughput is N over the time from the first POST to the
   last ACTIVE. Baseline (same run): the same path one server at a time.
2. list: GET /servers/detail?limit=1000 with M servers in the project (all created through the
   API). Baseline (same run): the same list without detail (GET /servers?limit=1000).
3. scheduling: the scheduler's placement function (HostTable.pick, what the scheduler calls for
   every server) over 1k, 100k and 1M *synthetic* hosts in memory — driven directly, not through
   the API, so the fleet size is not limited by this machine. Baseline (same run): a full scan
   that filters and weighs every host per request, as a classic filter scheduler does.

    .venv/bin/python bench/compute.py [--creates 1000] [--list-total 10000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from stratus.compute.hoststate import HostState, HostTable, Request  # noqa: E402
from tests.cloudfixture import destroy_cloud, start_cloud  # noqa: E402


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def ms(x: float) -> float:
    return round(x * 1000, 2)


# ---- API benchmarks ----------------------------------------------------------------------------

def _image(cloud) -> str:
    tok = cloud.token("admin")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        r = httpx.get(f"{cloud.url}/image/v2/images", headers={"X-Auth-Token": tok}, timeout=30)
        for img in r.json().get("images", []):
            if img["status"] == "active":
                return img["id"]
        time.sleep(0.5)
    raise SystemExit("no active image appeared in the image service")


def _parse(ts: str) -> float:
    return dt.datetime.fromisoformat(ts).replace(tzinfo=dt.timezone.utc).timestamp()


def create_batch(client: httpx.Client, image: str, n: int, concurrency: int, prefix: str) -> dict:
    sent: dict[str, float] = {}

    def one(i: int):
        t = time.time()
        r = client.post("/servers", json={"server": {"name": f"{prefix}-{i}", "imageRef": image, "flavorRef": "1",
                                                     "networks": "none"}})
        if r.status_code != 202:
            raise RuntimeError(f"create failed: {r.status_code} {r.text[:200]}")
        sent[r.json()["server"]["id"]] = t

    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(n)))
    posted = time.time()
    # Wait until every server is ACTIVE (or ERROR), reading launched_at from the detail list.
    launched: dict[str, float] = {}
    errors = 0
    while len(launched) + errors < n:
        errors = 0
        marker = None
        while True:
            url = f"/servers/detail?limit=1000&name=^{prefix}-" + (f"&marker={marker}" if marker else "")
            page = client.get(url).json()["servers"]
            for s in page:
                if s["id"] in sent and s["status"] == "ACTIVE" and s["OS-SRV-USG:launched_at"]:
                    launched[s["id"]] = _parse(s["OS-SRV-USG:launched_at"])
                elif s["status"] == "ERROR":
                    errors += 1
            if len(page) < 1000:
                break
            marker = page[-1]["id"]
        if len(launched) + errors < n:
            time.sleep(0.2)
    lat = [launched[i] - sent[i] for i in launched]
    end = max(launched.values()) if launched else time.time()
    return {"servers": n, "errors": errors, "concurrency": concurrency,
            "post_phase_s": round(posted - start, 3), "total_s": round(end - start, 3),
            "creates_per_s": round(len(launched) / (end - start), 1),
            "create_to_active_p50_ms": ms(pct(lat, 50)), "create_to_active_p99_ms": ms(pct(lat, 99))}


def list_timing(client: httpx.Client, path: str, rounds: int = 10) -> dict:
    times = []
    count = 0
    for _ in range(rounds):
        t = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - t)
        count = len(r.json()["servers"])
    return {"path": path, "returned": count, "p50_ms": ms(pct(times, 50)), "p99_ms": ms(pct(times, 99)),
            "max_ms": ms(max(times))}


def api_benchmarks(creates: int, list_total: int, concurrency: int) -> dict:
    state = Path(tempfile.mkdtemp(prefix="stratus-bench-compute-"))
    env = {"STRATUS_COMPUTE__DRIVER": "fake", "STRATUS_COMPUTE__FAKE_HOSTS": "10",
           "STRATUS_COMPUTE__FAKE_MEMORY_MB": "1000000", "STRATUS_COMPUTE__FAKE_VCPUS": "1000",
           "STRATUS_COMPUTE__FAKE_LOCAL_GB": "20000", "STRATUS_COMPUTE__FAKE_LATENCY": "0.002"}
    services = ["identity", "image", "compute"]
    cloud = start_cloud(state, services=services, extra_env=env, timeout=120)
    try:
        image = _image(cloud)
        project = cloud.osc("project show demo")["id"]
        cloud.osc(f"quota set --instances -1 --cores -1 --ram -1 {project}", fmt_json=False)
        client = httpx.Client(base_url=f"{cloud.url}/compute/v2.1", timeout=120,
                              headers={"X-Auth-Token": cloud.token("demo"),
                                       "OpenStack-API-Version": "compute 2.100"},
                              limits=httpx.Limits(max_connections=concurrency + 4))
        baseline = create_batch(client, image, 20, 1, "seq")
        measured = create_batch(client, image, creates, concurrency, "burst")
        rest = max(0, list_total - creates - 20)
        filled = create_batch(client, image, rest, concurrency, "fill") if rest else None
        listing = list_timing(client, "/servers/detail?limit=1000")
        listing_plain = list_timing(client, "/servers?limit=1000")
        total = 20 + creates + rest
        return {
            "create_to_active": {**measured, "target_creates_per_s": 100,
                                 "baseline_sequential": baseline},
            "fill_to_list_total": filled,
            "list_10k": {"servers_in_project": total, "detail": listing, "target_ms": 200,
                         "baseline_without_detail": listing_plain},
            "setup": "stratus up (identity, image, compute) on SQLite, in-process bus, fake driver with 10 "
                     "simulated hosts, 2 ms simulated hypervisor latency; clients: httpx threads",
        }
    finally:
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)


# ---- scheduler benchmark ------------------------------------------------------------------------

def synthetic_table(n: int, seed: int = 7) -> HostTable:
    rnd = random.Random(seed)
    table = HostTable(down_after=60, subset_size=4)
    now = time.time()
    for i in range(n):
        mem = rnd.choice([65536, 131072, 262144, 524288])
        table.upsert(HostState(
            host=f"h{i}", zone="az1" if i % 2 else "az2", vcpus=rnd.choice([16, 32, 64, 128]), memory_mb=mem,
            local_gb=rnd.choice([500, 1000, 2000]), memory_mb_used=rnd.randrange(0, mem),
            vcpus_used=rnd.randrange(0, 64), local_gb_used=rnd.randrange(0, 400),
            disabled=(i % 100 == 0), heartbeat=now if i % 250 else now - 3600))
    return table


def full_scan(table: HostTable, req: Request, now: float):
    best = None
    for st in table.hosts.values():
        if table.first_failure(st, req, now) is None and (best is None or st.free_ram > best.free_ram):
            best = st
    return best


def scheduler_benchmark(sizes: list[int], requests: int) -> dict:
    out = {}
    rnd = random.Random(3)
    flavors = [(1, 512, 1), (2, 4096, 40), (4, 8192, 80), (8, 16384, 160)]
    for n in sizes:
        t0 = time.perf_counter()
        table = synthetic_table(n)
        build = time.perf_counter() - t0
        times = []
        for i in range(requests):
            vcpus, ram, disk = rnd.choice(flavors)
            req = Request(vcpus=vcpus, memory_mb=ram, disk_gb=disk, zone="az1" if i % 3 == 0 else None)
            t = time.perf_counter()
            st = table.pick(req)
            if st is not None:
                table.adjust(st.host, vcpus, ram, disk)  # the claim the scheduler applies on success
            times.append(time.perf_counter() - t)
        scan_times = []
        scan_rounds = 20 if n <= 100_000 else 3
        now = time.time()
        for _ in range(scan_rounds):
            vcpus, ram, disk = rnd.choice(flavors)
            t = time.perf_counter()
            full_scan(table, Request(vcpus=vcpus, memory_mb=ram, disk_gb=disk), now)
            scan_times.append(time.perf_counter() - t)
        out[f"{n}_hosts"] = {"requests": requests, "p50_ms": ms(pct(times, 50)), "p99_ms": ms(pct(times, 99)),
                             "max_ms": ms(max(times)), "table_build_s": round(build, 2),
                             "baseline_full_scan_p50_ms": ms(pct(scan_times, 50)),
                             "baseline_rounds": scan_rounds}
        del table
    return {"method": "HostTable.pick (the scheduler's placement function) driven directly with synthetic "
                      "host state (random sizes/usage, 1% disabled, 0.4% down, 2 zones); not through the API",
            "target_p99_ms_at_1M": 50, **out}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--creates", type=int, default=1000)
    p.add_argument("--list-total", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--sched-requests", type=int, default=2000)
    p.add_argument("--skip-api", action="store_true")
    args = p.parse_args()
    result = {"benchmark": "compute", "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "load_average_at_start": [round(x, 1) for x in os.getloadavg()], "cpus": os.cpu_count()}
    result["scheduling"] = scheduler_benchmark([1_000, 100_000, 1_000_000], args.sched_requests)
    if not args.skip_api:
        result.update(api_benchmarks(args.creates, args.list_total, args.concurrency))
    result["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
