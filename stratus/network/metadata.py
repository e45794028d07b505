"""The metadata proxy: guests reach 169.254.169.254:80 inside their network's DHCP namespace.

The proxy listens on a socket created inside the namespace (a socket keeps the namespace it was
made in, so one asyncio loop in the host namespace serves every network), identifies the caller
by (network, source IP) → port → device_id, and forwards the request to compute's metadata
service with X-Instance-ID, X-Tenant-ID and X-Instance-ID-Signature (HMAC-SHA256 of the instance
id with the shared metadata secret), as neutron's proxy does for nova.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import hmac
import logging
import os
import socket
import threading
from typing import Callable

import httpx

log = logging.getLogger("stratus.network.metadata")

METADATA_IP = "169.254.169.254"
CLONE_NEWNET = 0x40000000
MAX_HEADER = 65536
MAX_BODY = 1 << 20


def sign(secret: str, instance_id: str) -> str:
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


def socket_in_namespace(netns: str, address: str, port: int) -> socket.socket:
    """A listening TCP socket that lives in network namespace ``netns``.

    setns() changes only the calling thread's namespace, so the switch happens on a short-lived
    thread of its own and never leaks into the event loop or an executor thread.
    """
    result: dict = {}

    def work():
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {netns} failed")
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                sock.listen(128)
                sock.setblocking(False)
                result["sock"] = sock
            finally:
                if libc.setns(own, CLONE_NEWNET) != 0:
                    result["fatal"] = "could not return to the host network namespace"
        except BaseException as exc:  # handed to the caller
            result["error"] = exc
        finally:
            os.close(own)
            os.close(target)

    t = threading.Thread(target=work, name=f"setns-{netns}")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["sock"]


class MetadataProxy:
    """One listener per namespace; ``lookup(network_id, ip)`` gives {device_id, project_id} or None."""

    def __init__(self, metadata_url: str, secret: str, lookup: Callable[[str, str], dict | None]):
        self.metadata_url = metadata_url.rstrip("/")
        self.secret = secret
        self.lookup = lookup
        self.servers: dict[str, asyncio.base_events.Server] = {}
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(30, connect=5))

    async def ensure(self, netns: str, network_id: str) -> None:
        if netns in self.servers:
            return
        loop = asyncio.get_running_loop()
        sock = await loop.run_in_executor(None, socket_in_namespace, netns, METADATA_IP, 80)

        async def handle(reader, writer, network_id=network_id):
            try:
                await self._serve(reader, writer, network_id)
            except Exception:
                log.exception("metadata proxy request failed")
            finally:
                writer.close()

        self.servers[netns] = await asyncio.start_server(handle, sock=sock)

    async def remove(self, netns: str) -> None:
        server = self.servers.pop(netns, None)
        if server is not None:
            server.close()

    async def close(self) -> None:
        for name in list(self.servers):
            await self.remove(name)
        await self.client.aclose()

    async def _serve(self, reader, writer, network_id: str) -> None:
        peer = writer.get_extra_info("peername")[0]
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            return
        if len(head) > MAX_HEADER:
            return await self._reply(writer, 431, b"request headers too large\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, path, _ = lines[0].split(" ", 2)
        except ValueError:
            return await self._reply(writer, 400, b"malformed request line\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            return await self._reply(writer, 413, b"request body too large\n")
        body = await reader.readexactly(length) if length else b""
        owner = self.lookup(network_id, peer)
        if owner is None or not owner.get("device_id"):
            return await self._reply(writer, 404, f"no instance with address {peer} on this network\n".encode())
        forward = {k: v for k, v in headers.items() if k not in ("host", "connection", "content-length",
                                                                 "x-instance-id", "x-tenant-id",
                                                                 "x-instance-id-signature", "x-forwarded-for")}
        forward.update({"X-Forwarded-For": peer, "X-Instance-ID": owner["device_id"],
                        "X-Tenant-ID": owner.get("project_id", ""),
                        "X-Instance-ID-Signature": sign(self.secret, owner["device_id"])})
        try:
            resp = await self.client.request(method, self.metadata_url + path, headers=forward, content=body)
        except httpx.HTTPError as exc:
            log.warning("metadata service unreachable at %s: %s", self.metadata_url, exc)
            return await self._reply(writer, 502, b"metadata service unreachable\n")
        await self._reply(writer, resp.status_code, resp.content, resp.headers.get("content-type", "text/plain"))

    @staticmethod
    async def _reply(writer, status: int, body: bytes, ctype: str = "text/plain") -> None:
        from http import HTTPStatus

        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)
        await writer.drain()
