"""The scheduler's in-memory view of every host, indexed so that placement never scans the fleet.

Hosts live in buckets keyed by free RAM (``BUCKET_MB`` wide), one bucket set per availability
zone. Spreading walks buckets from the most free RAM down, packing from the least that fits up,
and stops as soon as it has a few hosts that pass every filter: a request touches a handful of
hosts whatever the fleet size. Only when nothing fits does the scheduler walk every host once, to
say per filter why (that walk is the price of a useful error message, paid only on failure).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

BUCKET_MB = 1024


@dataclass(slots=True)
class HostState:
    host: str
    node_id: str = ""
    zone: str = "nova"
    vcpus: int = 0
    memory_mb: int = 0
    local_gb: int = 0
    vcpus_used: int = 0
    memory_mb_used: int = 0
    local_gb_used: int = 0
    cpu_ratio: float = 4.0
    ram_ratio: float = 1.0
    disk_ratio: float = 1.0
    disabled: bool = False
    forced_down: bool = False
    heartbeat: float = 0.0  # epoch seconds of the agent's last heartbeat
    cpu_arch: str = "x86_64"
    hypervisor_type: str = "fake"
    # Merged metadata of the aggregates this host belongs to.
    aggregate_meta: dict = field(default_factory=dict)
    bucket: int = -1

    @property
    def free_ram(self) -> float:
        return self.memory_mb * self.ram_ratio - self.memory_mb_used

    @property
    def free_vcpus(self) -> float:
        return self.vcpus * self.cpu_ratio - self.vcpus_used

    @property
    def free_disk(self) -> float:
        return self.local_gb * self.disk_ratio - self.local_gb_used


@dataclass
class Request:
    """What one instance needs from a host."""

    vcpus: int
    memory_mb: int
    disk_gb: int
    zone: str | None = None
    force_host: str | None = None
    # affinity: hosts the group's members are on; anti-affinity: hosts to avoid.
    group_policy: str | None = None
    group_hosts: set[str] = field(default_factory=set)
    max_server_per_host: int | None = None
    group_host_counts: dict[str, int] = field(default_factory=dict)
    ignore_hosts: set[str] = field(default_factory=set)
    # Flavor extra specs matched against aggregate metadata.
    aggregate_specs: dict = field(default_factory=dict)
    image_arch: str | None = None
    image_hv_type: str | None = None


FILTER_LABELS = {
    "down": "down (no heartbeat)",
    "disabled": "disabled",
    "zone": "in another availability zone",
    "ignored": "excluded (current host)",
    "forced": "not the requested host",
    "affinity": "not where the affinity group is",
    "anti_affinity": "already running a member of the anti-affinity group",
    "aggregate": "not in an aggregate whose metadata matches the flavor",
    "image": "of the wrong architecture/hypervisor type for the image",
    "ram": "lack RAM",
    "vcpus": "lack vCPUs",
    "disk": "lack disk",
}


class HostTable:
    def __init__(self, *, down_after: float = 60.0, subset_size: int = 4):
        self.hosts: dict[str, HostState] = {}
        # zone → bucket → {host: state}; dicts keep insertion order, so hosts just moved to a
        # bucket come last: consecutive requests rotate through equally good hosts.
        self.zones: dict[str, dict[int, dict[str, HostState]]] = {}
        self.down_after = down_after
        self.subset_size = subset_size

    def __len__(self) -> int:
        return len(self.hosts)

    # -- maintenance -----------------------------------------------------------------------------

    def upsert(self, state: HostState) -> None:
        old = self.hosts.get(state.host)
        if old is not None:
            self._unindex(old)
        self.hosts[state.host] = state
        self._index(state)

    def remove(self, host: str) -> None:
        old = self.hosts.pop(host, None)
        if old is not None:
            self._unindex(old)

    def adjust(self, host: str, vcpus: int, memory_mb: int, disk_gb: int) -> None:
        """Apply a claim (positive) or release (negative) to the in-memory copy."""
        st = self.hosts.get(host)
        if st is None:
            return
        self._unindex(st)
        st.vcpus_used += vcpus
        st.memory_mb_used += memory_mb
        st.local_gb_used += disk_gb
        self._index(st)

    def _index(self, st: HostState) -> None:
        key = max(int(st.free_ram // BUCKET_MB), 0)
        st.bucket = key
        self.zones.setdefault(st.zone, {}).setdefault(key, {})[st.host] = st

    def _unindex(self, st: HostState) -> None:
        buckets = self.zones.get(st.zone)
        if buckets is None:
            return
        bucket = buckets.get(st.bucket)
        if bucket is not None:
            bucket.pop(st.host, None)
            if not bucket:
                del buckets[st.bucket]
        if not buckets:
            del self.zones[st.zone]

    # -- filters ---------------------------------------------------------------------------------

    def first_failure(self, st: HostState, req: Request, now: float) -> str | None:
        """The name of the first filter ``st`` fails for ``req``, or None when it passes all."""
        if req.force_host and st.host != req.force_host:
            return "forced"
        if st.host in req.ignore_hosts:
            return "ignored"
        if st.forced_down or now - st.heartbeat > self.down_after:
            return "down"
        if st.disabled:
            return "disabled"
        if req.zone and st.zone != req.zone:
            return "zone"
        if req.group_policy == "affinity" and req.group_hosts and st.host not in req.group_hosts:
            return "affinity"
        if req.group_policy == "anti-affinity":
            limit = req.max_server_per_host or 1
            if req.group_host_counts.get(st.host, 0) >= limit:
                return "anti_affinity"
        if req.aggregate_specs:
            for key, want in req.aggregate_specs.items():
                have = st.aggregate_meta.get(key)
                if have is None or str(want) not in {v.strip() for v in str(have).split(",")}:
                    return "aggregate"
        if req.image_arch and req.image_arch != st.cpu_arch:
            return "image"
        if req.image_hv_type and req.image_hv_type.lower() != st.hypervisor_type.lower():
            return "image"
        if st.free_ram < req.memory_mb:
            return "ram"
        if st.free_vcpus < req.vcpus:
            return "vcpus"
        if st.free_disk < req.disk_gb:
            return "disk"
        return None

    # -- placement -------------------------------------------------------------------------------

    def candidates(self, req: Request, *, pack: bool = False, now: float | None = None) -> list[HostState]:
        """Up to ``subset_size`` passing hosts, best first by the weigher."""
        now = time.time() if now is None else now
        need_bucket = int(req.memory_mb // BUCKET_MB)
        if req.force_host:
            st = self.hosts.get(req.force_host)
            return [st] if st is not None and self.first_failure(st, req, now) is None else []
        zones = [self.zones.get(req.zone, {})] if req.zone else list(self.zones.values())
        keys = sorted({k for buckets in zones for k in buckets if k >= need_bucket}, reverse=not pack)
        found: list[HostState] = []
        for key in keys:
            for buckets in zones:
                bucket = buckets.get(key)
                if not bucket:
                    continue
                for st in bucket.values():
                    if self.first_failure(st, req, now) is None:
                        found.append(st)
                        if len(found) >= self.subset_size:
                            break
                if len(found) >= self.subset_size:
                    break
            if found:
                # Hosts in the next bucket are strictly worse by the weigher; stop here.
                break
        found.sort(key=lambda s: s.free_ram, reverse=not pack)
        if req.group_policy in ("soft-affinity", "soft-anti-affinity") and found:
            members = req.group_host_counts
            sign = -1 if req.group_policy == "soft-affinity" else 1
            found.sort(key=lambda s: sign * members.get(s.host, 0))
        return found

    def pick(self, req: Request, *, pack: bool = False, now: float | None = None) -> HostState | None:
        found = self.candidates(req, pack=pack, now=now)
        if not found:
            return None
        if req.group_policy in ("soft-affinity", "soft-anti-affinity"):
            return found[0]
        # A little randomness among near-equal hosts keeps concurrent schedulers from colliding.
        top = found[: max(1, min(2, len(found)))]
        return random.choice(top)

    def explain(self, req: Request, now: float | None = None) -> str:
        """Why no host fits: a count per filter over every host (only called on failure)."""
        now = time.time() if now is None else now
        counts: dict[str, int] = {}
        max_free = {"ram": 0.0, "vcpus": 0.0, "disk": 0.0}
        for st in self.hosts.values():
            reason = self.first_failure(st, req, now)
            if reason is None:
                continue
            counts[reason] = counts.get(reason, 0) + 1
            if reason in max_free:
                max_free["ram"] = max(max_free["ram"], st.free_ram)
                max_free["vcpus"] = max(max_free["vcpus"], st.free_vcpus)
                max_free["disk"] = max(max_free["disk"], st.free_disk)
        total = len(self.hosts)
        if total == 0:
            return "No compute host has registered with the scheduler (is a compute agent running?)."
        parts = []
        for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            label = FILTER_LABELS[reason]
            if reason == "ram":
                label += f" (need {req.memory_mb} MB, max free {int(max_free['ram'])})"
            elif reason == "vcpus":
                label += f" (need {req.vcpus}, max free {int(max_free['vcpus'])})"
            elif reason == "disk":
                label += f" (need {req.disk_gb} GB, max free {int(max_free['disk'])})"
            elif reason == "zone":
                label = f"in another availability zone than {req.zone!r}"
            parts.append(f"{n} {label}")
        noun = "host" if total == 1 else "hosts"
        return f"No host fits: {total} {noun}: " + ", ".join(parts)
