"""The request context: who is calling, in which scope, with which roles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RequestContext:
    user_id: str
    user_name: str = ""
    user_domain_id: str = ""
    user_domain_name: str = ""
    project_id: str | None = None
    project_name: str | None = None
    project_domain_id: str | None = None
    project_domain_name: str | None = None
    domain_id: str | None = None  # set for domain-scoped tokens
    domain_name: str | None = None
    system_scope: bool = False
    roles: list[str] = field(default_factory=list)
    token: str = ""
    audit_ids: list[str] = field(default_factory=list)
    expires_at: str = ""
    catalog: list[dict] = field(default_factory=list)
    application_credential_id: str | None = None

    @property
    def is_admin(self) -> bool:
        """OpenStack's legacy meaning: the admin role in any scope administers the cloud."""
        return "admin" in self.roles

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def policy_creds(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "project_id": self.project_id,
            "domain_id": self.domain_id,
            "user_domain_id": self.user_domain_id,
            "project_domain_id": self.project_domain_id,
            "system_scope": "all" if self.system_scope else "",
            "roles": self.roles,
            "is_admin": self.is_admin,
        }

    @classmethod
    def from_token_body(cls, token: dict, token_id: str = "") -> "RequestContext":
        """Build a context from a keystone v3 token body (the value of ``{"token": ...}``)."""
        user = token.get("user") or {}
        project = token.get("project") or {}
        domain = token.get("domain") or {}
        return cls(
            user_id=user.get("id", ""),
            user_name=user.get("name", ""),
            user_domain_id=(user.get("domain") or {}).get("id", ""),
            user_domain_name=(user.get("domain") or {}).get("name", ""),
            project_id=project.get("id"),
            project_name=project.get("name"),
            project_domain_id=(project.get("domain") or {}).get("id"),
            project_domain_name=(project.get("domain") or {}).get("name"),
            domain_id=domain.get("id"),
            domain_name=domain.get("name"),
            system_scope=bool((token.get("system") or {}).get("all")),
            roles=[r["name"] for r in token.get("roles") or []],
            token=token_id,
            audit_ids=list(token.get("audit_ids") or []),
            expires_at=token.get("expires_at", ""),
            catalog=token.get("catalog") or [],
            application_credential_id=(token.get("application_credential") or {}).get("id"),
        )


def get_context(request) -> RequestContext:
    """The caller's context; the auth middleware guarantees it on protected routes."""
    ctx = request.scope.get("stratus.context")
    if ctx is None:
        from stratus.common.errors import Unauthorized

        raise Unauthorized("The request you have made requires authentication.")
    return ctx
