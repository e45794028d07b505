"""Fixtures shared by every tier."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.cloudfixture import destroy_cloud, start_cloud


@pytest.fixture(scope="session")
def cloud():
    """The whole all-in-one cloud (every service present in this build) on SQLite."""
    state = Path(tempfile.mkdtemp(prefix="stratus-test-"))
    c = start_cloud(state)
    try:
        yield c
    finally:
        destroy_cloud(c)
        shutil.rmtree(state, ignore_errors=True)


# Host daemons that the libvirt driver starts when they are missing (scripts/start-libvirtd.sh).
_HOST_DAEMONS = ("libvirtd", "virtlogd")


def _daemon_pids() -> set[int]:
    pids = set()
    for name in _HOST_DAEMONS:
        out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
        pids |= {int(p) for p in out.split()}
    return pids


@pytest.fixture(scope="session", autouse=True)
def stop_host_daemons_this_run_started():
    """libvirtd and virtlogd started during the run (by the driver under test) are stopped at
    its end, by PID; ones already running before it are left alone."""
    before = _daemon_pids()
    yield
    started = _daemon_pids() - before
    for pid in started:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    while started and time.monotonic() < deadline:
        started = {pid for pid in started if _alive(pid)}
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it (the daemons detach from us)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
