"""Routers, floating IPs and the auto-allocated topology (mixed into NetworkManager)."""

from __future__ import annotations

import ipaddress

import sqlalchemy as sa

from stratus.common.context import RequestContext
from stratus.common.db import new_uuid, utcnow
from stratus.common.errors import BadRequest, Conflict, NotFound
from stratus.network import ipam
from stratus.network import models as m
from stratus.network.common import check_tags, not_found, ts, want, want_bool


class L3Mixin:
    # ---- routers -------------------------------------------------------------------------

    async def router_view(self, s, r: m.Router) -> dict:
        gw = None
        if r.gw_network_id:
            ips = (await self._ips_of(s, [r.gw_port_id]))[r.gw_port_id] if r.gw_port_id else []
            gw = {"network_id": r.gw_network_id, "enable_snat": r.enable_snat,
                  "external_fixed_ips": [{"subnet_id": sid, "ip_address": ip} for sid, ip in ips]}
        return {"id": r.id, "name": r.name, "description": r.description, "project_id": r.project_id,
                "tenant_id": r.project_id, "admin_state_up": r.admin_state_up, "status": r.status,
                "external_gateway_info": gw, "routes": list(r.routes or []), "distributed": False, "ha": False,
                "availability_zones": [self.az], "availability_zone_hints": list(r.availability_zone_hints or []),
                "flavor_id": None, "tags": list(r.tags or []), "created_at": ts(r.created_at),
                "updated_at": ts(r.updated_at), "revision_number": r.revision_number}

    async def _router(self, s, ctx: RequestContext, router_id: str, *, write: bool = False) -> m.Router:
        r = await s.get(m.Router, router_id) if isinstance(router_id, str) else None
        if r is None or (not ctx.is_admin and r.project_id != ctx.project_id):
            raise not_found("Router", router_id)
        return r

    async def list_routers(self, ctx: RequestContext) -> list[dict]:
        async with self.db.reader() as s:
            q = sa.select(m.Router)
            if not ctx.is_admin:
                q = q.where(m.Router.project_id == ctx.project_id)
            return [await self.router_view(s, r) for r in (await s.scalars(q.order_by(m.Router.created_at))).all()]

    async def get_router(self, ctx: RequestContext, router_id: str) -> dict:
        async with self.db.reader() as s:
            return await self.router_view(s, await self._router(s, ctx, router_id))

    async def _set_gateway(self, s, ctx: RequestContext, r: m.Router, info) -> None:
        if info is not None and not isinstance(info, dict):
            raise BadRequest("Invalid input for external_gateway_info: an object or null.", kind="InvalidInput")
        if not info:
            if r.gw_port_id:
                fips = await s.scalar(sa.select(sa.func.count()).select_from(m.FloatingIP)
                                      .where(m.FloatingIP.router_id == r.id))
                if fips:
                    raise Conflict(f"Gateway cannot be updated for router {r.id}, since a gateway to external "
                                   f"network {r.gw_network_id} is required by one or more floating IPs.",
                                   kind="RouterExternalGatewayInUseByFloatingIp")
                await s.execute(sa.delete(m.IPAllocation).where(m.IPAllocation.port_id == r.gw_port_id))
                await s.execute(sa.delete(m.Port).where(m.Port.id == r.gw_port_id))
            r.gw_network_id = r.gw_port_id = None
            return
        net_id = info.get("network_id")
        if not isinstance(net_id, str):
            raise BadRequest("Invalid input for external_gateway_info: network_id is required.", kind="InvalidInput")
        n = await self._network(s, ctx, net_id)
        if not n.external:
            raise BadRequest(f"Bad router request: Network {n.id} is not an external network.", kind="BadRequest")
        snat = want_bool(info, "enable_snat", where="external_gateway_info", default=True)
        if r.gw_network_id == n.id and "external_fixed_ips" not in info:
            r.enable_snat = snat
            return
        if r.gw_port_id:
            await self._set_gateway(s, ctx, r, None)
        port = m.Port(id=new_uuid(), project_id="", network_id=n.id, mac_address=ipam.random_mac(
            self.settings["base_mac"]), device_owner="network:router_gateway", device_id=r.id, status="ACTIVE",
            port_security_enabled=False, security_groups=[])
        s.add(port)
        await s.flush()
        await self._allocate(s, n, port, await self._requested_ips(s, n, info.get("external_fixed_ips")))
        if not (await self._ips_of(s, [port.id]))[port.id]:
            raise BadRequest(f"Bad router request: No subnets on external network {n.id}.", kind="BadRequest")
        r.gw_network_id, r.gw_port_id, r.enable_snat = n.id, port.id, snat

    def _check_routes(self, routes) -> list[dict]:
        if not isinstance(routes, list):
            raise BadRequest("Invalid input for routes: a list of {destination, nexthop}.", kind="InvalidInput")
        out = []
        for route in routes:
            if not isinstance(route, dict) or set(route) != {"destination", "nexthop"}:
                raise BadRequest("Invalid input for routes: each route is {destination, nexthop}.", kind="InvalidInput")
            try:
                dest = ipaddress.ip_network(route["destination"])
                hop = ipaddress.ip_address(route["nexthop"])
            except (ValueError, TypeError):
                raise BadRequest(f"Invalid route {route}.", kind="InvalidInput") from None
            out.append({"destination": str(dest), "nexthop": str(hop)})
        return out

    async def create_router(self, ctx: RequestContext, body: dict) -> dict:
        where = "router"
        project = self.owner(ctx, body, where)
        for flag in ("distributed", "ha"):
            if want_bool(body, flag, where=where, default=False):
                raise BadRequest(f"Routers with {flag}=True are not supported.", kind="InvalidInput")
        async with self.db.session() as s:
            await self.check_quota(s, project, "router")
            r = m.Router(id=new_uuid(), project_id=project, name=want(body, "name", str, where=where, default=""),
                         description=want(body, "description", str, where=where, default=""),
                         admin_state_up=want_bool(body, "admin_state_up", where=where, default=True),
                         availability_zone_hints=want(body, "availability_zone_hints", list, where=where, default=[]),
                         tags=check_tags(body.get("tags", [])))
            s.add(r)
            await s.flush()
            if body.get("external_gateway_info"):
                await self._set_gateway(s, ctx, r, body["external_gateway_info"])
            view = await self.router_view(s, r)
        await self.nudge_agents()
        return view

    async def update_router(self, ctx: RequestContext, router_id: str, body: dict) -> dict:
        where = "router"
        async with self.db.session() as s:
            r = await self._router(s, ctx, router_id, write=True)
            for key in ("name", "description"):
                if key in body:
                    setattr(r, key, want(body, key, str, where=where))
            if "admin_state_up" in body:
                r.admin_state_up = want_bool(body, "admin_state_up", where=where)
            if "external_gateway_info" in body:
                await self._set_gateway(s, ctx, r, body["external_gateway_info"])
            if "routes" in body:
                r.routes = self._check_routes(body["routes"] or [])
            r.updated_at = utcnow()
            r.revision_number += 1
            view = await self.router_view(s, r)
        await self.nudge_agents()
        return view

    async def change_routes(self, ctx: RequestContext, router_id: str, body: dict, add: bool) -> dict:
        routes = self._check_routes(body.get("routes", []))
        async with self.db.session() as s:
            r = await self._router(s, ctx, router_id, write=True)
            current = list(r.routes or [])
            if add:
                current += [x for x in routes if x not in current]
            else:
                current = [x for x in current if x not in routes]
            r.routes = current
            r.revision_number += 1
            view = await self.router_view(s, r)
        await self.nudge_agents()
        return view

    async def delete_router(self, ctx: RequestContext, router_id: str) -> None:
        async with self.db.session() as s:
            r = await self._router(s, ctx, router_id, write=True)
            ifaces = (await s.scalars(sa.select(m.Port.id).where(m.Port.device_id == r.id,
                                                                 m.Port.device_owner == "network:router_interface"))).all()
            if ifaces:
                raise Conflict(f"Router {r.id} still has ports", kind="RouterInUse")
            await self._set_gateway(s, ctx, r, None)
            await s.execute(sa.delete(m.AutoAllocatedTopology).where(m.AutoAllocatedTopology.router_id == r.id))
            await s.delete(r)
        await self.nudge_agents()

    async def add_interface(self, ctx: RequestContext, router_id: str, body: dict) -> dict:
        if not isinstance(body, dict) or bool(body.get("subnet_id")) == bool(body.get("port_id")):
            raise BadRequest("Bad router request: Either subnet_id or port_id must be specified (not both).",
                             kind="BadRequest")
        async with self.db.session() as s:
            r = await self._router(s, ctx, router_id, write=True)
            existing = (await s.scalars(sa.select(m.Port).where(m.Port.device_id == r.id, m.Port.device_owner ==
                                                                "network:router_interface"))).all()
            existing_ips = await self._ips_of(s, [p.id for p in existing])
            attached_subnets = {sid for ips in existing_ips.values() for sid, _ in ips}
            if body.get("port_id"):
                port = await self._port(s, ctx, body["port_id"], write=True)
                if port.device_id or port.device_owner:
                    raise Conflict(f"Port {port.id} is in use by {port.device_owner or 'another device'}.",
                                   kind="PortInUse")
                ips = (await self._ips_of(s, [port.id]))[port.id]
                if not ips:
                    raise BadRequest(f"Bad router request: Router port must have at least one fixed IP.",
                                     kind="BadRequest")
                subnet = await s.get(m.Subnet, ips[0][0])
                port.device_owner, port.device_id = "network:router_interface", r.id
                port.security_groups, port.status = [], "ACTIVE"
            else:
                subnet = await self._subnet(s, ctx, body["subnet_id"])
                n = await s.get(m.Network, subnet.network_id)
                if not ctx.is_admin and n.project_id != ctx.project_id and not n.shared:
                    raise not_found("Subnet", subnet.id)
                if not subnet.gateway_ip:
                    raise BadRequest(f"Bad router request: Subnet {subnet.id} does not have a gateway IP.",
                                     kind="BadRequest")
                if subnet.id in attached_subnets:
                    raise BadRequest(f"Bad router request: Router already has a port on subnet {subnet.id}.",
                                     kind="BadRequest")
                port = m.Port(id=new_uuid(), project_id=r.project_id, network_id=n.id,
                              mac_address=ipam.random_mac(self.settings["base_mac"]),
                              device_owner="network:router_interface", device_id=r.id, status="ACTIVE",
                              port_security_enabled=False, security_groups=[])
                s.add(port)
                await s.flush()
                await self._allocate(s, n, port, [(subnet, subnet.gateway_ip)])
            new_net = ipaddress.ip_network(subnet.cidr)
            for sid in attached_subnets:
                other = await s.get(m.Subnet, sid)
                if other and other.id != subnet.id and ipaddress.ip_network(other.cidr).overlaps(new_net):
                    raise BadRequest(f"Bad router request: Cidr {subnet.cidr} of subnet {subnet.id} overlaps with "
                                     f"cidr {other.cidr} of subnet {other.id}.", kind="BadRequest")
            r.revision_number += 1
            out = {"id": r.id, "tenant_id": r.project_id, "project_id": r.project_id, "port_id": port.id,
                   "network_id": port.network_id, "subnet_id": subnet.id, "subnet_ids": [subnet.id]}
        await self.nudge_agents()
        return out

    async def remove_interface(self, ctx: RequestContext, router_id: str, body: dict) -> dict:
        if not isinstance(body, dict) or not (body.get("subnet_id") or body.get("port_id")):
            raise BadRequest("Bad router request: Either subnet_id or port_id must be specified.", kind="BadRequest")
        async with self.db.session() as s:
            r = await self._router(s, ctx, router_id, write=True)
            ports = (await s.scalars(sa.select(m.Port).where(m.Port.device_id == r.id, m.Port.device_owner ==
                                                             "network:router_interface"))).all()
            ips = await self._ips_of(s, [p.id for p in ports])
            port = None
            if body.get("port_id"):
                port = next((p for p in ports if p.id == body["port_id"]), None)
                if port is None:
                    raise NotFound(f"Router {r.id} does not have an interface with id {body['port_id']}",
                                   kind="RouterInterfaceNotFound")
                if body.get("subnet_id") and body["subnet_id"] not in {sid for sid, _ in ips[port.id]}:
                    raise Conflict(f"Subnet {body['subnet_id']} is not on port {port.id}.", kind="SubnetMismatchForPort")
            else:
                port = next((p for p in ports if body["subnet_id"] in {sid for sid, _ in ips[p.id]}), None)
                if port is None:
                    raise NotFound(f"Router {r.id} has no interface on subnet {body['subnet_id']}",
                                   kind="RouterInterfaceNotFoundForSubnet")
            subnet_ids = [sid for sid, _ in ips[port.id]]
            cidrs = [ipaddress.ip_network((await s.get(m.Subnet, sid)).cidr) for sid in subnet_ids]
            for fip in (await s.scalars(sa.select(m.FloatingIP).where(m.FloatingIP.router_id == r.id))).all():
                if fip.fixed_ip_address and any(ipaddress.ip_address(fip.fixed_ip_address) in c for c in cidrs):
                    raise Conflict(f"Router interface for subnet {subnet_ids[0]} on router {r.id} cannot be deleted, "
                                   f"as it is required by one or more floating IPs.",
                                   kind="RouterInterfaceInUseByFloatingIP")
            await s.execute(sa.delete(m.IPAllocation).where(m.IPAllocation.port_id == port.id))
            await s.delete(port)
            r.revision_number += 1
            out = {"id": r.id, "tenant_id": r.project_id, "project_id": r.project_id, "port_id": port.id,
                   "network_id": port.network_id, "subnet_id": subnet_ids[0] if subnet_ids else None,
                   "subnet_ids": subnet_ids}
        await self.nudge_agents()
        return out

    # ---- floating IPs --------------------------------------------------------------------

    async def fip_view(self, s, f: m.FloatingIP) -> dict:
        details = None
        if f.port_id:
            p = await s.get(m.Port, f.port_id)
            if p is not None:
                details = {"name": p.name, "network_id": p.network_id, "mac_address": p.mac_address,
                           "admin_state_up": p.admin_state_up, "status": p.status, "device_id": p.device_id,
                           "device_owner": p.device_owner}
        return {"id": f.id, "project_id": f.project_id, "tenant_id": f.project_id, "description": f.description,
                "floating_ip_address": f.floating_ip_address, "floating_network_id": f.floating_network_id,
                "router_id": f.router_id, "port_id": f.port_id, "fixed_ip_address": f.fixed_ip_address,
                "status": f.status, "port_details": details, "dns_name": f.dns_name, "dns_domain": f.dns_domain,
                "qos_policy_id": None, "port_forwardings": [], "tags": list(f.tags or []),
                "created_at": ts(f.created_at), "updated_at": ts(f.updated_at), "revision_number": f.revision_number}

    async def _floatingip(self, s, ctx: RequestContext, fip_id: str, *, write: bool = False) -> m.FloatingIP:
        f = await s.get(m.FloatingIP, fip_id) if isinstance(fip_id, str) else None
        if f is None or (not ctx.is_admin and f.project_id != ctx.project_id):
            raise not_found("FloatingIP", fip_id)
        return f

    async def list_floatingips(self, ctx: RequestContext) -> list[dict]:
        async with self.db.reader() as s:
            q = sa.select(m.FloatingIP)
            if not ctx.is_admin:
                q = q.where(m.FloatingIP.project_id == ctx.project_id)
            return [await self.fip_view(s, f) for f in (await s.scalars(q.order_by(m.FloatingIP.created_at))).all()]

    async def get_floatingip(self, ctx: RequestContext, fip_id: str) -> dict:
        async with self.db.reader() as s:
            return await self.fip_view(s, await self._floatingip(s, ctx, fip_id))

    async def _associate(self, s, ctx: RequestContext, f: m.FloatingIP, port_id, fixed_ip) -> None:
        if port_id is None:
            f.port_id = f.fixed_ip_address = f.router_id = None
            f.status = "DOWN"
            return
        port = await self._port(s, ctx, port_id)
        if port.project_id != f.project_id and not ctx.is_admin:
            raise not_found("Port", port_id)
        v4 = [(sid, ip) for sid, ip in (await self._ips_of(s, [port.id]))[port.id]
              if ipaddress.ip_address(ip).version == 4]
        if fixed_ip is not None:
            match = [x for x in v4 if x[1] == fixed_ip]
            if not match:
                raise BadRequest(f"Bad floatingip request: Port {port.id} does not have fixed ip {fixed_ip}.",
                                 kind="BadRequest")
        elif len(v4) > 1:
            raise BadRequest(f"Bad floatingip request: Port {port.id} has multiple fixed IPv4 addresses. Must provide "
                             f"a specific IPv4 address when assigning a floating IP.", kind="BadRequest")
        elif not v4:
            raise BadRequest(f"Bad floatingip request: Port {port.id} does not have any IPv4 address.",
                             kind="BadRequest")
        else:
            match = v4
        subnet_id, fixed = match[0]
        # The router that both reaches the floating network and has an interface on the port's subnet.
        router_id = None
        routers = (await s.scalars(sa.select(m.Router).where(m.Router.gw_network_id == f.floating_network_id))).all()
        for r in routers:
            iface = await s.scalar(sa.select(m.IPAllocation.port_id).join(m.Port, m.Port.id == m.IPAllocation.port_id)
                                   .where(m.Port.device_id == r.id, m.Port.device_owner == "network:router_interface",
                                          m.IPAllocation.subnet_id == subnet_id))
            if iface:
                router_id = r.id
                break
        if router_id is None:
            raise NotFound(f"External network {f.floating_network_id} is not reachable from subnet {subnet_id}. "
                           f"Therefore, cannot associate Port {port.id} with a Floating IP.",
                           kind="ExternalGatewayForFloatingIPNotFound")
        other = await s.scalar(sa.select(m.FloatingIP.id).where(m.FloatingIP.port_id == port.id,
                                                                 m.FloatingIP.fixed_ip_address == fixed,
                                                                 m.FloatingIP.id != f.id))
        if other:
            raise Conflict(f"Cannot associate floating IP {f.floating_ip_address} ({f.id}) with port {port.id} using "
                           f"fixed IP {fixed}, as that fixed IP already has a floating IP on external network "
                           f"{f.floating_network_id}.", kind="FloatingIPPortAlreadyAssociated")
        f.port_id, f.fixed_ip_address, f.router_id, f.status = port.id, fixed, router_id, "ACTIVE"

    async def create_floatingip(self, ctx: RequestContext, body: dict) -> dict:
        where = "floatingip"
        net_id = want(body, "floating_network_id", str, where=where, required=True)
        project = self.owner(ctx, body, where)
        async with self.db.session() as s:
            n = await self._network(s, ctx, net_id)
            if not n.external:
                raise BadRequest(f"Bad floatingip request: Network {n.id} is not a valid external network.",
                                 kind="BadRequest")
            await self.check_quota(s, project, "floatingip")
            fip_id = new_uuid()
            port = m.Port(id=new_uuid(), project_id="", network_id=n.id, mac_address=ipam.random_mac(
                self.settings["base_mac"]), device_owner="network:floatingip", device_id=fip_id, status="N/A",
                port_security_enabled=False, security_groups=[])
            s.add(port)
            await s.flush()
            wanted = None
            for key in ("floating_ip_address", "subnet_id"):
                if body.get(key) is not None and not isinstance(body[key], str):
                    raise BadRequest(f"Invalid input for {key}: {body[key]!r} is not a string.", kind="InvalidInput")
            if body.get("floating_ip_address") or body.get("subnet_id"):
                entry = {}
                if body.get("floating_ip_address"):
                    entry["ip_address"] = body["floating_ip_address"]
                if body.get("subnet_id"):
                    entry["subnet_id"] = body["subnet_id"]
                wanted = [entry]
            requested = await self._requested_ips(s, n, wanted)
            requested = [x for x in requested if x[0].ip_version == 4][:1]
            if not requested:
                raise BadRequest(f"Bad floatingip request: Network {n.id} has no IPv4 subnet.", kind="BadRequest")
            await self._allocate(s, n, port, requested)
            address = (await self._ips_of(s, [port.id]))[port.id][0][1]
            f = m.FloatingIP(id=fip_id, project_id=project, floating_network_id=n.id, floating_port_id=port.id,
                             floating_ip_address=address,
                             description=want(body, "description", str, where=where, default=""),
                             tags=check_tags(body.get("tags", [])))
            s.add(f)
            await s.flush()
            if body.get("port_id"):
                await self._associate(s, ctx, f, body["port_id"], body.get("fixed_ip_address"))
            view = await self.fip_view(s, f)
        await self.nudge_agents()
        return view

    async def update_floatingip(self, ctx: RequestContext, fip_id: str, body: dict) -> dict:
        async with self.db.session() as s:
            f = await self._floatingip(s, ctx, fip_id, write=True)
            if "description" in body:
                f.description = want(body, "description", str, where="floatingip")
            if "port_id" in body:
                await self._associate(s, ctx, f, body["port_id"], body.get("fixed_ip_address"))
            f.updated_at = utcnow()
            f.revision_number += 1
            view = await self.fip_view(s, f)
        await self.nudge_agents()
        return view

    async def delete_floatingip(self, ctx: RequestContext, fip_id: str) -> None:
        async with self.db.session() as s:
            f = await self._floatingip(s, ctx, fip_id, write=True)
            await s.execute(sa.delete(m.IPAllocation).where(m.IPAllocation.port_id == f.floating_port_id))
            await s.execute(sa.delete(m.Port).where(m.Port.id == f.floating_port_id))
            await s.delete(f)
        await self.nudge_agents()

    # ---- auto-allocated topology ---------------------------------------------------------

    async def get_auto_topology(self, ctx: RequestContext, project_id: str, dry_run: bool) -> dict:
        if project_id != ctx.project_id and not ctx.is_admin:
            raise NotFound(f"Project {project_id} could not be found.", kind="NotFound")
        async with self.db.reader() as s:
            existing = await s.get(m.AutoAllocatedTopology, project_id)
            ext = await s.scalar(sa.select(m.Network).where(m.Network.external.is_(True), m.Network.is_default.is_(True)))
        if dry_run:
            if ext is None:
                raise Conflict("Deployment error: No default router:external network.",
                               kind="AutoAllocationFailure")
            return {"dry-run": "pass"}
        if existing is not None:
            return {"id": existing.network_id, "project_id": project_id, "tenant_id": project_id}
        if ext is None:
            raise Conflict("Deployment error: No default router:external network. An administrator must mark an "
                           "external network as default (is_default) for auto-allocation.",
                           kind="AutoAllocationFailure")
        owner = RequestContext(user_id=ctx.user_id, project_id=project_id, roles=["admin", "member", "reader"])
        net = await self.create_network(owner, {"name": "auto_allocated_network", "project_id": project_id})
        subnet = await self.create_subnet(owner, {"network_id": net["id"], "ip_version": 4,
                                                  "cidr": self.settings["auto_allocate_cidr"],
                                                  "name": "auto_allocated_subnet_v4", "project_id": project_id})
        router = await self.create_router(owner, {"name": "auto_allocated_router", "project_id": project_id,
                                                  "external_gateway_info": {"network_id": ext.id}})
        await self.add_interface(owner, router["id"], {"subnet_id": subnet["id"]})
        try:
            async with self.db.session() as s:
                s.add(m.AutoAllocatedTopology(project_id=project_id, network_id=net["id"], router_id=router["id"]))
        except Exception:
            # A concurrent request won: undo ours and return theirs.
            await self.remove_interface(owner, router["id"], {"subnet_id": subnet["id"]})
            await self.delete_router(owner, router["id"])
            await self.delete_network(owner, net["id"])
            async with self.db.reader() as s:
                existing = await s.get(m.AutoAllocatedTopology, project_id)
            return {"id": existing.network_id, "project_id": project_id, "tenant_id": project_id}
        return {"id": net["id"], "project_id": project_id, "tenant_id": project_id}

    async def delete_auto_topology(self, ctx: RequestContext, project_id: str) -> None:
        if project_id != ctx.project_id and not ctx.is_admin:
            raise NotFound(f"Project {project_id} could not be found.", kind="NotFound")
        async with self.db.reader() as s:
            existing = await s.get(m.AutoAllocatedTopology, project_id)
        if existing is None:
            raise NotFound(f"No auto-allocated topology for project {project_id}.", kind="NotFound")
        owner = RequestContext(user_id=ctx.user_id, project_id=project_id, roles=["admin", "member", "reader"])
        if existing.router_id:
            async with self.db.reader() as s:
                subnets = (await s.scalars(sa.select(m.Subnet.id).where(m.Subnet.network_id == existing.network_id)))
                subnets = subnets.all()
            for sid in subnets:
                try:
                    await self.remove_interface(owner, existing.router_id, {"subnet_id": sid})
                except NotFound:
                    pass
            await self.delete_router(owner, existing.router_id)
        await self.delete_network(owner, existing.network_id)
