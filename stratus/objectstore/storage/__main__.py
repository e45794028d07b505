"""``python -m stratus.objectstore.storage``: run one storage node (see the package docs)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from stratus.common.process import run_on_uvloop, tune_malloc

from . import run_node


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="stratus-objectstore-node",
                                description="Run an object-store storage node.")
    p.add_argument("--root", required=True, type=Path, help="directory holding the devices")
    p.add_argument("--ring-dir", required=True, type=Path)
    p.add_argument("--devices", default=None,
                   help="comma-separated device names (default: every directory under root)")
    p.add_argument("--ip", default="127.0.0.1", help="this node's address in the ring")
    p.add_argument("--bind", default=None, help="listen address (default: --ip)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reserve-bytes", type=int, default=64 << 20)
    p.add_argument("--update-timeout", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--per-file-sync", action="store_true",
                   help="fsync every small write on its own instead of group commit (syncfs); "
                        "for devices that share a filesystem with busy unrelated writers")
    for name, default in (("replicator", 30.0), ("auditor", 300.0), ("updater", 10.0),
                          ("expirer", 60.0)):
        p.add_argument(f"--{name}-interval", type=float, default=default,
                       help=f"seconds between {name} passes (0 disables)")
    p.add_argument("--auditor-bytes-per-second", type=float, default=50 << 20)
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    devices = [d for d in args.devices.split(",") if d] if args.devices else None
    tune_malloc(arenas=2)  # 32 I/O threads would otherwise each keep an arena of freed buffers
    if not args.root.is_dir():
        p.error(f"--root {args.root} is not a directory")
    try:
        run_on_uvloop(run_node(
            args.root, devices, ring_dir=args.ring_dir, ip=args.ip, port=args.port,
            bind=args.bind, reserve_bytes=args.reserve_bytes,
            update_timeout=args.update_timeout, threads=args.threads,
            group_sync=not args.per_file_sync,
            replicator_interval=args.replicator_interval,
            auditor_interval=args.auditor_interval,
            auditor_bytes_per_second=args.auditor_bytes_per_second,
            updater_interval=args.updater_interval, expirer_interval=args.expirer_interval))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
