"""Manual override through the real Unix socket: `maskgate door …` run as other Unix users, with and
without the operators' group, the user recorded in the event log; bad requests answered, not fatal."""

from __future__ import annotations

import grp
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from maskgate.access.controller import DoorController, Release
from maskgate.bus import EventBus
from maskgate.config import GpioConfig, PinConfig
from maskgate.errors import MaskgateError
from maskgate.hardware.door import build_door
from maskgate.records.events import EventLog
from maskgate.records.recorder import Recorder
from maskgate.services.control import ControlServer, send

RELAY = 17
NOBODY = 65534
OPERATORS = "nogroup"  # stands in for maskgate-operators: a group that exists on the test machine

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="running clients as other users needs root")


@pytest.fixture
def socket_dir():
    # Not under pytest's tmp_path (mode 0700): other users must be able to reach the socket.
    path = Path(tempfile.mkdtemp(prefix="maskgate-control-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


class Daemon:
    def __init__(self, path: Path, state_dir: Path):
        self.factory, self.bus = MockFactory(), EventBus()
        self.door = build_door(GpioConfig(relay=PinConfig(pin=RELAY)), pin_factory=self.factory)
        self.controller = DoorController(self.door, bus=self.bus)
        self.log = EventLog(state_dir)
        Recorder(self.log, self.bus)
        self.server = ControlServer(path, controller=self.controller, group=OPERATORS,
                                    inputs=lambda: {"fire_alarm": False, "door_contact": None})
        self.server.start()

    def relay(self) -> bool:
        return self.factory.pin(RELAY).state == 1

    def rows(self):
        self.bus.drain()
        return [(e.outcome, e.source, e.reason) for e in self.log.list()]

    def close(self):
        self.server.stop()
        self.bus.close()
        self.door.close()
        self.log.close()


@pytest.fixture
def daemon(socket_dir, tmp_path):
    daemon = Daemon(socket_dir / "control.sock", tmp_path / "state")
    yield daemon
    daemon.close()


# The CLI's own main(), run by a process that becomes the user nobody once Python and maskgate are loaded
# (the interpreter lives under /root, and a checkout may sit in a 0700 directory: nobody may read neither).
AS_NOBODY = """
import os, sys
import maskgate.config, maskgate.services.control
from maskgate.cli import build_parser, main
maskgate.config.Config()
build_parser()  # what the parser imports lazily, loaded while the checkout can still be read
os.setgroups({groups})
os.setgid({gid})
os.setuid({uid})
sys.exit(main(sys.argv[1:]))
"""


def door(path: Path, *args: str, groups: list[str] | None = None):
    """`maskgate door …` as the user nobody, with ``groups`` as its only groups (primary gid: unnamed)."""
    gids = [grp.getgrnam(g).gr_gid for g in groups or []]
    script = AS_NOBODY.format(groups=gids, gid=12345, uid=NOBODY)
    return subprocess.run([sys.executable, "-c", script, "door", *args, "--socket", str(path)], cwd="/",
                          capture_output=True, text=True, timeout=60)


def test_the_socket_is_only_for_the_operators_group(daemon):
    info = os.stat(daemon.server.path)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    assert info.st_gid == grp.getgrnam(OPERATORS).gr_gid
    assert not list(daemon.server.path.parent.glob(".control.sock.*")), "no staging file left behind"


def test_an_operator_unlocks_and_hands_back_and_is_recorded_by_user_name(daemon):
    path = daemon.server.path
    done = door(path, "unlock", "--for", "10m", "--reason", "delivery\nat the back", groups=[OPERATORS])
    assert done.returncode == 0, done.stderr
    assert daemon.relay()
    assert done.stdout.splitlines()[0] == ("door unlocked (override_unlocked) by operator:nobody: "
                                           "delivery at the back, 600 s left")
    status = door(path, "status", groups=[OPERATORS])
    assert re.search(r"manual_unlock: unlocked by operator:nobody \(\d+ s left\): delivery at the back", status.stdout)
    assert "inputs: fire_alarm inactive, door_contact unknown" in status.stdout
    assert door(path, "auto", "--reason", "done", groups=[OPERATORS]).returncode == 0
    assert not daemon.relay()
    assert daemon.rows() == [("override", "operator:nobody", "unlocked: delivery at the back"),
                             ("override", "operator:nobody", "locked: done")]


def test_without_the_group_the_request_is_refused_in_one_line(daemon):
    done = door(daemon.server.path, "unlock", groups=[])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "permission denied (only members of the maskgate-operators group may control the door)" in done.stderr
    assert not daemon.relay() and daemon.rows() == []


def test_a_fire_alarm_outranks_an_operators_lock_and_the_cli_says_so(daemon):
    daemon.controller.request(Release(active=True))
    done = door(daemon.server.path, "lock", "--reason", "lockdown", groups=[OPERATORS])
    assert done.returncode == 0 and daemon.relay()
    assert done.stderr == "note: fire_alarm outranks this override; it applies once that ends\n"
    daemon.controller.request(Release(active=False))
    assert not daemon.relay() and daemon.controller.state.who == "operator:nobody"


def test_an_operator_silences_a_door_alarm_and_is_recorded(daemon):
    path = daemon.server.path
    done = door(path, "silence", groups=[OPERATORS])
    assert done.returncode == 2 and done.stderr == "maskgate: the daemon refused: no door alarm is sounding\n"
    daemon.controller.alarm("held_open")
    done = door(path, "silence", "--reason", "wedged for a delivery", groups=[OPERATORS])
    assert done.returncode == 0, done.stderr
    assert daemon.rows() == [("alarm_silenced", "operator:nobody", "held open alarm silenced: wedged for a delivery")]


def test_status_json_for_scripts(daemon):
    reply = send(daemon.server.path, {"command": "lock", "seconds": 30, "reason": "cleaning"})
    assert reply["door"]["layer"] == "manual_lock" and reply["door"]["who"] == "operator:root"
    done = door(daemon.server.path, "status", "--json", groups=[OPERATORS])
    reply = json.loads(done.stdout)
    assert reply["ok"] and reply["door"]["door"] == "locked" and reply["door"]["display"] == "override_locked"
    assert [(o["layer"], o["who"], o["reason"]) for o in reply["overrides"]] == [("manual_lock", "operator:root",
                                                                                   "cleaning")]


def raw(path: Path, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return json.loads(sock.makefile("rb").readline())


@pytest.mark.parametrize("data, error", [
    (b"not json\n", "request is not one JSON line"),
    (b'{"command": "open"}\n', "command must be one of unlock, lock, auto, silence, status"),
    (b'["unlock"]\n', "command must be one of"),
    (b'{"command": "unlock", "seconds": -5}\n', "seconds must be a number from 1 to 86400"),
    (b'{"command": "unlock", "seconds": true}\n', "seconds must be a number from 1"),
    (b'{"command": "lock", "seconds": "10"}\n', "seconds must be a number from 1"),
    (b'{"command": "unlock", "seconds": 1e308}\n', "seconds must be a number from 1 to 86400"),
    (b'{"command": "unlock", "seconds": 5e-324}\n', "seconds must be a number from 1"),
    (b'{"command": "lock", "seconds": 0.5}\n', "seconds must be a number from 1"),
    (b'{"command": "unlock", "seconds": NaN}\n', "seconds must be a number from 1"),
    (b'{"command": "unlock", "seconds": Infinity}\n', "seconds must be a number from 1"),
    (b'{"command": "auto", "seconds": 10}\n', "auto takes no seconds"),
    (b'{"command": "unlock", "reason": 7}\n', "reason must be text"),
    (b'{"command": "unlock", "reason": "' + b"x" * 201 + b'"}\n', "at most 200 characters"),
    (b"x" * 5000 + b"\n", "request longer than 4096 bytes"),
    (b"\xff\xfe\n", "request is not one JSON line"),
])
def test_bad_requests_are_answered_and_change_nothing(daemon, data, error):
    reply = raw(daemon.server.path, data)
    assert reply["ok"] is False and error in reply["error"]
    assert not daemon.relay() and daemon.server.healthy()
    assert raw(daemon.server.path, b'{"command": "status"}\n')["ok"]


def test_a_stale_socket_is_replaced_and_a_live_one_refused(socket_dir, tmp_path):
    path = socket_dir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a daemon killed with -9 leaves its socket file behind
    first = Daemon(path, tmp_path / "a")
    try:
        assert send(path, {"command": "status"})["ok"]
        with pytest.raises(MaskgateError, match="another maskgate daemon is listening there"):
            Daemon(path, tmp_path / "b")
        assert send(path, {"command": "status"})["ok"], "the running daemon keeps its socket"
    finally:
        first.close()
    assert not path.exists(), "removed at stop"


def test_cli_errors_are_one_line_without_a_daemon(socket_dir, tmp_path):
    config = tmp_path / "maskgate.yaml"
    config.write_text(f"control:\n  socket_path: {socket_dir / 'control.sock'}\n")
    for args, message in [(["status", "--config", str(config)], "no control socket (is the daemon running?"),
                          (["open"], "argument action: invalid choice: 'open'"),
                          (["unlock", "--for", "soon"], "not a duration: 'soon'"),
                          (["auto", "--for", "5m"], "--for goes with unlock or lock, not auto")]:
        done = subprocess.run([sys.executable, "-m", "maskgate", "door", *args], capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
