"""The `[volume]` configuration section: defaults and checks (messages name the key)."""

from __future__ import annotations

import socket
from pathlib import Path

DEFAULTS = {
    # Where the file back end keeps volumes; default <state_dir>/volumes.
    "path": "",
    "driver": "file",
    # Run a volume agent inside the API process (`stratus up`/`serve`); false on API-only hosts
    # whose storage hosts run `stratus volume-agent`.
    "run_agent": True,
    "format": "qcow2",
    # This storage host's name (agents serve the bus topic volume.<host>).
    "host": "",
    "availability_zone": "nova",
    # Address NBD exports listen on, reachable from compute hosts; default the API's host
    # address (127.0.0.1 for an all-in-one cloud on loopback).
    "export_address": "",
    "export_port_min": 10809,
    "export_port_max": 10999,
    # "nbd" always, or "file" to hand a compute host on this same host the path of a raw file.
    "local_attach": "nbd",
    # Stop the NBD exports of this agent when it stops (all-in-one, tests); false keeps guests'
    # disks served across an agent restart.
    "stop_exports_on_exit": True,
    "heartbeat_interval": 10.0,
    "service_down_time": 60.0,
    "default_volume_type": "__DEFAULT__",
    "backup_container": "volumebackups",
    "backup_chunk_size": 32 * 1024 * 1024,
    "quota_volumes": 10,
    "quota_snapshots": 10,
    "quota_gigabytes": 1000,
    "quota_backups": 10,
    "quota_backup_gigabytes": 1000,
    "quota_per_volume_gigabytes": -1,
    "quota_groups": 10,
    "max_volume_size_gb": 1024,
}


def load(config) -> dict:
    raw = dict(config.section("volume"))
    out = dict(DEFAULTS)
    for key, value in raw.items():
        if key not in DEFAULTS:
            raise ValueError(f"unknown configuration key 'volume.{key}' (known: {', '.join(sorted(DEFAULTS))})")
        default = DEFAULTS[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ValueError(f"configuration key 'volume.{key}' must be {type(default).__name__}, got {value!r}")
        out[key] = value
    if not out["path"]:
        out["path"] = str(Path(config.state_dir) / "volumes")
    if not out["host"]:
        out["host"] = socket.gethostname()
    if not out["export_address"]:
        host = config["server"]["host"]
        out["export_address"] = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    if out["format"] not in ("qcow2", "raw"):
        raise ValueError("configuration key 'volume.format' must be 'qcow2' or 'raw'")
    if out["local_attach"] not in ("nbd", "file"):
        raise ValueError("configuration key 'volume.local_attach' must be 'nbd' or 'file'")
    return out
