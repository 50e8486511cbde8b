"""The door decision: a small, pure state machine fed per-frame verdicts and the time.

idle ──face──► checking ──N masked frames──► granted (unlocked for unlock_seconds) ──► cooldown ──► idle
                  └──────N unmasked frames──► denied (shown for denied_seconds) ─────────────────► idle

A frame where the mask is not clearly seen (a turned face, a mask type the model is unsure of) keeps
the door checking and asks the person to face the camera: it breaks a run of masked frames but never
counts towards a denial, so a masked person walking up at an angle is not turned away first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import DecisionConfig
from ..vision.core import FrameResult
from .reasons import Reason
from .verdict import Rule, Verdict

State = Literal["idle", "checking", "granted", "denied", "cooldown"]


@dataclass(frozen=True)
class Decision:
    """What the door should show now; ``outcome`` is set only on the frame a decision is made."""

    state: State
    reason: Reason
    outcome: Literal["granted", "denied"] | None = None
    seconds_left: float = 0.0  # in granted/denied/cooldown: until the state ends
    face: int | None = None  # this frame's face (index into its faces) the decision is about
    people: int = 0  # faces in this frame close enough to count

    @property
    def unlocked(self) -> bool:
        return self.state == "granted"


class Decider:
    """Grants after ``frames_to_decide`` consecutive masked frames, denies after as many unmasked ones;
    unsure frames (see ``Verdict.unsure``) only restart the count."""

    def __init__(self, config: DecisionConfig, *, rule: Rule):
        self.config = config
        self.rule = rule
        self.state: State = "idle"
        self._until = 0.0
        self._streak_outcome: str | None = None
        self._streak = 0
        self._reason = Reason.NO_FACE

    def update(self, result: FrameResult, now: float) -> Decision:
        return self.update_verdict(self.rule.judge(result.faces), now)

    def update_verdict(self, verdict: Verdict, now: float) -> Decision:
        if self.state == "granted":
            if now < self._until:
                return Decision("granted", self._reason, seconds_left=self._until - now, **_about(verdict))
            self._enter("cooldown", now + self.config.cooldown_seconds)
        if self.state in ("denied", "cooldown"):
            if now < self._until:
                return Decision(self.state, self._reason, seconds_left=self._until - now, **_about(verdict))
            self._enter("idle", now)
        return self._check(verdict, now)

    def _check(self, verdict: Verdict, now: float) -> Decision:
        if verdict.outcome == "no_face":
            self._enter("idle", now)
            return Decision("idle", verdict.reason)
        self.state = "checking"
        if verdict.unsure:
            self._streak_outcome, self._streak = None, 0
            return Decision("checking", verdict.reason, **_about(verdict))
        if verdict.outcome == self._streak_outcome:
            self._streak += 1
        else:
            self._streak_outcome, self._streak = verdict.outcome, 1
        if self._streak < self.config.frames_to_decide:
            return Decision("checking", verdict.reason, **_about(verdict))
        self._reason = verdict.reason
        if verdict.outcome == "granted":
            self._enter("granted", now + self.config.unlock_seconds)
        else:
            self._enter("denied", now + self.config.denied_seconds)
        return Decision(self.state, verdict.reason, outcome=verdict.outcome, seconds_left=self._until - now,
                        **_about(verdict))

    def reset(self) -> None:
        """Forget everything (camera lost, door relocked)."""
        self._enter("idle", 0.0)

    def _enter(self, state: State, until: float) -> None:
        self.state, self._until = state, until
        self._streak_outcome, self._streak = None, 0


def _about(verdict: Verdict) -> dict:
    return {"face": verdict.face, "people": len(verdict.counted)}
