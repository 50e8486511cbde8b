"""The door over time on whole camera frames: scene photos shown to the daemon's own pipeline as streams.

``door.py`` simulates people from face crops with the detector's answer made up; here the detector is
real. Each measure-only scene photo whose largest face is door-sized (≥ ``decision.min_face_px``) is put
on a 640×480 frame (``on_door_frame``) and shown for 3 s at 10 fps, each frame shifted by a few pixels,
lit a little differently and with sensor noise, through the device's ``InferenceCore`` (detector with
the given first pass, crop, classifier and nose check) and its ``Decider``. The stream's label is its
largest face's (the nearest person, whom the default policy decides on). It measures what a detector
setting does to the door's decisions: granted, denied or still checking after 3 s, and how soon.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from maskgate.access.decider import Decider
from maskgate.access.verdict import Rule, decision_rule
from maskgate.config import Config, changed
from maskgate.vision.classifier import LABELS, default_bundle_dir
from maskgate.vision.core import InferenceCore

from .detectors import on_door_frame, scene_photos, stream_variant_name
from .errors import DataError

STREAM_SETS = ("research/ilc2021",)  # measure-only: never trained on
SECONDS, FPS = 3.0, 10.0
SHIFT_PX, LIGHT, NOISE = 4, 0.1, 3.0  # per frame: shift up to ±4 px, brightness ±10 %, noise σ 3 grey levels


def door_streams(data: Path, *, first_pass_sizes: list[int | None], model_dir: Path | None = None,
                 seed: int = 0, every: int = 1) -> dict[str, list[dict]]:
    """Per detector setting (``None``: the full look on every frame; named as ``side-by-side`` names it), one
    row per stream: its label, the door's first decision (``granted``, ``denied`` or ``checking``) and the
    seconds from the first frame with a door-sized face to that decision. Every setting sees the same frames
    (the same ``seed``), through the core and rule the daemon builds from its default config."""
    missing = [name for name in STREAM_SETS if not (data / name / "annotations").is_dir()]
    if missing:
        raise DataError(f"{data / missing[0]}: no annotations/ (the measure-only scene photos)")
    default = Config()
    streams = list(_door_sized(data, every, default.decision.min_face_px))
    results: dict[str, list[dict]] = {}
    for first in first_pass_sizes:
        config = changed(default, detector={"first_pass_size": first})
        core = InferenceCore.from_config(config, model_dir=model_dir or default_bundle_dir())
        rule = decision_rule(config, core.classifier)
        rng = np.random.default_rng(seed)
        results[stream_variant_name(first, round(core.detector.full_pass_every))] = [
            {"label": label, **_first_decision(core, Decider(config.decision, rule=rule), rule, frame, rng)}
            for label, frame in streams]
    return results


def _door_sized(data: Path, every: int, min_face_px: float):
    for _, image, boxes in scene_photos(data, every, sets=STREAM_SETS):
        frame, moved = on_door_frame(image, boxes)
        label, box = max(moved, key=lambda item: item[1][3] - item[1][1])
        if box[3] - box[1] >= min_face_px:
            yield label, frame


def _first_decision(core: InferenceCore, decider: Decider, rule: Rule, frame: np.ndarray, rng) -> dict:
    entered = None
    for k in range(round(SECONDS * FPS)):
        now = k / FPS
        result = core.process(jittered(frame, rng), streaming=True)
        if entered is None and any(rule.counts(face) for face in result.faces):
            entered = now
        outcome = decider.update(result, now).outcome
        if outcome is not None:
            return {"outcome": outcome, "seconds": round(now - entered, 2)}
    return {"outcome": "checking", "seconds": None}


def jittered(frame: np.ndarray, rng) -> np.ndarray:
    """One camera frame of a person standing still: a few pixels' sway, the light, sensor noise."""
    dx, dy = rng.uniform(-SHIFT_PX, SHIFT_PX, size=2)
    moved = cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), (frame.shape[1], frame.shape[0]),
                           borderMode=cv2.BORDER_REPLICATE)
    lit = moved.astype(np.float32) * rng.uniform(1 - LIGHT, 1 + LIGHT) + rng.normal(0, NOISE, frame.shape)
    return np.clip(lit, 0, 255).astype(np.uint8)


def markdown(results: dict[str, list[dict]]) -> str:
    """Per setting: granted / denied / still checking per label, time to decide, and the masked people
    whose outcome differs from the first setting's (the same frames)."""
    reference = next(iter(results.values()))
    lines = ["| detector for camera frames | masked: granted / denied / checking | bare: granted | "
             "incorrect: granted | decided in, median / p95 | masked granted only by the first row / only by this |",
             "|---|---|---:|---:|---:|---:|"]
    for name, rows in results.items():
        masked = _shares(rows, "with_mask")
        times = [row["seconds"] for row in rows if row["seconds"] is not None]
        lost, won = _granted_by_one_only(reference, rows), _granted_by_one_only(rows, reference)
        lines.append(f"| {name} | {masked['granted']} / {masked['denied']} / {masked['checking']} % | "
                     f"{_shares(rows, 'without_mask')['granted']} % | {_shares(rows, 'incorrect_mask')['granted']} % | "
                     f"{_quantile(times, 50)} / {_quantile(times, 95)} s | {lost} / {won} |")
    counts = ", ".join(f"{sum(row['label'] == label for row in reference)} {label}" for label in LABELS)
    return f"Streams of {SECONDS:g} s at {FPS:g} fps ({counts}):\n\n" + "\n".join(lines) + "\n"


def _granted_by_one_only(these: list[dict], others: list[dict]) -> int:
    """Masked streams granted in ``these`` and not in ``others`` (the same streams, in order)."""
    return sum(a["outcome"] == "granted" != b["outcome"] for a, b in zip(these, others) if a["label"] == "with_mask")


def _shares(rows: list[dict], label: str) -> dict[str, float | None]:
    outcomes = [row["outcome"] for row in rows if row["label"] == label]
    return {o: round(100.0 * outcomes.count(o) / len(outcomes), 1) if outcomes else None
            for o in ("granted", "denied", "checking")}


def _quantile(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.1f}" if values else "–"
