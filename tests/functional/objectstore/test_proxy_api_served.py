"""Every test of test_proxy_api.py again, against `stratus serve objectstore` (the proxy in its
own process, on its own HTTP server: stratus.objectstore.proxy.httpserver) instead of the
proxy mounted in `stratus up` (uvicorn + the ASGI adapter). Same filters, same nodes; what
differs is the HTTP layer, which this runs through the whole API."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.cloudfixture import REPO, VENV_BIN, destroy_cloud, free_port, start_cloud

from . import test_proxy_api
from .test_proxy_api import *  # noqa: F401,F403  (the tests themselves)

pytestmark = pytest.mark.timeout(300)


class ServedCloud:
    """The cloud, with ``url`` pointing at the separately served proxy (identity stays)."""

    def __init__(self, cloud, url: str):
        self._cloud = cloud
        self.url = url

    @property
    def identity_url(self) -> str:
        return self._cloud.identity_url

    def __getattr__(self, name):
        return getattr(self._cloud, name)


@pytest.fixture(scope="module")
def oscloud():
    state = Path(tempfile.mkdtemp(prefix="stratus-osapi-served-"))
    cloud = start_cloud(state, services=["identity", "objectstore"], extra_env={
        "STRATUS_OBJECTSTORE__MAX_FILE_SIZE": str(test_proxy_api.MAX_FILE)})
    proxy = None
    try:
        port = free_port()
        env = dict(cloud.env)
        env.update({"STRATUS_SERVER__PORT": str(port), "STRATUS_OBJECTSTORE__RUN_NODES": "false",
                    "STRATUS_AUTH__IDENTITY_URL": cloud.identity_url})
        with open(state / "proxy.log", "w") as log:
            proxy = subprocess.Popen([str(VENV_BIN / "stratus"), "serve", "objectstore"],
                                     env=env, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=str(REPO))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proxy.poll() is None, (state / "proxy.log").read_text()
            try:
                if httpx.get(f"{url}/healthcheck").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.1)
        yield ServedCloud(cloud, url)
    finally:
        if proxy is not None and proxy.poll() is None:
            os.kill(proxy.pid, signal.SIGINT)
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proxy.pid, signal.SIGKILL)
                proxy.wait(5)
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)
