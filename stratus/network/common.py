"""Small pieces shared by the network manager's parts: names, times, input checks, list queries."""

from __future__ import annotations

import datetime as dt
from typing import Any

from stratus.common.errors import BadRequest, NotFound

AGENT_FANOUT = "network.agents"
PLUGIN_TOPIC = "network.plugin"


def agent_topic(host: str) -> str:
    return f"network.agent.{host}"


def bridge_name(network_id: str) -> str:
    return f"brq{network_id[:11]}"


def tap_name(port_id: str) -> str:
    return f"tap{port_id[:11]}"


def standard_attrs(obj) -> dict:
    """What every neutron resource shows: id, names, owner, tags, timestamps, revision."""
    return {"id": obj.id, "name": obj.name, "description": obj.description, "project_id": obj.project_id,
            "tenant_id": obj.project_id, "tags": list(obj.tags or []), "created_at": ts(obj.created_at),
            "updated_at": ts(obj.updated_at), "revision_number": obj.revision_number}


def touch(obj) -> None:
    """A change: new updated_at and revision_number (clients compare them)."""
    from stratus.common.db import utcnow

    obj.updated_at = utcnow()
    obj.revision_number = (obj.revision_number or 0) + 1


def ts(value: dt.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def not_found(kind: str, ident: str) -> NotFound:
    words = {"Network": "Network", "Subnet": "Subnet", "Port": "Port", "Router": "Router",
             "FloatingIP": "Floating IP", "SecurityGroup": "Security group",
             "SecurityGroupRule": "Security group rule"}
    return NotFound(f"{words.get(kind, kind)} {ident} could not be found.", kind=f"{kind}NotFound")


def want(body: dict, name: str, kind, *, where: str, nullable: bool = False, default: Any = None,
         required: bool = False):
    """``body[name]`` checked for type, or a 400 that names the attribute."""
    if name not in body:
        if required:
            raise BadRequest(f"Failed to parse request. Required attribute '{name}' not specified", kind="HTTPBadRequest")
        return default
    value = body[name]
    if value is None and nullable:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise BadRequest(f"Invalid input for {name}. Reason: {value!r} is not a valid {names} (in {where}).",
                         kind="HTTPBadRequest")
    if isinstance(value, str) and len(value) > 1024:
        raise BadRequest(f"Invalid input for {name}. Reason: longer than 1024 characters.", kind="HTTPBadRequest")
    return value


def want_bool(body: dict, name: str, *, where: str, default=None):
    """Neutron accepts booleans as JSON booleans or the strings "true"/"false"."""
    if name not in body:
        return default
    value = body[name]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise BadRequest(f"Invalid input for {name}. Reason: '{value}' is not a valid boolean value.",
                     kind="HTTPBadRequest")


def check_tags(tags) -> list[str]:
    if not isinstance(tags, list) or not all(isinstance(t, str) and 0 < len(t) <= 255 and "," not in t
                                             for t in tags):
        raise BadRequest("Invalid input for tags: a list of non-empty strings (max 255 characters, no ',').",
                         kind="InvalidInput")
    return sorted(set(tags))


_UNSET = object()


def _as_filter_value(value) -> list[str]:
    if value is None:
        return [""]
    if isinstance(value, bool):
        return [str(value).lower(), str(value), "1" if value else "0"]
    if isinstance(value, (list, dict)):
        return []
    return [str(value)]


def apply_filters(items: list[dict], query, skip: set[str]) -> list[dict]:
    """Neutron list filtering: every attribute is a filter, a repeated key means any of the values."""
    keys = [k for k in dict.fromkeys(query.keys()) if k not in skip]
    for key in keys:
        values = query.getlist(key)
        if key in ("tags", "tags-any", "not-tags", "not-tags-any"):
            wanted = {t for v in values for t in v.split(",") if t}
            if key == "tags":
                items = [i for i in items if wanted <= set(i.get("tags", []))]
            elif key == "tags-any":
                items = [i for i in items if wanted & set(i.get("tags", []))]
            elif key == "not-tags":
                items = [i for i in items if not wanted <= set(i.get("tags", []))]
            else:
                items = [i for i in items if not wanted & set(i.get("tags", []))]
            continue
        if key == "fixed_ips":
            conds = []
            for v in values:
                k, _, val = v.partition("=")
                conds.append((k, val))

            def match(item, conds=conds):
                return all(any(ip.get(k) == val for ip in item.get("fixed_ips", [])) for k, val in conds)

            items = [i for i in items if match(i)]
            continue
        if key in ("security_groups", "security_group_ids", "subnets", "availability_zones"):
            field = "security_groups" if key == "security_group_ids" else key
            items = [i for i in items if set(values) & set(i.get(field, []))]
            continue
        sample = next((i for i in items if key in i), None)
        if sample is None:
            # Unknown attribute: neutron without filter validation ignores it.
            continue
        wanted = set(values)
        items = [i for i in items if set(_as_filter_value(i.get(key))) & wanted]
    return items


def project_fields(item: dict, fields: list[str]) -> dict:
    return {k: v for k, v in item.items() if k in fields} if fields else item
