"""Collection (``collect:``): a bus subscriber that keeps the faces of chosen frames for labelling.

It judges each frame with the door's own rule and keeps the faces that counted, as the exact crop the
model saw with its probabilities: ``unsure`` frames (the mask not clearly seen), ``denied`` (those and
every refusal) or ``all``. At most one frame every ``every_seconds``; the retention and the size cap are
enforced on every save and at start, also while collection is off.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..access.verdict import Rule
from ..bus import EventBus
from ..config import CollectConfig
from ..messages import FrameProcessed
from ..vision.classifier import MaskClassifier
from ..vision.bundles import bundle_id
from ..vision.crop import crop_face, crop_points
from .faces import FOLDER, FaceStore

log = logging.getLogger(__name__)


class Collector:
    """Keeps faces from ``FrameProcessed`` messages in a FaceStore."""

    name = "collect"

    def __init__(self, config: CollectConfig, store: FaceStore, *, bus: EventBus, rule: Rule,
                 classifier: MaskClassifier):
        self.config, self.store = config, store
        self.rule = rule
        self.size, self.margin = classifier.input_size, classifier.crop_margin
        self.model = bundle_id(classifier.bundle_dir)
        self._next = 0.0
        self.subscription = bus.subscribe(FrameProcessed, self.keep, name="collect", latest=True,
                                              when=lambda m: bool(m.result.faces) and m.time >= self._next)

    def keep(self, message: FrameProcessed) -> int:
        """Store the faces of this frame if the config keeps it; returns how many were stored."""
        if message.frame.image is None or message.time < self._next:
            return 0
        verdict = self.rule.judge(message.result.faces)
        wanted = {"unsure": verdict.unsure, "denied": verdict.outcome == "denied",
                  "all": verdict.outcome != "no_face"}[self.config.keep]
        if not wanted:
            return 0
        self._next = message.time + self.config.every_seconds
        image = message.frame.image
        counted = [message.result.faces[i] for i in verdict.counted]
        for fr in counted:
            crop = crop_face(image, fr.face.box, size=self.size, margin=self.margin)
            points = crop_points(np.array(fr.face.keypoints), fr.face.box, image.shape, size=self.size,
                                 margin=self.margin)
            self.store.add(crop, when=message.time, outcome=verdict.outcome, reason=verdict.reason.value,
                           probs={k: round(v, 4) for k, v in fr.prediction.probs.items()},
                           nose_covered=fr.prediction.nose_covered, keypoints=points, model=self.model)
        self.store.enforce(retention_days=self.config.retention_days, max_images=self.config.max_images)
        return len(counted)

    def start(self) -> None:
        log.info("collect: keeping %s faces in %s (%g days, at most %d)", self.config.keep, self.store.root,
                 self.config.retention_days, self.config.max_images)

    def stop(self) -> None:
        self.subscription.close(timeout=5.0)
        self.store.close()

    def healthy(self) -> bool:
        return self.subscription.alive


def build(config: CollectConfig, state_dir: Path, *, bus: EventBus, rule: Rule,
          classifier: MaskClassifier) -> Collector | None:
    """On: the Collector. Off: only the retention, applied once to what an earlier run kept."""
    if not config.enabled:
        if (state_dir / FOLDER).is_dir():
            store = FaceStore(state_dir)
            store.enforce(retention_days=config.retention_days, max_images=config.max_images)
            store.close()
        return None
    store = FaceStore(state_dir)
    store.enforce(retention_days=config.retention_days, max_images=config.max_images, now=time.time())
    return Collector(config, store, bus=bus, rule=rule, classifier=classifier)
