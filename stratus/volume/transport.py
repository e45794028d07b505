"""Network transport for attachments: NBD exports served by qemu-storage-daemon.

One daemon per attachment opens the volume's image (qcow2 chain or raw), serves it as an NBD
export named after the volume on ``<export address>:<port>`` and keeps a QMP monitor socket so
the agent can change the image while a guest uses it: ``blockdev-snapshot-sync`` puts a new
overlay on top (live snapshots, clones, backups) and ``block_resize`` grows it (extend of an
attached volume). The compute host connects with QEMU's own NBD client, so nothing but TCP is
needed between the hosts.

The daemon runs detached (``--daemonize``): it outlives an agent restart, and the agent finds it
again by its pid file and monitor socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from stratus.volume.drivers.base import DriverError

log = logging.getLogger("stratus.volume.transport")


@dataclass
class Export:
    attachment_id: str
    volume_id: str
    host: str
    port: int
    node: str  # the top block node being served (changes with every live snapshot)
    generation: int
    socket: str
    pidfile: str
    read_only: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Export":
        # Ignores bookkeeping keys the agent stores alongside (e.g. "owner").
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def connection_info(self) -> dict:
        return {"driver_volume_type": "nbd",
                "data": {"host": self.host, "port": self.port, "name": self.volume_id},
                # The export is withdrawn and re-added for a moment when the volume is extended
                # while attached; a client that reconnects within this many seconds sees the new size.
                "reconnect_delay": 10}

    def pid(self) -> int | None:
        try:
            return int(Path(self.pidfile).read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A daemon that died but was never reaped (its parent is init, which may be slow or a
        # container's minimal init) still answers kill(0): look at its state.
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state not in ("Z", "X")


async def qmp(sock_path: str, command: str, arguments: dict | None = None, *, timeout: float = 30) -> dict:
    """One QMP command on a monitor socket: greeting, capabilities, the command, its answer."""

    async def talk():
        reader, writer = await asyncio.open_unix_connection(sock_path)
        try:
            async def answer():
                while True:
                    line = await reader.readline()
                    if not line:
                        raise DriverError("the export process closed its monitor")
                    msg = json.loads(line)
                    if "return" in msg or "error" in msg:
                        return msg

            await reader.readline()  # greeting
            writer.write(b'{"execute": "qmp_capabilities"}\n')
            await writer.drain()
            await answer()
            msg = {"execute": command}
            if arguments:
                msg["arguments"] = arguments
            writer.write(json.dumps(msg).encode() + b"\n")
            await writer.drain()
            reply = await answer()
            if "error" in reply:
                raise DriverError(f"{command}: {reply['error'].get('desc', reply['error'])}")
            return reply["return"]
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(talk(), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise DriverError(f"cannot reach the export's monitor {sock_path}: {exc or type(exc).__name__}") from None


class LiveExport:
    """The driver's view of an image an export holds open (see drivers.base.LiveImage)."""

    def __init__(self, export: Export):
        self.export = export

    async def snapshot(self, new_path: Path, backing: Path, size_bytes: int) -> None:
        # The overlay file is made offline (-u: the backing file is locked by this export), then
        # added as a monitor-owned node so it outlives export changes, then put on top.
        from stratus.volume.drivers.file import run

        new_node = f"n{self.export.generation + 1}"
        await run("qemu-img", "create", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", backing.name, str(new_path),
                  str(size_bytes))
        try:
            await qmp(self.export.socket, "blockdev-add", {
                "driver": "qcow2", "node-name": new_node, "backing": None,
                "file": {"driver": "file", "filename": str(new_path)}})
            await qmp(self.export.socket, "blockdev-snapshot", {"node": self.export.node, "overlay": new_node})
        except DriverError:
            new_path.unlink(missing_ok=True)
            raise
        self.export.node = new_node
        self.export.generation += 1

    async def resize(self, size_bytes: int) -> None:
        # QEMU's NBD server refuses resizes of a served node, and NBD has no way to tell a client
        # the size changed: withdraw the export, grow the node, serve it again. A client that
        # reconnects (QEMU's NBD client with reconnect-delay) then sees the new size.
        await qmp(self.export.socket, "block-export-del", {"id": "e0", "mode": "hard"})
        for _ in range(100):
            exports = await qmp(self.export.socket, "query-block-exports")
            if not exports:
                break
            await asyncio.sleep(0.05)
        try:
            await qmp(self.export.socket, "block_resize", {"node-name": self.export.node, "size": size_bytes})
        finally:
            await qmp(self.export.socket, "block-export-add", {
                "type": "nbd", "id": "e0", "node-name": self.export.node, "name": self.export.volume_id,
                "writable": not self.export.read_only})


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Exporter:
    """Starts and stops the NBD export daemons of one storage host."""

    def __init__(self, run_dir: Path, address: str, port_min: int, port_max: int, binary: str = "qemu-storage-daemon",
                 wrapper: tuple[str, ...] = ()):
        if not 0 < port_min <= port_max < 65536:
            raise ValueError("configuration keys 'volume.export_port_min'/'export_port_max' must be a port range")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Monitor sockets live here unless the path would pass the 107-byte limit of UNIX
        # socket names; then in a short private directory named after the run directory.
        self.socket_dir = self.run_dir
        if len(str(self.run_dir)) + 42 > 107:
            import hashlib
            import tempfile

            digest = hashlib.sha256(str(self.run_dir.resolve()).encode()).hexdigest()[:12]
            # Made at the first export and removed when the last one stops.
            self.socket_dir = Path(tempfile.gettempdir()) / f"stratus-qmp-{digest}"
        self.address = address
        self.port_min = port_min
        self.port_max = port_max
        self.binary = binary
        # A command the daemon runs under, e.g. ("ip", "netns", "exec", "storage") in tests.
        self.wrapper = tuple(wrapper)
        self._lock = asyncio.Lock()

    async def start(self, *, attachment_id: str, volume_id: str, path: Path, image_format: str,
                    read_only: bool, ports_in_use: set[int], preferred_port: int | None = None) -> Export:
        async with self._lock:
            last_error = "no free port"
            # An export started again (after its daemon died) keeps its port when it can, so the
            # compute host's connection info stays valid.
            candidates = list(range(self.port_min, self.port_max + 1))
            if preferred_port is not None:
                candidates.insert(0, preferred_port)
            for port in candidates:
                if port in ports_in_use or (not self.wrapper and not port_is_free(self.address, port)):
                    continue
                export = Export(attachment_id=attachment_id, volume_id=volume_id, host=self.address, port=port,
                                node="n0", generation=0, socket=str(self.socket_dir / f"{attachment_id}.qmp"),
                                pidfile=str(self.run_dir / f"{attachment_id}.pid"), read_only=read_only)
                try:
                    await self._launch(export, path, image_format, read_only)
                    return export
                except DriverError as exc:
                    last_error = str(exc)
                    if "Address already in use" not in last_error:
                        raise
            raise DriverError(f"cannot export volume {volume_id}: {last_error} in ports "
                              f"{self.port_min}-{self.port_max} on {self.address}")

    async def _launch(self, export: Export, path: Path, image_format: str, read_only: bool) -> None:
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        Path(export.socket).unlink(missing_ok=True)
        blockdev = {"driver": image_format, "node-name": export.node, "read-only": read_only,
                    "file": {"driver": "file", "filename": str(path)}}
        args = [*self.wrapper, self.binary,
                "--blockdev", json.dumps(blockdev),
                "--nbd-server", f"addr.type=inet,addr.host={export.host},addr.port={export.port}",
                "--export", f"type=nbd,id=e0,node-name={export.node},name={export.volume_id},"
                            f"writable={'off' if read_only else 'on'}",
                "--chardev", f"socket,id=m0,path={export.socket},server=on,wait=off",
                "--monitor", "chardev=m0",
                "--pidfile", export.pidfile,
                "--daemonize"]
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE,
                                                    stdin=asyncio.subprocess.DEVNULL)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise DriverError("qemu-storage-daemon did not start within 30 s") from None
        if proc.returncode != 0:
            raise DriverError(f"qemu-storage-daemon failed: {err.decode(errors='replace').strip()[-400:]}")
        log.info("exporting volume %s over NBD at %s:%d (pid %s)", export.volume_id, export.host, export.port,
                 export.pid())

    async def stop(self, export: Export) -> None:
        pid = export.pid()
        if pid is not None and export.alive():
            try:
                await qmp(export.socket, "quit", timeout=5)
            except DriverError:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for _ in range(100):
                if not export.alive():
                    break
                await asyncio.sleep(0.05)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        Path(export.socket).unlink(missing_ok=True)
        Path(export.pidfile).unlink(missing_ok=True)
        if self.socket_dir != self.run_dir:
            try:
                self.socket_dir.rmdir()  # only when no other export's socket is left in it
            except OSError:
                pass
