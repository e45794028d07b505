"""Security groups and router NAT as nftables rule sets (pure text rendering, unit-testable).

Security groups on a Linux bridge need two tables, because this kernel has no connection
tracking in the bridge family:
- ``bridge <table>``: sees bridge ports by name. It drops spoofed frames (a port may only send
  from its MAC and addresses) and marks each packet with the index of the port it comes from
  (low 16 bits) and the port it goes to (high 16 bits); bit 15 of each half says "ours".
- ``inet <table>``: bridged IP traffic passes here through br_netfilter, with conntrack. The
  marks select the per-port chains: ``out-N`` (what the VM may send; ``return`` when allowed)
  and ``in-N`` (what may reach the VM; stateful: established traffic always passes).
Each network's bridge gets its own conntrack zone so overlapping tenant addresses never share
connection state.
"""

from __future__ import annotations

import ipaddress
import zlib

OURS = 0x8000
ICMP_PROTOCOLS = {"icmp": "icmp", "1": "icmp", "icmpv6": "icmpv6", "ipv6-icmp": "icmpv6", "58": "icmpv6"}
NAMED_L4 = {"tcp", "udp", "sctp", "dccp", "udplite", "esp", "ah", "gre", "igmp", "vrrp", "ospf", "ipip", "pgm"}
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "dccp": 33, "udplite": 136, "esp": 50, "ah": 51, "gre": 47,
                 "igmp": 2, "vrrp": 112, "ospf": 89, "ipip": 4, "pgm": 113}
PORTED = {"tcp", "udp", "sctp", "dccp", "udplite", "6", "17", "132", "33", "136"}


def link_local(mac: str) -> str:
    parts = [int(x, 16) for x in mac.split(":")]
    parts[0] ^= 0x02
    iid = parts[:3] + [0xFF, 0xFE] + parts[3:]
    return str(ipaddress.ip_address(int(ipaddress.ip_address("fe80::")) | int.from_bytes(bytes(iid), "big")))


def zone(bridge: str) -> int:
    """A conntrack zone per bridge, stable across agents and restarts (never 0, the default zone)."""
    return zlib.crc32(bridge.encode()) % 65534 + 1


def _set(items) -> str:
    return "{ " + ", ".join(items) + " }"


def _rule_match(rule: dict, direction: str) -> str | None:
    """The nft match of one security group rule, or None when it can match nothing."""
    v6 = rule["ethertype"] == "IPv6"
    parts = ["meta nfproto ipv6" if v6 else "meta nfproto ipv4"]
    addr_key = ("ip6" if v6 else "ip") + (" saddr" if direction == "ingress" else " daddr")
    if rule.get("remote_ips") is not None:
        ips = [ip for ip in rule["remote_ips"] if ipaddress.ip_network(ip, strict=False).version == (6 if v6 else 4)]
        if not ips:
            return None
        parts.append(f"{addr_key} {_set(sorted(set(ips)))}")
    elif rule.get("remote_ip_prefix"):
        parts.append(f"{addr_key} {rule['remote_ip_prefix']}")
    proto = rule.get("protocol")
    pmin, pmax = rule.get("port_range_min"), rule.get("port_range_max")
    if proto is None:
        return " ".join(parts)
    proto = str(proto).lower()
    if proto in ICMP_PROTOCOLS:
        kind = ICMP_PROTOCOLS[proto]
        if (kind == "icmp") == v6:
            return None
        parts.append(f"meta l4proto {'ipv6-icmp' if kind == 'icmpv6' else 'icmp'}")
        if pmin is not None:
            parts.append(f"{kind} type {pmin}")
            if pmax is not None:
                parts.append(f"{kind} code {pmax}")
        return " ".join(parts)
    number = PROTO_NUMBERS.get(proto, proto)
    parts.append(f"meta l4proto {number}")
    if proto in PORTED and pmin is not None:
        parts.append(f"th dport {pmin}" if pmin == pmax else f"th dport {pmin}-{pmax}")
    return " ".join(parts)


def render_security(table: str, ports: list[dict], groups: dict[str, list[dict]],
                    bridges: list[str]) -> str:
    """The whole security ruleset of this host, replacing the previous one atomically."""
    secured = [p for p in sorted(ports, key=lambda p: p["id"]) if p["port_security"]]
    index = {p["id"]: i + 1 for i, p in enumerate(secured)}
    out = [f"table bridge {table} {{}}", f"delete table bridge {table}",
           f"table inet {table} {{}}", f"delete table inet {table}", f"table bridge {table} {{"]
    out.append("  chain forward {\n    type filter hook forward priority -200; policy accept;")
    for p in secured:
        i = index[p["id"]]
        out.append(f'    iifname "{p["tap"]}" jump spoof-{i}')
        out.append(f'    iifname "{p["tap"]}" meta mark set meta mark & 0xffff0000 | {hex(OURS | i)}')
        out.append(f'    oifname "{p["tap"]}" meta mark set meta mark & 0x0000ffff | {hex((OURS | i) << 16)}')
    out.append("  }")
    for p in secured:
        i = index[p["id"]]
        macs = {p["mac"]} | {pair["mac_address"] for pair in p["allowed_address_pairs"] if pair.get("mac_address")}
        v4 = [a["ip"] for a in p["ips"] if a["version"] == 4]
        v6 = [a["ip"] for a in p["ips"] if a["version"] == 6] + [link_local(p["mac"])]
        for pair in p["allowed_address_pairs"]:
            net = ipaddress.ip_network(pair["ip_address"], strict=False)
            (v4 if net.version == 4 else v6).append(str(net) if net.num_addresses > 1 else str(net.network_address))
        out.append(f"  chain spoof-{i} {{")
        out.append(f"    ether saddr != {_set(sorted(macs))} drop")
        out.append(f"    ether type arp arp saddr ether != {_set(sorted(macs))} drop")
        if v4:
            out.append(f"    ether type arp arp saddr ip != {_set(sorted(set(v4)))} drop")
        else:
            out.append("    ether type arp arp saddr ip != 0.0.0.0 drop")
        out.append("    ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 return")
        out.append(f"    ether type ip ip saddr != {_set(sorted(set(v4)))} drop" if v4 else "    ether type ip drop")
        out.append("    ether type ip udp sport 67 udp dport 68 drop")
        out.append(f"    ether type ip6 ip6 saddr != {_set(sorted(set(v6 + ['::'])))} drop")
        out.append("    ether type ip6 udp sport 547 udp dport 546 drop")
        out.append("    ether type ip6 icmpv6 type nd-router-advert drop")
        out.append("  }")
    out.append("}")
    out.append(f"table inet {table} {{")
    out.append("  chain zones {\n    type filter hook prerouting priority raw; policy accept;")
    for bridge in sorted(bridges):
        out.append(f'    iifname "{bridge}" ct zone set {zone(bridge)}')
    out.append("  }")
    out.append("  chain forward {\n    type filter hook forward priority 0; policy accept;")
    if secured and bridges:
        # Bridged packets show the bridge as iifname here. Only this agent's bridges consult its
        # marks, so another agent on the same kernel (its own bridges, its own table) never
        # applies its port chains to our packets or ours to its.
        names = _set(f'"{b}"' for b in sorted(bridges))
        out.append(f"    iifname {names} jump ports")
    out.append("  }")
    out.append("  chain ports {")
    if secured:
        outs = ", ".join(f"{hex(OURS | index[p['id']])} : jump out-{index[p['id']]}" for p in secured)
        ins = ", ".join(f"{hex((OURS | index[p['id']]) << 16)} : jump in-{index[p['id']]}" for p in secured)
        out.append(f"    meta mark & 0x0000ffff vmap {{ {outs} }}")
        out.append(f"    meta mark & 0xffff0000 vmap {{ {ins} }}")
    out.append("  }")
    for p in secured:
        i = index[p["id"]]
        rules = [r for g in p["security_groups"] for r in groups.get(g, [])]
        out.append(f"  chain out-{i} {{")
        out.append("    ct state established,related return")
        out.append("    ct state invalid drop")
        for r in rules:
            if r["direction"] == "egress":
                m = _rule_match(r, "egress")
                if m:
                    out.append(f"    {m} return")
        out.append("    drop")
        out.append("  }")
        out.append(f"  chain in-{i} {{")
        out.append("    ct state established,related accept")
        out.append("    ct state invalid drop")
        out.append("    meta nfproto ipv4 udp sport 67 udp dport 68 accept")
        out.append("    meta nfproto ipv6 udp sport 547 udp dport 546 accept")
        out.append("    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, "
                   "mld-listener-query } accept")
        for r in rules:
            if r["direction"] == "ingress":
                m = _rule_match(r, "ingress")
                if m:
                    out.append(f"    {m} accept")
        out.append("    drop")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def render_router_nat(table: str, gateway: dict | None, interfaces: list[dict], floating: list[dict]) -> str:
    """SNAT of the router's subnets to its gateway address and floating IPs as DNAT/SNAT pairs."""
    out = [f"table ip {table} {{}}", f"delete table ip {table}", f"table ip {table} {{"]
    out.append("  chain pre {\n    type nat hook prerouting priority -100; policy accept;")
    if gateway:
        for f in floating:
            out.append(f"    ip daddr {f['floating_ip']} dnat to {f['fixed_ip']}")
    out.append("  }")
    out.append("  chain out {\n    type nat hook output priority -100; policy accept;")
    if gateway:
        for f in floating:
            out.append(f"    ip daddr {f['floating_ip']} dnat to {f['fixed_ip']}")
    out.append("  }")
    out.append("  chain post {\n    type nat hook postrouting priority 100; policy accept;")
    if gateway:
        qg = gateway["device"]
        for f in floating:
            out.append(f'    oifname "{qg}" ip saddr {f["fixed_ip"]} snat to {f["floating_ip"]}')
        v4 = [a["ip"] for a in gateway["ips"] if a["version"] == 4]
        if gateway["enable_snat"] and v4:
            cidrs = sorted({a["cidr"] for i in interfaces for a in i["ips"] if a["version"] == 4})
            if cidrs:
                out.append(f'    oifname "{qg}" ip saddr {_set(cidrs)} snat to {v4[0]}')
    out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"
