"""Whether libvirtd is running is judged by a connection to its socket, not by the socket file."""

from __future__ import annotations

import socket

from stratus.compute.drivers.libvirt.connection import libvirtd_answers


def test_a_listening_socket_answers(tmp_path):
    path = tmp_path / "libvirt-sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        server.listen(1)
        assert libvirtd_answers(path)
    finally:
        server.close()


def test_a_socket_left_by_a_killed_daemon_does_not(tmp_path):
    path = tmp_path / "libvirt-sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.close()  # the file stays, as after `kill libvirtd`
    assert path.is_socket()
    assert not libvirtd_answers(path)


def test_no_socket_at_all_does_not(tmp_path):
    assert not libvirtd_answers(tmp_path / "missing")
