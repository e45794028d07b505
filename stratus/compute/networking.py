"""Server networking through the network service's public API (Neutron contract).

The API validates what a create asks for (``auto``, network ids, port ids) before accepting it;
the agent of the chosen host creates or binds the ports (device_id = server id, device_owner =
``compute:<zone>``, ``binding:host_id`` = host) and turns them into :class:`Vif` objects for the
driver; deleting a server deletes the ports compute created and unbinds the ones the user gave.
"""

from __future__ import annotations

import logging

from stratus.common.errors import BadRequest, Conflict, ServiceUnavailable
from stratus.compute.drivers.base import DriverError, Vif

log = logging.getLogger("stratus.compute.networking")

ABSENT = ("the network service is not available in this cloud, so servers can only be created with "
          "networks 'none'")


class NetworkAPI:
    def __init__(self, runtime_client):
        # runtime.client("compute"): requests with the compute service user's (admin) token.
        self.client = runtime_client

    async def available(self) -> bool:
        try:
            await self.client.credentials.endpoint("network")
            return True
        except LookupError:
            return False

    async def _get(self, path: str, error=ServiceUnavailable) -> dict:
        resp = await self.client.request("network", "GET", path)
        if resp.status_code != 200:
            raise error(f"The network service answered {resp.status_code} for GET {path}")
        return resp.json()

    # -- API side --------------------------------------------------------------------------------

    async def validate(self, project_id: str, requested) -> list[dict]:
        """Resolve the create request's networks into [{network_id} | {port_id}] entries."""
        if requested == "none" or requested is None:
            return []
        if not await self.available():
            raise BadRequest(ABSENT)
        if requested == "auto":
            return [{"network_id": await self.auto_network(project_id)}]
        out = []
        for item in requested:
            if item.get("port"):
                port = (await self._get(f"/v2.0/ports/{item['port']}", error=BadRequest)).get("port", {})
                if port.get("project_id", port.get("tenant_id")) not in (project_id, None):
                    raise BadRequest(f"Port {item['port']} not found.")
                if port.get("device_id"):
                    raise Conflict(f"Port {item['port']} is still in use.")
                out.append({"port_id": item["port"], "network_id": port.get("network_id")})
            else:
                net_id = item["uuid"]
                resp = await self.client.request("network", "GET", f"/v2.0/networks/{net_id}")
                net = resp.json().get("network") if resp.status_code == 200 else None
                if net is None or not (net.get("shared") or net.get("project_id", net.get("tenant_id")) == project_id
                                       or net.get("router:external")):
                    raise BadRequest(f"Network {net_id} could not be found.")
                entry = {"network_id": net_id}
                if item.get("fixed_ip"):
                    entry["fixed_ip"] = item["fixed_ip"]
                out.append(entry)
        return out

    async def auto_network(self, project_id: str) -> str:
        own = (await self._get(f"/v2.0/networks?project_id={project_id}&shared=False")).get("networks", [])
        shared = (await self._get("/v2.0/networks?shared=True")).get("networks", [])
        candidates = {n["id"]: n for n in [*own, *shared]
                      if n.get("admin_state_up", True) and not n.get("router:external")}
        if len(candidates) == 1:
            return next(iter(candidates))
        if len(candidates) > 1:
            raise Conflict("Multiple possible networks found, use a Network ID to be more specific.")
        resp = await self.client.request("network", "GET", f"/v2.0/auto-allocated-topology/{project_id}")
        if resp.status_code == 200:
            return resp.json()["auto_allocated_topology"]["id"]
        raise BadRequest("Unable to automatically allocate a network for project "
                         f"{project_id}: no network is available and auto-allocation failed ({resp.status_code})")

    # -- agent side ------------------------------------------------------------------------------

    async def find_security_group(self, project_id: str, name_or_id: str) -> dict:
        """A security group of the project, by id or by name (404 when the project has none such)."""
        from stratus.common.errors import NotFound

        if not await self.available():
            raise BadRequest(ABSENT)
        resp = await self.client.request("network", "GET", f"/v2.0/security-groups/{name_or_id}")
        if resp.status_code == 200:
            group = resp.json()["security_group"]
            if group.get("project_id", group.get("tenant_id")) == project_id:
                return group
        resp = await self.client.request("network", "GET", "/v2.0/security-groups",
                                         params={"name": name_or_id, "project_id": project_id})
        groups = resp.json().get("security_groups", []) if resp.status_code == 200 else []
        if not groups and name_or_id == "default":
            # Neutron makes a project's default group on first use; listing as the project does that.
            resp = await self.client.request("network", "GET", "/v2.0/security-groups",
                                             params={"name": "default", "project_id": project_id})
            groups = resp.json().get("security_groups", []) if resp.status_code == 200 else []
        if len(groups) > 1:
            raise Conflict(f"Multiple security groups named {name_or_id!r}; use the id.")
        if not groups:
            raise NotFound(f"Security group {name_or_id} not found.")
        return groups[0]

    async def set_server_group(self, server_id: str, group_id: str, *, add: bool) -> int:
        """Add (or remove) a security group on every port of the server; returns ports changed."""
        resp = await self.client.request("network", "GET", "/v2.0/ports", params={"device_id": server_id})
        if resp.status_code != 200:
            raise ServiceUnavailable(f"The network service answered {resp.status_code} listing the server's ports")
        changed = 0
        for port in resp.json().get("ports", []):
            groups = list(port.get("security_groups") or [])
            if add and group_id not in groups:
                groups.append(group_id)
            elif not add and group_id in groups:
                groups.remove(group_id)
            else:
                continue
            r = await self.client.request("network", "PUT", f"/v2.0/ports/{port['id']}",
                                          json={"port": {"security_groups": groups}})
            if r.status_code != 200:
                raise Conflict(f"The network service refused the security groups of port {port['id']}: "
                               f"{r.text[:200]}")
            changed += 1
        return changed

    async def allocate(self, server_id: str, project_id: str, host: str, zone: str, requested: list[dict],
                       security_groups: list[str]) -> tuple[list[dict], list[Vif]]:
        network_info, vifs = [], []
        for entry in requested:
            binding = {"device_id": server_id, "device_owner": f"compute:{zone}", "binding:host_id": host}
            if entry.get("port_id"):
                resp = await self.client.request("network", "PUT", f"/v2.0/ports/{entry['port_id']}",
                                                 json={"port": binding})
                created = False
            else:
                body = {"network_id": entry["network_id"], "project_id": project_id, **binding}
                if entry.get("fixed_ip"):
                    body["fixed_ips"] = [{"ip_address": entry["fixed_ip"]}]
                if security_groups:
                    body["security_groups"] = security_groups
                resp = await self.client.request("network", "POST", "/v2.0/ports", json={"port": body})
                created = True
            if resp.status_code not in (200, 201):
                raise DriverError(f"the network service refused the port for network "
                                  f"{entry.get('network_id') or entry.get('port_id')}: {resp.status_code} "
                                  f"{resp.text[:200]}")
            port = resp.json()["port"]
            if port.get("binding:vif_type") == "binding_failed":
                network_info.append({"port_id": port["id"], "created": created})
                await self.deallocate(network_info)
                raise DriverError(f"binding port {port['id']} to host {host} failed: the network service has no "
                                  f"agent on {host}")
            info, vif = await self._describe(port, created)
            network_info.append(info)
            vifs.append(vif)
        return network_info, vifs

    async def _describe(self, port: dict, created: bool) -> tuple[dict, Vif]:
        details = port.get("binding:vif_details") or {}
        net = (await self._get(f"/v2.0/networks/{port['network_id']}")).get("network", {})
        fixed = []
        for ip in port.get("fixed_ips") or []:
            subnet = (await self._get(f"/v2.0/subnets/{ip['subnet_id']}")).get("subnet", {})
            fixed.append({"ip_address": ip["ip_address"], "subnet_id": ip["subnet_id"], "cidr": subnet.get("cidr"),
                          "gateway_ip": subnet.get("gateway_ip"), "version": subnet.get("ip_version", 4),
                          "dns_nameservers": subnet.get("dns_nameservers") or [],
                          "host_routes": subnet.get("host_routes") or []})
        vif = Vif(port_id=port["id"], mac=port.get("mac_address", ""), network_id=port["network_id"],
                  vif_type=port.get("binding:vif_type") or "bridge", bridge_name=details.get("bridge_name"),
                  tap_name=details.get("tap_name") or f"tap{port['id'][:11]}", mtu=net.get("mtu") or 1500,
                  fixed_ips=fixed)
        info = {"port_id": port["id"], "network_id": port["network_id"], "network_name": net.get("name") or
                port["network_id"], "mac": vif.mac, "created": created, "mtu": vif.mtu, "subnets": fixed,
                "ips": [{"addr": f["ip_address"], "version": f["version"]} for f in fixed]}
        return info, vif

    async def vifs_for(self, network_info: list[dict]) -> list[Vif]:
        out = []
        for info in network_info:
            resp = await self.client.request("network", "GET", f"/v2.0/ports/{info['port_id']}")
            if resp.status_code == 200:
                out.append((await self._describe(resp.json()["port"], info.get("created", True)))[1])
        return out

    async def deallocate(self, network_info: list[dict]) -> None:
        for info in network_info or []:
            try:
                if info.get("created", True):
                    resp = await self.client.request("network", "DELETE", f"/v2.0/ports/{info['port_id']}")
                else:
                    resp = await self.client.request(
                        "network", "PUT", f"/v2.0/ports/{info['port_id']}",
                        json={"port": {"device_id": "", "device_owner": "", "binding:host_id": ""}})
                if resp.status_code not in (200, 204, 404):
                    log.warning("releasing port %s: network service answered %s", info["port_id"], resp.status_code)
            except Exception as exc:  # a dead network service must not keep a server from being deleted
                log.warning("releasing port %s failed: %s", info.get("port_id"), exc)
