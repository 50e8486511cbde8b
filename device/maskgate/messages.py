"""The messages on the event bus: plain, immutable records of what happened."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .access.door_state import DoorState
    from .access.decider import Decision
    from .sources import Frame
    from .vision.core import FrameResult


@dataclass(frozen=True)
class FrameProcessed:
    """One frame through the vision stages and the decider (published for every frame)."""

    frame: "Frame"
    result: "FrameResult"
    decision: "Decision"
    fps: float
    time: float  # wall clock


@dataclass(frozen=True)
class CameraChanged:
    """The camera was lost (door locked, reconnecting) or is back."""

    ok: bool
    reason: str
    time: float


@dataclass(frozen=True)
class DoorChanged:
    """The door controller changed the lock or who holds it; ``previous`` is what it was."""

    state: "DoorState"
    previous: "DoorState"
    time: float  # wall clock
    seconds_left: float | None  # until a timed claim ends; None: until withdrawn (or not timed)


@dataclass(frozen=True)
class InputChanged:
    """A door input (fire alarm, request-to-exit, door contact) changed, or misbehaved."""

    name: str
    active: bool
    time: float
    detail: str = ""
    # what it means, also the event log's outcome: fire_alarm, fire_alarm_end, exit_request, door_opened,
    # door_forced, door_held_open, door_closed, input_chatter
    kind: str = "input"


@dataclass(frozen=True)
class EventLogChanged:
    """The event log stopped accepting writes (disk full, I/O error), or accepts them again."""

    ok: bool
    detail: str
    time: float


@dataclass(frozen=True)
class AlarmSilenced:
    """An operator acknowledged a door alarm (forced or held open): its buzzer stopped."""

    alarm: str
    who: str
    reason: str
    time: float


@dataclass(frozen=True)
class ShadowCounted:
    """A shadow run's counts so far (``maskgate model shadow``): how the staged model would judge the frames."""

    result: dict
    time: float


@dataclass(frozen=True)
class Lifecycle:
    """The daemon started, stopped or failed."""

    kind: Literal["started", "stopped", "error"]
    detail: str
    time: float


def is_event(message) -> bool:
    """Worth an event: every message but a FrameProcessed that decided nothing."""
    return not isinstance(message, FrameProcessed) or message.decision.outcome is not None


def without_image(message):
    """A FrameProcessed with the frame's pixels dropped, for queues that may hold it for long; others as they are."""
    if isinstance(message, FrameProcessed):
        return replace(message, frame=replace(message.frame, image=None))
    return message
