"""The network service's SQL on the production back ends (MariaDB, PostgreSQL): concurrent port
creates, the lazily created default security group, routers and floating IPs, filters and paging."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.cloudfixture import destroy_cloud, start_cloud
from tests.functional.network.conftest import AGENT_HOST, Api

pytestmark = pytest.mark.backend


@pytest.fixture(scope="module", params=["mariadb", "postgresql"])
def bcloud(request):
    state = Path(tempfile.mkdtemp(prefix=f"stratus-net-{request.param}-"))
    try:
        c = start_cloud(state, services=["identity", "network"], backend=request.param, timeout=180,
                        extra_env={"STRATUS_NETWORK__AGENT_DRIVER": "fake", "STRATUS_NETWORK__HOST": AGENT_HOST})
    except RuntimeError as exc:
        shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"{request.param} cloud did not start (is the server running?): {exc}")
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def test_concurrency_and_shapes(bcloud):
    demo = Api(bcloud, bcloud.token("demo"))
    token = demo.client.headers["X-Auth-Token"]

    async def burst(method: str, path: str, body: dict | None, n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, headers={"X-Auth-Token": token}) as c:
            return await asyncio.gather(*[c.request(method, demo.base + path, json=body) for _ in range(n)])

    # Many first requests of a project at once still make exactly one default group.
    results = asyncio.run(burst("GET", "/security-groups", None, 10))
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    groups = demo("GET", "/security-groups?name=default").json()["security_groups"]
    assert len(groups) == 1 and len(groups[0]["security_group_rules"]) == 4

    net = demo("POST", "/networks", json={"network": {"name": "b", "tags": ["t1"]}}).json()["network"]
    sub = demo("POST", "/subnets", json={"subnet": {"network_id": net["id"], "ip_version": 4,
                                                    "cidr": "10.85.0.0/24"}}).json()["subnet"]
    results = asyncio.run(burst("POST", "/ports", {"port": {"network_id": net["id"]}}, 40))
    assert [r.status_code for r in results] == [201] * 40, [r.text for r in results if r.status_code != 201]
    ips = {r.json()["port"]["fixed_ips"][0]["ip_address"] for r in results}
    assert len(ips) == 40
    page = demo("GET", f"/ports?network_id={net['id']}&limit=15&sort_key=mac_address&sort_dir=asc").json()
    assert len(page["ports"]) == 15 and page["ports_links"][0]["rel"] == "next"
    assert demo("GET", "/networks?tags=t1").json()["networks"][0]["id"] == net["id"]

    public = [n for n in demo("GET", "/networks?router:external=true").json()["networks"]][0]
    router = demo("POST", "/routers", json={"router": {"name": "r", "external_gateway_info": {
        "network_id": public["id"]}}}).json()["router"]
    assert demo("PUT", f"/routers/{router['id']}/add_router_interface",
                json={"subnet_id": sub["id"]}).status_code == 200
    port_id = results[0].json()["port"]["id"]
    fip = demo("POST", "/floatingips", json={"floatingip": {"floating_network_id": public["id"],
                                                            "port_id": port_id}})
    assert fip.status_code == 201 and fip.json()["floatingip"]["router_id"] == router["id"], fip.text
    assert demo("DELETE", f"/networks/{net['id']}").status_code == 409
    assert demo("DELETE", f"/floatingips/{fip.json()['floatingip']['id']}").status_code == 204
    assert demo("PUT", f"/routers/{router['id']}/remove_router_interface",
                json={"subnet_id": sub["id"]}).status_code == 200
    assert demo("DELETE", f"/routers/{router['id']}").status_code == 204
    for r in results:
        assert demo("DELETE", f"/ports/{r.json()['port']['id']}").status_code == 204
    assert demo("DELETE", f"/networks/{net['id']}").status_code == 204


def test_agent_as_its_own_process_over_rabbitmq():
    """`stratus network-agent` on another "host" (its own process) serves ports bound to it."""
    import os
    import subprocess
    import time
    import uuid

    from tests.cloudfixture import VENV_BIN

    url = os.environ.get("STRATUS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    state = Path(tempfile.mkdtemp(prefix="stratus-net-agent-"))
    host = f"agent-{uuid.uuid4().hex[:6]}"
    env = {"STRATUS_BUS__TRANSPORT": "amqp", "STRATUS_BUS__URL": url, "STRATUS_NETWORK__RUN_AGENT": "false",
           "STRATUS_NETWORK__AGENT_DRIVER": "fake"}
    try:
        c = start_cloud(state, services=["identity", "network"], extra_env=env, timeout=120)
    except RuntimeError as exc:
        shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"cloud on RabbitMQ did not start (is the broker running?): {exc}")
    agent = None
    try:
        agent_env = {**c.env, "STRATUS_NETWORK__HOST": host, "STRATUS_NETWORK__RUN_AGENT": "true"}
        agent = subprocess.Popen([str(VENV_BIN / "stratus"), "network-agent"], env=agent_env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        admin = Api(c, c.token("admin"))
        net = admin("POST", "/networks", json={"network": {"name": "a"}}).json()["network"]
        admin("POST", "/subnets", json={"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.86.0.0/24"}})
        deadline = time.monotonic() + 30
        while True:
            port = admin("POST", "/ports", json={"port": {"network_id": net["id"], "binding:host_id": host}})
            port = port.json()["port"]
            if port["binding:vif_type"] == "bridge":
                break
            admin("DELETE", f"/ports/{port['id']}")
            assert time.monotonic() < deadline, "the agent process never registered"
            time.sleep(0.5)
        while admin("GET", f"/ports/{port['id']}").json()["port"]["status"] != "ACTIVE":
            assert time.monotonic() < deadline, "the agent process never reported the port"
            time.sleep(0.2)
        admin("DELETE", f"/ports/{port['id']}")
        admin("DELETE", f"/networks/{net['id']}")
    finally:
        if agent is not None:
            agent.terminate()
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


def test_concurrent_network_creates_get_distinct_segments(bcloud):
    admin = Api(bcloud, bcloud.token("admin"))
    token = admin.client.headers["X-Auth-Token"]

    async def burst(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, headers={"X-Auth-Token": token}) as c:
            return await asyncio.gather(*[c.post(f"{admin.base}/networks", json={"network": {"name": f"s{i}"}})
                                          for i in range(n)])

    results = asyncio.run(burst(12))
    assert [r.status_code for r in results] == [201] * 12, [r.text for r in results if r.status_code != 201]
    segments = [r.json()["network"]["provider:segmentation_id"] for r in results]
    assert len(set(segments)) == 12
    for r in results:
        admin("DELETE", f"/networks/{r.json()['network']['id']}")
