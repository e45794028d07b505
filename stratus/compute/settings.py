"""The ``[compute]`` configuration section: defaults, and validation that names the bad key."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field, fields

from stratus.config import ConfigError

DEFAULT_QUOTAS = {
    "instances": 10,
    "cores": 20,
    "ram": 51200,
    "key_pairs": 100,
    "metadata_items": 128,
    "server_groups": 10,
    "server_group_members": 10,
}


@dataclass
class ComputeSettings:
    # Virt driver of this host's agent: "libvirt" (the default for users) or "fake" (tests).
    driver: str = "libvirt"
    # Run a compute agent inside `stratus up` (off when agents run as their own processes).
    local_agent: bool = True
    # Host name the in-process agent registers as; empty = this machine's hostname.
    host: str = ""
    availability_zone: str = "nova"
    heartbeat_interval: float = 10.0
    # A host whose last heartbeat is older than this is down: no new work, shown down.
    service_down_time: float = 60.0
    scheduler_refresh_interval: float = 2.0
    # "spread" (most free RAM first) or "pack" (least free RAM that fits first).
    weigher: str = "spread"
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    allow_resize_to_same_host: bool = True
    reconcile_interval: float = 30.0
    console_token_ttl: int = 600
    max_limit: int = 1000
    # Fake driver: simulated hosts per agent process and their size.
    fake_hosts: int = 1
    fake_vcpus: int = 16
    fake_memory_mb: int = 32768
    fake_local_gb: int = 500
    fake_latency: float = 0.002
    quotas: dict = field(default_factory=lambda: dict(DEFAULT_QUOTAS))

    @property
    def host_name(self) -> str:
        return self.host or socket.gethostname()


# Keys of [compute] read by others: the libvirt driver (LibvirtDriver.from_config) and the
# metadata secret shared with the network service. Validated where they are used.
PASSTHROUGH = {"instances_path", "image_cache_path", "libvirt_uri", "virt_accelerator", "accel_probe_kernel",
               "soft_reboot_timeout", "start_libvirtd", "metadata_secret"}


def load(section: dict) -> ComputeSettings:
    s = ComputeSettings()
    known = {f.name: f for f in fields(ComputeSettings)}
    for key, value in (section or {}).items():
        if key in PASSTHROUGH:
            continue
        if key not in known:
            raise ConfigError(f"unknown configuration key 'compute.{key}'")
        default = getattr(s, key)
        if key == "quotas":
            if not isinstance(value, dict):
                raise ConfigError("configuration key 'compute.quotas' must be a table")
            for q, v in value.items():
                if q not in DEFAULT_QUOTAS or not isinstance(v, int) or isinstance(v, bool) or v < -1:
                    raise ConfigError(f"configuration key 'compute.quotas.{q}' must be a known quota "
                                      f"({', '.join(DEFAULT_QUOTAS)}) with an integer >= -1")
                s.quotas[q] = v
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"configuration key 'compute.{key}' must be true or false")
        elif isinstance(default, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"configuration key 'compute.{key}' must be a number")
            value = float(value)
        elif isinstance(default, int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"configuration key 'compute.{key}' must be an integer")
        elif isinstance(default, str):
            value = str(value)
        setattr(s, key, value)
    if s.driver not in ("libvirt", "fake"):
        raise ConfigError("configuration key 'compute.driver' must be 'libvirt' or 'fake'")
    if s.weigher not in ("spread", "pack"):
        raise ConfigError("configuration key 'compute.weigher' must be 'spread' or 'pack'")
    for key in ("heartbeat_interval", "service_down_time", "scheduler_refresh_interval", "reconcile_interval"):
        if getattr(s, key) <= 0:
            raise ConfigError(f"configuration key 'compute.{key}' must be positive")
    if s.fake_hosts < 1:
        raise ConfigError("configuration key 'compute.fake_hosts' must be at least 1")
    return s
