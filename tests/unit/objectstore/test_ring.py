"""Ring placement, move limits, handoffs and the file format."""

import time
from collections import Counter

import pytest

from stratus.objectstore import ring as ringmod
from stratus.objectstore.ring import Ring, RingData, RingError


def build(tmp_path, devs, part_power=8, replicas=3, min_part_hours=0):
    path = tmp_path / "object.ring.gz"
    ringmod.create(path, part_power, replicas, min_part_hours)
    for i, (region, zone, weight) in enumerate(devs):
        ringmod.add_device(path, region=region, zone=zone, ip="127.0.0.1", port=6000 + i,
                           device=f"d{i}", weight=weight)
    ringmod.rebalance(path)
    return path


def part_counts(path):
    data = RingData.load(path)
    counts = Counter()
    for r2d in data.replica2part2dev:
        counts.update(r2d)
    return counts


def test_every_partition_has_replicas_in_distinct_zones(tmp_path):
    path = build(tmp_path, [(1, 1, 100), (1, 2, 100), (1, 3, 100), (1, 3, 100)])
    ring = Ring.load(path)
    for part in range(ring.partition_count):
        nodes = ring.get_part_nodes(part)
        assert len(nodes) == 3
        assert len({d["zone"] for d in nodes}) == 3
    info = ringmod.show(path)
    assert info["dispersion"] == {"parts_with_shared_zone": 0, "parts_with_shared_device": 0}


def test_regions_are_preferred_over_zones(tmp_path):
    path = build(tmp_path, [(1, 1, 100), (1, 2, 100), (2, 1, 100), (2, 2, 100)], replicas=2)
    ring = Ring.load(path)
    for part in range(ring.partition_count):
        assert len({d["region"] for d in ring.get_part_nodes(part)}) == 2


def test_weights_are_honoured_when_dispersion_allows(tmp_path):
    # 6 zones, 3 replicas: dispersion never forces a choice, so weight decides.
    devs = [(1, z, 200 if z == 1 else 100) for z in range(1, 7)]
    path = build(tmp_path, devs, part_power=10)
    counts = part_counts(path)
    total = 1024 * 3
    wanted_heavy = total * 200 / 700
    wanted_light = total * 100 / 700
    assert abs(counts[0] - wanted_heavy) / wanted_heavy < 0.02
    for dev_id in range(1, 6):
        assert abs(counts[dev_id] - wanted_light) / wanted_light < 0.02
    assert ringmod.show(path)["balance"] < 2


def test_rebalance_moves_at_most_one_replica_per_partition(tmp_path):
    path = build(tmp_path, [(1, z, 100) for z in range(1, 4)], part_power=8)
    before = RingData.load(path)
    ringmod.add_device(path, zone=4, ip="127.0.0.1", port=6100, device="new", weight=100)
    moved = ringmod.rebalance(path)
    after = RingData.load(path)
    changed_per_part = Counter()
    total_changed = 0
    for r in range(3):
        for part in range(256):
            if before.replica2part2dev[r][part] != after.replica2part2dev[r][part]:
                changed_per_part[part] += 1
                total_changed += 1
    assert moved == total_changed
    assert max(changed_per_part.values()) == 1
    # the new device got roughly its quarter, and nothing else moved needlessly
    assert abs(part_counts(path)[3] - 192) <= 4
    assert moved <= 196


def test_min_part_hours_blocks_a_second_move(tmp_path):
    path = build(tmp_path, [(1, z, 100) for z in range(1, 4)], min_part_hours=24)
    now = time.time()
    ringmod.add_device(path, zone=4, ip="127.0.0.1", port=6100, device="a", weight=100)
    first = ringmod.rebalance(path, now=now)
    assert first > 0
    ringmod.add_device(path, zone=5, ip="127.0.0.1", port=6101, device="b", weight=100)
    second_data_before = RingData.load(path)
    ringmod.rebalance(path, now=now + 3600)
    after = RingData.load(path)
    moved_first = {p for p in range(256) if second_data_before.last_part_moves[p]}
    for part in moved_first:
        for r in range(3):
            assert second_data_before.replica2part2dev[r][part] == after.replica2part2dev[r][part]
    # a day later the limit is lifted
    assert ringmod.rebalance(path, now=now + 26 * 3600) > 0


def test_removed_device_partitions_are_reassigned(tmp_path):
    path = build(tmp_path, [(1, z, 100) for z in range(1, 5)])
    ringmod.remove_device(path, 2)
    moved = ringmod.rebalance(path)
    assert moved >= 150
    ring = Ring.load(path)
    for part in range(ring.partition_count):
        ids = [d["id"] for d in ring.get_part_nodes(part)]
        assert 2 not in ids and len(ids) == 3


def test_handoffs_exclude_primaries_and_prefer_other_zones(tmp_path):
    devs = [(1, 1, 100), (1, 2, 100), (1, 3, 100), (1, 4, 100), (1, 1, 100), (1, 2, 100)]
    path = build(tmp_path, devs)
    ring = Ring.load(path)
    for part in range(0, ring.partition_count, 17):
        primaries = ring.get_part_nodes(part)
        handoffs = list(ring.get_more_nodes(part))
        assert {d["id"] for d in primaries}.isdisjoint(d["id"] for d in handoffs)
        assert len(handoffs) == 3
        used_zones = {d["zone"] for d in primaries}
        unused = [h for h in handoffs if h["zone"] not in used_zones]
        assert handoffs[: len(unused)] == unused


def test_get_nodes_is_stable_and_fast_after_save_load(tmp_path):
    path = build(tmp_path, [(1, z, 100) for z in range(1, 5)], part_power=12)
    ring = Ring.load(path)
    part, nodes = ring.get_nodes("AUTH_test", "c", "o/with/slashes")
    again = Ring.load(path)
    assert again.get_nodes("AUTH_test", "c", "o/with/slashes") == (part, nodes)
    assert 0 <= part < 4096
    start = time.perf_counter()
    for i in range(20000):
        ring.get_nodes("AUTH_test", "c", f"obj{i}")
    per_lookup = (time.perf_counter() - start) / 20000
    assert per_lookup < 50e-6


def test_hash_prefix_changes_placement(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = build(tmp_path / "a", [(1, z, 100) for z in range(1, 4)])
    b = build(tmp_path / "b", [(1, z, 100) for z in range(1, 4)])
    ra, rb = Ring.load(a), Ring.load(b)
    names = [f"o{i}" for i in range(50)]
    assert [ra.get_part("a", "c", n) for n in names] != [rb.get_part("a", "c", n) for n in names]


def test_bad_inputs_raise_clear_errors(tmp_path):
    path = tmp_path / "r.ring.gz"
    with pytest.raises(RingError, match="part_power"):
        ringmod.create(path, 0, 3)
    ringmod.create(path, 4, 3)
    with pytest.raises(RingError, match="already exists"):
        ringmod.create(path, 4, 3)
    with pytest.raises(RingError, match="no device with weight"):
        ringmod.rebalance(path)
    with pytest.raises(RingError, match="never been rebalanced"):
        Ring.load(path)
    ringmod.add_device(path, zone=1, ip="127.0.0.1", port=6000, device="d", weight=1)
    with pytest.raises(RingError, match="already exists"):
        ringmod.add_device(path, zone=1, ip="127.0.0.1", port=6000, device="d", weight=1)
    with pytest.raises(RingError, match="no device with id"):
        ringmod.set_weight(path, 9, 1)
    (tmp_path / "junk").write_bytes(b"nope")
    with pytest.raises(RingError, match="not a gzip JSON ring"):
        RingData.load(tmp_path / "junk")


def test_fewer_devices_than_replicas_still_places_all(tmp_path):
    path = build(tmp_path, [(1, 1, 100), (1, 2, 100)], replicas=3, part_power=4)
    ring = Ring.load(path)
    data = RingData.load(path)
    for part in range(16):
        assert all(r2d[part] != ringmod.NONE_DEV for r2d in data.replica2part2dev)
        assert {d["zone"] for d in ring.get_part_nodes(part)} == {1, 2}


def test_ensure_rings_builds_three_rings_once(tmp_path):
    devices = [{"ip": "127.0.0.1", "port": 6200 + i // 2, "device": f"d{i}"} for i in range(4)]
    paths = ringmod.ensure_rings(tmp_path / "rings", devices, part_power=6)
    assert sorted(p.name for p in paths.values()) == [
        "account.ring.gz", "container.ring.gz", "object.ring.gz"]
    ring = Ring.load(paths["object"])
    assert ring.replicas == 3 and len([d for d in ring.devs if d]) == 4
    for part in range(ring.partition_count):
        assert len(ring.get_part_nodes(part)) == 3
    before = paths["object"].read_bytes()
    ringmod.ensure_rings(tmp_path / "rings", devices + [
        {"ip": "127.0.0.1", "port": 7000, "device": "x"}])
    assert paths["object"].read_bytes() == before  # existing rings are never rebuilt
    one = ringmod.ensure_rings(tmp_path / "single", devices[:1], part_power=4)
    assert Ring.load(one["object"]).replicas == 1


def test_device_added_to_a_full_zone_fills_over_rebalances(tmp_path):
    # 4 zones, 3 replicas: every partition skips one zone, so the new zone-4 device can only
    # take replicas of partitions that have none in zone 4 yet (chains of moves).
    path = build(tmp_path, [(1, z % 4 + 1, 100) for z in range(12)], part_power=10,
                 min_part_hours=1)
    before = RingData.load(path)
    ringmod.add_device(path, zone=4, ip="127.0.0.1", port=7000, device="new", weight=100)
    now = time.time()
    ringmod.rebalance(path, now=now)
    after = RingData.load(path)
    for part in range(1024):
        changed = sum(before.replica2part2dev[r][part] != after.replica2part2dev[r][part]
                      for r in range(3))
        assert changed <= 1
    wanted = 1024 * 3 / 13
    assert part_counts(path)[12] >= 0.75 * wanted
    for hours in (2, 4, 6):
        ringmod.rebalance(path, now=now + hours * 3600)
    info = ringmod.show(path)
    assert info["balance"] < 5
    assert info["dispersion"] == {"parts_with_shared_zone": 0, "parts_with_shared_device": 0}
