"""Version discovery documents in the shapes keystoneauth accepts (see openstack-api.md §0.2)."""

from __future__ import annotations

from starlette.requests import Request


def base_url(request: Request) -> str:
    """The URL of the service's root as the client sees it (scheme, host, mount prefix)."""
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}{request.scope.get('root_path', '')}"


def version_entry(request: Request, version_id: str, path: str, *, status: str = "CURRENT",
                  min_version: str = "", max_version: str = "", updated: str = "2026-01-01T00:00:00Z",
                  media_type: str = "application/json") -> dict:
    href = f"{base_url(request)}{path}"
    return {
        "id": version_id,
        "status": status,
        "version": max_version,
        "min_version": min_version,
        "updated": updated,
        "links": [{"rel": "self", "href": href}],
        "media-types": [{"base": "application/json", "type": media_type}],
    }
