"""/v3/{project_id}/volumes: records, actions (extend, flags, legacy attach flow), metadata."""

from __future__ import annotations

import ast
import datetime as dt
import json

import sqlalchemy as sa
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.db import new_uuid
from stratus.common.errors import BadRequest, NotFound
from stratus.common.pagination import parse_limit
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.volume import models as m
from stratus.volume.api.common import (at_least, collection_next, context, field, manager, metadata_dict,
                                       parse_bool, positive_size, require_admin, volume_view)

P = "/v3/{project_id}"
VOLUME_STATUSES = {"creating", "available", "reserved", "attaching", "in-use", "detaching", "maintenance",
                   "deleting", "awaiting-transfer", "error", "error_deleting", "error_managing", "managing",
                   "backing-up", "restoring-backup", "error_backing-up", "error_restoring", "error_extending",
                   "downloading", "uploading", "retyping", "extending"}


async def get_volume(request: Request, ctx, volume_id: str) -> m.Volume:
    return await manager(request).get(m.Volume, volume_id, ctx, kind="volume")


async def render(request: Request, ctx, vols: list[m.Volume], *, brief: bool = False) -> list[dict]:
    mgr = manager(request)
    atts = await mgr.attachments_of([v.id for v in vols])
    types = await mgr.types_by_id()
    return [volume_view(request, v, atts.get(v.id, []), types.get(v.volume_type_id), ctx, brief=brief) for v in vols]


def parse_sort(request: Request) -> list[tuple[str, str]]:
    q = request.query_params
    out = []
    if q.get("sort"):
        for part in q["sort"].split(","):
            key, _, direction = part.strip().partition(":")
            out.append((key, (direction or "desc").lower()))
    elif q.get("sort_key"):
        out.append((q["sort_key"], q.get("sort_dir", "desc").lower()))
    for _, direction in out:
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid input received: sort direction {direction!r} must be asc or desc.")
    return out


def parse_offset(request: Request) -> int:
    raw = request.query_params.get("offset")
    if not raw:
        return 0
    if not raw.isdigit():
        raise BadRequest(f"Invalid input received: offset {raw!r} must be a non-negative integer.")
    return int(raw)


def parse_query_metadata(raw: str | None) -> dict:
    if not raw:
        return {}
    for parser in (json.loads, ast.literal_eval):
        try:
            value = parser(raw)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
    raise BadRequest(f"Invalid input received: metadata filter {raw!r} must be a JSON object.")


def parse_time_filter(request: Request, key: str) -> list:
    raw = request.query_params.get(key)
    if raw is None:
        return []
    if not at_least(request, "3.60"):
        return []
    out = []
    for part in raw.split(","):
        op, _, when = part.partition(":")
        if op not in ("gt", "gte", "lt", "lte", "eq", "neq") or not when:
            raise BadRequest(f"Invalid input received: {key} filter {part!r} must look like gt:2026-01-01T00:00:00.")
        try:
            moment = dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"Invalid input received: {when!r} in the {key} filter is not an ISO 8601 time.") from None
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
        out.append((key, op, moment))
    return out


async def list_volumes(request: Request, detail: bool = False):
    ctx = context(request)
    q = request.query_params
    filters, like = {}, {}
    for key in ("name", "status", "availability_zone"):
        if q.get(key) is not None:
            filters[key] = q[key]
        if at_least(request, "3.34") and q.get(f"{key}~") is not None:
            like[key] = q[f"{key}~"]
    if q.get("bootable") is not None:
        filters["bootable"] = parse_bool(q["bootable"], "bootable")
    all_projects = parse_bool(q.get("all_tenants") or q.get("all_projects") or "false", "all_tenants")
    limit = parse_limit(request, default=None, maximum=1000)
    vols = await manager(request).list_volumes(
        ctx, all_projects=all_projects, project_id=q.get("project_id"), filters=filters, like=like,
        metadata=parse_query_metadata(q.get("metadata")),
        time_filters=parse_time_filter(request, "created_at") + parse_time_filter(request, "updated_at"),
        sort=parse_sort(request), limit=limit, marker=q.get("marker"), offset=parse_offset(request))
    body = {"volumes": await render(request, ctx, vols, brief=not detail),
            **collection_next(request, vols, limit, "volumes")}
    if at_least(request, "3.45") and parse_bool(q.get("with_count", "false"), "with_count"):
        body["count"] = len(vols)
    return JSONResponse(body)


async def list_volumes_detail(request: Request):
    return await list_volumes(request, detail=True)


async def volume_summary(request: Request):
    if not at_least(request, "3.12"):
        raise NotFound("The resource could not be found: volumes/summary needs microversion 3.12.")
    ctx = context(request)
    all_projects = parse_bool(request.query_params.get("all_tenants", "false"), "all_tenants")
    vols = await manager(request).list_volumes(ctx, all_projects=all_projects, project_id=None, filters={}, like={},
                                               metadata={}, time_filters=[], sort=[], limit=None, marker=None, offset=0)
    meta: dict[str, list] = {}
    for v in vols:
        for k, val in (v.metadata_ or {}).items():
            meta.setdefault(k, [])
            if val not in meta[k]:
                meta[k].append(val)
    summary = {"total_size": sum(v.size for v in vols), "total_count": len(vols)}
    if at_least(request, "3.36"):
        summary["metadata"] = meta
    return JSONResponse({"volume-summary": summary})


async def create_volume(request: Request):
    ctx = context(request, write=True)
    body = require_object(await read_json(request), "volume")
    mgr = manager(request)
    snapshot_id = field(body, "snapshot_id", str, where="volume")
    source_volid = field(body, "source_volid", str, where="volume")
    image_ref = field(body, "imageRef", str, where="volume") or field(body, "image_id", str, where="volume")
    backup_id = field(body, "backup_id", str, where="volume") if at_least(request, "3.47") else None
    sources = [x for x in (snapshot_id, source_volid, image_ref, backup_id) if x]
    if len(sources) > 1:
        raise BadRequest("Invalid input received: give only one of snapshot_id, source_volid, imageRef, backup_id.")
    snapshot = source = backup = None
    if snapshot_id:
        snapshot = await mgr.get(m.Snapshot, snapshot_id, ctx, kind="snapshot")
        if snapshot.status != "available":
            raise BadRequest(f"Invalid snapshot: snapshot {snapshot_id} is {snapshot.status}, not available.")
    if source_volid:
        source = await mgr.get(m.Volume, source_volid, ctx, kind="volume")
        if source.status not in ("available", "in-use"):
            raise BadRequest(f"Invalid volume: source volume {source_volid} is {source.status}; it must be "
                             f"available or in-use.")
    if backup_id:
        backup = await mgr.get(m.Backup, backup_id, ctx, kind="backup")
        if backup.status != "available":
            raise BadRequest(f"Invalid backup: backup {backup_id} is {backup.status}, not available.")
    raw_size = body.get("size")
    if raw_size is None:
        if snapshot:
            size = snapshot.size
        elif source:
            size = source.size
        elif backup:
            size = backup.size
        else:
            raise BadRequest("Invalid input for field/attribute size. 'size' is a required property.")
    else:
        size = positive_size(raw_size)
    minimum = (snapshot.size if snapshot else source.size if source else backup.size if backup else 1)
    if size < minimum:
        raise BadRequest(f"Invalid input received: volume size {size} GiB is smaller than its source "
                         f"({minimum} GiB).")
    if size > mgr.settings["max_volume_size_gb"]:
        raise BadRequest(f"Invalid input received: volume size {size} GiB is larger than this cloud's largest "
                         f"volume ({mgr.settings['max_volume_size_gb']} GiB).")
    if image_ref:
        await check_image(request, image_ref, size)
    type_ref = field(body, "volume_type", str, where="volume")
    if not type_ref and source is not None:
        type_ref = source.volume_type_id
    vtype = await mgr.find_type(type_ref, ctx)
    multiattach = parse_bool(body.get("multiattach") or False, "multiattach") or \
        (vtype.extra_specs or {}).get("multiattach", "").lower() in ("<is> true", "true")
    if multiattach:
        raise BadRequest("Invalid input received: multiattach volumes are not supported by this cloud's back ends "
                         "(one NBD export per attachment).")
    zone = field(body, "availability_zone", str, where="volume")
    if zone:
        known = [z for z, _ in await mgr.zones()]
        if zone not in known:
            raise BadRequest(f"Invalid input received: availability zone {zone!r} does not exist "
                             f"(known: {', '.join(known)}).")
    vol = await mgr.create_volume(
        ctx, size=size, name=field(body, "name", str, where="volume") or field(body, "display_name", str),
        description=field(body, "description", str, where="volume") or field(body, "display_description", str),
        vtype=vtype, zone=zone, metadata=metadata_dict(body.get("metadata")), snapshot=snapshot, source=source,
        image_id=image_ref, backup=backup, multiattach=multiattach)
    return JSONResponse({"volume": (await render(request, ctx, [vol]))[0]}, status_code=202)


async def check_image(request: Request, image_ref: str, size: int) -> None:
    """Refuse at once an image that does not exist or cannot fit, instead of a later error."""
    client = request.app.state.runtime_client
    if client is None:
        raise BadRequest("Invalid input received: the image service is not available to create volumes from.")
    try:
        resp = await client.request("image", "GET", f"/v2/images/{image_ref}")
    except LookupError:
        raise BadRequest("Invalid input received: the image service is not in the catalog.") from None
    if resp.status_code == 404:
        raise BadRequest(f"Invalid image identifier or unable to access requested image {image_ref}.")
    if resp.status_code != 200:
        raise BadRequest(f"Image {image_ref} could not be read from the image service ({resp.status_code}).")
    image = resp.json()
    if image.get("status") != "active":
        raise BadRequest(f"Image {image_ref} is not active (status {image.get('status')}).")
    min_disk = int(image.get("min_disk") or 0)
    if min_disk > size:
        raise BadRequest(f"Invalid input received: image {image_ref} needs at least {min_disk} GiB (min_disk); "
                         f"the volume would be {size} GiB.")
    image_size = int(image.get("size") or 0)
    if image.get("disk_format") == "raw" and image_size > size * 1024 ** 3:
        raise BadRequest(f"Invalid input received: image {image_ref} is {image_size} bytes, larger than a "
                         f"{size} GiB volume.")


async def show_volume(request: Request):
    ctx = context(request)
    vol = await get_volume(request, ctx, request.path_params["volume_id"])
    return JSONResponse({"volume": (await render(request, ctx, [vol]))[0]})


async def update_volume(request: Request):
    ctx = context(request, write=True)
    vol = await get_volume(request, ctx, request.path_params["volume_id"])
    body = require_object(await read_json(request), "volume")
    values = {}
    for key, alias in (("name", "display_name"), ("description", "display_description")):
        if key in body or alias in body:
            values[key] = field(body, key if key in body else alias, str, where="volume")
    if "metadata" in body:
        values["metadata_"] = metadata_dict(body["metadata"])
    if not values:
        raise BadRequest("Invalid input received: give at least one of name, description, metadata to update.")
    await manager(request).update(m.Volume, vol.id, **values)
    vol = await get_volume(request, ctx, vol.id)
    return JSONResponse({"volume": (await render(request, ctx, [vol]))[0]})


async def delete_volume(request: Request):
    ctx = context(request, write=True)
    vol = await get_volume(request, ctx, request.path_params["volume_id"])
    q = request.query_params
    cascade = parse_bool(q.get("cascade", "false"), "cascade")
    force = parse_bool(q.get("force", "false"), "force")
    if force:
        require_admin(request)
    await manager(request).delete_volume(ctx, vol, cascade=cascade, force=force)
    return empty(202)


# ---- actions -------------------------------------------------------------------------------

async def volume_action(request: Request):
    ctx = context(request, write=True)
    vol = await get_volume(request, ctx, request.path_params["volume_id"])
    body = await read_json(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("Invalid input received: the action body must be an object with exactly one action, "
                         "e.g. {\"os-extend\": {\"new_size\": 2}}.")
    name, args = next(iter(body.items()))
    handler = ACTIONS.get(name)
    if handler is None:
        raise BadRequest(f"Invalid input received: unknown volume action {name!r}.")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadRequest(f"Invalid input received: the arguments of {name} must be an object or null.")
    return await handler(request, ctx, vol, args)


async def act_extend(request, ctx, vol, args):
    new_size = positive_size(args.get("new_size"), "new_size")
    await manager(request).extend(ctx, vol, new_size, allow_in_use=at_least(request, "3.42"))
    return empty(202)


async def act_set_bootable(request, ctx, vol, args):
    if "bootable" not in args:
        raise BadRequest("Invalid input for field/attribute bootable. 'bootable' is a required property.")
    await manager(request).update(m.Volume, vol.id, bootable=parse_bool(args["bootable"], "bootable"))
    return empty(200)


async def act_readonly(request, ctx, vol, args):
    if "readonly" not in args:
        raise BadRequest("Invalid input for field/attribute readonly. 'readonly' is a required property.")
    await manager(request).update(m.Volume, vol.id, readonly=parse_bool(args["readonly"], "readonly"))
    return empty(202)


async def act_reset_status(request, ctx, vol, args):
    require_admin(request)
    values = {}
    if args.get("status") is not None:
        if args["status"] not in VOLUME_STATUSES:
            raise BadRequest(f"Invalid input received: {args['status']!r} is not a volume status.")
        values["status"] = args["status"]
    if args.get("attach_status") is not None:
        if args["attach_status"] not in ("attached", "detached"):
            raise BadRequest("Invalid input received: attach_status must be attached or detached.")
        values["attach_status"] = args["attach_status"]
    if not values:
        raise BadRequest("Invalid input received: give status and/or attach_status.")
    await manager(request).update(m.Volume, vol.id, **values)
    return empty(202)


async def act_force_delete(request, ctx, vol, args):
    require_admin(request)
    await manager(request).delete_volume(ctx, vol, cascade=True, force=True)
    return empty(202)


async def act_set_image_metadata(request, ctx, vol, args):
    meta = metadata_dict(args.get("metadata"))
    await manager(request).update(m.Volume, vol.id, image_metadata={**(vol.image_metadata or {}), **meta})
    return JSONResponse({"metadata": {**(vol.image_metadata or {}), **meta}})


async def act_unset_image_metadata(request, ctx, vol, args):
    key = field(args, "key", str, required=True)
    meta = dict(vol.image_metadata or {})
    if key not in meta:
        raise NotFound(f"Glance metadata key {key} of volume {vol.id} could not be found.")
    meta.pop(key)
    await manager(request).update(m.Volume, vol.id, image_metadata=meta)
    return empty(200)


async def act_show_image_metadata(request, ctx, vol, args):
    return JSONResponse({"metadata": dict(vol.image_metadata or {})})


async def act_revert(request, ctx, vol, args):
    if not at_least(request, "3.40"):
        raise BadRequest("Invalid input received: revert needs microversion 3.40.")
    mgr = manager(request)
    snap = await mgr.get(m.Snapshot, field(args, "snapshot_id", str, required=True), ctx, kind="snapshot")
    if snap.volume_id != vol.id:
        raise BadRequest(f"Invalid input received: snapshot {snap.id} is not a snapshot of volume {vol.id}.")
    latest = (await mgr.list_snapshots(ctx, all_projects=True, filters={"volume_id": vol.id}, sort=[], limit=1,
                                       marker=None, offset=0))
    if latest and latest[0].id != snap.id:
        raise BadRequest(f"Invalid snapshot: only the latest snapshot ({latest[0].id}) can be reverted to.")
    if snap.status != "available":
        raise BadRequest(f"Invalid snapshot: snapshot {snap.id} is {snap.status}, not available.")
    if snap.size != vol.size:
        raise BadRequest("Invalid volume: the volume was extended after the snapshot; it cannot be reverted.")
    await mgr.claim(m.Volume, vol.id, ("available",), {"status": "reverting"}, what="Volume")
    await mgr.update(m.Snapshot, snap.id, status="restoring")
    await mgr.cast(vol, "revert_to_snapshot", volume_id=vol.id, snapshot_id=snap.id)
    return empty(202)


# Legacy attach flow (before the attachments API): reserve → initialize_connection → attach,
# begin_detaching → terminate_connection → detach.

async def _legacy_attachment(request, vol, *, create: bool, instance_uuid: str | None = None,
                             attachment_id: str | None = None) -> m.Attachment | None:
    mgr = manager(request)
    atts = (await mgr.attachments_of([vol.id])).get(vol.id, [])
    if attachment_id:
        for a in atts:
            if a.id == attachment_id:
                return a
        raise NotFound(f"Attachment {attachment_id} of volume {vol.id} could not be found.")
    pending = [a for a in atts if a.status != "attached"] or atts
    if instance_uuid:
        pending = [a for a in atts if a.instance_uuid in (instance_uuid, None)] or pending
    if pending:
        return pending[-1]
    if not create:
        return None
    att = m.Attachment(id=new_uuid(), volume_id=vol.id,
                       project_id=vol.project_id, instance_uuid=instance_uuid, status="reserved",
                       attach_mode="ro" if vol.readonly else "rw")
    async with mgr.db.session() as s:
        s.add(att)
    return att


async def act_reserve(request, ctx, vol, args):
    mgr = manager(request)
    await mgr.reserve(vol, instance_uuid=None, mode="ro" if vol.readonly else "rw")
    return empty(202)


async def act_unreserve(request, ctx, vol, args):
    mgr = manager(request)
    att = await _legacy_attachment(request, vol, create=False)
    if att is not None and att.status in ("reserved", "attaching"):
        await mgr.detach(vol, att)
    elif vol.status in ("reserved", "attaching"):
        await mgr.update(m.Volume, vol.id, status="available")
    return empty(202)


async def act_initialize_connection(request, ctx, vol, args):
    connector = args.get("connector")
    if not isinstance(connector, dict):
        raise BadRequest("Invalid input for field/attribute connector: an object with 'host' is required.")
    mgr = manager(request)
    if vol.status not in ("reserved", "attaching", "in-use", "available"):
        raise BadRequest(f"Invalid volume: volume {vol.id} is {vol.status}; reserve it first.")
    att = await _legacy_attachment(request, vol, create=True)
    info = await mgr.connect(vol, att, connector)
    if vol.status == "in-use":
        await mgr.update(m.Volume, vol.id, status="in-use")
    return JSONResponse({"connection_info": info})


async def act_attach(request, ctx, vol, args):
    instance_uuid = field(args, "instance_uuid", str)
    host_name = field(args, "host_name", str)
    if not instance_uuid and not host_name:
        raise BadRequest("Invalid input received: os-attach needs instance_uuid or host_name.")
    mountpoint = field(args, "mountpoint", str, required=True)
    mode = field(args, "mode", str, default="rw")
    if mode not in ("rw", "ro"):
        raise BadRequest("Invalid input received: mode must be rw or ro.")
    mgr = manager(request)
    if vol.status not in ("reserved", "attaching", "available"):
        raise BadRequest(f"Invalid volume: volume {vol.id} is {vol.status}; it cannot be attached.")
    att = await _legacy_attachment(request, vol, create=True, instance_uuid=instance_uuid)
    await mgr.update(m.Attachment, att.id, attach_mode=mode)
    await mgr.complete(att, mountpoint=mountpoint, instance_uuid=instance_uuid, host=host_name)
    return empty(202)


async def act_begin_detaching(request, ctx, vol, args):
    await manager(request).claim(m.Volume, vol.id, ("in-use",), {"status": "detaching"}, what="Volume")
    return empty(202)


async def act_roll_detaching(request, ctx, vol, args):
    mgr = manager(request)
    async with mgr.db.session() as s:
        await s.execute(sa.update(m.Volume).where(m.Volume.id == vol.id, m.Volume.status == "detaching")
                        .values(status="in-use"))
    return empty(202)


async def act_detach(request, ctx, vol, args):
    mgr = manager(request)
    att = await _legacy_attachment(request, vol, create=False, attachment_id=field(args, "attachment_id", str))
    if att is None:
        raise BadRequest(f"Invalid volume: volume {vol.id} is not attached.")
    await mgr.detach(vol, att)
    return empty(202)


async def act_terminate_connection(request, ctx, vol, args):
    mgr = manager(request)
    atts = (await mgr.attachments_of([vol.id])).get(vol.id, [])
    connector = args.get("connector") or {}
    for att in atts:
        if att.export and (not connector.get("host") or att.attached_host in (None, connector.get("host"))):
            await mgr.call(vol, "terminate_connection", attachment_id=att.id)
    return empty(202)


UPLOAD_FORMATS = ("raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx")


async def act_upload_image(request, ctx, vol, args):
    mgr = manager(request)
    name = field(args, "image_name", str, required=True)
    disk_format = field(args, "disk_format", str, default="raw")
    if disk_format not in UPLOAD_FORMATS:
        raise BadRequest(f"Invalid input received: disk_format must be one of {', '.join(UPLOAD_FORMATS)}.")
    container_format = field(args, "container_format", str, default="bare")
    if container_format != "bare":
        raise BadRequest("Invalid input received: container_format must be bare.")
    force = parse_bool(args.get("force") if args.get("force") is not None else False, "force")
    allowed = ("available", "in-use") if force else ("available",)
    if vol.status not in allowed:
        raise BadRequest(f"Invalid volume: volume {vol.id} is {vol.status}; it must be available"
                         f"{' (or in-use with force=true)' if vol.status == 'in-use' else ''} to upload it.")
    image = {"name": name, "disk_format": disk_format, "container_format": container_format}
    if at_least(request, "3.1"):
        if args.get("visibility") is not None:
            image["visibility"] = field(args, "visibility", str)
        if args.get("protected") is not None:
            image["protected"] = parse_bool(args["protected"], "protected")
    for key in ("min_disk",):
        image[key] = vol.size
    for key, value in (vol.image_metadata or {}).items():
        if key == "min_ram" and str(value).isdigit():
            image["min_ram"] = int(value)
        elif key not in ("image_id", "image_name", "checksum", "size", "virtual_size", "container_format",
                         "disk_format", "min_disk", "min_ram") and not key.startswith("owner_specified"):
            image[key] = value  # image properties the volume inherited (hw_*, os_distro, ...)
    client = request.app.state.runtime_client
    try:
        base = await client.credentials.endpoint("image")
    except LookupError:
        raise BadRequest("Invalid input received: the image service is not in the catalog.") from None
    # The image belongs to the caller: it is created (and later filled) with the caller's token.
    resp = await client.client.post(f"{base}/v2/images", json=image, headers={"X-Auth-Token": ctx.token})
    if resp.status_code != 201:
        raise BadRequest(f"The image service refused the new image ({resp.status_code}): {resp.text[:300]}")
    created = resp.json()
    previous = vol.status
    await mgr.claim(m.Volume, vol.id, allowed, {"status": "uploading"}, what="Volume")
    await mgr.cast(vol, "upload_to_image", volume_id=vol.id, image_id=created["id"], disk_format=disk_format,
                   token=ctx.token, restore_status=previous)
    vtype = (await mgr.types_by_id()).get(vol.volume_type_id)
    return JSONResponse({"os-volume_upload_image": {
        "id": vol.id, "updated_at": created.get("updated_at"), "status": "uploading",
        "display_description": vol.description, "size": vol.size,
        "volume_type": {"id": vtype.id, "name": vtype.name} if vtype else None, "image_id": created["id"],
        "container_format": container_format, "disk_format": disk_format, "image_name": name,
        "protected": created.get("protected", False), "visibility": created.get("visibility")}}, status_code=202)


async def act_retype(request, ctx, vol, args):
    mgr = manager(request)
    new_type = await mgr.find_type(field(args, "new_type", str, required=True), ctx)
    if vol.status not in ("available", "in-use"):
        raise BadRequest(f"Invalid volume: volume {vol.id} is {vol.status}; it must be available or in-use.")
    # Every type lives on the same back end here, so a retype only relabels the volume.
    await mgr.check_quota(vol.project_id, {f"volumes_{new_type.name}": 1, f"gigabytes_{new_type.name}": vol.size})
    await mgr.update(m.Volume, vol.id, volume_type_id=new_type.id)
    return empty(202)


ACTIONS = {
    "os-extend": act_extend,
    "os-set_bootable": act_set_bootable,
    "os-update_readonly_flag": act_readonly,
    "os-reset_status": act_reset_status,
    "os-force_delete": act_force_delete,
    "os-set_image_metadata": act_set_image_metadata,
    "os-unset_image_metadata": act_unset_image_metadata,
    "os-show_image_metadata": act_show_image_metadata,
    "revert": act_revert,
    "os-reserve": act_reserve,
    "os-unreserve": act_unreserve,
    "os-initialize_connection": act_initialize_connection,
    "os-attach": act_attach,
    "os-begin_detaching": act_begin_detaching,
    "os-roll_detaching": act_roll_detaching,
    "os-detach": act_detach,
    "os-terminate_connection": act_terminate_connection,
    "os-volume_upload_image": act_upload_image,
    "os-retype": act_retype,
}


# ---- metadata ------------------------------------------------------------------------------

async def metadata_get(request: Request):
    ctx = context(request)
    vol = await get_volume(request, ctx, request.path_params["volume_id"])
    return JSONResponse({"metadata": dict(vol.metadata_ or {})})


async def metadata_write(request: Request):
    ctx = context(request, write=True)
    vol = await get_volume(request, ctx, request.path_params["volume_id"])
    body = await read_json(request)
    if not isinstance(body, dict) or "metadata" not in body:
        raise BadRequest("Malformed request body: expected {\"metadata\": {...}}.")
    meta = metadata_dict(body["metadata"])
    new = meta if request.method == "PUT" else {**(vol.metadata_ or {}), **meta}
    await manager(request).update(m.Volume, vol.id, metadata_=new)
    return JSONResponse({"metadata": new})


async def metadata_item(request: Request):
    ctx = context(request, write=request.method != "GET")
    vol = await get_volume(request, ctx, request.path_params["volume_id"])
    key = request.path_params["key"]
    meta = dict(vol.metadata_ or {})
    if request.method == "GET":
        if key not in meta:
            raise NotFound(f"Metadata item {key} of volume {vol.id} could not be found.")
        return JSONResponse({"meta": {key: meta[key]}})
    if request.method == "DELETE":
        if key not in meta:
            raise NotFound(f"Metadata item {key} of volume {vol.id} could not be found.")
        meta.pop(key)
        await manager(request).update(m.Volume, vol.id, metadata_=meta)
        return empty(200)
    body = await read_json(request)
    item = metadata_dict(body.get("meta") if isinstance(body, dict) else None, "meta")
    if list(item) != [key]:
        raise BadRequest(f"Invalid input received: the body must be {{\"meta\": {{\"{key}\": \"value\"}}}}.")
    meta.update(item)
    await manager(request).update(m.Volume, vol.id, metadata_=meta)
    return JSONResponse({"meta": item})


routes = [
    Route(f"{P}/volumes", list_volumes, methods=["GET"]),
    Route(f"{P}/volumes", create_volume, methods=["POST"]),
    Route(f"{P}/volumes/detail", list_volumes_detail, methods=["GET"]),
    Route(f"{P}/volumes/summary", volume_summary, methods=["GET"]),
    Route(f"{P}/volumes/{{volume_id}}", show_volume, methods=["GET"]),
    Route(f"{P}/volumes/{{volume_id}}", update_volume, methods=["PUT"]),
    Route(f"{P}/volumes/{{volume_id}}", delete_volume, methods=["DELETE"]),
    Route(f"{P}/volumes/{{volume_id}}/action", volume_action, methods=["POST"]),
    Route(f"{P}/volumes/{{volume_id}}/metadata", metadata_get, methods=["GET"]),
    Route(f"{P}/volumes/{{volume_id}}/metadata", metadata_write, methods=["POST", "PUT"]),
    Route(f"{P}/volumes/{{volume_id}}/metadata/{{key}}", metadata_item, methods=["GET", "PUT", "DELETE"]),
]
