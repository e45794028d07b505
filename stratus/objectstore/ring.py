"""The consistent-hashing ring: which devices hold which partition.

A name ``/account[/container[/object]]`` is hashed (md5 of a per-ring secret prefix, the path
and a per-ring secret suffix); the top ``part_power`` bits of the hash give its *partition*.
The ring maps every (replica, partition) to a device, so a lookup is one md5 and a few array
indexings (microseconds).

One file holds everything, builder state and lookup table alike, so there is a single thing
for the operator to build and copy to every node: gzip-compressed JSON, ``format_version`` 1::

    {"format_version": 1, "part_power": 10, "replicas": 3, "min_part_hours": 1,
     "hash_prefix": "...", "hash_suffix": "...", "version": <rebalance count>,
     "devices": [{"id", "region", "zone", "ip", "port", "device", "weight", "meta"} | null],
     "replica2part2dev": [<base64 of little-endian uint16 array>, ...],
     "last_part_moves": <base64 uint32 array: hour (since epoch) each partition last moved>,
     "last_rebalance": <unix time>}

Removed devices leave ``null`` in ``devices`` so that ids stay stable.

Placement (``rebalance``) works on *tiers*: region, zone, device. A replica is placed where
the fewest other replicas of its partition already are, comparing regions first, then zones,
then IP address, then devices; only among equally dispersed candidates does weight decide (the
device furthest below its weighted share wins). So dispersion beats weight: with 3 replicas
and 3 zones every partition has one replica per zone even if a zone is light.

Moves are limited the way Swift limits them: in one rebalance at most one replica of a
partition moves (so a quorum of the old placement always still holds the data), and a
partition moved less than ``min_part_hours`` ago is not moved again, except for replicas on
removed or zero-weight devices, which must go.

Functions the CLI calls: :func:`create`, :func:`add_device`, :func:`remove_device`,
:func:`set_weight`, :func:`rebalance`, :func:`show`; ``stratus up`` calls
:func:`ensure_rings`. Servers load a :class:`Ring` (or keep a :class:`RingCache` to follow
file changes).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import secrets
import struct
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

FORMAT_VERSION = 1
NONE_DEV = 0xFFFF  # marks an unassigned replica slot in replica2part2dev
MAX_DEVICES = 0xFFFF


class RingError(ValueError):
    """A bad ring operation; the message says what is wrong."""


def _encode_array(arr: array) -> str:
    if sys.byteorder != "little":
        arr = array(arr.typecode, arr)
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode("ascii")


def _decode_array(typecode: str, text: str) -> array:
    arr = array(typecode)
    arr.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        arr.byteswap()
    return arr


@dataclass
class RingData:
    """The whole content of a ring file."""

    part_power: int
    replicas: int
    min_part_hours: int
    hash_prefix: str
    hash_suffix: str
    devices: list[dict | None] = field(default_factory=list)
    replica2part2dev: list[array] = field(default_factory=list)
    last_part_moves: array = field(default_factory=lambda: array("I"))
    last_rebalance: float = 0.0
    version: int = 0

    @property
    def partition_count(self) -> int:
        return 1 << self.part_power

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "part_power": self.part_power,
            "replicas": self.replicas,
            "min_part_hours": self.min_part_hours,
            "hash_prefix": self.hash_prefix,
            "hash_suffix": self.hash_suffix,
            "version": self.version,
            "devices": self.devices,
            "replica2part2dev": [_encode_array(a) for a in self.replica2part2dev],
            "last_part_moves": _encode_array(self.last_part_moves),
            "last_rebalance": self.last_rebalance,
        }

    @classmethod
    def from_json(cls, doc: dict) -> "RingData":
        if doc.get("format_version") != FORMAT_VERSION:
            raise RingError(f"unsupported ring format_version {doc.get('format_version')!r}")
        return cls(
            part_power=doc["part_power"],
            replicas=doc["replicas"],
            min_part_hours=doc["min_part_hours"],
            hash_prefix=doc["hash_prefix"],
            hash_suffix=doc["hash_suffix"],
            devices=doc["devices"],
            replica2part2dev=[_decode_array("H", t) for t in doc["replica2part2dev"]],
            last_part_moves=_decode_array("I", doc["last_part_moves"]),
            last_rebalance=doc.get("last_rebalance", 0.0),
            version=doc.get("version", 0),
        )

    def save(self, path: Path | str) -> None:
        """Write atomically (temp file + rename) so nodes never read a half-written ring."""
        path = Path(path)
        payload = gzip.compress(json.dumps(self.to_json()).encode(), compresslevel=6, mtime=0)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".ring-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: Path | str) -> "RingData":
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise RingError(f"ring file {path} does not exist") from None
        try:
            doc = json.loads(gzip.decompress(raw))
        except (OSError, ValueError) as exc:
            raise RingError(f"ring file {path} is not a gzip JSON ring: {exc}") from None
        return cls.from_json(doc)


# ---------------------------------------------------------------------------------------------
# Lookups


class Ring:
    """Read-only lookup view of a ring, built for speed."""

    def __init__(self, data: RingData):
        if not data.replica2part2dev:
            raise RingError("ring has never been rebalanced; run rebalance first")
        self.data = data
        self.part_power = data.part_power
        self.replicas = data.replicas
        self._shift = 32 - data.part_power
        self._prefix = data.hash_prefix.encode()
        self._suffix = data.hash_suffix.encode()
        self.devs: list[dict | None] = data.devices
        self._r2p2d = data.replica2part2dev
        self.partition_count = data.partition_count

    @classmethod
    def load(cls, path: Path | str) -> "Ring":
        return cls(RingData.load(path))

    def hash_path(self, account: str, container: str | None = None, obj: str | None = None) -> bytes:
        """md5 digest of the path salted with the ring's prefix/suffix (also names files on disk)."""
        return hash_path(self._prefix, self._suffix, account, container, obj)

    def get_part(self, account: str, container: str | None = None, obj: str | None = None) -> int:
        digest = self.hash_path(account, container, obj)
        return struct.unpack_from(">I", digest)[0] >> self._shift

    def get_part_nodes(self, part: int) -> list[dict]:
        devs = self.devs
        seen: set[int] = set()
        out = []
        for r2d in self._r2p2d:
            dev_id = r2d[part]
            if dev_id != NONE_DEV and dev_id not in seen:
                seen.add(dev_id)
                out.append(devs[dev_id])
        return out

    def get_nodes(
        self, account: str, container: str | None = None, obj: str | None = None
    ) -> tuple[int, list[dict]]:
        part = self.get_part(account, container, obj)
        return part, self.get_part_nodes(part)

    def get_more_nodes(self, part: int) -> Iterator[dict]:
        """Handoff devices for ``part``, best first.

        Devices in regions the primaries do not use come first, then devices in unused zones,
        then the rest; within a group the order is a per-partition pseudo-random permutation,
        so that the handoff load of a failed device spreads over the cluster.
        """
        primaries = self.get_part_nodes(part)
        primary_ids = {d["id"] for d in primaries}
        used_regions = {d["region"] for d in primaries}
        used_zones = {(d["region"], d["zone"]) for d in primaries}
        part_bytes = part.to_bytes(4, "big")
        candidates = []
        for dev in self.devs:
            if dev is None or dev["id"] in primary_ids or dev["weight"] <= 0:
                continue
            mix = hashlib.md5(part_bytes + dev["id"].to_bytes(2, "big")).digest()
            candidates.append(
                (dev["region"] in used_regions, (dev["region"], dev["zone"]) in used_zones, mix, dev)
            )
        candidates.sort(key=lambda c: c[:3])
        for c in candidates:
            yield c[3]


def hash_path(prefix: bytes, suffix: bytes, account: str, container: str | None = None,
              obj: str | None = None) -> bytes:
    if obj is not None and container is None:
        raise RingError("an object path needs a container")
    path = "/" + account
    if container is not None:
        path += "/" + container
        if obj is not None:
            path += "/" + obj
    return hashlib.md5(prefix + path.encode("utf-8", "surrogateescape") + suffix).digest()


class RingCache:
    """Keeps a :class:`Ring` loaded and reloads it when the file's mtime changes."""

    def __init__(self, path: Path | str, check_interval: float = 5.0):
        self.path = Path(path)
        self.check_interval = check_interval
        self._ring: Ring | None = None
        self._mtime = 0.0
        self._checked = 0.0

    def get(self) -> Ring:
        now = time.monotonic()
        if self._ring is None or now - self._checked >= self.check_interval:
            self._checked = now
            mtime = self.path.stat().st_mtime
            if self._ring is None or mtime != self._mtime:
                self._ring = Ring.load(self.path)
                self._mtime = mtime
        return self._ring


# ---------------------------------------------------------------------------------------------
# Building


def create(path: Path | str, part_power: int, replicas: int, min_part_hours: int = 1) -> RingData:
    """Start an empty ring file (no devices yet)."""
    if not 1 <= part_power <= 24:
        raise RingError("part_power must be between 1 and 24")
    if not 1 <= replicas <= 16:
        raise RingError("replicas must be between 1 and 16")
    if min_part_hours < 0:
        raise RingError("min_part_hours must be >= 0")
    if Path(path).exists():
        raise RingError(f"ring file {path} already exists")
    data = RingData(
        part_power=part_power,
        replicas=replicas,
        min_part_hours=min_part_hours,
        hash_prefix=secrets.token_hex(8),
        hash_suffix=secrets.token_hex(8),
        last_part_moves=array("I", bytes(4 * (1 << part_power))),
    )
    data.save(path)
    return data


def add_device(path: Path | str, *, region: int = 1, zone: int, ip: str, port: int,
               device: str, weight: float, meta: str = "") -> int:
    """Add a device; returns its id. Takes effect at the next :func:`rebalance`."""
    data = RingData.load(path)
    if weight < 0:
        raise RingError("weight must be >= 0")
    if not device or "/" in device:
        raise RingError("device must be a non-empty name without '/'")
    if not 0 < port < 65536:
        raise RingError("port must be between 1 and 65535")
    for dev in data.devices:
        if dev and (dev["ip"], dev["port"], dev["device"]) == (ip, port, device):
            raise RingError(f"device {ip}:{port}/{device} already exists (id {dev['id']})")
    if len(data.devices) >= MAX_DEVICES:
        raise RingError("too many devices")
    dev_id = len(data.devices)
    data.devices.append({"id": dev_id, "region": int(region), "zone": int(zone), "ip": ip,
                         "port": int(port), "device": device, "weight": float(weight),
                         "meta": meta})
    data.save(path)
    return dev_id


def _get_dev(data: RingData, dev_id: int) -> dict:
    if not 0 <= dev_id < len(data.devices) or data.devices[dev_id] is None:
        raise RingError(f"no device with id {dev_id}")
    return data.devices[dev_id]


def set_weight(path: Path | str, dev_id: int, weight: float) -> None:
    data = RingData.load(path)
    if weight < 0:
        raise RingError("weight must be >= 0")
    _get_dev(data, dev_id)["weight"] = float(weight)
    data.save(path)


def remove_device(path: Path | str, dev_id: int) -> None:
    """Remove a device; its partitions are reassigned at the next rebalance."""
    data = RingData.load(path)
    _get_dev(data, dev_id)
    data.devices[dev_id] = None
    data.save(path)


def show(path: Path | str) -> dict:
    """Summary for the operator: devices with their partition counts and the balance."""
    data = RingData.load(path)
    counts = [0] * len(data.devices)
    for r2d in data.replica2part2dev:
        for dev_id in r2d:
            if dev_id != NONE_DEV and dev_id < len(counts):
                counts[dev_id] += 1
    live = [d for d in data.devices if d]
    total_weight = sum(d["weight"] for d in live) or 1.0
    slots = data.partition_count * data.replicas if data.replica2part2dev else 0
    devices = []
    worst = 0.0
    for dev in live:
        wanted = slots * dev["weight"] / total_weight
        balance = (counts[dev["id"]] - wanted) / wanted * 100 if wanted else 0.0
        if dev["weight"] > 0:
            worst = max(worst, abs(balance))
        devices.append({**dev, "partitions": counts[dev["id"]], "balance": round(balance, 2)})
    return {
        "path": str(path),
        "format_version": FORMAT_VERSION,
        "part_power": data.part_power,
        "partitions": data.partition_count,
        "replicas": data.replicas,
        "min_part_hours": data.min_part_hours,
        "version": data.version,
        "last_rebalance": data.last_rebalance,
        "balance": round(worst, 2),
        "dispersion": _dispersion(data),
        "devices": devices,
    }


def _dispersion(data: RingData) -> dict:
    """How many partitions have two replicas in one zone / on one device (0 is ideal)."""
    same_zone = same_dev = 0
    if not data.replica2part2dev:
        return {"parts_with_shared_zone": 0, "parts_with_shared_device": 0}
    devs = data.devices
    for part in range(data.partition_count):
        ids = [r2d[part] for r2d in data.replica2part2dev]
        if len(set(ids)) < len(ids):
            same_dev += 1
        zones = [(devs[i]["region"], devs[i]["zone"]) for i in ids if i != NONE_DEV and devs[i]]
        if len(set(zones)) < len(zones):
            same_zone += 1
    return {"parts_with_shared_zone": same_zone, "parts_with_shared_device": same_dev}


class _Placer:
    """Scoring state of one rebalance: how full each device and tier is."""

    def __init__(self, data: RingData):
        self.data = data
        self.devs = {d["id"]: d for d in data.devices if d and d["weight"] > 0}
        if not self.devs:
            raise RingError("the ring has no device with weight > 0")
        total_weight = sum(d["weight"] for d in self.devs.values())
        slots = data.partition_count * data.replicas
        self.wanted = {i: slots * d["weight"] / total_weight for i, d in self.devs.items()}
        self.assigned = {i: 0 for i in self.devs}
        for r2d in data.replica2part2dev:
            for dev_id in r2d:
                if dev_id in self.assigned:
                    self.assigned[dev_id] += 1
        self.tiers = {
            i: (d["region"], (d["region"], d["zone"]), (d["region"], d["zone"], d["ip"]))
            for i, d in self.devs.items()
        }

    def fill_after(self, dev_id: int) -> float:
        """How full ``dev_id`` would be with one more replica (1.0 = its weighted share)."""
        wanted = self.wanted[dev_id]
        return (self.assigned[dev_id] + 1) / wanted if wanted else float("inf")

    def overload(self, dev_id: int) -> float:
        return self.assigned[dev_id] - self.wanted[dev_id]

    def best_device(self, other_ids: list[int], part: int = 0) -> int:
        """The device for a replica of ``part`` that already has replicas on ``other_ids``.

        Ties are broken by a per-partition pseudo-random order rather than by device id, so
        that which zones a partition spans does not correlate with which device holds it
        (that correlation would leave some devices unable to shed load later).
        """
        regions: dict = {}
        zones: dict = {}
        ips: dict = {}
        devs_used = set()
        for o in other_ids:
            t = self.tiers.get(o)
            if t is None:
                continue
            regions[t[0]] = regions.get(t[0], 0) + 1
            zones[t[1]] = zones.get(t[1], 0) + 1
            ips[t[2]] = ips.get(t[2], 0) + 1
            devs_used.add(o)
        best = None
        best_key = None
        for dev_id, (reg, zone, ip) in self.tiers.items():
            fill = (self.assigned[dev_id] + 1) / self.wanted[dev_id] if self.wanted[dev_id] else 1e9
            key = (regions.get(reg, 0), zones.get(zone, 0), ips.get(ip, 0),
                   dev_id in devs_used, fill, ((part + 1) * 2654435761 ^ dev_id * 40503)
                   & 0xFFFFFFFF)
            if best_key is None or key < best_key:
                best_key, best = key, dev_id
        return best

    def conflicts(self, dev_id: int, other_ids: list[int]) -> bool:
        """True when a replica on ``dev_id`` could be better dispersed than it is."""
        t = self.tiers[dev_id]
        mine = (sum(1 for o in other_ids if self.tiers.get(o, (None,))[0] == t[0]),
                sum(1 for o in other_ids if o in self.tiers and self.tiers[o][1] == t[1]),
                sum(1 for o in other_ids if o in self.tiers and self.tiers[o][2] == t[2]),
                dev_id in other_ids)
        best = self.best_device(other_ids)
        bt = self.tiers[best]
        theirs = (sum(1 for o in other_ids if self.tiers.get(o, (None,))[0] == bt[0]),
                  sum(1 for o in other_ids if o in self.tiers and self.tiers[o][1] == bt[1]),
                  sum(1 for o in other_ids if o in self.tiers and self.tiers[o][2] == bt[2]),
                  best in other_ids)
        return theirs < mine


def rebalance(path: Path | str, *, now: float | None = None) -> int:
    """Reassign partitions after device changes; returns how many replicas moved.

    The first rebalance places every replica (and returns the number placed).
    """
    data = RingData.load(path)
    moved = _rebalance(data, time.time() if now is None else now)
    data.save(path)
    return moved


def _rebalance(data: RingData, now: float) -> int:
    parts = data.partition_count
    hour = int(now // 3600)
    first_build = not data.replica2part2dev
    if first_build:
        data.replica2part2dev = [array("H", [NONE_DEV]) * parts for _ in range(data.replicas)]
        data.last_part_moves = array("I", [0]) * parts
    placer = _Placer(data)
    r2p2d = data.replica2part2dev
    moved_now = bytearray(parts)  # 1 = a replica of this partition already moved this time
    moved = 0

    def may_move(part: int) -> bool:
        if moved_now[part]:
            return False
        last = data.last_part_moves[part]
        return last == 0 or hour - last >= data.min_part_hours

    def place(part: int, replica: int, old: int) -> None:
        nonlocal moved
        others = [r2p2d[r][part] for r in range(data.replicas) if r != replica]
        new = placer.best_device(others, part)
        r2p2d[replica][part] = new
        placer.assigned[new] += 1
        if new != old:
            moved += 1
            # no data exists before the first build: its placements lock nothing
            if old != NONE_DEV and not first_build:
                moved_now[part] = 1
                data.last_part_moves[part] = max(hour, 1)

    # 1. Replicas with no home (new ring) or on removed / zero-weight devices must move.
    for part in range(parts):
        for replica in range(data.replicas):
            dev_id = r2p2d[replica][part]
            if dev_id not in placer.devs:
                if dev_id != NONE_DEV and data.devices[dev_id] is not None:
                    pass  # zero-weight device: counted as a move below
                r2p2d[replica][part] = NONE_DEV
                place(part, replica, dev_id if dev_id != NONE_DEV else NONE_DEV)
    # 2. Replicas that could be better dispersed (two replicas sharing a zone while a zone
    #    without any is available), one replica per partition at most.
    for part in range(parts):
        if not may_move(part):
            continue
        for replica in range(data.replicas):
            dev_id = r2p2d[replica][part]
            others = [r2p2d[r][part] for r in range(data.replicas) if r != replica]
            if placer.conflicts(dev_id, others):
                placer.assigned[dev_id] -= 1
                r2p2d[replica][part] = NONE_DEV
                place(part, replica, dev_id)
                break
    # 3. Overloaded devices give partitions away until they hold their weighted share, but
    #    only where that helps: to an equally dispersed device that is less full (a move
    #    sideways would cost data transfer and block the partition for min_part_hours).
    for dev_id in [d for _ in range(3)  # later rounds use room freed by earlier moves
                   for d in sorted(placer.devs, key=placer.overload, reverse=True)]:
        if placer.overload(dev_id) < 1:
            continue
        for part in range(parts):
            if placer.overload(dev_id) < 1:
                break
            if not may_move(part):
                continue
            for replica in range(data.replicas):
                if r2p2d[replica][part] != dev_id:
                    continue
                others = [r2p2d[r][part] for r in range(data.replicas) if r != replica]
                placer.assigned[dev_id] -= 1
                target = placer.best_device(others, part)
                if target == dev_id or placer.fill_after(target) >= placer.fill_after(dev_id):
                    placer.assigned[dev_id] += 1
                    break
                r2p2d[replica][part] = NONE_DEV
                place(part, replica, dev_id)
                break
    data.version += 1
    data.last_rebalance = now
    return moved


def ensure_rings(ring_dir: Path | str, devices: list[dict], *, part_power: int = 10,
                 replicas: int = 3, min_part_hours: int = 1) -> dict[str, Path]:
    """Create object/container/account rings over ``devices`` unless they already exist.

    For all-in-one setups (``stratus up``): each device is a dict with ``ip``, ``port``,
    ``device`` and optionally ``region``, ``zone`` (default: one zone per port) and
    ``weight`` (default 100). Replicas are capped at the number of devices. Existing rings
    are left alone, so a restart never reshuffles data. Returns {kind: path}.
    """
    ring_dir = Path(ring_dir)
    ring_dir.mkdir(parents=True, exist_ok=True)
    if not devices:
        raise RingError("ensure_rings needs at least one device")
    ports = sorted({d["port"] for d in devices})
    out = {}
    for kind in ("object", "container", "account"):
        path = ring_dir / f"{kind}.ring.gz"
        out[kind] = path
        if path.exists():
            continue
        tmp = ring_dir / f".{kind}.ring.gz.building"
        if tmp.exists():
            tmp.unlink()
        create(tmp, part_power, min(replicas, len(devices)), min_part_hours)
        for d in devices:
            add_device(tmp, region=d.get("region", 1), zone=d.get("zone", ports.index(d["port"]) + 1),
                       ip=d["ip"], port=d["port"], device=d["device"],
                       weight=d.get("weight", 100.0))
        rebalance(tmp)
        os.replace(tmp, path)
    return out
