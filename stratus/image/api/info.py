"""Version discovery, JSON schemas and /v2/info (import methods, stores, usage)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from stratus.common.versions import base_url
from stratus.common.web import JSONResponse
from stratus.image.api.common import ctx, manager, transfers
from stratus.image.manager import CONTAINER_FORMATS, DISK_FORMATS, MEMBER_STATUSES, STATUSES, VISIBILITIES

# Image API minor versions whose features this service implements (2.7 hidden images,
# 2.8 store info, 2.9 import with stores); the highest is CURRENT.
MINORS = list(range(9, -1, -1))


def _versions(request: Request) -> dict:
    href = f"{base_url(request)}/v2/"
    return {"versions": [{"id": f"v2.{m}", "status": "CURRENT" if i == 0 else "SUPPORTED",
                          "links": [{"rel": "self", "href": href}]} for i, m in enumerate(MINORS)]}


async def root_versions(request: Request):
    return JSONResponse(_versions(request), status_code=300)


async def versions(request: Request):
    return JSONResponse(_versions(request))


def image_schema() -> dict:
    nullable_str = {"type": ["null", "string"]}
    return {
        "name": "image",
        "properties": {
            "id": {"type": "string", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$",
                   "description": "An identifier for the image"},
            "name": {**nullable_str, "maxLength": 255, "description": "Descriptive name for the image"},
            "status": {"type": "string", "readOnly": True, "enum": list(STATUSES),
                       "description": "Status of the image"},
            "visibility": {"type": "string", "enum": list(VISIBILITIES), "description": "Scope of image accessibility"},
            "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
            "os_hidden": {"type": "boolean", "description": "If true, image will not appear in default image list response."},
            "checksum": {**nullable_str, "readOnly": True, "maxLength": 32, "description": "md5 hash of image contents."},
            "os_hash_algo": {**nullable_str, "readOnly": True, "maxLength": 64, "description": "Algorithm of os_hash_value"},
            "os_hash_value": {**nullable_str, "readOnly": True, "maxLength": 128, "description": "Hexdigest of the image contents"},
            "owner": {**nullable_str, "maxLength": 255, "description": "Owner of the image"},
            "size": {"type": ["null", "integer"], "readOnly": True, "description": "Size of image file in bytes"},
            "virtual_size": {"type": ["null", "integer"], "readOnly": True, "description": "Virtual size of image in bytes"},
            "container_format": {"type": ["null", "string"], "enum": [None, *CONTAINER_FORMATS],
                                 "description": "Format of the container"},
            "disk_format": {"type": ["null", "string"], "enum": [None, *DISK_FORMATS],
                            "description": "Format of the disk"},
            "created_at": {"type": "string", "readOnly": True, "description": "Date and time of image registration"},
            "updated_at": {"type": "string", "readOnly": True, "description": "Date and time of the last image modification"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}, "description": "List of strings related to the image"},
            "direct_url": {"type": "string", "readOnly": True, "description": "URL to access the image file kept in external store"},
            "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
            "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
            "self": {"type": "string", "readOnly": True, "description": "An image self url"},
            "file": {"type": "string", "readOnly": True, "description": "An image file url"},
            "schema": {"type": "string", "readOnly": True, "description": "An image schema url"},
            "locations": {"type": "array", "items": {"type": "object"}, "readOnly": True,
                          "description": "A set of URLs to access the image file kept in external store"},
        },
        "additionalProperties": {"type": "string"},
        "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
                  {"rel": "describedby", "href": "{schema}"}],
    }


def member_schema() -> dict:
    return {"name": "member", "properties": {
        "image_id": {"type": "string", "description": "An identifier for the image"},
        "member_id": {"type": "string", "description": "An identifier for the image member (project id)"},
        "status": {"type": "string", "enum": list(MEMBER_STATUSES), "description": "The status of this image member"},
        "created_at": {"type": "string", "description": "Date and time of image member creation"},
        "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
        "schema": {"type": "string", "readOnly": True}}}


async def schema_image(request: Request):
    return JSONResponse(image_schema())


async def schema_images(request: Request):
    return JSONResponse({"name": "images", "properties": {
        "images": {"type": "array", "items": image_schema()}, "schema": {"type": "string"},
        "first": {"type": "string"}, "next": {"type": "string"}},
        "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
                  {"rel": "describedby", "href": "{schema}"}]})


async def schema_member(request: Request):
    return JSONResponse(member_schema())


async def schema_members(request: Request):
    return JSONResponse({"name": "members", "properties": {
        "members": {"type": "array", "items": member_schema()}, "schema": {"type": "string"}},
        "links": [{"rel": "describedby", "href": "{schema}"}]})


async def info_import(request: Request):
    ctx(request)
    return JSONResponse({"import-methods": {"description": "Import methods available.", "type": "array",
                                            "value": transfers(request).import_methods()}})


async def info_stores(request: Request):
    ctx(request)
    store = transfers(request).store
    return JSONResponse({"stores": [{"id": store.name, "description": store.description, "default": True}]})


async def info_stores_detail(request: Request):
    c = ctx(request)
    mgr = manager(request)
    mgr.enforcer.enforce(c, "image:stores_detail", {"project_id": c.project_id})
    store = transfers(request).store
    props = {}
    if store.name == "file":
        props = {"datadir": str(store.directory)}
    elif store.name == "s3":
        props = {"bucket": store.bucket, "prefix": store.prefix}
    return JSONResponse({"stores": [{"id": store.name, "description": store.description, "default": True,
                                     "type": store.name, "properties": props}]})


async def info_usage(request: Request):
    c = ctx(request)
    mgr = manager(request)
    used = await mgr.usage(c.project_id)
    s = mgr.settings
    return JSONResponse({"usage": {
        "image_size_total": {"limit": s.image_size_total, "usage": used["size"]},
        "image_count_total": {"limit": s.image_count_total, "usage": used["count"]},
        "image_stage_total": {"limit": s.image_stage_total, "usage": used["staged"]},
        "image_count_uploading": {"limit": -1, "usage": used["uploading"]},
    }})


routes = [
    Route("/", root_versions, methods=["GET", "HEAD"]),
    Route("/versions", versions, methods=["GET", "HEAD"]),
    Route("/versions/", versions, methods=["GET", "HEAD"]),
    Route("/v2", versions, methods=["GET", "HEAD"]),
    Route("/v2/", versions, methods=["GET", "HEAD"]),
    Route("/v2/schemas/image", schema_image, methods=["GET"]),
    Route("/v2/schemas/images", schema_images, methods=["GET"]),
    Route("/v2/schemas/member", schema_member, methods=["GET"]),
    Route("/v2/schemas/members", schema_members, methods=["GET"]),
    Route("/v2/info/import", info_import, methods=["GET"]),
    Route("/v2/info/stores", info_stores, methods=["GET"]),
    Route("/v2/info/stores/detail", info_stores_detail, methods=["GET"]),
    Route("/v2/info/usage", info_usage, methods=["GET"]),
]
