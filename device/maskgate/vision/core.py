"""One frame through the inference core: detect faces, crop them, classify each crop."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np

from .bundles import installed_bundle
from .classifier import MaskClassifier, Prediction, default_bundle_dir
from .crop import crop_face, crop_points
from .detector import Face, FaceDetector
from ..images import as_bgr

if TYPE_CHECKING:
    from ..config import Config


@dataclass(frozen=True)
class FaceResult:
    """A detected face and what the classifier made of it."""

    face: Face
    prediction: Prediction


@dataclass(frozen=True)
class FrameResult:
    """Everything the core found in one frame, with per-stage latency."""

    width: int
    height: int
    faces: tuple[FaceResult, ...]
    detect_ms: float
    classify_ms: float


def face_json(result: FaceResult) -> dict:
    """One face as JSON: the form ``classify --json``, the event log, the web status and the API share."""
    return {
        "box": [round(v, 1) for v in result.face.box],
        "score": round(result.face.score, 4),
        "label": result.prediction.label,
        "confidence": round(result.prediction.confidence, 4),
        "probs": {k: round(v, 4) for k, v in result.prediction.probs.items()},
        **({"nose_covered": round(result.prediction.nose_covered, 4)}
           if result.prediction.nose_covered is not None else {}),
    }


def classifier_bundle(config: "Config", env: Mapping[str, str] = os.environ) -> Path:
    """The door's model: classifier.model_dir, else the bundle ``maskgate model activate`` made active (in the
    state directory ``env`` leads to), else the shipped one."""
    return (config.classifier.model_dir or installed_bundle(config.events.resolved_state_dir(env))
            or default_bundle_dir())


class InferenceCore:
    """Detector + classifier, wired with the crop the model bundle was trained on."""

    def __init__(self, detector: FaceDetector, classifier: MaskClassifier):
        self.detector = detector
        self.classifier = classifier

    @classmethod
    def from_config(cls, config: "Config", *, model_dir: Path | None = None, detector_model: Path | None = None,
                    num_threads: int | None = None) -> "InferenceCore":
        """The core ``config`` describes; the keywords override it (the command line's flags)."""
        detector = config.detector
        return cls(
            FaceDetector(detector_model or detector.model_path, num_threads=num_threads or detector.num_threads,
                         score_threshold=detector.score_threshold, input_size=detector.input_size,
                         first_pass_size=detector.first_pass_size, centre_zoom=detector.centre_zoom,
                         full_pass_every=detector.full_pass_every or config.decision.frames_to_decide,
                         first_pass_min_px=config.decision.min_face_px),
            MaskClassifier(model_dir or classifier_bundle(config),
                           num_threads=num_threads or config.classifier.num_threads),
        )

    def process(self, frame: np.ndarray, *, streaming: bool = False) -> FrameResult:
        """``frame`` through the core; ``streaming``: the next frame of a camera stream (see ``FaceDetector``)."""
        image = as_bgr(frame)
        start = time.perf_counter()
        faces = self.detector.detect(image, streaming=streaming)
        detected = time.perf_counter()
        size, margin = self.classifier.input_size, self.classifier.crop_margin
        crops = [crop_face(image, face.box, size=size, margin=margin) for face in faces]
        keypoints = [crop_points(np.array(face.keypoints), face.box, image.shape, size=size, margin=margin)
                     for face in faces]
        predictions = self.classifier.classify(crops, keypoints)
        classified = time.perf_counter()
        return FrameResult(
            width=image.shape[1],
            height=image.shape[0],
            faces=tuple(FaceResult(f, p) for f, p in zip(faces, predictions)),
            detect_ms=(detected - start) * 1000.0,
            classify_ms=(classified - detected) * 1000.0,
        )
