"""Per-frame verdict: would this one frame let people in? (The decider adds time on top.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from ..vision.classifier import LABELS, MaskClassifier
from ..vision.core import FaceResult, FrameResult, face_json
from .evidence import MAX_MARGIN, TURNED_WEIGHT, UNSURE_WEIGHT, Evidence, FrameEvidence, frontalness, log_odds
from .reasons import Reason

if TYPE_CHECKING:
    from ..config import Config, DecisionConfig

Policy = Literal["nearest", "all"]
TrackAnswer = Literal["grant", "deny", "checking"]
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
    evaluation all judge with it. Built from ``DecisionConfig`` and the bundle's thresholds only.

    One frame: ``refusal`` per face, ``judge`` per frame. Over time: ``evidence`` per frame of a
    person, ``decide`` on all of that person's evidence so far."""

    threshold: float  # p(with_mask) at or above which a with_mask face may pass
    nose_threshold: float | None  # p(nose covered) a passing face needs (None: the bundle has no nose check)
    policy: Policy
    min_face_px: float
    frames_to_decide: float  # a decision needs the evidence of this many clear frames (weight 1 each)
    grant_margin: float  # a person is let in when their frames' weighted mean margin reaches this …
    deny_margin: float  # … and refused when it falls to minus this

    @classmethod
    def from_config(cls, decision: "DecisionConfig", *, threshold: float, nose_threshold: float | None) -> "Rule":
        return cls(threshold=threshold, nose_threshold=nose_threshold, policy=decision.policy,
                   min_face_px=decision.min_face_px, frames_to_decide=decision.frames_to_decide,
                   grant_margin=decision.grant_margin, deny_margin=decision.deny_margin)

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

    def evidence(self, result: FaceResult) -> FrameEvidence:
        """What one frame of a face that counts adds to its person's evidence. The margin is the
        log-odds by which p(with_mask) (and p(nose covered), with a nose check) clear their thresholds;
        the weight grows with the face's size (full at twice ``min_face_px``, 0.7 at it), the detector's score and
        how squarely the face looks at the camera. A frame whose mask is not clearly seen weighs little
        and never pushes towards a refusal by more than half ``deny_margin``."""
        reason = self.refusal(result) or Reason.GRANTED
        prediction, face = result.prediction, result.face
        margin = log_odds(prediction.probs.get("with_mask", 0.0)) - log_odds(self.threshold)
        if self.nose_threshold and prediction.nose_covered is not None:
            margin = min(margin, log_odds(prediction.nose_covered) - log_odds(self.nose_threshold))
        margin = min(max(margin, 0.0), MAX_MARGIN) if reason is Reason.GRANTED else max(min(margin, 0.0), -MAX_MARGIN)
        near = min(max(face.height / self.min_face_px - 1.0, 0.0), 1.0) if self.min_face_px else 1.0
        confident = min(max((face.score - 0.5) / 0.35, 0.25), 1.0)
        weight = (0.7 + 0.3 * near) * confident * max(frontalness(face.keypoints), TURNED_WEIGHT)
        if reason is Reason.UNSURE:
            margin, weight = max(margin, -self.deny_margin / 2), weight * UNSURE_WEIGHT
        return FrameEvidence(margin, weight, reason)

    def decide(self, evidence: Evidence) -> tuple[TrackAnswer, Reason]:
        """One person's answer from all their frames so far: grant or deny once there is enough evidence
        and its weighted mean is clear; else keep checking, saying what the frames mostly show. A grant
        also needs the latest frames to pass on average: a mask pulled down is never let in on the
        strength of the frames before."""
        if evidence.seen >= self.frames_to_decide:
            if evidence.mean >= self.grant_margin and evidence.recent_mean >= 0:
                return "grant", Reason.GRANTED
            if evidence.mean <= -self.deny_margin:
                return "deny", evidence.leaning((Reason.NO_MASK, Reason.INCORRECT)) or Reason.NO_MASK
        return "checking", evidence.leaning() or Reason.UNSURE

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


def decision_rule(config: "Config", classifier: MaskClassifier) -> Rule:
    """The door's rule: the config's decision, the classifier's thresholds unless the config overrides them."""
    return Rule.from_config(config.decision, threshold=_pick(config.classifier.threshold, classifier.threshold),
                            nose_threshold=_pick(config.classifier.nose_threshold, classifier.nose_threshold))


def _pick(override: float | None, bundle: float | None) -> float | None:
    return bundle if override is None else override
