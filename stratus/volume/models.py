"""Block storage tables: volumes, snapshots, types, attachments, backups, quotas, agents."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from stratus.common.db import make_base, utcnow

Base = make_base()

ID = sa.String(64)


class VolumeType(Base):
    __tablename__ = "volume_types"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    is_public: Mapped[bool] = mapped_column(default=True)
    extra_specs: Mapped[dict] = mapped_column(default=dict)
    # Projects that may use a private type.
    projects: Mapped[list] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class Volume(Base):
    __tablename__ = "volumes"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, index=True)
    user_id: Mapped[str] = mapped_column(ID)
    name: Mapped[str | None] = mapped_column(sa.String(255), nullable=True, index=True)
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    size: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(32), index=True)
    attach_status: Mapped[str] = mapped_column(sa.String(32), default="detached")
    # Why the volume went to an error state (shown to the owner as part of the record).
    error_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    availability_zone: Mapped[str] = mapped_column(sa.String(255))
    volume_type_id: Mapped[str] = mapped_column(ID)
    bootable: Mapped[bool] = mapped_column(default=False)
    readonly: Mapped[bool] = mapped_column(default=False)
    multiattach: Mapped[bool] = mapped_column(default=False)
    metadata_: Mapped[dict] = mapped_column("metadata", default=dict)
    image_metadata: Mapped[dict] = mapped_column(default=dict)
    snapshot_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    source_volid: Mapped[str | None] = mapped_column(ID, nullable=True)
    image_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    backup_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    # The storage host that holds the data, "<agent host>@file#file" like cinder's.
    host: Mapped[str | None] = mapped_column(sa.String(255), nullable=True, index=True)
    # The back end's handle of the data (the active file's name for the file back end).
    provider_location: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    launched_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class Snapshot(Base):
    __tablename__ = "snapshots"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, index=True)
    user_id: Mapped[str] = mapped_column(ID)
    volume_id: Mapped[str] = mapped_column(ID, index=True)
    name: Mapped[str | None] = mapped_column(sa.String(255), nullable=True, index=True)
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    size: Mapped[int] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(32), index=True)
    error_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    progress: Mapped[str] = mapped_column(sa.String(16), default="0%")
    metadata_: Mapped[dict] = mapped_column("metadata", default=dict)
    provider_location: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    volume_id: Mapped[str] = mapped_column(ID, index=True)
    project_id: Mapped[str] = mapped_column(ID, index=True)
    instance_uuid: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    attached_host: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    mountpoint: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    attach_mode: Mapped[str] = mapped_column(sa.String(8), default="rw")
    status: Mapped[str] = mapped_column(sa.String(32))
    connector: Mapped[dict | None] = mapped_column(nullable=True)
    connection_info: Mapped[dict | None] = mapped_column(nullable=True)
    # The storage host's export for this attachment: {"port", "pid", "node", "socket"}.
    export: Mapped[dict | None] = mapped_column(nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    attached_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    detached_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class Backup(Base):
    __tablename__ = "backups"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, index=True)
    user_id: Mapped[str] = mapped_column(ID)
    volume_id: Mapped[str] = mapped_column(ID, index=True)
    snapshot_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    parent_id: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    name: Mapped[str | None] = mapped_column(sa.String(255), nullable=True, index=True)
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    status: Mapped[str] = mapped_column(sa.String(32), index=True)
    fail_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    size: Mapped[int] = mapped_column(sa.Integer)
    object_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    container: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    is_incremental: Mapped[bool] = mapped_column(default=False)
    availability_zone: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    host: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    metadata_: Mapped[dict] = mapped_column("metadata", default=dict)
    restore_volume_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    data_timestamp: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class Quota(Base):
    __tablename__ = "quotas"
    project_id: Mapped[str] = mapped_column(ID, primary_key=True)
    resource: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    hard_limit: Mapped[int] = mapped_column(sa.Integer)


class Service(Base):
    """A volume agent (cinder-volume) and its heartbeat."""

    __tablename__ = "services"
    __table_args__ = (sa.UniqueConstraint("host", "binary"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    binary: Mapped[str] = mapped_column(sa.String(64))
    availability_zone: Mapped[str] = mapped_column(sa.String(255))
    disabled: Mapped[bool] = mapped_column(default=False)
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    # {"total_gb", "free_gb", "export_address", "format"} reported with each heartbeat.
    capabilities: Mapped[dict] = mapped_column(default=dict)
    uuid: Mapped[str] = mapped_column(ID)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)


class Message(Base):
    """A user-visible message about an asynchronous failure (cinder's /messages, 3.3+)."""

    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(ID, index=True)
    resource_type: Mapped[str] = mapped_column(sa.String(32))
    resource_uuid: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    event_id: Mapped[str] = mapped_column(sa.String(64))
    message_level: Mapped[str] = mapped_column(sa.String(16), default="ERROR")
    user_message: Mapped[str] = mapped_column(sa.Text)
    request_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
