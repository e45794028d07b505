"""What agents ask the network service for (mixed into NetworkManager).

An agent registers, then repeatedly asks for the complete desired state of its host and makes
the data path match it. Full state (not deltas) keeps agents simple and self-healing: a lost
message costs one resync period, never a wrong data path.
"""

from __future__ import annotations

import ipaddress

import sqlalchemy as sa

from stratus.common.db import utcnow
from stratus.network import models as m
from stratus.network.common import bridge_name, tap_name


class AgentStateMixin:
    async def register_agent(self, host: str, driver: str, tunnel_ip: str, roles: list[str],
                             bridge_mappings: dict) -> None:
        async with self.db.session() as s:
            a = await s.get(m.Agent, host)
            if a is None:
                s.add(m.Agent(host=host, driver=driver, tunnel_ip=tunnel_ip, roles=roles,
                              bridge_mappings=bridge_mappings))
            else:
                a.driver, a.tunnel_ip, a.roles, a.bridge_mappings = driver, tunnel_ip, roles, bridge_mappings
                a.heartbeat_at = utcnow()

    async def set_port_status(self, port_ids: list[str], status: str) -> None:
        if not port_ids:
            return
        async with self.db.session() as s:
            await s.execute(sa.update(m.Port).where(m.Port.id.in_(port_ids), m.Port.status != status)
                            .values(status=status))

    async def host_state(self, host: str) -> dict:
        async with self.db.reader() as s:
            agent = await s.get(m.Agent, host)
            roles = set(agent.roles if agent else [])
            mappings = dict(agent.bridge_mappings or {}) if agent else {}
            nets = {n.id: n for n in (await s.scalars(sa.select(m.Network))).all()}
            subnets = (await s.scalars(sa.select(m.Subnet).order_by(m.Subnet.created_at))).all()
            subnet_by_id = {sn.id: sn for sn in subnets}
            # Columns, not ORM objects: this runs on every agent resync and ports are the bulk.
            ports = (await s.execute(sa.select(
                m.Port.id, m.Port.network_id, m.Port.mac_address, m.Port.device_owner, m.Port.device_id,
                m.Port.project_id, m.Port.binding_host_id, m.Port.admin_state_up, m.Port.port_security_enabled,
                m.Port.status, m.Port.security_groups, m.Port.allowed_address_pairs))).all()
            ips = await self._ips_of(s, [p.id for p in ports])
            groups = {g.id: g for g in (await s.scalars(sa.select(m.SecurityGroup))).all()}
            rules = (await s.scalars(sa.select(m.SecurityGroupRule))).all()
            routers = (await s.scalars(sa.select(m.Router))).all()
            fips = (await s.scalars(sa.select(m.FloatingIP).where(m.FloatingIP.port_id.is_not(None)))).all()
            peers = [a.tunnel_ip for a in (await s.scalars(sa.select(m.Agent))).all()
                     if a.host != host and a.tunnel_ip]

        prefixes = {sn.id: ipaddress.ip_network(sn.cidr).prefixlen for sn in subnets}

        def addr(pid):
            out = []
            for sid, ip in ips.get(pid, []):
                sn = subnet_by_id.get(sid)
                if sn is not None:
                    out.append({"ip": ip, "subnet_id": sid, "prefixlen": prefixes[sid], "cidr": sn.cidr,
                                "version": sn.ip_version})
            return out

        wanted_nets: set[str] = set()
        vm_ports = []
        for p in ports:
            if p.binding_host_id == host and not p.device_owner.startswith("network:"):
                wanted_nets.add(p.network_id)
                vm_ports.append({"id": p.id, "network_id": p.network_id, "mac": p.mac_address,
                                 "tap": tap_name(p.id), "admin_state_up": p.admin_state_up,
                                 "port_security": p.port_security_enabled, "ips": addr(p.id),
                                 "allowed_address_pairs": list(p.allowed_address_pairs or []),
                                 "security_groups": list(p.security_groups or []), "status": p.status})
        # Group members' addresses resolve remote_group_id rules.
        members: dict[str, list[str]] = {}
        for p in ports:
            for g in p.security_groups or []:
                members.setdefault(g, []).extend(a["ip"] for a in addr(p.id))
                members[g].extend(pair["ip_address"] for pair in p.allowed_address_pairs or [])
        used_groups = {g for vp in vm_ports for g in vp["security_groups"]}
        sg_rules = {g: [] for g in used_groups if g in groups}
        for r in rules:
            if r.security_group_id in sg_rules:
                sg_rules[r.security_group_id].append({
                    "id": r.id, "direction": r.direction, "ethertype": r.ethertype, "protocol": r.protocol,
                    "port_range_min": r.port_range_min, "port_range_max": r.port_range_max,
                    "remote_ip_prefix": r.remote_ip_prefix,
                    "remote_ips": sorted(set(members.get(r.remote_group_id, []))) if r.remote_group_id else None})
        dhcp = []
        if "dhcp" in roles:
            for p in ports:
                if p.device_owner != "network:dhcp" or p.network_id not in nets:
                    continue
                n = nets[p.network_id]
                dsubnets = [sn for sn in subnets if sn.network_id == n.id and sn.enable_dhcp and sn.ip_version == 4]
                if not dsubnets:
                    continue
                wanted_nets.add(n.id)
                hosts = []
                for q in ports:
                    if q.network_id != n.id or q.id == p.id:
                        continue
                    for a in addr(q.id):
                        if a["version"] == 4 and subnet_by_id[a["subnet_id"]].enable_dhcp:
                            hosts.append({"mac": q.mac_address, "ip": a["ip"], "port_id": q.id,
                                          "device_id": q.device_id, "project_id": q.project_id,
                                          "hostname": f"host-{a['ip'].replace('.', '-')}"})
                dhcp.append({"network_id": n.id, "port": {"id": p.id, "mac": p.mac_address, "tap": tap_name(p.id),
                                                          "ips": addr(p.id)},
                             "mtu": n.mtu, "subnets": [{"id": sn.id, "cidr": sn.cidr, "gateway_ip": sn.gateway_ip,
                                                        "dns_nameservers": list(sn.dns_nameservers or []),
                                                        "host_routes": list(sn.host_routes or [])}
                                                       for sn in dsubnets],
                             "hosts": hosts})
        router_state = []
        if "l3" in roles:
            by_router: dict[str, list] = {}
            for p in ports:
                if p.device_owner == "network:router_interface":
                    by_router.setdefault(p.device_id, []).append(p)
            gw_ports = {p.id: p for p in ports if p.device_owner == "network:router_gateway"}
            for r in routers:
                ifaces = by_router.get(r.id, [])
                gp = gw_ports.get(r.gw_port_id) if r.gw_port_id else None
                if not ifaces and gp is None:
                    continue
                gateway = None
                if gp is not None:
                    gaddr = addr(gp.id)
                    ext_subnet = subnet_by_id.get(gaddr[0]["subnet_id"]) if gaddr else None
                    gateway = {"port_id": gp.id, "mac": gp.mac_address, "tap": tap_name(gp.id),
                               "network_id": gp.network_id, "ips": gaddr, "enable_snat": r.enable_snat,
                               "gateway_ip": ext_subnet.gateway_ip if ext_subnet else None}
                    wanted_nets.add(gp.network_id)
                for p in ifaces:
                    wanted_nets.add(p.network_id)
                router_state.append({
                    "id": r.id, "admin_state_up": r.admin_state_up, "gateway": gateway,
                    "interfaces": [{"port_id": p.id, "mac": p.mac_address, "tap": tap_name(p.id),
                                    "network_id": p.network_id, "ips": addr(p.id)} for p in ifaces],
                    "routes": list(r.routes or []),
                    "floating_ips": [{"floating_ip": f.floating_ip_address, "fixed_ip": f.fixed_ip_address}
                                     for f in fips if f.router_id == r.id]})
        networks = {}
        for nid in wanted_nets:
            n = nets.get(nid)
            if n is None:
                continue
            bridge = bridge_name(n.id)
            if n.network_type == "flat" and n.physical_network in mappings:
                bridge = mappings[n.physical_network]
            networks[nid] = {"id": n.id, "network_type": n.network_type, "physical_network": n.physical_network,
                             "segmentation_id": n.segmentation_id, "mtu": n.mtu, "bridge": bridge}
        return {"host": host, "networks": networks, "ports": vm_ports, "security_groups": sg_rules,
                "dhcp": dhcp, "routers": router_state, "tunnel_peers": sorted(set(peers))}

    async def network_segment(self, network_id: str, host: str) -> dict | None:
        async with self.db.reader() as s:
            n = await s.get(m.Network, network_id)
            agent = await s.get(m.Agent, host)
        if n is None:
            return None
        bridge = bridge_name(n.id)
        if agent and n.network_type == "flat" and n.physical_network in (agent.bridge_mappings or {}):
            bridge = agent.bridge_mappings[n.physical_network]
        return {"id": n.id, "network_type": n.network_type, "physical_network": n.physical_network,
                "segmentation_id": n.segmentation_id, "mtu": n.mtu, "bridge": bridge}


class PluginEndpoint:
    """The bus endpoint agents call (topic network.plugin)."""

    def __init__(self, manager):
        self.manager = manager

    async def register(self, host: str, driver: str, tunnel_ip: str, roles: list, bridge_mappings: dict) -> bool:
        await self.manager.register_agent(host, driver, tunnel_ip, roles, bridge_mappings)
        return True

    async def get_host_state(self, host: str) -> dict:
        return await self.manager.host_state(host)

    async def get_network(self, network_id: str, host: str) -> dict | None:
        return await self.manager.network_segment(network_id, host)

    async def ports_status(self, up: list, down: list) -> bool:
        await self.manager.set_port_status(up, "ACTIVE")
        await self.manager.set_port_status(down, "DOWN")
        return True
