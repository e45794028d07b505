"""The shared token middleware: another service honours identity's revocations at once.

One process with the in-process bus (`stratus up`), and a small fleet of separate processes
(`stratus serve identity` + `stratus serve image`) sharing a database server and RabbitMQ.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.cloudfixture import BACKENDS, VENV_BIN, destroy_cloud, free_port, start_cloud


def login(identity_url: str, password: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    r = httpx.post(f"{identity_url}/v3/auth/tokens", json=body, timeout=30)
    assert r.status_code == 201, r.text
    return r.headers["x-subject-token"]


def check_revocation_reaches(image_url: str, identity_url: str, password: str) -> None:
    token = login(identity_url, password)
    admin = login(identity_url, password)
    r = httpx.get(f"{image_url}/v2/images", headers={"X-Auth-Token": token}, timeout=30)
    assert r.status_code == 200, r.text
    # Cached now; revoke it and the very next call must be refused.
    d = httpx.delete(f"{identity_url}/v3/auth/tokens", headers={"X-Auth-Token": admin, "X-Subject-Token": token})
    assert d.status_code == 204
    deadline = time.monotonic() + 2.0
    while True:
        r = httpx.get(f"{image_url}/v2/images", headers={"X-Auth-Token": token}, timeout=30)
        if r.status_code == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status_code == 401
    assert httpx.get(f"{image_url}/v2/images", timeout=30).status_code == 401
    assert httpx.get(f"{image_url}/v2/images", headers={"X-Auth-Token": "bogus"}, timeout=30).status_code == 401
    assert httpx.get(f"{image_url}/v2/images", headers={"X-Auth-Token": admin}, timeout=30).status_code == 200


@pytest.mark.parametrize("transport", ["inprocess", "amqp"])
def test_all_in_one_honours_revocation(transport):
    state = Path(tempfile.mkdtemp(prefix="stratus-auth-"))
    c = start_cloud(state, services=["identity", "image"], extra_env={
        "STRATUS_BUS__TRANSPORT": transport, "STRATUS_IMAGE__REGISTER_TEST_IMAGE": "false"})
    try:
        check_revocation_reaches(f"{c.url}/image", c.identity_url, c.secrets()["admin_password"])
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.backend
def test_fleet_of_processes_over_rabbitmq_and_postgresql():
    """identity and image in separate processes (as on separate hosts), PostgreSQL + RabbitMQ."""
    from stratus.common.db import drop_database
    import asyncio

    tag = f"t{uuid.uuid4().hex[:10]}"
    db_url = BACKENDS["postgresql"].replace("{tag}", tag)
    root = Path(tempfile.mkdtemp(prefix="stratus-fleet-"))
    id_port, img_port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STRATUS_", "OS_"))}
    common = {"STRATUS_DATABASE__URL": db_url, "STRATUS_BUS__TRANSPORT": "amqp",
              "STRATUS_BUS__NAMESPACE": f"stratus-{tag}", "STRATUS_SERVICES__ENABLED": "identity,image",
              "STRATUS_AUTH__IDENTITY_URL": f"http://127.0.0.1:{id_port}/identity",
              "STRATUS_AUTH__SERVICE_PASSWORD": "fleet-service-pw",
              "STRATUS_IDENTITY__ADMIN_PASSWORD": "fleet-admin-pw",
              "STRATUS_IMAGE__REGISTER_TEST_IMAGE": "false"}
    procs = []
    try:
        for name, port in (("identity", id_port), ("image", img_port)):
            env = {**base, **common, "STRATUS_STATE_DIR": str(root / name), "STRATUS_SERVER__PORT": str(port)}
            args = [str(VENV_BIN / "stratus"), "serve", name] + (["--bootstrap"] if name == "identity" else [])
            log = open(root / f"{name}.log", "w")
            procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT))
            url = f"http://127.0.0.1:{port}/{name}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url, timeout=2).status_code in (200, 300):
                        break
                except httpx.HTTPError:
                    pass
                assert procs[-1].poll() is None, (root / f"{name}.log").read_text()[-3000:]
                assert time.monotonic() < deadline, f"{name} did not start"
                time.sleep(0.1)
        check_revocation_reaches(f"http://127.0.0.1:{img_port}/image",
                                 f"http://127.0.0.1:{id_port}/identity", "fleet-admin-pw")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

        async def drop():
            for svc in ("identity", "image"):
                await drop_database(db_url.format(service=svc, state_dir=root))

        asyncio.run(drop())
        shutil.rmtree(root, ignore_errors=True)
