"""Ports and their addresses (mixed into NetworkManager): IPAM, binding to hosts, security groups."""

from __future__ import annotations

import asyncio
import ipaddress
import logging

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from stratus.common.context import RequestContext
from stratus.common.db import new_uuid
from stratus.common.errors import BadRequest, Conflict, Forbidden
from stratus.network import ipam
from stratus.network import models as m
from stratus.network.common import agent_topic, bridge_name, check_tags, not_found, want, want_bool
from stratus.network.common import standard_attrs as _standard
from stratus.network.common import touch as _touch

log = logging.getLogger("stratus.network")

IP_RETRIES = 12


def _contention(exc: DBAPIError) -> bool:
    """A write lost to a concurrent one (deadlock, serialization failure, busy SQLite): retry it."""
    text = str(exc.orig).lower()
    return any(w in text for w in ("deadlock", "serialize", "could not serialize", "database is locked",
                                   "lock wait timeout"))


class PortMixin:
    def port_view(self, p: m.Port, ips: list[tuple[str, str]], ctx: RequestContext | None) -> dict:
        out = _standard(p)
        out.update({"network_id": p.network_id, "mac_address": p.mac_address, "admin_state_up": p.admin_state_up,
                    "status": p.status, "device_id": p.device_id, "device_owner": p.device_owner,
                    "fixed_ips": [{"subnet_id": sid, "ip_address": ip} for sid, ip in ips],
                    "security_groups": list(p.security_groups or []),
                    "port_security_enabled": p.port_security_enabled,
                    "allowed_address_pairs": list(p.allowed_address_pairs or []),
                    "extra_dhcp_opts": list(p.extra_dhcp_opts or []),
                    "binding:host_id": p.binding_host_id, "binding:vif_type": p.binding_vif_type,
                    "binding:vnic_type": p.binding_vnic_type, "binding:vif_details": dict(p.binding_vif_details or {}),
                    "binding:profile": dict(p.binding_profile or {}), "dns_name": p.dns_name,
                    "dns_assignment": [], "ip_allocation": "immediate", "propagate_uplink_status": False,
                    "data_plane_status": None, "qos_policy_id": None, "qos_network_policy_id": None,
                    "resource_request": None})
        return out

    async def _ips_of(self, s, port_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = {i: [] for i in port_ids}
        for chunk in range(0, len(port_ids), 500):
            part = port_ids[chunk:chunk + 500]
            rows = await s.execute(sa.select(m.IPAllocation.port_id, m.IPAllocation.subnet_id,
                                             m.IPAllocation.ip_address).where(m.IPAllocation.port_id.in_(part)))
            for pid, sid, ip in rows:
                out[pid].append((sid, ip))
        for v in out.values():
            v.sort(key=lambda x: (ipaddress.ip_address(x[1]).version, x[0]))
        return out

    async def _port(self, s, ctx: RequestContext, port_id: str, *, write: bool = False) -> m.Port:
        p = await s.get(m.Port, port_id) if isinstance(port_id, str) else None
        if p is None:
            raise not_found("Port", port_id)
        if not ctx.is_admin and p.project_id != ctx.project_id:
            n = await s.get(m.Network, p.network_id)
            if n.project_id != ctx.project_id:
                raise not_found("Port", port_id)
            if write:
                raise Forbidden(f"Port {port_id} belongs to another project.", kind="PolicyNotAuthorized")
        return p

    async def list_ports(self, ctx: RequestContext, query=None) -> list[dict]:
        async with self.db.reader() as s:
            q = sa.select(m.Port)
            if not ctx.is_admin:
                own_nets = sa.select(m.Network.id).where(m.Network.project_id == ctx.project_id)
                q = q.where(sa.or_(m.Port.project_id == ctx.project_id, m.Port.network_id.in_(own_nets)))
            # The cheap, common filters go to SQL; the rest are applied on the rendered ports.
            for col in ("network_id", "device_id", "device_owner", "id", "mac_address"):
                if query is not None and col in query:
                    q = q.where(getattr(m.Port, col).in_(query.getlist(col)))
            if query is not None and "binding:host_id" in query:
                q = q.where(m.Port.binding_host_id.in_(query.getlist("binding:host_id")))
            ports = (await s.scalars(q.order_by(m.Port.created_at))).all()
            ips = await self._ips_of(s, [p.id for p in ports])
            return [self.port_view(p, ips[p.id], ctx) for p in ports]

    async def get_port(self, ctx: RequestContext, port_id: str) -> dict:
        async with self.db.reader() as s:
            p = await self._port(s, ctx, port_id)
            return self.port_view(p, (await self._ips_of(s, [p.id]))[p.id], ctx)

    async def _requested_ips(self, s, n: m.Network, fixed_ips) -> list[tuple[m.Subnet, str | None]]:
        """[(subnet, address or None)] for a port's fixed_ips request, checked against the network."""
        subnets = (await s.scalars(sa.select(m.Subnet).where(m.Subnet.network_id == n.id)
                                   .order_by(m.Subnet.created_at))).all()
        if fixed_ips is None:
            out: list[tuple[m.Subnet, str | None]] = []
            v4 = [sn for sn in subnets if sn.ip_version == 4]
            if v4:
                out.append((v4[0], None))
            v6 = [sn for sn in subnets if sn.ip_version == 6]
            out += [(sn, None) for sn in v6 if sn.ipv6_address_mode in ("slaac", "dhcpv6-stateless")]
            stateful = [sn for sn in v6 if sn.ipv6_address_mode not in ("slaac", "dhcpv6-stateless")]
            if stateful:
                out.append((stateful[0], None))
            return out
        if not isinstance(fixed_ips, list):
            raise BadRequest("Invalid input for fixed_ips: a list of {subnet_id, ip_address}.", kind="InvalidInput")
        by_id = {sn.id: sn for sn in subnets}
        out = []
        for entry in fixed_ips:
            if not isinstance(entry, dict) or not entry or set(entry) - {"subnet_id", "ip_address"}:
                raise BadRequest("Invalid input for fixed_ips: each entry is {subnet_id and/or ip_address}.",
                                 kind="InvalidInput")
            sid, addr = entry.get("subnet_id"), entry.get("ip_address")
            if sid is not None and not isinstance(sid, str):
                raise BadRequest(f"Invalid input for fixed_ips.subnet_id: {sid!r} is not an id.", kind="InvalidInput")
            ip = ipam.parse_ip(addr, "fixed_ips.ip_address") if addr is not None else None
            if sid is not None:
                sn = by_id.get(sid)
                if sn is None:
                    if await s.get(m.Subnet, sid) is None if isinstance(sid, str) else True:
                        raise not_found("Subnet", sid)
                    raise BadRequest(f"Invalid input for operation: Failed to create port on network {n.id}, "
                                     f"because fixed_ips included invalid subnet {sid}.", kind="InvalidInput")
                if ip is not None and ip not in ipaddress.ip_network(sn.cidr):
                    raise BadRequest(f"IP address {ip} is not a valid IP for the specified subnet.",
                                     kind="InvalidIpForSubnet")
            else:
                sn = next((x for x in subnets if ip in ipaddress.ip_network(x.cidr)), None)
                if sn is None:
                    raise BadRequest(f"IP address {ip} is not a valid IP for any of the subnets on the specified "
                                     f"network.", kind="InvalidIpForNetwork")
            if ip is not None and (ip == ipaddress.ip_network(sn.cidr).network_address or
                                   (sn.ip_version == 4 and ip == ipaddress.ip_network(sn.cidr).broadcast_address)):
                raise BadRequest(f"IP address {ip} is not a valid IP for the specified subnet.",
                                 kind="InvalidIpForSubnet")
            out.append((sn, str(ip) if ip is not None else None))
        return out

    async def _allocate(self, s, n: m.Network, port: m.Port, wanted: list[tuple[m.Subnet, str | None]]) -> None:
        taken_here: set[str] = set()
        for sn, ip in wanted:
            if ip is None:
                if sn.ip_version == 6 and sn.ipv6_address_mode in ("slaac", "dhcpv6-stateless"):
                    ip = ipam.eui64(ipaddress.ip_network(sn.cidr), port.mac_address)
                else:
                    used = set((await s.scalars(sa.select(m.IPAllocation.ip_address)
                                                .where(m.IPAllocation.subnet_id == sn.id))).all())
                    ip = ipam.pick_free(sn.allocation_pools, used, exclude=taken_here)
                    if ip is None:
                        raise Conflict(f"No more IP addresses available on network {n.id}.",
                                       kind="IpAddressGenerationFailure")
            else:
                exists = await s.scalar(sa.select(m.IPAllocation.port_id).where(
                    m.IPAllocation.subnet_id == sn.id, m.IPAllocation.ip_address == ip))
                if exists or ip in taken_here:
                    raise Conflict(f"IP address {ip} already allocated in subnet {sn.id}",
                                   kind="IpAddressAlreadyAllocated")
                if ip == sn.gateway_ip and not port.device_owner.startswith("network:router"):
                    raise Conflict(f"IP address {ip} already allocated in subnet {sn.id} (it is the gateway).",
                                   kind="IpAddressAlreadyAllocated")
            taken_here.add(ip)
            s.add(m.IPAllocation(subnet_id=sn.id, ip_address=ip, network_id=n.id, port_id=port.id))
        await s.flush()

    @staticmethod
    def _pairs(value) -> list[dict]:
        if not isinstance(value, list):
            raise BadRequest("Invalid input for allowed_address_pairs: a list of {ip_address, mac_address?}.",
                             kind="InvalidInput")
        out = []
        for pair in value:
            if not isinstance(pair, dict) or "ip_address" not in pair or set(pair) - {"ip_address", "mac_address"}:
                raise BadRequest("Invalid input for allowed_address_pairs: each is {ip_address, mac_address?}.",
                                 kind="AllowedAddressPairsMissingIP")
            try:
                ipaddress.ip_network(pair["ip_address"], strict=False)
            except (ValueError, TypeError):
                raise BadRequest(f"'{pair['ip_address']}' is not a valid IP address or CIDR.",
                                 kind="InvalidInput") from None
            if "mac_address" in pair and not ipam.valid_mac(pair["mac_address"]):
                raise BadRequest(f"'{pair['mac_address']}' is not a valid MAC address.", kind="InvalidInput")
            out.append(dict(pair))
        return out

    async def _binding(self, s, port: m.Port, n: m.Network) -> None:
        """Bind the port to its host: the agent there decides the bridge; no agent → binding_failed."""
        if not port.binding_host_id:
            port.binding_vif_type, port.binding_vif_details = "unbound", {}
            return
        agent = await s.get(m.Agent, port.binding_host_id)
        if agent is None:
            port.binding_vif_type, port.binding_vif_details = "binding_failed", {}
            return
        bridge = bridge_name(n.id)
        if n.network_type == "flat" and n.physical_network in (agent.bridge_mappings or {}):
            bridge = agent.bridge_mappings[n.physical_network]
        port.binding_vif_type = "bridge"
        port.binding_vif_details = {"bridge_name": bridge, "port_filter": True, "connectivity": "l2"}

    async def _security_groups_for(self, s, ctx: RequestContext, project: str, value, owner: str,
                                   secured: bool) -> list[str]:
        if value is None:
            if not secured or owner.startswith("network:"):
                return []
            return [await self.default_security_group_id(s, project)]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadRequest("Invalid input for security_groups: a list of security group ids.", kind="InvalidInput")
        if value and not secured:
            raise Conflict("Port has security group associated. Cannot disable port security or ip address until "
                           "security group is removed", kind="PortSecurityAndIPRequiredForSecurityGroups")
        out = []
        for ref in dict.fromkeys(value):
            sg = await s.get(m.SecurityGroup, ref)
            if sg is None:
                # Nova-style callers name groups ("default"); a name unique in the project is accepted.
                if ref == "default":
                    await self.default_security_group_id(s, project)
                named = (await s.scalars(sa.select(m.SecurityGroup).where(m.SecurityGroup.name == ref,
                                                                         m.SecurityGroup.project_id == project))).all()
                if len(named) > 1:
                    raise Conflict(f"Multiple security groups named {ref} exist in project {project}; use an id.",
                                   kind="DuplicateSecurityGroupName")
                sg = named[0] if named else None
            if sg is None or (not ctx.is_admin and sg.project_id != project and sg.project_id != ctx.project_id):
                raise not_found("SecurityGroup", ref)
            out.append(sg.id)
        return list(dict.fromkeys(out))

    async def create_port(self, ctx: RequestContext, body: dict) -> dict:
        where = "port"
        network_id = want(body, "network_id", str, where=where, required=True)
        for _ in range(IP_RETRIES):
            try:
                async with self.db.session() as s:
                    view, host = await self._create_port(s, ctx, body, network_id, where)
                break
            except DBAPIError as exc:
                if not isinstance(exc, IntegrityError):
                    if _contention(exc):
                        await asyncio.sleep(0.005)
                        continue
                    raise
                # Another create took the same address or MAC a moment ago: try again with a fresh view.
                text = str(exc.orig).lower()
                if "mac" in text and "mac_address" in body:
                    raise Conflict(f"Unable to complete operation for network {network_id}. The mac address "
                                   f"{body['mac_address']} is in use.", kind="MacAddressInUse") from None
                if body.get("fixed_ips") and all("ip_address" in f for f in body["fixed_ips"]
                                                  if isinstance(f, dict)):
                    raise Conflict("IP address already allocated.", kind="IpAddressAlreadyAllocated") from None
                await asyncio.sleep(0.005)
        else:
            raise Conflict(f"Could not allocate an address on network {network_id} after {IP_RETRIES} attempts "
                           f"(heavy contention); retry.", kind="IpAddressGenerationFailure")
        await self.after_binding(host, network_id)
        return view

    async def _create_port(self, s, ctx, body, network_id, where):
        n = await self._network(s, ctx, network_id)
        project = self.owner(ctx, body, where)
        owner = want(body, "device_owner", str, where=where, default="")
        if not ctx.is_admin and n.project_id != ctx.project_id and not n.shared:
            raise Forbidden(f"Network {n.id} is not shared with your project; ports on it are made by the cloud "
                            f"(routers, floating IPs).", kind="PolicyNotAuthorized")
        await self.check_quota(s, project, "port")
        mac = body.get("mac_address")
        if mac is not None:
            if not ipam.valid_mac(mac):
                raise BadRequest(f"Invalid input for mac_address. Reason: '{mac}' is not a valid MAC address.",
                                 kind="InvalidInput")
            mac = mac.lower()
            if await s.scalar(sa.select(m.Port.id).where(m.Port.network_id == n.id, m.Port.mac_address == mac)):
                raise Conflict(f"Unable to complete operation for network {n.id}. The mac address {mac} is in use.",
                               kind="MacAddressInUse")
        secured = want_bool(body, "port_security_enabled", where=where, default=n.port_security_enabled)
        pairs = self._pairs(body.get("allowed_address_pairs", []))
        if pairs and not secured:
            raise Conflict("Port Security must be enabled in order to have allowed address pairs on a port.",
                           kind="AddressPairAndPortSecurityRequired")
        host = want(body, "binding:host_id", str, where=where, default="")
        profile = want(body, "binding:profile", dict, where=where, default={})
        vnic = want(body, "binding:vnic_type", str, where=where, default="normal")
        if vnic != "normal":
            raise BadRequest(f"Invalid input for binding:vnic_type: only 'normal' is supported, not '{vnic}'.",
                             kind="InvalidInput")
        if (host or profile) and not ctx.is_admin and not ctx.has_role("service"):
            raise Forbidden("(rule:create_port and rule:create_port:binding:host_id) is disallowed by policy",
                            kind="PolicyNotAuthorized")
        p = m.Port(id=new_uuid(), project_id=project, network_id=n.id,
                   name=want(body, "name", str, where=where, default=""),
                   description=want(body, "description", str, where=where, default=""),
                   mac_address=mac or ipam.random_mac(self.settings["base_mac"]),
                   admin_state_up=want_bool(body, "admin_state_up", where=where, default=True),
                   device_id=want(body, "device_id", str, where=where, default=""), device_owner=owner,
                   port_security_enabled=secured, allowed_address_pairs=pairs,
                   extra_dhcp_opts=want(body, "extra_dhcp_opts", list, where=where, default=[]),
                   binding_host_id=host, binding_profile=profile,
                   dns_name=want(body, "dns_name", str, where=where, default=""),
                   tags=check_tags(body.get("tags", [])))
        p.security_groups = await self._security_groups_for(s, ctx, project, body.get("security_groups"), owner,
                                                            secured)
        await self._binding(s, p, n)
        s.add(p)
        await s.flush()
        await self._allocate(s, n, p, await self._requested_ips(s, n, body.get("fixed_ips")))
        return self.port_view(p, (await self._ips_of(s, [p.id]))[p.id], ctx), host

    async def after_binding(self, host: str, network_id: str) -> None:
        """Make sure the bound host's agent has the network's bridge before the VM plugs into it."""
        if host:
            try:
                await self.bus.call(agent_topic(host), "ensure_network", network_id=network_id, timeout=15)
            except Exception as exc:
                log.warning("agent on %s could not prepare network %s: %s", host, network_id, exc)
        await self.nudge_agents()

    async def update_port(self, ctx: RequestContext, port_id: str, body: dict) -> dict:
        where = "port"
        if "network_id" in body:
            raise BadRequest("Cannot update read-only attribute network_id", kind="InvalidInput")
        for _ in range(IP_RETRIES):
            try:
                async with self.db.session() as s:
                    p = await self._port(s, ctx, port_id, write=True)
                    n = await s.get(m.Network, p.network_id)
                    await self._update_port(s, ctx, p, n, body, where)
                    _touch(p)
                    await s.flush()
                    view = self.port_view(p, (await self._ips_of(s, [p.id]))[p.id], ctx)
                break
            except DBAPIError as exc:
                if not isinstance(exc, IntegrityError):
                    if _contention(exc):
                        await asyncio.sleep(0.005)
                        continue
                    raise
                if body.get("mac_address"):
                    raise Conflict(f"The mac address {body['mac_address']} is in use.", kind="MacAddressInUse") from None
                await asyncio.sleep(0.005)
        else:
            raise Conflict("Could not update the port's addresses (heavy contention); retry.",
                           kind="IpAddressGenerationFailure")
        await self.after_binding(view["binding:host_id"], view["network_id"])
        return view

    async def _update_port(self, s, ctx, p: m.Port, n: m.Network, body: dict, where: str) -> None:
        for key in ("name", "description", "device_id", "device_owner", "dns_name"):
            if key in body:
                setattr(p, key, want(body, key, str, where=where) or "")
        if "admin_state_up" in body:
            p.admin_state_up = want_bool(body, "admin_state_up", where=where)
        if "mac_address" in body:
            mac = body["mac_address"]
            if not ipam.valid_mac(mac):
                raise BadRequest(f"Invalid input for mac_address. Reason: '{mac}' is not a valid MAC address.",
                                 kind="InvalidInput")
            if p.binding_host_id and p.device_owner.startswith("compute:"):
                raise Conflict("Cannot change the MAC address of a port bound to a running server.",
                               kind="PortBound")
            p.mac_address = mac.lower()
        if "port_security_enabled" in body:
            p.port_security_enabled = want_bool(body, "port_security_enabled", where=where)
            if not p.port_security_enabled and "security_groups" not in body and p.security_groups:
                raise Conflict("Port has security group associated. Cannot disable port security or ip address "
                               "until security group is removed", kind="PortSecurityAndIPRequiredForSecurityGroups")
        if "allowed_address_pairs" in body:
            pairs = self._pairs(body["allowed_address_pairs"] or [])
            if pairs and not p.port_security_enabled:
                raise Conflict("Port Security must be enabled in order to have allowed address pairs on a port.",
                               kind="AddressPairAndPortSecurityRequired")
            p.allowed_address_pairs = pairs
        if "security_groups" in body:
            p.security_groups = await self._security_groups_for(s, ctx, p.project_id, body["security_groups"] or [],
                                                                p.device_owner, p.port_security_enabled)
        if "extra_dhcp_opts" in body:
            p.extra_dhcp_opts = want(body, "extra_dhcp_opts", list, where=where)
        if "binding:host_id" in body or "binding:profile" in body:
            if not ctx.is_admin and not ctx.has_role("service"):
                raise Forbidden("(rule:update_port and rule:update_port:binding:host_id) is disallowed by policy",
                                kind="PolicyNotAuthorized")
            if "binding:host_id" in body:
                p.binding_host_id = want(body, "binding:host_id", str, where=where, nullable=True) or ""
            if "binding:profile" in body:
                p.binding_profile = want(body, "binding:profile", dict, where=where, nullable=True) or {}
            if not p.binding_host_id:
                p.status = "DOWN"
        await self._binding(s, p, n)
        if "fixed_ips" in body:
            wanted = await self._requested_ips(s, n, body["fixed_ips"] or [])
            current = {(sid, ip) for sid, ip in (await self._ips_of(s, [p.id]))[p.id]}
            keep = {(sn.id, ip) for sn, ip in wanted if ip is not None and (sn.id, ip) in current}
            await s.execute(sa.delete(m.IPAllocation).where(m.IPAllocation.port_id == p.id))
            await s.flush()
            for sid, ip in keep:
                s.add(m.IPAllocation(subnet_id=sid, ip_address=ip, network_id=n.id, port_id=p.id))
            await s.flush()
            await self._allocate(s, n, p, [(sn, ip) for sn, ip in wanted if (sn.id, ip) not in keep])

    async def delete_port(self, ctx: RequestContext, port_id: str, *, internal: bool = False) -> None:
        async with self.db.session() as s:
            p = await self._port(s, ctx, port_id, write=True)
            if not internal and p.device_owner in ("network:router_interface", "network:router_gateway",
                                                   "network:floatingip"):
                raise Conflict(f"Port {p.id} cannot be deleted directly via the port API: has device owner "
                               f"{p.device_owner}.", kind="ServicePortInUse")
            await s.execute(sa.update(m.FloatingIP).where(m.FloatingIP.port_id == p.id).values(
                port_id=None, fixed_ip_address=None, router_id=None, status="DOWN"))
            await s.execute(sa.delete(m.IPAllocation).where(m.IPAllocation.port_id == p.id))
            await s.delete(p)
        await self.nudge_agents()
