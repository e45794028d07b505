"""Image records: create, show, list, update (JSON patch), delete, tags, members, visibility.

Byte transfer (upload, stage, import, download) lives in :mod:`stratus.image.transfer`.
Who sees what: an admin sees everything; others see public and community images, their own
project's images, and shared images their project is a member of (listing shows shared images
only once the membership is accepted). An image the caller cannot see is a 404; one they can
see but may not change is a 403.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from stratus.common.context import RequestContext
from stratus.common.db import Database, utcnow
from stratus.common.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge
from stratus.common.policy import Enforcer
from stratus.image.models import Image, ImageMember, ImageProperty, ImageTag
from stratus.image.settings import ImageSettings

log = logging.getLogger("stratus.image")

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "private", "shared", "community")
STATUSES = ("queued", "saving", "active", "killed", "deleted", "pending_delete", "deactivated",
            "uploading", "importing")
MEMBER_STATUSES = ("pending", "accepted", "rejected")

# Attributes clients may set; everything else is either read-only or a free-form property.
MUTABLE = ("name", "visibility", "protected", "os_hidden", "container_format", "disk_format",
           "min_disk", "min_ram", "tags", "owner")
READ_ONLY = ("id", "status", "checksum", "os_hash_algo", "os_hash_value", "size", "virtual_size",
             "created_at", "updated_at", "self", "file", "schema", "locations", "direct_url", "stores")
CORE = (*MUTABLE, *READ_ONLY)
RESERVED_PREFIX = "os_glance"
MAX_PROPERTIES = 128
MAX_TAGS = 128
MAX_MEMBERS = 128

POLICY = {
    "image:get_image": "rule:admin or role:reader",
    "image:get_images": "rule:admin or role:reader",
    "image:add_image": "rule:admin or (role:member and project_id:%(owner)s)",
    "image:modify_image": "rule:admin or (role:member and project_id:%(owner)s)",
    "image:delete_image": "rule:admin or (role:member and project_id:%(owner)s)",
    "image:upload_image": "rule:admin or (role:member and project_id:%(owner)s)",
    "image:download_image": "rule:admin or role:reader",
    "image:publicize_image": "rule:admin",
    "image:communitize_image": "rule:admin or (role:member and project_id:%(owner)s)",
    "image:set_owner": "rule:admin",
    "image:deactivate": "rule:admin or (role:member and project_id:%(owner)s)",
    "image:reactivate": "rule:admin or (role:member and project_id:%(owner)s)",
    "image:import": "rule:admin or (role:member and project_id:%(owner)s)",
    "image:add_member": "rule:admin or (role:member and project_id:%(owner)s)",
    "image:delete_member": "rule:admin or (role:member and project_id:%(owner)s)",
    "image:modify_member": "role:member and project_id:%(member_id)s",
    "image:get_member": "rule:admin or role:reader",
    "image:stores_detail": "rule:admin",
}

SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "virtual_size", "id",
             "created_at", "updated_at", "min_disk", "min_ram", "visibility", "owner", "protected",
             "os_hidden")
EQUALITY_FILTERS = ("name", "status", "owner", "container_format", "disk_format", "id")
NON_PROPERTY_PARAMS = {"limit", "marker", "sort_key", "sort_dir", "sort", "visibility", "member_status",
                       "tag", "size_min", "size_max", "protected", "os_hidden", "created_at", "updated_at",
                       *EQUALITY_FILTERS}


def isotime(value: dt.datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def image_view(img: Image, props: dict[str, str], tags: list[str]) -> dict[str, Any]:
    body = {
        "id": img.id, "name": img.name, "status": img.status, "visibility": img.visibility,
        "protected": img.protected, "os_hidden": img.os_hidden, "owner": img.owner,
        "container_format": img.container_format, "disk_format": img.disk_format, "size": img.size,
        "virtual_size": img.virtual_size, "checksum": img.checksum, "os_hash_algo": img.os_hash_algo,
        "os_hash_value": img.os_hash_value, "min_disk": img.min_disk, "min_ram": img.min_ram,
        "tags": sorted(tags), "created_at": isotime(img.created_at), "updated_at": isotime(img.updated_at),
        "self": f"/v2/images/{img.id}", "file": f"/v2/images/{img.id}/file", "schema": "/v2/schemas/image",
    }
    for key, value in props.items():
        body.setdefault(key, value)
    return body


def member_view(m: ImageMember) -> dict[str, Any]:
    return {"image_id": m.image_id, "member_id": m.member, "status": m.status,
            "created_at": isotime(m.created_at), "updated_at": isotime(m.updated_at),
            "schema": "/v2/schemas/member"}


def _bool_param(name: str, raw: str) -> bool:
    low = raw.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise BadRequest(f"Invalid value {raw!r} for filter '{name}': use true or false.")


def _int_param(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"Invalid value {raw!r} for filter '{name}': an integer is required.") from None


def _time_filter(column, name: str, raw: str):
    ops = {"gt": column.__gt__, "gte": column.__ge__, "lt": column.__lt__, "lte": column.__le__,
           "eq": column.__eq__, "neq": column.__ne__}
    op, sep, value = raw.partition(":")
    if not sep or op not in ops:
        op, value = "eq", raw
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid value {raw!r} for filter '{name}': use [gt|gte|lt|lte|eq|neq:]<ISO 8601 time>.") from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return ops[op](when)


def _check_uuid(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"'{what}' must be a UUID string.")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadRequest(f"'{what}' {value!r} is not a valid UUID.") from None


def validate_attribute(key: str, value: Any) -> Any:
    """A core attribute's value checked; a 400 naming the attribute and the allowed values."""
    if key == "name":
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise BadRequest("'name' must be a string of at most 255 characters or null.")
    elif key == "visibility":
        if value not in VISIBILITIES:
            raise BadRequest(f"Invalid visibility {value!r}; use one of {', '.join(VISIBILITIES)}.")
    elif key in ("protected", "os_hidden"):
        if not isinstance(value, bool):
            raise BadRequest(f"'{key}' must be true or false.")
    elif key == "disk_format":
        if value is not None and value not in DISK_FORMATS:
            raise BadRequest(f"Invalid disk_format {value!r}; use one of {', '.join(DISK_FORMATS)}.")
    elif key == "container_format":
        if value is not None and value not in CONTAINER_FORMATS:
            raise BadRequest(f"Invalid container_format {value!r}; use one of {', '.join(CONTAINER_FORMATS)}.")
    elif key in ("min_disk", "min_ram"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > 2 ** 31 - 1:
            raise BadRequest(f"'{key}' must be a non-negative integer.")
    elif key == "tags":
        if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t) <= 255 for t in value):
            raise BadRequest("'tags' must be a list of strings of 1 to 255 characters.")
        if len(set(value)) > MAX_TAGS:
            raise PayloadTooLarge(f"An image may have at most {MAX_TAGS} tags.")
        value = list(dict.fromkeys(value))
    elif key == "owner":
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 64):
            raise BadRequest("'owner' must be a project id.")
    return value


def validate_property(key: str, value: Any) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= 255:
        raise BadRequest("Property names must be strings of 1 to 255 characters.")
    if key.startswith(RESERVED_PREFIX):
        raise Forbidden(f"Property names starting with '{RESERVED_PREFIX}' are reserved for the service: {key!r}.")
    if not isinstance(value, str):
        raise BadRequest(f"Property {key!r} must be a string, not {type(value).__name__}; "
                         f"only the core attributes take other types.")
    if len(value) > 65535:
        raise BadRequest(f"Property {key!r} is longer than 65535 characters.")
    return value


class ImageManager:
    def __init__(self, db: Database, enforcer: Enforcer, settings: ImageSettings):
        self.db = db
        self.enforcer = enforcer
        self.settings = settings

    # ---- access -------------------------------------------------------------------------------

    def enforce(self, ctx: RequestContext, action: str, img: Image | None = None, **target) -> None:
        if img is not None:
            target.setdefault("owner", img.owner)
        target.setdefault("project_id", ctx.project_id)
        self.enforcer.enforce(ctx, action, target)

    async def _is_member(self, s, image_id: str, project_id: str | None) -> ImageMember | None:
        if not project_id:
            return None
        return (await s.execute(sa.select(ImageMember).where(
            ImageMember.image_id == image_id, ImageMember.member == project_id))).scalar_one_or_none()

    async def visible(self, s, ctx: RequestContext, image_id: str) -> Image:
        """The image if the caller may see it; 404 otherwise (also for ids that are not UUIDs)."""
        img = await s.get(Image, image_id)
        if img is None:
            raise NotFound(f"No image found with ID {image_id}")
        if ctx.is_admin or img.owner == ctx.project_id or img.visibility in ("public", "community"):
            return img
        if img.visibility == "shared" and await self._is_member(s, img.id, ctx.project_id):
            return img
        raise NotFound(f"No image found with ID {image_id}")

    async def _details(self, s, ids: list[str]) -> tuple[dict[str, dict], dict[str, list]]:
        props: dict[str, dict] = {i: {} for i in ids}
        tags: dict[str, list] = {i: [] for i in ids}
        if ids:
            for row in (await s.execute(sa.select(ImageProperty).where(ImageProperty.image_id.in_(ids)))).scalars():
                props[row.image_id][row.name] = row.value
            for row in (await s.execute(sa.select(ImageTag).where(ImageTag.image_id.in_(ids)))).scalars():
                tags[row.image_id].append(row.value)
        return props, tags

    async def render(self, s, img: Image) -> dict:
        props, tags = await self._details(s, [img.id])
        return image_view(img, props[img.id], tags[img.id])

    async def show(self, ctx: RequestContext, image_id: str) -> dict:
        async with self.db.reader() as s:
            img = await self.visible(s, ctx, image_id)
            self.enforce(ctx, "image:get_image", img)
            return await self.render(s, img)

    async def get_record(self, ctx: RequestContext, image_id: str) -> Image:
        async with self.db.reader() as s:
            return await self.visible(s, ctx, image_id)

    # ---- create -------------------------------------------------------------------------------

    def _check_visibility_change(self, ctx: RequestContext, visibility: str, owner: str | None) -> None:
        if visibility == "public":
            self.enforce(ctx, "image:publicize_image", owner=owner)
        elif visibility == "community":
            self.enforce(ctx, "image:communitize_image", owner=owner)

    async def create(self, ctx: RequestContext, body: Any) -> dict:
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object of image attributes.")
        core: dict[str, Any] = {}
        props: dict[str, str] = {}
        image_id = None
        for key, value in body.items():
            if key == "id":
                image_id = _check_uuid(value, "id")
            elif key in READ_ONLY:
                raise BadRequest(f"Attribute '{key}' is read-only.")
            elif key in MUTABLE:
                core[key] = validate_attribute(key, value)
            else:
                props[key] = validate_property(key, value)
        if len(props) > MAX_PROPERTIES:
            raise PayloadTooLarge(f"An image may have at most {MAX_PROPERTIES} properties.")
        owner = core.pop("owner", None) or ctx.project_id
        if owner != ctx.project_id:
            self.enforce(ctx, "image:set_owner", owner=owner)
        self.enforce(ctx, "image:add_image", owner=owner if owner == ctx.project_id else ctx.project_id)
        # Upstream default since Image API 2.5: "shared" (private until members are added).
        visibility = core.pop("visibility", "shared")
        self._check_visibility_change(ctx, visibility, owner)
        tags = core.pop("tags", [])
        limit = self.settings.image_count_total
        async with self.db.session() as s:
            if limit >= 0:
                count = await s.scalar(sa.select(sa.func.count()).select_from(Image).where(Image.owner == owner))
                if count >= limit:
                    raise PayloadTooLarge(f"Project {owner} already has {count} images, its quota "
                                          f"(image_count_total) is {limit}; delete images or ask for a larger quota.")
            image_id = image_id or str(uuid.uuid4())
            if await s.get(Image, image_id) is not None:
                raise Conflict(f"An image with ID {image_id} already exists.")
            now = utcnow()
            img = Image(id=image_id, status="queued", visibility=visibility, owner=owner,
                        protected=core.get("protected", False), os_hidden=core.get("os_hidden", False),
                        name=core.get("name"), container_format=core.get("container_format"),
                        disk_format=core.get("disk_format"), min_disk=core.get("min_disk", 0),
                        min_ram=core.get("min_ram", 0), created_at=now, updated_at=now)
            s.add(img)
            for key, value in props.items():
                s.add(ImageProperty(image_id=image_id, name=key, value=value))
            for tag in tags:
                s.add(ImageTag(image_id=image_id, value=tag))
            try:
                await s.flush()
            except IntegrityError:
                raise Conflict(f"An image with ID {image_id} already exists.") from None
            return image_view(img, props, tags)

    # ---- list ---------------------------------------------------------------------------------

    def _visibility_clause(self, ctx: RequestContext, visibility: str | None, member_status: str):
        project = ctx.project_id or ""
        membership = sa.exists().where(ImageMember.image_id == Image.id, ImageMember.member == project)
        if member_status != "all":
            membership = sa.exists().where(ImageMember.image_id == Image.id, ImageMember.member == project,
                                           ImageMember.status == member_status)
        shared_with_me = sa.and_(Image.visibility == "shared", membership)
        if visibility is None:
            if ctx.is_admin:
                return sa.true()
            return sa.or_(Image.visibility == "public", Image.owner == project, shared_with_me)
        if visibility == "all":
            if ctx.is_admin:
                return sa.true()
            return sa.or_(Image.visibility.in_(("public", "community")), Image.owner == project, shared_with_me)
        if visibility in ("public", "community"):
            return Image.visibility == visibility
        if visibility == "private":
            return sa.and_(Image.visibility == "private", sa.true() if ctx.is_admin else Image.owner == project)
        if visibility == "shared":
            if ctx.is_admin and member_status == "all":
                return Image.visibility == "shared"
            return sa.and_(Image.visibility == "shared", sa.or_(Image.owner == project, membership))
        raise BadRequest(f"Invalid visibility filter {visibility!r}; use one of "
                         f"{', '.join((*VISIBILITIES, 'all'))}.")

    @staticmethod
    def _sort_spec(params) -> list[tuple[str, str]]:
        sort = params.get("sort")
        keys = params.getlist("sort_key")
        dirs = params.getlist("sort_dir")
        spec: list[tuple[str, str]] = []
        if sort is not None:
            if keys or dirs:
                raise BadRequest("Use either 'sort' or 'sort_key'/'sort_dir', not both.")
            for part in sort.split(","):
                key, _, direction = part.strip().partition(":")
                spec.append((key, direction or "desc"))
        else:
            if len(dirs) > max(len(keys), 1):
                raise BadRequest("There are more sort_dir values than sort_key values.")
            keys = keys or ["created_at"]
            for i, key in enumerate(keys):
                spec.append((key, dirs[i] if i < len(dirs) else (dirs[0] if len(dirs) == 1 else "desc")))
        for key, direction in spec:
            if key not in SORT_KEYS:
                raise BadRequest(f"Invalid sort key {key!r}; use one of {', '.join(SORT_KEYS)}.")
            if direction not in ("asc", "desc"):
                raise BadRequest(f"Invalid sort direction {direction!r}; use asc or desc.")
        if not any(k == "id" for k, _ in spec):
            spec.append(("id", spec[-1][1] if spec else "desc"))
        return spec

    @staticmethod
    def _sort_expr(key: str):
        col = getattr(Image, key)
        if key in ("name", "owner", "container_format", "disk_format"):
            return sa.func.coalesce(col, "")
        if key in ("size", "virtual_size"):
            return sa.func.coalesce(col, -1)
        return col

    def _filters(self, params) -> list:
        out = []
        for key in EQUALITY_FILTERS:
            raw = params.get(key)
            if raw is None:
                continue
            col = getattr(Image, key)
            if raw.startswith("in:"):
                values = [v.strip().strip('"') for v in raw[3:].split(",") if v.strip()]
                out.append(col.in_(values))
            else:
                out.append(col == raw)
        if (raw := params.get("protected")) is not None:
            out.append(Image.protected == _bool_param("protected", raw))
        hidden = params.get("os_hidden")
        out.append(Image.os_hidden == (_bool_param("os_hidden", hidden) if hidden is not None else False))
        if (raw := params.get("size_min")) is not None:
            out.append(Image.size >= _int_param("size_min", raw))
        if (raw := params.get("size_max")) is not None:
            out.append(Image.size <= _int_param("size_max", raw))
        for key in ("created_at", "updated_at"):
            if (raw := params.get(key)) is not None:
                out.append(_time_filter(getattr(Image, key), key, raw))
        for tag in params.getlist("tag"):
            out.append(sa.exists().where(ImageTag.image_id == Image.id, ImageTag.value == tag))
        for key, value in params.multi_items():
            if key not in NON_PROPERTY_PARAMS:
                out.append(sa.exists().where(ImageProperty.image_id == Image.id, ImageProperty.name == key,
                                             ImageProperty.value == value))
        return out

    async def list(self, ctx: RequestContext, params) -> tuple[list[dict], str | None]:
        """One page of images and the marker of the next page (None on the last)."""
        self.enforcer.enforce(ctx, "image:get_images", {"project_id": ctx.project_id})
        member_status = params.get("member_status", "accepted")
        if member_status not in (*MEMBER_STATUSES, "all"):
            raise BadRequest(f"Invalid member_status {member_status!r}; use pending, accepted, rejected or all.")
        raw_limit = params.get("limit")
        limit = self.settings.page_size
        if raw_limit not in (None, ""):
            limit = _int_param("limit", raw_limit)
            if limit < 0:
                raise BadRequest("limit must be a non-negative integer.")
            limit = min(limit, self.settings.max_page_size)
        spec = self._sort_spec(params)
        query = sa.select(Image).where(self._visibility_clause(ctx, params.get("visibility"), member_status),
                                       *self._filters(params))
        exprs = [(self._sort_expr(k), d) for k, d in spec]
        async with self.db.reader() as s:
            marker = params.get("marker")
            if marker:
                row = (await s.execute(sa.select(*[e for e, _ in exprs]).where(Image.id == marker))).first()
                if row is None:
                    raise BadRequest(f"The marker {marker} does not name an image you can list.")
                ors = []
                for i, (expr, direction) in enumerate(exprs):
                    eqs = [exprs[j][0] == row[j] for j in range(i)]
                    ors.append(sa.and_(*eqs, expr > row[i] if direction == "asc" else expr < row[i]))
                query = query.where(sa.or_(*ors))
            query = query.order_by(*[e.asc() if d == "asc" else e.desc() for e, d in exprs]).limit(limit + 1)
            images = list((await s.execute(query)).scalars())
            more = len(images) > limit
            images = images[:limit]
            props, tags = await self._details(s, [i.id for i in images])
        views = [image_view(i, props[i.id], tags[i.id]) for i in images]
        return views, (images[-1].id if more and images else None)

    # ---- update -------------------------------------------------------------------------------

    @staticmethod
    def _patch_path(op: dict) -> str:
        path = op.get("path")
        if not isinstance(path, str) or not path.startswith("/") or path == "/":
            raise BadRequest(f"Invalid JSON patch path {path!r}: use /<attribute>.")
        parts = path[1:].split("/")
        if len(parts) != 1:
            if parts[0] in ("locations", "tags"):
                raise BadRequest(f"Patching {path!r} is not supported; replace /{parts[0]} as a whole.")
            raise BadRequest(f"Invalid JSON patch path {path!r}: use /<attribute>.")
        return parts[0].replace("~1", "/").replace("~0", "~")

    async def update(self, ctx: RequestContext, image_id: str, ops: Any) -> dict:
        if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
            raise BadRequest("The request body must be a JSON patch: a list of {op, path, value} objects.")
        async with self.db.session() as s:
            img = await self.visible(s, ctx, image_id)
            self.enforce(ctx, "image:modify_image", img)
            props, tags_map = await self._details(s, [img.id])
            props = dict(props[img.id])
            core = {k: getattr(img, k) for k in MUTABLE if k != "tags"}
            tags = list(tags_map[img.id])
            original_visibility, original_owner = img.visibility, img.owner
            for op in ops:
                name = op.get("op")
                if name not in ("add", "replace", "remove"):
                    raise BadRequest(f"Unsupported JSON patch operation {name!r}: use add, replace or remove.")
                key = self._patch_path(op)
                if name != "remove" and "value" not in op:
                    raise BadRequest(f"JSON patch operation {name} of /{key} needs a 'value'.")
                value = op.get("value")
                if key in READ_ONLY:
                    raise BadRequest(f"Attribute '{key}' is read-only.")
                if key in MUTABLE:
                    if name == "remove":
                        raise BadRequest(f"Attribute '{key}' is a core attribute and cannot be removed.")
                    value = validate_attribute(key, value)
                    if key == "tags":
                        tags = value
                    else:
                        if key in ("disk_format", "container_format") and value != core[key] \
                                and img.status != "queued":
                            raise Conflict(f"Attribute '{key}' can only be changed while the image is queued "
                                           f"(its status is {img.status}).")
                        core[key] = value
                    continue
                if name == "remove":
                    if key not in props:
                        raise Conflict(f"Property {key!r} does not exist on image {img.id}.")
                    del props[key]
                elif name == "replace" and key not in props:
                    raise Conflict(f"Property {key!r} does not exist on image {img.id}; use 'add'.")
                else:
                    props[key] = validate_property(key, value)
            if len(props) > MAX_PROPERTIES:
                raise PayloadTooLarge(f"An image may have at most {MAX_PROPERTIES} properties.")
            if core["owner"] != original_owner:
                self.enforce(ctx, "image:set_owner", owner=core["owner"])
            if core["visibility"] != original_visibility:
                self._check_visibility_change(ctx, core["visibility"], img.owner)
            for key, value in core.items():
                setattr(img, key, value)
            img.updated_at = utcnow()
            await s.execute(sa.delete(ImageProperty).where(ImageProperty.image_id == img.id))
            await s.execute(sa.delete(ImageTag).where(ImageTag.image_id == img.id))
            for key, value in props.items():
                s.add(ImageProperty(image_id=img.id, name=key, value=value))
            for tag in tags:
                s.add(ImageTag(image_id=img.id, value=tag))
            await s.flush()
            return image_view(img, props, tags)

    async def properties(self, image_id: str, names: tuple[str, ...]) -> dict[str, str]:
        async with self.db.reader() as s:
            rows = await s.execute(sa.select(ImageProperty.name, ImageProperty.value).where(
                ImageProperty.image_id == image_id, ImageProperty.name.in_(names)))
            return {name: value for name, value in rows}

    async def set_internal_property(self, image_id: str, key: str, value: str | None) -> None:
        """Properties the service itself keeps (the reserved os_glance_* names)."""
        async with self.db.session() as s:
            await s.execute(sa.delete(ImageProperty).where(ImageProperty.image_id == image_id,
                                                           ImageProperty.name == key))
            if value is not None and await s.get(Image, image_id) is not None:
                s.add(ImageProperty(image_id=image_id, name=key, value=value))

    # ---- delete -------------------------------------------------------------------------------

    async def delete(self, ctx: RequestContext, image_id: str) -> Image:
        """Remove the record; returns it so the caller can delete its data from the store."""
        async with self.db.session() as s:
            img = await self.visible(s, ctx, image_id)
            self.enforce(ctx, "image:delete_image", img)
            if img.protected:
                raise Forbidden(f"Image {img.id} is protected and cannot be deleted; "
                                f"set protected=false first.")
            await s.execute(sa.delete(ImageProperty).where(ImageProperty.image_id == img.id))
            await s.execute(sa.delete(ImageTag).where(ImageTag.image_id == img.id))
            await s.execute(sa.delete(ImageMember).where(ImageMember.image_id == img.id))
            await s.execute(sa.delete(Image).where(Image.id == img.id))
            return img

    # ---- status actions -----------------------------------------------------------------------

    async def set_active_state(self, ctx: RequestContext, image_id: str, deactivate: bool) -> None:
        async with self.db.session() as s:
            img = await self.visible(s, ctx, image_id)
            self.enforce(ctx, "image:deactivate" if deactivate else "image:reactivate", img)
            source, target = ("active", "deactivated") if deactivate else ("deactivated", "active")
            if img.status == target:
                return
            if img.status != source:
                verb = "deactivate" if deactivate else "reactivate"
                raise Forbidden(f"Not allowed to {verb} an image in status '{img.status}'; "
                                f"only a{'n' if source == 'active' else ''} {source} image can be {verb}d.")
            result = await s.execute(sa.update(Image).where(Image.id == img.id, Image.status == source)
                                     .values(status=target, updated_at=utcnow()))
            if result.rowcount != 1:
                raise Conflict(f"Image {img.id} changed status while it was being {'de' if deactivate else 're'}activated.")

    # ---- tags ---------------------------------------------------------------------------------

    async def add_tag(self, ctx: RequestContext, image_id: str, tag: str) -> None:
        validate_attribute("tags", [tag])
        async with self.db.session() as s:
            img = await self.visible(s, ctx, image_id)
            self.enforce(ctx, "image:modify_image", img)
            existing = set((await s.execute(sa.select(ImageTag.value).where(ImageTag.image_id == img.id))).scalars())
            if tag in existing:
                return
            if len(existing) >= MAX_TAGS:
                raise PayloadTooLarge(f"Image {img.id} already has {MAX_TAGS} tags, the maximum.")
            s.add(ImageTag(image_id=img.id, value=tag))
            img.updated_at = utcnow()

    async def delete_tag(self, ctx: RequestContext, image_id: str, tag: str) -> None:
        async with self.db.session() as s:
            img = await self.visible(s, ctx, image_id)
            self.enforce(ctx, "image:modify_image", img)
            result = await s.execute(sa.delete(ImageTag).where(ImageTag.image_id == img.id, ImageTag.value == tag))
            if result.rowcount == 0:
                raise NotFound(f"Image {img.id} has no tag {tag!r}.")
            img.updated_at = utcnow()

    # ---- members ------------------------------------------------------------------------------

    async def list_members(self, ctx: RequestContext, image_id: str) -> list[dict]:
        async with self.db.reader() as s:
            img = await self.visible(s, ctx, image_id)
            self.enforce(ctx, "image:get_member", img)
            if img.visibility != "shared":
                raise Forbidden(f"Only shared images have members; image {img.id} is {img.visibility}.")
            query = sa.select(ImageMember).where(ImageMember.image_id == img.id)
            if not (ctx.is_admin or img.owner == ctx.project_id):
                query = query.where(ImageMember.member == (ctx.project_id or ""))
            rows = (await s.execute(query.order_by(ImageMember.created_at))).scalars()
            return [member_view(m) for m in rows]

    async def show_member(self, ctx: RequestContext, image_id: str, member_id: str) -> dict:
        async with self.db.reader() as s:
            img = await self.visible(s, ctx, image_id)
            self.enforce(ctx, "image:get_member", img)
            if not (ctx.is_admin or img.owner == ctx.project_id or member_id == ctx.project_id):
                raise NotFound(f"Project {member_id} is not a member of image {img.id}.")
            m = await self._is_member(s, img.id, member_id)
            if m is None:
                raise NotFound(f"Project {member_id} is not a member of image {img.id}.")
            return member_view(m)

    async def add_member(self, ctx: RequestContext, image_id: str, member_id: Any) -> dict:
        if not isinstance(member_id, str) or not 0 < len(member_id) <= 64:
            raise BadRequest("'member' must be a project id.")
        async with self.db.session() as s:
            img = await self.visible(s, ctx, image_id)
            self.enforce(ctx, "image:add_member", img)
            if img.visibility != "shared":
                raise Forbidden(f"Only shared images have members; image {img.id} is {img.visibility}. "
                                f"Set visibility=shared first.")
            if member_id == img.owner:
                raise BadRequest("The image's owner cannot be a member of it.")
            if await self._is_member(s, img.id, member_id):
                raise Conflict(f"Project {member_id} is already a member of image {img.id}.")
            count = await s.scalar(sa.select(sa.func.count()).select_from(ImageMember)
                                   .where(ImageMember.image_id == img.id))
            if count >= MAX_MEMBERS:
                raise PayloadTooLarge(f"Image {img.id} already has {MAX_MEMBERS} members, the maximum.")
            now = utcnow()
            m = ImageMember(image_id=img.id, member=member_id, status="pending", created_at=now, updated_at=now)
            s.add(m)
            try:
                await s.flush()
            except IntegrityError:
                raise Conflict(f"Project {member_id} is already a member of image {img.id}.") from None
            return member_view(m)

    async def update_member(self, ctx: RequestContext, image_id: str, member_id: str, body: Any) -> dict:
        status = body.get("status") if isinstance(body, dict) else None
        if status not in MEMBER_STATUSES:
            raise BadRequest(f"'status' must be one of {', '.join(MEMBER_STATUSES)}.")
        async with self.db.session() as s:
            img = await self.visible(s, ctx, image_id)
            m = await self._is_member(s, img.id, member_id)
            if m is None or not (ctx.is_admin or img.owner == ctx.project_id or member_id == ctx.project_id):
                raise NotFound(f"Project {member_id} is not a member of image {img.id}.")
            if member_id != ctx.project_id:
                raise Forbidden("Only the member project itself can accept or reject a shared image.")
            self.enforce(ctx, "image:modify_member", img, member_id=member_id)
            m.status = status
            m.updated_at = utcnow()
            await s.flush()
            return member_view(m)

    async def delete_member(self, ctx: RequestContext, image_id: str, member_id: str) -> None:
        async with self.db.session() as s:
            img = await self.visible(s, ctx, image_id)
            if not (ctx.is_admin or img.owner == ctx.project_id):
                if member_id == ctx.project_id and await self._is_member(s, img.id, member_id):
                    raise Forbidden("Only the image's owner can remove members; reject the image instead.")
                raise NotFound(f"Project {member_id} is not a member of image {img.id}.")
            self.enforce(ctx, "image:delete_member", img)
            result = await s.execute(sa.delete(ImageMember).where(ImageMember.image_id == img.id,
                                                                  ImageMember.member == member_id))
            if result.rowcount == 0:
                raise NotFound(f"Project {member_id} is not a member of image {img.id}.")

    # ---- usage --------------------------------------------------------------------------------

    async def usage(self, project_id: str | None, *, exclude: str | None = None) -> dict[str, int]:
        async with self.db.reader() as s:
            base = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(Image.size), 0)).where(
                Image.owner == (project_id or ""))
            if exclude:
                base = base.where(Image.id != exclude)
            count, total = (await s.execute(base)).one()
            stored = (await s.execute(base.where(Image.status.in_(("active", "deactivated", "saving",
                                                                   "importing"))))).one()[1]
            staged = (await s.execute(base.where(Image.status == "uploading"))).one()[1]
            uploading = (await s.execute(base.where(Image.status.in_(("saving", "uploading",
                                                                      "importing"))))).one()[0]
        return {"count": int(count), "size": int(stored), "staged": int(staged), "uploading": int(uploading),
                "all_sizes": int(total)}
