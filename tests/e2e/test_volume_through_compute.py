"""A volume between two real guests through the compute API: `openstack server add volume` hot-plugs
it into a running VM whose user-data writes a marker; after `server remove volume` a second VM
gets it and reads the marker back (libvirt/QEMU guests, NBD exports from the volume service)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_libvirt_driver import _cache_dir, _require_machine, build

pytestmark = pytest.mark.e2e

WAIT_FOR_DISK = ('for i in $(seq 1 400); do [ -b /dev/vdb ] && break; sleep 0.5; done; '
                 '[ -b /dev/vdb ] || { echo no-vdb; exit 1; }')


def console(cloud, name: str) -> str:
    out = cloud.osc(f"console log show {name}", cloud="demo", fmt_json=False)
    return out if isinstance(out, str) else getattr(out, "stdout", str(out))


def wait_console(cloud, name: str, text: str, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = console(cloud, name)
        if text in log:
            return log
        assert "no-vdb" not in log, f"{name} never saw /dev/vdb:\n{log[-1500:]}"
        assert time.monotonic() < deadline, f"no {text!r} on {name}'s console:\n{log[-1500:]}\n{cloud.log_tail()}"
        time.sleep(2)


def wait_volume(cloud, name: str, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while cloud.osc(f"volume show {name}", cloud="demo")["status"] != status:
        assert time.monotonic() < deadline, f"volume {name} never became {status}"
        time.sleep(0.5)


def test_marker_written_by_one_vm_is_read_by_another(tmp_path_factory):
    _require_machine()
    build(_cache_dir())
    from tests.cloudfixture import destroy_cloud, start_cloud

    state = tmp_path_factory.mktemp("cloud")
    cloud = start_cloud(state, services=["identity", "image", "compute", "volume", "objectstore"],
                        extra_env={"STRATUS_COMPUTE__DRIVER": "libvirt"}, timeout=120)
    try:
        deadline = time.monotonic() + 120
        while not [i for i in cloud.osc("image list", cloud="demo") if i["Name"] == "stratus-test"]:
            assert time.monotonic() < deadline, "the stratus-test image was not registered"
            time.sleep(2)
        writer = state / "writer.sh"
        writer.write_text("#!/bin/sh\n" + WAIT_FOR_DISK + "\n"
                          "echo STRATUS-VOLUME-MARKER-4242 | dd of=/dev/vdb bs=512 count=1 conv=sync 2>/dev/null\n"
                          "sync; echo marker-written\n")
        reader = state / "reader.sh"
        reader.write_text("#!/bin/sh\n" + WAIT_FOR_DISK + "\n"
                          "echo \"marker-read: $(dd if=/dev/vdb bs=512 count=1 2>/dev/null | head -c 26)\"\n")
        cloud.osc("volume create --size 1 shared", cloud="demo")
        wait_volume(cloud, "shared", "available")
        for name, script in (("vm-writer", writer), ("vm-reader", reader)):
            server = cloud.osc(f"server create --image stratus-test --flavor m1.tiny --config-drive true "
                               f"--user-data {script} --nic none --wait {name}", cloud="demo")
            assert server["status"] == "ACTIVE"
        cloud.osc("server add volume vm-writer shared", cloud="demo", fmt_json=False)
        wait_volume(cloud, "shared", "in-use")
        wait_console(cloud, "vm-writer", "marker-written")
        cloud.osc("server remove volume vm-writer shared", cloud="demo", fmt_json=False)
        wait_volume(cloud, "shared", "available")
        cloud.osc("server add volume vm-reader shared", cloud="demo", fmt_json=False)
        log = wait_console(cloud, "vm-reader", "marker-read:")
        assert "marker-read: STRATUS-VOLUME-MARKER-4242" in log, log[-1500:]
        # A volume made from a snapshot, and one restored from a backup (in the object store), hold it too.
        cloud.osc("server remove volume vm-reader shared", cloud="demo", fmt_json=False)
        wait_volume(cloud, "shared", "available")
        cloud.osc("volume snapshot create --volume shared snap", cloud="demo")
        deadline = time.monotonic() + 60
        while cloud.osc("volume snapshot show snap", cloud="demo")["status"] != "available":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        cloud.osc("volume create --snapshot snap --size 1 from-snap", cloud="demo")
        wait_volume(cloud, "from-snap", "available")
        backup = cloud.osc("volume backup create --name bk shared", cloud="demo")
        deadline = time.monotonic() + 120
        while cloud.osc(f"volume backup show {backup['id']}", cloud="demo")["status"] != "available":
            assert time.monotonic() < deadline, "the backup did not finish"
            time.sleep(1)
        cloud.osc("volume create --size 1 restored", cloud="demo")
        wait_volume(cloud, "restored", "available")
        cloud.osc(f"volume backup restore --force {backup['id']} restored", cloud="demo", fmt_json=False)
        wait_volume(cloud, "restored", "available", timeout=120)
        for vm, vol in (("vm-snap", "from-snap"), ("vm-restored", "restored")):
            cloud.osc(f"server create --image stratus-test --flavor m1.tiny --config-drive true "
                      f"--user-data {reader} --nic none --wait {vm}", cloud="demo")
            cloud.osc(f"server add volume {vm} {vol}", cloud="demo", fmt_json=False)
            log = wait_console(cloud, vm, "marker-read:")
            assert "marker-read: STRATUS-VOLUME-MARKER-4242" in log, (vm, log[-1500:])
        for name in ("vm-writer", "vm-reader", "vm-snap", "vm-restored"):
            cloud.osc(f"server delete --wait {name}", cloud="demo", fmt_json=False)
        # Deleting the server detached the volume and kept it.
        wait_volume(cloud, "shared", "available")
        for vol in ("from-snap", "restored"):
            wait_volume(cloud, vol, "available")
            cloud.osc(f"volume delete {vol}", cloud="demo", fmt_json=False)
    finally:
        destroy_cloud(cloud)
