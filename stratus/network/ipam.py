"""IP address management: subnet validation, allocation pools and picking free addresses.

Allocation safety does not live here but in the database: ``ip_allocations`` has the primary key
(subnet_id, ip_address), so two concurrent port creates that pick the same address cannot both
commit; the manager retries the loser with a fresh view. Picking among the first few free
addresses at random keeps those collisions rare.
"""

from __future__ import annotations

import ipaddress
import random
import socket

from stratus.common.errors import BadRequest, Conflict

# How many free candidates to choose from at random (fewer collisions between concurrent creates).
CANDIDATES = 16


def parse_cidr(cidr: str, ip_version: int | None = None) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(cidr, str):
        raise BadRequest(f"Invalid input for cidr: {cidr!r} is not a CIDR string.", kind="InvalidInput")
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise BadRequest(f"Invalid input for cidr: '{cidr}' is not a valid IP subnet.", kind="InvalidInput") from None
    if ipaddress.ip_interface(cidr).ip != net.network_address:
        raise BadRequest(f"Invalid input for cidr: '{cidr}' isn't a recommended CIDR, use '{net}' instead.",
                         kind="InvalidInput")
    if ip_version is not None and net.version != ip_version:
        raise BadRequest(f"Invalid input for cidr: '{cidr}' is not an IPv{ip_version} network (ip_version is "
                         f"{ip_version}).", kind="InvalidInput")
    if net.version == 4 and net.prefixlen > 30 or net.version == 6 and net.prefixlen > 126:
        raise BadRequest(f"Invalid input for cidr: '{cidr}' is too small to hold a gateway and hosts.",
                         kind="InvalidInput")
    return net


def parse_ip(value, field: str = "ip_address", version: int | None = None):
    if not isinstance(value, str):
        raise BadRequest(f"Invalid input for {field}: {value!r} is not an IP address.", kind="InvalidInput")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise BadRequest(f"Invalid input for {field}: '{value}' is not a valid IP address.",
                         kind="InvalidInput") from None
    if version is not None and ip.version != version:
        raise BadRequest(f"Invalid input for {field}: '{value}' is not an IPv{version} address.", kind="InvalidInput")
    return ip


def host_range(net) -> tuple[int, int]:
    """First and last usable host address (as integers) of a subnet."""
    first = int(net.network_address) + 1
    last = int(net.broadcast_address) - (1 if net.version == 4 else 0)
    return first, last


def default_gateway(net) -> str:
    return str(ipaddress.ip_address(host_range(net)[0]))


def default_pools(net, gateway: str | None) -> list[dict]:
    first, last = host_range(net)
    if net.version == 6:
        # Neutron leaves the first address (the gateway) out; pools end at the last address.
        pass
    pools = [(first, last)]
    if gateway:
        g = int(ipaddress.ip_address(gateway))
        out = []
        for a, b in pools:
            if a <= g <= b:
                if a <= g - 1:
                    out.append((a, g - 1))
                if g + 1 <= b:
                    out.append((g + 1, b))
            else:
                out.append((a, b))
        pools = out
    return [{"start": str(ipaddress.ip_address(a)), "end": str(ipaddress.ip_address(b))} for a, b in pools]


def validate_pools(net, pools, gateway: str | None) -> list[dict]:
    if not isinstance(pools, list):
        raise BadRequest("Invalid input for allocation_pools: it must be a list of {start, end}.", kind="InvalidInput")
    ranges = []
    for p in pools:
        if not isinstance(p, dict) or "start" not in p or "end" not in p:
            raise BadRequest("Invalid input for allocation_pools: each pool needs 'start' and 'end'.",
                             kind="InvalidInput")
        a = parse_ip(p["start"], "allocation_pools.start", net.version)
        b = parse_ip(p["end"], "allocation_pools.end", net.version)
        if a not in net or b not in net or int(b) < int(a):
            raise BadRequest(f"The allocation pool {a}-{b} spans beyond the subnet cidr {net}.",
                             kind="OutOfBoundsAllocationPool")
        ranges.append((int(a), int(b)))
    ranges.sort()
    for (a1, b1), (a2, b2) in zip(ranges, ranges[1:]):
        if a2 <= b1:
            raise BadRequest("Found overlapping allocation pools.", kind="OverlappingAllocationPools")
    if gateway:
        g = int(ipaddress.ip_address(gateway))
        for a, b in ranges:
            if a <= g <= b:
                raise Conflict(f"Gateway ip {gateway} conflicts with allocation pool "
                               f"{ipaddress.ip_address(a)}-{ipaddress.ip_address(b)}.", kind="GatewayConflictWithAllocationPools")
    return [{"start": str(ipaddress.ip_address(a)), "end": str(ipaddress.ip_address(b))} for a, b in ranges]


def in_pools(pools: list[dict], ip) -> bool:
    v = int(ip)
    return any(int(ipaddress.ip_address(p["start"])) <= v <= int(ipaddress.ip_address(p["end"])) for p in pools)


def _as_int(address: str) -> int:
    # inet_pton is far cheaper than ipaddress for the thousands of addresses a big subnet holds.
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return int.from_bytes(socket.inet_pton(family, address), "big")


def pick_free(pools: list[dict], used: set[str], *, exclude: set[str] = frozenset()) -> str | None:
    """A free address from the pools: one of the first few free ones, at random."""
    taken = {_as_int(u) for u in used} | {_as_int(u) for u in exclude}
    found: list[int] = []
    for p in pools:
        a, b = _as_int(p["start"]), _as_int(p["end"])
        v = a
        while v <= b and len(found) < CANDIDATES:
            if v not in taken:
                found.append(v)
            v += 1
        if len(found) >= CANDIDATES:
            break
    if not found:
        return None
    # Prefer the lowest address when nobody competes: the first few candidates are weighted up.
    return str(ipaddress.ip_address(random.choice(found[:4]) if len(found) >= 4 else found[0]))


def eui64(net, mac: str) -> str:
    """The SLAAC address of a MAC in an IPv6 /64."""
    parts = [int(x, 16) for x in mac.split(":")]
    parts[0] ^= 0x02
    iid = parts[:3] + [0xFF, 0xFE] + parts[3:]
    value = int(net.network_address) | int.from_bytes(bytes(iid), "big")
    return str(ipaddress.ip_address(value))


def random_mac(prefix: str = "fa:16:3e") -> str:
    return prefix + ":" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


def valid_mac(mac) -> bool:
    if not isinstance(mac, str):
        return False
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        return False
    try:
        first = int(parts[0], 16)
        [int(p, 16) for p in parts]
    except ValueError:
        return False
    return not first & 1 and mac != "00:00:00:00:00:00"
