"""Identity tables."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from stratus.common.db import make_base, utcnow

Base = make_base()

ID = sa.String(64)


class Domain(Base):
    __tablename__ = "domains"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), unique=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    extra: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    domain_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("domains.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    tags: Mapped[list] = mapped_column(default=list)
    extra: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    domain_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("domains.id"), index=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    default_project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    password_hash: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    password_created_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    extra: Mapped[dict] = mapped_column(default=dict)
    options: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Group(Base):
    __tablename__ = "groups"
    __table_args__ = (sa.UniqueConstraint("domain_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    domain_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("domains.id"), index=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    extra: Mapped[dict] = mapped_column(default=dict)


class Membership(Base):
    __tablename__ = "group_memberships"
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True,
                                          index=True)


class Role(Base):
    __tablename__ = "roles"
    __table_args__ = (sa.UniqueConstraint("name", "domain_key"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    domain_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    # '' for global roles: unique constraints treat NULLs as distinct, so uniqueness uses this.
    domain_key: Mapped[str] = mapped_column(ID, default="")
    description: Mapped[str] = mapped_column(sa.Text, default="")
    options: Mapped[dict] = mapped_column(default=dict)


class ImpliedRole(Base):
    __tablename__ = "implied_roles"
    prior_role_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    implied_role_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("roles.id", ondelete="CASCADE"),
                                                 primary_key=True)


class Assignment(Base):
    """A role granted to an actor (user or group) on a target (project, domain or the system)."""

    __tablename__ = "assignments"
    # type: UserProject, GroupProject, UserDomain, GroupDomain, UserSystem, GroupSystem
    type: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    actor_id: Mapped[str] = mapped_column(ID, primary_key=True, index=True)
    target_id: Mapped[str] = mapped_column(ID, primary_key=True, index=True)
    role_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True)
    inherited: Mapped[bool] = mapped_column(primary_key=True, default=False)


class Region(Base):
    __tablename__ = "regions"
    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    parent_region_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    extra: Mapped[dict] = mapped_column(default=dict)


class Service(Base):
    __tablename__ = "services"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(255))
    name: Mapped[str] = mapped_column(sa.String(255), default="")
    description: Mapped[str] = mapped_column(sa.Text, default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    extra: Mapped[dict] = mapped_column(default=dict)


class Endpoint(Base):
    __tablename__ = "endpoints"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    service_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("services.id", ondelete="CASCADE"), index=True)
    interface: Mapped[str] = mapped_column(sa.String(8))
    region_id: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    url: Mapped[str] = mapped_column(sa.Text)
    enabled: Mapped[bool] = mapped_column(default=True)
    extra: Mapped[dict] = mapped_column(default=dict)


class ApplicationCredential(Base):
    __tablename__ = "application_credentials"
    __table_args__ = (sa.UniqueConstraint("user_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ID)
    secret_hash: Mapped[str] = mapped_column(sa.String(255))
    description: Mapped[str] = mapped_column(sa.Text, default="")
    expires_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    unrestricted: Mapped[bool] = mapped_column(default=False)
    role_ids: Mapped[list] = mapped_column(default=list)
    access_rules: Mapped[list] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Credential(Base):
    """Stored credentials; EC2 ones (type 'ec2') carry access and secret for S3/EC2 signatures."""

    __tablename__ = "credentials"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    type: Mapped[str] = mapped_column(sa.String(255))
    # Encrypted with the credential key (see tokens.CredentialCipher); never stored in clear.
    blob: Mapped[str] = mapped_column(sa.Text)
    access_key: Mapped[str | None] = mapped_column(sa.String(255), nullable=True, unique=True)
    extra: Mapped[dict] = mapped_column(default=dict)


class RevocationEvent(Base):
    """Tokens matching every non-null field and issued at or before ``issued_before`` are revoked."""

    __tablename__ = "revocation_events"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[str | None] = mapped_column(sa.String(64), nullable=True, index=True)
    user_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    project_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    domain_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    issued_before: Mapped[dt.datetime] = mapped_column()
    revoked_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class SigningKey(Base):
    """Token encryption keys, shared through the database so every API host can validate tokens."""

    __tablename__ = "signing_keys"
    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(128))
    # 'primary' signs new tokens; 'secondary' keys still validate; 'staged' is next primary.
    state: Mapped[str] = mapped_column(sa.String(16))
    purpose: Mapped[str] = mapped_column(sa.String(16), default="token")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
