"""The metadata service: what guests read from http://169.254.169.254 (OpenStack and EC2 trees).

It serves exactly the documents the config drive carries (stratus.compute.configdrive), so a
guest sees the same thing either way. Which instance is asking is not this module's business:
the compute service mounts the app and passes a ``lookup``:

    from stratus.compute.metadata import create_metadata_app
    from stratus.compute.configdrive import instance_documents

    async def lookup(request):            # sync or async
        spec = await find_instance_by_source_ip(request)   # e.g. X-Forwarded-For / X-Instance-ID
        return instance_documents(spec) if spec else None  # or return the InstanceSpec itself

    app = create_metadata_app(lookup, save_password=None)

``lookup(request)`` returns the dict made by ``configdrive.instance_documents`` (or an
InstanceSpec, which is turned into one, keeping one random_seed per instance), or None when the
caller is no known instance (404). Behind the network service's metadata proxy, use
``signed_instance_lookup(secret, find)``: it checks X-Instance-ID-Signature (HMAC-SHA256 with
the shared metadata secret) and calls ``find(instance_id)``:

    app = create_metadata_app(signed_instance_lookup(metadata_secret(config), load_spec))
    # mounted at /metadata in the compute app: the proxy forwards to <public url>/compute/metadata ``save_password(request, documents, password)`` (optional, sync or async) stores what a
guest POSTs to openstack/<version>/password; without it that POST answers 404.

Paths (directory listings are newline-separated names, sub-directories with a trailing "/"):
    GET /                                  EC2 versions + "latest"
    GET /openstack[/]                      OpenStack versions + "latest"
    GET /openstack/<version>[/]            meta_data.json, user_data (if any), password,
                                           vendor_data.json, network_data.json, vendor_data2.json
    GET /openstack/<version>/<file>
    POST /openstack/<version>/password
    GET /<ec2 version>[/]                  meta-data/, user-data (if any)
    GET /<ec2 version>/user-data
    GET /<ec2 version>/meta-data/...       the EC2 tree; public-keys/ lists "0=<key name>"
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stratus.compute import configdrive
from stratus.compute.drivers.base import InstanceSpec

LOG = logging.getLogger(__name__)

Lookup = Callable[[Request], "dict | InstanceSpec | None | Awaitable[dict | InstanceSpec | None]"]
SavePassword = Callable[[Request, dict, str], "Any | Awaitable[Any]"]

# Nova's limit on a stored password (it is an encrypted blob, base64).
MAX_PASSWORD_BYTES = 256


def _text(body: str | bytes, status: int = 200, media_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(body, status_code=status, media_type=media_type)


def _not_found(what: str = "Not Found") -> Response:
    return _text(f"404 Not Found\n\n{what}\n", 404)


def _listing(names: list[str]) -> Response:
    return _text("\n".join(names))


def _ec2_node(tree: dict, parts: list[str], key_name: str | None):
    """Walk the EC2 meta-data tree; (found, value). public-keys is presented the EC2 way."""
    node: Any = tree
    for index, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
            continue
        # public-keys/0=name is also reachable as public-keys/0
        if parts[:index] == ["public-keys"] and isinstance(node, dict) and part.split("=", 1)[0] in node:
            node = node[part.split("=", 1)[0]]
            continue
        return False, None
    return True, node


def _ec2_listing(node: dict, parts: list[str], key_name: str | None) -> list[str]:
    if parts == ["public-keys"]:
        return [f"{index}={key_name or 'key'}" for index in sorted(node)]
    return [f"{key}/" if isinstance(value, dict) else key for key, value in node.items()]


def _ec2_value(value) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return str(value)


def signed_instance_lookup(secret: str, find: Callable[[str], Any]) -> Lookup:
    """A ``lookup`` for requests forwarded by the network service's metadata proxy.

    The proxy (stratus/network/metadata.py, like neutron's) adds ``X-Instance-ID`` and
    ``X-Instance-ID-Signature`` = HMAC-SHA256(secret, instance id), hex. The id is trusted only
    when the signature matches; then ``find(instance_id)`` (sync or async) returns the
    instance's InstanceSpec or documents, or None.
    """
    key = secret.encode()

    async def lookup(request: Request):
        instance_id = request.headers.get("x-instance-id", "")
        signature = request.headers.get("x-instance-id-signature", "")
        if not instance_id or not signature:
            return None
        expected = hmac.new(key, instance_id.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            LOG.warning("metadata request for %s with a bad signature refused", instance_id)
            return None
        found = find(instance_id)
        return await found if inspect.isawaitable(found) else found

    return lookup


def create_metadata_app(lookup: Lookup, save_password: SavePassword | None = None) -> Starlette:
    # One random_seed per instance for this app's life: a guest reading meta_data.json twice
    # sees the same document (bounded, oldest forgotten first).
    seeds: dict[str, str] = {}

    async def documents(request: Request) -> dict | None:
        found = lookup(request)
        if inspect.isawaitable(found):
            found = await found
        if isinstance(found, InstanceSpec):
            seed = seeds.get(found.uuid)
            found = configdrive.instance_documents(found, random_seed=seed)
            if seed is None:
                if len(seeds) >= 4096:
                    seeds.pop(next(iter(seeds)))
                seeds[found["uuid"]] = found["meta_data"]["random_seed"]
        return found

    async def handle(request: Request) -> Response:
        parts = [p for p in request.path_params.get("path", "").split("/") if p]
        if not parts:
            return _listing(configdrive.EC2_VERSIONS + ["latest"])
        if parts[0] == "openstack" and len(parts) == 1:
            return _listing(configdrive.OPENSTACK_VERSIONS + ["latest"])
        docs = await documents(request)
        if docs is None:
            return _not_found("This address is not an instance known to the metadata service.")
        if parts[0] == "openstack":
            return await _openstack(request, docs, parts[1:])
        return _ec2(docs, parts)

    async def _openstack(request: Request, docs: dict, parts: list[str]) -> Response:
        version = parts[0]
        try:
            files = configdrive.openstack_files(docs, version)
        except KeyError:
            return _not_found(f"Unknown metadata version {version!r}.")
        if len(parts) == 1:
            return _listing(list(files))
        if len(parts) != 2 or parts[1] not in files:
            return _not_found()
        name = parts[1]
        if request.method == "POST":
            if name != "password":
                return _text("405 Method Not Allowed\n", 405)
            if save_password is None:
                return _not_found("Password storage is not available.")
            body = await request.body()
            if len(body) > MAX_PASSWORD_BYTES:
                return _text(f"400 Bad Request\n\nThe password is longer than {MAX_PASSWORD_BYTES} bytes.\n", 400)
            if docs.get("password"):
                return _text("409 Conflict\n\nA password is already set.\n", 409)
            result = save_password(request, docs, body.decode(errors="replace"))
            if inspect.isawaitable(result):
                await result
            return _text("")
        data = files[name]
        if name.endswith(".json"):
            return _text(data, media_type="application/json")
        if name == "user_data":
            return _text(data, media_type="application/octet-stream")
        return _text(data)

    def _ec2(docs: dict, parts: list[str]) -> Response:
        version = parts[0]
        if version not in configdrive.EC2_VERSIONS and version != "latest":
            return _not_found(f"Unknown metadata version {version!r}.")
        has_user_data = docs.get("user_data") is not None
        if len(parts) == 1:
            return _listing(["meta-data/"] + (["user-data"] if has_user_data else []))
        if parts[1] == "user-data" and len(parts) == 2:
            return _text(docs["user_data"], media_type="application/octet-stream") if has_user_data \
                else _not_found()
        if parts[1] != "meta-data":
            return _not_found()
        tree = docs["ec2_meta_data"]
        found, node = _ec2_node(tree, parts[2:], docs.get("key_name"))
        if not found:
            return _not_found()
        if isinstance(node, dict):
            return _listing(_ec2_listing(node, parts[2:], docs.get("key_name")))
        return _text(_ec2_value(node))

    app = Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])
    app.router.redirect_slashes = False
    return app
