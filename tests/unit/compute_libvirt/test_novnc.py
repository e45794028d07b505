"""The noVNC proxy: serves the web client, refuses bad tokens, relays bytes to the VNC server."""

from __future__ import annotations

import asyncio
import socket
import threading
from urllib.parse import parse_qs, unquote, urlparse

import httpx
import pytest
from websockets.sync.client import connect

from stratus.compute.drivers.base import ConsoleEndpoint
from stratus.compute.novnc import DEFAULT_WEB_DIR, NoVNCProxy, console_url, start_novnc_proxy

if not (DEFAULT_WEB_DIR / "vnc_lite.html").exists():
    pytest.skip("noVNC is not installed (Debian package novnc)", allow_module_level=True)


class FakeVNCServer:
    """Sends an RFB banner, then echoes what it receives, like enough of a VNC server."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.sendall(b"RFB 003.008\n")
            while data := conn.recv(4096):
                conn.sendall(data)
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def vnc():
    server = FakeVNCServer()
    yield server
    server.close()


def test_console_url_shape():
    url = console_url("http://cloud.example:6080/", "tok-123")
    assert url.startswith("http://cloud.example:6080/vnc_lite.html?path=")
    assert unquote(parse_qs(urlparse(url).query)["path"][0]) == "?token=tok-123"


def test_proxy_relays_with_a_valid_token_and_refuses_others(vnc):
    proxy = NoVNCProxy(lambda token: ("127.0.0.1", vnc.port) if token == "good" else None, port=0).start()
    try:
        base = f"http://127.0.0.1:{proxy.port}"
        page = httpx.get(base + "/vnc_lite.html")
        assert page.status_code == 200 and "noVNC" in page.text
        assert httpx.get(base + "/core/").status_code == 404  # no directory listings
        with connect(f"ws://127.0.0.1:{proxy.port}/?token=good", subprotocols=["binary"]) as ws:
            assert ws.recv(timeout=5) == b"RFB 003.008\n"
            ws.send(b"RFB 003.008\n")
            assert ws.recv(timeout=5) == b"RFB 003.008\n"
        for bad in ("?token=bad", ""):
            with pytest.raises(Exception) as refused:
                connect(f"ws://127.0.0.1:{proxy.port}/{bad}", subprotocols=["binary"], open_timeout=5)
            assert "403" in str(refused.value)
    finally:
        proxy.stop()


def test_async_verifier_runs_on_the_service_loop(vnc):
    async def main():
        loop = asyncio.get_running_loop()
        seen = []

        async def verify(token):
            seen.append(asyncio.get_running_loop() is loop)
            return ConsoleEndpoint("vnc", "127.0.0.1", vnc.port) if token == "t" else None

        proxy = await start_novnc_proxy(verify, port=0)
        try:
            def client():
                with connect(f"ws://127.0.0.1:{proxy.port}/?token=t", subprotocols=["binary"]) as ws:
                    return ws.recv(timeout=5)

            assert await loop.run_in_executor(None, client) == b"RFB 003.008\n"
        finally:
            await loop.run_in_executor(None, proxy.stop)
        return seen

    assert asyncio.run(main()) == [True]


def test_proxy_address_from_config():
    from stratus.compute.novnc import proxy_address

    assert proxy_address({}) == ("0.0.0.0", 6080)
    assert proxy_address({"novnc_host": "127.0.0.1", "novnc_port": 7000}) == ("127.0.0.1", 7000)
    with pytest.raises(ValueError, match="novnc_port"):
        proxy_address({"novnc_port": "6080"})
    with pytest.raises(ValueError, match="novnc_host"):
        proxy_address({"novnc_host": ""})


def test_mounted_app_serves_the_client_and_relays(vnc):
    import time

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from stratus.compute.novnc import create_novnc_app

    async def verify(token):
        return ConsoleEndpoint("vnc", "127.0.0.1", vnc.port) if token == "good" else None

    outer = Starlette(routes=[Mount("/compute/vnc", app=create_novnc_app(verify))])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(outer, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}/compute/vnc"
        page = httpx.get(base + "/vnc_lite.html")
        assert page.status_code == 200 and "noVNC" in page.text
        assert httpx.get(base + "/core/rfb.js").status_code == 200
        ws_base = f"ws://127.0.0.1:{port}/compute/vnc"
        with connect(ws_base + "/websockify?token=good", subprotocols=["binary"]) as ws:
            assert ws.subprotocol == "binary"
            assert ws.recv(timeout=5) == b"RFB 003.008\n"
            ws.send(b"hello")
            assert ws.recv(timeout=5) == b"hello"
        for bad in ("/websockify?token=bad", "/websockify"):
            with pytest.raises(Exception) as refused:
                connect(ws_base + bad, subprotocols=["binary"], open_timeout=5)
            assert "403" in str(refused.value)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    url = console_url("http://h:1/compute/vnc", "T", ws_path="compute/vnc/websockify")
    assert unquote(parse_qs(urlparse(url).query)["path"][0]) == "compute/vnc/websockify?token=T"
