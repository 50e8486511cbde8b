"""The door loop: source → core → decider → door + events. The door is locked whenever it exits."""

from __future__ import annotations

import logging
import time
from typing import Callable

from .access.decider import Decider, Decision
from .hardware.door import Door
from .errors import FrameError, MaskgateError
from .records.events import Event, EventLog
from .hardware.notify import Notifier
from .vision.core import FrameResult, InferenceCore
from .sources import EndOfStream, SourceError

log = logging.getLogger(__name__)
STATUS_EVERY_SECONDS = 2.0


class Daemon:
    """Runs until stopped, a replay ends, or something breaks (then the exit code is 1)."""

    def __init__(self, *, core: InferenceCore, decider: Decider, door: Door, events: EventLog,
                 open_source: Callable[[], object], notifier: Notifier | None = None,
                 reconnect_max_seconds: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 on_decision: Callable[[Decision, FrameResult, bool], None] | None = None):
        self.core, self.decider, self.door, self.events = core, decider, door, events
        self.open_source = open_source
        self.notifier = notifier or Notifier("")
        self.reconnect_max_seconds = reconnect_max_seconds
        self.sleep = sleep
        self.on_decision = on_decision
        self._stopping = False

    def stop(self) -> None:
        """Ask the loop to finish after the current frame (safe from a signal handler)."""
        self._stopping = True

    def run(self) -> int:
        source = None
        frames = 0
        backoff = 1.0
        camera_ok = True
        last_status = time.monotonic()
        self.events.record(Event(time.time(), "started", "daemon started"))
        try:
            while not self._stopping:
                if source is None:
                    try:
                        source = self.open_source()
                    except SourceError as exc:
                        camera_ok = self._camera_lost(exc, camera_ok)
                        self.sleep(backoff)
                        backoff = min(backoff * 2, self.reconnect_max_seconds)
                        continue
                try:
                    frame = source.read()
                    result = self.core.process(frame.image)
                except EndOfStream:
                    log.info("replay finished")
                    break
                except (SourceError, FrameError) as exc:
                    camera_ok = self._camera_lost(exc, camera_ok)
                    source.close()
                    source = None
                    continue
                if not camera_ok:
                    log.info("camera back")
                    camera_ok, backoff = True, 1.0
                decision = self.decider.update(result, frame.time)
                self.door.apply(decision)
                if decision.outcome:
                    self.events.record(_event(decision, result), frame=frame.image)
                frames += 1
                if frames == 1:
                    self.notifier.ready("first frame processed")
                self.notifier.watchdog()
                if self.on_decision:
                    self.on_decision(decision, result, self.door.unlocked)
                now = time.monotonic()
                if now - last_status >= STATUS_EVERY_SECONDS:
                    self.notifier.status(f"{decision.state}: {decision.reason}; "
                                         f"{result.detect_ms + result.classify_ms:.1f} ms/frame")
                    last_status = now
            return 0
        except MaskgateError as exc:  # a problem for people (missing package, bad replay path): no traceback
            self.door.lock()
            log.error("%s; door locked", exc)
            self.events.record(Event(time.time(), "error", str(exc)))
            return 1
        except Exception as exc:
            self.door.lock()
            log.exception("door loop failed; door locked")
            self.events.record(Event(time.time(), "error", f"{type(exc).__name__}: {exc}"))
            return 1
        finally:
            self.door.lock()
            self.notifier.stopping()
            if source is not None:
                source.close()
            self.events.record(Event(time.time(), "stopped", "door locked, daemon stopped"))

    def _camera_lost(self, exc: Exception, camera_ok: bool) -> bool:
        self.door.lock()
        self.decider.reset()
        self.notifier.watchdog()  # the loop itself is alive; the door is locked
        self.notifier.status(f"camera lost, door locked, reconnecting: {exc}")
        if camera_ok:
            log.warning("camera lost, door locked: %s", exc)
            self.events.record(Event(time.time(), "camera_lost", str(exc)))
        return False


def _event(decision: Decision, result: FrameResult) -> Event:
    faces = tuple({"label": fr.prediction.label, "confidence": round(fr.prediction.confidence, 4),
                   "box": [round(v) for v in fr.face.box]} for fr in result.faces)
    return Event(time.time(), decision.outcome, decision.reason, len(result.faces), faces,
                 round(result.detect_ms + result.classify_ms, 2))
