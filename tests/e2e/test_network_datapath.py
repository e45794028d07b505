"""The linuxbridge data path for real, with network namespaces standing in for VMs.

A "VM" is a namespace whose eth0 is one end of a veth pair; the other end is named like the tap
libvirt would create for the port (tap<port id[:11]>), so the agent wires it exactly as it wires
a real guest. Everything runs against a `stratus up` (identity + network) with its own host
name, nftables table, external bridge and address range, and is removed even on failure.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.cloudfixture import destroy_cloud, start_cloud

pytestmark = pytest.mark.e2e

TOOLS = ("ip", "nft", "dnsmasq", "busybox", "ping", "bridge")
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr replace "$ip/$mask" dev "$interface"
    echo "ip=$ip router=$router staticroutes=$(echo $staticroutes | tr ' ' ',') mtu=$mtu" > "$LEASE_FILE"
    if [ -n "$staticroutes" ]; then
      set -- $staticroutes
      while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
      ip route replace default via "$router" dev "$interface"
    fi ;;
esac
exit 0
"""


def _missing_capability() -> str | None:
    if os.geteuid() != 0:
        return "root (network namespaces, bridges and nftables need CAP_NET_ADMIN)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"the commands {', '.join(missing)} (packages iproute2, nftables, dnsmasq-base, busybox, iputils-ping)"
    if not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
        return "br_netfilter (security groups filter bridged traffic through it)"
    return None


def sh(*args, check=True, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout)


class MetadataEcho(http.server.BaseHTTPRequestHandler):
    """Stands in for compute's metadata service: answers with the headers the proxy sent."""

    def do_GET(self):
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Lab:
    """The cloud plus the namespaces that play VMs; tears everything down even after failures."""

    def __init__(self, services: tuple[str, ...] = ("identity", "network"), extra_env: dict | None = None,
                 timeout: float = 60.0):
        self.tag = uuid.uuid4().hex[:6]
        self.host = f"e2e-{self.tag}"
        self.table = f"stx{self.tag}"
        self.ext_bridge = f"brx{self.tag}"
        self.third = random.randint(100, 250)
        self.ext_cidr = f"172.31.{self.third}.0/24"
        self.ext_gw = f"172.31.{self.third}.1"
        self.vms: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="stratus-net-e2e-"))
        self.script = self.tmp / "udhcpc.sh"
        self.script.write_text(UDHCPC_SCRIPT)
        self.script.chmod(0o755)
        self.secret = uuid.uuid4().hex
        self.echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MetadataEcho)
        threading.Thread(target=self.echo.serve_forever, daemon=True).start()
        env = {
            "STRATUS_NETWORK__HOST": self.host,
            "STRATUS_NETWORK__AGENT_DRIVER": "linuxbridge",
            "STRATUS_NETWORK__NFT_TABLE": self.table,
            "STRATUS_NETWORK__LOCAL_IP": "127.0.0.1",
            "STRATUS_NETWORK__BRIDGE_MAPPINGS__PUBLIC": self.ext_bridge,
            "STRATUS_NETWORK__EXTERNAL_NETWORK__CIDR": self.ext_cidr,
            "STRATUS_NETWORK__EXTERNAL_NETWORK__GATEWAY_IP": self.ext_gw,
            "STRATUS_NETWORK__EXTERNAL_NETWORK__POOL_START": f"172.31.{self.third}.10",
            "STRATUS_NETWORK__EXTERNAL_NETWORK__POOL_END": f"172.31.{self.third}.60",
            "STRATUS_NETWORK__METADATA_URL": f"http://127.0.0.1:{self.echo.server_address[1]}",
            **(extra_env or {}),
        }
        if "compute" not in services:
            # The shared secret normally lives in [compute]; compute validates its own section.
            env["STRATUS_COMPUTE__METADATA_SECRET"] = self.secret
        self.cloud = start_cloud(self.tmp / "state", services=list(services), extra_env=env, timeout=timeout)
        self.admin = self.cloud.sdk("admin")
        self.demo_project = self.cloud.sdk("demo").current_project_id
        self.admin_project = self.admin.current_project_id

    def vm(self, port) -> str:
        """A namespace with eth0 plugged where the port's tap would be; returns the namespace."""
        ns = f"vm{self.tag}{len(self.vms)}"
        tap = f"tap{port.id[:11]}"
        self.vms.append(ns)
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", ns, "link", "set", "eth0", "address", port.mac_address)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "link", "set", tap, "up")
        return ns

    def dhcp(self, ns: str) -> dict:
        lease = self.tmp / f"{ns}.lease"
        env = {**os.environ, "LEASE_FILE": str(lease)}
        proc = subprocess.run(["ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "8", "-O", "staticroutes", "-O", "mtu",
                               "-T", "1", "-s", str(self.script)], capture_output=True, text=True, env=env, timeout=30)
        assert lease.exists(), f"no DHCP lease in {ns}: {proc.stdout}{proc.stderr}"
        return dict(kv.split("=", 1) for kv in lease.read_text().split() if "=" in kv)

    def ping(self, ns: str | None, target: str, *, wait: float = 0.5, source: str | None = None) -> bool:
        cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ping", "-c", "1", "-W", str(wait)]
        if source:
            cmd += ["-I", source]
        return subprocess.run(cmd + [target], capture_output=True).returncode == 0

    def bound_port(self, network, project_id: str, ip: str, subnet_id: str):
        return self.admin.network.create_port(network_id=network.id, project_id=project_id,
                                              binding_host_id=self.host, device_owner="compute:nova",
                                              device_id=str(uuid.uuid4()),
                                              fixed_ips=[{"subnet_id": subnet_id, "ip_address": ip}])

    def leftovers(self, network_ids: list[str], router_ids: list[str]) -> list[str]:
        found = []
        links = sh("ip", "-o", "link", "show").stdout
        for nid in network_ids:
            if f"brq{nid[:11]}" in links:
                found.append(f"bridge brq{nid[:11]}")
        for name in sh("ip", "netns", "list").stdout.split():
            if any(name == f"qdhcp-{n}" for n in network_ids) or any(name == f"qrouter-{r}" for r in router_ids):
                found.append(f"namespace {name}")
        for nid in network_ids:
            if nid in sh("ps", "-eo", "args").stdout:
                found.append(f"dnsmasq of {nid}")
        if self.table in sh("nft", "list", "tables").stdout:
            found.append(f"nftables table {self.table}")
        record = self.cloud.state_dir / "network" / f"linuxbridge-{self.host}.json"
        if record.exists():
            data = json.loads(record.read_text())
            found += [f"recorded {k}: {v}" for k, v in data.items() if v and k != "tables"]
        return found

    def close(self):
        for ns in self.vms:
            sh("ip", "netns", "del", ns, check=False)
        try:
            destroy_cloud(self.cloud)
        finally:
            self.echo.shutdown()
            # The agent tears its data path down on stop; make sure in case it could not.
            sh("nft", "delete", "table", "bridge", self.table, check=False)
            sh("nft", "delete", "table", "inet", self.table, check=False)
            sh("ip", "link", "del", self.ext_bridge, check=False)
            shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def lab():
    reason = _missing_capability()
    if reason:
        pytest.skip(f"needs {reason}")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def _wait(predicate, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def test_dhcp_isolation_security_groups_router_floating_ip_and_metadata(lab):
    net = lab.admin.network
    net_a = net.create_network(name=f"a-{lab.tag}", project_id=lab.demo_project)
    sub_a = net.create_subnet(network_id=net_a.id, project_id=lab.demo_project, ip_version=4, cidr="10.61.0.0/24")
    # Project B uses the same addresses: only segmentation keeps the two apart.
    net_b = net.create_network(name=f"b-{lab.tag}", project_id=lab.admin_project)
    sub_b = net.create_subnet(network_id=net_b.id, project_id=lab.admin_project, ip_version=4, cidr="10.61.0.0/24")
    a1 = lab.bound_port(net_a, lab.demo_project, "10.61.0.11", sub_a.id)
    a2 = lab.bound_port(net_a, lab.demo_project, "10.61.0.12", sub_a.id)
    b1 = lab.bound_port(net_b, lab.admin_project, "10.61.0.13", sub_b.id)
    assert a1.binding_vif_type == "bridge"
    assert a1.binding_vif_details["bridge_name"] == f"brq{net_a.id[:11]}"
    router = None
    fip = None
    try:
        vm_a1, vm_a2, vm_b1 = lab.vm(a1), lab.vm(a2), lab.vm(b1)

        # DHCP: each "VM" leases its port's address, with the gateway and the metadata route.
        lease = lab.dhcp(vm_a1)
        assert lease["ip"] == "10.61.0.11"
        assert "169.254.169.254/32" in lease.get("staticroutes", "") and "10.61.0.1" in lease["staticroutes"]
        assert lab.dhcp(vm_a2)["ip"] == "10.61.0.12"
        assert lab.dhcp(vm_b1)["ip"] == "10.61.0.13"
        assert _wait(lambda: net.get_port(a1.id).status == "ACTIVE", 10) is not None

        # Same network, default group (ingress from members): reachable. Other project's network: not.
        assert lab.ping(vm_a1, "10.61.0.12")
        assert not lab.ping(vm_b1, "10.61.0.12")
        assert not lab.ping(vm_b1, "10.61.0.11")

        # Anti-spoofing: a second, unassigned source address does not get through.
        sh("ip", "-n", vm_a1, "addr", "add", "10.61.0.99/24", "dev", "eth0")
        assert not lab.ping(vm_a1, "10.61.0.12", source="10.61.0.99")
        sh("ip", "-n", vm_a1, "addr", "del", "10.61.0.99/24", "dev", "eth0")

        # Removing the ingress rule stops ping; adding an ICMP rule restores it, within a second each.
        sg_id = a2.security_group_ids[0]
        rules = list(net.security_group_rules(security_group_id=sg_id))
        ingress_v4 = next(r for r in rules if r.direction == "ingress" and r.ether_type == "IPv4")
        net.delete_security_group_rule(ingress_v4)
        blocked = _wait(lambda: not lab.ping(vm_a1, "10.61.0.12", wait=0.3), 5)
        assert blocked is not None and blocked < 1.5, f"rule removal took {blocked}s to take effect"
        net.create_security_group_rule(security_group_id=sg_id, direction="ingress", ether_type="IPv4",
                                       protocol="icmp")
        restored = _wait(lambda: lab.ping(vm_a1, "10.61.0.12", wait=0.3), 5)
        assert restored is not None and restored < 1.0, f"rule addition took {restored}s to take effect"
        print(f"rule removal effective after {blocked:.3f}s, addition after {restored:.3f}s")

        # Router to the external network: SNAT out, a floating IP answering ping from the host.
        public = net.find_network("public")
        router = net.create_router(name=f"r-{lab.tag}", project_id=lab.demo_project,
                                   external_gateway_info={"network_id": public.id})
        net.add_interface_to_router(router, subnet_id=sub_a.id)
        assert _wait(lambda: lab.ping(vm_a1, lab.ext_gw), 10) is not None, "no SNAT path to the host"
        fip = net.create_ip(floating_network_id=public.id, project_id=lab.demo_project, port_id=a1.id)
        assert fip.fixed_ip_address == "10.61.0.11"
        assert _wait(lambda: lab.ping(None, fip.floating_ip_address), 10) is not None, "floating IP does not answer"

        # Metadata: the proxy names the instance by its port and signs the id.
        out = sh("ip", "netns", "exec", vm_a1, "busybox", "wget", "-q", "-O", "-",
                 "http://169.254.169.254/openstack/latest/meta_data.json").stdout
        seen = json.loads(out)
        assert seen["path"] == "/openstack/latest/meta_data.json"
        assert seen["headers"]["x-instance-id"] == a1.device_id
        assert seen["headers"]["x-tenant-id"] == lab.demo_project
        expected = hmac.new(lab.secret.encode(), a1.device_id.encode(), hashlib.sha256).hexdigest()
        assert seen["headers"]["x-instance-id-signature"] == expected
        assert seen["headers"]["x-forwarded-for"] == "10.61.0.11"
    finally:
        for ns in list(lab.vms):
            sh("ip", "netns", "del", ns, check=False)
            lab.vms.remove(ns)
        if fip is not None:
            net.delete_ip(fip)
        if router is not None:
            net.remove_interface_from_router(router, subnet_id=sub_a.id)
            net.delete_router(router)
        for p in (a1, a2, b1):
            net.delete_port(p)
        net.delete_network(net_a)
        net.delete_network(net_b)

    router_ids = [router.id] if router is not None else []
    assert _wait(lambda: not lab.leftovers([net_a.id, net_b.id], router_ids), 10) is not None, \
        lab.leftovers([net_a.id, net_b.id], router_ids)


def test_vlan_tenant_networks_on_a_physical_interface():
    """tenant_network_type = vlan: the bridge's uplink is <interface>.<vlan id> and guests talk over it."""
    reason = _missing_capability()
    if reason:
        pytest.skip(f"needs {reason}")
    phys = f"phy{uuid.uuid4().hex[:6]}"
    # A veth stands in for the physical interface (its peer is the "switch"; nothing is sent).
    sh("ip", "link", "add", phys, "type", "veth", "peer", "name", f"sw{phys[3:]}")
    lab = None
    try:
        probe = sh("ip", "link", "add", "link", phys, "name", f"{phys}.9", "type", "vlan", "id", "9", check=False)
        if probe.returncode != 0:
            pytest.skip(f"needs 802.1Q VLAN interfaces in the kernel (CONFIG_VLAN_8021Q): {probe.stderr.strip()}")
        sh("ip", "link", "del", f"{phys}.9")
        sh("ip", "link", "set", phys, "up")
        lab = Lab(extra_env={"STRATUS_NETWORK__TENANT_NETWORK_TYPE": "vlan",
                             "STRATUS_NETWORK__NETWORK_VLAN_RANGES": "physnet1:150:151",
                             "STRATUS_NETWORK__PHYSICAL_INTERFACE_MAPPINGS__PHYSNET1": phys})
        net = lab.admin.network
        n = net.create_network(name=f"vlan-{lab.tag}", project_id=lab.demo_project)
        # a free id of the range, picked at random among the lowest free ones
        assert (n.provider_network_type, n.provider_physical_network) == ("vlan", "physnet1")
        vid = n.provider_segmentation_id
        assert vid in (150, 151)
        s = net.create_subnet(network_id=n.id, project_id=lab.demo_project, ip_version=4, cidr="10.63.0.0/24")
        a = lab.bound_port(n, lab.demo_project, "10.63.0.11", s.id)
        b = lab.bound_port(n, lab.demo_project, "10.63.0.12", s.id)
        try:
            va, vb = lab.vm(a), lab.vm(b)
            assert lab.dhcp(va)["ip"] == "10.63.0.11"
            assert lab.dhcp(vb)["ip"] == "10.63.0.12"
            assert lab.ping(va, "10.63.0.12")
            detail = sh("ip", "-d", "link", "show", f"{phys}.{vid}").stdout
            assert f"vlan protocol 802.1Q id {vid}" in detail and f"master brq{n.id[:11]}" in detail
            # The range has two ids: the third tenant network is refused with a clear 409.
            n2 = net.create_network(name=f"vlan2-{lab.tag}", project_id=lab.demo_project)
            assert n2.provider_segmentation_id == ({150, 151} - {vid}).pop()
            with pytest.raises(Exception, match="No tenant network is available"):
                net.create_network(name=f"vlan3-{lab.tag}", project_id=lab.demo_project)
            net.delete_network(n2)
        finally:
            for ns in list(lab.vms):
                sh("ip", "netns", "del", ns, check=False)
                lab.vms.remove(ns)
            net.delete_port(a)
            net.delete_port(b)
            net.delete_network(n)
        assert _wait(lambda: f"{phys}.150" not in sh("ip", "-o", "link", "show").stdout, 10) is not None
        assert _wait(lambda: not lab.leftovers([n.id], []), 10) is not None, lab.leftovers([n.id], [])
    finally:
        if lab is not None:
            lab.close()
        sh("ip", "link", "del", phys, check=False)


# ---- real VMs (compute with the libvirt driver) ------------------------------------------------

PING_SCRIPT = """#!/bin/sh
# Ping the peer until it answers (or give up) and say so on the console.
i=0
while [ $i -lt {tries} ]; do
  if ping -c 1 -W 1 {peer} >/dev/null 2>&1; then echo "PEER-PING-OK {peer}"; exit 0; fi
  i=$((i+1)); sleep 1
done
echo "PEER-PING-FAIL {peer}"
"""


def _vm_capability() -> str | None:
    reason = _missing_capability()
    if reason:
        return reason
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python (uv sync --all-extras)"
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} (Debian packages qemu-system-x86 qemu-utils)"
    if shutil.which("libvirtd") is None and not Path("/usr/sbin/libvirtd").exists():
        return "libvirtd (Debian packages libvirt-daemon libvirt-daemon-driver-qemu)"
    return None


def test_real_vms_ping_each_other_not_across_projects_and_floating_ip(tmp_path):
    """Three test-image guests booted by compute: two on one network ping each other, one on another
    project's network with the same addresses cannot, and a floating IP answers ping from the host."""
    reason = _vm_capability()
    if reason:
        pytest.skip(f"needs {reason}")
    from stratus.testimage import READY_MARKER, build

    cache = Path(os.environ.get("STRATUS_TEST_CACHE") or os.path.expanduser("~/.cache/stratus-test")) / "testimage"
    build(cache)
    tag = uuid.uuid4().hex[:6]
    # The metadata proxy forwards to compute's own metadata service here (no echo server).
    lab = Lab(services=("identity", "image", "compute", "network"), timeout=120,
              extra_env={"STRATUS_COMPUTE__DRIVER": "libvirt", "STRATUS_COMPUTE__HOST": f"e2e-{tag}",
                         "STRATUS_NETWORK__HOST": f"e2e-{tag}", "STRATUS_NETWORK__METADATA_URL": ""})
    lab.host = f"e2e-{tag}"
    demo = lab.cloud.sdk("demo")
    admin = lab.admin
    servers, made, taps = [], [], []
    router = fip = None
    passed = False
    try:
        deadline = time.monotonic() + 120
        while not list(demo.image.images(name="stratus-test")):
            assert time.monotonic() < deadline, "the stratus-test image was not registered"
            time.sleep(2)
        image = next(demo.image.images(name="stratus-test"))
        flavor = demo.compute.find_flavor("m1.tiny")
        net_a = demo.network.create_network(name=f"vm-a-{tag}")
        sub_a = demo.network.create_subnet(network_id=net_a.id, ip_version=4, cidr="10.62.0.0/24")
        net_b = admin.network.create_network(name=f"vm-b-{tag}")
        sub_b = admin.network.create_subnet(network_id=net_b.id, ip_version=4, cidr="10.62.0.0/24")
        made += [("demo", net_a), ("admin", net_b)]
        ports = {}
        for name, conn, net, sub, ip in (("a1", demo, net_a, sub_a, "10.62.0.21"), ("a2", demo, net_a, sub_a,
                                                                                       "10.62.0.22"),
                                         ("b1", admin, net_b, sub_b, "10.62.0.23")):
            ports[name] = conn.network.create_port(network_id=net.id, name=f"{name}-{tag}",
                                                   fixed_ips=[{"subnet_id": sub.id, "ip_address": ip}])
        taps = [f"tap{p.id[:11]}" for p in ports.values()]
        peers = {"a1": ("10.62.0.22", 90), "a2": ("10.62.0.21", 90), "b1": ("10.62.0.22", 15)}
        for name, conn in (("a1", demo), ("a2", demo), ("b1", admin)):
            peer, tries = peers[name]
            script = PING_SCRIPT.format(peer=peer, tries=tries)
            import base64

            # a1 and a2 have no config drive: they lease their address by DHCP and read user data
            # from 169.254.169.254 through the metadata proxy. b1 uses a config drive.
            server = conn.compute.create_server(
                name=f"{name}-{tag}", image_id=image.id, flavor_id=flavor.id, config_drive=name == "b1",
                user_data=base64.b64encode(script.encode()).decode(), networks=[{"port": ports[name].id}])
            servers.append((conn, server))
        for conn, server in servers:
            conn.compute.wait_for_server(server, status="ACTIVE", wait=240)
        for name in ports:
            port = admin.network.get_port(ports[name].id)
            assert port.binding_vif_type == "bridge" and port.binding_host_id == lab.host

        def console(conn, server) -> str:
            return conn.compute.get_server_console_output(server).get("output", "")

        outcome = {}
        deadline = time.monotonic() + 300
        while len(outcome) < 3 and time.monotonic() < deadline:
            for (conn, server), name in zip(servers, ("a1", "a2", "b1")):
                if name in outcome:
                    continue
                log = console(conn, server)
                if "PEER-PING-OK" in log:
                    outcome[name] = "ok"
                elif "PEER-PING-FAIL" in log:
                    outcome[name] = "fail"
            time.sleep(3)
        assert outcome == {"a1": "ok", "a2": "ok", "b1": "fail"}, (outcome, [console(c, s)[-1500:]
                                                                            for c, s in servers])
        assert all(READY_MARKER in console(c, s) for c, s in servers)
        for conn, server in servers[:2]:
            assert f"instance-id: {server.id}" in console(conn, server)

        # A floating IP on a1 answers ping from the host once ICMP is allowed in.
        public = demo.network.find_network("public")
        router = demo.network.create_router(name=f"r-{tag}", external_gateway_info={"network_id": public.id})
        demo.network.add_interface_to_router(router, subnet_id=sub_a.id)
        demo.network.create_security_group_rule(security_group_id=ports["a1"].security_group_ids[0],
                                                direction="ingress", ether_type="IPv4", protocol="icmp")
        fip = demo.network.create_ip(floating_network_id=public.id, port_id=ports["a1"].id)
        assert _wait(lambda: lab.ping(None, fip.floating_ip_address, wait=1), 60) is not None
        passed = True
    finally:
        for conn, server in servers:
            try:
                conn.compute.delete_server(server)
            except Exception:
                pass
        for conn, server in servers:
            try:
                conn.compute.wait_for_delete(server, wait=120)
            except Exception:
                pass
        if fip is not None:
            lab.admin.network.delete_ip(fip)
        if router is not None:
            lab.admin.network.remove_interface_from_router(router, subnet_id=sub_a.id)
            lab.admin.network.delete_router(router)
        for _, net in made:
            for p in lab.admin.network.ports(network_id=net.id):
                if p.device_owner != "network:dhcp":
                    lab.admin.network.delete_port(p)
            lab.admin.network.delete_network(net)
        net_ids, router_ids = [n.id for _, n in made], [router.id] if router is not None else []
        clean = _wait(lambda: not lab.leftovers(net_ids, router_ids), 15) is not None
        leftovers = lab.leftovers(net_ids, router_ids)
        links = sh("ip", "-o", "link", "show").stdout
        lab.close()
    if passed:
        assert clean, leftovers
        assert not [t for t in taps if t in links], "a VM tap outlived its server"
