"""End-to-end: the libvirt driver boots the Stratus test image as real QEMU guests under libvirtd.

Driven through the driver API directly (the compute agent and API are tested elsewhere). One
guest is reused for the lifecycle actions to keep the file within a few minutes under TCG on
two cores; each action is checked on the real domain (libvirt state and XML) and on the
guest's serial console. Every domain this module creates is removed at the end even when a
test fails (by the uuids it made).

Needs: root, libvirtd (started with scripts/start-libvirtd.sh when missing), qemu-system-x86,
qemu-utils; the test image is built into $STRATUS_TEST_CACHE/testimage (~/.cache/stratus-test).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid as uuidlib
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed (uv sync --all-extras)")

from stratus.compute.drivers.base import (  # noqa: E402
    DriverError,
    ImageRef,
    InstanceNotFound,
    InstanceSpec,
    PowerState,
    Vif,
    VolumeConnection,
)
from stratus.compute.drivers.libvirt import LibvirtDriver  # noqa: E402
from stratus.compute.drivers.libvirt.probe import boot_probe  # noqa: E402
from stratus.compute.drivers.libvirt.connection import LibvirtConnection  # noqa: E402
from stratus.compute.novnc import DEFAULT_WEB_DIR, NoVNCProxy, console_url, create_novnc_app  # noqa: E402
from stratus.testimage import BOOT_MARKER, READY_MARKER, build  # noqa: E402

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 120.0
POWER_OFF_MARKER = "STRATUS-TEST-IMAGE POWER OFF"  # printed by the test image's ACPI button handler
GiB = 1024 ** 3


def _require_machine() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (libvirtd manages QEMU processes)")
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian packages qemu-system-x86 qemu-utils)")
    if shutil.which("libvirtd") is None and not Path("/usr/sbin/libvirtd").exists():
        pytest.skip("libvirtd is not installed (Debian packages libvirt-daemon libvirt-daemon-driver-qemu)")


def _cache_dir() -> Path:
    base = os.environ.get("STRATUS_TEST_CACHE") or os.path.expanduser("~/.cache/stratus-test")
    return Path(base) / "testimage"


class Harness:
    """A driver on its own event loop and instances dir, remembering every uuid it created."""

    def __init__(self, workdir: Path, image: Path):
        self.loop = asyncio.new_event_loop()
        self.workdir = workdir
        self.image = image
        self.driver = LibvirtDriver(workdir / "instances")
        self.created: list[str] = []
        self.images: dict[str, Path] = {"stratus-test": image}
        self.fetches: list[str] = []
        self.virt = None  # opened by start(): libvirtd may only be running once init_host has run

    def start(self) -> None:
        """init_host starts libvirtd (scripts/start-libvirtd.sh) on a host where it is not running."""
        self.run(self.driver.init_host("e2e-host"), timeout=120)
        self.virt = libvirt.open("qemu:///system")

    def run(self, coro, timeout: float = 180.0):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    async def fetch(self, ref: ImageRef) -> Path:
        self.fetches.append(ref.id)
        return self.images[ref.id]

    def spec(self, **overrides) -> InstanceSpec:
        uuid = overrides.pop("uuid", None) or str(uuidlib.uuid4())
        values = dict(uuid=uuid, name=f"stratus-e2e-{uuid[:8]}", hostname=f"vm-{uuid[:8]}", vcpus=1,
                      memory_mb=256, root_gb=1, image=ImageRef(id="stratus-test", disk_format="qcow2"),
                      config_drive=True, user_data=b"#!/bin/sh\necho user-data-says-$((6 * 7))\n")
        values.update(overrides)
        return InstanceSpec(**values)

    def spawn(self, spec: InstanceSpec) -> None:
        self.created.append(spec.uuid)
        self.run(self.driver.spawn(spec, self.fetch))

    def console(self, uuid: str) -> str:
        return self.run(self.driver.console_output(uuid))

    def wait_console(self, uuid: str, marker: str, count: int = 1, timeout: float = BOOT_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.console(uuid)
            if text.count(marker) >= count:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{marker!r} x{count} not on the console of {uuid} within {timeout}s:\n"
                                     + text[-3000:])
            time.sleep(0.3)

    def domain(self, uuid: str):
        return self.virt.lookupByUUIDString(uuid)

    def state(self, uuid: str) -> int:
        return self.domain(uuid).state()[0]

    def live_xml(self, uuid: str) -> str:
        return self.domain(uuid).XMLDesc(0)

    def cleanup(self) -> None:
        for uuid in self.created:
            try:
                self.run(self.driver.destroy(uuid), timeout=60)
            except Exception:
                pass
            try:  # belt and braces: whatever the driver did, no domain of ours survives
                if self.virt is None:
                    continue
                dom = self.virt.lookupByUUIDString(uuid)
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError:
                pass
        self.run(self.driver.close())
        if self.virt is not None:
            self.virt.close()
        self.loop.close()


def qemu_processes_for(uuid: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu" in cmdline and uuid.encode() in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    _require_machine()
    image = build(_cache_dir())["qcow2"]
    h = Harness(tmp_path_factory.mktemp("libvirt"), Path(image))
    try:
        h.start()
        yield h
    finally:
        h.cleanup()


@pytest.fixture(scope="module")
def vm(harness):
    """One guest, booted with a config drive and a user-data script, reused by the action tests."""
    spec = harness.spec()
    started = time.monotonic()
    harness.spawn(spec)
    spawned = time.monotonic() - started
    text = harness.wait_console(spec.uuid, READY_MARKER)
    print(f"spawn returned after {spawned:.2f}s; guest READY after {time.monotonic() - started:.1f}s")
    return {"spec": spec, "boot_text": text}


def test_start_libvirtd_script_is_idempotent(harness):
    """init_host ran it if needed; running it again on a live daemon changes nothing and succeeds."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "start-libvirtd.sh"
    conf_before = Path("/etc/libvirt/qemu.conf").read_text()
    for _ in range(2):
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    assert Path("/var/run/libvirt/libvirt-sock").is_socket()
    conf = Path("/etc/libvirt/qemu.conf").read_text()
    assert conf == conf_before and re.search(r'^\s*security_driver\s*=', conf, re.M)
    assert subprocess.run(["pgrep", "-x", "virtlogd"], capture_output=True).returncode == 0


def test_accelerator_probe_and_host_resources(harness):
    resources = harness.run(harness.driver.host_resources())
    accel = resources.details["accelerator"]
    assert accel in ("kvm", "tcg")
    assert resources.hypervisor_type == ("KVM" if accel == "kvm" else "QEMU")
    assert resources.details["accelerator_reason"]
    assert resources.vcpus >= 1 and resources.memory_mb > 0 and resources.local_gb > 0
    # The probe's mechanism itself: under TCG a probe guest always prints (a boot sector, then
    # a Linux kernel), so a silent KVM probe means KVM, not the probe, is at fault.
    conn = LibvirtConnection()
    try:
        seen, _ = harness.run(boot_probe(conn, "qemu", harness.workdir / "probe", 10.0))
        assert seen
    finally:
        conn.close()


def test_spawn_boots_with_config_drive_and_user_data(harness, vm):
    spec, text = vm["spec"], vm["boot_text"]
    assert BOOT_MARKER in text
    assert f"instance-id: {spec.uuid}" in text
    assert f"hostname: {spec.hostname}" in text
    assert "USER-DATA BEGIN" in text and "user-data-says-42" in text and "USER-DATA END rc=0" in text
    info = harness.run(harness.driver.get_info(spec.uuid))
    assert info.power_state == PowerState.RUNNING and info.vcpus == 1 and info.memory_mb == 256
    xml = harness.live_xml(spec.uuid)
    assert "<entry name='product'>OpenStack Compute</entry>" in xml
    assert "<entry name='manufacturer'>OpenStack Foundation</entry>" in xml
    assert "machine='pc-i440fx" in xml
    assert "device='cdrom'" in xml and "bus='ide'" in xml
    assert "<serial type='file'>" in xml
    endpoint = harness.run(harness.driver.console(spec.uuid))
    assert endpoint.protocol == "vnc" and endpoint.host == "127.0.0.1" and endpoint.port >= 5900
    assert spec.uuid in [i.uuid for i in harness.run(harness.driver.list_instances())]
    tail = harness.run(harness.driver.console_output(spec.uuid, 3))
    assert len(tail.splitlines()) <= 3
    # the image was fetched once and turned into a cached base; the root disk is an overlay on it
    disk = harness.driver.paths(spec.uuid).disk
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and info["backing-filename"].endswith("stratus-test.qcow2")
    assert info["virtual-size"] == 1 * GiB


def test_novnc_console_opens_in_a_browser(harness, vm):
    """The console URL, loaded by headless Chromium, connects through the proxy to the guest's VNC."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian package chromium)")
    if not (DEFAULT_WEB_DIR / "vnc_lite.html").exists():
        pytest.skip("noVNC is not installed (Debian package novnc)")
    uuid = vm["spec"].uuid
    endpoint = harness.run(harness.driver.console(uuid))
    token = uuidlib.uuid4().hex
    proxy = NoVNCProxy(lambda t: endpoint if t == token else None, port=0).start()
    try:
        shown = browser_status(browser, console_url(f"http://127.0.0.1:{proxy.port}", token),
                               harness.workdir / "chromium-good", until="Connected")
        assert shown == f"Connected to QEMU ({vm['spec'].name})"
        refused = browser_status(browser, console_url(f"http://127.0.0.1:{proxy.port}", "not-a-token"),
                                 harness.workdir / "chromium-bad", until="connection is closed", timeout=40)
        assert refused == "Something went wrong, connection is closed"
    finally:
        proxy.stop()

    # The same console through the ASGI app mounted where the compute API builds its URLs.
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/compute/vnc", app=create_novnc_app(lambda t: endpoint if t == token else None))])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        url = console_url(f"http://127.0.0.1:{port}/compute/vnc", token, ws_path="compute/vnc/websockify")
        shown = browser_status(browser, url, harness.workdir / "chromium-mounted", until="Connected")
        assert shown == f"Connected to QEMU ({vm['spec'].name})"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def browser_status(browser: str, url: str, profile: Path, until: str, timeout: float = 60.0) -> str:
    """Open ``url`` in headless Chromium and poll noVNC's status line over the DevTools protocol."""
    import httpx
    from websockets.sync.client import connect

    # Chromium's own temporary directories (org.chromium.Chromium.*) go under the profile, which
    # the harness removes: left in /tmp they outlived every run.
    scratch = profile / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    # Without the background-networking flags Chromium keeps trying hosts this closed network refuses,
    # which can stall the page's own loads.
    proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                             "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", "--disable-quic", "--disable-default-apps",
                             f"--user-data-dir={profile}", url], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "TMPDIR": str(scratch)})
    try:
        deadline = time.monotonic() + timeout
        port_file = profile / "DevToolsActivePort"
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        page = None
        while page is None:
            pages = [p for p in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if p.get("type") == "page"]
            page = next((p for p in pages if "vnc_lite" in p.get("url", "")), None)
            if page is None:
                assert time.monotonic() < deadline, "chromium did not open the console page"
                time.sleep(0.2)
        status = ""
        with connect(page["webSocketDebuggerUrl"], max_size=None) as devtools:
            request_id = 0
            while time.monotonic() < deadline:
                request_id += 1
                devtools.send(json.dumps({"id": request_id, "method": "Runtime.evaluate", "params": {
                    "expression": "(document.getElementById('status') || {}).textContent || ''",
                    "returnByValue": True}}))
                while True:
                    reply = json.loads(devtools.recv(timeout=10))
                    if reply.get("id") == request_id:
                        break
                status = reply.get("result", {}).get("result", {}).get("value", "")
                if until in status:
                    return status
                time.sleep(0.3)
        return status
    finally:
        os.killpg(proc.pid, 15)  # the browser and its helper processes (its own session)
        proc.wait(timeout=10)


def test_soft_and_hard_reboot(harness, vm):
    uuid = vm["spec"].uuid
    boots = harness.console(uuid).count(READY_MARKER)
    offs = harness.console(uuid).count(POWER_OFF_MARKER)
    harness.run(harness.driver.reboot(uuid, hard=False))
    # the guest obeyed the ACPI power button (its handler prints the marker), no forced stop
    assert harness.console(uuid).count(POWER_OFF_MARKER) == offs + 1
    assert harness.state(uuid) == libvirt.VIR_DOMAIN_RUNNING
    harness.wait_console(uuid, READY_MARKER, boots + 1)
    pid_before = qemu_processes_for(uuid)
    harness.run(harness.driver.reboot(uuid, hard=True))
    assert harness.state(uuid) == libvirt.VIR_DOMAIN_RUNNING
    assert qemu_processes_for(uuid) != pid_before  # a fresh QEMU process
    harness.wait_console(uuid, READY_MARKER, boots + 2)


def test_power_off_and_on(harness, vm):
    uuid = vm["spec"].uuid
    boots = harness.console(uuid).count(READY_MARKER)
    offs = harness.console(uuid).count(POWER_OFF_MARKER)
    harness.run(harness.driver.power_off(uuid, timeout=60))
    assert harness.console(uuid).count(POWER_OFF_MARKER) == offs + 1, "the guest should obey ACPI"
    assert harness.state(uuid) == libvirt.VIR_DOMAIN_SHUTOFF
    assert harness.run(harness.driver.get_info(uuid)).power_state == PowerState.SHUTDOWN
    assert qemu_processes_for(uuid) == []
    harness.run(harness.driver.power_off(uuid))  # idempotent
    with pytest.raises(DriverError):
        harness.run(harness.driver.console(uuid))
    harness.run(harness.driver.power_on(uuid))
    assert harness.state(uuid) == libvirt.VIR_DOMAIN_RUNNING
    harness.wait_console(uuid, READY_MARKER, boots + 1)
    # a guest that does not shut down within the timeout is forced off
    started = time.monotonic()
    harness.run(harness.driver.power_off(uuid, timeout=0.05))
    assert harness.state(uuid) == libvirt.VIR_DOMAIN_SHUTOFF
    assert time.monotonic() - started < 30  # no waiting on the guest beyond the timeout
    harness.run(harness.driver.power_on(uuid))
    harness.wait_console(uuid, READY_MARKER, boots + 2)


def test_pause_and_unpause(harness, vm):
    uuid = vm["spec"].uuid
    harness.run(harness.driver.pause(uuid))
    assert harness.state(uuid) == libvirt.VIR_DOMAIN_PAUSED
    assert harness.run(harness.driver.get_info(uuid)).power_state == PowerState.PAUSED
    harness.run(harness.driver.pause(uuid))  # idempotent
    harness.run(harness.driver.unpause(uuid))
    assert harness.state(uuid) == libvirt.VIR_DOMAIN_RUNNING


def test_suspend_and_resume(harness, vm):
    uuid = vm["spec"].uuid
    boots = harness.console(uuid).count(BOOT_MARKER)
    harness.run(harness.driver.suspend(uuid))
    dom = harness.domain(uuid)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and dom.hasManagedSaveImage(0)
    assert harness.run(harness.driver.get_info(uuid)).power_state == PowerState.SUSPENDED
    assert qemu_processes_for(uuid) == []
    harness.run(harness.driver.resume(uuid))
    assert harness.state(uuid) == libvirt.VIR_DOMAIN_RUNNING
    assert not harness.domain(uuid).hasManagedSaveImage(0)
    time.sleep(1.0)
    assert harness.console(uuid).count(BOOT_MARKER) == boots, "resume must restore memory, not reboot"


def test_volume_and_interface_hotplug(harness, vm):
    uuid = vm["spec"].uuid
    volume = harness.workdir / "volume.raw"
    with open(volume, "wb") as handle:
        handle.truncate(16 * 1024 * 1024)
    connection = VolumeConnection(volume_id=str(uuidlib.uuid4()), driver_volume_type="file",
                                  data={"path": str(volume)})
    device = harness.run(harness.driver.attach_volume(uuid, connection))
    assert device == "/dev/vdb"
    assert str(volume) in harness.live_xml(uuid)
    assert harness.run(harness.driver.attach_volume(uuid, connection)) == device  # idempotent
    harness.run(harness.driver.detach_volume(uuid, connection.volume_id), timeout=60)
    assert str(volume) not in harness.live_xml(uuid)
    assert str(volume) not in harness.domain(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    harness.run(harness.driver.detach_volume(uuid, connection.volume_id))  # already gone: fine

    bridge = "stre2e" + uuidlib.uuid4().hex[:6]
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        vif = Vif(port_id=str(uuidlib.uuid4()), mac="fa:16:3e:12:34:56", network_id="net", bridge_name=bridge)
        harness.run(harness.driver.attach_interface(uuid, vif))
        assert "fa:16:3e:12:34:56" in harness.live_xml(uuid)
        links = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True).stdout
        assert ("tap" + vif.port_id)[:14] in links
        harness.run(harness.driver.detach_interface(uuid, vif.port_id), timeout=60)
        assert "fa:16:3e:12:34:56" not in harness.live_xml(uuid)
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)


def test_resize_then_confirm(harness, vm):
    uuid = vm["spec"].uuid
    paths = harness.driver.paths(uuid)
    boots = harness.console(uuid).count(READY_MARKER)
    bigger = harness.spec(uuid=uuid, name=vm["spec"].name, hostname=vm["spec"].hostname,
                          vcpus=2, memory_mb=320, root_gb=2)
    harness.run(harness.driver.resize(bigger))
    info = harness.run(harness.driver.get_info(uuid))
    assert (info.vcpus, info.memory_mb, info.power_state) == (2, 320, PowerState.RUNNING)
    assert (paths.resize_dir / "disk").exists()
    size = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(paths.disk)],
                                     capture_output=True, text=True, check=True).stdout)["virtual-size"]
    assert size == 2 * GiB
    harness.wait_console(uuid, READY_MARKER, boots + 1)
    harness.run(harness.driver.confirm_resize(uuid))
    assert not paths.resize_dir.exists()
    vm["spec"] = bigger


def test_resize_then_revert(harness, vm):
    uuid = vm["spec"].uuid
    paths = harness.driver.paths(uuid)
    before = vm["spec"]
    bigger = harness.spec(uuid=uuid, name=before.name, hostname=before.hostname, vcpus=1, memory_mb=384, root_gb=3)
    with pytest.raises(DriverError, match="smaller"):  # never shrink a disk
        harness.run(harness.driver.resize(harness.spec(uuid=uuid, name=before.name, root_gb=1)))
    harness.run(harness.driver.resize(bigger))
    assert harness.run(harness.driver.get_info(uuid)).memory_mb == 384
    with pytest.raises(DriverError, match="waiting for confirm or revert"):
        harness.run(harness.driver.resize(bigger))
    harness.run(harness.driver.revert_resize(before))
    info = harness.run(harness.driver.get_info(uuid))
    assert (info.vcpus, info.memory_mb, info.power_state) == (2, 320, PowerState.RUNNING)
    size = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(paths.disk)],
                                     capture_output=True, text=True, check=True).stdout)["virtual-size"]
    assert size == 2 * GiB
    assert not paths.resize_dir.exists()
    harness.wait_console(uuid, READY_MARKER, harness.console(uuid).count(BOOT_MARKER))


def test_rescue_and_unrescue_keeping_a_hot_plugged_volume(harness, vm):
    spec = vm["spec"]
    paths = harness.driver.paths(spec.uuid)
    harness.images["rescue-image"] = harness.image
    boots = harness.console(spec.uuid).count(READY_MARKER)
    volume = harness.workdir / "rescue-volume.raw"
    with open(volume, "wb") as handle:
        handle.truncate(8 * 1024 * 1024)
    # hot-plugged, so not in the spec the agent passes: the redefined domains must keep it
    connection = VolumeConnection(volume_id=str(uuidlib.uuid4()), driver_volume_type="file",
                                  data={"path": str(volume)})
    assert harness.run(harness.driver.attach_volume(spec.uuid, connection)) == "/dev/vdb"
    harness.run(harness.driver.rescue(spec, ImageRef(id="rescue-image", disk_format="qcow2"), harness.fetch))
    xml = harness.live_xml(spec.uuid)
    assert f"<source file='{paths.rescue_disk}'" in xml and f"<source file='{paths.disk}'" in xml
    assert xml.index(str(paths.rescue_disk)) < xml.index(f"'{paths.disk}'")  # rescue disk first (vda)
    assert str(volume) in xml  # moved aside (vdb is the original root disk now)
    harness.wait_console(spec.uuid, READY_MARKER, boots + 1)
    with pytest.raises(DriverError, match="already in rescue"):
        harness.run(harness.driver.rescue(spec, ImageRef(id="rescue-image", disk_format="qcow2"), harness.fetch))
    harness.run(harness.driver.unrescue(spec))
    xml = harness.live_xml(spec.uuid)
    assert str(paths.rescue_disk) not in xml and not paths.rescue_disk.exists()
    assert str(volume) in xml
    harness.wait_console(spec.uuid, READY_MARKER, boots + 2)
    harness.run(harness.driver.detach_volume(spec.uuid, connection.volume_id), timeout=60)
    assert str(volume) not in harness.live_xml(spec.uuid)


def test_snapshot_then_boot_from_it(harness, vm):
    uuid = vm["spec"].uuid
    uploaded: dict[str, tuple[Path, str]] = {}

    async def upload(image_id: str, path: Path, disk_format: str) -> None:
        dest = harness.workdir / f"uploaded-{image_id}"
        shutil.copyfile(path, dest)
        uploaded[image_id] = (dest, disk_format)

    harness.run(harness.driver.snapshot(uuid, "snap-1", upload))
    assert harness.state(uuid) == libvirt.VIR_DOMAIN_RUNNING  # resumed after the copy
    path, fmt = uploaded["snap-1"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True,
                                     text=True, check=True).stdout)
    assert fmt == "qcow2" and info["format"] == "qcow2" and "backing-filename" not in info
    assert not list(harness.driver.paths(uuid).root.glob("snapshot-*"))

    harness.images["snap-1"] = path
    # The snapshot image also asks for other hardware: its root disk on virtio-scsi.
    spec = harness.spec(image=ImageRef(id="snap-1", disk_format="qcow2", properties={"hw_disk_bus": "scsi"}),
                        root_gb=2, user_data=b"#!/bin/sh\necho booted-from-snapshot\n")
    harness.spawn(spec)
    text = harness.wait_console(spec.uuid, READY_MARKER)
    assert f"instance-id: {spec.uuid}" in text and "booted-from-snapshot" in text
    assert "<target dev='sda' bus='scsi'/>" in harness.live_xml(spec.uuid)
    harness.run(harness.driver.destroy(spec.uuid))


def test_corrupt_image_fails_with_reason(harness):
    bad = harness.workdir / "corrupt.qcow2"
    bad.write_bytes(b"QFI\xfb" + os.urandom(4096))
    harness.images["corrupt"] = bad
    spec = harness.spec(image=ImageRef(id="corrupt", disk_format="qcow2"))
    started = time.monotonic()
    with pytest.raises(DriverError, match="not a valid qcow2"):
        harness.spawn(spec)
    assert time.monotonic() - started < 30
    with pytest.raises(InstanceNotFound):
        harness.run(harness.driver.get_info(spec.uuid))
    assert not harness.driver.paths(spec.uuid).root.exists()
    # Any bytes are a valid raw image, so garbage passes qemu-img: the missing boot sector is caught.
    garbage = harness.workdir / "garbage.raw"
    garbage.write_bytes(os.urandom(1024 * 1024).replace(b"\x55\xaa", b"\x00\x00"))
    harness.images["garbage"] = garbage
    spec = harness.spec(image=ImageRef(id="garbage", disk_format="raw"))
    with pytest.raises(DriverError, match="not bootable"):
        harness.spawn(spec)
    assert not harness.driver.paths(spec.uuid).root.exists()
    assert not harness.driver.image_cache.path_for("garbage").exists()


def test_destroy_removes_everything(harness, vm):
    uuid = vm["spec"].uuid
    paths = harness.driver.paths(uuid)
    assert paths.disk.exists() and paths.console_log.exists()
    qemu_log = Path("/var/log/libvirt/qemu") / f"{vm['spec'].name}.log"
    assert qemu_log.exists()
    harness.run(harness.driver.destroy(uuid))
    assert not qemu_log.exists()
    with pytest.raises(libvirt.libvirtError):
        harness.domain(uuid)
    assert qemu_processes_for(uuid) == []
    assert not paths.root.exists()
    harness.run(harness.driver.destroy(uuid))  # idempotent
    with pytest.raises(InstanceNotFound):
        harness.run(harness.driver.get_info(uuid))
    assert uuid not in [i.uuid for i in harness.run(harness.driver.list_instances())]


# ---- through the whole cloud: openstack CLI → compute API → scheduler → agent → this driver ----

def test_server_create_through_the_openstack_cli(tmp_path_factory):
    """`openstack server create --config-drive true --user-data` boots a real guest; delete removes it."""
    _require_machine()
    build(_cache_dir())
    from tests.cloudfixture import destroy_cloud, start_cloud

    state = tmp_path_factory.mktemp("cloud")
    cloud = start_cloud(state, extra_env={"STRATUS_COMPUTE__DRIVER": "libvirt"}, timeout=120)
    server_id = None
    virt = libvirt.open("qemu:///system")
    try:
        deadline = time.monotonic() + 120  # the image service registers the test image after start
        while not [i for i in cloud.osc("image list", cloud="demo") if i["Name"] == "stratus-test"]:
            assert time.monotonic() < deadline, "the stratus-test image was not registered:\n" + cloud.log_tail()
            time.sleep(2)
        hypervisor = cloud.osc("hypervisor list", cloud="admin")[0]
        assert hypervisor["Hypervisor Type"] in ("QEMU", "KVM")
        script = state / "script.sh"
        script.write_text("#!/bin/sh\necho api-user-data-$((6 * 7))\n")
        server = cloud.osc(f"server create --image stratus-test --flavor m1.tiny --config-drive true "
                           f"--user-data {script} --nic none --wait e2e-vm", cloud="demo")
        server_id = server["id"]
        assert server["status"] == "ACTIVE"
        assert virt.lookupByUUIDString(server_id).state()[0] == libvirt.VIR_DOMAIN_RUNNING
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            log = cloud.osc("console log show e2e-vm", cloud="demo", fmt_json=False)
            log = log if isinstance(log, str) else getattr(log, "stdout", str(log))
            if READY_MARKER in log:
                break
            assert time.monotonic() < deadline, f"no {READY_MARKER} on the console:\n{log[-2000:]}"
            time.sleep(2)
        assert f"instance-id: {server_id}" in log and "api-user-data-42" in log
        url = cloud.osc("console url show --novnc e2e-vm", cloud="demo")["url"]
        assert "vnc_lite.html" in url and "token" in url
        cloud.osc("server delete --wait e2e-vm", cloud="demo", fmt_json=False)
        with pytest.raises(libvirt.libvirtError):
            virt.lookupByUUIDString(server_id)
        assert qemu_processes_for(server_id) == []
        assert not (state / "instances" / server_id).exists()
    finally:
        if server_id:
            try:
                dom = virt.lookupByUUIDString(server_id)
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError:
                pass
        virt.close()
        destroy_cloud(cloud)
