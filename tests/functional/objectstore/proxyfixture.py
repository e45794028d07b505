"""A cloud running identity + objectstore (`stratus up`: proxy in-process, 3 storage-node
processes with 4 devices, 3 replicas) and helpers to drive it with the real clients."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import yaml

from tests.cloudfixture import REPO, VENV_BIN, free_port, stop_process


@contextlib.contextmanager
def served_proxy(cloud, state: Path, timeout: float = 30):
    """`stratus serve objectstore` in its own process against ``cloud``'s nodes and identity;
    yields (the process, its URL) once it answers /healthcheck, stops it by PID after."""
    port = free_port()
    env = dict(cloud.env)
    env.update({"STRATUS_SERVER__PORT": str(port), "STRATUS_OBJECTSTORE__RUN_NODES": "false",
                "STRATUS_AUTH__IDENTITY_URL": cloud.identity_url})
    with open(state / "proxy.log", "w") as log:
        proxy = subprocess.Popen([str(VENV_BIN / "stratus"), "serve", "objectstore"], env=env,
                                 stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            assert proxy.poll() is None, (state / "proxy.log").read_text()
            try:
                if httpx.get(f"{url}/healthcheck").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.1)
        yield proxy, url
    finally:
        stop_process(proxy, signal.SIGINT)


def swift_env(cloud, name: str = "demo", *, user: str | None = None, password: str | None = None,
              project: str | None = None) -> dict:
    auth = yaml.safe_load(cloud.clouds_yaml.read_text())["clouds"][name]["auth"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ST_"))}
    env.update(OS_AUTH_URL=auth["auth_url"], OS_USERNAME=user or auth["username"],
               OS_PASSWORD=password or auth["password"],
               OS_PROJECT_NAME=project or auth["project_name"], OS_USER_DOMAIN_NAME="Default",
               OS_PROJECT_DOMAIN_NAME="Default", OS_IDENTITY_API_VERSION="3",
               OS_AUTH_VERSION="3", OS_REGION_NAME="RegionOne", OS_INTERFACE="public",
               PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
    return env


def swift(env: dict, *args: str, check: bool = True, cwd=None, timeout: float = 120):
    proc = subprocess.run([str(VENV_BIN / "swift"), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"swift {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stderr}\n{proc.stdout}")
    return proc


def md5_file(path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Account:
    """httpx against one account with a token (``None`` token = anonymous)."""

    def __init__(self, cloud, token: str | None, project_id: str):
        self.cloud = cloud
        self.token = token
        self.project_id = project_id
        self.url = f"{cloud.url}/v1/AUTH_{project_id}"
        self.http = httpx.Client(timeout=60)

    def request(self, method: str, path: str = "", *, headers=None, **kw) -> httpx.Response:
        h = dict(headers or {})
        if self.token:
            h["X-Auth-Token"] = self.token
        return self.http.request(method, self.url + path, headers=h, **kw)

    def close(self):
        self.http.close()


def token_and_project(cloud, name: str) -> tuple[str, str]:
    auth = yaml.safe_load(cloud.clouds_yaml.read_text())["clouds"][name]["auth"]
    return login(cloud, auth["username"], auth["password"], auth["project_name"])


def login(cloud, user: str, password: str, project: str) -> tuple[str, str]:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    r = httpx.post(f"{cloud.identity_url}/v3/auth/tokens", json=body, timeout=30)
    r.raise_for_status()
    return r.headers["x-subject-token"], r.json()["token"]["project"]["id"]


def make_project_user(cloud, role: str = "member") -> tuple[str, str, str]:
    """A new project with a new user holding ``role`` in it: (project, user, password)."""
    conn = cloud.sdk("admin")
    tag = uuid.uuid4().hex[:8]
    project = conn.identity.create_project(name=f"os-p-{tag}", domain_id="default")
    password = uuid.uuid4().hex
    user = conn.identity.create_user(name=f"os-u-{tag}", password=password,
                                     domain_id="default", default_project_id=project.id)
    role_obj = conn.identity.find_role(role)
    if role_obj is None:
        role_obj = conn.identity.create_role(name=role)
    conn.identity.assign_project_role_to_user(project, user, role_obj)
    conn.close()
    return project.name, user.name, password
