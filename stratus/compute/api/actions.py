"""POST /servers/{id}/action, remote consoles, console tokens and instance action history."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from urllib.parse import quote

import sqlalchemy as sa
from starlette.requests import Request
from starlette.routing import Route

from stratus.common.db import utcnow
from stratus.common.errors import BadRequest, Conflict, Forbidden, NotFound
from stratus.common.web import JSONResponse, empty, read_json
from stratus.compute import models as m
from stratus.compute.api.common import (at_least, ctx, enforce, field, iso_micro, metadata_dict, name_field,
                                        self_links, svc)
from stratus.compute.api.flavors import flavor_snapshot, visible_flavor
from stratus.compute.api.servers import _check_hostname, _ref_id, get_server, render
from stratus.compute.manager import new_admin_pass, record_action

P = "/v2.1"


def _rid(request: Request) -> str:
    return request.scope.get("stratus.request_id", "")


async def server_action(request: Request):
    c = enforce(request, "compute:servers:action")
    body = await read_json(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("The action body must be an object with exactly one action key")
    name, args = next(iter(body.items()))
    handler = HANDLERS.get(name)
    if handler is None:
        raise BadRequest(f"There is no such action: {name}")
    inst = await get_server(request)
    return await handler(request, c, inst, args)


# ---- simple power actions ------------------------------------------------------------------

async def _reboot(request, c, inst, args):
    if not isinstance(args, dict) or str(args.get("type", "")).upper() not in ("SOFT", "HARD"):
        raise BadRequest("Invalid input for field/attribute reboot: 'type' must be SOFT or HARD")
    hard = args["type"].upper() == "HARD"
    await svc(request).manager.simple_action(
        c, inst, "reboot", "rebooting_hard" if hard else "rebooting", _rid(request),
        guard="reboot_hard" if hard else "reboot_soft", params={"type": args["type"].upper()})
    return empty(202)


def _simple(action: str, task: str, guard: str | None = None, record: str | None = None):
    async def handler(request, c, inst, args):
        await svc(request).manager.simple_action(c, inst, action, task, _rid(request), guard=guard or action,
                                                 record=record)
        return empty(202)
    return handler


async def _lock(request, c, inst, args):
    reason = None
    if isinstance(args, dict) and "locked_reason" in args:
        if not at_least(request, "2.73"):
            raise BadRequest("locked_reason needs microversion 2.73")
        reason = field(args, "locked_reason", str, nullable=True)
        if reason is not None and len(reason) > 255:
            raise BadRequest("locked_reason must be at most 255 characters")
    async with svc(request).db.session() as s:
        await s.execute(sa.update(m.Instance).where(m.Instance.id == inst.id).values(
            locked=True, locked_by="admin" if c.is_admin and c.project_id != inst.project_id else "owner",
            locked_reason=reason, updated_at=utcnow()))
        await record_action(s, inst.id, "lock", c, _rid(request))
    return empty(202)


async def _unlock(request, c, inst, args):
    if inst.locked and inst.locked_by == "admin" and not c.is_admin:
        raise Forbidden("The server was locked by an administrator; only an administrator can unlock it")
    async with svc(request).db.session() as s:
        await s.execute(sa.update(m.Instance).where(m.Instance.id == inst.id).values(
            locked=False, locked_by=None, locked_reason=None, updated_at=utcnow()))
        await record_action(s, inst.id, "unlock", c, _rid(request))
    return empty(202)


async def _rescue(request, c, inst, args):
    args = args if isinstance(args, dict) else {}
    params = {}
    if args.get("rescue_image_ref"):
        meta = await svc(request).image_lookup.get(c.token, _ref_id(args["rescue_image_ref"]))
        params["rescue_image"] = meta
    password = args.get("adminPass") or new_admin_pass()
    await svc(request).manager.simple_action(c, inst, "rescue", "rescuing", _rid(request), params=params)
    return JSONResponse({"adminPass": password})


# ---- resize / migrate / evacuate ---------------------------------------------------------------

async def _resize(request, c, inst, args):
    if not isinstance(args, dict) or "flavorRef" not in args:
        raise BadRequest("Invalid input for field/attribute resize: 'flavorRef' is a required property")
    try:
        flavor = await visible_flavor(request, _ref_id(str(args["flavorRef"])))
    except NotFound:
        raise BadRequest(f"Flavor {args['flavorRef']} could not be found.") from None
    await svc(request).manager.resize(c, inst, flavor_snapshot(flavor), _rid(request))
    return empty(202)


async def _confirm(request, c, inst, args):
    await svc(request).manager.confirm_resize(c, inst, _rid(request))
    return empty(204)


async def _revert(request, c, inst, args):
    await svc(request).manager.revert_resize(c, inst, _rid(request))
    return empty(202)


async def _migrate(request, c, inst, args):
    enforce(request, "compute:servers:migrate")
    host = None
    if isinstance(args, dict) and args.get("host"):
        if not at_least(request, "2.56"):
            raise BadRequest("migrate with a host needs microversion 2.56")
        host = args["host"]
    await svc(request).manager.resize(c, inst, inst.flavor, _rid(request), migrate=True, force_host=host)
    return empty(202)


async def _evacuate(request, c, inst, args):
    enforce(request, "compute:servers:evacuate")
    args = args if isinstance(args, dict) else {}
    await svc(request).manager.evacuate(c, inst, _rid(request), args.get("host"))
    if not at_least(request, "2.14"):
        return JSONResponse({"adminPass": args.get("adminPass") or new_admin_pass()})
    return empty(200)


# ---- rebuild / image -------------------------------------------------------------------------

async def _rebuild(request, c, inst, args):
    if not isinstance(args, dict) or not args.get("imageRef"):
        raise BadRequest("Invalid input for field/attribute rebuild: 'imageRef' is a required property")
    state = svc(request)
    image = await state.image_lookup.get(c.token, _ref_id(args["imageRef"]))
    if image.get("status") != "active":
        raise BadRequest(f"Image {image['id']} is not active.")
    flavor = inst.flavor or {}
    if (image.get("min_ram") or 0) > flavor.get("ram", 0):
        raise BadRequest(f"Flavor's memory is too small for requested image (image needs {image['min_ram']} MB).")
    if (image.get("min_disk") or 0) > flavor.get("disk", 0) > 0:
        raise BadRequest(f"Flavor's disk is too small for requested image (image needs {image['min_disk']} GB).")
    extra = {"image_id": image["id"], "image_properties": image, "launched_at": None}
    if "name" in args:
        extra["name"] = name_field(args, "name")
    if "metadata" in args:
        extra["metadata_"] = metadata_dict(args["metadata"])
    if "description" in args:
        if not at_least(request, "2.19"):
            raise BadRequest("description needs microversion 2.19")
        extra["description"] = field(args, "description", str, nullable=True)
    if "key_name" in args:
        if not at_least(request, "2.54"):
            raise BadRequest("key_name on rebuild needs microversion 2.54")
        key_name = field(args, "key_name", str, nullable=True)
        if key_name:
            async with state.db.reader() as s:
                kp = await s.get(m.KeyPair, (c.user_id, key_name))
            if kp is None:
                raise BadRequest(f"Invalid key_name provided: keypair {key_name!r} not found")
            extra.update(key_name=key_name, key_data=kp.public_key)
        else:
            extra.update(key_name=None, key_data=None)
    if "user_data" in args:
        if not at_least(request, "2.57"):
            raise BadRequest("user_data on rebuild needs microversion 2.57")
        extra["user_data"] = field(args, "user_data", str, nullable=True)
    if "hostname" in args:
        if not at_least(request, "2.90"):
            raise BadRequest("hostname on rebuild needs microversion 2.90")
        extra["hostname"] = _check_hostname(field(args, "hostname", str))
    password = args.get("adminPass") or new_admin_pass()
    del extra["launched_at"]
    await state.manager.simple_action(c, inst, "rebuild", "rebuilding", _rid(request), extra=extra)
    fresh = await get_server(request)
    view = await render(request, fresh)
    view["adminPass"] = password
    return JSONResponse({"server": view}, status_code=202)


async def _create_image(request, c, inst, args):
    if not isinstance(args, dict):
        raise BadRequest("Invalid input for field/attribute createImage: must be an object")
    name = name_field(args, "name", where="createImage")
    metadata = metadata_dict(args.get("metadata", {}))
    state = svc(request)
    state.manager.check_lock(c, inst)
    from stratus.compute import states

    if inst.vm_state not in states.ACTIONS["create_image"]["vm"] or inst.task_state is not None:
        what = f"vm_state {inst.vm_state}" + (f" with task_state {inst.task_state}" if inst.task_state else "")
        raise Conflict(f"Cannot 'createImage' instance {inst.id} while it is in {what}")
    base = inst.image_properties or {}
    body = {"name": name, "disk_format": base.get("disk_format") or "raw",
            "container_format": base.get("container_format") or "bare", "visibility": "private",
            "instance_uuid": inst.id, "image_type": "snapshot", "base_image_ref": inst.image_id or "",
            "owner_specified.openstack.object": "images/" + (inst.image_id or ""), **metadata}
    body.pop("owner_specified.openstack.object")
    for key in ("architecture", "hw_architecture", "os_distro", "os_type", "hw_disk_bus"):
        if key in base and key not in body:
            body[key] = base[key]
    image = await state.image_lookup.create(c.token, body)
    action_id = await state.manager.begin(c, inst, "create_image", "image_snapshot", _rid(request),
                                          record="createImage")
    await state.manager.cast(inst.host, "run_action", instance_id=inst.id, action="snapshot",
                             params={"image_id": image["id"]}, action_id=action_id)
    location = self_links(request, "images", image["id"])[0]["href"]
    if at_least(request, "2.45"):
        return JSONResponse({"image_id": image["id"]}, status_code=202)
    return empty(202, headers={"Location": location})


# ---- consoles --------------------------------------------------------------------------------

async def _console_output(request, c, inst, args):
    length = None
    if isinstance(args, dict) and args.get("length") is not None:
        raw = args["length"]
        try:
            length = int(raw)
        except (TypeError, ValueError):
            raise BadRequest(f"Invalid input for field/attribute length. Value: {raw!r} is not an integer") from None
        if length < -1:
            raise BadRequest("length must be -1 or greater")
        if length == -1:
            length = None
    from stratus.compute import states

    if inst.vm_state not in states.ACTIONS["console_output"]["vm"]:
        raise Conflict(f"Cannot 'os-getConsoleOutput' instance {inst.id} while it is in vm_state {inst.vm_state}")
    output = await svc(request).manager.call(inst.host, "console_output", instance_id=inst.id, length=length)
    return JSONResponse({"output": output})


async def make_console(request: Request, inst: m.Instance, protocol: str, console_type: str) -> str:
    from stratus.compute import states

    if protocol != "vnc" or console_type not in ("novnc", "xvpvnc"):
        raise BadRequest(f"Unsupported console protocol/type {protocol}/{console_type}: this cloud offers vnc/novnc")
    if inst.vm_state not in states.ACTIONS["console"]["vm"]:
        raise Conflict(f"Cannot get a console of instance {inst.id} while it is in vm_state {inst.vm_state}")
    state = svc(request)
    ep = await state.manager.call(inst.host, "console", instance_id=inst.id)
    token = secrets.token_urlsafe(24)
    async with state.db.session() as s:
        await s.execute(sa.delete(m.ConsoleToken).where(m.ConsoleToken.expires_at < utcnow()))
        s.add(m.ConsoleToken(token_hash=hashlib.sha256(token.encode()).hexdigest(), instance_id=inst.id,
                             console_type=console_type, host=ep["host"], port=ep["port"],
                             internal_access_path=None,
                             expires_at=utcnow() + dt.timedelta(seconds=state.settings.console_token_ttl)))
    path = quote(f"compute/vnc/websockify?token={token}", safe="")
    return f"{state.public_url}/compute/vnc/vnc_lite.html?path={path}&token={token}"


async def _vnc_console(request, c, inst, args):
    console_type = (args or {}).get("type", "novnc") if isinstance(args, dict) else "novnc"
    url = await make_console(request, inst, "vnc", console_type)
    return JSONResponse({"console": {"type": console_type, "url": url}})


async def _unsupported_console(request, c, inst, args):
    raise BadRequest("Only VNC consoles (novnc) are offered by this cloud")


async def remote_console(request: Request):
    enforce(request, "compute:servers:action")
    if not at_least(request, "2.6"):
        raise NotFound("remote-consoles needs microversion 2.6")
    inst = await get_server(request)
    body = await read_json(request)
    rc = body.get("remote_console") if isinstance(body, dict) else None
    if not isinstance(rc, dict):
        raise BadRequest("The request body must be {\"remote_console\": {\"protocol\": ..., \"type\": ...}}")
    protocol, console_type = rc.get("protocol"), rc.get("type")
    url = await make_console(request, inst, protocol, console_type)
    return JSONResponse({"remote_console": {"protocol": protocol, "type": console_type, "url": url}})


async def console_token(request: Request):
    enforce(request, "compute:console_auth_tokens")
    token = request.path_params["token"]
    async with svc(request).db.reader() as s:
        row = await s.get(m.ConsoleToken, hashlib.sha256(token.encode()).hexdigest())
    if row is None or row.expires_at < utcnow():
        raise NotFound("The console authentication token is invalid or has expired.")
    return JSONResponse({"console": {"instance_uuid": row.instance_id, "host": row.host, "port": row.port,
                                     "tls_port": None, "internal_access_path": row.internal_access_path}})


# ---- admin state actions ----------------------------------------------------------------------

async def _force_delete(request, c, inst, args):
    await svc(request).manager.delete(c, inst, _rid(request), force=True)
    return empty(202)


async def _restore(request, c, inst, args):
    raise Conflict(f"Cannot 'restore' instance {inst.id} while it is in vm_state {inst.vm_state}: soft delete is "
                   "not enabled in this cloud, so servers are never in SOFT_DELETED")


async def _reset_state(request, c, inst, args):
    enforce(request, "compute:servers:reset_state")
    state_name = (args or {}).get("state") if isinstance(args, dict) else None
    if state_name not in ("active", "error"):
        raise BadRequest("Invalid input for field/attribute state: must be 'active' or 'error'")
    async with svc(request).db.session() as s:
        await s.execute(sa.update(m.Instance).where(m.Instance.id == inst.id).values(
            vm_state=state_name, task_state=None, updated_at=utcnow()))
        await record_action(s, inst.id, "resetState", c, _rid(request))
    return empty(202)


def _security_group(add: bool):
    async def handler(request, c, inst, args):
        if not isinstance(args, dict) or not isinstance(args.get("name"), str) or not args["name"].strip():
            raise BadRequest("The action needs {\"name\": <security group name or id>}")
        state = svc(request)
        group = await state.network.find_security_group(inst.project_id, args["name"].strip())
        names = list(inst.security_groups or (["default"] if inst.network_info else []))
        if not add and group["name"] not in names and group["id"] not in names:
            raise NotFound(f"Security group {args['name']} is not associated with the instance.")
        await state.network.set_server_group(inst.id, group["id"], add=add)
        if add and group["name"] not in names:
            names.append(group["name"])
        elif not add:
            names = [n for n in names if n not in (group["name"], group["id"])]
        async with state.db.session() as s:
            await s.execute(sa.update(m.Instance).where(m.Instance.id == inst.id).values(
                security_groups=names, updated_at=utcnow()))
            await record_action(s, inst.id, "addSecurityGroup" if add else "removeSecurityGroup", c, _rid(request))
        return empty(202)
    return handler


def _not_offered(action: str, why: str):
    async def handler(request, c, inst, args):
        raise BadRequest(f"The {action} action is not offered by this cloud: {why}")
    return handler


HANDLERS = {
    "reboot": _reboot,
    "os-stop": _simple("stop", "powering-off", record="stop"),
    "os-start": _simple("start", "powering-on", record="start"),
    "pause": _simple("pause", "pausing"),
    "unpause": _simple("unpause", "unpausing"),
    "suspend": _simple("suspend", "suspending"),
    "resume": _simple("resume", "resuming"),
    "unrescue": _simple("unrescue", "unrescuing"),
    "lock": _lock,
    "unlock": _unlock,
    "rescue": _rescue,
    "resize": _resize,
    "confirmResize": _confirm,
    "revertResize": _revert,
    "migrate": _migrate,
    "evacuate": _evacuate,
    "rebuild": _rebuild,
    "createImage": _create_image,
    "os-getConsoleOutput": _console_output,
    "os-getVNCConsole": _vnc_console,
    "os-getSPICEConsole": _unsupported_console,
    "os-getSerialConsole": _unsupported_console,
    "os-getRDPConsole": _unsupported_console,
    "forceDelete": _force_delete,
    "restore": _restore,
    "os-resetState": _reset_state,
    "addSecurityGroup": _security_group(add=True),
    "removeSecurityGroup": _security_group(add=False),
    "changePassword": _not_offered("changePassword", "no guest agent sets passwords; use a key pair"),
    "shelve": _not_offered("shelve", "shelving is not implemented"),
    "shelveOffload": _not_offered("shelveOffload", "shelving is not implemented"),
    "unshelve": _not_offered("unshelve", "shelving is not implemented"),
    "createBackup": _not_offered("createBackup", "use createImage"),
    "os-migrateLive": _not_offered("os-migrateLive", "live migration is not implemented; use migrate"),
    "trigger_crash_dump": _not_offered("trigger_crash_dump", "not implemented"),
}


# ---- instance actions --------------------------------------------------------------------------

async def _any_server(request: Request) -> m.Instance:
    """Action history stays readable after the server is deleted (2.21)."""
    c = ctx(request)
    async with svc(request).db.reader() as s:
        inst = await s.get(m.Instance, request.path_params["id"])
    if inst is None or (inst.project_id != c.project_id and not c.is_admin) or \
            (inst.deleted and not at_least(request, "2.21")):
        raise NotFound(f"Instance {request.path_params['id']} could not be found.")
    return inst


def _action_view(request: Request, a: m.InstanceAction) -> dict:
    v = {"action": a.action, "instance_uuid": a.instance_id, "request_id": a.request_id, "user_id": a.user_id,
         "project_id": a.project_id, "start_time": iso_micro(a.start_time), "message": a.message}
    if at_least(request, "2.58"):
        v["updated_at"] = iso_micro(a.updated_at)
    return v


async def list_instance_actions(request: Request):
    enforce(request, "compute:servers:show")
    inst = await _any_server(request)
    async with svc(request).db.reader() as s:
        rows = (await s.execute(sa.select(m.InstanceAction).where(m.InstanceAction.instance_id == inst.id)
                                .order_by(m.InstanceAction.start_time.desc(), m.InstanceAction.id.desc()))).scalars()
        return JSONResponse({"instanceActions": [_action_view(request, a) for a in rows]})


async def show_instance_action(request: Request):
    c = enforce(request, "compute:servers:show")
    inst = await _any_server(request)
    async with svc(request).db.reader() as s:
        a = await s.scalar(sa.select(m.InstanceAction).where(
            m.InstanceAction.instance_id == inst.id, m.InstanceAction.request_id == request.path_params["req"])
            .order_by(m.InstanceAction.id.desc()).limit(1))
        if a is None:
            raise NotFound(f"Action for request_id {request.path_params['req']} on instance {inst.id} not found")
        events = (await s.execute(sa.select(m.InstanceActionEvent).where(m.InstanceActionEvent.action_id == a.id)
                                  .order_by(m.InstanceActionEvent.id))).scalars()
        view = _action_view(request, a)
        out = []
        for e in events:
            ev = {"event": e.event, "start_time": iso_micro(e.start_time), "finish_time": iso_micro(e.finish_time),
                  "result": e.result}
            if c.is_admin:
                ev["traceback"] = e.traceback
            if at_least(request, "2.62"):
                ev["hostId"] = hashlib.sha224((inst.project_id + (e.host or "")).encode()).hexdigest() if e.host else ""
                if c.is_admin:
                    ev["host"] = e.host
            if at_least(request, "2.84"):
                ev["details"] = e.details
            out.append(ev)
        view["events"] = out
    return JSONResponse({"instanceAction": view})


# ---- external events (from the network and volume services) ------------------------------------

EVENT_NAMES = {"network-changed", "network-vif-plugged", "network-vif-unplugged", "network-vif-deleted",
               "volume-extended", "power-update", "accelerator-request-bound", "volume-reimaged"}


async def external_events(request: Request):
    """Other services tell compute that something changed on a server's port or volume.

    Events are acknowledged per server (200 found / 404 unknown); nothing waits on them yet,
    because builds bind ports synchronously through the network API.
    """
    enforce(request, "compute:console_auth_tokens")  # admin or service role
    body = await read_json(request)
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not events:
        raise BadRequest("The body must be {\"events\": [{\"name\", \"server_uuid\", ...}]}")
    ids = set()
    for e in events:
        if not isinstance(e, dict) or e.get("name") not in EVENT_NAMES or not isinstance(e.get("server_uuid"), str):
            raise BadRequest(f"Invalid event {e!r}: name must be one of {', '.join(sorted(EVENT_NAMES))} and "
                             "server_uuid a server id")
        ids.add(e["server_uuid"])
    async with svc(request).db.reader() as s:
        found = set((await s.execute(sa.select(m.Instance.id).where(m.Instance.id.in_(sorted(ids)),
                                                                    m.Instance.deleted.is_(False)))).scalars())
    out = []
    for e in events:
        ok = e["server_uuid"] in found
        out.append({**e, "status": e.get("status", "completed") if ok else "failed", "code": 200 if ok else 404})
    if not found:
        raise NotFound("No instances found for any event")
    return JSONResponse({"events": out}, status_code=200 if len(found) == len(ids) else 207)


routes = [
    Route(f"{P}/os-server-external-events", external_events, methods=["POST"]),
    Route(f"{P}/servers/{{id}}/action", server_action, methods=["POST"]),
    Route(f"{P}/servers/{{id}}/remote-consoles", remote_console, methods=["POST"]),
    Route(f"{P}/os-console-auth-tokens/{{token}}", console_token, methods=["GET"]),
    Route(f"{P}/servers/{{id}}/os-instance-actions", list_instance_actions, methods=["GET"]),
    Route(f"{P}/servers/{{id}}/os-instance-actions/{{req}}", show_instance_action, methods=["GET"]),
]
