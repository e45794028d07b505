"""What a Stratus process shares between the services it runs: config, bus, databases, auth."""

from __future__ import annotations

import logging
import os
import secrets
import time
import tomllib
from pathlib import Path

import httpx

from stratus import services
from stratus.common.auth import (REVOCATION_TOPIC, RemoteTokenValidator, RevocationListener,
                                 ServiceClient, ServiceCredentials)
from stratus.common.db import Database
from stratus.common.policy import Enforcer
from stratus.config import Config

log = logging.getLogger("stratus.runtime")

SECRET_KEYS = ("admin_password", "demo_password", "service_password")


def load_or_create_secrets(state_dir: Path) -> dict[str, str]:
    """Passwords generated on first start and kept (mode 0600) in the state directory."""
    path = state_dir / "secrets.toml"
    data: dict[str, str] = {}
    if path.exists():
        data = tomllib.loads(path.read_text())
    changed = False
    for key in SECRET_KEYS:
        if not data.get(key):
            data[key] = secrets.token_urlsafe(18)
            changed = True
    if changed:
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f'{k} = "{v}"\n' for k, v in data.items()))
        os.replace(tmp, path)
    return data


class Runtime:
    def __init__(self, config: Config, service_names: list[str] | None = None):
        self.config = config
        self.service_names = service_names if service_names is not None else config.enabled_services
        self.specs = [services.get(n) for n in self.service_names]
        state = config.state_dir
        self.secrets = load_or_create_secrets(state)
        ident = config.section("identity")
        self.admin_password = ident["admin_password"] or self.secrets["admin_password"]
        self.demo_password = ident["demo_password"] or self.secrets["demo_password"]
        self.service_password = config["auth"]["service_password"] or self.secrets["service_password"]
        self._dbs: dict[str, Database] = {}
        self._enforcers: dict[str, Enforcer] = {}
        self._credentials: dict[str, ServiceCredentials] = {}
        self._validator: RemoteTokenValidator | None = None
        self._clients: dict[str, ServiceClient] = {}
        self._stops = []
        from stratus.common.bus import create_bus

        bus_cfg = config["bus"]
        self.bus = create_bus(bus_cfg["transport"], bus_cfg["url"], default_timeout=bus_cfg["rpc_timeout"],
                              debug=config["debug"], namespace=bus_cfg["namespace"])
        self.started = False

    @property
    def public_url(self) -> str:
        return self.config.public_url

    def db(self, service: str) -> Database:
        if service not in self._dbs:
            self._dbs[service] = Database(self.config.database_url(service),
                                          echo=self.config["database"]["echo"])
        return self._dbs[service]

    def enforcer(self, service: str, defaults: dict[str, str]) -> Enforcer:
        if service not in self._enforcers:
            self._enforcers[service] = Enforcer(defaults, self.config["policy"]["file"] or None)
        return self._enforcers[service]

    def credentials(self, service: str) -> ServiceCredentials:
        """The service user of ``service`` (created by identity's bootstrap)."""
        if service not in self._credentials:
            self._credentials[service] = ServiceCredentials(
                self.config.identity_url, service, self.service_password,
                client=httpx.AsyncClient(timeout=30))
        return self._credentials[service]

    def validator(self, service: str) -> RemoteTokenValidator:
        """One validating cache per process, shared by the services it runs."""
        if self._validator is None:
            self._validator = RemoteTokenValidator(self.credentials(service),
                                                   ttl=self.config["auth"]["cache_ttl"])
        return self._validator

    def client(self, service: str) -> ServiceClient:
        """Calls other services' public APIs as ``service``'s service user."""
        if service not in self._clients:
            self._clients[service] = ServiceClient(self.credentials(service))
        return self._clients[service]

    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        await self.bus.start()
        await self.bus.serve(REVOCATION_TOPIC, RevocationListener([self]), fanout=True)
        for spec in self.specs:
            if spec.start is not None:
                t = time.monotonic()
                stop = await spec.start(self)
                log.info("start of %s took %.2f s", spec.name, time.monotonic() - t)
                if stop is not None:
                    self._stops.append(stop)

    def purge(self) -> None:
        """Revocation broadcast: forget every cached token validation in this process."""
        if self._validator is not None:
            self._validator.purge()

    async def stop(self) -> None:
        for stop in reversed(self._stops):
            try:
                await stop()
            except Exception:
                log.exception("error stopping a service")
        self._stops.clear()
        for client in self._clients.values():
            await client.aclose()
        for cred in self._credentials.values():
            await cred.client.aclose()
        await self.bus.close()
        for db in self._dbs.values():
            await db.dispose()
        self.started = False
