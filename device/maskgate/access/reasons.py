"""Why the door decided: reason codes (the interface) and the one table of their words (presentation).

Everything that reacts to a decision — the kiosk view, the event log, MQTT, the classify outputs,
the training report — keys on a ``Reason``; ``TEXT`` is only for people to read.
"""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    """A decision's reason code; its value is what logs, JSON and MQTT carry."""

    GRANTED = "granted"  # every face that counts wears a mask
    NO_MASK = "no_mask"  # the face that decided wears no mask
    INCORRECT = "incorrect"  # a mask, but not over nose and mouth
    UNSURE = "unsure"  # the mask is not clearly seen: face the camera (never grants, never denies)
    TOO_SMALL = "too_small"  # faces seen, all smaller than decision.min_face_px: too far away to judge
    NOT_EVERYONE = "not_everyone"  # policy all: one of several people wears no mask
    NO_FACE = "no_face"  # nobody in view

    __hash__ = str.__hash__  # a code and its plain string are the same key

    def __str__(self) -> str:
        return self.value

    @property
    def text(self) -> str:
        return TEXT[self]


TEXT: dict[Reason, str] = {
    Reason.GRANTED: "mask worn",
    Reason.NO_MASK: "no mask",
    Reason.INCORRECT: "mask worn incorrectly: cover your nose and mouth",
    Reason.UNSURE: "mask not clearly seen: face the camera",
    Reason.TOO_SMALL: "faces too far away to judge: step closer",
    Reason.NOT_EVERYONE: "not everyone wears a mask",
    Reason.NO_FACE: "no face",
}
