"""Helpers shared by the block storage routes: context, policy, input checks, record views."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request

from stratus.common.context import RequestContext, get_context
from stratus.common.errors import BadRequest, Forbidden
from stratus.common.microversion import Version, request_version
from stratus.common.versions import base_url
from stratus.volume import models as m

POLICY = {
    "volume:owner": "rule:admin or project_id:%(project_id)s",
    "volume:admin": "rule:admin",
    "volume:create": "rule:admin or (role:member and project_id:%(project_id)s)",
    "volume:read": "rule:admin or (role:reader and project_id:%(project_id)s)",
}

UNSET = object()


def manager(request: Request):
    return request.app.state.manager


def mv(request: Request) -> Version:
    return request_version(request)


def at_least(request: Request, version: str) -> bool:
    return mv(request) >= Version.parse(version)


def context(request: Request, *, write: bool = False) -> RequestContext:
    """The caller, after checking the project id in the URL is theirs (admins may use any)."""
    ctx = get_context(request)
    url_project = request.path_params.get("project_id")
    if url_project is not None and url_project != ctx.project_id and not ctx.is_admin:
        raise Forbidden(f"Malformed request url: project {url_project} in the URL is not the project of your "
                        f"token ({ctx.project_id}).")
    rule = "volume:create" if write else "volume:read"
    request.app.state.enforcer.enforce(ctx, rule, {"project_id": ctx.project_id})
    return ctx


def require_admin(request: Request) -> RequestContext:
    ctx = context(request)
    request.app.state.enforcer.enforce(ctx, "volume:admin", {"project_id": ctx.project_id})
    return ctx


def field(body: dict, name: str, kind, *, required: bool = False, default: Any = None, where: str = "") -> Any:
    label = f"{where}.{name}" if where else name
    if name not in body or body[name] is None:
        if required:
            raise BadRequest(f"Invalid input for field/attribute {label}. '{name}' is a required property.")
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"Invalid input for field/attribute {label}. Value: {value!r} is not of type {_names(kinds)}.")
    if int in kinds and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # cinder accepts "10" for sizes
    if not isinstance(value, kinds):
        raise BadRequest(f"Invalid input for field/attribute {label}. Value: {value!r} is not of type {_names(kinds)}.")
    if isinstance(value, str) and len(value) > 255 and name in ("name", "container"):
        raise BadRequest(f"Invalid input for field/attribute {label}: longer than 255 characters.")
    return value


def _names(kinds) -> str:
    return " or ".join({str: "string", bool: "boolean", int: "integer", dict: "object", list: "array"}.get(k, k.__name__)
                       for k in kinds)


def parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes", "on", "t", "y"):
            return True
        if low in ("false", "0", "no", "off", "f", "n"):
            return False
    raise BadRequest(f"Invalid input for field/attribute {name}: {value!r} is not a boolean (use true or false).")


def positive_size(value: Any, name: str = "size") -> int:
    if isinstance(value, bool) or value is None:
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value!r} must be an integer of at least 1.")
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value!r} is not an integer.") from None
    if size < 1 or (isinstance(value, float) and value != size):
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value!r} must be an integer of at least 1.")
    return size


def metadata_dict(value: Any, name: str = "metadata") -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input for field/attribute {name}: it must be an object of string keys and values.")
    for k, v in value.items():
        if not isinstance(k, str) or not k or len(k) > 255:
            raise BadRequest(f"Invalid input for field/attribute {name}: keys must be 1-255 character strings.")
        if not isinstance(v, str) or len(v) > 255:
            raise BadRequest(f"Invalid input for field/attribute {name}: the value of {k!r} must be a string of at "
                             f"most 255 characters.")
    return dict(value)


def iso(value: dt.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def link(request: Request, project_id: str, path: str) -> list[dict]:
    base = base_url(request)
    return [{"rel": "self", "href": f"{base}/v3/{project_id}/{path}"},
            {"rel": "bookmark", "href": f"{base}/{project_id}/{path}"}]


def collection_next(request: Request, rows: list, limit: int | None, key: str) -> dict:
    from stratus.common.pagination import next_link

    if limit and rows and len(rows) == limit:
        return {f"{key}_links": [{"rel": "next", "href": next_link(request, rows[-1].id)}]}
    return {}


# ---- views ---------------------------------------------------------------------------------

def attachment_summary(a: m.Attachment) -> dict:
    return {"id": a.volume_id, "attachment_id": a.id, "volume_id": a.volume_id, "server_id": a.instance_uuid,
            "host_name": a.attached_host, "device": a.mountpoint, "attached_at": iso(a.attached_at)}


def volume_view(request: Request, v: m.Volume, attachments: list[m.Attachment], vtype: m.VolumeType | None,
                ctx: RequestContext, *, brief: bool = False) -> dict:
    if brief:
        return {"id": v.id, "name": v.name, "links": link(request, v.project_id, f"volumes/{v.id}")}
    view = {
        "id": v.id, "name": v.name, "description": v.description, "status": v.status, "size": v.size,
        "availability_zone": v.availability_zone, "created_at": iso(v.created_at), "updated_at": iso(v.updated_at),
        "volume_type": vtype.name if vtype else None,
        "bootable": "true" if v.bootable else "false", "encrypted": False, "multiattach": v.multiattach,
        "metadata": {**(v.metadata_ or {}), **({"readonly": "True"} if v.readonly else {})},
        "attachments": [attachment_summary(a) for a in attachments if a.status == "attached"],
        "snapshot_id": v.snapshot_id, "source_volid": v.source_volid, "user_id": v.user_id,
        "os-vol-tenant-attr:tenant_id": v.project_id, "replication_status": None, "consistencygroup_id": None,
        "migration_status": None, "links": link(request, v.project_id, f"volumes/{v.id}"),
    }
    if v.image_metadata:
        view["volume_image_metadata"] = dict(v.image_metadata)
    if v.backup_id and at_least(request, "3.47"):
        view["backup_id"] = v.backup_id
    if v.error_reason and v.status.startswith("error"):
        # Not an upstream field: cinder puts failure reasons in /messages; clients ignore extras.
        view["error_reason"] = v.error_reason
    if ctx.is_admin:
        view["os-vol-host-attr:host"] = v.host
        view["os-vol-mig-status-attr:migstat"] = None
        view["os-vol-mig-status-attr:name_id"] = None
    if at_least(request, "3.13"):
        view["group_id"] = None
    if at_least(request, "3.21"):
        view["provider_id"] = None
    if at_least(request, "3.48"):
        view["service_uuid"] = None
        view["shared_targets"] = False
    if at_least(request, "3.61") and ctx.is_admin:
        view["cluster_name"] = None
    if at_least(request, "3.63"):
        view["volume_type_id"] = v.volume_type_id
    if at_least(request, "3.64"):
        view["encryption_key_id"] = None
    if at_least(request, "3.65"):
        view["consumes_quota"] = True
    return view


def snapshot_view(request: Request, s: m.Snapshot, ctx: RequestContext) -> dict:
    view = {"id": s.id, "name": s.name, "description": s.description, "status": s.status, "size": s.size,
            "volume_id": s.volume_id, "metadata": dict(s.metadata_ or {}), "created_at": iso(s.created_at),
            "updated_at": iso(s.updated_at), "os-extended-snapshot-attributes:progress": s.progress,
            "os-extended-snapshot-attributes:project_id": s.project_id}
    if at_least(request, "3.14"):
        view["group_snapshot_id"] = None
    if at_least(request, "3.41"):
        view["user_id"] = s.user_id
    if at_least(request, "3.65"):
        view["consumes_quota"] = True
    if s.error_reason and s.status.startswith("error"):
        view["error_reason"] = s.error_reason
    return view


def type_view(t: m.VolumeType, *, admin: bool = True) -> dict:
    view = {"id": t.id, "name": t.name, "description": t.description, "is_public": t.is_public,
            "os-volume-type-access:is_public": t.is_public, "qos_specs_id": None}
    if admin or True:
        view["extra_specs"] = dict(t.extra_specs or {})
    return view


def attachment_view(a: m.Attachment, *, detail: bool = True) -> dict:
    view = {"id": a.id, "status": a.status, "instance": a.instance_uuid, "volume_id": a.volume_id}
    if detail:
        view.update({"attach_mode": a.attach_mode, "attached_at": iso(a.attached_at),
                     "detached_at": iso(a.detached_at), "connection_info": a.connection_info or {}})
    return view


def backup_view(request: Request, b: m.Backup, ctx: RequestContext, *, has_dependents: bool) -> dict:
    view = {"id": b.id, "name": b.name, "description": b.description, "status": b.status, "size": b.size,
            "volume_id": b.volume_id, "snapshot_id": b.snapshot_id, "container": b.container,
            "availability_zone": b.availability_zone, "object_count": b.object_count,
            "is_incremental": b.is_incremental, "has_dependent_backups": has_dependents,
            "fail_reason": b.fail_reason, "created_at": iso(b.created_at), "updated_at": iso(b.updated_at),
            "data_timestamp": iso(b.data_timestamp),
            "links": link(request, b.project_id, f"backups/{b.id}")}
    if at_least(request, "3.18"):
        view["os-backup-project-attr:project_id"] = b.project_id
    if at_least(request, "3.43"):
        view["metadata"] = dict(b.metadata_ or {})
    if at_least(request, "3.56"):
        view["user_id"] = b.user_id
    if at_least(request, "3.51"):
        view["availability_zone"] = b.availability_zone
    return view
