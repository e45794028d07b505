"""The ``[network]`` configuration section: defaults, validation and derived values."""

from __future__ import annotations

import copy
import hashlib
import os
import secrets
import socket
from pathlib import Path

from stratus.config import ConfigError

DEFAULTS: dict = {
    # The name this host's agent serves under; compute binds ports to this name.
    "host": "",
    # "linuxbridge" builds bridges, namespaces, dnsmasq and nftables; "fake" only records state
    # (tests of the API alone).
    "agent_driver": "linuxbridge",
    # Whether this process runs the data-path agent (stratus up: yes).
    "run_agent": True,
    # Remove the data path this agent built when the process stops (all-in-one and tests; the
    # next start rebuilds it from the database and re-plugs existing VM taps).
    "teardown_on_stop": True,
    "dhcp": True,
    "l3": True,
    "tenant_network_type": "vxlan",
    "vni_ranges": "1:16000",
    # "physnet:first:last" entries, comma separated.
    "network_vlan_ranges": "",
    # physical network → host interface used for VLAN/flat uplinks.
    "physical_interface_mappings": {},
    # physical network → existing host bridge (flat networks such as the external one).
    "bridge_mappings": {"public": "br-ex"},
    # VXLAN tunnel end point of this host; empty: the address of the default route's interface.
    "local_ip": "",
    "vxlan_port": 4789,
    # Security group tables (bridge + inet families); empty: "stratus-" + a digest of host and state
    # directory, so two agents on one kernel (test clouds) never replace each other's table.
    "nft_table": "",
    "resync_interval": 10.0,
    "tap_poll_interval": 0.5,
    "availability_zone": "nova",
    "dns_domain": "openstacklocal.",
    "base_mac": "fa:16:3e",
    "auto_allocate_cidr": "10.0.0.0/24",
    # Compute's metadata service that the proxy forwards to; empty: <public url>/compute/metadata.
    "metadata_url": "",
    # First start: an external flat network on a host bridge so floating IPs answer from the host.
    "external_network": {
        "create": True,
        "name": "public",
        "physical_network": "public",
        "cidr": "172.24.4.0/24",
        "gateway_ip": "172.24.4.1",
        "pool_start": "172.24.4.10",
        "pool_end": "172.24.4.250",
    },
    "quotas": {
        "network": 100, "subnet": 100, "port": 500, "router": 10, "floatingip": 50,
        "security_group": 10, "security_group_rule": 100, "rbac_policy": 10, "subnetpool": -1,
    },
}


def load(config) -> dict:
    """The section merged over the defaults, checked, with the host name resolved."""
    raw = config.section("network")
    cfg = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key not in DEFAULTS:
            raise ConfigError(f"unknown configuration key 'network.{key}' (known: {', '.join(sorted(DEFAULTS))})")
        default = DEFAULTS[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"configuration key 'network.{key}' must be a table")
            if key in ("external_network", "quotas"):
                for k, v in value.items():
                    if k not in default:
                        raise ConfigError(f"unknown configuration key 'network.{key}.{k}'")
                    if type(v) is not type(default[k]):
                        raise ConfigError(f"configuration key 'network.{key}.{k}' must be "
                                          f"{type(default[k]).__name__}, got {v!r}")
                cfg[key].update(value)
            else:
                cfg[key] = dict(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"configuration key 'network.{key}' must be true or false, got {value!r}")
            cfg[key] = value
        elif isinstance(default, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"configuration key 'network.{key}' must be a positive number, got {value!r}")
            cfg[key] = float(value)
        elif isinstance(default, int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"configuration key 'network.{key}' must be an integer, got {value!r}")
            cfg[key] = value
        else:
            if not isinstance(value, str):
                raise ConfigError(f"configuration key 'network.{key}' must be a string, got {value!r}")
            cfg[key] = value
    if cfg["agent_driver"] not in ("linuxbridge", "fake"):
        raise ConfigError("configuration key 'network.agent_driver' must be 'linuxbridge' or 'fake'")
    if cfg["tenant_network_type"] not in ("vxlan", "vlan"):
        raise ConfigError("configuration key 'network.tenant_network_type' must be 'vxlan' or 'vlan'")
    cfg["vni_range"] = _range(cfg["vni_ranges"], "vni_ranges", 1, 2 ** 24 - 1)
    cfg["vlan_ranges"] = {}
    for entry in filter(None, (e.strip() for e in cfg["network_vlan_ranges"].split(","))):
        parts = entry.split(":")
        if len(parts) != 3:
            raise ConfigError("configuration key 'network.network_vlan_ranges' entries look like 'physnet1:100:199'")
        cfg["vlan_ranges"][parts[0]] = _range(f"{parts[1]}:{parts[2]}", "network_vlan_ranges", 1, 4094)
    if cfg["tenant_network_type"] == "vlan" and not cfg["vlan_ranges"]:
        raise ConfigError("configuration key 'network.network_vlan_ranges' is needed when "
                          "tenant_network_type is 'vlan'")
    if not cfg["host"]:
        cfg["host"] = config.section("compute").get("host") or socket.gethostname()
    cfg["state_dir"] = str(Path(config.state_dir) / "network")
    if not cfg["nft_table"]:
        digest = hashlib.sha1(f"{cfg['host']}:{Path(config.state_dir).resolve()}".encode()).hexdigest()[:6]
        cfg["nft_table"] = f"stratus-{digest}"
    return cfg


def _range(text: str, key: str, lo: int, hi: int) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise ConfigError(f"configuration key 'network.{key}' must look like 'first:last', got {text!r}") from None
    if not lo <= a <= b <= hi:
        raise ConfigError(f"configuration key 'network.{key}' must be within {lo}:{hi}, got {text!r}")
    return a, b


def metadata_secret(config) -> str:
    """The secret that signs X-Instance-ID for the metadata service, shared with compute.

    ``[compute] metadata_secret`` when set; otherwise generated once into the state directory
    (``metadata_secret``, mode 0600) so both services of a host read the same value.
    """
    configured = config.section("compute").get("metadata_secret")
    if configured:
        return str(configured)
    path = Path(config.state_dir) / "metadata_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return value


def default_local_ip() -> str:
    """The address of the interface holding the default route (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
