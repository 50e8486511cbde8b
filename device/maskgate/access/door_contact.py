"""What the door-position contact means: forced open, held open, closed after a grant.

A pure state machine fed the time (controller clock), so it is tested without pins or threads:

    closed ──opened within GRACE_SECONDS of the lock being released──► open (granted)
       │         └─ still open held_open_seconds later, lock engaged again ──► held_open
       └──opened while locked──► open (forced)
    open ──closed──► closed (the alarm ends; after a granted opening the grant ends too)
"""

from __future__ import annotations

from typing import Literal

from .controller import DoorAlarm

# A lock takes a moment to engage and people push just as it relocks: an opening this soon after the
# lock was released still counts as granted.
GRACE_SECONDS = 1.0


class DoorMonitor:
    """Tracks one door's contact; ``alarm`` is what the door should show (None: nothing wrong)."""

    def __init__(self, *, held_open_seconds: float, grace_seconds: float = GRACE_SECONDS):
        self.held_open_seconds, self.grace_seconds = held_open_seconds, grace_seconds
        self.open = False
        self.granted = False
        self.opened_at = 0.0
        self.alarm: DoorAlarm | None = None

    def opened(self, now: float, *, last_unlocked: float) -> Literal["door_opened", "door_forced"]:
        self.open, self.opened_at = True, now
        self.granted = now - last_unlocked <= self.grace_seconds
        if self.granted:
            return "door_opened"
        self.alarm = "forced_open"
        return "door_forced"

    def closed(self) -> bool:
        """The door shut; True if it had been opened on a grant (so the grant may end)."""
        granted = self.open and self.granted
        self.open = self.granted = False
        self.alarm = None
        return granted

    def held_due(self) -> float | None:
        """When a held-open alarm may start (None: it cannot)."""
        if self.open and self.granted and self.alarm is None:
            return self.opened_at + self.held_open_seconds
        return None

    def tick(self, now: float, *, unlocked: bool) -> bool:
        """True when the held-open alarm starts: open too long after a grant, and the lock engaged again."""
        due = self.held_due()
        if due is None or now < due or unlocked:
            return False
        self.alarm = "held_open"
        return True
