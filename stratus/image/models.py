"""Image tables: images, their free-form properties, tags and members (sharing)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from stratus.common.db import make_base, utcnow

Base = make_base()

ID = sa.String(64)


class Image(Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(sa.String(255), nullable=True, index=True)
    status: Mapped[str] = mapped_column(sa.String(30), index=True)
    visibility: Mapped[str] = mapped_column(sa.String(20), index=True)
    protected: Mapped[bool] = mapped_column(default=False)
    os_hidden: Mapped[bool] = mapped_column(default=False)
    owner: Mapped[str | None] = mapped_column(ID, nullable=True, index=True)
    container_format: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    disk_format: Mapped[str | None] = mapped_column(sa.String(20), nullable=True)
    size: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    virtual_size: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    checksum: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    os_hash_algo: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    os_hash_value: Mapped[str | None] = mapped_column(sa.String(128), nullable=True)
    min_disk: Mapped[int] = mapped_column(default=0)
    min_ram: Mapped[int] = mapped_column(default=0)
    # Where the bytes are: store name and the store's own key. Never shown to clients.
    store: Mapped[str | None] = mapped_column(sa.String(32), nullable=True)
    location: Mapped[str | None] = mapped_column(sa.String(1024), nullable=True)
    # Staged (glance-direct) data waiting for import: the staging file's name.
    staged: Mapped[str | None] = mapped_column(sa.String(1024), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)


class ImageProperty(Base):
    __tablename__ = "image_properties"
    __table_args__ = (sa.UniqueConstraint("image_id", "name"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("images.id", ondelete="CASCADE"),
                                          index=True)
    name: Mapped[str] = mapped_column(sa.String(255), index=True)
    value: Mapped[str] = mapped_column(sa.Text)


class ImageTag(Base):
    __tablename__ = "image_tags"
    __table_args__ = (sa.UniqueConstraint("image_id", "value"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("images.id", ondelete="CASCADE"),
                                          index=True)
    value: Mapped[str] = mapped_column(sa.String(255), index=True)


class ImageMember(Base):
    __tablename__ = "image_members"
    __table_args__ = (sa.UniqueConstraint("image_id", "member"),)
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("images.id", ondelete="CASCADE"),
                                          index=True)
    member: Mapped[str] = mapped_column(ID, index=True)
    status: Mapped[str] = mapped_column(sa.String(20), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
