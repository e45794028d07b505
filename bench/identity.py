"""Identity benchmark: token issue, token validate and project list at concurrency 8.

Prints JSON. Runs `stratus serve identity --workers 2` on SQLite in a temp dir and measures:
- issue: POST /v3/auth/tokens (password, Argon2id at the OWASP minimum) — the in-run baseline
  is the raw Argon2id verify rate of this machine with 2 threads, i.e. the ceiling no server
  could beat without weakening the hash;
- validate: GET /v3/auth/tokens (X-Subject-Token) and project list, driven by wrk — the in-run
  baseline is a static discovery document (GET /identity/v3) through the same server;
- `stratus up` (identity only) start-to-`stratus status`-OK time and its idle RSS.
Reference (upstream Keystone, same machine kind, 2 workers): issue 6.8/s (p50 1.17 s),
validate 37/s, project list 37/s. Targets: issue >= 50/s, validate >= 5,000/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
CONCURRENCY = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(state: Path, port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATUS_", "OS_"))}
    env.update(STRATUS_STATE_DIR=str(state), STRATUS_SERVER__PORT=str(port), STRATUS_SERVICES__ENABLED="identity")
    return env


def wait_status(env: dict, proc: subprocess.Popen, timeout: float = 30) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError("server exited")
        if subprocess.run([str(BIN / "stratus"), "status"], env=env, capture_output=True).returncode == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    raise RuntimeError("server did not come up")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def wrk(url: str, headers: dict, seconds: int = 8) -> dict:
    args = ["wrk", "-t", "2", "-c", str(CONCURRENCY), "-d", f"{seconds}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        lat[q] = value * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate_per_s": round(rate, 1), "p50_ms": round(lat["50"], 3), "p99_ms": round(lat["99"], 3),
            "errors": int(non2xx.group(1)) if non2xx else 0}


async def issue_rate(url: str, body: dict, total: int = 240) -> dict:
    lat: list[float] = []
    sem = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        async def one():
            async with sem:
                t = time.perf_counter()
                r = await client.post(url, json=body)
                assert r.status_code == 201, r.text
                lat.append(time.perf_counter() - t)

        await asyncio.gather(*(one() for _ in range(8)))  # warm up
        lat.clear()
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        elapsed = time.perf_counter() - start
    return {"rate_per_s": round(total / elapsed, 1), "p50_ms": round(statistics.median(lat) * 1000, 1),
            "p99_ms": round(pct(lat, 0.99) * 1000, 1), "requests": total}


def argon2_ceiling(seconds: float = 3.0) -> float:
    from argon2 import PasswordHasher

    ph = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
    encoded = ph.hash("benchmark")
    stop = time.monotonic() + seconds
    count = 0

    def work():
        nonlocal count
        while time.monotonic() < stop:
            ph.verify(encoded, "benchmark")
            count += 1

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: work(), range(2)))
    return round(count / seconds, 1)


def rss_mb(pid: int) -> float:
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(x) for x in out.split()]


def main() -> None:
    result: dict = {"benchmark": "identity", "concurrency": CONCURRENCY, "workers": 2, "database": "sqlite"}
    tmp = Path(tempfile.mkdtemp(prefix="stratus-bench-id-"))
    procs: list[subprocess.Popen] = []
    try:
        # 1. all-in-one start time and idle memory
        port = free_port()
        env = env_for(tmp / "up", port)
        t0 = time.monotonic()
        up = subprocess.Popen([str(BIN / "stratus"), "up"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        procs.append(up)
        wait_status(env, up)
        first = time.monotonic() - t0
        up.send_signal(signal.SIGINT)
        up.wait(timeout=20)
        t0 = time.monotonic()
        up = subprocess.Popen([str(BIN / "stratus"), "up"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        procs.append(up)
        wait_status(env, up)
        result["up_first_start_s"] = round(first, 2)
        result["up_restart_to_status_ok_s"] = round(time.monotonic() - t0, 2)
        time.sleep(1.0)
        result["up_idle_rss_mb"] = rss_mb(up.pid)
        up.send_signal(signal.SIGINT)
        up.wait(timeout=20)

        # 2. two workers
        port = free_port()
        env = env_for(tmp / "serve", port)
        srv = subprocess.Popen([str(BIN / "stratus"), "serve", "identity", "--workers", "2", "--bootstrap"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(srv)
        deadline = time.monotonic() + 60
        base = f"http://127.0.0.1:{port}/identity"
        while True:
            try:
                if httpx.get(base + "/v3", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or srv.poll() is not None:
                raise RuntimeError("identity did not start")
            time.sleep(0.1)
        import tomllib

        secrets = tomllib.loads((tmp / "serve" / "secrets.toml").read_text())
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": secrets["admin_password"]}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
        token = httpx.post(base + "/v3/auth/tokens", json=body).headers["x-subject-token"]
        user_tok = httpx.post(base + "/v3/auth/tokens", json=body).headers["x-subject-token"]

        result["issue"] = asyncio.run(issue_rate(base + "/v3/auth/tokens", body))
        result["baseline_argon2id_verify_2_threads_per_s"] = argon2_ceiling()
        result["issue"]["fraction_of_hash_ceiling"] = round(
            result["issue"]["rate_per_s"] / result["baseline_argon2id_verify_2_threads_per_s"], 2)
        result["validate"] = wrk(base + "/v3/auth/tokens", {"X-Auth-Token": token, "X-Subject-Token": user_tok})
        result["project_list"] = wrk(base + "/v3/projects", {"X-Auth-Token": token})
        result["baseline_static_version_doc"] = wrk(base + "/v3", {})
        result["validate"]["fraction_of_static_baseline"] = round(
            result["validate"]["rate_per_s"] / result["baseline_static_version_doc"]["rate_per_s"], 2)
        result["upstream_keystone_reference"] = {"issue_per_s": 6.8, "issue_p50_ms": 1170, "validate_per_s": 37,
                                                 "project_list_per_s": 37}
        result["targets"] = {"issue_per_s": 50, "validate_per_s": 5000}
        result["meets_targets"] = (result["issue"]["rate_per_s"] >= 50 and result["validate"]["rate_per_s"] >= 5000)
        srv.send_signal(signal.SIGINT)
        srv.wait(timeout=20)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
