"""Server volumes through the block-storage service's public API (Cinder's attachments contract).

Attach: compute creates an attachment with this host's connector, which returns how to reach the
volume (``connection_info``: an NBD export or a local file), hot-plugs it with the virt driver, then
completes the attachment (volume → in-use). Detach: unplug, delete the attachment (volume →
available). A server's attachments are kept on the instance (``block_devices``) so that delete can
release them, and delete the volumes whose ``delete_on_termination`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid

from stratus.common.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from stratus.compute.drivers.base import VolumeConnection

log = logging.getLogger("stratus.compute.volumes")

MICROVERSION = "volume 3.71"
ABSENT = "the block-storage service is not available in this cloud, so volumes cannot be attached"


class VolumeAPI:
    def __init__(self, runtime_client):
        # runtime.client("compute"): the compute service user, an admin, who may act in any project.
        self.client = runtime_client

    async def _base(self, project_id: str) -> str:
        try:
            endpoint = await self.client.credentials.endpoint("block-storage")
        except LookupError:
            raise BadRequest(ABSENT) from None
        # The catalog URL ends in the service user's project; address the server's project instead.
        return endpoint.rsplit("/", 1)[0] + f"/{project_id}"

    async def _request(self, project_id: str, method: str, path: str, *, token: str | None = None, **kwargs):
        base = await self._base(project_id)
        headers = {"OpenStack-API-Version": MICROVERSION}
        if token is not None:
            # Acting as the user (volumes a server boots from belong to, and count against, its project).
            return await self.client.client.request(method, base + path, headers={**headers, "X-Auth-Token": token},
                                                    **kwargs)
        resp = await self.client.client.request(
            method, base + path, headers={**headers, "X-Auth-Token": await self.client.credentials.token()},
            **kwargs)
        if resp.status_code == 401:
            resp = await self.client.client.request(
                method, base + path,
                headers={**headers, "X-Auth-Token": await self.client.credentials.token(force=True)}, **kwargs)
        return resp

    async def get_volume(self, project_id: str, volume_id: str) -> dict:
        resp = await self._request(project_id, "GET", f"/volumes/{volume_id}")
        if resp.status_code == 404:
            raise NotFound(f"Volume {volume_id} could not be found.")
        if resp.status_code != 200:
            raise ServiceUnavailable(f"The block-storage service answered {resp.status_code} for volume {volume_id}")
        volume = resp.json()["volume"]
        owner = volume.get("os-vol-tenant-attr:tenant_id") or volume.get("project_id")
        if owner is not None and owner != project_id:
            # Another project's volume is invisible, exactly as if it did not exist.
            raise NotFound(f"Volume {volume_id} could not be found.")
        return volume

    async def create_volume(self, project_id: str, *, size: int, name: str, image_id: str | None = None,
                            snapshot_id: str | None = None, token: str | None = None) -> str:
        body = {"volume": {"size": size, "name": name, "imageRef": image_id, "snapshot_id": snapshot_id}}
        resp = await self._request(project_id, "POST", "/volumes", json=body, token=token)
        if resp.status_code == 413:
            from stratus.common.errors import PayloadTooLarge

            raise PayloadTooLarge(f"Volume quota exceeded: {_message(resp)}")
        if resp.status_code not in (200, 202):
            raise Conflict(f"A {size} GiB volume could not be created: {_message(resp)}")
        return resp.json()["volume"]["id"]

    async def wait_available(self, project_id: str, volume_id: str, timeout: float = 600.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            volume = await self.get_volume(project_id, volume_id)
            status = volume.get("status")
            if status == "available":
                return
            if status in ("error", "error_restoring", "error_extending"):
                raise Conflict(f"Volume {volume_id} went to {status}: {volume.get('error_reason') or 'no reason given'}")
            if asyncio.get_running_loop().time() > deadline:
                raise Conflict(f"Volume {volume_id} was still {status} after {timeout:.0f} s")
            await asyncio.sleep(0.5)

    async def create_attachment(self, project_id: str, volume_id: str, instance_id: str, connector: dict) -> dict:
        body = {"attachment": {"volume_uuid": volume_id, "instance_uuid": instance_id, "connector": connector,
                               "mode": "rw"}}
        resp = await self._request(project_id, "POST", "/attachments", json=body)
        if resp.status_code not in (200, 202):
            raise Conflict(f"Volume {volume_id} could not be attached: {_message(resp)}")
        return resp.json()["attachment"]

    async def record_mountpoint(self, project_id: str, attachment_id: str, connector: dict, device: str) -> None:
        """Tell the volume service which device the guest got (shown as the attachment's device)."""
        body = {"attachment": {"connector": {**connector, "mountpoint": device}}}
        resp = await self._request(project_id, "PUT", f"/attachments/{attachment_id}", json=body)
        if resp.status_code not in (200, 202):
            raise Conflict(f"Attachment {attachment_id} could not be updated: {_message(resp)}")

    async def complete(self, project_id: str, attachment_id: str) -> None:
        resp = await self._request(project_id, "POST", f"/attachments/{attachment_id}/action",
                                   json={"os-complete": None})
        if resp.status_code not in (200, 202, 204):
            raise Conflict(f"Attachment {attachment_id} could not be completed: {_message(resp)}")

    async def delete_attachment(self, project_id: str, attachment_id: str) -> None:
        resp = await self._request(project_id, "DELETE", f"/attachments/{attachment_id}")
        if resp.status_code not in (200, 202, 204, 404):
            raise Conflict(f"Attachment {attachment_id} could not be removed: {_message(resp)}")

    async def delete_volume(self, project_id: str, volume_id: str, *, wait: float = 30.0) -> None:
        """Delete a volume once its detach has settled (it must be available first)."""
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            resp = await self._request(project_id, "DELETE", f"/volumes/{volume_id}")
            if resp.status_code in (202, 204, 404):
                return
            if asyncio.get_running_loop().time() > deadline:
                log.warning("volume %s was not deleted with its server: %s", volume_id, _message(resp))
                return
            await asyncio.sleep(0.5)


def _message(resp) -> str:
    try:
        body = resp.json()
        for value in body.values():
            if isinstance(value, dict) and "message" in value:
                return value["message"]
    except ValueError:
        pass
    return f"HTTP {resp.status_code}"


def host_connector(host: str) -> dict:
    """What the volume service needs to know about this compute host to hand out a connection."""
    try:
        ip = socket.gethostbyname(host)
    except OSError:
        ip = "127.0.0.1"
    return {"host": host, "ip": ip, "multipath": False, "platform": "x86_64", "os_type": "linux"}


def connection_from(info: dict, volume_id: str, device: str | None) -> VolumeConnection:
    if not info or "driver_volume_type" not in info:
        raise Conflict(f"The block-storage service gave no connection for volume {volume_id}")
    data = dict(info.get("data") or {})
    return VolumeConnection(volume_id=volume_id, driver_volume_type=info["driver_volume_type"], data=data,
                            device_name=device, read_only=data.get("access_mode") == "ro")


async def attach(agent, inst, volume_id: str, device: str | None, delete_on_termination: bool,
                 tag: str | None) -> dict:
    """Agent side of attach: attachment, hot-plug, complete; returns the block device record."""
    volumes: VolumeAPI = agent.state.volumes
    connector = host_connector(agent.host)
    attachment = await volumes.create_attachment(inst.project_id, volume_id, inst.id, connector)
    try:
        conn = connection_from(attachment.get("connection_info") or {}, volume_id, device)
        used = await agent.driver.attach_volume(inst.id, conn)
        await volumes.record_mountpoint(inst.project_id, attachment["id"], connector, used)
        await volumes.complete(inst.project_id, attachment["id"])
    except Exception:
        await volumes.delete_attachment(inst.project_id, attachment["id"])
        raise
    return {"volume_id": volume_id, "attachment_id": attachment["id"], "device": used,
            "delete_on_termination": bool(delete_on_termination), "tag": tag, "bdm_uuid": str(uuid.uuid4())}


async def detach(agent, inst, record: dict) -> None:
    """Agent side of detach: unplug from the guest, then release the attachment."""
    from stratus.compute.drivers.base import InstanceNotFound

    try:
        await agent.driver.detach_volume(inst.id, record["volume_id"])
    except InstanceNotFound:
        pass
    await agent.state.volumes.delete_attachment(inst.project_id, record["attachment_id"])


async def release_all(agent, inst) -> None:
    """Server delete: detach every volume (the guest is gone) and delete those marked for it."""
    for record in list(inst.block_devices or []):
        if not isinstance(record, dict) or "attachment_id" not in record:
            continue
        try:
            await agent.state.volumes.delete_attachment(inst.project_id, record["attachment_id"])
            if record.get("delete_on_termination"):
                await agent.state.volumes.delete_volume(inst.project_id, record["volume_id"])
        except Exception as exc:  # the server goes regardless; say what was left behind
            log.warning("releasing volume %s of deleted server %s: %s", record.get("volume_id"), inst.id, exc)


async def prepare_boot_volumes(agent, inst) -> tuple[list[VolumeConnection], list[dict]]:
    """Before spawn: make the volumes block_device_mapping_v2 asked for (from an image, a snapshot,
    blank, or an existing volume), attach them to this host; the boot volume comes first."""
    api: VolumeAPI = agent.state.volumes
    wanted = [b for b in inst.block_devices or []
              if isinstance(b, dict) and b.get("destination_type") == "volume" and "attachment_id" not in b]
    wanted.sort(key=lambda b: str(b.get("boot_index")) != "0")
    connections: list[VolumeConnection] = []
    records: list[dict] = []
    try:
        for b in wanted:
            # The API created volumes from images/snapshots/blank with the user's token (they belong
            # to the user's project); here they are awaited, attached and handed to the driver.
            volume_id, created = b["uuid"], bool(b.get("created"))
            if created:
                records.append({"volume_id": volume_id, "created": True})
                await api.wait_available(inst.project_id, volume_id)
                records.pop()
            boot = str(b.get("boot_index")) == "0"
            connector = host_connector(agent.host)
            if boot:
                connector["mountpoint"] = "/dev/vda"
            attachment = await api.create_attachment(inst.project_id, volume_id, inst.id, connector)
            records.append({"volume_id": volume_id, "attachment_id": attachment["id"],
                            "device": "/dev/vda" if boot else None, "boot_index": b.get("boot_index"),
                            "delete_on_termination": bool(b.get("delete_on_termination")), "tag": b.get("tag"),
                            "bdm_uuid": str(uuid.uuid4()), "created": created})
            connections.append(connection_from(attachment.get("connection_info") or {}, volume_id,
                                               "/dev/vda" if boot else None))
    except Exception:
        await undo_boot_volumes(agent, inst, records)
        raise
    return connections, records


async def undo_boot_volumes(agent, inst, records: list[dict]) -> None:
    """A build that failed: release its attachments and delete the volumes it created."""
    api: VolumeAPI = agent.state.volumes
    for r in records:
        try:
            if r.get("attachment_id"):
                await api.delete_attachment(inst.project_id, r["attachment_id"])
            if r.get("created"):
                await api.delete_volume(inst.project_id, r["volume_id"])
        except Exception as exc:
            log.warning("cleaning up volume %s of failed build %s: %s", r.get("volume_id"), inst.id, exc)


async def complete_boot_volumes(agent, inst, records: list[dict]) -> None:
    for r in records:
        await agent.state.volumes.complete(inst.project_id, r["attachment_id"])
