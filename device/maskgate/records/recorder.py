"""Writes what happens to the event log: decisions, door changes, camera and input changes, start/stop.

One bus subscription for all of them, so rows keep the order things happened in; only frames that
made a decision pass the filter, so the queue holds what matters even at hundreds of frames a second.
"""

from __future__ import annotations

import numpy as np

from ..bus import EventBus
from ..messages import CameraChanged, DoorChanged, FrameProcessed, InputChanged, Lifecycle
from ..vision.core import face_json
from .events import Event, EventLog

OVERRIDES = {"manual_lock", "manual_unlock"}
QUEUE_LIMIT = 10_000  # about an hour of decisions at a busy door; beyond that the oldest are dropped


class Recorder:
    """Bus subscriber that turns messages into committed event-log rows."""

    def __init__(self, log: EventLog, bus: EventBus):
        self.log = log
        self.subscription = bus.subscribe(
            (FrameProcessed, DoorChanged, CameraChanged, InputChanged, Lifecycle), self.record, name="event-log",
            when=lambda m: not isinstance(m, FrameProcessed) or m.decision.outcome is not None, maxlen=QUEUE_LIMIT)

    def record(self, message) -> Event:
        event, frame = as_event(message)
        return self.log.record(event, frame=frame)


def as_event(message) -> tuple[Event, np.ndarray | None]:
    """The log row for a message, and the frame a decision was made on (for snapshots)."""
    if isinstance(message, FrameProcessed):
        result, decision = message.result, message.decision
        faces = tuple({k: v for k, v in face_json(fr).items() if k != "probs"} for fr in result.faces)
        event = Event(message.time, decision.outcome, decision.reason.text, len(result.faces), faces,
                      round(result.detect_ms + result.classify_ms, 2), source="vision", code=decision.reason.value,
                      face=decision.face, track=decision.track)
        return event, message.frame.image
    if isinstance(message, DoorChanged):
        state = message.state
        until = None if message.seconds_left is None else message.time + message.seconds_left
        what = "unlocked" if state.unlocked else "locked"
        override = OVERRIDES & {state.layer, message.previous.layer}  # an operator's override starting or ending
        return Event(message.time, "override" if override else "door", f"{what}: {state.reason}",
                     source=state.who or state.layer, until=until), None
    if isinstance(message, CameraChanged):
        return Event(message.time, "camera_ok" if message.ok else "camera_lost", message.reason), None
    if isinstance(message, InputChanged):
        state = "active" if message.active else "inactive"
        return Event(message.time, message.kind, message.detail or f"{message.name} {state}", source=message.name), None
    if isinstance(message, Lifecycle):
        return Event(message.time, message.kind, message.detail), None
    raise TypeError(f"no event for {type(message).__name__}")
