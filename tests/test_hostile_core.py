"""The door daemon under hard faults and hostile local/remote parties: the real `maskgate run` in a
process of its own (mock GPIO, a replayed scene, the tiny real classifier), its real control socket,
a real mosquitto broker on loopback, a real tmpfs that fills up, a real descriptor limit, SIGKILL.
Every attack is bounded in count and time; no assertion is about how fast anything was."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from maskgate.errors import MaskgateError
from maskgate.records.events import EventLog
from maskgate.services.control import send
from test_mqtt import NODE, PASSWORD, PREFIX, USER, Watcher, broker, mosquitto, retained, tls_files  # noqa: F401

ROOT = os.geteuid() == 0


class Daemon:
    """`maskgate run` on loopback; its log lines are collected as they come."""

    def __init__(self, tmp_path: Path, bundle: Path, *, state_dir: Path | None = None, mqtt: dict | None = None):
        self.socket = tmp_path / "control.sock"
        self.state_dir = state_dir or tmp_path / "state"
        frames = tmp_path / "frames"
        frames.mkdir()
        cv2.imwrite(str(frames / "nobody.png"), np.full((480, 640, 3), 90, np.uint8))
        config = {
            "camera": {"backend": "replay", "replay_path": str(frames), "replay_fps": 5, "replay_loop": True},
            "classifier": {"model_dir": str(bundle), "threshold": 0.5},
            "gpio": {"pin_factory": "mock"},
            "control": {"socket_path": str(self.socket), "group": None},
            "events": {"state_dir": str(self.state_dir)},
            "web": {"port": 0},
            **({"mqtt": {"enabled": True, "node_id": NODE, **mqtt}} if mqtt else {}),
        }
        self.config = tmp_path / "maskgate.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "maskgate", "run", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._collect, daemon=True).start()
        self.url = self.wait_for_line("web: kiosk page at ").split("kiosk page at ")[1].rstrip("/")
        self.until(lambda: self.door("status")["ok"], "the control socket")
        self.until(self.status, "the web server")

    def _collect(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 60.0) -> str:
        return self.until(lambda: next((line for line in self.lines if text in line), None), repr(text), timeout)

    def until(self, predicate, what: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited: {self.lines[-20:]}"
            try:
                if value := predicate():
                    return value
            except MaskgateError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {self.lines[-20:]}")

    def door(self, command: str, **request) -> dict:
        return send(self.socket, {"command": command, **request})

    def door_status_when(self, predicate, what: str) -> dict:
        def matching():
            reply = self.door("status")
            return reply if predicate(reply) else None

        return self.until(matching, what)

    def status(self, timeout: float = 5.0) -> dict:
        with urllib.request.urlopen(f"{self.url}/api/v1/status", timeout=timeout) as response:
            return json.load(response)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        finally:
            self.proc.kill()


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop(signal.SIGKILL)


def overrides(reply: dict) -> dict[str, str]:
    return {o["layer"]: o["who"] for o in reply["overrides"]}


def test_an_mqtt_command_never_ends_an_operators_lock(daemons, broker, tls_files, tiny_bundles, tmp_path):
    server = broker(users={USER: PASSWORD, "hass": "hass-pw"}, tls=tls_files)
    daemon = Daemon(tmp_path, tiny_bundles["int8"], mqtt={
        "port": server.port, "username": USER, "password": PASSWORD, "remote_unlock": True,
        "remote_unlock_seconds": 3600, "tls": {"ca_file": str(tls_files["ca"])}})
    daemons.append(daemon)
    watcher = Watcher(server.port, tls=tls_files, auth=("hass", "hass-pw"))
    try:
        watcher.wait(lambda m: any(t == f"{PREFIX}/availability" and p == b"online" for t, p, _ in m), what="online")
        locked = daemon.door("lock", seconds=3600, reason="lockdown")
        assert locked["door"]["layer"] == "manual_lock" and locked["logged"] is True

        watcher.publish(f"{PREFIX}/door/set", "UNLOCK")
        reply = daemon.door_status_when(lambda r: "remote" in overrides(r), "the UNLOCK")
        assert reply["door"]["door"] == "locked" and reply["door"]["layer"] == "manual_lock"
        assert reply["door"]["who"].startswith("operator:")
        daemon.wait_for_line("UNLOCK outranked")

        watcher.publish(f"{PREFIX}/door/set", "LOCK")
        reply = daemon.door_status_when(lambda r: "remote" not in overrides(r), "the LOCK")
        assert reply["door"]["layer"] == "manual_lock" and "manual_lock" in overrides(reply)
    finally:
        watcher.close()
    assert daemon.stop() == 0
    rows = [(e.outcome, e.source) for e in EventLog(daemon.state_dir).list()]
    assert ("override", "mqtt") not in rows, "the remote unlock never moved the door"


def test_every_acknowledged_override_survives_sigkill(daemons, tiny_bundles, tmp_path):
    daemon = Daemon(tmp_path, tiny_bundles["int8"])
    daemons.append(daemon)
    acknowledged: list[str] = []
    stop = threading.Event()

    def operator(name: str) -> None:
        for i in range(10_000):
            if stop.is_set():
                return
            reason = f"{name}-{i}"
            try:
                reply = daemon.door("unlock" if i % 2 else "lock", seconds=600, reason=reason)
            except MaskgateError:
                return  # the daemon is gone
            if reply["logged"]:  # what `maskgate door` reports as done (exit 0)
                acknowledged.append(reason)

    clients = [threading.Thread(target=operator, args=(f"op{k}",)) for k in range(4)]
    for client in clients:
        client.start()
    try:
        daemon.until(lambda: len(acknowledged) >= 200, "200 acknowledged overrides", timeout=120)
        daemon.stop(signal.SIGKILL)
    finally:
        stop.set()
        for client in clients:
            client.join(30)
    logged = {e.reason.split(": ", 1)[1] for e in EventLog(daemon.state_dir).list() if e.outcome == "override"}
    missing = [reason for reason in acknowledged if reason not in logged]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged overrides are not in the log"


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs for the state directory (needs root)."""
    if not ROOT:
        pytest.skip("mounting a small tmpfs needs root")
    path = tmp_path / "state"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_disk_is_a_health_state_and_nothing_held_is_lost(daemons, broker, small_disk, tiny_bundles, tmp_path):
    server = broker()
    daemon = Daemon(tmp_path, tiny_bundles["int8"], state_dir=small_disk, mqtt={"port": server.port})
    daemons.append(daemon)
    watcher = Watcher(server.port, topics=(f"{PREFIX}/state",))
    try:
        assert daemon.status()["events_ok"] is True
        filler = fill(small_disk)
        during: list[str] = []
        for i in range(400):  # until the log's write-ahead file needs space it cannot get
            reply = daemon.door("lock" if i % 2 else "unlock", seconds=600, reason=f"full-{i}")
            during.append(f"full-{i}")
            if reply["logged"] is False:
                break
        assert reply["logged"] is False, "the disk never filled"
        assert daemon.status()["events_ok"] is False
        watcher.wait(lambda m: any(json.loads(p).get("events_ok") is False for _, p, _ in m), what="events_ok false")
        for i in range(20):  # more events while it fails: no more log lines, no tracebacks
            daemon.door("lock" if i % 2 else "unlock", seconds=600, reason=f"more-{i}")
            during.append(f"more-{i}")
        failing = [line for line in daemon.lines if "event log:" in line]
        assert len(failing) == 1 and "Traceback" not in "\n".join(daemon.lines), daemon.lines[-10:]

        filler.unlink()
        daemon.until(lambda: daemon.status()["events_ok"], "events_ok true once there is space again")
        watcher.wait(lambda m: json.loads(m[-1][1]).get("events_ok") is True, what="events_ok true on MQTT")
    finally:
        watcher.close()
    assert daemon.stop() == 0
    logged = {e.reason.split(": ", 1)[1] for e in EventLog(small_disk).list() if e.outcome == "override"}
    assert set(during) <= logged, "the changes made while the disk was full were written once it had space"


def test_the_control_socket_answers_again_after_the_descriptors_run_out(daemons, tiny_bundles, tmp_path):
    daemon = Daemon(tmp_path, tiny_bundles["int8"])
    daemons.append(daemon)
    limits = resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, (3, limits[1]))  # every new descriptor: EMFILE
    try:
        with pytest.raises(MaskgateError):
            send(daemon.socket, {"command": "status"}, timeout=2.0)
        daemon.wait_for_line("control socket: out of file descriptors")
        for _ in range(3):
            with pytest.raises(MaskgateError):
                send(daemon.socket, {"command": "status"}, timeout=1.0)
    finally:
        resource.prlimit(daemon.proc.pid, resource.RLIMIT_NOFILE, limits)
    assert daemon.until(lambda: daemon.door("status")["ok"], "the control socket again")
    assert daemon.status()["door"] == "locked"
    assert sum("control socket: out of file descriptors" in line for line in daemon.lines) == 1
    assert daemon.stop() == 0


def test_a_clean_stop_leaves_the_retained_topics_true(daemons, broker, tiny_bundles, tmp_path):
    server = broker()
    daemon = Daemon(tmp_path, tiny_bundles["int8"], mqtt={"port": server.port})
    daemons.append(daemon)
    watcher = Watcher(server.port, topics=(f"{PREFIX}/door",))
    try:
        daemon.door("unlock", reason="delivery")
        watcher.wait(lambda m: any(json.loads(p)["door"] == "unlocked" for _, p, _ in m), what="unlocked")
    finally:
        watcher.close()
    assert daemon.stop() == 0
    kept = retained(server.port)
    assert json.loads(kept[f"{PREFIX}/door"])["door"] == "locked"
    assert kept[f"{PREFIX}/availability"] == b"offline"


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_replay_that_opens_but_cannot_be_read_backs_off_instead_of_spinning(core, tmp_path):
    from gpiozero.pins.mock import MockFactory

    from maskgate.access.controller import DoorController
    from maskgate.access.decider import Decider
    from maskgate.access.verdict import decision_rule
    from maskgate.bus import EventBus
    from maskgate.config import Config
    from maskgate.hardware.door import build_door
    from maskgate.loop import FrameLoop, Heartbeat
    from maskgate.sources import make_source

    broken = tmp_path / "door.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))  # a video by its name, not by its bytes
    config = Config.model_validate({"camera": {"backend": "replay", "replay_path": str(broken), "replay_loop": True,
                                               "reconnect_max_seconds": 30}})
    clock, stop, bus = FakeClock(), threading.Event(), EventBus()
    opens, pauses = [], []

    def open_source():
        opens.append(clock.now)
        return make_source(config.camera, paced=False)

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        clock.now += seconds
        if clock.now > 3600:
            stop.set()

    door = build_door(config.gpio, pin_factory=MockFactory())
    loop = FrameLoop(open_source=open_source, core=core, decider=Decider(config.decision, rule=decision_rule(config, core.classifier)), bus=bus, stop=stop,
                     controller=DoorController(door, bus=bus, clock=clock), heartbeat=Heartbeat(clock),
                     reconnect_max_seconds=config.camera.reconnect_max_seconds, pause=pause)
    runner = threading.Thread(target=loop.run)
    runner.start()
    runner.join(120)
    assert not runner.is_alive(), f"the loop spun: {len(opens)} opens by {clock.now:.0f} fake seconds"
    bus.close()
    door.close()
    assert len(opens) <= 3600 / (0.8 * 30) + 10, "one open per backoff, not a spin"
    assert len([t for t in opens if t < 60]) <= 7, "1, 2, 4, 8, 16, 30 … s apart from the start"
    assert max(pauses) <= 30 and len({round(p, 3) for p in pauses if p > 20}) > 1, "capped, with jitter"
