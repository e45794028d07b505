"""`stratus up` runs the storage nodes as its children: they stop with it, and a restart on the
same state directory finds the same rings and the data."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.cloudfixture import destroy_cloud, start_cloud

from .proxyfixture import Account, token_and_project

pytestmark = pytest.mark.timeout(180)


def node_pids(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return [p for p in out if b"stratus.objectstore.storage" in Path(f"/proc/{p}/cmdline").read_bytes()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its (gone) parent counts as stopped
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_nodes_stop_with_stratus_and_data_survives_restart():
    state = Path(tempfile.mkdtemp(prefix="stratus-osup-"))
    try:
        cloud = start_cloud(state, services=["identity", "objectstore"])
        try:
            pids = node_pids(cloud.proc.pid)
            assert len(pids) == 3
            rings = sorted(p.name for p in (state / "objectstore" / "rings").iterdir())
            assert rings == ["account.ring.gz", "container.ring.gz", "object.ring.gz"]
            token, project = token_and_project(cloud, "demo")
            acct = Account(cloud, token, project)
            assert acct.request("PUT", "/keep").status_code == 201
            assert acct.request("PUT", "/keep/o", content=b"persisted").status_code == 201
            acct.close()
            ring_mtime = (state / "objectstore" / "rings" / "object.ring.gz").stat().st_mtime
        finally:
            destroy_cloud(cloud)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in pids)
        cloud = start_cloud(state, services=["identity", "objectstore"])
        try:
            assert (state / "objectstore" / "rings" / "object.ring.gz").stat().st_mtime == ring_mtime
            token, project = token_and_project(cloud, "demo")
            acct = Account(cloud, token, project)
            assert acct.request("GET", "/keep/o").content == b"persisted"
            acct.close()
            # even a SIGKILLed stratus takes its nodes with it (no orphans holding ports)
            pids = node_pids(cloud.proc.pid)
            os.kill(cloud.proc.pid, 9)
            cloud.proc.wait(10)
            deadline = time.monotonic() + 10
            while any(alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert pids and not any(alive(p) for p in pids)
        finally:
            destroy_cloud(cloud)
    finally:
        shutil.rmtree(state, ignore_errors=True)
