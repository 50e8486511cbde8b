"""The frame loop: source → core → decider → controller, one frame at a time; every frame on the bus.

It owns no side effect but the vision claim on the door: logging, status, preview and telemetry are
bus subscribers. A lost camera locks the door and is retried with backoff (doubling, capped at
``reconnect_max_seconds``, with jitter): a camera that cannot be opened, and any failure that follows
another without a usable frame between them (a replay file that opens but cannot be read, a stream
that fails at once, unreadable images), so none of them spins; the first failure after good frames
is retried at once. The loop beats its heartbeat while it waits, so the supervisor can tell a camera
outage from a stuck loop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
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


class Rate:
    """Events a second over the last ``window`` seconds. Not a running mean of 1/gap: after a stall a
    source catching up delivers a burst, and those short gaps would read as a spike (80 fps at 10)."""

    def __init__(self, window: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.window, self.clock = window, clock
        self._times: deque[float] = deque()

    def tick(self) -> float:
        now = self.clock()
        self._times.append(now)
        while len(self._times) > 2 and now - self._times[0] > self.window:
            self._times.popleft()
        span = now - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class FrameLoop:
    """Runs until ``stop`` is set or a replay ends; raises what it cannot handle (the app locks the door)."""

    def __init__(self, *, open_source: Callable[[], object], core: InferenceCore, decider: Decider,
                 controller: DoorController, bus: EventBus, stop: threading.Event, heartbeat: Heartbeat,
                 reconnect_max_seconds: float = 30.0, pause: Callable[[float], None] | None = None,
                 jitter: Callable[[], float] = random.random):
        self.open_source, self.core, self.decider = open_source, core, decider
        self.controller, self.bus, self.stop, self.heartbeat = controller, bus, stop, heartbeat
        self.reconnect_max_seconds = reconnect_max_seconds
        self.pause, self.jitter = pause or self._wait, jitter
        self.fps = 0.0
        self._rate = Rate()
        self._backoff = 1.0

    def run(self) -> None:
        source, camera_ok, usable = None, None, False  # usable: the last read gave a frame that went through
        try:
            while not self.stop.is_set():
                self.heartbeat.beat()
                if source is None:
                    try:
                        source = self.open_source()
                    except (SourceError, OSError) as exc:  # OSError: e.g. out of file descriptors
                        camera_ok = self._camera_lost(exc, camera_ok)
                        self._back_off()
                        continue
                try:
                    frame = source.read()
                    result = self.core.process(frame.image, streaming=True)
                except EndOfStream:
                    log.info("replay finished")
                    return
                except FrameError as exc:  # one unusable frame: locked, same source
                    camera_ok = self._camera_lost(exc, camera_ok)
                    if not usable:  # two in a row: wait before the next
                        self._back_off()
                    usable = False
                    continue
                except (SourceError, OSError) as exc:
                    camera_ok = self._camera_lost(exc, camera_ok)
                    source.close()
                    source = None
                    if not usable:  # it opens but cannot be read: wait before opening it again
                        self._back_off()
                    usable = False
                    continue
                usable = True
                if not camera_ok:
                    if camera_ok is False:
                        log.info("camera back")
                    self.bus.publish(CameraChanged(True, "camera ok", time.time()))
                    camera_ok, self._backoff = True, 1.0
                decision = self.decider.update(result, frame.time)
                self.controller.vision(decision)
                self.fps = self._rate.tick()
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

    def _back_off(self) -> None:
        """Pause before the next attempt: the backoff less up to a fifth (jitter); it doubles up to the cap."""
        self.pause(self._backoff * (1 - 0.2 * self.jitter()))
        self._backoff = min(self._backoff * 2, self.reconnect_max_seconds)

    def _wait(self, seconds: float) -> None:
        """Sleep for a reconnect, beating the heartbeat at least every second."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self.stop.wait(min(left, 1.0))
            self.heartbeat.beat()
