"""End-to-end: build the Stratus test guest image and boot it under QEMU (TCG).

Two boots: one with a config drive (IDE CD-ROM labelled config-2) checking
metadata, user data and SSH login with the injected key; one without a config
drive, where the guest must find the metadata service at 169.254.169.254 (a
local HTTP server reached through QEMU's user-mode network) and must power off
cleanly on an ACPI power-button press.

The image is built once into $STRATUS_TEST_CACHE (default ~/.cache/stratus-test)
and reused while its recipe is unchanged.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pycdlib
import pytest

from stratus.testimage import BOOT_MARKER, READY_MARKER, build

GUEST_DIR = Path(__file__).resolve().parents[2] / "stratus/testimage/guest"
GUEST_HELPERS = GUEST_DIR / "metadata.sh"

pytestmark = pytest.mark.e2e

QEMU = "qemu-system-x86_64"
READY_TIMEOUT = 60.0


def _cache_dir() -> Path:
    base = os.environ.get("STRATUS_TEST_CACHE") or os.path.expanduser("~/.cache/stratus-test")
    return Path(base) / "testimage"


@pytest.fixture(scope="module")
def image() -> dict[str, Path]:
    if shutil.which(QEMU) is None:
        pytest.skip(f"{QEMU} is not installed (Debian package qemu-system-x86)")
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed (Debian package qemu-utils)")
    return build(_cache_dir())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_config_drive(path: Path, files: dict[str, bytes]) -> None:
    """ISO 9660 + Joliet + Rock Ridge, volume label config-2, files under openstack/latest/."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="config-2")
    iso.add_directory("/OPENSTAC", rr_name="openstack", joliet_path="/openstack")
    iso.add_directory("/OPENSTAC/LATEST", rr_name="latest", joliet_path="/openstack/latest")
    for index, (name, data) in enumerate(sorted(files.items())):
        iso.add_fp(io.BytesIO(data), len(data), f"/OPENSTAC/LATEST/FILE{index}.;1",
                   rr_name=name, joliet_path=f"/openstack/latest/{name}")
    iso.write(str(path))
    iso.close()


class Guest:
    """One QEMU process started by this test; only its own PID is ever killed."""

    def __init__(self, workdir: Path, base_image: Path, extra_args: list[str], wrap: list[str] = ()):
        self.console = workdir / "console.log"
        self.monitor = workdir / "monitor.sock"
        overlay = workdir / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base_image), "-F", "qcow2",
                        str(overlay)], check=True)
        argv = [*wrap, QEMU, "-accel", "tcg", "-machine", "pc", "-m", "256", "-nographic",
                "-serial", f"file:{self.console}",
                "-monitor", f"unix:{self.monitor},server=on,wait=off",
                "-drive", f"file={overlay},format=qcow2,if=virtio",
                *extra_args]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)

    def text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, marker: str, timeout: float) -> float:
        """Seconds from QEMU start until marker shows on the console."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.text():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                output = self.proc.stdout.read().decode(errors="replace")
                pytest.fail(f"QEMU exited ({self.proc.returncode}) before {marker!r}: {output}\n{self.text()}")
            time.sleep(0.25)
        pytest.fail(f"no {marker!r} on the console within {timeout:.0f} s; console:\n{self.text()}")

    def monitor_command(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.monitor))
            sock.sendall(command.encode() + b"\n")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout:
            self.proc.stdout.close()


def _ssh_keypair(workdir: Path) -> tuple[Path, str] | None:
    if shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        return None
    key = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "stratus-test", "-f", str(key)],
                   check=True)
    return key, (workdir / "id_ed25519.pub").read_text().strip()


@pytest.fixture(scope="module")
def config_drive_boot(image, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cfgdrive-boot")
    instance_id = str(uuid.uuid4())
    hostname = f"vm-{instance_id[:8]}"
    marker = f"user-data-ran-{uuid.uuid4().hex[:12]}"
    keypair = _ssh_keypair(workdir)
    meta = {"uuid": instance_id, "name": hostname, "hostname": hostname, "launch_index": 0,
            "availability_zone": "nova", "project_id": "p1",
            "meta": {"hostname": "not-this-one", "role": "test"},
            "public_keys": {"k1": keypair[1] + "\n"} if keypair else {},
            "keys": [{"name": "k1", "type": "ssh", "data": keypair[1] + "\n"}] if keypair else []}
    user_data = f"#!/bin/sh\necho {marker}\necho \"on $(hostname)\"\nexit 3\n".encode()
    iso = workdir / "config.iso"
    make_config_drive(iso, {"meta_data.json": json.dumps(meta).encode(), "user_data": user_data,
                            "network_data.json": b'{"links": [], "networks": [], "services": []}'})
    ssh_port = _free_port()
    guest = Guest(workdir, image["qcow2"], [
        "-drive", f"file={iso},media=cdrom,if=ide,readonly=on",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=n0"])
    try:
        ready_after = guest.wait_for(READY_MARKER, READY_TIMEOUT)
        print(f"config-drive guest READY after {ready_after:.1f} s")
        yield {"guest": guest, "console": guest.text(), "instance_id": instance_id, "hostname": hostname,
               "marker": marker, "ssh_port": ssh_port, "keypair": keypair, "workdir": workdir}
    finally:
        guest.stop()


def test_image_files_and_cache(image):
    assert image["raw"].stat().st_size < 64 * 1024 * 1024
    with open(image["raw"], "rb") as disk:
        mbr = disk.read(512)
    assert mbr[510:512] == b"\x55\xaa" and mbr[446] == 0x80, "MBR with an active partition expected"
    info = subprocess.run(["qemu-img", "info", "--output=json", str(image["qcow2"])],
                          capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["format"] == "qcow2"
    # Same inputs: the second call must reuse the cached build.
    mtime = image["qcow2"].stat().st_mtime_ns
    started = time.monotonic()
    again = build(image["qcow2"].parent)
    assert time.monotonic() - started < 2.0
    assert again == image and image["qcow2"].stat().st_mtime_ns == mtime


def _busybox() -> str:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox (Debian package busybox-static) is not installed on this machine")
    return busybox


def _guest_helper(function: str, *args: str) -> str:
    busybox = _busybox()
    proc = subprocess.run([busybox, "sh", "-c", '. "$0"; "$@"', str(GUEST_HELPERS), function, *args],
                          capture_output=True, text=True, timeout=10)
    return proc.stdout


def test_guest_metadata_parsing(tmp_path):
    key_a = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0 alice@example"
    key_b = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob"
    nova_style = tmp_path / "nova.json"
    nova_style.write_text(json.dumps({
        "uuid": "0b1c2d3e-0000-4000-8000-000000000001", "meta": {"hostname": "evil", "quote": 'a"b}'},
        "hostname": "web-1.novalocal", "name": "web-1", "public_keys": {"a": key_a + "\n", "b": key_b},
        "keys": [{"name": "a", "type": "ssh", "data": key_a + "\n"}], "launch_index": 0,
        "devices": [], "dedicated_cpus": [], "random_seed": "QUJD" * 200}))
    assert _guest_helper("json_get", "uuid", str(nova_style)).strip() == "0b1c2d3e-0000-4000-8000-000000000001"
    assert _guest_helper("json_get", "hostname", str(nova_style)).strip() == "web-1.novalocal"
    assert _guest_helper("json_get", "name", str(nova_style)).strip() == "web-1"
    assert _guest_helper("json_get", "meta/quote", str(nova_style)) == 'a"b}\n'
    assert _guest_helper("json_get", "launch_index", str(nova_style)).strip() == "0"
    assert _guest_helper("json_public_keys", str(nova_style)).splitlines() == [key_a, key_b]

    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps({"uuid": "u-2", "keys": [{"name": "b", "type": "ssh", "data": key_b}]}, indent=2))
    assert _guest_helper("json_get", "uuid", str(pretty)).strip() == "u-2"
    assert _guest_helper("json_get", "hostname", str(pretty)).strip() == ""
    assert _guest_helper("json_get", "keys/0/name", str(pretty)).strip() == "b"
    assert _guest_helper("json_public_keys", str(pretty)).splitlines() == [key_b]

    keyless = tmp_path / "keyless.json"
    keyless.write_text(json.dumps({"uuid": "u-3", "public_keys": {}, "keys": []}))
    assert _guest_helper("json_public_keys", str(keyless)).strip() == ""

    network = tmp_path / "network_data.json"
    network.write_text(json.dumps(_static_network_data("FA:16:3E:00:00:01", "10.9.8.7")))
    flat = _guest_helper("json_flatten", str(network)).splitlines()
    assert "links/0/ethernet_mac_address\tFA:16:3E:00:00:01" in flat
    assert "networks/0/routes/0/gateway\t10.0.2.2" in flat
    assert "services/0/address\t10.0.2.3" in flat

    broken = tmp_path / "broken.json"
    broken.write_text('{"uuid": "u-4", "hostname": ')
    assert "json:" in subprocess.run([shutil.which("busybox"), "sh", "-c", '. "$0"; json_flatten "$1"',
                                      str(GUEST_HELPERS), str(broken)], capture_output=True, text=True).stderr


def _run_lease_script(tmp_path: Path, event: str, lease: dict[str, str]) -> tuple[list[str], str]:
    """Run guest/udhcpc.script with logging stand-ins for ip/ifconfig/route; return (commands, resolv.conf).

    Two guards keep it off the host's real interfaces: it runs under dash, which
    (unlike busybox sh, whose applets take precedence over PATH) really executes the
    stand-ins from PATH, and it runs in a new, empty network namespace.
    """
    busybox, dash, unshare = _busybox(), shutil.which("dash"), shutil.which("unshare")
    if dash is None or unshare is None:
        pytest.skip("dash and unshare (Debian packages dash, util-linux) are needed to run the lease script")
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.decode().strip()}")
    fakebin = tmp_path / "bin"
    fakebin.mkdir(exist_ok=True)
    log = tmp_path / "commands.log"
    log.write_text("")
    for tool in ("ip", "ifconfig", "route"):
        (fakebin / tool).write_text(f'#!{dash}\necho "{tool} $*" >> "{log}"\n')
        (fakebin / tool).chmod(0o755)
    (fakebin / "grep").unlink(missing_ok=True)
    (fakebin / "grep").symlink_to(busybox)
    resolv = tmp_path / "resolv.conf"
    env = {"PATH": str(fakebin), "RESOLV_CONF": str(resolv), "interface": "eth0", **lease}
    subprocess.run([unshare, "--net", "--", dash, str(GUEST_DIR / "udhcpc.script"), event],
                   env=env, check=True, timeout=10)
    return log.read_text().splitlines(), resolv.read_text() if resolv.exists() else ""


def test_guest_lease_script(tmp_path):
    lease = {"ip": "10.0.0.5", "subnet": "255.255.255.0", "router": "10.0.0.1", "dns": "10.0.0.2 10.0.0.3",
             "domain": "openstacklocal", "mtu": "1450"}
    commands, resolv = _run_lease_script(tmp_path, "bound", lease)
    assert "ip link set eth0 mtu 1450" in commands
    assert "ifconfig eth0 10.0.0.5 netmask 255.255.255.0 up" in commands
    assert "ip route replace default via 10.0.0.1 dev eth0" in commands
    assert resolv.splitlines() == ["search openstacklocal", "nameserver 10.0.0.2", "nameserver 10.0.0.3"]

    # With classless static routes (option 121) the router option is ignored (RFC 3442).
    lease["staticroutes"] = "169.254.169.254/32 10.0.0.2 0.0.0.0/0 10.0.0.1 10.1.0.0/16 0.0.0.0"
    lease["router"] = "10.0.0.99"
    commands, _ = _run_lease_script(tmp_path, "bound", lease)
    routes = [c for c in commands if c.startswith("ip route")]
    assert routes == ["ip route replace 169.254.169.254/32 via 10.0.0.2 dev eth0",
                      "ip route replace 0.0.0.0/0 via 10.0.0.1 dev eth0",
                      "ip route replace 10.1.0.0/16 dev eth0"]

    commands, _ = _run_lease_script(tmp_path, "deconfig", {})
    assert commands == ["ip -4 addr flush dev eth0", "ip link set eth0 up"]


def _static_network_data(mac: str, address: str) -> dict:
    """network_data.json as nova writes it for a subnet without DHCP."""
    return {
        "links": [{"id": "tap0a1b2c3d-4e", "vif_id": "0a1b2c3d-4e5f", "type": "ovs", "mtu": 1500,
                   "ethernet_mac_address": mac}],
        "networks": [{"id": "network0", "type": "ipv4", "link": "tap0a1b2c3d-4e", "ip_address": address,
                      "netmask": "255.255.255.0", "network_id": "9f8e",
                      "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.2"}],
                      "services": [{"type": "dns", "address": "10.0.2.3"}]}],
        "services": [{"type": "dns", "address": "10.0.2.3"}],
    }


def test_direct_kernel_boot_with_virtio_config_drive_and_static_network(image, tmp_path):
    """-kernel/-initrd boot; config drive as a second virtio-blk disk; the NIC gets the
    static address network_data.json gives for its MAC (no DHCP)."""
    instance_id = str(uuid.uuid4())
    mac = "52:54:00:ab:cd:01"
    iso = tmp_path / "config.iso"
    make_config_drive(iso, {
        "meta_data.json": json.dumps({"uuid": instance_id, "hostname": "direct"}).encode(),
        "network_data.json": json.dumps(_static_network_data(mac.upper(), "10.0.2.77")).encode(),
        "user_data": b"#!/bin/sh\nip route show\ncat /etc/resolv.conf\nping -c 1 -W 5 10.0.2.2 >/dev/null\n",
    })
    guest = Guest(tmp_path, image["qcow2"], [
        "-kernel", str(image["kernel"]), "-initrd", str(image["initramfs"]), "-append", "console=ttyS0",
        "-drive", f"file={iso},format=raw,if=virtio,readonly=on",
        "-netdev", "user,id=n0", "-device", f"virtio-net-pci,netdev=n0,mac={mac}"])
    try:
        guest.wait_for(READY_MARKER, READY_TIMEOUT)
        console = guest.text()
        assert "SYSLINUX" not in console
        assert re.search(r"^config-drive: /dev/vdb\s*$", console, re.M), console
        assert f"instance-id: {instance_id}" in console and "hostname: direct" in console
        assert "network: eth0 static from network_data.json" in console, console
        assert re.search(r"^eth0: 10\.0\.2\.77\s*$", console, re.M), console
        assert re.search(r"^default via 10\.0\.2\.2 dev eth0", console, re.M), console
        assert "nameserver 10.0.2.3" in console
        assert "USER-DATA END rc=0" in console, console  # ping of the gateway answered
        assert "ssh: no public key in metadata, not started" in console
    finally:
        guest.stop()


def test_config_drive_metadata_and_user_data(config_drive_boot):
    console = config_drive_boot["console"]
    assert BOOT_MARKER in console
    assert re.search(r"^config-drive: /dev/sr0\s*$", console, re.M), console
    assert f"instance-id: {config_drive_boot['instance_id']}" in console
    assert f"hostname: {config_drive_boot['hostname']}" in console
    begin = console.index("USER-DATA BEGIN")
    end = console.index("USER-DATA END rc=3")
    body = console[begin:end]
    assert config_drive_boot["marker"] in body
    assert f"on {config_drive_boot['hostname']}" in body
    assert re.search(r"^eth0: 10\.0\.2\.\d+\s*$", console, re.M), console
    assert console.index(BOOT_MARKER) < begin < end < console.index(READY_MARKER)


def test_ssh_login_with_injected_key(config_drive_boot):
    if config_drive_boot["keypair"] is None:
        pytest.skip("OpenSSH client (ssh, ssh-keygen) is not installed on this machine")
    assert "ssh: dropbear listening on port 22" in config_drive_boot["console"]
    key, _ = config_drive_boot["keypair"]
    argv = ["ssh", "-i", str(key), "-p", str(config_drive_boot["ssh_port"]),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR",
            "root@127.0.0.1", "hostname; id -u"]
    last = None
    for _ in range(3):
        last = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if last.returncode == 0:
            break
        time.sleep(2)
    assert last.returncode == 0, last.stderr
    assert last.stdout.split() == [config_drive_boot["hostname"], "0"]


_RELAY_SCRIPT = """\
import os, socket, sys, threading
upstream = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
def to_server():
    while data := os.read(0, 65536):
        upstream.sendall(data)
    upstream.shutdown(socket.SHUT_WR)
threading.Thread(target=to_server, daemon=True).start()
while data := upstream.recv(65536):
    os.write(1, data)
"""


class _MetadataHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server API
        self.requests.append(self.path)
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


def test_metadata_service_and_power_button(image, tmp_path):
    instance_id = str(uuid.uuid4())
    marker = f"metadata-user-data-{uuid.uuid4().hex[:12]}"
    handler = type("Handler", (_MetadataHandler,), {"requests": [], "files": {
        "/openstack/latest/meta_data.json": json.dumps({"uuid": instance_id, "hostname": "mdsvc-guest",
                                                        "name": "mdsvc-guest"}).encode(),
        "/openstack/latest/user_data": f"#!/bin/sh\necho {marker}\n".encode(),
    }})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # The user-mode network is numbered in 169.254.0.0/16 so that QEMU can forward
    # the guest's connections to 169.254.169.254:80. A "tcp:" guestfwd target is a
    # single connection made once; "cmd:" starts a relay per guest connection.
    relay = tmp_path / "relay.py"
    relay.write_text(_RELAY_SCRIPT)
    netdev = (f"user,id=n0,net=169.254.0.0/16,host=169.254.0.2,dhcpstart=169.254.0.15,"
              f"guestfwd=tcp:169.254.169.254:80-cmd:{sys.executable} {relay} {server.server_address[1]}")
    guest = Guest(tmp_path, image["qcow2"], ["-netdev", netdev, "-device", "virtio-net-pci,netdev=n0"])
    try:
        guest.wait_for(READY_MARKER, READY_TIMEOUT)
        console = guest.text()
        print(console)
        assert re.search(r"^config-drive: none\s*$", console, re.M), console
        assert "metadata-service: ok" in console
        assert f"instance-id: {instance_id}" in console
        assert "hostname: mdsvc-guest" in console
        assert "USER-DATA BEGIN" in console and marker in console and "USER-DATA END rc=0" in console
        assert "/openstack/latest/meta_data.json" in handler.requests
        assert re.search(r"^eth0: 169\.254\.0\.\d+\s*$", console, re.M), console

        guest.monitor_command("system_powerdown")
        guest.proc.wait(timeout=30)
        assert "STRATUS-TEST-IMAGE POWER OFF" in guest.text()
    finally:
        guest.stop()
        server.shutdown()
        server.server_close()


def _netns_capable() -> str | None:
    """Why a private network namespace with a bridge and tap cannot be made here, or None."""
    for tool in ("ip", "dnsmasq", "ping"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages iproute2, dnsmasq-base, iputils-ping)"
    if os.geteuid() != 0:
        return "creating network namespaces, bridges and taps needs root"
    return None


def test_tap_network_dhcp_routes_metadata_ping_and_ssh(image, tmp_path):
    """The guest on a tap in a private network namespace, as a compute host wires it: dnsmasq
    gives the lease with MTU and a classless static route to 169.254.169.254, the metadata
    service answers inside the namespace, and the guest answers ping and SSH from there."""
    reason = _netns_capable()
    if reason:
        pytest.skip(reason)
    namespace = f"stti-{uuid.uuid4().hex[:8]}"
    instance_id = str(uuid.uuid4())
    keypair = _ssh_keypair(tmp_path)
    metadata_root = tmp_path / "metadata/openstack/latest"
    metadata_root.mkdir(parents=True)
    meta = {"uuid": instance_id, "hostname": "tap-guest", "name": "tap-guest",
            "public_keys": {"k": keypair[1]} if keypair else {}}
    (metadata_root / "meta_data.json").write_text(json.dumps(meta))
    (metadata_root / "user_data").write_text("#!/bin/sh\nip route\nip link show eth0\n")

    def in_ns(*argv: str) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def ns_ip(*argv: str) -> None:
        subprocess.run(["ip", "-n", namespace, *argv], check=True, capture_output=True, timeout=10)

    children: list[subprocess.Popen] = []
    guest = None
    subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=10)
    try:
        ns_ip("link", "set", "lo", "up")
        ns_ip("addr", "add", "169.254.169.254/32", "dev", "lo")
        ns_ip("link", "add", "br0", "type", "bridge")
        ns_ip("addr", "add", "10.77.0.1/24", "dev", "br0")
        ns_ip("link", "set", "br0", "up")
        ns_ip("tuntap", "add", "tap0", "mode", "tap")
        ns_ip("link", "set", "tap0", "master", "br0")
        ns_ip("link", "set", "tap0", "up")
        children.append(subprocess.Popen(in_ns(
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--port=0", "--bind-interfaces",
            "--interface=br0", "--except-interface=lo", "--leasefile-ro", "--no-ping",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}", "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,1h",
            "--dhcp-option=option:classless-static-route,169.254.169.254/32,10.77.0.1,0.0.0.0/0,10.77.0.1",
            "--dhcp-option=option:mtu,1400", "--dhcp-option=option:dns-server,10.77.0.1"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        children.append(subprocess.Popen(in_ns(
            sys.executable, "-m", "http.server", "80", "--bind", "169.254.169.254",
            "--directory", str(tmp_path / "metadata")), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        guest = Guest(tmp_path, image["qcow2"], [
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:01"], wrap=in_ns("env"))
        guest.wait_for(READY_MARKER, READY_TIMEOUT)
        console = guest.text()
        match = re.search(r"^eth0: (10\.77\.0\.\d+)\s*$", console, re.M)
        assert match, console
        address = match.group(1)
        assert "metadata-service: ok" in console and f"instance-id: {instance_id}" in console, console
        assert re.search(r"^169\.254\.169\.254 via 10\.77\.0\.1 dev eth0", console, re.M), console
        assert re.search(r"^default via 10\.77\.0\.1 dev eth0", console, re.M), console
        assert " mtu 1400 " in console

        ping = subprocess.run(in_ns("ping", "-c", "2", "-W", "3", address), capture_output=True, text=True,
                              timeout=30)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        if keypair is not None:
            ssh = subprocess.run(in_ns(
                "ssh", "-i", str(keypair[0]), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR",
                f"root@{address}", "hostname"), capture_output=True, text=True, timeout=60)
            assert ssh.returncode == 0 and ssh.stdout.strip() == "tap-guest", ssh.stderr
    finally:
        if guest is not None:
            guest.stop()
        for child in children:
            child.kill()
            child.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", namespace], check=False, timeout=10)
