"""The door loop end to end: real detector, a real (tiny) TFLite classifier, mock GPIO pins,
replayed real-face frames on an injected timeline."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml
from gpiozero.pins.mock import MockFactory

from maskgate.vision.classifier import MaskClassifier
from maskgate.config import DecisionConfig, GpioConfig, PinConfig
from maskgate.loop import Daemon
from maskgate.access.decider import Decider
from maskgate.hardware.door import build_door
from maskgate.records.events import EventLog
from maskgate.vision.core import InferenceCore
from maskgate.sources.scenes import door_scene
from maskgate.sources import ReplaySource, SourceError

RELAY, GREEN, RED, BUZZER = 17, 27, 22, 24
# The near faces are ~210 px tall; the far one is detected ~115 px tall (BlazeFace's box is loose that small).
DECISION = DecisionConfig(frames_to_decide=3, unlock_seconds=1.0, denied_seconds=0.5, cooldown_seconds=0.5,
                          min_face_px=150)


@pytest.fixture(scope="module")
def core(detector, tiny_bundles):
    # The tiny colour model calls a strongly blue drawn mask with_mask and bare skin without_mask.
    return InferenceCore(detector, MaskClassifier(tiny_bundles["int8"]))


@pytest.fixture(scope="module")
def scenes():
    return {"masked": door_scene(masked=True, mask_bgr=(255, 60, 0)), "bare": door_scene(masked=False),
            "far": door_scene(face_height_px=60), "empty": np.full((480, 640, 3), 90, np.uint8)}


class Rig:
    """A daemon on mock pins whose relay level is recorded after every frame."""

    def __init__(self, core, tmp_path, frames, *, decision=DECISION, threshold=0.5, open_source=None):
        self.factory = MockFactory()
        self.door = build_door(GpioConfig(relay=PinConfig(pin=RELAY), green_led=PinConfig(pin=GREEN),
                                          red_led=PinConfig(pin=RED), buzzer=PinConfig(pin=BUZZER)),
                               pin_factory=self.factory)
        self.events = EventLog(tmp_path)
        self.timeline: list[tuple[str, bool]] = []
        self.sleeps: list[float] = []
        source = lambda: _opened(ReplaySource(lambda: iter(frames), fps=10, paced=False))  # noqa: E731
        self.daemon = Daemon(core=core, decider=Decider(decision, threshold=threshold), door=self.door,
                             events=self.events, open_source=open_source or source, sleep=self.sleeps.append,
                             on_decision=lambda d, r, unlocked: self.timeline.append(
                                 (d.state, self.factory.pin(RELAY).state == 1)))

    def run(self) -> int:
        code = self.daemon.run()
        self.door.close()
        return code

    def outcomes(self):
        return [e.outcome for e in self.events.list()]


def _opened(source):
    source.open()
    return source


def test_masked_person_unlocks_after_n_frames_and_relocks_after_unlock_seconds(core, scenes, tmp_path):
    rig = Rig(core, tmp_path, [scenes["masked"]] * 20)
    assert rig.run() == 0
    relay = [on for _, on in rig.timeline]
    assert relay[:2] == [False, False] and relay[2] is True  # third masked frame
    assert relay[2:12] == [True] * 10  # 1.0 s at 10 fps
    assert relay[12] is False  # relocked: cooldown
    assert rig.factory.pin(RELAY).state == 0
    assert rig.outcomes()[:2] == ["started", "granted"] and rig.outcomes()[-1] == "stopped"


@pytest.mark.parametrize("scene", ["bare", "far", "empty"])
def test_no_mask_far_face_or_nobody_never_unlocks(core, scenes, tmp_path, scene):
    rig = Rig(core, tmp_path, [scenes[scene]] * 15)
    assert rig.run() == 0
    assert not any(on for _, on in rig.timeline)
    assert not any(state for _, state in rig.factory.pin(RELAY).states)
    if scene == "bare":
        assert "denied" in rig.outcomes()
        assert any(state for _, state in rig.factory.pin(RED).states)
    else:
        assert {s for s, _ in rig.timeline} == {"idle"}


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
            from maskgate.sources import EndOfStream

            raise EndOfStream
        from maskgate.sources import Frame

        return Frame(self.frames[self.reads - 1], self.reads * 0.1)

    def close(self):
        pass


def test_camera_failure_relocks_and_reconnects(core, scenes, tmp_path):
    camera = FlakyCamera([scenes["masked"]] * 12, good=4)
    rig = Rig(core, tmp_path, [], open_source=camera)
    relay_at_failure = []
    original = rig.daemon._camera_lost
    rig.daemon._camera_lost = lambda exc, ok: (relay_at_failure.append(rig.factory.pin(RELAY).state), original(exc, ok))[1]
    assert rig.run() == 0
    assert rig.timeline[3][1] is True, "granted before the failure"
    assert relay_at_failure and rig.factory.pin(RELAY).state == 0
    assert camera.opens == 3 and rig.sleeps == [1.0], "reconnected with backoff"
    assert rig.outcomes().count("camera_lost") == 1


def test_an_exception_in_the_loop_locks_the_door_and_exits_non_zero(core, scenes, tmp_path):
    class BrokenAfterGrant:
        def __init__(self):
            self.calls = 0

        def __getattr__(self, name):
            return getattr(core, name)

        def process(self, image):
            self.calls += 1
            if self.calls == 5:
                raise RuntimeError("model crashed")
            return core.process(image)

    rig = Rig(core, tmp_path, [scenes["masked"]] * 10)
    rig.daemon.core = BrokenAfterGrant()
    assert rig.run() == 1
    assert rig.timeline[-1][1] is True, "the relay was open when it broke"
    assert rig.factory.pin(RELAY).state == 0
    assert rig.outcomes()[-2:] == ["error", "stopped"]


def test_garbage_frames_are_survived_with_the_door_locked(core, scenes, tmp_path):
    rng = np.random.default_rng(3)
    garbage = [np.zeros((0, 0, 3), np.uint8), rng.random((480, 640, 3)), np.zeros((5, 5, 7), np.uint8),
               rng.integers(0, 255, (1, 1), dtype=np.uint8), rng.integers(0, 255, (480, 640, 4), dtype=np.uint8)]
    camera = FlakyCamera([], good=0)
    frames = iter(garbage + [scenes["bare"]] * 5)
    from maskgate.sources import EndOfStream, Frame

    def read():
        try:
            return Frame(next(frames), 0.0)
        except StopIteration:
            raise EndOfStream from None

    camera.read = read
    camera.opens = 2  # no failing reopen in this test
    rig = Rig(core, tmp_path, [], open_source=camera)
    assert rig.run() == 0
    assert not any(state for _, state in rig.factory.pin(RELAY).states)
    assert "camera_lost" in rig.outcomes()


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
    }
    path = tmp_path / "maskgate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_sigterm_stops_cleanly_with_the_door_locked_and_systemd_told(daemon_config, tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(notify_path)
    server.settimeout(60)
    proc = subprocess.Popen([sys.executable, "-m", "maskgate.cli", "run", "--config", str(daemon_config)],
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
    outcomes = [e.outcome for e in EventLog(state).list()]
    assert "granted" in outcomes and outcomes[-1] == "stopped"
    assert EventLog(state).list()[-1].reason.startswith("door locked")


def test_run_with_a_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpio:\n  relay: {pin: [17]}\n")
    done = subprocess.run([sys.executable, "-m", "maskgate.cli", "run", "--config", str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith(f"maskgate: {bad}: gpio.relay.pin")
    assert "Traceback" not in done.stderr


def test_events_json_after_a_run(daemon_config, tmp_path):
    config = yaml.safe_load(daemon_config.read_text())
    config["camera"]["replay_loop"] = False
    daemon_config.write_text(yaml.safe_dump(config))
    assert subprocess.run([sys.executable, "-m", "maskgate.cli", "run", "--config", str(daemon_config)],
                          capture_output=True, timeout=60).returncode == 0
    out = subprocess.run([sys.executable, "-m", "maskgate.cli", "events", "--config", str(daemon_config), "--json"],
                         capture_output=True, text=True).stdout
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["outcome"] for e in events] == ["started", "stopped"]  # one frame: no decision yet
