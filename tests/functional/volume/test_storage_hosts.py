"""Two storage hosts: the all-in-one process (agent A) and a separate `stratus volume-agent`
process (agent B, its own directory, zone and export ports), talking over RabbitMQ."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.cloudfixture import VENV_BIN, destroy_cloud, start_cloud
from tests.functional.volume.conftest import VolumeApi, login

BROKER = os.environ.get("STRATUS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def broker_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not broker_up(), reason="needs RabbitMQ on 127.0.0.1:5672 (separate processes "
                                                         "talk over the AMQP bus)")


@pytest.fixture(scope="module")
def two_hosts():
    state = Path(tempfile.mkdtemp(prefix="stratus-vol2-"))
    base = 21000 + (uuid.uuid4().int % 400) * 50
    env = {"STRATUS_BUS__TRANSPORT": "amqp", "STRATUS_BUS__URL": BROKER,
           "STRATUS_VOLUME__EXPORT_PORT_MIN": str(base), "STRATUS_VOLUME__EXPORT_PORT_MAX": str(base + 19),
           "STRATUS_VOLUME__HOST": "storage-a", "STRATUS_VOLUME__HEARTBEAT_INTERVAL": "2"}
    try:
        cloud = start_cloud(state, services=["identity", "volume"], extra_env=env, timeout=180)
    except Exception:
        shutil.rmtree(state, ignore_errors=True)  # start-up failed: nothing else to clean
        raise
    agent_env = {**cloud.env, **env, "STRATUS_VOLUME__HOST": "storage-b", "STRATUS_VOLUME__AVAILABILITY_ZONE": "zone-b",
                 "STRATUS_VOLUME__PATH": str(state / "storage-b"),
                 "STRATUS_VOLUME__EXPORT_PORT_MIN": str(base + 20), "STRATUS_VOLUME__EXPORT_PORT_MAX": str(base + 39)}
    log = open(state / "agent-b.log", "w")
    agent = subprocess.Popen([str(VENV_BIN / "stratus"), "volume-agent"], env=agent_env, stdout=log,
                             stderr=subprocess.STDOUT)
    try:
        yield cloud, agent, base
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGINT)
            try:
                agent.wait(timeout=20)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)


def test_volume_lands_on_the_agent_of_its_zone_and_is_served_from_there(two_hosts):
    cloud, agent, base = two_hosts
    token, project = login(cloud.identity_url, "admin", cloud.secrets()["admin_password"], "admin")
    api = VolumeApi(cloud, token, project)
    deadline = time.monotonic() + 30
    while True:
        services = api("GET", "/os-services").json()["services"]
        up = {s["host"]: s for s in services if s["state"] == "up"}
        if {"storage-a@file", "storage-b@file"} <= set(up):
            break
        assert agent.poll() is None, "the separate volume agent exited"
        assert time.monotonic() < deadline, f"agents not both up: {services}"
        time.sleep(0.5)
    assert up["storage-b@file"]["zone"] == "zone-b"
    zones = {z["zoneName"] for z in api("GET", "/os-availability-zone").json()["availabilityZoneInfo"]}
    assert zones == {"nova", "zone-b"}

    vol = api.create_volume(1, availability_zone="zone-b")
    assert vol["status"] == "available" and vol["os-vol-host-attr:host"] == "storage-b@file#file"
    r = api("POST", "/attachments", json={"attachment": {"volume_uuid": vol["id"], "instance_uuid": "i-b",
                                                         "connector": {"host": "compute-x", "ip": "127.0.0.1"}}})
    assert r.status_code == 200, r.text
    data = r.json()["attachment"]["connection_info"]["data"]
    assert base + 20 <= data["port"] <= base + 39  # agent B's export
    url = f"nbd://{data['host']}:{data['port']}/{data['name']}"
    out = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x21 0 4096", url], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert api("DELETE", f"/attachments/{r.json()['attachment']['id']}").status_code == 200

    # A clone stays on its source's host.
    clone = api.create_volume(1, source_volid=vol["id"])
    assert clone["os-vol-host-attr:host"] == "storage-b@file#file"

    # Disabling agent B sends new zone-b volumes nowhere: they fail with a reason.
    assert api("PUT", "/os-services/disable", json={"host": "storage-b@file", "binary": "cinder-volume"}
               ).status_code == 200
    failed = api.create_volume(1, availability_zone="zone-b")
    assert failed["status"] == "error" and "No valid host" in failed["error_reason"]
    for v in (clone, vol, failed):
        assert api("DELETE", f"/volumes/{v['id']}").status_code == 202
