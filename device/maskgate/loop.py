"""The frame loop: source → core → decider → controller, one frame at a time; every frame on the bus.

It owns no side effect but the vision claim on the door: logging, status, preview and telemetry are
bus subscribers. A lost camera locks the door and is retried with backoff; the loop beats its
heartbeat while it waits, so the supervisor can tell a camera outage from a stuck loop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .access.controller import DoorController
from .access.decider import Decider
from .bus import EventBus
from .errors import FrameError
from .messages import CameraChanged, FrameProcessed
from .sources import EndOfStream, SourceError
from .vision.core import InferenceCore

log = logging.getLogger(__name__)


class Heartbeat:
    """When a worker last showed it was alive (monotonic clock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.last = clock()

    def beat(self) -> None:
        self.last = self.clock()

    def age(self) -> float:
        return self.clock() - self.last


class FrameLoop:
    """Runs until ``stop`` is set or a replay ends; raises what it cannot handle (the app locks the door)."""

    def __init__(self, *, open_source: Callable[[], object], core: InferenceCore, decider: Decider,
                 controller: DoorController, bus: EventBus, stop: threading.Event, heartbeat: Heartbeat,
                 reconnect_max_seconds: float = 30.0):
        self.open_source, self.core, self.decider = open_source, core, decider
        self.controller, self.bus, self.stop, self.heartbeat = controller, bus, stop, heartbeat
        self.reconnect_max_seconds = reconnect_max_seconds
        self.fps = 0.0

    def run(self) -> None:
        source, backoff, camera_ok = None, 1.0, None
        last = time.monotonic()
        try:
            while not self.stop.is_set():
                self.heartbeat.beat()
                if source is None:
                    try:
                        source = self.open_source()
                    except SourceError as exc:
                        camera_ok = self._camera_lost(exc, camera_ok)
                        self._wait(backoff)
                        backoff = min(backoff * 2, self.reconnect_max_seconds)
                        continue
                try:
                    frame = source.read()
                    result = self.core.process(frame.image, streaming=True)
                except EndOfStream:
                    log.info("replay finished")
                    return
                except FrameError as exc:  # one unusable frame: locked, same source
                    camera_ok = self._camera_lost(exc, camera_ok)
                    continue
                except SourceError as exc:
                    camera_ok = self._camera_lost(exc, camera_ok)
                    source.close()
                    source = None
                    continue
                if not camera_ok:
                    if camera_ok is False:
                        log.info("camera back")
                    self.bus.publish(CameraChanged(True, "camera ok", time.time()))
                    camera_ok, backoff = True, 1.0
                decision = self.decider.update(result, frame.time)
                self.controller.vision(decision)
                now = time.monotonic()
                self.fps = 0.9 * self.fps + 0.1 / max(now - last, 1e-6) if self.fps else 1.0 / max(now - last, 1e-6)
                last = now
                self.bus.publish(FrameProcessed(frame, result, decision, self.fps, time.time()))
        finally:
            if source is not None:
                source.close()

    def _camera_lost(self, exc: Exception, camera_ok: bool | None) -> bool:
        self.controller.camera_lost(f"camera unavailable: {exc}")
        self.decider.reset()
        if camera_ok is not False:
            log.warning("camera lost, door locked: %s", exc)
            self.bus.publish(CameraChanged(False, str(exc), time.time()))
        return False

    def _wait(self, seconds: float) -> None:
        """Sleep for a reconnect, beating the heartbeat at least every second."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.stop.wait(min(left, 1.0))
            self.heartbeat.beat()
