"""First-start data: the external network that routers and floating IPs use."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from stratus.common.context import RequestContext
from stratus.network import models as m

log = logging.getLogger("stratus.network")


async def ensure_external_network(manager, settings: dict) -> None:
    ext = settings["external_network"]
    if not ext["create"]:
        return
    async with manager.db.reader() as s:
        existing = await s.scalar(sa.select(m.Network).where(m.Network.name == ext["name"],
                                                             m.Network.external.is_(True)))
    if existing is not None:
        return
    # The cloud owns it; identity's admin project id is not needed (empty project = the cloud's).
    admin = RequestContext(user_id="bootstrap", project_id="", roles=["admin", "member", "reader"])
    net = await manager.create_network(admin, {
        "name": ext["name"], "router:external": True, "is_default": True, "shared": False,
        "provider:network_type": "flat", "provider:physical_network": ext["physical_network"]})
    await manager.create_subnet(admin, {
        "network_id": net["id"], "name": f"{ext['name']}-subnet", "ip_version": 4, "cidr": ext["cidr"],
        "gateway_ip": ext["gateway_ip"], "enable_dhcp": False,
        "allocation_pools": [{"start": ext["pool_start"], "end": ext["pool_end"]}]})
    log.info("created external network %s (%s) on physical network %s", ext["name"], ext["cidr"],
             ext["physical_network"])
