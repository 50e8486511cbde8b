"""Shadow run (``maskgate model shadow``): the staged bundle judges live frames beside the active one.

The CLI writes ``<state_dir>/models/shadow.json`` (which bundle, until when, who asked). This bus
subscriber notices it within seconds, loads the staged bundle, and on sampled frames classifies the
same faces again and judges them with a rule built from that bundle's thresholds (the config's
overrides apply to both). It counts every pair of per-frame verdicts by reason, and the decisions two
deciders — one per rule, fed the same frames — would make; the door never sees any of it. The counts
go to ``shadow-result.json`` and the bus (``ShadowCounted``, for MQTT) every few seconds and when the
run ends.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..access.decider import Decider
from ..access.verdict import Rule
from ..bus import EventBus
from ..config import DecisionConfig
from ..errors import MaskgateError
from ..messages import FrameProcessed, ShadowCounted
from ..vision.bundles import Models
from ..vision.classifier import MaskClassifier
from ..vision.core import FaceResult
from ..vision.crop import crop_face, crop_points

log = logging.getLogger(__name__)

REQUEST = "shadow.json"
RESULT = "shadow-result.json"
SAMPLE_SECONDS = 0.2  # at most five frames a second are judged twice
CHECK_SECONDS = 2.0  # how often the request file is looked at
WRITE_SECONDS = 5.0


def write_json(path: Path, data: dict) -> None:
    """Replace ``path`` atomically with ``data`` as JSON."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ShadowRun:
    """One staged bundle judging frames beside the active one, and what it counted."""

    def __init__(self, request: dict, bundle_dir: Path, *, decision: DecisionConfig, active_rule: Rule,
                 rule_for: Callable[[MaskClassifier], Rule]):
        self.request = request
        self.classifier = MaskClassifier(bundle_dir, num_threads=1)
        self.active_rule = active_rule
        self.staged_rule = rule_for(self.classifier)
        self.deciders = {"active": Decider(decision, rule=self.active_rule),
                         "staged": Decider(decision, rule=self.staged_rule)}
        self.frames = 0
        self.verdicts: dict[str, dict[str, int]] = {}
        self.decisions: dict[str, dict[str, int]] = {"active": {}, "staged": {}}

    def judge(self, message: FrameProcessed) -> None:
        image, faces = message.frame.image, message.result.faces
        size, margin = self.classifier.input_size, self.classifier.crop_margin
        crops = [crop_face(image, fr.face.box, size=size, margin=margin) for fr in faces]
        points = [crop_points(np.array(fr.face.keypoints), fr.face.box, image.shape, size=size, margin=margin)
                  for fr in faces]
        staged_faces = [FaceResult(fr.face, p) for fr, p in zip(faces, self.classifier.classify(crops, points))]
        verdicts = {"active": self.active_rule.judge(faces), "staged": self.staged_rule.judge(staged_faces)}
        self.frames += 1
        row = self.verdicts.setdefault(verdicts["active"].reason, {})
        row[verdicts["staged"].reason] = row.get(verdicts["staged"].reason, 0) + 1
        results = {"active": message.result, "staged": replace(message.result, faces=tuple(staged_faces))}
        for side, decider in self.deciders.items():
            outcome = decider.update(results[side], message.frame.time).outcome
            if outcome is not None:
                self.decisions[side][outcome] = self.decisions[side].get(outcome, 0) + 1

    def result(self, *, finished: bool) -> dict:
        changed = sum(n for active, row in self.verdicts.items() for staged, n in row.items() if staged != active)
        return {**self.request, "updated": time.time(), "finished": finished, "frames": self.frames,
                "changed": changed, "verdicts": self.verdicts, "decisions": self.decisions}


class Shadow:
    """Bus subscriber that runs a ShadowRun while ``shadow.json`` asks for one."""

    name = "shadow"

    def __init__(self, state_dir: Path, *, bus: EventBus, decision: DecisionConfig, active_rule: Rule,
                 rule_for: Callable[[MaskClassifier], Rule], sample_seconds: float = SAMPLE_SECONDS):
        self.bus, self.sample_seconds = bus, sample_seconds
        self.decision, self.active_rule, self.rule_for = decision, active_rule, rule_for
        self.models = Models(state_dir)
        self.request_path, self.result_path = self.models.root / REQUEST, self.models.root / RESULT
        self.run: ShadowRun | None = None
        self._seen: float | None = None  # the request file's mtime
        self._checked = self._sampled = self._written = 0.0
        self.subscription = bus.subscribe(FrameProcessed, self.on_frame, name="shadow", latest=True,
                                              when=lambda m: m.time - self._sampled >= self.sample_seconds)

    def on_frame(self, message: FrameProcessed) -> None:
        now = message.time
        self._sampled = now
        if now - self._checked >= CHECK_SECONDS:
            self._checked = now
            self._check_request()
        run = self.run
        if run is None:
            return
        if now >= run.request["until"]:
            self._finish(run)
            return
        if message.result.faces and message.frame.image is not None:
            run.judge(message)
        if now - self._written >= WRITE_SECONDS:
            self._written = now
            self._report(run.result(finished=False))

    def _check_request(self) -> None:
        try:
            mtime = self.request_path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._seen:
            return
        self._seen = mtime
        if self.run is not None:  # replaced or withdrawn
            self._finish(self.run)
        request = read_json(self.request_path) if mtime is not None else None
        if request is None or not isinstance(request.get("until"), (int, float)):
            return
        staged = self.models.path("staged")
        if staged is None or staged.name != request.get("bundle"):
            log.warning("shadow: the staged bundle is not %s; no shadow run", request.get("bundle"))
            return
        try:
            self.run = ShadowRun(request, staged, decision=self.decision, active_rule=self.active_rule,
                                 rule_for=self.rule_for)
        except MaskgateError as exc:
            log.error("shadow: cannot load the staged bundle: %s", exc)
            return
        log.info("shadow: bundle %s judges frames beside the active one until %s", staged.name,
                 time.strftime("%H:%M", time.localtime(request["until"])))

    def _report(self, result: dict) -> None:
        """To shadow-result.json (the CLI, the remote view) and the bus (MQTT)."""
        write_json(self.result_path, result)
        self.bus.publish(ShadowCounted(result, time.time()))

    def _finish(self, run: ShadowRun) -> None:
        self._report(run.result(finished=True))
        self.run = None
        log.info("shadow: run of %s finished: %d frames, %d verdicts changed", run.request.get("bundle"),
                 run.frames, run.result(finished=True)["changed"])

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.subscription.close(timeout=5.0)
        if self.run is not None:
            write_json(self.result_path, self.run.result(finished=False))

    def healthy(self) -> bool:
        return self.subscription.alive

