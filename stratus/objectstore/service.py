"""The object store's place in a Stratus process.

The proxy (Swift's v1 API) is mounted in the main app at ``/v1``, ``/info``, ``/healthcheck``
and ``/auth``. Storage nodes are separate processes: in ``stratus up`` the bootstrap builds,
once, rings over an all-in-one layout (default: 3 node processes holding 2, 1 and 1 devices,
one zone each, 3 replicas; ``[objectstore] devices_per_node``) with free loopback ports, and
:func:`start` launches one ``python -m stratus.objectstore.storage`` per node (killed by PID
on stop, and by the kernel if this process dies). Start does not wait for them: requests that
arrive before the nodes listen wait for them (up to 30 s) instead of failing.

Operator commands: ``stratus ring create|add|remove|set-weight|rebalance|show`` and
``stratus serve objectstore-node --root DIR --ring-dir DIR --port P --devices d1,d2``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from stratus.services import CatalogEntry, ServiceSpec

NAME = "objectstore"
log = logging.getLogger("stratus.objectstore")


def settings(runtime):
    s = getattr(runtime, "_objectstore_settings", None)
    if s is None:
        from stratus.objectstore.proxy.settings import ObjectStoreSettings

        s = ObjectStoreSettings.from_section(runtime.config.section(NAME), runtime.config.state_dir)
        runtime._objectstore_settings = s
    return s


def _proxy(runtime):
    proxy = getattr(runtime, "_objectstore_proxy", None)
    if proxy is None:
        from stratus.objectstore.proxy import Proxy

        runtime._objectstore_ready = asyncio.Event()
        proxy = Proxy(settings(runtime), identity_url=runtime.config.identity_url,
                      public_url=runtime.public_url, ready=runtime._objectstore_ready)
        runtime._objectstore_proxy = proxy
    return proxy


def create_app(runtime):
    from stratus.objectstore.proxy import create_proxy_app

    return create_proxy_app(_proxy(runtime), lambda: runtime.validator(NAME))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_root(runtime) -> Path:
    return runtime.config.state_dir / "objectstore" / "nodes"


async def bootstrap(runtime) -> None:
    """Build the all-in-one rings once (a restart keeps them, so data never reshuffles)."""
    s = settings(runtime)
    if not s.run_nodes:
        return
    ring_dir = Path(s.ring_dir)
    if (ring_dir / "object.ring.gz").exists():
        return
    from stratus.objectstore import ring as ringmod

    devices = []
    number = 0
    for count in s.devices_per_node:
        port = _free_port()
        for _ in range(count):
            devices.append({"ip": s.node_ip, "port": port, "device": f"d{number}"})
            number += 1
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: ringmod.ensure_rings(ring_dir, devices, part_power=s.part_power,
                                           replicas=s.replicas, min_part_hours=1))
    log.info("object store rings built in %s: %d devices on %d nodes, %d replicas",
             ring_dir, len(devices), len(s.devices_per_node), min(s.replicas, len(devices)))


def local_nodes(ring_dir: Path, ip: str) -> dict[int, list[str]]:
    """{port: [device, ...]} of the object ring's devices at ``ip`` (this host)."""
    from stratus.objectstore.ring import RingData

    data = RingData.load(ring_dir / "object.ring.gz")
    nodes: dict[int, list[str]] = {}
    for dev in data.devices:
        if dev and dev["ip"] == ip:
            nodes.setdefault(dev["port"], []).append(dev["device"])
    return nodes


def _die_with_parent():
    """Runs in the child before exec: the kernel kills it if stratus dies (even by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def node_command(s, root: Path, port: int, devices: list[str]) -> list[str]:
    return [sys.executable, "-m", "stratus.objectstore.storage", "--root", str(root),
            "--ring-dir", str(s.ring_dir), "--ip", s.node_ip, "--port", str(port),
            "--devices", ",".join(devices), "--reserve-bytes", str(s.reserve_bytes),
            "--replicator-interval", str(s.replicator_interval),
            "--auditor-interval", str(s.auditor_interval),
            "--updater-interval", str(s.updater_interval),
            "--expirer-interval", str(s.expirer_interval)] + \
        ([] if s.group_sync else ["--per-file-sync"])


async def start(runtime):
    proxy = _proxy(runtime)
    s = settings(runtime)
    ready: asyncio.Event = runtime._objectstore_ready
    procs: list[subprocess.Popen] = []
    waiter = None
    if s.run_nodes and (Path(s.ring_dir) / "object.ring.gz").exists():
        root = node_root(runtime)
        nodes = local_nodes(Path(s.ring_dir), s.node_ip)
        log_dir = runtime.config.state_dir / "objectstore"
        for port, devices in sorted(nodes.items()):
            for d in devices:
                (root / d).mkdir(parents=True, exist_ok=True)
            with open(log_dir / f"node-{port}.log", "ab") as logf:
                procs.append(subprocess.Popen(node_command(s, root, port, devices), stdout=logf,
                                              stderr=subprocess.STDOUT,
                                              preexec_fn=_die_with_parent))
        runtime._objectstore_nodes = procs
        waiter = asyncio.create_task(_wait_listening(s.node_ip, sorted(nodes), procs, ready))
    else:
        ready.set()  # nodes are run elsewhere

    async def stop():
        if waiter is not None:
            waiter.cancel()
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.get_running_loop().run_in_executor(None, p.wait, 5)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        await proxy.close()

    return stop


async def _wait_listening(ip: str, ports: list[int], procs, ready: asyncio.Event):
    pending = set(ports)
    for _ in range(600):
        for port in list(pending):
            try:
                _, w = await asyncio.open_connection(ip, port)
                w.close()
                pending.discard(port)
            except OSError:
                pass
        if not pending:
            break
        if any(p.poll() is not None for p in procs):
            log.error("an object storage node exited at start; see %s",
                      "objectstore/node-<port>.log in the state directory")
            break
        await asyncio.sleep(0.05)
    ready.set()


# -- operator commands ---------------------------------------------------------------------
def add_commands(sub) -> None:
    from stratus.cli import _common

    p = sub.add_parser("ring", help="object store rings: create, add devices, rebalance, show")
    rsub = p.add_subparsers(dest="ring_command", required=True)
    q = rsub.add_parser("create", help="start an empty ring file")
    q.add_argument("path", help="ring file, e.g. /etc/stratus/object.ring.gz")
    q.add_argument("--part-power", type=int, required=True)
    q.add_argument("--replicas", type=int, required=True)
    q.add_argument("--min-part-hours", type=int, default=1)
    q = rsub.add_parser("add", help="add a device (takes effect at the next rebalance)")
    q.add_argument("path")
    q.add_argument("--region", type=int, default=1)
    q.add_argument("--zone", type=int, required=True)
    q.add_argument("--ip", required=True)
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--device", required=True)
    q.add_argument("--weight", type=float, default=100.0)
    q.add_argument("--meta", default="")
    q = rsub.add_parser("remove", help="remove a device by id")
    q.add_argument("path")
    q.add_argument("id", type=int)
    q = rsub.add_parser("set-weight", help="change a device's weight")
    q.add_argument("path")
    q.add_argument("id", type=int)
    q.add_argument("weight", type=float)
    q = rsub.add_parser("rebalance", help="(re)assign partitions to devices")
    q.add_argument("path")
    q = rsub.add_parser("show", help="devices, partition counts, balance and dispersion (JSON)")
    q.add_argument("path")
    p.set_defaults(func=_ring_command)

    # `stratus serve objectstore-node ...` runs one storage node process.
    serve = sub.choices.get("serve")
    if serve is not None:
        serve.add_argument("--root", help="(objectstore-node) directory holding the devices")
        serve.add_argument("--ring-dir", help="(objectstore-node) where the rings are")
        serve.add_argument("--devices", help="(objectstore-node) comma-separated device names")
        serve.add_argument("--ip", default=None, help="(objectstore-node) address in the ring")
        serve.add_argument("--per-file-sync", action="store_true",
                           help="(objectstore-node) an fsync per small write instead of group "
                                "commit (syncfs per batch)")
        previous = serve.get_default("func")

        def serve_or_node(args):
            if args.service == ["objectstore-node"]:
                return _serve_node(args)
            if args.service == [NAME]:
                return _serve_proxy(args, previous)
            return previous(args)

        serve.set_defaults(func=serve_or_node)
    del _common


def _ring_command(args) -> int:
    from stratus.objectstore import ring as ringmod

    try:
        cmd = args.ring_command
        if cmd == "create":
            ringmod.create(args.path, args.part_power, args.replicas, args.min_part_hours)
            print(f"created {args.path}: 2^{args.part_power} partitions, {args.replicas} replicas")
        elif cmd == "add":
            dev_id = ringmod.add_device(args.path, region=args.region, zone=args.zone, ip=args.ip,
                                        port=args.port, device=args.device, weight=args.weight,
                                        meta=args.meta)
            print(f"added device {dev_id}: r{args.region}z{args.zone}-{args.ip}:{args.port}/"
                  f"{args.device} weight {args.weight}")
        elif cmd == "remove":
            ringmod.remove_device(args.path, args.id)
            print(f"removed device {args.id}; run rebalance to move its partitions")
        elif cmd == "set-weight":
            ringmod.set_weight(args.path, args.id, args.weight)
            print(f"device {args.id} weight {args.weight}; run rebalance to apply")
        elif cmd == "rebalance":
            moved = ringmod.rebalance(args.path)
            print(f"rebalanced {args.path}: {moved} partition replicas assigned or moved")
        elif cmd == "show":
            print(json.dumps(ringmod.show(args.path), indent=2))
    except FileNotFoundError as exc:
        print(f"stratus ring: {exc.filename}: no such ring file", file=sys.stderr)
        return 2
    except ringmod.RingError as exc:
        print(f"stratus ring: {exc}", file=sys.stderr)
        return 2
    return 0


def _serve_proxy(args, generic) -> int:
    """``stratus serve objectstore``: the proxy without the database layer it never uses
    (see :mod:`stratus.objectstore.proxy.server`); several workers take the generic path."""
    from stratus import cli
    from stratus.common import log as logmod

    cli._apply_args_to_env(args)
    cfg = cli.load_config()
    if (args.workers or cfg["server"]["workers"]) > 1:
        return generic(args)
    from stratus.common.process import run_on_uvloop, tune_malloc
    from stratus.objectstore.proxy import server

    logmod.setup(cfg["debug"])
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    password = server.service_password(cfg)
    if password is None:
        print(f"stratus serve objectstore: no service password: set [auth] service_password or "
              f"use the state directory whose secrets.toml identity wrote "
              f"({cfg.state_dir / 'secrets.toml'} is missing or has none)", file=sys.stderr)
        return 2
    tune_malloc(arenas=2, mmap_threshold=256 * 1024)  # see tune_malloc: relays large bodies
    runtime = server.ProxyRuntime(cfg, password)
    try:
        run_on_uvloop(server.serve(cfg, runtime, bootstrap=args.bootstrap,
                                on_started=lambda: cli._write_runfile(cfg, runtime)))
    except KeyboardInterrupt:
        pass
    return 0


def _serve_node(args) -> int:
    from stratus.objectstore.storage.__main__ import main as node_main

    if not args.root or not args.port:
        print("stratus serve objectstore-node: --root and --port are required", file=sys.stderr)
        return 2
    ring_dir = args.ring_dir
    if not ring_dir:
        print("stratus serve objectstore-node: --ring-dir is required", file=sys.stderr)
        return 2
    argv = ["--root", args.root, "--ring-dir", ring_dir, "--port", str(args.port)]
    if args.devices:
        argv += ["--devices", args.devices]
    if args.ip or args.host:
        argv += ["--ip", args.ip or args.host]
    if args.per_file_sync:
        argv.append("--per-file-sync")
    return node_main(argv)


SPEC = ServiceSpec(
    name=NAME,
    mounts=["/v1", "/info", "/healthcheck", "/auth", "/s3"],
    create_app=create_app,
    catalog=[CatalogEntry("object-store", "swift", "/v1/AUTH_%(project_id)s")],
    strip_prefix=False,
    health_path="/healthcheck",
    has_db=False,
    bootstrap=bootstrap,
    start=start,
    add_commands=add_commands,
)
