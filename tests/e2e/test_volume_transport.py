"""NBD attachments across two hosts: a storage namespace and a compute namespace joined by a veth.

The storage side runs the real exporter (qemu-storage-daemon) on its veth address; the compute
side is a plain NBD client (qemu-io / qemu-img) that can only reach the storage host over that
link. A marker written through NBD from the compute side must be in the volume's file on the
storage side, and read back over the network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from stratus.volume.drivers.file import FileDriver, run
from stratus.volume.transport import Exporter

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2 (ip netns)"),
    pytest.mark.skipif(not shutil.which("qemu-storage-daemon") or not shutil.which("qemu-io"),
                       reason="needs qemu-utils (qemu-storage-daemon, qemu-io)"),
]

VID = "5d1e0c3a-7b7b-4c4c-9d9d-0e0e0f0f1a1a"


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def two_hosts():
    tag = uuid.uuid4().hex[:6]
    storage, compute = f"vst-s-{tag}", f"vst-c-{tag}"
    veth_s, veth_c = f"vs{tag}", f"vc{tag}"
    octet = int(tag[:2], 16) % 200 + 20
    storage_ip, compute_ip = f"10.251.{octet}.1", f"10.251.{octet}.2"
    created = []
    try:
        for ns in (storage, compute):
            sh("ip", "netns", "add", ns)
            created.append(ns)
        sh("ip", "link", "add", veth_s, "type", "veth", "peer", "name", veth_c)
        sh("ip", "link", "set", veth_s, "netns", storage)
        sh("ip", "link", "set", veth_c, "netns", compute)
        for ns, dev, ip in ((storage, veth_s, storage_ip), (compute, veth_c, compute_ip)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield {"storage": storage, "compute": compute, "storage_ip": storage_ip}
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


async def test_marker_written_over_nbd_from_another_host_lands_on_the_storage_host(tmp_path, two_hosts):
    drv = FileDriver(tmp_path / "volumes")
    loc = await drv.create_blank(VID, 1)
    storage_ns, compute_ns = two_hosts["storage"], two_hosts["compute"]
    exporter = Exporter(tmp_path / "exports", two_hosts["storage_ip"], 10809, 10830,
                        wrapper=("ip", "netns", "exec", storage_ns))
    export = await exporter.start(attachment_id="att-1", volume_id=VID, path=drv.path(loc), image_format="qcow2",
                                  read_only=False, ports_in_use=set())
    info = export.connection_info()
    assert info["driver_volume_type"] == "nbd"
    assert info["data"] == {"host": two_hosts["storage_ip"], "port": export.port, "name": VID}
    url = f"nbd://{info['data']['host']}:{info['data']['port']}/{info['data']['name']}"
    client = ("ip", "netns", "exec", compute_ns)
    marker = 0x5C
    try:
        # The compute host sees a raw 1 GiB disk over the network ...
        size_info = await run(*client, "qemu-img", "info", "--output=json", url)
        assert '"virtual-size": 1073741824' in size_info
        # ... writes a marker through NBD and reads it back over the network.
        await run(*client, "qemu-io", "-f", "raw", "-c", f"write -P {marker:#x} 1048576 4096", url)
        out = await run(*client, "qemu-io", "-f", "raw", "-c", f"read -P {marker:#x} 1048576 4096", url)
        assert "Pattern verification failed" not in out
        # The export listens only inside the storage namespace: the client's bytes crossed the veth.
        listening = sh("ip", "netns", "exec", storage_ns, "ss", "-Hltn")
        assert f"{two_hosts['storage_ip']}:{export.port}" in listening
    finally:
        await exporter.stop(export)
    # Back on the storage host, the marker is in the volume's own file.
    out = await run("qemu-io", "-r", "-f", "qcow2", "-c", f"read -P {marker:#x} 1048576 4096", str(drv.path(loc)))
    assert "Pattern verification failed" not in out
    out = await run("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x00 0 4096", str(drv.path(loc)))
    assert "Pattern verification failed" not in out


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="needs qemu-system-x86 (a QEMU NBD client)")
async def test_extend_while_a_qemu_client_is_attached_reaches_the_client(tmp_path):
    """In-use extend: the export is withdrawn and re-added at the new size; QEMU's NBD client
    (reconnect-delay, as the compute driver should configure it) reconnects, may then grow its
    disk to the new size (what libvirt's blockresize does after a volume-extended event) and
    writes past the old end, which lands in the volume file."""
    import asyncio
    import json
    import signal

    from stratus.volume.drivers.file import image_info
    from stratus.volume.transport import LiveExport, qmp

    drv = FileDriver(tmp_path / "volumes")
    loc = await drv.create_blank(VID, 1)
    exporter = Exporter(tmp_path / "exports", "127.0.0.1", 20700, 20799)
    export = await exporter.start(attachment_id="att-x", volume_id=VID, path=drv.path(loc), image_format="qcow2",
                                  read_only=False, ports_in_use=set())
    sock, pidfile = tmp_path / "client.qmp", tmp_path / "client.pid"
    client = {"driver": "nbd", "node-name": "disk", "export": VID, "reconnect-delay": 10,
              "server": {"type": "inet", "host": "127.0.0.1", "port": str(export.port)}}
    try:
        await run("qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
                  "-blockdev", json.dumps(client), "-chardev", f"socket,id=m,path={sock},server=on,wait=off",
                  "-mon", "chardev=m,mode=control", "-pidfile", str(pidfile), "-daemonize")

        async def client_size() -> int:
            nodes = await qmp(str(sock), "query-named-block-nodes")
            return next(n["image"]["virtual-size"] for n in nodes if n["node-name"] == "disk")

        assert await client_size() == 1024 ** 3
        await drv.extend(loc, 2, LiveExport(export))
        assert (await image_info(drv.path(loc)))["virtual-size"] == 2 * 1024 ** 3
        # The client notices the dropped connection on its next request (a guest's I/O) and
        # reconnects; growing its disk only succeeds once it has seen the new size.
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            await qmp(str(sock), "human-monitor-command", {"command-line": 'qemu-io disk "read 0 4096"'})
            try:
                await qmp(str(sock), "block_resize", {"node-name": "disk", "size": 2 * 1024 ** 3})
                break
            except Exception:
                assert asyncio.get_running_loop().time() < deadline, "the NBD client never saw the new size"
                await asyncio.sleep(0.2)
        assert await client_size() == 2 * 1024 ** 3
        await qmp(str(sock), "human-monitor-command",
                  {"command-line": 'qemu-io disk "write -P 0x66 1073741824 4096"'})
        await qmp(str(sock), "quit")
    finally:
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None:
            # QEMU may wait out its reconnect delay on SIGTERM: escalate after a short grace.
            for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
                for _ in range(int(grace / 0.1)):
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        break
                    await asyncio.sleep(0.1)
        await exporter.stop(export)
    out = await run("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x66 1073741824 4096", str(drv.path(loc)))
    assert "Pattern verification failed" not in out


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="needs qemu-system-x86 to boot test guests")
def test_guests_share_data_through_a_volume(tmp_path):
    """The test guest writes a marker (user-data) on a volume attached over NBD through the
    attachments API; after detaching, a second guest reads it back; a volume made from a
    snapshot of it holds the marker too. QEMU is started here the way compute's libvirt driver
    plugs an nbd connection_info (a network disk: nbd://host:port/export)."""
    import json
    import uuid as uuidlib

    from tests.cloudfixture import destroy_cloud, start_cloud
    from tests.e2e.test_testimage import READY_TIMEOUT, Guest, _cache_dir, make_config_drive
    from tests.functional.volume.conftest import VolumeApi, login
    from stratus.testimage import READY_MARKER, build

    image = build(_cache_dir())
    base = 21000 + (uuidlib.uuid4().int % 400) * 50
    cloud = start_cloud(tmp_path / "cloud", services=["identity", "volume"], timeout=180, extra_env={
        "STRATUS_VOLUME__EXPORT_PORT_MIN": str(base), "STRATUS_VOLUME__EXPORT_PORT_MAX": str(base + 19)})
    marker = f"STRATUS-VOLUME-MARKER-{uuidlib.uuid4().hex[:12]}"
    try:
        token, project = login(cloud.identity_url, "demo", cloud.secrets()["demo_password"], "demo")
        api = VolumeApi(cloud, token, project)
        vol = api.create_volume(1)

        def boot(name: str, user_data: str) -> str:
            workdir = tmp_path / name
            workdir.mkdir()
            server = str(uuidlib.uuid4())
            r = api("POST", "/attachments", json={"attachment": {
                "volume_uuid": vol["id"], "instance_uuid": server, "mode": "rw",
                "connector": {"host": "compute-test", "ip": "127.0.0.1"}}})
            assert r.status_code == 200, r.text
            att = r.json()["attachment"]
            info = att["connection_info"]
            assert info["driver_volume_type"] == "nbd"
            d = info["data"]
            iso = workdir / "config.iso"
            make_config_drive(iso, {"meta_data.json": json.dumps({"uuid": server, "hostname": name}).encode(),
                                    "user_data": user_data.encode(),
                                    "network_data.json": b'{"links": [], "networks": [], "services": []}'})
            guest = Guest(workdir, image["qcow2"], [
                "-drive", f"file={iso},media=cdrom,if=ide,readonly=on",
                "-drive", f"file=nbd://{d['host']}:{d['port']}/{d['name']},format=raw,if=virtio,cache=none"])
            try:
                guest.wait_for(READY_MARKER, READY_TIMEOUT)
                assert api("POST", f"/attachments/{att['id']}/action", json={"os-complete": None}).status_code == 204
                assert api("GET", f"/volumes/{vol['id']}").json()["volume"]["status"] == "in-use"
                console = guest.text()
            finally:
                guest.stop()
            assert api("DELETE", f"/attachments/{att['id']}").status_code == 200
            return console

        writer = boot("writer", f"#!/bin/sh\nprintf '{marker}' | dd of=/dev/vdb bs=512 conv=notrunc,fsync\n"
                                f"echo wrote-rc=$?\n")
        assert "wrote-rc=0" in writer, writer
        reader = boot("reader", "#!/bin/sh\necho \"read: $(dd if=/dev/vdb bs=64 count=1 2>/dev/null | tr -d '\\000')\"\n")
        assert f"read: {marker}" in reader, reader

        r = api("POST", "/snapshots", json={"snapshot": {"volume_id": vol["id"], "name": "with-marker"}})
        snap = api.wait(f"/snapshots/{r.json()['snapshot']['id']}", "snapshot", ("available", "error"))
        copy = api.create_volume(1, snapshot_id=snap["id"])
        r = api("POST", "/attachments", json={"attachment": {"volume_uuid": copy["id"], "instance_uuid": "x",
                                                             "connector": {"host": "h", "ip": "127.0.0.1"}}})
        d = r.json()["attachment"]["connection_info"]["data"]
        out = subprocess.run(["qemu-io", "-r", "-f", "raw", "-c", "read -v 0 64",
                              f"nbd://{d['host']}:{d['port']}/{d['name']}"], capture_output=True, text=True)
        hexdump = [line.split(":", 1)[1].strip().split("  ")[0] for line in out.stdout.splitlines()
                   if line.startswith("000000")]
        data = bytes.fromhex(" ".join(hexdump))
        assert data.startswith(marker.encode()), out.stdout
        api("DELETE", f"/attachments/{r.json()['attachment']['id']}")
        for path in (f"/volumes/{copy['id']}", f"/snapshots/{snap['id']}"):
            api("DELETE", path)
        api.wait(f"/snapshots/{snap['id']}", "snapshot", ("deleted",))
        assert api("DELETE", f"/volumes/{vol['id']}").status_code == 202
    finally:
        destroy_cloud(cloud)
