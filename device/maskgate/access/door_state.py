"""What the door is: the lock, what it shows, and which layer holds it (the bus carries it in ``DoorChanged``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Layer = Literal["fire_alarm", "manual_lock", "manual_unlock", "remote", "request_to_exit", "vision"]

# What the door shows (hardware.door.OUTPUTS maps each to relay, LEDs and buzzer).
Display = Literal["idle", "checking", "granted", "denied", "cooldown", "camera_lost", "emergency",
                  "override_unlocked", "override_locked", "forced_open", "held_open"]


@dataclass(frozen=True)
class DoorState:
    """The resolved door: the winning layer's claim."""

    unlocked: bool
    display: Display
    layer: Layer
    reason: str
    who: str = ""
    until: float | None = None

    def holder(self) -> tuple:
        """What a change of door state is: the lock, and who holds it (vision's own states don't count)."""
        if self.layer == "vision":
            return self.unlocked, self.layer
        return self.unlocked, self.layer, self.who, self.reason, self.until

    def as_dict(self, now: float) -> dict:
        return {"door": "unlocked" if self.unlocked else "locked", "display": self.display, "layer": self.layer,
                "reason": self.reason, "who": self.who,
                "seconds_left": None if self.until is None else round(max(0.0, self.until - now), 1)}
