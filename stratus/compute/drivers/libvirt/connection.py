"""The connection to the host's libvirtd, with every blocking call bounded.

libvirt-python blocks, so each call runs on a small thread pool of its own and is awaited with
a timeout: a wedged libvirtd or QEMU becomes a DriverError naming the operation, never a hung
agent. (The stuck thread itself cannot be cancelled; the pool is sized so a few of those do not
starve the rest.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import libvirt

from stratus.compute.drivers.base import DriverError, InstanceNotFound

LOG = logging.getLogger(__name__)

DEFAULT_URI = "qemu:///system"
LIBVIRT_SOCKET = Path("/var/run/libvirt/libvirt-sock")
START_SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "start-libvirtd.sh"

# Seconds allowed for ordinary calls (lookups, define, XML); slow ones pass their own.
DEFAULT_TIMEOUT = 30.0


def _silence_libvirt_errors(_ctx, _err) -> None:
    """libvirt prints every error to stderr by default; ours are raised as exceptions instead."""


libvirt.registerErrorHandler(_silence_libvirt_errors, None)


def libvirtd_answers(socket_path: Path = LIBVIRT_SOCKET) -> bool:
    """True when something accepts connections on libvirtd's socket. The file alone proves
    nothing: a daemon that was killed leaves it behind, and connections to it are refused."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(socket_path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def ensure_libvirtd(uri: str = DEFAULT_URI, script: Path = START_SCRIPT, timeout: float = 60.0) -> None:
    """Start libvirtd and virtlogd with scripts/start-libvirtd.sh when the system socket is missing."""
    if uri != DEFAULT_URI or libvirtd_answers():
        return
    if not script.exists():
        raise DriverError(f"libvirtd is not running ({LIBVIRT_SOCKET} missing) and {script} was not found")
    LOG.info("libvirtd socket %s missing: starting libvirtd with %s", LIBVIRT_SOCKET, script)
    try:
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise DriverError(f"{script} did not finish within {timeout:.0f}s") from exc
    if result.returncode != 0:
        raise DriverError(f"could not start libvirtd: {(result.stderr or result.stdout).strip()}")


class LibvirtConnection:
    """One shared virConnect (thread-safe in libvirt) reopened when libvirtd restarts."""

    def __init__(self, uri: str = DEFAULT_URI, max_workers: int = 8):
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="libvirt")

    def _open(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                LOG.warning("libvirt connection to %s lost; reconnecting", self.uri)
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise DriverError(f"cannot connect to libvirt at {self.uri}: {exc.get_error_message()}") from exc
            return self._conn

    async def run(self, what: str, fn: Callable[..., Any], *args, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Run ``fn(*args)`` in the pool; libvirt errors and timeouts become DriverError(what...)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, lambda: fn(*args))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError as exc:
            raise DriverError(f"{what}: libvirt did not answer within {timeout:.0f}s") from exc
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise InstanceNotFound(f"{what}: no such domain") from exc
            raise DriverError(f"{what}: {exc.get_error_message()}") from exc

    async def call(self, what: str, fn: Callable[[libvirt.virConnect], Any], timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Run ``fn(conn)`` with a live connection."""
        return await self.run(what, lambda: fn(self._open()), timeout=timeout)

    async def lookup(self, uuid: str) -> libvirt.virDomain:
        try:
            return await self.call(f"lookup of {uuid}", lambda c: c.lookupByUUIDString(uuid))
        except InstanceNotFound:
            raise InstanceNotFound(f"instance {uuid} has no domain on this host") from None

    async def lookup_or_none(self, uuid: str) -> libvirt.virDomain | None:
        try:
            return await self.lookup(uuid)
        except InstanceNotFound:
            return None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
        self._pool.shutdown(wait=False, cancel_futures=True)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return str(os.getpid())
