"""Per-frame verdict: would this one frame let people in? (The decider adds time on top.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..vision.core import FaceResult, FrameResult, face_json

if TYPE_CHECKING:
    from ..config import DecisionConfig

Policy = Literal["nearest", "all"]
GRANTED_REASON = "mask worn"
UNSURE_REASON = "mask not clearly seen: face the camera"


@dataclass(frozen=True)
class Rule:
    """The one decision rule: the door, ``maskgate classify`` and the classify API all judge with it."""

    threshold: float
    policy: Policy = "nearest"
    min_face_px: float = 0.0
    nose_threshold: float | None = None

    @classmethod
    def from_config(cls, decision: "DecisionConfig", *, threshold_override: float | None,
                    bundle_threshold: float, nose_threshold: float | None = None) -> "Rule":
        return cls(threshold=threshold_override or bundle_threshold, policy=decision.policy,
                   min_face_px=decision.min_face_px, nose_threshold=nose_threshold)

    def judge(self, faces) -> "Verdict":
        return judge_frame(faces, threshold=self.threshold, policy=self.policy, min_face_px=self.min_face_px,
                           nose_threshold=self.nose_threshold)


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["granted", "denied", "no_face"]
    reason: str
    unsure: bool = False  # the mask was not clearly seen: this frame neither grants nor counts as a denial


def judge_frame(
    faces: tuple[FaceResult, ...] | list[FaceResult],
    *,
    threshold: float,
    policy: Policy = "all",
    min_face_px: float = 0.0,
    nose_threshold: float | None = None,
) -> Verdict:
    """Grant only if every face that counts is ``with_mask`` with p ≥ ``threshold`` and, where the
    bundle has a nose check (``nose_threshold``), p(nose covered) ≥ ``nose_threshold``.

    Faces smaller than ``min_face_px`` (height) are too far away to count; under ``nearest``
    only the largest face counts, under ``all`` every face does, and a face clearly refused outweighs
    one whose mask is not clearly seen.
    """
    counted = [f for f in faces if f.face.height >= min_face_px]
    if not counted:
        return Verdict("no_face", "no face close enough" if faces else "no face")
    if policy == "nearest":
        counted = [max(counted, key=lambda f: f.face.width * f.face.height)]
    unsure = None
    for result in counted:
        verdict = _refusal(result, threshold=threshold, nose_threshold=nose_threshold, alone=len(counted) == 1)
        if verdict is not None and not verdict.unsure:
            return verdict
        unsure = unsure or verdict
    return unsure or Verdict("granted", GRANTED_REASON)


def _refusal(result: FaceResult, *, threshold: float, nose_threshold: float | None, alone: bool) -> Verdict | None:
    """Why this face keeps the door shut, or None when it may pass."""
    probs = result.prediction.probs
    if result.prediction.label == "incorrect_mask":
        return Verdict("denied", "mask worn incorrectly: cover your nose and mouth")
    if result.prediction.label == "with_mask" and probs["with_mask"] < threshold:
        return Verdict("denied", UNSURE_REASON, unsure=True)
    if probs.get("with_mask", 0.0) < threshold:
        return Verdict("denied", "no mask" if alone else "not everyone wears a mask")
    nose = result.prediction.nose_covered
    if nose_threshold is not None and nose is not None and nose < nose_threshold:
        return Verdict("denied", "mask worn incorrectly: cover your nose and mouth")
    return None


def classify_record(image: str, result: FrameResult, rule: Rule) -> dict:
    """One image's answer: what ``classify --json`` prints and the classify API returns."""
    return {"image": image, "width": result.width, "height": result.height,
            "faces": [face_json(fr) for fr in result.faces], "decision": rule.judge(result.faces).outcome}
