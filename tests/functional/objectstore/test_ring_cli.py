"""`stratus ring ...` and `stratus serve objectstore-node` as an operator runs them."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest

from tests.cloudfixture import VENV_BIN, free_port, stop_process

pytestmark = pytest.mark.timeout(120)


def stratus(*args, check=True):
    proc = subprocess.run([str(VENV_BIN / "stratus"), *args], capture_output=True, text=True,
                          timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


def test_ring_create_add_rebalance_show_and_errors(tmp_path):
    ring = str(tmp_path / "object.ring.gz")
    stratus("ring", "create", ring, "--part-power", "6", "--replicas", "3")
    for zone, dev in ((1, "d0"), (1, "d1"), (2, "d2"), (3, "d3")):
        out = stratus("ring", "add", ring, "--zone", str(zone), "--ip", "127.0.0.1",
                      "--port", str(6200 + zone), "--device", dev, "--weight", "100").stdout
        assert "added device" in out
    assert "assigned or moved" in stratus("ring", "rebalance", ring).stdout
    doc = json.loads(stratus("ring", "show", ring).stdout)
    assert doc["replicas"] == 3 and doc["partitions"] == 64 and len(doc["devices"]) == 4
    assert sum(d["partitions"] for d in doc["devices"]) == 64 * 3
    assert doc["dispersion"]["parts_with_shared_zone"] == 0
    bad = stratus("ring", "add", ring, "--zone", "1", "--ip", "127.0.0.1", "--port", "6201",
                  "--device", "d0", check=False)
    assert bad.returncode == 2 and "already exists" in bad.stderr
    missing = stratus("ring", "show", str(tmp_path / "nope.ring.gz"), check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    again = stratus("ring", "create", ring, "--part-power", "6", "--replicas", "3", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_serve_objectstore_node(tmp_path):
    port = free_port()
    rings = tmp_path / "rings"
    rings.mkdir()
    for kind in ("object", "container", "account"):
        path = str(rings / f"{kind}.ring.gz")
        stratus("ring", "create", path, "--part-power", "4", "--replicas", "1")
        stratus("ring", "add", path, "--zone", "1", "--ip", "127.0.0.1", "--port", str(port),
                "--device", "sda")
        stratus("ring", "rebalance", path)
    (tmp_path / "node" / "sda").mkdir(parents=True)
    proc = subprocess.Popen([str(VENV_BIN / "stratus"), "serve", "objectstore-node", "--root",
                             str(tmp_path / "node"), "--ring-dir", str(rings), "--port", str(port),
                             "--devices", "sda"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2)
                break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 200
        recon = httpx.get(f"http://127.0.0.1:{port}/recon", timeout=5)
        assert recon.status_code == 200 and "sda" in recon.text
    finally:
        stop_process(proc)
