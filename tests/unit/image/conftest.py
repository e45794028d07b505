"""An in-process image API on a throwaway SQLite schema and store, with fixed test callers."""

from __future__ import annotations

import httpx
import pytest

from stratus.common.context import RequestContext
from stratus.common.db import Database, upgrade
from stratus.common.policy import Enforcer
from stratus.image.api import create_app
from stratus.image.drivers.file import FileStore
from stratus.image.manager import POLICY, ImageManager
from stratus.image.settings import ImageSettings
from stratus.image.transfer import Transfers

PROJECT_A = "a" * 32
PROJECT_B = "b" * 32

CALLERS = {
    "admin": RequestContext(user_id="u-admin", project_id="f" * 32, roles=["admin", "member", "reader"]),
    "alice": RequestContext(user_id="u-alice", project_id=PROJECT_A, roles=["member", "reader"]),
    "bob": RequestContext(user_id="u-bob", project_id=PROJECT_B, roles=["member", "reader"]),
    "reader": RequestContext(user_id="u-reader", project_id=PROJECT_A, roles=["reader"]),
}


class FakeValidator:
    async def validate(self, token: str):
        return CALLERS.get(token)


class ImageApi:
    def __init__(self, app, transfers, tmp_path):
        self.app = app
        self.transfers = transfers
        self.tmp_path = tmp_path
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")

    def h(self, who: str, **extra) -> dict:
        return {"X-Auth-Token": who, **extra}

    async def create(self, who: str = "alice", **body) -> dict:
        body.setdefault("disk_format", "raw")
        body.setdefault("container_format", "bare")
        r = await self.client.post("/v2/images", json=body, headers=self.h(who))
        assert r.status_code == 201, r.text
        return r.json()

    async def upload(self, image_id: str, data: bytes, who: str = "alice") -> httpx.Response:
        return await self.client.put(f"/v2/images/{image_id}/file", content=data,
                                     headers=self.h(who, **{"Content-Type": "application/octet-stream"}))

    async def patch(self, image_id: str, ops: list, who: str = "alice") -> httpx.Response:
        return await self.client.patch(f"/v2/images/{image_id}", json=ops, headers=self.h(
            who, **{"Content-Type": "application/openstack-images-v2.1-json-patch"}))

    def stored_files(self) -> list[str]:
        return sorted(p.name for p in (self.tmp_path / "images").iterdir())


async def build(tmp_path, **settings) -> ImageApi:
    url = f"sqlite+aiosqlite:///{tmp_path}/image.sqlite"
    await upgrade("image", url)
    cfg = ImageSettings.from_section(settings, tmp_path)
    manager = ImageManager(Database(url), Enforcer(POLICY), cfg)
    transfers = Transfers(manager, FileStore(cfg.file_dir), FileStore(cfg.staging_dir))
    return ImageApi(create_app(manager, transfers, FakeValidator()), transfers, tmp_path)


@pytest.fixture
async def api(tmp_path):
    a = await build(tmp_path)
    yield a
    await a.transfers.stop()
    await a.client.aclose()
    await a.transfers.manager.db.dispose()


@pytest.fixture
async def make_api(tmp_path):
    made = []

    async def factory(**settings):
        a = await build(tmp_path, **settings)
        made.append(a)
        return a

    yield factory
    for a in made:
        await a.transfers.stop()
        await a.client.aclose()
        await a.transfers.manager.db.dispose()
