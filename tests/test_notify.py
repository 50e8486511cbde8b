"""sd_notify against a real unix datagram socket."""

from __future__ import annotations

import socket

from maskgate.hardware.notify import Notifier


def test_messages_reach_a_real_notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(2)
    notifier = Notifier(path)
    notifier.ready("first frame processed")
    notifier.watchdog()
    notifier.status("idle")
    notifier.stopping()
    received = [server.recv(4096).decode() for _ in range(4)]
    assert received == ["READY=1\nSTATUS=first frame processed", "WATCHDOG=1", "STATUS=idle", "STOPPING=1"]


def test_abstract_socket_addresses(tmp_path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(f"\0maskgate-test-{id(tmp_path)}")
    server.settimeout(2)
    Notifier(f"@maskgate-test-{id(tmp_path)}").watchdog()
    assert server.recv(64) == b"WATCHDOG=1"


def test_without_systemd_nothing_is_sent_and_nothing_fails(tmp_path):
    Notifier("").ready("x")
    Notifier(str(tmp_path / "gone.sock")).watchdog()  # no listener: ignored, never raised
