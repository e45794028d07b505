"""Networking logic: networks and subnets (ports, L3, security groups, quotas and agent state are mixed in).

Every public method takes the caller's RequestContext, enforces tenancy (another project's
resource is "not found" unless shared or external; admins see everything) and returns neutron's
JSON shape. After a change that the data path must follow, agents are nudged over the bus.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from stratus.common.context import RequestContext
from stratus.common.db import new_uuid
from stratus.common.errors import BadRequest, Conflict, Forbidden
from stratus.network import ipam
from stratus.network import models as m
from stratus.network.common import AGENT_FANOUT, check_tags, not_found, want, want_bool
from stratus.network.common import standard_attrs as _standard
from stratus.network.common import touch as _touch
from stratus.network.l3 import L3Mixin
from stratus.network.ports import PortMixin, _contention
from stratus.network.quotas import QuotaMixin
from stratus.network.secgroups import SecurityGroupMixin
from stratus.network.state import AgentStateMixin

log = logging.getLogger("stratus.network")

# how many of the lowest free segment values a new network picks from
_SEGMENT_CHOICES = 64
NETWORK_OWNERS = ("network:dhcp", "network:router_interface", "network:router_gateway", "network:floatingip")

class NetworkManager(PortMixin, L3Mixin, SecurityGroupMixin, QuotaMixin, AgentStateMixin):
    def __init__(self, db, bus, settings: dict):
        self.db = db
        self.bus = bus
        self.settings = settings
        self.az = settings["availability_zone"]
        self._nudge_pending = False

    # ---- plumbing ------------------------------------------------------------------------

    async def nudge_agents(self) -> None:
        """Tell every agent to resync (coalesced: many changes in one moment cause one message)."""
        if self._nudge_pending:
            return
        self._nudge_pending = True
        try:
            await asyncio.sleep(0)
            self._nudge_pending = False
            await self.bus.fanout(AGENT_FANOUT, "resync")
        except Exception as exc:  # the periodic resync repairs a lost nudge
            self._nudge_pending = False
            log.debug("could not nudge network agents: %s", exc)

    @staticmethod
    def owner(ctx: RequestContext, body: dict, where: str) -> str:
        pid = body.get("project_id") or body.get("tenant_id")
        if pid is None:
            return ctx.project_id or ""
        if not isinstance(pid, str):
            raise BadRequest(f"Invalid input for project_id in {where}.", kind="HTTPBadRequest")
        if pid != ctx.project_id and not ctx.is_admin:
            raise Forbidden(f"Specifying 'project_id' or 'tenant_id' other than the authenticated project in "
                            f"request requires admin privileges", kind="PolicyNotAuthorized")
        return pid

    # ---- networks ------------------------------------------------------------------------

    def network_view(self, n: m.Network, subnet_ids: list[str], ctx: RequestContext) -> dict:
        out = _standard(n)
        out.update({"admin_state_up": n.admin_state_up, "status": n.status, "shared": n.shared,
                    "router:external": n.external, "subnets": subnet_ids, "mtu": n.mtu,
                    "port_security_enabled": n.port_security_enabled, "availability_zones": [self.az],
                    "availability_zone_hints": list(n.availability_zone_hints or []),
                    "ipv4_address_scope": None, "ipv6_address_scope": None, "is_default": n.is_default,
                    "dns_domain": n.dns_domain, "qos_policy_id": None, "l2_adjacency": True,
                    "vlan_transparent": False})
        if ctx.is_admin:
            out.update({"provider:network_type": n.network_type, "provider:physical_network": n.physical_network,
                        "provider:segmentation_id": n.segmentation_id})
        return out

    def can_see_network(self, ctx: RequestContext, n: m.Network) -> bool:
        return ctx.is_admin or n.project_id == ctx.project_id or n.shared or n.external

    async def _network(self, s, ctx: RequestContext, network_id: str, *, write: bool = False) -> m.Network:
        n = await s.get(m.Network, network_id) if isinstance(network_id, str) else None
        if n is None or not self.can_see_network(ctx, n):
            raise not_found("Network", network_id)
        if write and not ctx.is_admin and n.project_id != ctx.project_id:
            raise Forbidden(f"Network {network_id} belongs to another project; only its owner may change it.",
                            kind="PolicyNotAuthorized")
        return n

    async def _subnet_ids(self, s, network_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {i: [] for i in network_ids}
        if network_ids:
            rows = await s.execute(sa.select(m.Subnet.network_id, m.Subnet.id)
                                   .where(m.Subnet.network_id.in_(network_ids)).order_by(m.Subnet.created_at))
            for nid, sid in rows:
                out[nid].append(sid)
        return out

    async def list_networks(self, ctx: RequestContext) -> list[dict]:
        async with self.db.reader() as s:
            q = sa.select(m.Network)
            if not ctx.is_admin:
                q = q.where(sa.or_(m.Network.project_id == ctx.project_id, m.Network.shared.is_(True),
                                   m.Network.external.is_(True)))
            nets = (await s.scalars(q.order_by(m.Network.created_at))).all()
            subnets = await self._subnet_ids(s, [n.id for n in nets])
            return [self.network_view(n, subnets[n.id], ctx) for n in nets]

    async def get_network(self, ctx: RequestContext, network_id: str) -> dict:
        async with self.db.reader() as s:
            n = await self._network(s, ctx, network_id)
            return self.network_view(n, (await self._subnet_ids(s, [n.id]))[n.id], ctx)

    def _segment(self, body: dict, ctx: RequestContext) -> tuple[str, str | None, int | None, bool]:
        """(type, physical network, segmentation id, explicit) from provider attributes or defaults."""
        provider = {k: body[k] for k in ("provider:network_type", "provider:physical_network",
                                         "provider:segmentation_id") if k in body}
        if not provider:
            return self.settings["tenant_network_type"], None, None, False
        if not ctx.is_admin:
            raise Forbidden("(rule:create_network and rule:create_network:provider:network_type) is disallowed by "
                            "policy", kind="PolicyNotAuthorized")
        kind = provider.get("provider:network_type") or self.settings["tenant_network_type"]
        physnet = provider.get("provider:physical_network")
        seg = provider.get("provider:segmentation_id")
        if physnet is not None and (not isinstance(physnet, str) or len(physnet) > 64):
            raise BadRequest(f"Invalid input for provider:physical_network: {physnet!r} is not a name.",
                             kind="InvalidInput")
        if isinstance(seg, bool) or seg is not None and not isinstance(seg, (int, str)):
            raise BadRequest(f"Invalid input for provider:segmentation_id: {seg!r} is not an integer.",
                             kind="InvalidInput")
        if kind not in ("flat", "vlan", "vxlan", "local"):
            raise BadRequest(f"Invalid input for operation: network_type value '{kind}' not supported.",
                             kind="InvalidInput")
        if seg is not None:
            try:
                seg = int(seg)
            except (TypeError, ValueError):
                raise BadRequest(f"Invalid input for provider:segmentation_id: {seg!r} is not an integer.",
                                 kind="InvalidInput") from None
        if kind == "flat":
            if not physnet:
                raise BadRequest("Invalid input for operation: physical_network required for flat provider network.",
                                 kind="InvalidInput")
            if seg is not None:
                raise BadRequest("Invalid input for operation: segmentation_id specified for flat provider network.",
                                 kind="InvalidInput")
        elif kind == "vlan":
            if not physnet:
                raise BadRequest("Invalid input for operation: physical_network required for VLAN provider "
                                 "network.", kind="InvalidInput")
            if seg is not None and not 1 <= seg <= 4094:
                raise BadRequest(f"Invalid input for operation: segmentation_id {seg} out of range (1 through 4094).",
                                 kind="InvalidInput")
        elif kind == "vxlan":
            if physnet:
                raise BadRequest("Invalid input for operation: provider:physical_network specified for VXLAN "
                                 "network.", kind="InvalidInput")
            if seg is not None and not 1 <= seg < 2 ** 24:
                raise BadRequest(f"Invalid input for operation: VXLAN segmentation_id {seg} out of range.",
                                 kind="InvalidInput")
        else:
            physnet = seg = None
        return kind, physnet, seg, True

    async def _allocate_segment(self, s, kind: str, physnet: str | None, seg: int | None) -> tuple[int | None, str]:
        if kind == "flat":
            return None, f"flat:{physnet}"
        if kind == "local":
            return None, f"local:{new_uuid()}"
        prefix = f"vlan:{physnet}:" if kind == "vlan" else "vxlan:"
        if seg is not None:
            return seg, f"{prefix}{seg}"
        if kind == "vlan":
            if physnet not in self.settings["vlan_ranges"]:
                raise Conflict(f"Unable to create the network. No tenant network is available for allocation on "
                               f"physical network {physnet}.", kind="NoNetworkAvailable")
            lo, hi = self.settings["vlan_ranges"][physnet]
        else:
            lo, hi = self.settings["vni_range"]
        used = set((await s.scalars(sa.select(m.Network.segment_key).where(m.Network.segment_key.like(prefix + "%"))))
                   .all())
        # One of the lowest free values, at random (as Neutron's type drivers do): concurrent
        # creates that all took the lowest one collided on the unique key, and a burst of 12
        # could run out of retries.
        free = []
        for value in range(lo, hi + 1):
            if f"{prefix}{value}" not in used:
                free.append(value)
                if len(free) == _SEGMENT_CHOICES:
                    break
        if not free:
            raise Conflict("Unable to create the network. No tenant network is available for allocation.",
                           kind="NoNetworkAvailable")
        value = random.choice(free)
        return value, f"{prefix}{value}"

    async def create_network(self, ctx: RequestContext, body: dict) -> dict:
        where = "network"
        project = self.owner(ctx, body, where)
        shared = want_bool(body, "shared", where=where, default=False)
        external = want_bool(body, "router:external", where=where, default=False)
        is_default = want_bool(body, "is_default", where=where, default=False)
        if (shared or external or is_default) and not ctx.is_admin:
            raise Forbidden("(rule:create_network and rule:create_network:shared/router:external) is disallowed by "
                            "policy", kind="PolicyNotAuthorized")
        kind, physnet, seg, _ = self._segment(body, ctx)
        if kind == "vlan" and not self.settings["vlan_ranges"] and not body.get("provider:physical_network"):
            raise Conflict("No VLAN ranges are configured.", kind="NoNetworkAvailable")
        name = want(body, "name", str, where=where, default="")
        mtu = want(body, "mtu", int, where=where, default=None)
        default_mtu = 1450 if kind == "vxlan" else 1500
        if mtu is not None and not 68 <= mtu <= default_mtu:
            raise BadRequest(f"Requested MTU is too big, maximum is {default_mtu}.", kind="InvalidInput")
        hints = want(body, "availability_zone_hints", list, where=where, default=[])
        for h in hints:
            if h != self.az:
                raise BadRequest(f"AvailabilityZone {h} could not be found.", kind="AvailabilityZoneNotFound")
        for attempt in range(8):
            try:
                async with self.db.session() as s:
                    await self.check_quota(s, project, "network")
                    seg_id, key = await self._allocate_segment(s, kind, physnet, seg)
                    n = m.Network(id=new_uuid(), project_id=project, name=name,
                                  description=want(body, "description", str, where=where, default=""),
                                  admin_state_up=want_bool(body, "admin_state_up", where=where, default=True),
                                  shared=shared, external=external, is_default=is_default, mtu=mtu or default_mtu,
                                  port_security_enabled=want_bool(body, "port_security_enabled", where=where,
                                                                  default=True),
                                  network_type=kind, physical_network=physnet, segmentation_id=seg_id,
                                  segment_key=key, availability_zone_hints=hints,
                                  dns_domain=want(body, "dns_domain", str, where=where, default=""),
                                  tags=check_tags(body.get("tags", [])))
                    s.add(n)
                    await s.flush()
                    return self.network_view(n, [], ctx)
            except DBAPIError as exc:
                if not isinstance(exc, IntegrityError):
                    if _contention(exc):
                        continue
                    raise
                if seg is not None or kind == "flat":
                    raise Conflict(f"Unable to create the network. The {kind} segment "
                                   f"{physnet or ''}{':' if physnet and seg else ''}{seg or ''} is in use.",
                                   kind="SegmentationIdInUse" if seg else "FlatNetworkInUse") from None
        raise Conflict("Unable to create the network: segment allocation kept colliding; retry.",
                       kind="NoNetworkAvailable")

    async def update_network(self, ctx: RequestContext, network_id: str, body: dict) -> dict:
        where = "network"
        for key in ("provider:network_type", "provider:physical_network", "provider:segmentation_id"):
            if key in body:
                raise BadRequest(f"Cannot update read-only attribute {key}", kind="InvalidInput")
        async with self.db.session() as s:
            n = await self._network(s, ctx, network_id, write=True)
            for key in ("shared", "router:external", "is_default"):
                if key in body and not ctx.is_admin:
                    raise Forbidden(f"(rule:update_network and rule:update_network:{key}) is disallowed by policy",
                                    kind="PolicyNotAuthorized")
            if "name" in body:
                n.name = want(body, "name", str, where=where)
            if "description" in body:
                n.description = want(body, "description", str, where=where)
            if "admin_state_up" in body:
                n.admin_state_up = want_bool(body, "admin_state_up", where=where)
            if "shared" in body:
                shared = want_bool(body, "shared", where=where)
                if not shared and n.shared:
                    other = await s.scalar(sa.select(sa.func.count()).select_from(m.Port).where(
                        m.Port.network_id == n.id, m.Port.project_id != n.project_id,
                        ~m.Port.device_owner.in_(NETWORK_OWNERS)))
                    if other:
                        raise Conflict(f"Unable to reconfigure sharing settings for network {n.id}. Multiple "
                                       f"tenants are using it.", kind="InvalidSharedSetting")
                n.shared = shared
            if "router:external" in body:
                n.external = want_bool(body, "router:external", where=where)
            if "is_default" in body:
                n.is_default = want_bool(body, "is_default", where=where)
            if "port_security_enabled" in body:
                n.port_security_enabled = want_bool(body, "port_security_enabled", where=where)
            if "mtu" in body:
                mtu = want(body, "mtu", int, where=where)
                top = 1450 if n.network_type == "vxlan" else 1500
                if not 68 <= mtu <= top:
                    raise BadRequest(f"Requested MTU is too big, maximum is {top}.", kind="InvalidInput")
                n.mtu = mtu
            if "dns_domain" in body:
                n.dns_domain = want(body, "dns_domain", str, where=where)
            _touch(n)
            view = self.network_view(n, (await self._subnet_ids(s, [n.id]))[n.id], ctx)
        await self.nudge_agents()
        return view

    async def delete_network(self, ctx: RequestContext, network_id: str) -> None:
        async with self.db.session() as s:
            n = await self._network(s, ctx, network_id, write=True)
            ports = (await s.scalars(sa.select(m.Port).where(m.Port.network_id == n.id))).all()
            busy = [p for p in ports if p.device_owner != "network:dhcp"]
            if busy:
                raise Conflict(f"Unable to complete operation on network {n.id}. There are one or more ports still "
                               f"in use on the network ({', '.join(p.id for p in busy[:5])}).", kind="NetworkInUse")
            for p in ports:
                await s.execute(sa.delete(m.IPAllocation).where(m.IPAllocation.port_id == p.id))
                await s.delete(p)
            await s.execute(sa.delete(m.Subnet).where(m.Subnet.network_id == n.id))
            await s.execute(sa.delete(m.AutoAllocatedTopology).where(m.AutoAllocatedTopology.network_id == n.id))
            await s.delete(n)
        await self.nudge_agents()

    # ---- subnets -------------------------------------------------------------------------

    def subnet_view(self, sn: m.Subnet) -> dict:
        out = _standard(sn)
        out.update({"network_id": sn.network_id, "ip_version": sn.ip_version, "cidr": sn.cidr,
                    "gateway_ip": sn.gateway_ip, "enable_dhcp": sn.enable_dhcp,
                    "allocation_pools": list(sn.allocation_pools or []),
                    "dns_nameservers": list(sn.dns_nameservers or []), "host_routes": list(sn.host_routes or []),
                    "ipv6_ra_mode": sn.ipv6_ra_mode, "ipv6_address_mode": sn.ipv6_address_mode,
                    "subnetpool_id": None, "segment_id": None, "service_types": [], "dns_publish_fixed_ip": False})
        return out

    async def _subnet(self, s, ctx: RequestContext, subnet_id: str, *, write: bool = False) -> m.Subnet:
        sn = await s.get(m.Subnet, subnet_id) if isinstance(subnet_id, str) else None
        if sn is None:
            raise not_found("Subnet", subnet_id)
        n = await s.get(m.Network, sn.network_id)
        if not self.can_see_network(ctx, n) and sn.project_id != ctx.project_id:
            raise not_found("Subnet", subnet_id)
        if write and not ctx.is_admin and sn.project_id != ctx.project_id:
            raise Forbidden(f"Subnet {subnet_id} belongs to another project; only its owner may change it.",
                            kind="PolicyNotAuthorized")
        return sn

    async def list_subnets(self, ctx: RequestContext) -> list[dict]:
        async with self.db.reader() as s:
            q = sa.select(m.Subnet)
            if not ctx.is_admin:
                visible = sa.select(m.Network.id).where(sa.or_(m.Network.project_id == ctx.project_id,
                                                               m.Network.shared.is_(True),
                                                               m.Network.external.is_(True)))
                q = q.where(sa.or_(m.Subnet.project_id == ctx.project_id, m.Subnet.network_id.in_(visible)))
            return [self.subnet_view(sn) for sn in (await s.scalars(q.order_by(m.Subnet.created_at))).all()]

    async def get_subnet(self, ctx: RequestContext, subnet_id: str) -> dict:
        async with self.db.reader() as s:
            return self.subnet_view(await self._subnet(s, ctx, subnet_id))

    @staticmethod
    def _dns(value, version: int) -> list[str]:
        if not isinstance(value, list):
            raise BadRequest("Invalid input for dns_nameservers: it must be a list of addresses.", kind="InvalidInput")
        out = []
        for v in value:
            ipam.parse_ip(v, "dns_nameservers")
            if v in out:
                raise BadRequest(f"Duplicate nameserver '{v}'.", kind="InvalidInput")
            out.append(v)
        return out

    @staticmethod
    def _routes(value, net) -> list[dict]:
        if not isinstance(value, list):
            raise BadRequest("Invalid input for host_routes: a list of {destination, nexthop}.", kind="InvalidInput")
        out = []
        for r in value:
            if not isinstance(r, dict) or set(r) - {"destination", "nexthop"} or len(r) != 2:
                raise BadRequest("Invalid input for host_routes: each route is {destination, nexthop}.",
                                 kind="InvalidInput")
            try:
                dest = ipaddress.ip_network(r["destination"], strict=True)
            except (ValueError, TypeError):
                raise BadRequest(f"Invalid input for host_routes: '{r['destination']}' is not a CIDR.",
                                 kind="InvalidInput") from None
            hop = ipam.parse_ip(r["nexthop"], "host_routes.nexthop")
            if dest.version != net.version or hop.version != net.version:
                raise BadRequest("Invalid input for host_routes: the route's IP version differs from the subnet's.",
                                 kind="InvalidInput")
            out.append({"destination": str(dest), "nexthop": str(hop)})
        return out

    async def create_subnet(self, ctx: RequestContext, body: dict) -> dict:
        where = "subnet"
        network_id = want(body, "network_id", str, where=where, required=True)
        version = body.get("ip_version", 4)
        try:
            version = int(version)
        except (TypeError, ValueError):
            version = 0
        if version not in (4, 6):
            raise BadRequest(f"Invalid input for ip_version. Reason: {body.get('ip_version')!r} is not in [4, 6].",
                             kind="InvalidInput")
        if body.get("subnetpool_id") or body.get("use_default_subnetpool"):
            raise BadRequest("Subnet pools are not supported here; give a cidr.", kind="InvalidInput")
        cidr = want(body, "cidr", str, where=where, required=True)
        net = ipam.parse_cidr(cidr, version)
        gateway = body.get("gateway_ip", ipam.default_gateway(net))
        if gateway is not None:
            g = ipam.parse_ip(gateway, "gateway_ip", version)
            if g not in net or g in (net.network_address,) or (version == 4 and g == net.broadcast_address):
                raise BadRequest(f"Invalid input for operation: Gateway IP {gateway} is not a valid address on "
                                 f"subnet {net}.", kind="InvalidInput")
            gateway = str(g)
        pools = (ipam.validate_pools(net, body["allocation_pools"], gateway) if body.get("allocation_pools")
                 else ipam.default_pools(net, gateway))
        dns = self._dns(body.get("dns_nameservers", []), version)
        routes = self._routes(body.get("host_routes", []), net)
        ra = body.get("ipv6_ra_mode")
        addr = body.get("ipv6_address_mode")
        modes = (None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless")
        if ra not in modes or addr not in modes or (version == 4 and (ra or addr)):
            raise BadRequest("Invalid input for ipv6_ra_mode/ipv6_address_mode: one of slaac, dhcpv6-stateful, "
                             "dhcpv6-stateless, for IPv6 subnets only.", kind="InvalidInput")
        if addr in ("slaac", "dhcpv6-stateless") and net.prefixlen != 64:
            raise BadRequest(f"Invalid CIDR {net} for IPv6 address mode '{addr}'. The prefix length must be /64.",
                             kind="InvalidInput")
        enable_dhcp = want_bool(body, "enable_dhcp", where=where, default=True)
        async with self.db.session() as s:
            n = await self._network(s, ctx, network_id)
            if not ctx.is_admin and n.project_id != ctx.project_id:
                raise Forbidden(f"Network {n.id} belongs to another project; only its owner may add subnets.",
                                kind="PolicyNotAuthorized")
            project = self.owner(ctx, body, where)
            await self.check_quota(s, project, "subnet")
            for other in (await s.scalars(sa.select(m.Subnet).where(m.Subnet.network_id == n.id))).all():
                if ipaddress.ip_network(other.cidr).overlaps(net):
                    raise BadRequest(f"Invalid input for operation: Requested subnet with cidr: {net} for network: "
                                     f"{n.id} overlaps with another subnet ({other.cidr}).", kind="InvalidInput")
            sn = m.Subnet(id=new_uuid(), project_id=project, network_id=n.id,
                          name=want(body, "name", str, where=where, default=""),
                          description=want(body, "description", str, where=where, default=""),
                          ip_version=version, cidr=str(net), gateway_ip=gateway, enable_dhcp=enable_dhcp,
                          allocation_pools=pools, dns_nameservers=dns, host_routes=routes, ipv6_ra_mode=ra,
                          ipv6_address_mode=addr, tags=check_tags(body.get("tags", [])))
            s.add(sn)
            _touch(n)
            await s.flush()
            if enable_dhcp:
                await self._ensure_dhcp_port(s, n, sn)
            view = self.subnet_view(sn)
        await self.nudge_agents()
        return view

    async def _ensure_dhcp_port(self, s, n: m.Network, sn: m.Subnet) -> None:
        """The network's DHCP server is a port of its own (device_owner network:dhcp) with an address per
        DHCP-enabled subnet, like neutron's."""
        port = await s.scalar(sa.select(m.Port).where(m.Port.network_id == n.id,
                                                      m.Port.device_owner == "network:dhcp"))
        if sn.ip_version == 6 and sn.ipv6_address_mode in ("slaac", "dhcpv6-stateless"):
            return
        if port is None:
            port = m.Port(id=new_uuid(), project_id=n.project_id, network_id=n.id, mac_address=ipam.random_mac(
                self.settings["base_mac"]), device_owner="network:dhcp", device_id=f"dhcp-{n.id}",
                status="ACTIVE", port_security_enabled=False, security_groups=[])
            s.add(port)
            await s.flush()
        used = set((await s.scalars(sa.select(m.IPAllocation.ip_address)
                                    .where(m.IPAllocation.subnet_id == sn.id))).all())
        have = await s.scalar(sa.select(m.IPAllocation.ip_address).where(m.IPAllocation.port_id == port.id,
                                                                           m.IPAllocation.subnet_id == sn.id))
        if have:
            return
        ip = ipam.pick_free(sn.allocation_pools, used)
        if ip is None:
            raise Conflict(f"No more IP addresses available on network {n.id} for the DHCP port.",
                           kind="IpAddressGenerationFailure")
        s.add(m.IPAllocation(subnet_id=sn.id, ip_address=ip, network_id=n.id, port_id=port.id))

    async def update_subnet(self, ctx: RequestContext, subnet_id: str, body: dict) -> dict:
        where = "subnet"
        for key in ("cidr", "ip_version", "network_id", "ipv6_ra_mode", "ipv6_address_mode", "subnetpool_id"):
            if key in body:
                raise BadRequest(f"Cannot update read-only attribute {key}", kind="InvalidInput")
        async with self.db.session() as s:
            sn = await self._subnet(s, ctx, subnet_id, write=True)
            net = ipaddress.ip_network(sn.cidr)
            if "name" in body:
                sn.name = want(body, "name", str, where=where)
            if "description" in body:
                sn.description = want(body, "description", str, where=where)
            if "gateway_ip" in body:
                g = body["gateway_ip"]
                if g is not None:
                    gip = ipam.parse_ip(g, "gateway_ip", sn.ip_version)
                    if gip not in net or gip == net.network_address:
                        raise BadRequest(f"Gateway IP {g} is not a valid address on subnet {net}.",
                                         kind="InvalidInput")
                    if ipam.in_pools(sn.allocation_pools, gip) and "allocation_pools" not in body:
                        raise Conflict(f"Gateway ip {g} conflicts with allocation pool.",
                                       kind="GatewayConflictWithAllocationPools")
                    g = str(gip)
                sn.gateway_ip = g
            if "allocation_pools" in body:
                sn.allocation_pools = ipam.validate_pools(net, body["allocation_pools"], sn.gateway_ip)
            if "dns_nameservers" in body:
                sn.dns_nameservers = self._dns(body["dns_nameservers"], sn.ip_version)
            if "host_routes" in body:
                sn.host_routes = self._routes(body["host_routes"], net)
            if "enable_dhcp" in body:
                sn.enable_dhcp = want_bool(body, "enable_dhcp", where=where)
                if sn.enable_dhcp:
                    await self._ensure_dhcp_port(s, await s.get(m.Network, sn.network_id), sn)
            _touch(sn)
            view = self.subnet_view(sn)
        await self.nudge_agents()
        return view

    async def delete_subnet(self, ctx: RequestContext, subnet_id: str) -> None:
        async with self.db.session() as s:
            sn = await self._subnet(s, ctx, subnet_id, write=True)
            rows = (await s.execute(sa.select(m.IPAllocation.port_id, m.Port.device_owner)
                                    .join(m.Port, m.Port.id == m.IPAllocation.port_id)
                                    .where(m.IPAllocation.subnet_id == sn.id))).all()
            busy = [pid for pid, owner in rows if owner != "network:dhcp"]
            if busy:
                raise Conflict(f"Unable to complete operation on subnet {sn.id}: One or more ports have an IP "
                               f"allocation from this subnet ({', '.join(busy[:5])}).", kind="SubnetInUse")
            await s.execute(sa.delete(m.IPAllocation).where(m.IPAllocation.subnet_id == sn.id))
            # A DHCP port left without addresses serves nothing: remove it.
            for pid, _ in rows:
                left = await s.scalar(sa.select(sa.func.count()).select_from(m.IPAllocation)
                                      .where(m.IPAllocation.port_id == pid))
                if not left:
                    await s.execute(sa.delete(m.Port).where(m.Port.id == pid))
            await s.delete(sn)
        await self.nudge_agents()

    # ---- IP availability -----------------------------------------------------------------

    async def ip_availability(self, ctx: RequestContext, network_id: str | None = None) -> list[dict]:
        """Per network and subnet: addresses in the allocation pools and how many are allocated."""
        if not ctx.is_admin:
            raise Forbidden("(rule:get_network_ip_availability) is disallowed by policy", kind="PolicyNotAuthorized")
        async with self.db.reader() as s:
            q = sa.select(m.Network).order_by(m.Network.created_at)
            if network_id is not None:
                q = q.where(m.Network.id == network_id)
            nets = (await s.scalars(q)).all()
            if network_id is not None and not nets:
                raise not_found("Network", network_id)
            used = dict((await s.execute(sa.select(m.IPAllocation.subnet_id, sa.func.count())
                                         .group_by(m.IPAllocation.subnet_id))).all())
            subnets = (await s.scalars(sa.select(m.Subnet).order_by(m.Subnet.created_at))).all()
        out = []
        for n in nets:
            rows = []
            for sn in subnets:
                if sn.network_id != n.id:
                    continue
                total = sum(int(ipaddress.ip_address(p["end"])) - int(ipaddress.ip_address(p["start"])) + 1
                            for p in sn.allocation_pools or [])
                rows.append({"subnet_id": sn.id, "subnet_name": sn.name, "cidr": sn.cidr,
                             "ip_version": sn.ip_version, "total_ips": total, "used_ips": used.get(sn.id, 0)})
            out.append({"network_id": n.id, "network_name": n.name, "project_id": n.project_id,
                        "tenant_id": n.project_id, "total_ips": sum(r["total_ips"] for r in rows),
                        "used_ips": sum(r["used_ips"] for r in rows), "subnet_ip_availability": rows})
        return out

    # ---- tags ----------------------------------------------------------------------------

    TAGGED = {"networks": m.Network, "subnets": m.Subnet, "ports": m.Port, "routers": m.Router,
              "floatingips": m.FloatingIP, "security-groups": m.SecurityGroup}

    async def _tagged(self, s, ctx: RequestContext, collection: str, rid: str, write: bool):
        getter = {"networks": self._network, "subnets": self._subnet, "ports": self._port,
                  "routers": self._router, "floatingips": self._floatingip,
                  "security-groups": self._security_group}[collection]
        return await getter(s, ctx, rid, write=write)

    async def get_tags(self, ctx: RequestContext, collection: str, rid: str) -> list[str]:
        async with self.db.reader() as s:
            return list((await self._tagged(s, ctx, collection, rid, False)).tags or [])

    async def set_tags(self, ctx: RequestContext, collection: str, rid: str, tags: list[str] | None,
                       add: str | None = None, remove: str | None = None) -> list[str]:
        async with self.db.session() as s:
            obj = await self._tagged(s, ctx, collection, rid, True)
            current = set(obj.tags or [])
            if tags is not None:
                current = set(check_tags(tags))
            if add is not None:
                current |= set(check_tags([add]))
            if remove is not None:
                if remove not in current:
                    from stratus.common.errors import NotFound

                    raise NotFound(f"Tag {remove} could not be found for resource {rid}.", kind="TagNotFound")
                current.discard(remove)
            obj.tags = sorted(current)
            _touch(obj)
            return obj.tags
