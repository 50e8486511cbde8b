"""The door decision: a small, pure state machine fed each frame's faces and the time.

idle ──person──► checking ──their evidence says mask──► granted (unlocked for unlock_seconds) ──► cooldown ──► idle
                    └───────their evidence says none──► denied (while that person stays, ≥ denied_seconds)

Each face is followed from frame to frame as one person (a track, see ``tracks``), and each person is
judged on all of their frames so far (``Rule.evidence`` / ``Rule.decide``), never on a streak: a few
lucky frames among many doubtful ones do not open the door. A frame where the mask is not clearly
seen (a turned face, an unusual mask) adds little and never adds up to a refusal, so a masked person
walking up at an angle is asked to face the camera, not turned away. Every person starts afresh: a
denial is shown while the person it was for is in view, and ends when someone else steps up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..config import DecisionConfig
from ..vision.core import FrameResult
from .evidence import Evidence
from .reasons import Reason
from .tracks import Track, Tracker
from .verdict import Rule, TrackAnswer

State = Literal["idle", "checking", "granted", "denied", "cooldown"]


@dataclass(frozen=True)
class Decision:
    """What the door should show now; ``outcome`` is set only on the frame a decision is made."""

    state: State
    reason: Reason
    outcome: Literal["granted", "denied"] | None = None
    seconds_left: float = 0.0  # in granted/denied/cooldown: until the state ends
    face: int | None = None  # this frame's face (index into its faces) of the person the decision is about
    track: int | None = None  # that person's track id
    people: int = 0  # people in view close enough to count

    @property
    def unlocked(self) -> bool:
        return self.state == "granted"


@dataclass(frozen=True)
class _Judged:
    """The tracks' answer under the policy: which person it is about."""

    answer: TrackAnswer
    reason: Reason
    track: Track | None
    people: int
    refused_now: tuple[Reason, Track] | None = None  # someone in view whose frames right now clearly say no


class Decider:
    """Follows each person (track) and decides on each one's evidence; see the module docstring."""

    def __init__(self, config: DecisionConfig, *, rule: Rule):
        self.config = config
        self.rule = rule
        self.tracker = Tracker(lost_seconds=config.track_lost_seconds)
        self.evidence: dict[int, Evidence] = {}
        self.state: State = "idle"
        self._until = 0.0
        self._reason = Reason.NO_FACE
        self._track: int | None = None  # the person the grant or denial is for

    def update(self, result: FrameResult, now: float) -> Decision:
        judged = self._judge(result, now)
        if self.state == "granted":
            if now < self._until:  # open for the person let in; the words follow anyone refused meanwhile
                if judged.refused_now is not None:
                    return self._decision(judged, judged.refused_now[0], now, track=judged.refused_now[1])
                return self._decision(judged, self._reason, now, track=self._decided())
            self._enter("cooldown", now + self.config.cooldown_seconds)
        if self.state == "cooldown":
            if now < self._until:
                return self._decision(judged, self._reason, now, track=self._decided())
            self._enter("idle", now)
        if self.state == "denied" and judged.track is not None and judged.track.id == self._track:
            # the same person: refused while their evidence says so, and for at least denied_seconds
            if judged.answer == "deny" or (judged.answer == "checking" and now < self._until):
                return self._decision(judged, judged.reason if judged.answer == "deny" else self._reason, now,
                                      track=judged.track)
        return self._check(judged, now)

    def _check(self, judged: _Judged, now: float) -> Decision:
        if judged.track is None:
            self._enter("idle", now)
            return Decision("idle", judged.reason)
        if judged.answer == "checking":
            self._enter("checking", now)
            return self._decision(judged, judged.reason, now, track=judged.track)
        granted = judged.answer == "grant"
        self._enter("granted" if granted else "denied",
                    now + (self.config.unlock_seconds if granted else self.config.denied_seconds))
        self._reason, self._track = judged.reason, judged.track.id
        return self._decision(judged, judged.reason, now, track=judged.track,
                              outcome="granted" if granted else "denied")

    def _judge(self, result: FrameResult, now: float) -> _Judged:
        """Follow the faces, add this frame to each person's evidence, and answer under the policy."""
        tracks = self.tracker.update([fr.face.box for fr in result.faces], now)
        live = {t.id for t in tracks}
        self.evidence = {k: e for k, e in self.evidence.items() if k in live}
        counted = []
        for track in tracks:
            if track.face is None:
                if track.id in self.evidence:  # in range, and only briefly out of sight
                    counted.append(track)
            elif self.rule.counts(result.faces[track.face]):
                evidence = self.evidence.setdefault(track.id, Evidence(self.config.evidence_half_life_seconds))
                evidence.add(self.rule.evidence(result.faces[track.face]), now)
                counted.append(track)
        if not counted:
            return _Judged("checking", Reason.TOO_SMALL if result.faces else Reason.NO_FACE, None, 0)
        return replace(self._by_policy(counted), refused_now=self._refused_now(counted))

    def _by_policy(self, counted: list[Track]) -> _Judged:
        """The people's answers under the policy: whose answer is the door's."""
        answers = {t.id: self.rule.decide(self.evidence[t.id]) for t in counted}
        for track in counted:  # nobody is let in or refused while out of sight
            if track.face is None:
                answers[track.id] = ("checking", answers[track.id][1])
        largest = max(counted, key=lambda t: t.height)
        if self.rule.policy == "nearest" or len(counted) == 1:
            return _Judged(*answers[largest.id], largest, len(counted))
        denying = [t for t in counted if answers[t.id][0] == "deny"]
        if denying:
            reason = answers[denying[0].id][1]
            return _Judged("deny", Reason.NOT_EVERYONE if reason is Reason.NO_MASK else reason, denying[0], len(counted))
        waiting = [t for t in counted if answers[t.id][0] == "checking"]
        if waiting:
            return _Judged("checking", answers[waiting[0].id][1], waiting[0], len(counted))
        return _Judged("grant", Reason.GRANTED, largest, len(counted))

    def _refused_now(self, counted: list[Track]) -> tuple[Reason, Track] | None:
        """A person in view whose latest frames clearly refuse them (for the words while the door is open)."""
        for track in counted:
            evidence = self.evidence[track.id]
            if track.face is not None and evidence.recent_mean <= -self.rule.deny_margin:
                reason = evidence.leaning((Reason.NO_MASK, Reason.INCORRECT)) or Reason.NO_MASK
                return (Reason.NOT_EVERYONE if reason is Reason.NO_MASK and len(counted) > 1 else reason), track
        return None

    def _decided(self) -> Track | None:
        """The person the grant or denial is for, while in view."""
        return next((t for t in self.tracker.tracks if t.id == self._track), None)

    def _decision(self, judged: _Judged, reason: Reason, now: float, *, track: Track | None,
                  outcome: Literal["granted", "denied"] | None = None) -> Decision:
        timed = self.state in ("granted", "denied", "cooldown")
        return Decision(self.state, reason, outcome, max(self._until - now, 0.0) if timed else 0.0,
                        None if track is None else track.face, None if track is None else track.id, judged.people)

    def reset(self) -> None:
        """Forget everything (camera lost, door relocked)."""
        self.tracker.reset()
        self.evidence = {}
        self._enter("idle", 0.0)

    def _enter(self, state: State, until: float) -> None:
        self.state, self._until = state, until
        if state in ("idle", "checking"):
            self._track = None
