"""limit/marker pagination with ``next`` links, as nova, neutron, cinder and glance do it."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request

from stratus.common.errors import BadRequest


def parse_limit(request: Request, *, default: int | None, maximum: int) -> int | None:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise BadRequest(f"limit must be a non-negative integer, not {raw!r}") from None
    if limit < 0:
        raise BadRequest(f"limit must be a non-negative integer, not {raw!r}")
    return min(limit, maximum)


def next_link(request: Request, marker: str) -> str:
    """The current URL with ``marker`` replaced, keeping every other query parameter."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
    params.append(("marker", marker))
    return str(request.url.replace(query=urlencode(params)))
