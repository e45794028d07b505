"""Helpers shared by the compute routes: context, policy, microversions, input checks, links."""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any

from starlette.requests import Request

from stratus.common.context import RequestContext, get_context
from stratus.common.errors import BadRequest
from stratus.common.microversion import Version, request_version
from stratus.common.versions import base_url

MIN_VERSION = "2.1"
MAX_VERSION = "2.100"

POLICY = {
    "compute:admin": "rule:admin",
    "compute:member": "rule:admin_or_member",
    "compute:reader": "rule:admin_or_reader",
    "compute:servers:create": "rule:admin_or_member",
    "compute:servers:create:forced_host": "rule:admin",
    "compute:servers:list": "rule:admin_or_reader",
    "compute:servers:all_tenants": "rule:admin",
    "compute:servers:show": "rule:admin_or_reader",
    "compute:servers:update": "rule:admin_or_member",
    "compute:servers:delete": "rule:admin_or_member",
    "compute:servers:action": "rule:admin_or_member",
    "compute:servers:migrate": "rule:admin",
    "compute:servers:evacuate": "rule:admin",
    "compute:servers:reset_state": "rule:admin",
    "compute:servers:show:host": "rule:admin",
    "compute:servers:unlock:override": "rule:admin",
    "compute:flavors:manage": "rule:admin",
    "compute:quotas:update": "rule:admin",
    "compute:quotas:show": "rule:admin or project_id:%(project_id)s",
    "compute:usage:all": "rule:admin",
    "compute:usage:show": "rule:admin or project_id:%(project_id)s",
    "compute:hosts": "rule:admin",
    "compute:console_auth_tokens": "rule:admin or role:service",
}


def ctx(request: Request) -> RequestContext:
    return get_context(request)


def enforce(request: Request, action: str, **target) -> RequestContext:
    c = get_context(request)
    target.setdefault("project_id", c.project_id)
    request.app.state.enforcer.enforce(c, action, target)
    return c


def allowed(request: Request, action: str, **target) -> bool:
    c = get_context(request)
    target.setdefault("project_id", c.project_id)
    return request.app.state.enforcer.allowed(c, action, target)


def svc(request: Request):
    """The compute service state (db, settings, managers) of this process."""
    return request.app.state.compute


def version(request: Request) -> Version:
    return request_version(request)


@functools.lru_cache(maxsize=256)
def _parsed(v: str) -> tuple[int, int]:
    version = Version.parse(v)
    return version.major, version.minor


def at_least(request: Request, v: str) -> bool:
    # Called dozens of times per server in a listing: compare plain tuples.
    have = request_version(request)
    return (have.major, have.minor) >= _parsed(v)


def api_base(request: Request) -> str:
    return f"{base_url(request)}/v2.1"


def self_links(request: Request, collection: str, ident: str) -> list[dict]:
    root = base_url(request)
    return [{"rel": "self", "href": f"{root}/v2.1/{collection}/{ident}"},
            {"rel": "bookmark", "href": f"{root}/{collection}/{ident}"}]


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_micro(value: dt.datetime | None) -> str | None:
    """os-services / instance actions use microseconds without a zone."""
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def parse_time(raw: str, name: str) -> dt.datetime:
    text = raw.strip().replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"Invalid {name} value {raw!r}: expected an ISO 8601 timestamp") from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value


_UNSET = object()


def field(body: dict, name: str, kind: type | tuple, *, required: bool = False, default: Any = _UNSET,
          nullable: bool = False, where: str = "") -> Any:
    label = f"{where}.{name}" if where else name
    if name not in body:
        if required:
            raise BadRequest(f"Invalid input for field/attribute {where or 'body'}. '{name}' is a required property")
        return None if default is _UNSET else default
    value = body[name]
    if value is None and nullable:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"Invalid input for field/attribute {label}. Value: {value!r} is not of type {_names(kinds)}")
    if not isinstance(value, kinds):
        raise BadRequest(f"Invalid input for field/attribute {label}. Value: {value!r} is not of type {_names(kinds)}")
    return value


def _names(kinds) -> str:
    return " or ".join({str: "string", bool: "boolean", int: "integer", dict: "object", list: "array",
                        float: "number"}.get(k, k.__name__) for k in kinds)


_NAME_OK = re.compile(r"^(?!\s)[^\x00-\x1f\x7f]*(?<!\s)$")


def name_field(body: dict, name: str = "name", *, required: bool = True, where: str = "", max_len: int = 255) -> str | None:
    value = field(body, name, str, required=required, where=where)
    if value is None:
        return None
    if not value or len(value) > max_len or not _NAME_OK.match(value):
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {value!r}. It must be 1-{max_len} "
                         "printable characters without leading or trailing whitespace")
    return value


def int_field(body: dict, name: str, *, minimum: int = 0, maximum: int = 2**31 - 1, required: bool = False,
              default: Any = None, where: str = "") -> int | None:
    if name not in body:
        if required:
            raise BadRequest(f"Invalid input for field/attribute {where or 'body'}. '{name}' is a required property")
        return default
    raw = body[name]
    if isinstance(raw, bool):
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {raw!r} is not an integer")
    if isinstance(raw, str):
        try:
            raw = int(raw.strip())
        except ValueError:
            raise BadRequest(f"Invalid input for field/attribute {name}. Value: {body[name]!r} is not an integer") from None
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if not isinstance(raw, int):
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {raw!r} is not an integer")
    if raw < minimum or raw > maximum:
        raise BadRequest(f"Invalid input for field/attribute {name}. Value: {raw} must be between {minimum} and {maximum}")
    return raw


def query_bool(request: Request, name: str, default: bool | None = None) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in ("true", "1", "yes", "on", "t", "y"):
        return True
    if low in ("false", "0", "no", "off", "f", "n"):
        return False
    raise BadRequest(f"Invalid value {raw!r} for query parameter {name}: expected true or false")


def check_query(request: Request, allowed_params: set[str], since: str = "2.75") -> None:
    """From ``since`` on, nova refuses query parameters it does not know."""
    if not at_least(request, since):
        return
    unknown = sorted(set(request.query_params.keys()) - allowed_params)
    if unknown:
        raise BadRequest(f"Invalid input for query parameters {', '.join(unknown)}: additional properties are "
                         "not allowed")


def metadata_dict(value: Any, *, where: str = "metadata", max_items: int | None = None) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input for field/attribute {where}. Value: {value!r} is not of type object")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not 1 <= len(k) <= 255:
            raise BadRequest(f"Invalid input for field/attribute {where}: keys must be 1-255 characters")
        if not isinstance(v, str) or len(v) > 255:
            raise BadRequest(f"Invalid input for field/attribute {where}. Value for {k!r} must be a string of at "
                             "most 255 characters")
        out[k] = v
    if max_items is not None and max_items >= 0 and len(out) > max_items:
        raise_quota_metadata(max_items, len(out))
    return out


def raise_quota_metadata(limit: int, requested: int):
    from stratus.compute.quota import QuotaExceeded

    raise QuotaExceeded(f"Quota exceeded for metadata_items: Requested {requested}, but the limit is {limit} "
                        "metadata_items")


def paginate_links(request: Request, collection: str, items: list[dict], limit: int | None, key: str = "id") -> list:
    """nova's ``<collection>_links`` next link when a page came back full."""
    if limit is None or limit == 0 or len(items) < limit or not items:
        return []
    from stratus.common.pagination import next_link

    return [{"rel": "next", "href": next_link(request, str(items[-1][key]))}]
