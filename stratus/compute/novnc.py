"""The noVNC console proxy: a browser's WebSocket to a guest's VNC display.

Two ways to run it, serving the same noVNC client and checking tokens the same way:

1. Mounted in the compute API's ASGI app (one port for everything, as `stratus up` does):

       from starlette.routing import Mount
       Mount("/vnc", app=create_novnc_app(verify_token))     # inside the compute app
       # URL: {public_url}/compute/vnc/vnc_lite.html?path=compute%2Fvnc%2Fwebsockify%3Ftoken%3D<token>
       #      (console_url(f"{public_url}/compute/vnc", token, ws_path="compute/vnc/websockify"))

   The browser's WebSocket to ``<mount>/websockify?token=<token>`` (or ``<mount>/?token=``) is
   relayed by asyncio to the VNC server; the mount must be public (no Keystone token: the
   console token is the credential).

2. On its own port with websockify's request handler (``start_novnc_proxy``, below), like
   Nova's nova-novncproxy on 6080.

Own-port details. One HTTP port (``[compute] novnc_port``, default 6080) serves the noVNC web client from
Debian's ``novnc`` package (/usr/share/novnc) and proxies WebSockets to the VNC server of the
guest a token names. Tokens are not this module's business: the compute service gives a
``verify_token(token)`` callback that returns where the console listens — a ConsoleEndpoint
(from ``VirtDriver.console``), a ``(host, port)`` pair, or None to refuse — and may be sync or
async. It should make tokens short-lived (Nova uses 10 minutes) and bound to one instance.

    proxy = await start_novnc_proxy(verify_token, host="0.0.0.0", port=6080)
    url = console_url("http://cloud.example:6080", token)   # what os-getVNCConsole returns
    ...
    proxy.stop()

The URL opens ``vnc_lite.html`` with ``path=?token=<token>``; noVNC then opens
``ws://<same host:port>/?token=<token>``, which the proxy checks with ``verify_token`` before
connecting to the VNC server. websockify's ``WebSocketProxy`` forks a process per connection
and its ``LibProxyServer`` chdirs the whole process into the web directory and drops the token
plugin, so this module runs websockify's proxy request handler in a threaded server of its own:
one thread per console, the target kept per connection (never on the shared server object).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import threading
from http.server import HTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, quote, urlparse

from websockify.websocketproxy import ProxyRequestHandler
from websockify.websocketserver import WebSocketRequestHandlerMixIn

from stratus.compute.drivers.base import ConsoleEndpoint

LOG = logging.getLogger(__name__)

DEFAULT_WEB_DIR = Path("/usr/share/novnc")
DEFAULT_PORT = 6080
VERIFY_TIMEOUT = 10.0

TokenVerifier = Callable[[str], "ConsoleEndpoint | tuple[str, int] | None | Awaitable[Any]"]


def console_url(base_url: str, token: str, ws_path: str = "") -> str:
    """The URL a user opens: noVNC's lite client, told to connect back with ``token``.

    ``ws_path`` is the WebSocket's path relative to the host root (noVNC's ``path`` option):
    empty for the own-port proxy, e.g. "compute/vnc/websockify" for the mounted app.
    """
    return f"{base_url.rstrip('/')}/vnc_lite.html?path={quote(ws_path + '?token=' + token, safe='')}"


class _ConsoleProxyHandler(ProxyRequestHandler):
    """websockify's proxy handler with the target resolved per connection from the token."""

    def translate_path(self, path):
        # Serve from the web dir without chdir-ing the whole process (SimpleHTTPRequestHandler
        # reads self.directory, which its __init__ set to the current directory).
        self.directory = str(self.server.web_dir)
        return super().translate_path(path)

    def _token(self) -> str | None:
        values = parse_qs(urlparse(self.path).query).get("token")
        return values[0].strip() if values else None

    def handle_upgrade(self):
        token = self._token()
        if not token:
            self.send_error(403, "A console token is required (?token=...)")
            return
        try:
            target = self.server.resolve(token)
        except Exception as exc:  # the verifier failed: refuse, never crash the thread
            LOG.warning("console token check failed: %s", exc)
            target = None
        if target is None:
            self.send_error(403, "The console token is invalid or has expired")
            return
        self._target = target
        WebSocketRequestHandlerMixIn.handle_upgrade(self)

    def new_websocket_client(self):
        host, port = self._target
        try:
            target = socket.create_connection((host, port), timeout=10)
        except OSError as exc:
            LOG.warning("console proxy cannot reach %s:%s: %s", host, port, exc)
            raise self.CClose(1011, "Failed to connect to the console")
        target.settimeout(None)
        target.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        LOG.info("console proxy: %s connected to %s:%s", self.client_address[0], host, port)
        try:
            self.do_proxy(target)
        finally:
            try:
                target.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            target.close()

    def log_message(self, format, *args):
        LOG.debug("%s %s", self.client_address[0], format % args)


class NoVNCProxy(ThreadingMixIn, HTTPServer):
    """The threaded HTTP + WebSocket server; start with ``start()``, stop with ``stop()``."""

    daemon_threads = True
    allow_reuse_address = True

    class EClose(Exception):
        pass

    def __init__(self, verify_token: TokenVerifier, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 web_dir: Path | str = DEFAULT_WEB_DIR, loop: asyncio.AbstractEventLoop | None = None):
        self.verify_token = verify_token
        self.loop = loop
        self.web_dir = Path(web_dir)
        if not (self.web_dir / "vnc_lite.html").exists():
            raise FileNotFoundError(f"noVNC is not installed at {self.web_dir} (Debian package novnc)")
        # Settings websockify's request handlers read from their server.
        self.only_upgrade = False
        self.verbose = False
        self.daemon = False
        self.record = ""
        self.run_once = False
        self.handler_id = 0
        self.file_only = True  # no directory listings
        self.traffic = False
        self.web_auth = False
        self.host_token = False
        self.heartbeat = None
        self.logger = LOG
        self.target_host = self.target_port = None  # only read by websockify's verbose logging
        self.ssl_target = self.unix_target = self.wrap_cmd = None
        self.ws_connection = False
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _ConsoleProxyHandler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def resolve(self, token: str) -> tuple[str, int] | None:
        """Ask the verifier (on the service's event loop when it is async) where ``token`` points."""
        result = self.verify_token(token)
        if inspect.isawaitable(result):
            if self.loop is None:
                raise RuntimeError("an async verify_token needs the event loop (use start_novnc_proxy)")
            result = asyncio.run_coroutine_threadsafe(_await(result), self.loop).result(VERIFY_TIMEOUT)
        return _as_target(result)

    def process_request(self, request, client_address):
        self.handler_id += 1
        super().process_request(request, client_address)

    def start(self) -> "NoVNCProxy":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5},
                                        name=f"novnc-proxy-{self.port}", daemon=True)
        self._thread.start()
        LOG.info("noVNC console proxy listening on %s:%d (web client from %s)", self.server_address[0],
                 self.port, self.web_dir)
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


async def _await(awaitable):
    return await awaitable


def _as_target(result) -> tuple[str, int] | None:
    if result is None:
        return None
    if isinstance(result, ConsoleEndpoint):
        return result.host, int(result.port)
    host, port = result
    return str(host), int(port)


def create_novnc_app(verify_token: TokenVerifier, web_dir: Path | str = DEFAULT_WEB_DIR):
    """An ASGI app: noVNC's files, and WebSockets at / and /websockify relayed to the VNC server."""
    from starlette.applications import Starlette
    from starlette.routing import Mount, WebSocketRoute
    from starlette.staticfiles import StaticFiles
    from starlette.websockets import WebSocket, WebSocketDisconnect

    web_dir = Path(web_dir)
    if not (web_dir / "vnc_lite.html").exists():
        raise FileNotFoundError(f"noVNC is not installed at {web_dir} (Debian package novnc)")

    async def relay(websocket: WebSocket) -> None:
        token = websocket.query_params.get("token", "").strip()
        target = None
        if token:
            try:
                result = verify_token(token)
                if inspect.isawaitable(result):
                    result = await asyncio.wait_for(result, VERIFY_TIMEOUT)
                target = _as_target(result)
            except Exception as exc:  # a failing verifier refuses; it never crashes the server
                LOG.warning("console token check failed: %s", exc)
        if target is None:
            await websocket.close(code=1008)  # before accept: the client gets HTTP 403
            return
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol="binary" if "binary" in offered else None)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*target), 10)
        except (OSError, asyncio.TimeoutError) as exc:
            LOG.warning("console proxy cannot reach %s:%s: %s", target[0], target[1], exc)
            await websocket.close(code=1011)
            return
        LOG.info("console proxy: %s connected to %s:%s", websocket.client, *target)

        async def browser_to_vnc():
            try:
                while True:
                    message = await websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    data = message.get("bytes")
                    if data is None:
                        data = (message.get("text") or "").encode()
                    writer.write(data)
                    await writer.drain()
            except (WebSocketDisconnect, ConnectionError):
                return

        async def vnc_to_browser():
            try:
                while data := await reader.read(65536):
                    await websocket.send_bytes(data)
            except (WebSocketDisconnect, ConnectionError, RuntimeError):
                return

        tasks = [asyncio.ensure_future(browser_to_vnc()), asyncio.ensure_future(vnc_to_browser())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            try:
                await websocket.close()
            except RuntimeError:
                pass  # already closed by the browser

    app = Starlette(routes=[WebSocketRoute("/websockify", relay), WebSocketRoute("/", relay),
                            Mount("/", app=StaticFiles(directory=str(web_dir)))])
    app.router.redirect_slashes = False
    return app


async def start_novnc_proxy(verify_token: TokenVerifier, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                            web_dir: Path | str = DEFAULT_WEB_DIR) -> NoVNCProxy:
    """Start the proxy on its own thread; an async ``verify_token`` runs on the calling loop."""
    loop = asyncio.get_running_loop()
    proxy = await loop.run_in_executor(None, lambda: NoVNCProxy(verify_token, host, port, web_dir, loop))
    return proxy.start()


def proxy_address(section: dict) -> tuple[str, int]:
    """(host, port) from the ``[compute]`` keys novnc_host (default 0.0.0.0) and novnc_port (6080)."""
    host = section.get("novnc_host", "0.0.0.0")
    port = section.get("novnc_port", DEFAULT_PORT)
    if not isinstance(host, str) or not host:
        raise ValueError("configuration key 'compute.novnc_host' must be a non-empty string")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError("configuration key 'compute.novnc_port' must be a port number (0-65535)")
    return host, port
