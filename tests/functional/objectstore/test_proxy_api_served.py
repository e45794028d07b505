"""Every test of test_proxy_api.py again, against `stratus serve objectstore` (the proxy in its
own process, on its own HTTP server: stratus.objectstore.proxy.httpserver) instead of the
proxy mounted in `stratus up` (uvicorn + the ASGI adapter). Same filters, same nodes; what
differs is the HTTP layer, which this runs through the whole API."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.cloudfixture import destroy_cloud, start_cloud

from . import test_proxy_api
from .proxyfixture import served_proxy
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
    try:
        with served_proxy(cloud, state) as (_, url):
            yield ServedCloud(cloud, url)
    finally:
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)
