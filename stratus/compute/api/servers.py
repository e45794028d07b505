"""/servers: create, list (with nova's filters), show, update, delete; the server's representation."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

import sqlalchemy as sa
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.errors import BadRequest, Forbidden, NotFound
from stratus.common.pagination import parse_limit
from stratus.common.web import JSONResponse, empty, read_json, require_object
from stratus.compute import models as m
from stratus.compute import states
from stratus.compute.api.common import (at_least, check_query, ctx, enforce, field, int_field, iso,
                                        iso_micro, metadata_dict, name_field, paginate_links, parse_time,
                                        query_bool, self_links, svc)
from stratus.compute.api.flavors import embedded_flavor, flavor_snapshot, visible_flavor
from stratus.compute.manager import CreateRequest, new_admin_pass

P = "/v2.1"


# ---- representation ------------------------------------------------------------------------

def host_id(inst: m.Instance) -> str:
    if not inst.host:
        return ""
    return hashlib.sha224((inst.project_id + inst.host).encode()).hexdigest()


def addresses(inst: m.Instance) -> dict:
    out: dict[str, list] = {}
    for nic in inst.network_info or []:
        for ip in nic.get("ips") or []:
            out.setdefault(nic.get("network_name") or nic.get("network_id"), []).append(
                {"version": ip.get("version", 4), "addr": ip["addr"], "OS-EXT-IPS:type": ip.get("type", "fixed"),
                 "OS-EXT-IPS-MAC:mac_addr": nic.get("mac", "")})
    return out


def attached_volumes(request: Request, inst: m.Instance) -> list[dict]:
    out = []
    for r in inst.block_devices or []:
        if isinstance(r, dict) and "attachment_id" in r:
            item = {"id": r["volume_id"]}
            if at_least(request, "2.3"):
                item["delete_on_termination"] = bool(r.get("delete_on_termination"))
            out.append(item)
    return out


def server_view(request: Request, inst: m.Instance, *, is_admin: bool, host_states: dict | None = None,
                groups: dict | None = None) -> dict:
    v = {"id": inst.id, "name": inst.name, "status": states.status(inst.vm_state, inst.task_state),
         "tenant_id": inst.project_id, "user_id": inst.user_id, "metadata": dict(inst.metadata_ or {}),
         "hostId": host_id(inst), "created": iso(inst.created_at), "updated": iso(inst.updated_at),
         "addresses": addresses(inst), "accessIPv4": inst.access_ip_v4 or "", "accessIPv6": inst.access_ip_v6 or "",
         "links": self_links(request, "servers", inst.id), "OS-DCF:diskConfig": inst.disk_config,
         "progress": 0 if v_status_progress(inst) else None,
         "OS-EXT-AZ:availability_zone": inst.availability_zone or "",
         "config_drive": "True" if inst.config_drive else "", "key_name": inst.key_name,
         "OS-SRV-USG:launched_at": iso_micro(inst.launched_at), "OS-SRV-USG:terminated_at": iso_micro(inst.terminated_at),
         "OS-EXT-STS:task_state": inst.task_state, "OS-EXT-STS:vm_state": inst.vm_state,
         "OS-EXT-STS:power_state": inst.power_state,
         "os-extended-volumes:volumes_attached": attached_volumes(request, inst)}
    if v["progress"] is None:
        del v["progress"]
    if inst.image_id:
        image = {"id": inst.image_id,
                 "links": [{"rel": "bookmark", "href": f"{self_links(request, 'images', inst.image_id)[1]['href']}"}]}
        if at_least(request, "2.98"):
            image["properties"] = _image_properties(inst.image_properties or {})
        v["image"] = image
    else:
        v["image"] = ""
    v["flavor"] = embedded_flavor(inst.flavor or {"id": "", "name": "", "vcpus": 0, "ram": 0, "disk": 0}, request)
    if inst.security_groups or inst.network_info:
        v["security_groups"] = [{"name": n} for n in (inst.security_groups or ["default"])]
    if is_admin:
        v["OS-EXT-SRV-ATTR:host"] = inst.host
        v["OS-EXT-SRV-ATTR:hypervisor_hostname"] = inst.node
        v["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{inst.id[:8]}"
        if at_least(request, "2.3"):
            v.update({"OS-EXT-SRV-ATTR:reservation_id": inst.reservation_id,
                      "OS-EXT-SRV-ATTR:launch_index": inst.launch_index,
                      "OS-EXT-SRV-ATTR:hostname": inst.hostname, "OS-EXT-SRV-ATTR:kernel_id": "",
                      "OS-EXT-SRV-ATTR:ramdisk_id": "", "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                      "OS-EXT-SRV-ATTR:user_data": inst.user_data})
    elif at_least(request, "2.90"):
        v["OS-EXT-SRV-ATTR:hostname"] = inst.hostname
    if at_least(request, "2.9"):
        v["locked"] = bool(inst.locked)
    if at_least(request, "2.16") and host_states is not None and inst.host:
        v["host_status"] = host_states.get(inst.host, "UNKNOWN") if is_admin else ""
    elif at_least(request, "2.16"):
        v["host_status"] = ""
    if at_least(request, "2.19"):
        v["description"] = inst.description
    if at_least(request, "2.26"):
        v["tags"] = list(inst.tags or [])
    if at_least(request, "2.63"):
        v["trusted_image_certificates"] = None
    if at_least(request, "2.71") and groups is not None:
        v["server_groups"] = groups.get(inst.id, [])
    if at_least(request, "2.73"):
        v["locked_reason"] = inst.locked_reason
    if at_least(request, "2.96"):
        v["pinned_availability_zone"] = inst.requested_az
    if at_least(request, "2.100"):
        v["scheduler_hints"] = dict(inst.scheduler_hints or {})
    if inst.fault and v["status"] in ("ERROR", "DELETED"):
        fault = {"code": inst.fault.get("code", 500), "created": inst.fault.get("created"),
                 "message": inst.fault.get("message", "")}
        if is_admin:
            fault["details"] = inst.fault.get("details", "")
        v["fault"] = fault
    return v


def v_status_progress(inst: m.Instance) -> bool:
    return states.status(inst.vm_state, inst.task_state) in ("ACTIVE", "BUILD", "REBUILD", "RESIZE",
                                                              "VERIFY_RESIZE", "MIGRATING")


_IMAGE_PROPERTY_SKIP = {"id", "name", "status", "visibility", "protected", "checksum", "owner", "size", "min_ram",
                        "min_disk", "disk_format", "container_format", "created_at", "updated_at", "tags", "self",
                        "file", "schema", "virtual_size", "os_hash_algo", "os_hash_value", "os_hidden",
                        "locations", "direct_url", "stores"}


def _image_properties(meta: dict) -> dict:
    return {k: str(v) for k, v in meta.items() if k not in _IMAGE_PROPERTY_SKIP and isinstance(v, (str, int, float))}


async def host_states(request: Request) -> dict[str, str]:
    state = svc(request)
    async with state.db.reader() as s:
        rows = (await s.execute(sa.select(m.Service).where(m.Service.binary == "nova-compute"))).scalars()
        out = {}
        for r in rows:
            if state.is_up(r):
                out[r.host] = "MAINTENANCE" if r.disabled else "UP"
            else:
                out[r.host] = "DOWN"
    return out


async def group_map(request: Request, ids: list[str]) -> dict[str, list[str]]:
    if not ids:
        return {}
    async with svc(request).db.reader() as s:
        rows = await s.execute(sa.select(m.ServerGroupMember.instance_id, m.ServerGroupMember.group_id)
                               .where(m.ServerGroupMember.instance_id.in_(ids)))
        out: dict[str, list[str]] = {}
        for iid, gid in rows:
            out.setdefault(iid, []).append(gid)
    return out


async def render(request: Request, inst: m.Instance) -> dict:
    c = ctx(request)
    admin = c.is_admin
    hs = await host_states(request) if at_least(request, "2.16") and admin else None
    groups = await group_map(request, [inst.id]) if at_least(request, "2.71") else None
    return server_view(request, inst, is_admin=admin, host_states=hs, groups=groups)


async def _volume_mappings(request: Request, c, bdms: list) -> list[dict]:
    """Validate block_device_mapping_v2 entries whose destination is a volume, normalized for the agent."""
    out = []
    state = svc(request)
    for bdm in bdms:
        if not isinstance(bdm, dict) or bdm.get("destination_type") != "volume":
            continue
        src = bdm.get("source_type")
        if src not in ("image", "volume", "snapshot", "blank"):
            raise BadRequest(f"Invalid source_type {src!r} in block_device_mapping_v2")
        size = bdm.get("volume_size")
        if src != "volume":
            if isinstance(size, str) and size.isdigit():
                size = int(size)
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise BadRequest(f"block_device_mapping_v2 with source_type {src} and destination_type volume "
                                 "needs volume_size (GiB, at least 1)")
        uuid_ = bdm.get("uuid")
        if src != "blank" and not uuid_:
            raise BadRequest(f"block_device_mapping_v2 with source_type {src} needs 'uuid'")
        if src == "volume":
            vol = await state.volumes.get_volume(c.project_id, uuid_)
            if vol.get("status") != "available":
                raise BadRequest(f"Volume {uuid_} is {vol.get('status')}; only an available volume can be used.")
        elif src == "image":
            img = await state.image_lookup.get(c.token, uuid_)
            if img.get("status") != "active":
                raise BadRequest(f"Image {uuid_} is not active.")
        else:
            await state.volumes._base(c.project_id)  # fails with a clear 400 when block storage is absent
        boot_index = bdm.get("boot_index")
        out.append({"source_type": src, "destination_type": "volume", "uuid": uuid_, "volume_size": size,
                    "boot_index": boot_index if boot_index is not None else -1,
                    "delete_on_termination": bool(bdm.get("delete_on_termination", False)),
                    "tag": bdm.get("tag")})
    if sum(1 for b in out if str(b["boot_index"]) == "0") > 1:
        raise BadRequest("block_device_mapping_v2 has more than one volume with boot_index 0")
    return out


async def _create_mapped_volumes(request: Request, c, mappings: list[dict], name: str) -> list[dict]:
    """Make the volumes the mappings ask for, with the user's token (they are the user's volumes);
    the agent waits for them to become available, attaches them and boots."""
    state = svc(request)
    made: list[str] = []
    out = []
    try:
        for i, b in enumerate(mappings):
            if b["source_type"] == "volume":
                out.append(b)
                continue
            vid = await state.volumes.create_volume(
                c.project_id, size=int(b["volume_size"]), name=f"{name}-{i}", token=c.token,
                image_id=b["uuid"] if b["source_type"] == "image" else None,
                snapshot_id=b["uuid"] if b["source_type"] == "snapshot" else None)
            made.append(vid)
            out.append({**b, "source_type": "volume", "uuid": vid, "created": True})
    except Exception:
        for vid in made:
            await state.volumes.delete_volume(c.project_id, vid, wait=0)
        raise
    return out


async def get_server(request: Request, server_id: str | None = None) -> m.Instance:
    c = ctx(request)
    return await svc(request).manager.get(c, server_id or request.path_params["id"])


# ---- list ----------------------------------------------------------------------------------

LIST_PARAMS = {"name", "status", "image", "flavor", "ip", "ip6", "host", "node", "all_tenants", "deleted",
               "changes-since", "changes-before", "tags", "tags-any", "not-tags", "not-tags-any", "locked",
               "project_id", "tenant_id", "user_id", "sort_key", "sort_dir", "limit", "marker", "reservation_id",
               "availability_zone", "vm_state", "task_state", "power_state", "key_name", "description",
               "config_drive", "access_ip_v4", "access_ip_v6", "launched_at", "terminated_at", "created_at",
               "uuid", "hostname", "kernel_id", "ramdisk_id", "progress", "launch_index", "root_device_name",
               "pinned_availability_zone", "image_ref", "display_name", "display_description", "soft_deleted"}
ADMIN_ONLY = {"host", "node", "all_tenants", "project_id", "tenant_id", "user_id", "deleted", "hostname"}
SORT_KEYS = {"created_at": m.Instance.created_at, "updated_at": m.Instance.updated_at,
             "display_name": m.Instance.name, "uuid": m.Instance.id, "vm_state": m.Instance.vm_state,
             "task_state": m.Instance.task_state, "power_state": m.Instance.power_state,
             "launched_at": m.Instance.launched_at, "terminated_at": m.Instance.terminated_at,
             "host": m.Instance.host, "node": m.Instance.node, "project_id": m.Instance.project_id,
             "user_id": m.Instance.user_id, "availability_zone": m.Instance.availability_zone,
             "key_name": m.Instance.key_name, "hostname": m.Instance.hostname, "locked": m.Instance.locked,
             "memory_mb": m.Instance.memory_mb, "vcpus": m.Instance.vcpus, "root_gb": m.Instance.root_gb,
             "image_ref": m.Instance.image_id, "display_description": m.Instance.description}

_TASKED = {"REBOOT": ("active", ["rebooting", "reboot_pending", "reboot_started"]),
           "HARD_REBOOT": ("active", ["rebooting_hard", "reboot_pending_hard", "reboot_started_hard"]),
           "PASSWORD": ("active", ["updating_password"]), "MIGRATING": ("active", ["migrating"]),
           "REBUILD": (None, ["rebuilding", "rebuild_block_device_mapping", "rebuild_spawning"]),
           "RESIZE": (None, ["resize_prep", "resize_migrating", "resize_migrated", "resize_finish"]),
           "REVERT_RESIZE": ("resized", ["resize_reverting"])}


def _status_condition(raw: str, request: Request):
    conds = []
    for name in [x.strip().upper() for x in raw.split(",") if x.strip()]:
        if name not in states.KNOWN_STATUSES:
            if at_least(request, "2.38"):
                raise BadRequest(f"Invalid status value {name!r}: use one of {', '.join(sorted(states.KNOWN_STATUSES))}")
            return sa.false()
        if name in _TASKED:
            vm, tasks = _TASKED[name]
            c = m.Instance.task_state.in_(tasks)
            conds.append(sa.and_(m.Instance.vm_state == vm, c) if vm else c)
        elif name == "UNKNOWN":
            conds.append(sa.false())
        else:
            vms = [vm for vm, _ in states.vm_states_for_status(name)]
            conds.append(m.Instance.vm_state.in_(vms))
    return sa.or_(*conds) if conds else sa.true()


async def _list(request: Request, detail: bool):
    c = enforce(request, "compute:servers:list")
    check_query(request, LIST_PARAMS)
    qp = request.query_params
    admin = c.is_admin
    q = sa.select(m.Instance)
    python_filters: list = []
    all_tenants = qp.get("all_tenants")
    if all_tenants is not None and all_tenants.lower() not in ("false", "0", "no"):
        if not admin:
            raise Forbidden("Policy doesn't allow os_compute_api:servers:index:get_all_tenants to be performed.")
        want_all = True
    else:
        want_all = False
    project = qp.get("project_id") or qp.get("tenant_id")
    if admin and project:
        q = q.where(m.Instance.project_id == project)
    elif not (admin and want_all):
        q = q.where(m.Instance.project_id == c.project_id)
    if admin and qp.get("user_id"):
        q = q.where(m.Instance.user_id == qp["user_id"])
    deleted = qp.get("deleted")
    show_deleted = admin and deleted is not None and deleted.lower() in ("true", "1", "yes")
    if "changes-since" in qp:
        q = q.where(m.Instance.updated_at >= parse_time(qp["changes-since"], "changes-since"))
    else:
        q = q.where(m.Instance.deleted.is_(show_deleted))
    if "changes-before" in qp:
        q = q.where(m.Instance.updated_at <= parse_time(qp["changes-before"], "changes-before"))
    if "status" in qp:
        q = q.where(_status_condition(qp["status"], request))
    if "image" in qp:
        q = q.where(m.Instance.image_id == qp["image"].rstrip("/").rsplit("/", 1)[-1])
    if admin and qp.get("host"):
        q = q.where(m.Instance.host == qp["host"])
    if admin and qp.get("node"):
        q = q.where(m.Instance.node == qp["node"])
    if "reservation_id" in qp:
        q = q.where(m.Instance.reservation_id == qp["reservation_id"])
    if "availability_zone" in qp:
        q = q.where(m.Instance.availability_zone == qp["availability_zone"])
    if "key_name" in qp:
        q = q.where(m.Instance.key_name == qp["key_name"])
    if "locked" in qp and at_least(request, "2.73"):
        q = q.where(m.Instance.locked.is_(bool(query_bool(request, "locked"))))
    if "flavor" in qp:
        fid = qp["flavor"].rstrip("/").rsplit("/", 1)[-1]
        python_filters.append(lambda i: (i.flavor or {}).get("id") == fid)
    for key in ("name", "display_name"):
        if key in qp:
            try:
                pattern = re.compile(qp[key])
            except re.error:
                raise BadRequest(f"Invalid regular expression in name filter: {qp[key]!r}") from None
            python_filters.append(lambda i, p=pattern: p.search(i.name or "") is not None)
            like = _literal_like(qp[key])
            if like:
                # Narrow in SQL first; the regex above still decides.
                q = q.where(m.Instance.name.like(like, escape="\\"))
    for key in ("ip", "ip6"):
        if key in qp:
            try:
                pattern = re.compile(qp[key])
            except re.error:
                raise BadRequest(f"Invalid regular expression in {key} filter") from None
            python_filters.append(lambda i, p=pattern: any(p.search(a["addr"]) for n in addresses(i).values() for a in n))
    if "tags" in qp:
        want = set(qp["tags"].split(","))
        python_filters.append(lambda i, w=want: w <= set(i.tags or []))
    if "tags-any" in qp:
        want = set(qp["tags-any"].split(","))
        python_filters.append(lambda i, w=want: bool(w & set(i.tags or [])))
    if "not-tags" in qp:
        want = set(qp["not-tags"].split(","))
        python_filters.append(lambda i, w=want: not (w <= set(i.tags or [])))
    if "not-tags-any" in qp:
        want = set(qp["not-tags-any"].split(","))
        python_filters.append(lambda i, w=want: not (w & set(i.tags or [])))
    sort_keys = qp.getlist("sort_key") or ["created_at"]
    sort_dirs = qp.getlist("sort_dir") or ["desc"]
    order = []
    for i, key in enumerate(sort_keys):
        if key not in SORT_KEYS:
            raise BadRequest(f"Invalid sort_key {key!r}")
        direction = sort_dirs[i] if i < len(sort_dirs) else sort_dirs[-1]
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort_dir {direction!r}: use asc or desc")
        col = SORT_KEYS[key]
        order.append(col.desc() if direction == "desc" else col.asc())
    last_dir = sort_dirs[0] if sort_dirs else "desc"
    order.append(m.Instance.id.desc() if last_dir == "desc" else m.Instance.id.asc())
    q = q.order_by(*order)
    limit = parse_limit(request, default=None, maximum=svc(request).settings.max_limit)
    if limit is None:
        limit = svc(request).settings.max_limit
    marker = qp.get("marker")
    simple = not python_filters and sort_keys == ["created_at"]
    state = svc(request)
    async with state.db.reader() as s:
        if simple:
            if marker:
                mk = await s.get(m.Instance, marker)
                if mk is None:
                    raise BadRequest(f"marker [{marker}] not found")
                if last_dir == "desc":
                    q = q.where(sa.or_(m.Instance.created_at < mk.created_at,
                                       sa.and_(m.Instance.created_at == mk.created_at, m.Instance.id < mk.id)))
                else:
                    q = q.where(sa.or_(m.Instance.created_at > mk.created_at,
                                       sa.and_(m.Instance.created_at == mk.created_at, m.Instance.id > mk.id)))
            if not detail:
                # The short list needs two columns; skip building full rows.
                q = q.with_only_columns(m.Instance.id, m.Instance.name)
                rows = list((await s.execute(q.limit(limit))).all())
            else:
                rows = list((await s.execute(q.limit(limit))).scalars())
        else:
            rows = [i for i in (await s.execute(q)).scalars() if all(f(i) for f in python_filters)]
            if marker:
                ids = [i.id for i in rows]
                if marker not in ids:
                    raise BadRequest(f"marker [{marker}] not found")
                rows = rows[ids.index(marker) + 1:]
            rows = rows[:limit]
    if detail:
        hs = await host_states(request) if at_least(request, "2.16") and admin else None
        groups = await group_map(request, [i.id for i in rows]) if at_least(request, "2.71") else None
        items = [server_view(request, i, is_admin=admin, host_states=hs, groups=groups) for i in rows]
    else:
        items = [{"id": i.id, "name": i.name, "links": self_links(request, "servers", i.id)} for i in rows]
    body = {"servers": items}
    links = paginate_links(request, "servers", items, limit if qp.get("limit") else None)
    if links:
        body["servers_links"] = links
    return JSONResponse(body)


_REGEX_META = set(".^$*+?{}[]\\|()")


def _literal_like(pattern: str) -> str | None:
    """A LIKE pattern equivalent to (a superset of) a regex that is a plain literal, maybe anchored."""
    anchored = pattern.startswith("^")
    body = pattern[1:] if anchored else pattern
    end = body.endswith("$") and not body.endswith("\\$")
    if end:
        body = body[:-1]
    if not body or any(ch in _REGEX_META for ch in body):
        return None
    escaped = body.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return ("" if anchored else "%") + escaped + ("" if end else "%")


async def list_servers(request: Request):
    return await _list(request, False)


async def list_servers_detail(request: Request):
    return await _list(request, True)


# ---- create --------------------------------------------------------------------------------

CREATE_KEYS = {"name", "imageRef", "flavorRef", "networks", "key_name", "user_data", "metadata", "config_drive",
               "availability_zone", "min_count", "max_count", "block_device_mapping_v2", "block_device_mapping",
               "security_groups", "tags", "description", "hostname", "adminPass", "accessIPv4", "accessIPv6",
               "OS-DCF:diskConfig", "host", "hypervisor_hostname", "return_reservation_id",
               "trusted_image_certificates", "personality"}


def _ref_id(value: str) -> str:
    return value.rstrip("/").rsplit("/", 1)[-1]


async def create_server(request: Request):
    c = enforce(request, "compute:servers:create")
    raw = await read_json(request)
    body = require_object(raw, "server")
    unknown = set(body) - CREATE_KEYS
    if unknown:
        raise BadRequest(f"Invalid input for field/attribute server. Additional properties are not allowed "
                         f"({', '.join(sorted(unknown))} {'was' if len(unknown) == 1 else 'were'} unexpected)")
    state = svc(request)
    name = name_field(body, "name", where="server")
    flavor_ref = field(body, "flavorRef", (str, int), required=True, where="server")
    try:
        flavor = await visible_flavor(request, _ref_id(str(flavor_ref)))
    except NotFound:
        raise BadRequest(f"Flavor {flavor_ref} could not be found.") from None
    if flavor.disabled:
        raise BadRequest(f"Flavor {flavor.id} is disabled and cannot be used.")
    if "personality" in body:
        if at_least(request, "2.57"):
            raise BadRequest("Invalid input for field/attribute server: 'personality' was removed in 2.57")
        raise BadRequest("File injection (personality) is not supported by this cloud; use user_data or a config "
                         "drive instead")
    bdms = field(body, "block_device_mapping_v2", list, default=[], where="server") or []
    if body.get("block_device_mapping"):
        raise BadRequest("Legacy block_device_mapping is not supported; use block_device_mapping_v2")
    image_ref = field(body, "imageRef", str, default="", where="server") or ""
    volume_bdms = await _volume_mappings(request, c, bdms)
    boots_from_volume = any(str(b["boot_index"]) == "0" for b in volume_bdms)
    for bdm in bdms:
        if not isinstance(bdm, dict):
            raise BadRequest("Invalid input for field/attribute block_device_mapping_v2: items must be objects")
        src, dst = bdm.get("source_type"), bdm.get("destination_type", "local")
        if src == "image" and dst == "local" and bdm.get("boot_index") in (0, "0"):
            if boots_from_volume:
                raise BadRequest("block_device_mapping_v2 has two boot devices (boot_index 0)")
            if not image_ref:
                image_ref = bdm.get("uuid") or ""
            elif bdm.get("uuid") and bdm["uuid"] != _ref_id(image_ref):
                raise BadRequest("The image in block_device_mapping_v2 and imageRef differ")
        elif (src == "blank" and dst == "local") or dst == "volume":
            continue
        else:
            raise BadRequest(f"Block device mapping {src}→{dst} is not supported; use source_type image/volume/"
                             "snapshot/blank with destination_type volume, or image→local")
    if boots_from_volume:
        # The root disk is a volume: the server has no image of its own (nova shows image "").
        image_ref = ""
    if not image_ref and not boots_from_volume:
        raise BadRequest("Invalid input for field/attribute imageRef: an image, or a block_device_mapping_v2 "
                         "entry with boot_index 0 and destination_type volume, is required")
    image = None
    if image_ref:
        image = await state.image_lookup.get(c.token, _ref_id(image_ref))
        if image.get("status") != "active":
            raise BadRequest(f"Image {image['id']} is not active.")
        if (image.get("min_ram") or 0) > flavor.memory_mb:
            raise BadRequest(f"Flavor's memory is too small for requested image (image needs {image['min_ram']} MB).")
        if (image.get("min_disk") or 0) > flavor.root_gb and flavor.root_gb > 0:
            raise BadRequest(f"Flavor's disk is too small for requested image (image needs {image['min_disk']} GB).")
        if image.get("size") and flavor.root_gb > 0 and image["size"] > flavor.root_gb * 1024 ** 3:
            raise BadRequest(f"Flavor's disk is too small for requested image ({image['size']} bytes).")
    # Volume mappings travel to the agent with the others (volumes made now); it attaches them.
    if volume_bdms:
        volume_bdms = await _create_mapped_volumes(request, c, volume_bdms, name or "server")
    bdms = [b for b in bdms if not (isinstance(b, dict) and b.get("destination_type") == "volume")] + volume_bdms
    # networks
    if "networks" not in body:
        if at_least(request, "2.37"):
            raise BadRequest("Invalid input for field/attribute server. 'networks' is a required property")
        networks_req = "auto" if await state.network.available() else "none"
    else:
        networks_req = body["networks"]
    if isinstance(networks_req, str):
        if networks_req not in ("auto", "none"):
            raise BadRequest(f"Invalid input for field/attribute networks. Value: {networks_req!r} must be 'auto', "
                             "'none' or a list")
        if networks_req in ("auto", "none") and not at_least(request, "2.37"):
            raise BadRequest("networks 'auto'/'none' need microversion 2.37")
    elif isinstance(networks_req, list):
        for item in networks_req:
            if not isinstance(item, dict) or not (item.get("uuid") or item.get("port")):
                raise BadRequest("Invalid input for field/attribute networks: each item needs 'uuid' or 'port'")
    else:
        raise BadRequest("Invalid input for field/attribute networks: must be 'auto', 'none' or a list")
    min_count = int_field(body, "min_count", minimum=1, default=1)
    max_count = int_field(body, "max_count", minimum=1, default=min_count)
    if max_count < min_count:
        raise BadRequest(f"min_count {min_count} must be <= max_count {max_count}")
    if isinstance(networks_req, list) and any(i.get("port") for i in networks_req) and max_count > 1:
        raise BadRequest("Unable to launch multiple instances with a single configured port ID")
    limits = await state.quotas.limits(c.project_id)
    metadata = metadata_dict(body.get("metadata", {}), max_items=limits.get("metadata_items"))
    key_name = field(body, "key_name", str, nullable=True)
    key_data = None
    if key_name:
        async with state.db.reader() as s:
            kp = await s.get(m.KeyPair, (c.user_id, key_name))
        if kp is None:
            raise BadRequest(f"Invalid key_name provided: keypair {key_name!r} not found")
        key_data = kp.public_key
    user_data = body.get("user_data")
    if user_data is not None:
        if not isinstance(user_data, str) or len(user_data) > 65535:
            raise BadRequest("Invalid input for field/attribute user_data: must be base64 text of at most 65535 bytes")
        try:
            base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("Invalid input for field/attribute user_data: not valid base64") from None
    config_drive = body.get("config_drive", False)
    if isinstance(config_drive, str):
        config_drive = config_drive.lower() in ("true", "1", "yes")
    zone, force_host = None, None
    az = field(body, "availability_zone", str, nullable=True)
    if az:
        parts = az.split(":")
        zone = parts[0] or None
        if len(parts) > 1 and parts[1]:
            enforce(request, "compute:servers:create:forced_host")
            force_host = parts[1]
    if body.get("host") or body.get("hypervisor_hostname"):
        if not at_least(request, "2.74"):
            raise BadRequest("host/hypervisor_hostname need microversion 2.74")
        enforce(request, "compute:servers:create:forced_host")
        force_host = body.get("host") or body.get("hypervisor_hostname")
    if zone:
        async with state.db.reader() as s:
            known = await s.scalar(sa.select(sa.func.count()).select_from(m.Service)
                                   .where(m.Service.zone == zone, m.Service.binary == "nova-compute"))
        if not known:
            raise BadRequest(f"The requested availability zone {zone!r} is not available")
    groups = []
    for sg in field(body, "security_groups", list, default=[]) or []:
        if not isinstance(sg, dict) or not isinstance(sg.get("name"), str):
            raise BadRequest("Invalid input for field/attribute security_groups: items must be {\"name\": ...}")
        groups.append(sg["name"])
    tags = field(body, "tags", list, default=[]) or []
    if tags and not at_least(request, "2.52"):
        raise BadRequest("tags on create need microversion 2.52")
    _check_tags(tags)
    description = None
    if "description" in body:
        if not at_least(request, "2.19"):
            raise BadRequest("description needs microversion 2.19")
        description = field(body, "description", str, nullable=True)
    hostname = None
    if "hostname" in body:
        if not at_least(request, "2.90"):
            raise BadRequest("hostname needs microversion 2.90")
        hostname = _check_hostname(field(body, "hostname", str))
    disk_config = body.get("OS-DCF:diskConfig", "MANUAL")
    if disk_config not in ("AUTO", "MANUAL"):
        raise BadRequest("OS-DCF:diskConfig must be AUTO or MANUAL")
    hints = raw.get("os:scheduler_hints") or raw.get("OS-SCH-HNT:scheduler_hints") or {}
    if not isinstance(hints, dict):
        raise BadRequest("scheduler_hints must be an object")
    group_id = hints.get("group")
    if group_id is not None and not isinstance(group_id, str):
        raise BadRequest("scheduler hint 'group' must be a server group id")
    resolved_networks = await state.network.validate(c.project_id, networks_req)
    if resolved_networks and max_count > 1 and any("port_id" in n for n in resolved_networks):
        raise BadRequest("Unable to launch multiple instances with a single configured port ID")
    admin_pass = body.get("adminPass") or new_admin_pass()
    req = CreateRequest(
        name=name, flavor=flavor_snapshot(flavor), image=image, min_count=min_count, max_count=max_count,
        networks=resolved_networks, key_name=key_name, key_data=key_data, user_data=user_data, metadata=metadata,
        config_drive=bool(config_drive), zone=zone, force_host=force_host, security_groups=groups, tags=tags,
        description=description, hostname=hostname, admin_pass=admin_pass,
        access_ip_v4=body.get("accessIPv4"), access_ip_v6=body.get("accessIPv6"), disk_config=disk_config,
        block_devices=bdms, group_id=group_id, scheduler_hints=hints,
        request_id=request.scope.get("stratus.request_id", ""))
    try:
        instances = await state.manager.create(c, req)
    except Exception:
        # Refused (quota, group, ...): the volumes made for this request must not outlive it.
        for b in volume_bdms:
            if b.get("created"):
                await state.volumes.delete_volume(c.project_id, b["uuid"], wait=5)
        raise
    first = instances[0]
    if body.get("return_reservation_id"):
        return JSONResponse({"reservation_id": first.reservation_id}, status_code=202)
    links = self_links(request, "servers", first.id)
    view = {"id": first.id, "links": links, "OS-DCF:diskConfig": disk_config,
            "security_groups": [{"name": g} for g in (groups or ["default"])], "adminPass": admin_pass}
    return JSONResponse({"server": view}, status_code=202, headers={"Location": links[0]["href"]})


def _check_tags(tags: list) -> None:
    if len(tags) > 50:
        raise BadRequest("A server can have at most 50 tags")
    for t in tags:
        if not isinstance(t, str) or not 1 <= len(t) <= 60 or "," in t or "/" in t:
            raise BadRequest(f"Invalid tag {t!r}: 1-60 characters without ',' or '/'")


_HOSTNAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?$")


def _check_hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise BadRequest(f"Invalid hostname {value!r}: letters, digits, '-' and '.', at most 63 characters")
    return value


# ---- show / update / delete -----------------------------------------------------------------

async def show_server(request: Request):
    enforce(request, "compute:servers:show")
    return JSONResponse({"server": await render(request, await get_server(request))})


async def update_server(request: Request):
    c = enforce(request, "compute:servers:update")
    inst = await get_server(request)
    body = require_object(await read_json(request), "server")
    allowed_keys = {"name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"}
    if at_least(request, "2.19"):
        allowed_keys.add("description")
    if at_least(request, "2.90"):
        allowed_keys.add("hostname")
    unknown = set(body) - allowed_keys
    if unknown:
        raise BadRequest(f"Invalid input for field/attribute server. Additional properties are not allowed "
                         f"({', '.join(sorted(unknown))} unexpected)")
    values = {}
    if "name" in body:
        values["name"] = name_field(body, "name")
    if "description" in body:
        values["description"] = field(body, "description", str, nullable=True)
    if "hostname" in body:
        values["hostname"] = _check_hostname(field(body, "hostname", str))
    for key, col in (("accessIPv4", "access_ip_v4"), ("accessIPv6", "access_ip_v6")):
        if key in body:
            values[col] = field(body, key, str, nullable=True)
    if "OS-DCF:diskConfig" in body:
        if body["OS-DCF:diskConfig"] not in ("AUTO", "MANUAL"):
            raise BadRequest("OS-DCF:diskConfig must be AUTO or MANUAL")
        values["disk_config"] = body["OS-DCF:diskConfig"]
    svc(request).manager.check_lock(c, inst)
    from stratus.common.db import utcnow

    async with svc(request).db.session() as s:
        fresh = await s.get(m.Instance, inst.id)
        for k, v in values.items():
            setattr(fresh, k, v)
        fresh.updated_at = utcnow()
    inst = await get_server(request)
    return JSONResponse({"server": await render(request, inst)})


async def delete_server(request: Request):
    c = enforce(request, "compute:servers:delete")
    inst = await get_server(request)
    await svc(request).manager.delete(c, inst, request.scope.get("stratus.request_id", ""))
    return empty(204)


# ---- metadata, tags, ips ------------------------------------------------------------------

async def _set_metadata(request: Request, inst: m.Instance, new: dict, *, replace: bool) -> dict:
    c = ctx(request)
    svc(request).manager.check_lock(c, inst)
    limits = await svc(request).quotas.limits(inst.project_id)
    from stratus.common.db import utcnow

    async with svc(request).db.session() as s:
        fresh = await s.get(m.Instance, inst.id)
        merged = dict(new) if replace else {**(fresh.metadata_ or {}), **new}
        limit = limits.get("metadata_items", -1)
        if limit >= 0 and len(merged) > limit:
            from stratus.compute.api.common import raise_quota_metadata

            raise_quota_metadata(limit, len(merged))
        fresh.metadata_ = merged
        fresh.updated_at = utcnow()
    return merged


async def list_metadata(request: Request):
    enforce(request, "compute:servers:show")
    return JSONResponse({"metadata": dict((await get_server(request)).metadata_ or {})})


async def update_metadata(request: Request):
    enforce(request, "compute:servers:update")
    inst = await get_server(request)
    body = await read_json(request)
    if not isinstance(body, dict) or "metadata" not in body:
        raise BadRequest("The request body must be an object with a 'metadata' member")
    new = metadata_dict(body["metadata"])
    merged = await _set_metadata(request, inst, new, replace=request.method == "PUT")
    return JSONResponse({"metadata": merged})


async def show_meta(request: Request):
    enforce(request, "compute:servers:show")
    inst = await get_server(request)
    key = request.path_params["key"]
    if key not in (inst.metadata_ or {}):
        raise NotFound(f"Metadata item was not found: {key}")
    return JSONResponse({"meta": {key: inst.metadata_[key]}})


async def set_meta(request: Request):
    enforce(request, "compute:servers:update")
    inst = await get_server(request)
    key = request.path_params["key"]
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("meta"), dict) or len(body["meta"]) != 1:
        raise BadRequest("The request body must be {\"meta\": {key: value}} with exactly one item")
    if key not in body["meta"]:
        raise BadRequest("Request body and URI mismatch: the key in 'meta' must be the key in the URL")
    new = metadata_dict(body["meta"], where="meta")
    await _set_metadata(request, inst, new, replace=False)
    return JSONResponse({"meta": new})


async def delete_meta(request: Request):
    enforce(request, "compute:servers:update")
    inst = await get_server(request)
    key = request.path_params["key"]
    current = dict(inst.metadata_ or {})
    if key not in current:
        raise NotFound(f"Metadata item was not found: {key}")
    del current[key]
    await _set_metadata(request, inst, current, replace=True)
    return empty(204)


def _tags_version(request: Request) -> None:
    if not at_least(request, "2.26"):
        raise NotFound("Server tags need microversion 2.26")


async def list_tags(request: Request):
    _tags_version(request)
    enforce(request, "compute:servers:show")
    return JSONResponse({"tags": list((await get_server(request)).tags or [])})


async def _write_tags(request: Request, inst: m.Instance, tags: list[str]) -> None:
    _check_tags(tags)
    svc(request).manager.check_lock(ctx(request), inst)
    from stratus.common.db import utcnow

    async with svc(request).db.session() as s:
        fresh = await s.get(m.Instance, inst.id)
        fresh.tags = tags
        fresh.updated_at = utcnow()


async def replace_tags(request: Request):
    _tags_version(request)
    enforce(request, "compute:servers:update")
    inst = await get_server(request)
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
        raise BadRequest("The request body must be {\"tags\": [...]}")
    tags = list(dict.fromkeys(body["tags"]))
    await _write_tags(request, inst, tags)
    return JSONResponse({"tags": tags})


async def delete_tags(request: Request):
    _tags_version(request)
    enforce(request, "compute:servers:update")
    await _write_tags(request, await get_server(request), [])
    return empty(204)


async def check_tag(request: Request):
    _tags_version(request)
    enforce(request, "compute:servers:show")
    inst = await get_server(request)
    if request.path_params["tag"] not in (inst.tags or []):
        raise NotFound(f"Tag {request.path_params['tag']} not found on server {inst.id}")
    return empty(204)


async def add_tag(request: Request):
    _tags_version(request)
    enforce(request, "compute:servers:update")
    inst = await get_server(request)
    tag = request.path_params["tag"]
    tags = list(inst.tags or [])
    if tag in tags:
        return empty(204)
    await _write_tags(request, inst, tags + [tag])
    return empty(201, headers={"Location": str(request.url)})


async def delete_tag(request: Request):
    _tags_version(request)
    enforce(request, "compute:servers:update")
    inst = await get_server(request)
    tag = request.path_params["tag"]
    if tag not in (inst.tags or []):
        raise NotFound(f"Tag {tag} not found on server {inst.id}")
    await _write_tags(request, inst, [t for t in inst.tags if t != tag])
    return empty(204)


async def list_ips(request: Request):
    enforce(request, "compute:servers:show")
    return JSONResponse({"addresses": addresses(await get_server(request))})


async def show_ips(request: Request):
    enforce(request, "compute:servers:show")
    net = request.path_params["network"]
    addrs = addresses(await get_server(request))
    if net not in addrs:
        raise NotFound(f"Instance is not a member of specified network {net}")
    return JSONResponse({net: addrs[net]})


routes = [
    Route(f"{P}/servers", list_servers, methods=["GET"]),
    Route(f"{P}/servers", create_server, methods=["POST"]),
    Route(f"{P}/servers/detail", list_servers_detail, methods=["GET"]),
    Route(f"{P}/servers/{{id}}", show_server, methods=["GET"]),
    Route(f"{P}/servers/{{id}}", update_server, methods=["PUT"]),
    Route(f"{P}/servers/{{id}}", delete_server, methods=["DELETE"]),
    Route(f"{P}/servers/{{id}}/metadata", list_metadata, methods=["GET"]),
    Route(f"{P}/servers/{{id}}/metadata", update_metadata, methods=["POST", "PUT"]),
    Route(f"{P}/servers/{{id}}/metadata/{{key}}", show_meta, methods=["GET"]),
    Route(f"{P}/servers/{{id}}/metadata/{{key}}", set_meta, methods=["PUT"]),
    Route(f"{P}/servers/{{id}}/metadata/{{key}}", delete_meta, methods=["DELETE"]),
    Route(f"{P}/servers/{{id}}/tags", list_tags, methods=["GET"]),
    Route(f"{P}/servers/{{id}}/tags", replace_tags, methods=["PUT"]),
    Route(f"{P}/servers/{{id}}/tags", delete_tags, methods=["DELETE"]),
    Route(f"{P}/servers/{{id}}/tags/{{tag}}", check_tag, methods=["GET"]),
    Route(f"{P}/servers/{{id}}/tags/{{tag}}", add_tag, methods=["PUT"]),
    Route(f"{P}/servers/{{id}}/tags/{{tag}}", delete_tag, methods=["DELETE"]),
    Route(f"{P}/servers/{{id}}/ips", list_ips, methods=["GET"]),
    Route(f"{P}/servers/{{id}}/ips/{{network}}", show_ips, methods=["GET"]),
]

__all__ = ["routes", "render", "get_server", "server_view"]
