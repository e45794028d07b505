"""``[objectstore]`` settings with their defaults, validated with messages naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from stratus.config import ConfigError

GiB = 1024 ** 3


@dataclass
class ObjectStoreSettings:
    # Where the rings live; empty means <state_dir>/objectstore/rings.
    ring_dir: str = ""
    # All-in-one layout that `stratus up` builds once: node processes and their devices.
    run_nodes: bool = True
    devices_per_node: list = field(default_factory=lambda: [2, 1, 1])
    replicas: int = 3
    part_power: int = 8
    node_ip: str = "127.0.0.1"
    # Seconds between background passes inside each node process (0 disables).
    replicator_interval: float = 30.0
    auditor_interval: float = 300.0
    updater_interval: float = 10.0
    expirer_interval: float = 60.0
    # Bytes a device keeps free; writes to a fuller device go to handoffs.
    reserve_bytes: int = 64 << 20
    # Small writes made durable by one syncfs per batch (group commit); false: an fsync per
    # file, for devices on a filesystem that busy unrelated writers share (docs/objectstore.md).
    group_sync: bool = True
    # Proxy
    max_file_size: int = 5 * GiB + 2
    max_manifest_segments: int = 1000
    max_manifest_size: int = 8 * 1024 * 1024
    # Bulk delete (?bulk-delete) and bulk upload (?extract-archive), as shown in /info
    max_deletes_per_request: int = 10000
    max_failed_deletes: int = 1000
    max_containers_per_extraction: int = 10000
    max_failed_extractions: int = 1000
    info_ttl: float = 10.0
    node_timeout: float = 10.0
    operator_roles: list = field(default_factory=lambda: ["admin", "member", "swiftoperator"])
    reader_roles: list = field(default_factory=lambda: ["reader"])
    reseller_admin_role: str = "ResellerAdmin"

    @classmethod
    def from_section(cls, section: dict, state_dir: Path) -> "ObjectStoreSettings":
        out = cls()
        known = {f.name: f for f in fields(cls)}
        for key, value in (section or {}).items():
            if key not in known:
                raise ConfigError(f"unknown configuration key 'objectstore.{key}' "
                                  f"(known: {', '.join(sorted(known))})")
            default = getattr(out, key)
            try:
                if isinstance(default, bool):
                    if isinstance(value, str):
                        value = value.lower() in ("1", "true", "yes", "on")
                    value = bool(value)
                elif isinstance(default, int):
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
                elif isinstance(default, list):
                    if isinstance(value, str):
                        value = [v.strip() for v in value.split(",") if v.strip()]
                    elif isinstance(value, int) and not isinstance(value, bool):
                        value = [value]  # e.g. STRATUS_OBJECTSTORE__DEVICES_PER_NODE=4
                    value = list(value)
                else:
                    value = str(value)
            except (TypeError, ValueError):
                raise ConfigError(f"configuration key 'objectstore.{key}' must be "
                                  f"{type(default).__name__}, got {value!r}") from None
            setattr(out, key, value)
        try:
            out.devices_per_node = [int(v) for v in out.devices_per_node]
        except (TypeError, ValueError):
            raise ConfigError("configuration key 'objectstore.devices_per_node' must be a list "
                              "of device counts, e.g. [2, 1, 1]") from None
        if not out.devices_per_node or min(out.devices_per_node) < 1:
            raise ConfigError("configuration key 'objectstore.devices_per_node' needs at least "
                              "one node with at least one device")
        if not 1 <= out.replicas <= 16:
            raise ConfigError("configuration key 'objectstore.replicas' must be 1..16")
        if not 4 <= out.part_power <= 20:
            raise ConfigError("configuration key 'objectstore.part_power' must be 4..20")
        if out.max_file_size < 1:
            raise ConfigError("configuration key 'objectstore.max_file_size' must be positive")
        for key in ("max_deletes_per_request", "max_failed_deletes",
                    "max_containers_per_extraction", "max_failed_extractions",
                    "max_manifest_segments", "max_manifest_size"):
            if getattr(out, key) < 1:
                raise ConfigError(f"configuration key 'objectstore.{key}' must be at least 1")
        if not out.ring_dir:
            out.ring_dir = str(Path(state_dir) / "objectstore" / "rings")
        return out
