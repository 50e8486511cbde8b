"""A running daemon with its web server for the web and browser tests: real detector and (tiny) classifier,
mock GPIO, and a camera the test points at one scene or another."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from gpiozero.pins.mock import MockFactory

from maskgate.app import App
from maskgate.config import Config
from maskgate.messages import FrameProcessed
from maskgate.sources import Frame, SourceError

TOKEN = "correct-horse-battery-staple"


class SceneCamera:
    """Gives the scene named by ``show`` at ``fps``; ``show("broken")`` fails like an unplugged camera."""

    def __init__(self, scenes: dict, first: str, fps: float = 15.0):
        self.scenes, self.scene, self.period = scenes, first, 1.0 / fps

    def show(self, name: str) -> None:
        self.scene = name

    def __call__(self):
        if self.scene == "broken":
            raise SourceError("camera 0: cannot open")
        return self

    def read(self) -> Frame:
        time.sleep(self.period)
        if self.scene == "broken":
            raise SourceError("camera 0: no frame")
        return Frame(self.scenes[self.scene], time.monotonic())

    def close(self) -> None:
        pass


def web_config(tmp_path, **web) -> Config:
    return Config.model_validate({
        "camera": {"backend": "scenes", "reconnect_max_seconds": 1},
        "classifier": {"threshold": 0.5},
        "decision": {"frames_to_decide": 2, "unlock_seconds": 4.0, "denied_seconds": 1.0, "cooldown_seconds": 0.5,
                     "min_face_px": 150},
        "events": {"state_dir": str(tmp_path / "state")},
        "web": {"port": 0, **web},
    })


@contextmanager
def running(config: Config, core, camera):
    """The App running in a thread; yields (app, web service); stops and joins on exit."""
    app = App(config, core=core, pin_factory=MockFactory(), open_source=camera)
    decisions: list[tuple[float, str]] = []
    app.bus.subscribe(FrameProcessed, lambda m: decisions.append((m.time, m.decision.state)), name="test:decisions",
                      when=lambda m: m.decision.outcome is not None)
    app.decisions = decisions
    web = next(s for s in app.services if s.name == "web")
    runner = threading.Thread(target=app.run, name="test-app")
    runner.start()
    deadline = time.monotonic() + 20
    while not (web.server.started and web.feed.channel.loop) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert web.server.started, "web server did not start"
    try:
        yield app, web
    finally:
        app.stop()
        runner.join(20)
        assert not runner.is_alive()


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    """Poll ``predicate`` until it holds; the deadline only stops a hung test (it is no speed claim)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
