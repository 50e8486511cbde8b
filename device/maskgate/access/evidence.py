"""What one person's frames add up to: weighted evidence for and against letting them in.

Each frame of a face gives a ``margin``: how far, in log-odds, it clears the grant rule (positive) or
falls short of it (negative), and a ``weight``: how much to trust that frame — near, confidently
detected, frontal faces count fully; small, doubtful or turned ones less, and a frame whose mask is not
clearly seen only a little. ``Evidence`` keeps a track's weighted sums, so a decision rests on the
weighted mean of all its frames, never on a streak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from .reasons import Reason

MAX_MARGIN = 4.0  # log-odds: one extreme frame cannot outvote many ordinary ones
UNSURE_WEIGHT = 0.3  # a frame whose mask is not clearly seen is weak evidence
# The nose tip's offset from the eyes' midpoint, in eye distances: up to FRONTAL_YAW the classifier is as
# good as on a frontal face (measured on the measure-only sources), beyond TURNED_YAW it is much worse.
FRONTAL_YAW = 0.3
TURNED_YAW = 0.7
TURNED_WEIGHT = 0.2  # what a frame of a face turned that far still counts
RECENT_HALF_LIFE_S = 0.3  # what the face shows right now: a grant needs it too; the words follow it


def log_odds(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def frontalness(keypoints: Sequence[Sequence[float]]) -> float:
    """1 for a face looking at the camera, down to 0 for one turned far to the side, from the nose tip's
    offset from the eyes' midpoint (YuNet's keypoints: right eye, left eye, nose, …); 1 without landmarks."""
    if len(keypoints) < 3:
        return 1.0
    (rx, _), (lx, _), (nx, _) = keypoints[0][:2], keypoints[1][:2], keypoints[2][:2]
    eyes = abs(lx - rx)
    if eyes < 1.0:
        return 1.0
    yaw = abs(nx - (lx + rx) / 2) / eyes
    return min(max(1.0 - (yaw - FRONTAL_YAW) / (TURNED_YAW - FRONTAL_YAW), 0.0), 1.0)


@dataclass(frozen=True)
class FrameEvidence:
    margin: float  # log-odds above (+) or below (−) the grant rule
    weight: float
    reason: Reason  # the rule's answer for this frame alone (GRANTED: it passes)


@dataclass
class Evidence:
    """One track's frames so far: how much evidence there is (``seen``, the sum of their weights), and
    for the mean: weight, weighted margin and weight per frame answer, in which older frames fade (each
    counts half after ``half_life_seconds``) so a person who puts their mask right is let in, while a
    few lucky frames never outweigh the many before them."""

    half_life_seconds: float
    seen: float = 0.0
    weight: float = 0.0
    weighted_margin: float = 0.0
    by_reason: dict[Reason, float] = field(default_factory=dict)
    recent: tuple[float, float] = (0.0, 0.0)  # weight and weighted margin, fading within RECENT_HALF_LIFE_S
    at: float | None = None  # when the last frame was added

    def add(self, frame: FrameEvidence, now: float) -> None:
        if self.at is not None and now > self.at:
            fade = 0.5 ** ((now - self.at) / self.half_life_seconds)
            self.weight *= fade
            self.weighted_margin *= fade
            self.by_reason = {r: w * fade for r, w in self.by_reason.items()}
            quick = 0.5 ** ((now - self.at) / RECENT_HALF_LIFE_S)
            self.recent = (self.recent[0] * quick, self.recent[1] * quick)
        self.at = now
        self.recent = (self.recent[0] + frame.weight, self.recent[1] + frame.weight * frame.margin)
        self.seen += frame.weight
        self.weight += frame.weight
        self.weighted_margin += frame.weight * frame.margin
        self.by_reason[frame.reason] = self.by_reason.get(frame.reason, 0.0) + frame.weight

    @property
    def mean(self) -> float:
        return self.weighted_margin / self.weight if self.weight else 0.0

    @property
    def recent_mean(self) -> float:
        return self.recent[1] / self.recent[0] if self.recent[0] else 0.0

    def leaning(self, among: Sequence[Reason] = tuple(Reason)) -> Reason | None:
        """The answer most of the weight gave, among ``among``."""
        weights = {r: w for r, w in self.by_reason.items() if r in among}
        return max(weights, key=weights.__getitem__) if weights else None
