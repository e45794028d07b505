"""The scheduler's host table: filters, weighers, claims and the reasons it gives."""

from __future__ import annotations

import time

from stratus.compute.hoststate import HostState, HostTable, Request


def host(name, *, ram=8192, used=0, vcpus=4, zone="nova", **kw) -> HostState:
    kw.setdefault("heartbeat", time.time())
    return HostState(host=name, zone=zone, vcpus=vcpus, memory_mb=ram, memory_mb_used=used, local_gb=100, **kw)


def test_spread_picks_most_free_and_pack_least():
    t = HostTable(subset_size=1)
    for name, used in (("a", 6000), ("b", 1000), ("c", 4000)):
        t.upsert(host(name, used=used))
    req = Request(vcpus=1, memory_mb=1024, disk_gb=1)
    assert t.pick(req).host == "b"
    assert t.pick(req, pack=True).host == "a"


def test_adjust_moves_host_between_buckets():
    t = HostTable(subset_size=1)
    t.upsert(host("a", ram=8192))
    t.upsert(host("b", ram=4096))
    req = Request(vcpus=1, memory_mb=2048, disk_gb=1)
    assert t.pick(req).host == "a"
    t.adjust("a", 1, 6144, 1)  # a now has 2048 free, b 4096
    assert t.pick(req).host == "b"
    t.adjust("b", 1, 4096, 1)
    assert t.pick(req).host == "a"
    t.adjust("a", 1, 2048, 1)
    assert t.pick(req) is None


def test_filters_and_explanation():
    t = HostTable(down_after=60)
    t.upsert(host("small1", ram=2048))
    t.upsert(host("small2", ram=2048, used=1024))
    t.upsert(host("off", ram=65536, disabled=True))
    t.upsert(host("dead", ram=65536, heartbeat=time.time() - 3600))
    req = Request(vcpus=1, memory_mb=4096, disk_gb=1)
    assert t.pick(req) is None
    why = t.explain(req)
    assert why.startswith("No host fits: 4 hosts:")
    assert "2 lack RAM (need 4096 MB, max free 2048)" in why
    assert "1 disabled" in why and "1 down (no heartbeat)" in why


def test_zone_vcpu_disk_and_image_filters():
    t = HostTable()
    t.upsert(host("z1", zone="az1"))
    t.upsert(host("z2", zone="az2", vcpus=1))
    assert t.pick(Request(vcpus=1, memory_mb=512, disk_gb=1, zone="az2")).host == "z2"
    assert t.pick(Request(vcpus=8, memory_mb=512, disk_gb=1, zone="az2")) is None  # 1 vCPU * 4.0 ratio
    assert t.pick(Request(vcpus=4, memory_mb=512, disk_gb=1, zone="az2")).host == "z2"
    assert t.pick(Request(vcpus=1, memory_mb=512, disk_gb=500)) is None
    assert t.pick(Request(vcpus=1, memory_mb=512, disk_gb=1, image_arch="aarch64")) is None
    assert "availability zone" in t.explain(Request(vcpus=1, memory_mb=512, disk_gb=1, zone="az3"))


def test_affinity_and_anti_affinity():
    t = HostTable()
    for n in ("a", "b", "c"):
        t.upsert(host(n))
    aff = Request(vcpus=1, memory_mb=512, disk_gb=1, group_policy="affinity", group_hosts={"b"})
    assert t.pick(aff).host == "b"
    anti = Request(vcpus=1, memory_mb=512, disk_gb=1, group_policy="anti-affinity", group_hosts={"a", "b"},
                   group_host_counts={"a": 1, "b": 1})
    assert t.pick(anti).host == "c"
    anti.group_host_counts["c"] = 1
    assert t.pick(anti) is None
    assert "anti-affinity" in t.explain(anti)
    anti.max_server_per_host = 2
    assert t.pick(anti) is not None
    soft = Request(vcpus=1, memory_mb=512, disk_gb=1, group_policy="soft-anti-affinity",
                   group_host_counts={"a": 2, "b": 1})
    assert t.pick(soft).host == "c"


def test_aggregate_metadata_filter():
    t = HostTable()
    t.upsert(host("ssd", aggregate_meta={"disk": "ssd"}))
    t.upsert(host("hdd", aggregate_meta={"disk": "hdd"}, ram=65536))
    req = Request(vcpus=1, memory_mb=512, disk_gb=1, aggregate_specs={"disk": "ssd"})
    assert t.pick(req).host == "ssd"


def test_force_host_and_ignore():
    t = HostTable()
    t.upsert(host("a", ram=65536))
    t.upsert(host("b"))
    assert t.pick(Request(vcpus=1, memory_mb=512, disk_gb=1, force_host="b")).host == "b"
    assert t.pick(Request(vcpus=1, memory_mb=512, disk_gb=1, ignore_hosts={"a"})).host == "b"


def test_large_fleet_pick_touches_few_hosts():
    t = HostTable(subset_size=4)
    for i in range(20000):
        t.upsert(host(f"h{i}", ram=65536, used=(i * 37) % 60000))
    req = Request(vcpus=1, memory_mb=512, disk_gb=1)
    start = time.perf_counter()
    for _ in range(200):
        st = t.pick(req)
        t.adjust(st.host, 1, 512, 1)
    per_pick = (time.perf_counter() - start) / 200
    assert per_pick < 0.005, per_pick
