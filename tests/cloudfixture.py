"""A real Stratus cloud for tests: `stratus up` in a subprocess on its own port and state dir.

Tests drive it through the real clients (the `openstack` CLI, openstacksdk, swift, boto3). The
process is ended by PID and its state directory and databases removed, even when a test fails.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"

BACKENDS = {
    "sqlite": "sqlite+aiosqlite:///{state_dir}/{service}.sqlite",
    "mariadb": "mysql+aiomysql://root@127.0.0.1:3306/stratus_{tag}_{service}",
    "postgresql": "postgresql+asyncpg://postgres@127.0.0.1:5432/stratus_{tag}_{service}",
}


class OpenstackRunner:
    """The real `openstack` CLI, run by tests/oscforkserver.py: one forked child per command, so
    each costs the command's own work, not the client's 1.5–3 s of imports. Falls back to the
    console script whenever the server is unavailable."""

    def __init__(self):
        self._server: subprocess.Popen | None = None
        self._broken = False

    def _start(self) -> subprocess.Popen | None:
        if self._server is not None and self._server.poll() is None:
            return self._server
        if self._broken:
            return None
        server = subprocess.Popen([str(VENV_BIN / "python"), str(Path(__file__).with_name("oscforkserver.py"))],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, bufsize=1)
        ready = server.stdout.readline()
        if not ready.strip().startswith("{"):
            server.kill()
            server.wait()
            self._broken = True
            return None
        self._server = server
        return server

    def run(self, args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
        server = self._start()
        if server is not None:
            try:
                server.stdin.write(json.dumps({"argv": args, "env": env, "timeout": timeout}) + "\n")
                server.stdin.flush()
                answer = server.stdout.readline()
                if answer:
                    result = json.loads(answer)
                    return subprocess.CompletedProcess(["openstack", *args], result["rc"], result["stdout"],
                                                       result["stderr"])
            except (OSError, ValueError):
                pass
            # The command may or may not have run: report it failed rather than run it twice.
            self.close()
            self._broken = True
            return subprocess.CompletedProcess(["openstack", *args], -1, "",
                                               "tests/oscforkserver.py died while running this command")
        return subprocess.run([str(VENV_BIN / "openstack"), *args], capture_output=True, text=True, env=env,
                              timeout=timeout)

    def close(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None


OPENSTACK = OpenstackRunner()
atexit.register(OPENSTACK.close)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10) -> None:
    """Send ``sig`` to a process this test started and wait for it; SIGKILL after ``grace``."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Cloud:
    url: str
    state_dir: Path
    port: int
    proc: subprocess.Popen
    services: list[str]
    db_url_template: str
    log_path: Path
    env: dict = field(default_factory=dict)

    @property
    def identity_url(self) -> str:
        return f"{self.url}/identity"

    @property
    def clouds_yaml(self) -> Path:
        return self.state_dir / "clouds.yaml"

    def secrets(self) -> dict:
        import tomllib

        return tomllib.loads((self.state_dir / "secrets.toml").read_text())

    def client_env(self, cloud: str = "admin") -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(OS_CLIENT_CONFIG_FILE=str(self.clouds_yaml), OS_CLOUD=cloud,
                   PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
        return env

    def osc(self, command: str | list[str], *, cloud: str = "admin", check: bool = True, fmt_json: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess | object:
        """Run the real `openstack` CLI; returns parsed JSON output (or the process if not check)."""
        args = shlex.split(command) if isinstance(command, str) else list(command)
        if fmt_json and args and args[-1] != "--json-skip" and not any(a in ("-f", "--format") for a in args):
            wants_output = any(w in args for w in ("list", "show", "create", "issue", "set"))
            if wants_output and "delete" not in args:
                args += ["-f", "json"]
        run_env = self.client_env(cloud)
        if env:
            run_env.update(env)
        proc = OPENSTACK.run(args, run_env, timeout=120)
        if not check:
            return proc
        if proc.returncode != 0:
            raise AssertionError(f"openstack {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
        out = proc.stdout.strip()
        if "-f" in args and "json" in args and out:
            return json.loads(out)
        return out

    def sdk(self, cloud: str = "admin"):
        import openstack
        from openstack.config.loader import OpenStackConfig

        region = OpenStackConfig(config_files=[str(self.clouds_yaml)]).get_one(cloud=cloud)
        return openstack.connection.Connection(config=region)

    def token(self, cloud: str = "admin") -> str:
        import yaml

        auth = yaml.safe_load(self.clouds_yaml.read_text())["clouds"][cloud]["auth"]
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": auth["username"], "domain": {"name": "Default"}, "password": auth["password"]}}},
            "scope": {"project": {"name": auth["project_name"], "domain": {"name": "Default"}}}}}
        r = httpx.post(f"{self.identity_url}/v3/auth/tokens", json=body, timeout=30)
        r.raise_for_status()
        return r.headers["x-subject-token"]

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_cloud(state_dir: Path, *, services: list[str] | None = None, backend: str = "sqlite",
                extra_env: dict | None = None, timeout: float = 60.0) -> Cloud:
    from stratus import services as registry

    services = services or registry.available()
    port = free_port()
    tag = f"t{uuid.uuid4().hex[:10]}"
    db_url = BACKENDS[backend].replace("{tag}", tag)
    state_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATUS_", "OS_"))}
    env.update({
        "STRATUS_STATE_DIR": str(state_dir),
        "STRATUS_SERVER__PORT": str(port),
        "STRATUS_SERVER__HOST": "127.0.0.1",
        "STRATUS_SERVICES__ENABLED": ",".join(services),
        "STRATUS_DATABASE__URL": db_url,
        # A unique bus namespace so that clouds sharing a RabbitMQ never see each other.
        "STRATUS_BUS__NAMESPACE": f"stratus-{tag}",
        # Build the bootable test image once per machine, not once per test cloud.
        "STRATUS_IMAGE__TEST_IMAGE_DIR": str(Path(os.environ.get(
            "STRATUS_TEST_CACHE", Path.home() / ".cache" / "stratus-test")) / "testimage"),
    })
    env.update(extra_env or {})
    log_path = state_dir / "stratus.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(VENV_BIN / "stratus"), "up"], stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=str(REPO))
    cloud = Cloud(url=f"http://127.0.0.1:{port}", state_dir=state_dir, port=port, proc=proc, services=services,
                  db_url_template=db_url, log_path=log_path, env=env)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"stratus up exited with {proc.returncode}:\n{cloud.log_tail()}")
        if (state_dir / "stratus.json").exists():
            status = subprocess.run([str(VENV_BIN / "stratus"), "status"], env=env, capture_output=True, text=True)
            if status.returncode == 0:
                return cloud
        if time.monotonic() > deadline:
            cloud.stop()
            raise RuntimeError(f"stratus up did not answer within {timeout}s:\n{cloud.log_tail()}")
        time.sleep(0.1)


def destroy_cloud(cloud: Cloud) -> None:
    cloud.stop()
    if "{service}" in cloud.db_url_template and not cloud.db_url_template.startswith("sqlite"):
        from stratus.common.db import drop_database

        async def drop():
            for svc in cloud.services:
                try:
                    await drop_database(cloud.db_url_template.format(service=svc, state_dir=cloud.state_dir))
                except Exception as exc:  # keep cleaning the rest
                    print(f"could not drop database of {svc}: {exc}", file=sys.stderr)

        asyncio.run(drop())
