"""Networking tables.

Lists that clients only read back (allocation pools, DNS servers, routes, tags, security group ids of a
port) are JSON columns; anything that must be unique or looked up under concurrency has its own
table with a constraint (IP allocations, segments, MAC addresses, the one default security group
per project).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from stratus.common.db import make_base, utcnow

Base = make_base()

ID = sa.String(64)


class Standard:
    """Attributes every neutron resource carries."""

    project_id: Mapped[str] = mapped_column(ID, default="", index=True)
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    description: Mapped[str] = mapped_column(sa.String(1024), default="")
    tags: Mapped[list] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revision_number: Mapped[int] = mapped_column(default=0)


class Network(Standard, Base):
    __tablename__ = "networks"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    admin_state_up: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="ACTIVE")
    shared: Mapped[bool] = mapped_column(default=False)
    external: Mapped[bool] = mapped_column(default=False)
    is_default: Mapped[bool] = mapped_column(default=False)
    mtu: Mapped[int] = mapped_column(default=1500)
    port_security_enabled: Mapped[bool] = mapped_column(default=True)
    network_type: Mapped[str] = mapped_column(sa.String(16), default="vxlan")
    physical_network: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    segmentation_id: Mapped[int | None] = mapped_column(nullable=True)
    # "vxlan:1001", "vlan:physnet1:100", "flat:public": two networks never share a segment.
    segment_key: Mapped[str] = mapped_column(sa.String(128), unique=True)
    availability_zone_hints: Mapped[list] = mapped_column(default=list)
    dns_domain: Mapped[str] = mapped_column(sa.String(255), default="")


class Subnet(Standard, Base):
    __tablename__ = "subnets"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    network_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("networks.id"), index=True)
    ip_version: Mapped[int] = mapped_column(default=4)
    cidr: Mapped[str] = mapped_column(sa.String(64))
    gateway_ip: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    enable_dhcp: Mapped[bool] = mapped_column(default=True)
    allocation_pools: Mapped[list] = mapped_column(default=list)
    dns_nameservers: Mapped[list] = mapped_column(default=list)
    host_routes: Mapped[list] = mapped_column(default=list)
    ipv6_ra_mode: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    ipv6_address_mode: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)


class Port(Standard, Base):
    __tablename__ = "ports"
    __table_args__ = (sa.UniqueConstraint("network_id", "mac_address"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    network_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("networks.id"), index=True)
    mac_address: Mapped[str] = mapped_column(sa.String(32))
    admin_state_up: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="DOWN")
    device_id: Mapped[str] = mapped_column(sa.String(255), default="", index=True)
    device_owner: Mapped[str] = mapped_column(sa.String(255), default="")
    port_security_enabled: Mapped[bool] = mapped_column(default=True)
    security_groups: Mapped[list] = mapped_column(default=list)
    allowed_address_pairs: Mapped[list] = mapped_column(default=list)
    extra_dhcp_opts: Mapped[list] = mapped_column(default=list)
    binding_host_id: Mapped[str] = mapped_column(sa.String(255), default="", index=True)
    binding_profile: Mapped[dict] = mapped_column(default=dict)
    binding_vnic_type: Mapped[str] = mapped_column(sa.String(32), default="normal")
    binding_vif_type: Mapped[str] = mapped_column(sa.String(32), default="unbound")
    binding_vif_details: Mapped[dict] = mapped_column(default=dict)
    dns_name: Mapped[str] = mapped_column(sa.String(255), default="")


class IPAllocation(Base):
    """One address on one subnet: the primary key is what makes concurrent allocations safe."""

    __tablename__ = "ip_allocations"
    subnet_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("subnets.id"), primary_key=True)
    ip_address: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    network_id: Mapped[str] = mapped_column(ID, index=True)
    port_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("ports.id", ondelete="CASCADE"), index=True)


class Router(Standard, Base):
    __tablename__ = "routers"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    admin_state_up: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="ACTIVE")
    gw_network_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    gw_port_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    enable_snat: Mapped[bool] = mapped_column(default=True)
    routes: Mapped[list] = mapped_column(default=list)
    availability_zone_hints: Mapped[list] = mapped_column(default=list)


class FloatingIP(Standard, Base):
    __tablename__ = "floating_ips"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    floating_network_id: Mapped[str] = mapped_column(ID, index=True)
    floating_port_id: Mapped[str] = mapped_column(ID)
    floating_ip_address: Mapped[str] = mapped_column(sa.String(64))
    port_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    fixed_ip_address: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    router_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="DOWN")
    dns_name: Mapped[str] = mapped_column(sa.String(255), default="")
    dns_domain: Mapped[str] = mapped_column(sa.String(255), default="")


class SecurityGroup(Standard, Base):
    __tablename__ = "security_groups"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    stateful: Mapped[bool] = mapped_column(default=True)


class DefaultSecurityGroup(Base):
    """The primary key makes two concurrent first requests of a project create one default group."""

    __tablename__ = "default_security_groups"
    project_id: Mapped[str] = mapped_column(ID, primary_key=True)
    security_group_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("security_groups.id", ondelete="CASCADE"))


class SecurityGroupRule(Base):
    __tablename__ = "security_group_rules"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, default="", index=True)
    security_group_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("security_groups.id", ondelete="CASCADE"),
                                                   index=True)
    direction: Mapped[str] = mapped_column(sa.String(16))
    ethertype: Mapped[str] = mapped_column(sa.String(8), default="IPv4")
    protocol: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)
    port_range_min: Mapped[int | None] = mapped_column(nullable=True)
    port_range_max: Mapped[int | None] = mapped_column(nullable=True)
    remote_ip_prefix: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    remote_group_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    description: Mapped[str] = mapped_column(sa.String(1024), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revision_number: Mapped[int] = mapped_column(default=0)


class Quota(Base):
    __tablename__ = "quotas"
    project_id: Mapped[str] = mapped_column(ID, primary_key=True)
    resource: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    limit: Mapped[int] = mapped_column()


class AutoAllocatedTopology(Base):
    __tablename__ = "auto_allocated_topologies"
    project_id: Mapped[str] = mapped_column(ID, primary_key=True)
    network_id: Mapped[str] = mapped_column(ID)
    router_id: Mapped[str | None] = mapped_column(ID, nullable=True)


class Agent(Base):
    """A data-path agent that registered itself; its local IP is a VXLAN tunnel end point."""

    __tablename__ = "agents"
    host: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    driver: Mapped[str] = mapped_column(sa.String(32))
    tunnel_ip: Mapped[str] = mapped_column(sa.String(64), default="")
    roles: Mapped[list] = mapped_column(default=list)
    # physical network name → host bridge (flat networks bound to an existing bridge, e.g. br-ex).
    bridge_mappings: Mapped[dict] = mapped_column(default=dict)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
