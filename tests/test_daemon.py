"""The daemon end to end: the App as `maskgate run` builds it — real detector, a real (tiny) TFLite
classifier, mock GPIO pins, replayed real-face frames, the bus, the controller, the event log."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import yaml
from gpiozero.pins.mock import MockFactory

from maskgate.access.controller import Release
from maskgate.app import App
from maskgate.config import Config
from maskgate.hardware.door import Door
from maskgate.hardware.notify import Notifier
from maskgate.messages import DoorChanged, FrameProcessed
from maskgate.records.events import EventLog
from maskgate.sources import EndOfStream, Frame, ReplaySource, SourceError
from maskgate.vision.core import FrameResult
from maskgate.vision.classifier import MaskClassifier
from web_rig import wait_for

RELAY, GREEN, RED, BUZZER = 17, 27, 22, 24


def make_config(tmp_path, **sections) -> Config:
    # The near faces are ~210 px tall, the far one ~115 px: min_face_px 150 tells them apart.
    base = {
        "camera": {"backend": "scenes"},
        "classifier": {"threshold": 0.5},
        "decision": {"frames_to_decide": 3, "unlock_seconds": 1.0, "denied_seconds": 0.5, "cooldown_seconds": 0.5,
                     "min_face_px": 150},
        "gpio": {"buzzer": {"pin": BUZZER}},
        "events": {"state_dir": str(tmp_path / "state")},
        "web": {"port": 0},  # the kiosk server runs as by default, on a free port
    }
    return Config.model_validate({**base, **sections})


class InTurn:
    """The replay's frames, each once every subscriber has handled the one before. A subscriber that keeps only the
    newest frame when it falls behind (collect, shadow) sees every frame in turn, however busy the machine is.
    Set ``bus`` to the App's bus before it runs."""

    def __init__(self, frames):
        self.frames, self.bus = frames, None

    def __iter__(self):
        for frame in self.frames:
            assert self.bus.drain(timeout=60), "the subscribers handled the previous frame"
            yield frame


def replay(frames):
    def open_source():
        source = ReplaySource(lambda: iter(frames), fps=10, paced=False)
        source.open()
        return source

    return open_source


class Rig:
    """An App on mock pins that records every frame's decision and every door change, in order."""

    def __init__(self, core, tmp_path, open_source, **config):
        self.factory = MockFactory()
        self.app = App(make_config(tmp_path, **config), core=core, pin_factory=self.factory, open_source=open_source)
        self.timeline: list = []
        self.app.bus.subscribe((FrameProcessed, DoorChanged), self.timeline.append, name="test", maxlen=100_000)

    def run(self) -> int:
        return self.app.run()

    def relay_levels(self) -> list[int]:
        return [state for _, state in self.factory.pin(RELAY).states]

    def decisions(self) -> list[str]:
        return [m.decision.state for m in self.timeline if isinstance(m, FrameProcessed)]

    def door_changes(self) -> list[tuple[bool, str]]:
        return [(m.state.unlocked, m.state.reason) for m in self.timeline if isinstance(m, DoorChanged)]

    def outcomes(self) -> list[str]:
        return [e.outcome for e in EventLog(self.app.events.path.parent).list()]


def test_masked_person_unlocks_after_n_frames_and_relocks_after_unlock_seconds(core, scenes, tmp_path):
    rig = Rig(core, tmp_path, replay([scenes["masked"]] * 20))
    assert rig.run() == 0
    decisions = rig.decisions()
    first = decisions.index("granted")
    assert set(decisions[:first]) == {"checking"} and first <= 5, decisions
    assert decisions[first:first + 10] == ["granted"] * 10 and decisions[first + 10] == "cooldown"  # 1.0 s at 10 fps
    assert rig.door_changes()[:2] == [(True, "granted"), (False, "entry time over")]
    assert rig.relay_levels()[-1] == 0 and 1 in rig.relay_levels()
    outcomes = rig.outcomes()
    assert outcomes[:4] == ["started", "camera_ok", "door", "granted"] and outcomes[-1] == "stopped"


@pytest.mark.parametrize("scene", ["bare", "far", "empty"])
def test_no_mask_far_face_or_nobody_never_unlocks(core, scenes, tmp_path, scene):
    rig = Rig(core, tmp_path, replay([scenes[scene]] * 15))
    assert rig.run() == 0
    assert 1 not in rig.relay_levels()
    assert rig.door_changes() == [] or all(not unlocked for unlocked, _ in rig.door_changes())
    if scene == "bare":
        assert "denied" in rig.outcomes()
        assert 1 in [state for _, state in rig.factory.pin(RED).states]
        (denied, *_) = [e for e in EventLog(rig.app.events.path.parent).list() if e.outcome == "denied"]
        assert (denied.code, denied.reason, denied.face, denied.track, denied.face_count) == ("no_mask", "no mask", 0, 1, 1)
    else:
        assert set(rig.decisions()) == {"idle"}
        reasons = {m.decision.reason for m in rig.timeline if isinstance(m, FrameProcessed)}
        assert reasons == {"too_small" if scene == "far" else "no_face"}


class FlakyCamera:
    """Fails after ``good`` frames; the first reopen fails too, then it works again."""

    def __init__(self, frames, good):
        self.frames, self.good, self.opens, self.reads = frames, good, 0, 0

    def __call__(self):
        self.opens += 1
        if self.opens == 2:
            raise SourceError("camera 0: cannot open")
        return self

    def read(self):
        self.reads += 1
        if self.reads == self.good + 1:
            raise SourceError("camera 0: no frame")
        if self.reads > len(self.frames):
            raise EndOfStream
        return Frame(self.frames[self.reads - 1], self.reads * 0.1)

    def close(self):
        pass


def test_camera_failure_relocks_and_reconnects(core, scenes, tmp_path):
    camera = FlakyCamera([scenes["masked"]] * 12, good=4)
    rig = Rig(core, tmp_path, camera)
    assert rig.run() == 0
    assert rig.door_changes()[0] == (True, "granted"), "granted before the failure"
    assert rig.door_changes()[1] == (False, "camera unavailable: camera 0: no frame")
    assert camera.opens == 3, "reconnected after a failed reopen"
    assert rig.outcomes().count("camera_lost") == 1 and "camera_ok" in rig.outcomes()
    assert rig.relay_levels()[-1] == 0


def test_an_exception_in_the_loop_locks_the_door_and_exits_non_zero(core, scenes, tmp_path):
    class BrokenAfterGrant:
        def __init__(self):
            self.calls = 0
            self.classifier = core.classifier

        def process(self, image, *, streaming=False):
            self.calls += 1
            if self.calls == 5:
                raise RuntimeError("model crashed")
            return core.process(image)

    factory = MockFactory()
    app = App(make_config(tmp_path), core=BrokenAfterGrant(), pin_factory=factory,
              open_source=replay([scenes["masked"]] * 10))
    assert app.run() == 1
    assert [s for _, s in factory.pin(RELAY).states][-2:] == [1, 0], "the relay was open when it broke"
    outcomes = [e.outcome for e in EventLog(tmp_path / "state").list()]
    assert outcomes[-3:] == ["door", "error", "stopped"]  # locked first, then recorded


def test_garbage_frames_are_survived_with_the_door_locked(core, scenes, tmp_path):
    rng = np.random.default_rng(3)
    garbage = [np.zeros((0, 0, 3), np.uint8), rng.random((480, 640, 3)), np.zeros((5, 5, 7), np.uint8),
               rng.integers(0, 255, (1, 1), dtype=np.uint8), rng.integers(0, 255, (480, 640, 4), dtype=np.uint8)]
    rig = Rig(core, tmp_path, replay(garbage + [scenes["bare"]] * 5))
    assert rig.run() == 0
    assert 1 not in rig.relay_levels()
    assert "camera_lost" in rig.outcomes()


class BlockingCamera:
    """Gives ``frames`` and then blocks in read() until released: a hung camera driver."""

    def __init__(self, frames):
        self.frames = list(frames)
        self.release = threading.Event()
        self.blocked = threading.Event()

    def __call__(self):
        return self

    def read(self):
        if self.frames:
            return Frame(self.frames.pop(0), time.monotonic())
        self.blocked.set()
        self.release.wait()
        raise EndOfStream

    def close(self):
        pass


class RecordingNotifier(Notifier):
    def __init__(self):
        super().__init__("")
        self.sent: list[tuple[float, str]] = []

    def send(self, *fields):
        self.sent.extend((time.monotonic(), f) for f in fields)


def test_a_stalled_frame_loop_cannot_stop_the_controller_and_starves_the_watchdog(core, scenes, tmp_path, monkeypatch):
    switched_by = []
    original_show = Door.show

    def show(self, display):
        import inspect

        switched_by.append(inspect.stack()[1].frame.f_globals["__name__"])
        original_show(self, display)

    monkeypatch.setattr(Door, "show", show)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # ping every 0.1 s
    camera = BlockingCamera([scenes["bare"]] * 3)
    notifier = RecordingNotifier()
    factory = MockFactory()
    app = App(make_config(tmp_path, daemon={"stuck_seconds": 1.0}), core=core, pin_factory=factory,
              open_source=camera, notifier=notifier)
    runner = threading.Thread(target=app.run)
    runner.start()
    try:
        assert camera.blocked.wait(30)
        stalled_at = time.monotonic()
        app.controller.request(Release(active=True))
        wait_for(lambda: factory.pin(RELAY).state == 1, 30, "fire alarm obeyed with the loop stalled")
        assert not camera.release.is_set(), "the loop was still stalled when the relay switched"
        wait_for(lambda: app.problems(), 30, "the supervisor noticed the silent loop")
        assert app.problems()[0].startswith("frame loop silent")
        pings = [t for t, f in notifier.sent if f == "WATCHDOG=1"]
        assert any(t > stalled_at for t in pings), "fed while the loop was only briefly stalled"
        fed = len(notifier.sent)
        time.sleep(1.0)  # ten watchdog intervals
        assert "WATCHDOG=1" not in [f for _, f in notifier.sent[fed:]], "no longer fed once the loop is stuck"
    finally:
        app.stop()
        camera.release.set()
        runner.join(30)
    assert factory.pin(RELAY).state == 0
    assert set(switched_by) == {"maskgate.access.controller", "maskgate.hardware.door"}, switched_by


class SteadyCore:
    """2 ms a frame, no faces: the loop's rate is set by this, not by the machine's load."""

    classifier = None

    def process(self, image, *, streaming=False):
        time.sleep(0.002)
        return FrameResult(640, 480, (), 2.0, 0.0)


def test_a_stuck_listener_never_holds_up_the_frame_loop(tmp_path, scenes):
    """A listener that never returns only loses messages; the loop runs on. (Rates: ``maskgate.bench.loop``.)"""
    core_stub = SteadyCore()
    core_stub.classifier = MaskClassifier(None)
    app = App(make_config(tmp_path), core=core_stub, pin_factory=MockFactory(),
              open_source=replay([scenes["empty"]] * 100_000))
    frames, release, stuck_in = [], threading.Event(), []
    app.bus.subscribe(FrameProcessed, lambda m: frames.append(m.time), name="count", maxlen=1_000_000)
    stuck = app.bus.subscribe(FrameProcessed, lambda m: (stuck_in.append(threading.current_thread().name),
                                                         release.wait()), name="stuck", maxlen=5)
    runner = threading.Thread(target=app.run)
    runner.start()
    try:
        wait_for(lambda: stuck_in and len(frames) >= 200, 30, "frames flowed while the listener was stuck")
        assert stuck.dropped > 0, "the stuck listener's messages were dropped, not queued"
        assert stuck_in == [stuck_in[0]] and stuck_in[0] != "frame-loop", "the listener ran on its own thread"
    finally:
        release.set()
        app.stop()
        runner.join(30)


@pytest.fixture
def daemon_config(tmp_path, scenes, tiny_bundles):
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "masked.png"), scenes["masked"])
    config = {
        "camera": {"backend": "replay", "replay_path": str(frames), "replay_fps": 20, "replay_loop": True},
        "classifier": {"model_dir": str(tiny_bundles["int8"]), "threshold": 0.5},
        "decision": {"frames_to_decide": 2, "unlock_seconds": 0.5, "cooldown_seconds": 0.2},
        "gpio": {"pin_factory": "mock", "buzzer": {"pin": 24}},
        "events": {"state_dir": str(tmp_path / "state")},
        "web": {"port": 0},
    }
    path = tmp_path / "maskgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def notify_socket(tmp_path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    return server, path


def test_sigterm_stops_cleanly_with_the_door_locked_and_systemd_told(daemon_config, tmp_path):
    server, notify_path = notify_socket(tmp_path)
    server.settimeout(60)
    proc = subprocess.Popen([sys.executable, "-m", "maskgate", "run", "--config", str(daemon_config)],
                            env={**os.environ, "NOTIFY_SOCKET": notify_path},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        messages = [server.recv(4096).decode()]
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(server.recv(4096).decode())
        state = tmp_path / "state"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "granted" not in [e.outcome for e in EventLog(state).list()]:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert messages[0].startswith("READY=1")
    server.settimeout(2)
    rest = []
    try:
        while True:
            rest.append(server.recv(4096).decode())
    except socket.timeout:
        pass
    assert "STOPPING=1" in rest
    events = EventLog(state).list()
    assert "granted" in [e.outcome for e in events] and events[-1].outcome == "stopped"
    assert events[-1].reason.startswith("door locked")


@pytest.mark.slow
def test_with_no_camera_systemd_hears_ready_and_a_steady_watchdog(tmp_path):
    config = tmp_path / "maskgate.yaml"
    config.write_text(yaml.safe_dump({"camera": {"backend": "opencv", "device": "/dev/video-none",
                                                 "reconnect_max_seconds": 30},
                                      "gpio": {"pin_factory": "mock"}, "events": {"state_dir": str(tmp_path)},
                                      "web": {"port": 0}}))
    server, notify_path = notify_socket(tmp_path)
    server.settimeout(10)
    proc = subprocess.Popen([sys.executable, "-m", "maskgate", "run", "--config", str(config)],
                            env={**os.environ, "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "15000000"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    received: list[tuple[float, str]] = []
    try:
        start = time.monotonic()
        while time.monotonic() - start < 60:
            received.append((time.monotonic(), server.recv(4096).decode()))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert received[0][1].startswith("READY=1")
    assert any("camera lost, door locked" in m for _, m in received)
    pings = [t for t, m in received if "WATCHDOG=1" in m]
    gaps = np.diff([received[0][0]] + pings)  # from READY on: start-up time is not the watchdog's
    assert len(pings) >= 15 and gaps.max() < 15, f"fed within every 15 s watchdog period: {gaps.max():.1f} s"
    assert proc.returncode == 0


def test_run_with_a_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpio:\n  relay: {pin: [17]}\n")
    done = subprocess.run([sys.executable, "-m", "maskgate", "run", "--config", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith(f"maskgate: {bad}: gpio.relay.pin")
    assert "Traceback" not in done.stderr


def test_events_json_after_a_run(daemon_config, tmp_path):
    config = yaml.safe_load(daemon_config.read_text())
    config["camera"]["replay_loop"] = False
    daemon_config.write_text(yaml.safe_dump(config))
    assert subprocess.run([sys.executable, "-m", "maskgate", "run", "--config", str(daemon_config)],
                          capture_output=True, timeout=60).returncode == 0
    out = subprocess.run([sys.executable, "-m", "maskgate", "events", "--config", str(daemon_config), "--json"],
                         capture_output=True, text=True).stdout
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["outcome"] for e in events] == ["started", "camera_ok", "stopped"]  # one frame: no decision yet


def test_frame_rate_after_a_stall_is_the_rate_frames_came_at_not_a_spike():
    from maskgate.loop import Rate

    now = [0.0]
    rate = Rate(window=2.0, clock=lambda: now[0])
    for i in range(30):  # a 10 fps camera for 3 s
        now[0] = i / 10
        steady = rate.tick()
    assert abs(steady - 10.0) < 0.01
    now[0] += 1.0  # a one-second stall, then the replay catches up with ten frames at once
    after = [rate.tick() for _ in range(10)]
    assert max(after) <= 10.0
    for i in range(1, 40):  # back to 10 fps
        now[0] += 0.1
        latest = rate.tick()
    assert abs(latest - 10.0) < 0.01


def test_run_without_gpio_says_how_to_try_it_in_one_line(tmp_path):
    probe = subprocess.run([sys.executable, "-c", "from gpiozero import Device; Device.ensure_pin_factory()"],
                           capture_output=True)
    if probe.returncode == 0:
        pytest.skip("this machine has GPIO: gpiozero found a pin driver")
    config = tmp_path / "maskgate.yaml"
    config.write_text(yaml.safe_dump({"camera": {"backend": "scenes"}, "events": {"state_dir": str(tmp_path)},
                                      "web": {"enabled": False}}))
    done = subprocess.run([sys.executable, "-m", "maskgate", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert "gpio.pin_factory: mock" in done.stderr and "lgpio" in done.stderr
