"""``stratus serve objectstore``: the proxy alone in its process, carrying only what it uses.

The generic ``stratus serve`` builds the shared :class:`stratus.runtime.Runtime`, whose import
loads the database layer (SQLAlchemy) and the policy engine; the object store uses neither,
and they were ~20 MB of a ~70 MB proxy process. :class:`ProxyRuntime` is the part of the
runtime the object store does use: configuration, the token validator (identity's API, its
cache purged by revocations on the bus), the bus, and the object store's own start/stop
(storage-node processes when ``[objectstore] run_nodes``). The app and its settings are the
same as under ``stratus up``; the HTTP server is the proxy's own (:mod:`.httpserver`), on
uvloop.

Several workers (``--workers N``) still go through the generic path.
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

log = logging.getLogger("stratus.objectstore.server")


class ProxyRuntime:
    """What :mod:`stratus.objectstore.service` asks of a runtime, without databases."""

    def __init__(self, config, service_password: str):
        import httpx

        from stratus.common.auth import ServiceCredentials
        from stratus.common.bus import create_bus
        from stratus.objectstore.service import NAME, SPEC

        self.config = config
        self.specs = [SPEC]
        self.service_names = [NAME]
        self._credentials = ServiceCredentials(config.identity_url, NAME, service_password,
                                               client=httpx.AsyncClient(timeout=30))
        self._validator = None
        bus = config["bus"]
        self.bus = create_bus(bus["transport"], bus["url"], default_timeout=bus["rpc_timeout"],
                              debug=config["debug"], namespace=bus["namespace"])
        self._stop = None

    @property
    def public_url(self) -> str:
        return self.config.public_url

    def validator(self, service: str):
        if self._validator is None:
            from stratus.common.auth import RemoteTokenValidator

            self._validator = RemoteTokenValidator(self._credentials,
                                                   ttl=self.config["auth"]["cache_ttl"])
        return self._validator

    def purge(self) -> None:
        """Revocation broadcast: forget every cached token validation."""
        if self._validator is not None:
            self._validator.purge()

    async def start(self) -> None:
        from stratus.common.auth import REVOCATION_TOPIC, RevocationListener

        await self.bus.start()
        await self.bus.serve(REVOCATION_TOPIC, RevocationListener([self]), fanout=True)
        self._stop = await self.specs[0].start(self)

    async def stop(self) -> None:
        if self._stop is not None:
            try:
                await self._stop()
            except Exception:
                log.exception("error stopping the object store")
            self._stop = None
        await self._credentials.client.aclose()
        await self.bus.close()


def service_password(config) -> str | None:
    """``[auth] service_password``, else the one identity's first start wrote in
    ``<state_dir>/secrets.toml`` (read only: a password made up here could not log in)."""
    password = config["auth"]["service_password"]
    if password:
        return password
    path = Path(config.state_dir) / "secrets.toml"
    try:
        return tomllib.loads(path.read_text()).get("service_password") or None
    except (OSError, tomllib.TOMLDecodeError):
        return None


async def serve(config, runtime: ProxyRuntime, *, bootstrap: bool = False,
                on_started=None) -> None:
    """Start the runtime, serve until SIGINT/SIGTERM, stop the runtime.

    The HTTP server is :mod:`.httpserver` rather than uvicorn: per 4 KiB request it costs the
    proxy process much less CPU (figures in that module and docs/objectstore.md)."""
    from stratus.objectstore.service import NAME, _proxy

    from . import httpserver

    if bootstrap:
        await runtime.specs[0].bootstrap(runtime)
    try:
        await runtime.start()
    except Exception:
        log.exception("start-up failed")
        raise SystemExit(1) from None
    try:
        proxy = _proxy(runtime)
        host, port = config["server"]["host"], config["server"]["port"]

        def started():
            if on_started is not None:
                on_started()
            log.info("object store proxy is up at %s", config.public_url)

        await httpserver.serve(proxy.pipeline, lambda: runtime.validator(NAME), host, port,
                               on_started=started)
    finally:
        await runtime.stop()
