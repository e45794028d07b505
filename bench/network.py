"""Networking benchmark: port create latency and security-group-rule-change-to-effect time.

Runs `stratus up` (identity + network, linuxbridge agent) in a temp dir and prints JSON:
- port_create: p50/p99 of POST /v2.0/ports over N ports (default 1,000) on one /20 network,
  one at a time, plus the rate with 8 clients; the in-run baseline is an authenticated
  GET /v2.0/extensions (no database), the floor of HTTP + token validation on this machine;
- rule_change: two namespace "VMs" on one network; an ICMP rule is removed and re-added R times.
  `applied` is the time from the API call to the rule being gone from / present in the kernel's
  nftables ruleset; `ping_restored` the time until ping passes again after the rule is added;
  `ping_blocked` the time until ping stops after removal (includes the 0.2 s probe timeout).
  Baseline: loading the same-sized ruleset with `nft -f` directly (what the kernel costs).
Usage: .venv/bin/python bench/network.py [--ports 1000] [--rounds 10]   (needs root, ip, nft, dnsmasq)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.test_network_datapath import Lab, _missing_capability, sh  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


def summary(values: list[float]) -> dict:
    return {"p50_ms": pct(values, 0.5), "p99_ms": pct(values, 0.99), "max_ms": round(max(values) * 1000, 2),
            "n": len(values)}


def bench_ports(lab: Lab, n: int) -> dict:
    admin = lab.admin.network
    token = lab.cloud.token("demo")
    base = f"{lab.cloud.url}/network/v2.0"
    admin.update_quota(lab.demo_project, ports=-1, networks=-1, subnets=-1)
    demo_headers = {"X-Auth-Token": token}
    with httpx.Client(timeout=60, headers=demo_headers) as c:
        net = c.post(f"{base}/networks", json={"network": {"name": "bench"}}).json()["network"]
        c.post(f"{base}/subnets", json={"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.90.0.0/20"}})
        baseline = []
        for _ in range(200):
            t = time.perf_counter()
            assert c.get(f"{base}/extensions").status_code == 200
            baseline.append(time.perf_counter() - t)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            r = c.post(f"{base}/ports", json={"port": {"network_id": net["id"]}})
            times.append(time.perf_counter() - t)
            assert r.status_code == 201, r.text
        ports = [p["id"] for p in c.get(f"{base}/ports?network_id={net['id']}&fields=id").json()["ports"]]

    async def concurrent(total: int, clients: int) -> float:
        async with httpx.AsyncClient(timeout=120, headers=demo_headers) as ac:
            queue = list(range(total))

            async def worker():
                while queue:
                    queue.pop()
                    r = await ac.post(f"{base}/ports", json={"port": {"network_id": net["id"]}})
                    assert r.status_code == 201, r.text

            t = time.perf_counter()
            await asyncio.gather(*[worker() for _ in range(clients)])
            return time.perf_counter() - t

    took = asyncio.run(concurrent(200, 8))
    with httpx.Client(timeout=60, headers=demo_headers) as c:
        all_ports = c.get(f"{base}/ports?network_id={net['id']}").json()["ports"]
        ips = [p["fixed_ips"][0]["ip_address"] for p in all_ports if p["device_owner"] != "network:dhcp"]
        assert len(ips) == len(set(ips)) == n + 200, "duplicate addresses"
        t = time.perf_counter()
        for p in all_ports:
            if p["device_owner"] != "network:dhcp":
                c.delete(f"{base}/ports/{p['id']}")
        delete_rate = len(ips) / (time.perf_counter() - t)
        c.delete(f"{base}/networks/{net['id']}")
    del ports
    return {"ports": n, "sequential": summary(times), "baseline_get_extensions": summary(baseline),
            "concurrent_8_clients_per_s": round(200 / took, 1), "delete_per_s": round(delete_rate, 1)}


def bench_rules(lab: Lab, rounds: int) -> dict:
    net = lab.admin.network
    n = net.create_network(name="rules", project_id=lab.demo_project)
    s = net.create_subnet(network_id=n.id, project_id=lab.demo_project, ip_version=4, cidr="10.91.0.0/24")
    a = lab.bound_port(n, lab.demo_project, "10.91.0.11", s.id)
    b = lab.bound_port(n, lab.demo_project, "10.91.0.12", s.id)
    try:
        va, vb = lab.vm(a), lab.vm(b)
        lab.dhcp(va)
        lab.dhcp(vb)
        sg = b.security_group_ids[0]
        for r in list(net.security_group_rules(security_group_id=sg)):
            if r.direction == "ingress":
                net.delete_security_group_rule(r)
        rule = net.create_security_group_rule(security_group_id=sg, direction="ingress", ether_type="IPv4",
                                              protocol="icmp")

        def kernel_has_icmp_accept() -> bool:
            out = sh("nft", "list", "table", "inet", lab.table).stdout
            return "icmp accept" in out

        def wait(pred, limit=10.0) -> float:
            t = time.perf_counter()
            while time.perf_counter() - t < limit:
                if pred():
                    return time.perf_counter() - t
                time.sleep(0.005)
            raise AssertionError("no effect within the limit")

        wait(lambda: lab.ping(va, "10.91.0.12", wait=0.2))
        removed, added, blocked, restored = [], [], [], []
        for _ in range(rounds):
            t = time.perf_counter()
            net.delete_security_group_rule(rule)
            wait(lambda: not kernel_has_icmp_accept())
            removed.append(time.perf_counter() - t)
            wait(lambda: not lab.ping(va, "10.91.0.12", wait=0.2))
            blocked.append(time.perf_counter() - t)
            t = time.perf_counter()
            rule = net.create_security_group_rule(security_group_id=sg, direction="ingress", ether_type="IPv4",
                                                  protocol="icmp")
            wait(kernel_has_icmp_accept)
            added.append(time.perf_counter() - t)
            wait(lambda: lab.ping(va, "10.91.0.12", wait=0.2))
            restored.append(time.perf_counter() - t)
        ruleset = sh("nft", "list", "table", "inet", lab.table).stdout
        base = []
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
            probe = ruleset.replace(f"table inet {lab.table}", "table inet stratusbench", 1)
            f.write(probe)
            f.flush()
            for _ in range(rounds):
                t = time.perf_counter()
                subprocess.run(["nft", "-f", f.name], check=True)
                base.append(time.perf_counter() - t)
                subprocess.run(["nft", "delete", "table", "inet", "stratusbench"], check=True)
        return {"rounds": rounds, "applied_after_remove": summary(removed), "applied_after_add": summary(added),
                "ping_blocked": summary(blocked), "ping_restored": summary(restored),
                "baseline_nft_load": summary(base)}
    finally:
        for ns in list(lab.vms):
            sh("ip", "netns", "del", ns, check=False)
            lab.vms.remove(ns)
        net.delete_port(a)
        net.delete_port(b)
        net.delete_network(n)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    reason = _missing_capability()
    if reason:
        print(json.dumps({"skipped": f"needs {reason}"}))
        return 0
    lab = Lab()
    try:
        out = {"port_create": bench_ports(lab, args.ports), "rule_change": bench_rules(lab, args.rounds)}
    except BaseException:
        print(lab.cloud.log_tail(40), file=sys.stderr)
        raise
    finally:
        lab.close()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
