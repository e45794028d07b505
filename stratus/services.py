"""The services Stratus knows and how each plugs into the process (one spec per service).

Each service folder has a ``service.py`` with ``SPEC = ServiceSpec(...)``; this is the only place
that lists them, so adding a service is a folder plus one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

if TYPE_CHECKING:
    from stratus.runtime import Runtime

KNOWN_SERVICES: dict[str, str] = {
    "identity": "stratus.identity.service",
    "image": "stratus.image.service",
    "compute": "stratus.compute.service",
    "network": "stratus.network.service",
    "volume": "stratus.volume.service",
    "objectstore": "stratus.objectstore.service",
}


@dataclass
class CatalogEntry:
    type: str
    name: str
    # Appended to the public URL. ``%(project_id)s`` is substituted per token by identity.
    path: str


@dataclass
class ServiceSpec:
    name: str
    # Path prefixes routed to this service's app. With strip=True the first prefix becomes the
    # app's root_path (DevStack style: /identity/v3/... → app sees /v3/...).
    mounts: list[str]
    create_app: Callable[["Runtime"], Any]
    catalog: list[CatalogEntry] = field(default_factory=list)
    strip_prefix: bool = True
    # A path answered without a token, used by `stratus status` (relative to the public URL).
    health_path: str = ""
    has_db: bool = True
    # First-start data written directly by the service's own manager (idempotent).
    bootstrap: Callable[["Runtime"], Awaitable[None]] | None = None
    # Long-running work in this process (bus servers, agents); returns a stop coroutine function.
    start: Callable[["Runtime"], Awaitable[Callable[[], Awaitable[None]] | None]] | None = None
    # After the HTTP server listens (in `stratus up`): work that goes through public APIs.
    post_start: Callable[["Runtime"], Awaitable[None]] | None = None
    # Adds the service's own operator subcommands to the `stratus` CLI.
    add_commands: Callable[[Any], None] | None = None


_loaded: dict[str, ServiceSpec] = {}


def available() -> list[str]:
    """Services whose code is present (a folder may not exist yet while it is being written)."""
    names = []
    for name, module in KNOWN_SERVICES.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == module or module.startswith(exc.name + ".")):
                continue
            raise
        names.append(name)
    return names


def get(name: str) -> ServiceSpec:
    if name not in _loaded:
        _loaded[name] = importlib.import_module(KNOWN_SERVICES[name]).SPEC
    return _loaded[name]
