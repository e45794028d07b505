"""Start a small real cluster of storage-node processes for tests and benchmarks.

``Cluster(tmp, nodes=3, devices_per_node=[2, 1, 1])`` builds object/container/account rings
(3 replicas, one zone per node) over free loopback ports, then ``start()`` launches one
``python -m stratus.objectstore.storage`` process per node; ``stop()`` kills them by PID.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from stratus.objectstore import ring as ringmod
from tests.cloudfixture import stop_process

REPO = Path(__file__).resolve().parents[3]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, index: int, root: Path, port: int, devices: list[str]):
        self.index = index
        self.root = root
        self.port = port
        self.devices = devices
        self.proc: subprocess.Popen | None = None
        self.log = root.parent / f"node{index}.log"

    def dev_path(self, device: str) -> Path:
        return self.root / device


class Cluster:
    def __init__(self, base: Path, *, devices_per_node=(2, 1, 1), part_power: int = 6,
                 replicas: int = 3, daemon_args: list[str] | None = None):
        self.base = Path(base)
        self.ring_dir = self.base / "rings"
        self.ring_dir.mkdir(parents=True, exist_ok=True)
        self.nodes: list[Node] = []
        self.daemon_args = daemon_args if daemon_args is not None else [
            "--replicator-interval", "0", "--auditor-interval", "0",
            "--updater-interval", "0", "--expirer-interval", "0"]
        dev_no = 0
        for i, count in enumerate(devices_per_node):
            root = self.base / f"node{i}"
            devices = []
            for _ in range(count):
                name = f"d{dev_no}"
                dev_no += 1
                (root / name).mkdir(parents=True)
                devices.append(name)
            self.nodes.append(Node(i, root, free_port(), devices))
        for kind in ("object", "container", "account"):
            path = self.ring_dir / f"{kind}.ring.gz"
            ringmod.create(path, part_power, replicas, 0)
            for node in self.nodes:
                for dev in node.devices:
                    ringmod.add_device(path, region=1, zone=node.index + 1, ip="127.0.0.1",
                                       port=node.port, device=dev, weight=100)
            ringmod.rebalance(path)

    def ring(self, kind: str = "object") -> ringmod.Ring:
        return ringmod.Ring.load(self.ring_dir / f"{kind}.ring.gz")

    def node_for(self, dev: dict) -> Node:
        return next(n for n in self.nodes if n.port == dev["port"])

    def start(self, timeout: float = 20.0):
        for node in self.nodes:
            self.start_node(node, wait=False)
        for node in self.nodes:
            self.wait_ready(node, timeout)

    def start_node(self, node: Node, wait: bool = True, extra: list[str] | None = None):
        logf = open(node.log, "ab")
        node.proc = subprocess.Popen(
            [PYTHON, "-m", "stratus.objectstore.storage", "--root", str(node.root),
             "--ring-dir", str(self.ring_dir), "--port", str(node.port),
             "--devices", ",".join(node.devices), "--reserve-bytes", "0",
             *self.daemon_args, *(extra or [])],
            stdout=logf, stderr=subprocess.STDOUT, cwd=str(REPO))
        logf.close()
        if wait:
            self.wait_ready(node)

    def wait_ready(self, node: Node, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"node {node.index} exited: {node.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", node.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"node {node.index} did not start: {node.log.read_text()[-2000:]}")

    def stop_node(self, node: Node, sig=signal.SIGKILL):
        if node.proc is not None:
            stop_process(node.proc, sig)
        node.proc = None

    def stop(self):
        for node in self.nodes:
            self.stop_node(node)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
