"""Compute tables: flavors, keypairs, instances and their history, quotas, hosts, groups, aggregates."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from stratus.common.db import make_base, utcnow

Base = make_base()

ID = sa.String(64)
NAME = sa.String(255)


class Flavor(Base):
    __tablename__ = "flavors"
    id: Mapped[str] = mapped_column(ID, primary_key=True)  # flavorid: a string ("1", or a UUID)
    name: Mapped[str] = mapped_column(NAME, unique=True)
    vcpus: Mapped[int] = mapped_column()
    memory_mb: Mapped[int] = mapped_column()
    root_gb: Mapped[int] = mapped_column()
    ephemeral_gb: Mapped[int] = mapped_column(default=0)
    swap: Mapped[int] = mapped_column(default=0)
    rxtx_factor: Mapped[float] = mapped_column(default=1.0)
    is_public: Mapped[bool] = mapped_column(default=True)
    disabled: Mapped[bool] = mapped_column(default=False)
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    extra_specs: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class FlavorAccess(Base):
    __tablename__ = "flavor_access"
    flavor_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("flavors.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, primary_key=True)


class KeyPair(Base):
    __tablename__ = "key_pairs"
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(16), default="ssh")
    public_key: Mapped[str] = mapped_column(sa.Text)
    fingerprint: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (sa.Index("ix_instances_project_deleted", "project_id", "deleted"),
                      sa.Index("ix_instances_host", "host"),
                      sa.Index("ix_instances_created", "created_at"),
                      # The default listing: one project's live servers, newest first.
                      sa.Index("ix_instances_project_listing", "project_id", "deleted", "created_at", "id"))
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME)
    hostname: Mapped[str] = mapped_column(NAME, default="")
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    project_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    image_id: Mapped[str] = mapped_column(sa.String(64), default="")
    image_properties: Mapped[dict] = mapped_column(default=dict)
    flavor: Mapped[dict] = mapped_column(default=dict)  # the flavor as it was at boot/resize
    old_flavor: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True)  # kept while VERIFY_RESIZE
    vcpus: Mapped[int] = mapped_column(default=0)
    memory_mb: Mapped[int] = mapped_column(default=0)
    root_gb: Mapped[int] = mapped_column(default=0)
    vm_state: Mapped[str] = mapped_column(sa.String(32), default="building")
    task_state: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    power_state: Mapped[int] = mapped_column(default=0)
    host: Mapped[str | None] = mapped_column(NAME, nullable=True)
    node: Mapped[str | None] = mapped_column(NAME, nullable=True)
    # Where a resize/migration is going (the claim on the target host).
    migration_host: Mapped[str | None] = mapped_column(NAME, nullable=True)
    availability_zone: Mapped[str | None] = mapped_column(NAME, nullable=True)
    requested_az: Mapped[str | None] = mapped_column(NAME, nullable=True)
    key_name: Mapped[str | None] = mapped_column(NAME, nullable=True)
    key_data: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    user_data: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    config_drive: Mapped[bool] = mapped_column(default=False)
    metadata_: Mapped[dict] = mapped_column("metadata", default=dict)
    tags: Mapped[list] = mapped_column(default=list)
    security_groups: Mapped[list] = mapped_column(default=list)
    requested_networks: Mapped[dict | list | str | None] = mapped_column(sa.JSON, nullable=True)
    network_info: Mapped[list] = mapped_column(default=list)  # [{port_id, network_id, network_name, mac, ips}]
    block_devices: Mapped[list] = mapped_column(default=list)
    scheduler_hints: Mapped[dict] = mapped_column(default=dict)
    reservation_id: Mapped[str] = mapped_column(sa.String(32), default="")
    launch_index: Mapped[int] = mapped_column(default=0)
    access_ip_v4: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    access_ip_v6: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    disk_config: Mapped[str] = mapped_column(sa.String(16), default="MANUAL")
    locked: Mapped[bool] = mapped_column(default=False)
    locked_by: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    locked_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    admin_pass: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    fault: Mapped[dict | None] = mapped_column(sa.JSON, nullable=True)
    progress: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    launched_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    terminated_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    # Deleted rows stay for usage accounting and changes-since listings.
    deleted: Mapped[bool] = mapped_column(default=False)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class InstanceAction(Base):
    __tablename__ = "instance_actions"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(ID, index=True)
    request_id: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(64))
    project_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    message: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    start_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class InstanceActionEvent(Base):
    __tablename__ = "instance_action_events"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    action_id: Mapped[int] = mapped_column(sa.ForeignKey("instance_actions.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(sa.String(64))
    host: Mapped[str | None] = mapped_column(NAME, nullable=True)
    result: Mapped[str | None] = mapped_column(sa.String(16), nullable=True)
    traceback: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    details: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    start_time: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finish_time: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class Quota(Base):
    """A project's limit for one resource (absent = the default)."""

    __tablename__ = "quotas"
    project_id: Mapped[str] = mapped_column(ID, primary_key=True)
    resource: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    hard_limit: Mapped[int] = mapped_column()


class QuotaDefault(Base):
    __tablename__ = "quota_defaults"
    resource: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    hard_limit: Mapped[int] = mapped_column()


class ProjectUsage(Base):
    """Counters changed only by conditional UPDATEs, so concurrent creates cannot exceed a quota."""

    __tablename__ = "project_usage"
    project_id: Mapped[str] = mapped_column(ID, primary_key=True)
    instances: Mapped[int] = mapped_column(default=0)
    cores: Mapped[int] = mapped_column(default=0)
    ram: Mapped[int] = mapped_column(default=0)
    server_groups: Mapped[int] = mapped_column(default=0)


class ComputeNode(Base):
    """One hypervisor host: what it has, what is claimed, and when its agent last reported."""

    __tablename__ = "compute_nodes"
    id: Mapped[str] = mapped_column(ID, primary_key=True)  # uuid (hypervisor id ≥ 2.53)
    host: Mapped[str] = mapped_column(NAME, unique=True)
    hypervisor_hostname: Mapped[str] = mapped_column(NAME)
    hypervisor_type: Mapped[str] = mapped_column(sa.String(32), default="fake")
    hypervisor_version: Mapped[int] = mapped_column(default=1)
    host_ip: Mapped[str] = mapped_column(sa.String(64), default="127.0.0.1")
    cpu_arch: Mapped[str] = mapped_column(sa.String(32), default="x86_64")
    vcpus: Mapped[int] = mapped_column(default=0)
    memory_mb: Mapped[int] = mapped_column(default=0)
    local_gb: Mapped[int] = mapped_column(default=0)
    vcpus_used: Mapped[int] = mapped_column(default=0)
    memory_mb_used: Mapped[int] = mapped_column(default=0)
    local_gb_used: Mapped[int] = mapped_column(default=0)
    running_vms: Mapped[int] = mapped_column(default=0)
    cpu_allocation_ratio: Mapped[float] = mapped_column(default=4.0)
    ram_allocation_ratio: Mapped[float] = mapped_column(default=1.0)
    disk_allocation_ratio: Mapped[float] = mapped_column(default=1.0)
    details: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Any change (claims included): schedulers refresh rows changed since their last look.
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    # Only the agent's heartbeat: a host is alive when this is recent.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class Service(Base):
    """A running piece of compute (nova-compute per host, nova-scheduler, ...) with its heartbeat."""

    __tablename__ = "services"
    __table_args__ = (sa.UniqueConstraint("host", "binary"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    host: Mapped[str] = mapped_column(NAME)
    binary: Mapped[str] = mapped_column(sa.String(64))
    topic: Mapped[str] = mapped_column(sa.String(255), default="")
    zone: Mapped[str] = mapped_column(NAME, default="nova")
    disabled: Mapped[bool] = mapped_column(default=False)
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    forced_down: Mapped[bool] = mapped_column(default=False)
    version: Mapped[int] = mapped_column(default=1)
    last_seen_up: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ServerGroup(Base):
    __tablename__ = "server_groups"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME)
    project_id: Mapped[str] = mapped_column(ID, index=True)
    user_id: Mapped[str] = mapped_column(ID)
    policy: Mapped[str] = mapped_column(sa.String(32))
    rules: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ServerGroupMember(Base):
    __tablename__ = "server_group_members"
    group_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("server_groups.id", ondelete="CASCADE"),
                                          primary_key=True)
    instance_id: Mapped[str] = mapped_column(ID, primary_key=True, index=True)


class Aggregate(Base):
    __tablename__ = "aggregates"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(ID, unique=True)
    name: Mapped[str] = mapped_column(NAME, unique=True)
    availability_zone: Mapped[str | None] = mapped_column(NAME, nullable=True)
    metadata_: Mapped[dict] = mapped_column("metadata", default=dict)
    hosts: Mapped[list] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class ConsoleToken(Base):
    __tablename__ = "console_tokens"
    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    instance_id: Mapped[str] = mapped_column(ID, index=True)
    console_type: Mapped[str] = mapped_column(sa.String(32))
    host: Mapped[str] = mapped_column(NAME)
    port: Mapped[int] = mapped_column()
    internal_access_path: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    expires_at: Mapped[dt.datetime] = mapped_column()


class Migration(Base):
    __tablename__ = "migrations"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(ID, unique=True)
    instance_id: Mapped[str] = mapped_column(ID, index=True)
    migration_type: Mapped[str] = mapped_column(sa.String(32))  # resize, migration, evacuation
    source_host: Mapped[str | None] = mapped_column(NAME, nullable=True)
    dest_host: Mapped[str | None] = mapped_column(NAME, nullable=True)
    old_flavor_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    new_flavor_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    status: Mapped[str] = mapped_column(sa.String(32))
    project_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
