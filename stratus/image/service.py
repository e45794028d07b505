"""Image's place in a Stratus process."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from stratus.services import CatalogEntry, ServiceSpec

NAME = "image"
TEST_IMAGE_NAME = "stratus-test"

log = logging.getLogger("stratus.image")


def _state(runtime):
    """One manager, store and transfer engine per process, shared by the API and start-up work."""
    state = getattr(runtime, "_image", None)
    if state is None:
        from stratus.image.drivers import create_store
        from stratus.image.drivers.file import FileStore
        from stratus.image.manager import POLICY, ImageManager
        from stratus.image.settings import ImageSettings
        from stratus.image.transfer import Transfers

        settings = ImageSettings.from_section(runtime.config.section(NAME), runtime.config.state_dir)
        manager = ImageManager(runtime.db(NAME), runtime.enforcer(NAME, POLICY), settings)
        store = create_store(settings.default_store, settings.store_config(), runtime.config.state_dir)
        staging = FileStore(settings.staging_dir)
        state = Transfers(manager, store, staging)
        runtime._image = state
    return state


def create_app(runtime):
    from stratus.image.api import create_app as make

    transfers = _state(runtime)
    return make(transfers.manager, transfers, lambda: runtime.validator(NAME))


async def start(runtime):
    transfers = _state(runtime)

    async def stop():
        task = getattr(runtime, "_image_test_image_task", None)
        if task is not None:
            task.cancel()
        await transfers.stop()
        await transfers.store.close()

    return stop


async def post_start(runtime) -> None:
    """Register the bootable test image in the background (its first build can take minutes)."""
    if not _state(runtime).settings.register_test_image:
        return
    runtime._image_test_image_task = asyncio.create_task(register_test_image(runtime))


async def register_test_image(runtime) -> str | None:
    """Upload the test image as public ``stratus-test`` through the public API, once."""
    try:
        from stratus.testimage import build
    except ImportError:
        log.info("stratus.testimage is not available; %s is not registered", TEST_IMAGE_NAME)
        return None
    try:
        client = runtime.client(NAME)
        resp = await client.request("image", "GET", "/v2/images", params={"name": TEST_IMAGE_NAME})
        resp.raise_for_status()
        existing = resp.json()["images"]
        if existing:
            log.info("the test image is already registered as %s (%s)", TEST_IMAGE_NAME, existing[0]["id"])
            return existing[0]["id"]
        out_dir = Path(_state(runtime).settings.test_image_dir)
        paths = await asyncio.get_running_loop().run_in_executor(None, build, out_dir)
        qcow2 = Path(paths["qcow2"])
        resp = await client.request("image", "POST", "/v2/images", json={
            "name": TEST_IMAGE_NAME, "disk_format": "qcow2", "container_format": "bare", "visibility": "public",
            "os_distro": "stratus-test", "description": "Stratus test guest (busybox, dropbear, reads OpenStack metadata)"})
        resp.raise_for_status()
        image_id = resp.json()["id"]

        async def chunks():
            with open(qcow2, "rb") as f:
                while data := await asyncio.get_running_loop().run_in_executor(None, f.read, 1024 * 1024):
                    yield data

        resp = await client.request("image", "PUT", f"/v2/images/{image_id}/file", content=chunks(),
                                    headers={"Content-Type": "application/octet-stream"})
        resp.raise_for_status()
        log.info("registered the test image %s as %s (%s)", qcow2, TEST_IMAGE_NAME, image_id)
        return image_id
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("could not register the test image %s", TEST_IMAGE_NAME)
        return None


SPEC = ServiceSpec(
    name=NAME,
    mounts=["/image"],
    create_app=create_app,
    catalog=[CatalogEntry("image", "glance", "/image")],
    health_path="/image/versions",
    start=start,
    post_start=post_start,
)
