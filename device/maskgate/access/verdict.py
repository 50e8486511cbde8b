"""Per-frame verdict: would this one frame let people in? (The decider adds time on top.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from ..vision.classifier import LABELS
from ..vision.core import FaceResult, FrameResult, face_json
from .reasons import Reason

if TYPE_CHECKING:
    from ..config import DecisionConfig

Policy = Literal["nearest", "all"]
WITH_MASK = LABELS.index("with_mask")


@dataclass(frozen=True)
class Verdict:
    """One frame's answer: its outcome, why (a code), and which face decided (index into the frame's faces)."""

    outcome: Literal["granted", "denied", "no_face"]
    reason: Reason
    face: int | None = None
    counted: tuple[int, ...] = ()  # the faces close enough to count

    @property
    def unsure(self) -> bool:
        """The mask was not clearly seen: this frame neither grants nor counts as a denial."""
        return self.reason is Reason.UNSURE


@dataclass(frozen=True)
class Rule:
    """The one decision rule: the door, ``maskgate classify``, the classify API and training's
    evaluation all judge with it. Built from ``DecisionConfig`` and the bundle's thresholds only."""

    threshold: float  # p(with_mask) at or above which a with_mask face may pass
    nose_threshold: float | None  # p(nose covered) a passing face needs (None: the bundle has no nose check)
    policy: Policy
    min_face_px: float

    @classmethod
    def from_config(cls, decision: "DecisionConfig", *, threshold: float, nose_threshold: float | None) -> "Rule":
        return cls(threshold=threshold, nose_threshold=nose_threshold, policy=decision.policy,
                   min_face_px=decision.min_face_px)

    def counts(self, result: FaceResult) -> bool:
        """Is this face close enough to count (height ≥ ``min_face_px``)?"""
        return result.face.height >= self.min_face_px

    def refusal(self, result: FaceResult) -> Reason | None:
        """Why this one face keeps the door shut, or None when it may pass."""
        prediction = result.prediction
        if prediction.label == "incorrect_mask":
            return Reason.INCORRECT
        if prediction.label != "with_mask":
            return Reason.NO_MASK
        if prediction.probs["with_mask"] < self.threshold:
            return Reason.UNSURE
        nose = prediction.nose_covered
        if self.nose_threshold is not None and nose is not None and nose < self.nose_threshold:
            return Reason.INCORRECT
        return None

    def grants(self, probs: np.ndarray, nose: np.ndarray | None = None) -> np.ndarray:
        """``refusal(face) is None`` for many faces at once: ``probs`` (n, labels) in ``LABELS`` order,
        ``nose`` p(nose covered) per face (NaN: no landmarks, no check)."""
        grants = (probs.argmax(1) == WITH_MASK) & (probs[:, WITH_MASK] >= self.threshold)
        if nose is not None and self.nose_threshold is not None:
            grants &= ~(nose < self.nose_threshold)
        return grants

    def judge(self, faces: Sequence[FaceResult]) -> Verdict:
        """Grant only if every face that counts may pass. Under ``nearest`` only the largest face that
        counts decides, under ``all`` every one does, and a face clearly refused outweighs one whose
        mask is not clearly seen."""
        counted = tuple(i for i, f in enumerate(faces) if self.counts(f))
        if not counted:
            return Verdict("no_face", Reason.TOO_SMALL if faces else Reason.NO_FACE)
        largest = max(counted, key=lambda i: faces[i].face.width * faces[i].face.height)
        deciding = (largest,) if self.policy == "nearest" else counted
        unsure = None
        for i in deciding:
            reason = self.refusal(faces[i])
            if reason is Reason.NO_MASK and len(deciding) > 1:
                reason = Reason.NOT_EVERYONE
            if reason is Reason.UNSURE:
                unsure = unsure or Verdict("denied", reason, i, counted)
            elif reason is not None:
                return Verdict("denied", reason, i, counted)
        return unsure or Verdict("granted", Reason.GRANTED, largest, counted)


def classify_record(image: str, result: FrameResult, rule: Rule) -> dict:
    """One image's answer: what ``classify --json`` prints and the classify API returns. ``decided_by``
    indexes ``faces``: the face whose answer is the decision (None when no face counts)."""
    verdict = rule.judge(result.faces)
    return {"image": image, "width": result.width, "height": result.height,
            "faces": [face_json(fr) for fr in result.faces], "decision": verdict.outcome,
            "reason": verdict.reason.value, "reason_text": verdict.reason.text, "decided_by": verdict.face}
