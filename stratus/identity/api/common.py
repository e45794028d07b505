"""Helpers shared by identity's routes: context, policy, views, input checks."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from stratus.common.context import RequestContext, get_context
from stratus.common.errors import BadRequest
from stratus.common.versions import base_url
from stratus.identity import models as m

POLICY = {
    "identity:admin": "rule:admin",
    "identity:get_domain": "rule:admin or domain_id:%(domain_id)s or project_domain_id:%(domain_id)s or user_domain_id:%(domain_id)s",
    "identity:list_domains": "rule:admin",
    "identity:get_project": "rule:admin or project_id:%(project_id)s or (role:reader and domain_id:%(domain_id)s)",
    "identity:list_projects": "rule:admin or (role:reader and domain_id:%(domain_id)s)",
    "identity:list_user_projects": "rule:admin or user_id:%(user_id)s",
    "identity:get_user": "rule:admin or user_id:%(user_id)s",
    "identity:list_users": "rule:admin or (role:reader and domain_id:%(domain_id)s)",
    "identity:list_groups_for_user": "rule:admin or user_id:%(user_id)s",
    "identity:change_password": "user_id:%(user_id)s",
    "identity:get_role": "rule:admin or role:reader",
    "identity:list_roles": "rule:admin or role:reader",
    "identity:list_role_assignments": "rule:admin or (role:reader and domain_id:%(domain_id)s)",
    "identity:list_role_assignments_for_project": "rule:admin or (role:reader and project_id:%(project_id)s)",
    "identity:list_role_assignments_for_user": "rule:admin or user_id:%(user_id)s",
    "identity:get_catalog_item": "rule:admin or role:reader",
    "identity:validate_token": "rule:admin or role:service or user_id:%(user_id)s",
    "identity:revoke_token": "rule:admin or role:service or user_id:%(user_id)s",
    "identity:owner_credentials": "rule:admin or user_id:%(user_id)s",
}

CONTENT_UNSET = object()


def ctx(request: Request) -> RequestContext:
    return get_context(request)


def enforce(request: Request, action: str, **target) -> RequestContext:
    c = get_context(request)
    request.app.state.enforcer.enforce(c, action, target)
    return c


def manager(request: Request):
    return request.app.state.manager


def link(request: Request, path: str) -> dict:
    return {"self": f"{base_url(request)}/v3/{path}"}


def collection_links(request: Request) -> dict:
    return {"self": str(request.url), "previous": None, "next": None}


def field(body: dict, name: str, kind: type | tuple, *, required: bool = False, default: Any = CONTENT_UNSET,
          nullable: bool = False, where: str = "") -> Any:
    """``body[name]`` checked for type; a 400 naming the field when it is missing or wrong."""
    label = f"{where}.{name}" if where else name
    if name not in body:
        if required:
            raise BadRequest(f"'{label}' is a required property.")
        return None if default is CONTENT_UNSET else default
    value = body[name]
    if value is None and nullable:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"Invalid input for field '{label}': {value!r} is not of type {_names(kinds)}.")
    if not isinstance(value, kinds):
        raise BadRequest(f"Invalid input for field '{label}': {value!r} is not of type {_names(kinds)}.")
    if isinstance(value, str) and kinds == (str,) and name in ("name",):
        if not value.strip():
            raise BadRequest(f"Invalid input for field '{label}': it must not be empty.")
        if len(value) > 255:
            raise BadRequest(f"Invalid input for field '{label}': longer than 255 characters.")
    return value


def _names(kinds) -> str:
    return " or ".join({str: "string", bool: "boolean", int: "integer", dict: "object", list: "array"}.get(k, k.__name__)
                       for k in kinds)


def query_bool(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    low = raw.lower()
    if low in ("", "true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"Query parameter '{name}' must be true or false, not {raw!r}.")


def flag(request: Request, name: str) -> bool:
    """Keystone's presence flags (?effective, ?include_names, ?nocatalog): present and not false."""
    if name not in request.query_params:
        return False
    return request.query_params[name].lower() not in ("false", "0", "no")


def extra_fields(body: dict, known: set[str]) -> dict:
    return {k: v for k, v in body.items() if k not in known}


# ---- views ---------------------------------------------------------------------------------

def domain_view(request, d: m.Domain) -> dict:
    return {"id": d.id, "name": d.name, "description": d.description, "enabled": d.enabled,
            "tags": [], "options": {}, **d.extra, "links": link(request, f"domains/{d.id}")}


def project_view(request, p: m.Project) -> dict:
    return {"id": p.id, "name": p.name, "domain_id": p.domain_id, "description": p.description,
            "enabled": p.enabled, "parent_id": p.parent_id or p.domain_id, "is_domain": False,
            "tags": list(p.tags or []), "options": {}, **p.extra, "links": link(request, f"projects/{p.id}")}


def user_view(request, u: m.User) -> dict:
    view = {"id": u.id, "name": u.name, "domain_id": u.domain_id, "enabled": u.enabled,
            "password_expires_at": None, "options": dict(u.options or {}), **u.extra,
            "links": link(request, f"users/{u.id}")}
    if u.default_project_id:
        view["default_project_id"] = u.default_project_id
    return view


def group_view(request, g: m.Group) -> dict:
    return {"id": g.id, "name": g.name, "domain_id": g.domain_id, "description": g.description, **g.extra,
            "links": link(request, f"groups/{g.id}")}


def role_view(request, r: m.Role) -> dict:
    return {"id": r.id, "name": r.name, "domain_id": r.domain_id, "description": r.description,
            "options": dict(r.options or {}), "links": link(request, f"roles/{r.id}")}


def region_view(request, r: m.Region) -> dict:
    return {"id": r.id, "description": r.description, "parent_region_id": r.parent_region_id, **r.extra,
            "links": link(request, f"regions/{r.id}")}


def service_view(request, s: m.Service) -> dict:
    return {"id": s.id, "type": s.type, "name": s.name, "description": s.description, "enabled": s.enabled,
            **s.extra, "links": link(request, f"services/{s.id}")}


def endpoint_view(request, e: m.Endpoint) -> dict:
    return {"id": e.id, "service_id": e.service_id, "interface": e.interface, "region_id": e.region_id,
            "region": e.region_id, "url": e.url, "enabled": e.enabled, **e.extra,
            "links": link(request, f"endpoints/{e.id}")}
