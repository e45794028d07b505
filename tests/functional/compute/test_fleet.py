"""The same compute on MariaDB and PostgreSQL, and with RabbitMQ and agents in their own process."""

from __future__ import annotations

import concurrent.futures

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.cloudfixture import VENV_BIN, destroy_cloud, start_cloud
from tests.functional.compute.conftest import FAKE_ENV, Api, compute_services, image_id


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _exercise(cloud) -> None:
    """Create, list and delete a server, then race 12 creates against a quota of 4."""
    img = image_id(cloud)
    if img is None:
        pytest.skip("the image service is not present in this build")
    demo, admin = Api(cloud.url, cloud.token("demo")), Api(cloud.url, cloud.token("admin"))
    srv = demo.create("fleet-1", img)
    demo.wait(srv["id"], "ACTIVE")
    assert [s["id"] for s in demo.get("/servers").json()["servers"]] == [srv["id"]]
    assert demo.delete(f"/servers/{srv['id']}").status_code == 204
    demo.wait(srv["id"], "DELETED")
    project = cloud.osc("project show demo")["id"]
    assert admin.put(f"/os-quota-sets/{project}", json={"quota_set": {"instances": 4}}).status_code == 200
    body = {"server": {"name": "race", "imageRef": img, "flavorRef": "1", "networks": "none"}}
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = sorted(r.status_code for r in pool.map(lambda _: demo.client.post("/servers", json=body), range(12)))
    assert codes.count(202) == 4 and codes.count(403) == 8, codes
    for s in demo.get("/servers").json()["servers"]:
        demo.wait(s["id"], {"ACTIVE", "ERROR"})
        demo.delete(f"/servers/{s['id']}")
        demo.wait(s["id"], "DELETED")


@pytest.mark.parametrize("backend,port", [("mariadb", 3306), ("postgresql", 5432)])
def test_backend(backend, port):
    if not _port_open(port):
        pytest.skip(f"no {backend} server listening on 127.0.0.1:{port}")
    state = Path(tempfile.mkdtemp(prefix=f"stratus-compute-{backend}-"))
    cloud = start_cloud(state, services=compute_services(), backend=backend, extra_env=FAKE_ENV, timeout=120)
    try:
        _exercise(cloud)
    finally:
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)


def test_rabbitmq_with_agents_in_their_own_process():
    if not _port_open(5672):
        pytest.skip("no RabbitMQ listening on 127.0.0.1:5672")
    state = Path(tempfile.mkdtemp(prefix="stratus-compute-amqp-"))
    env = {**FAKE_ENV, "STRATUS_BUS__TRANSPORT": "amqp", "STRATUS_COMPUTE__LOCAL_AGENT": "false"}
    cloud = start_cloud(state, services=compute_services(), extra_env=env, timeout=120)
    agent = None
    try:
        agent_env = {**cloud.env, "STRATUS_COMPUTE__HOST": "far"}
        log = open(state / "agent.log", "w")
        agent = subprocess.Popen([str(VENV_BIN / "stratus"), "compute-agent", "--driver", "fake", "--fake-hosts", "2"],
                                 env=agent_env, stdout=log, stderr=subprocess.STDOUT)
        admin = Api(cloud.url, cloud.token("admin"))
        deadline = time.monotonic() + 60
        while True:
            hv = admin.get("/os-hypervisors").json()["hypervisors"]
            if len(hv) == 2 and all(h["state"] == "up" for h in hv):
                break
            assert agent.poll() is None, (state / "agent.log").read_text()
            assert time.monotonic() < deadline, hv
            time.sleep(0.5)
        assert sorted(h["hypervisor_hostname"] for h in hv) == ["far-0", "far-1"]
        services = cloud.osc("compute service list", cloud="admin")
        assert {s["Host"] for s in services if s["Binary"] == "nova-compute"} == {"far-0", "far-1"}
        _exercise(cloud)
        # The agents stop: their hosts go down and get no new work, with a reason.
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
        agent = None
        img = image_id(cloud)
        demo = Api(cloud.url, cloud.token("demo"))
        deadline = time.monotonic() + 30
        while any(h["state"] == "up" for h in admin.get("/os-hypervisors").json()["hypervisors"]):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        down = [s for s in cloud.osc("compute service list", cloud="admin") if s["Binary"] == "nova-compute"]
        assert {s["State"] for s in down} == {"down"}
        srv = demo.create("orphan", img)
        fault = demo.wait(srv["id"], "ERROR")["fault"]["message"]
        assert "2 down (no heartbeat)" in fault, fault
        assert demo.delete(f"/servers/{srv['id']}").status_code == 204
        demo.wait(srv["id"], "DELETED")
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
        destroy_cloud(cloud)
        shutil.rmtree(state, ignore_errors=True)


