"""One settings tree: built-in defaults, then stratus.toml, then STRATUS_* environment overrides.

Environment overrides name a key by its path with double underscores between levels, e.g.
``STRATUS_SERVER__PORT=9000`` or ``STRATUS_DATABASE__URL=...``. Values from the environment are
parsed as TOML values when they look like one (numbers, booleans, arrays) and taken as strings
otherwise. Every key is validated against the defaults' types at start, and an unknown key or a
wrong type stops start-up with a message naming the key.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = "/var/lib/stratus"
DEFAULT_PORT = 8770

# The whole tree with its defaults. A value of None means "optional string".
DEFAULTS: dict[str, Any] = {
    "state_dir": DEFAULT_STATE_DIR,
    "debug": False,
    "server": {
        "host": "127.0.0.1",
        "port": DEFAULT_PORT,
        # The URL clients use to reach this host; derived from host/port when empty.
        "public_url": "",
        "workers": 1,
    },
    "services": {
        "enabled": ["identity", "image", "compute", "network", "volume", "objectstore"],
    },
    "database": {
        # {service} is replaced by the service name (each service has its own schema) and
        # {state_dir} by the state directory.
        "url": "sqlite+aiosqlite:///{state_dir}/{service}.sqlite",
        "echo": False,
    },
    "bus": {
        "transport": "inprocess",
        "url": "amqp://guest:guest@127.0.0.1:5672/",
        "namespace": "stratus",
        "rpc_timeout": 60.0,
    },
    "auth": {
        # Where services validate tokens; empty means this host's /identity.
        "identity_url": "",
        # Seconds a validated token is trusted without asking identity again. Revocations
        # reach the cache at once over the bus; this bounds staleness if that message is lost.
        "cache_ttl": 30.0,
        "service_password": "",
    },
    "policy": {
        "file": "",
    },
    "region": "RegionOne",
    "identity": {
        "token_expiration": 3600,
        # How long after expiry a token may still be validated with ?allow_expired=1.
        "allow_expired_window": 172800,
        "admin_password": "",
        "demo_password": "",
        # Argon2id parameters; the defaults are the OWASP minimum (19 MiB, 2 passes, 1 lane).
        "argon2_memory_kib": 19456,
        "argon2_time_cost": 2,
        "argon2_parallelism": 1,
        "max_active_keys": 3,
        "list_limit": 0,
    },
    "image": {},
    "compute": {},
    "network": {},
    "volume": {},
    "objectstore": {},
}

# Sections whose contents are owned by a service and validated by it, not here.
FREE_SECTIONS = {"image", "compute", "network", "volume", "objectstore"}


class ConfigError(Exception):
    """A configuration value is unknown or of the wrong type; the message names the key."""


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _merge(base: dict, override: dict, prefix: str, source: str) -> None:
    for key, value in override.items():
        path = f"{prefix}{key}"
        if key not in base:
            if prefix.rstrip(".") in FREE_SECTIONS or prefix == "" and key in FREE_SECTIONS:
                base[key] = value
                continue
            raise ConfigError(f"unknown configuration key '{path}' (from {source})")
        default = base[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"configuration key '{path}' must be a table (from {source})")
            _merge(default, value, path + ".", source)
            continue
        base[key] = _coerce(path, default, value, source)


def _coerce(path: str, default: Any, value: Any, source: str) -> Any:
    expected = type(default)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, list):
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(default, str):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(
        f"configuration key '{path}' must be {expected.__name__}, got {value!r} (from {source})"
    )


def _env_overrides(environ: dict[str, str]) -> dict:
    tree: dict = {}
    for name, raw in environ.items():
        if not name.startswith("STRATUS_") or name in ("STRATUS_CONFIG", "STRATUS_SERVE_SERVICES"):
            continue
        parts = [p.lower() for p in name[len("STRATUS_"):].split("__")]
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_env_value(raw)
    return tree


class Config:
    """The validated settings tree, read as ``config["server"]["port"]`` or ``config.get(...)``."""

    def __init__(self, tree: dict[str, Any]):
        self.tree = tree

    def __getitem__(self, key: str) -> Any:
        return self.tree[key]

    def section(self, name: str) -> dict[str, Any]:
        return self.tree.get(name, {})

    @property
    def state_dir(self) -> Path:
        return Path(self.tree["state_dir"])

    @property
    def public_url(self) -> str:
        url = self.tree["server"]["public_url"]
        if url:
            return url.rstrip("/")
        host = self.tree["server"]["host"]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.tree['server']['port']}"

    @property
    def enabled_services(self) -> list[str]:
        return list(self.tree["services"]["enabled"])

    def database_url(self, service: str) -> str:
        return self.tree["database"]["url"].format(service=service, state_dir=self.state_dir)

    @property
    def identity_url(self) -> str:
        return (self.tree["auth"]["identity_url"] or f"{self.public_url}/identity").rstrip("/")


def load(
    path: str | os.PathLike | None = None,
    *,
    overrides: dict | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Build the configuration: defaults < file < environment < explicit overrides."""
    environ = dict(os.environ if environ is None else environ)
    tree = copy.deepcopy(DEFAULTS)
    if path is None and environ.get("STRATUS_CONFIG"):
        path = environ["STRATUS_CONFIG"]
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {p} is not valid TOML: {exc}") from None
        _merge(tree, data, "", str(p))
    _merge(tree, _env_overrides(environ), "", "environment")
    if overrides:
        _merge(tree, overrides, "", "command line")
    _validate(tree)
    return Config(tree)


def _validate(tree: dict) -> None:
    from stratus.services import KNOWN_SERVICES  # late: services imports config

    for name in tree["services"]["enabled"]:
        if name not in KNOWN_SERVICES:
            raise ConfigError(
                f"configuration key 'services.enabled' names unknown service '{name}'"
                f" (known: {', '.join(sorted(KNOWN_SERVICES))})"
            )
    if tree["bus"]["transport"] not in ("inprocess", "amqp"):
        raise ConfigError("configuration key 'bus.transport' must be 'inprocess' or 'amqp'")
    if not 0 < tree["server"]["port"] < 65536:
        raise ConfigError("configuration key 'server.port' must be between 1 and 65535")
    memory, passes = tree["identity"]["argon2_memory_kib"], tree["identity"]["argon2_time_cost"]
    # OWASP's equally strong Argon2id minimums (memory KiB, passes); anything at or above one is fine.
    owasp = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))
    if not any(memory >= m and passes >= t for m, t in owasp):
        raise ConfigError(
            "configuration key 'identity.argon2_memory_kib' with 'identity.argon2_time_cost' is below the"
            " OWASP minimum for Argon2id; use one of (KiB, passes): "
            + ", ".join(f"({m}, {t})" for m, t in owasp))
