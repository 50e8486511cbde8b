"""The door over time: people simulated in front of the camera, decided by the device's own ``Decider``.

Each measure-only face is shown to the door as a person would be: standing still, turning their head
from side to side, walking up from afar at an angle, and — for faces without a correct mask — trying
for 10 s. Every frame is a fresh camera-like copy of the photo classified by the exported bundle, and
the Decider sees what it sees on the Pi: the face's box, detector score, landmarks and probabilities.
Frames are simulated once; any decision settings are then replayed on them (``outcomes``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from maskgate.access.decider import Decider
from maskgate.access.verdict import Rule
from maskgate.config import DecisionConfig
from maskgate.vision.classifier import LABELS
from maskgate.vision.core import FaceResult, FrameResult
from maskgate.vision.detector import Face

FPS = 10.0
SECONDS = {"still": 3.0, "head_turns": 3.0, "walk_up": 3.0, "keeps_trying": 10.0}
FRAME_W, FRAME_H = 640, 480
TURN_PERIOD_S = 2.0  # head_turns: left, right and back every 2 s, up to ±45°
WALK_S = 2.0  # walk_up: from half of min_face_px to the photo's size in 2 s, facing the camera after 1.5 s
POSES = (-0.5, -0.25, 0.0, 0.25, 0.5)  # head angles (yaw) the photo is shown at
RESOLUTIONS = (0.4, 0.6, 0.8, 1.0)  # … and fractions of its pixels (a person farther away)
VARIANTS = 4  # camera-like copies per head angle and distance


def simulate(classify, crops_bgr: np.ndarray, keypoints: list[np.ndarray | None], face_px: np.ndarray,
             trying: np.ndarray, *, min_face_px: float, crop_margin: float, variants: int = VARIANTS,
             seed: int = 0) -> dict[str, list]:
    """Per scenario, per face: the face as the door sees it in each frame (``FaceResult``, at ``FPS``).
    ``classify`` is ``MaskClassifier.classify``; ``trying`` marks the faces simulated trying for 10 s.
    Each frame's box, detector score and landmarks follow the person's distance and head angle
    exactly; what the classifier sees is one of ``variants`` camera-like copies of the photo made
    for that head angle and distance (rounded to ``POSES``), drawn at random."""
    rng = np.random.default_rng(seed)
    walks: dict[str, list] = {name: [] for name in SECONDS}
    for i in range(len(crops_bgr)):
        pool: dict[tuple[float, float], list] = {}

        def seen(height_px: float, yaw: float) -> FaceResult:
            pose = (min(POSES, key=lambda y: abs(y - yaw)), min(RESOLUTIONS, key=lambda r: abs(r - height_px / face_px[i])))
            made = pool.setdefault(pose, [])
            if len(made) < variants:
                made.append(_variant(classify, crops_bgr[i], keypoints[i], *pose, rng))
            prediction, points = made[rng.integers(len(made))]
            return FaceResult(_face(points, height_px, yaw, rng, side=crops_bgr.shape[1], crop_margin=crop_margin),
                              prediction)

        def walk(seconds: float, pose) -> list[FaceResult]:
            return [seen(*pose(k / FPS, float(face_px[i]))) for k in range(round(seconds * FPS))]

        for name in ("still", "head_turns", "walk_up"):
            walks[name].append(walk(SECONDS[name], SCHEDULES[name](min_face_px)))
        rest = SECONDS["keeps_trying"] - SECONDS["still"] - SECONDS["head_turns"]
        walks["keeps_trying"].append(walks["still"][-1] + walks["head_turns"][-1]
                                     + walk(rest, SCHEDULES["keeps_trying"](min_face_px)) if trying[i] else None)
    return walks


def _still(min_face_px):
    return lambda t, px: (px, 0.0)


def _head_turns(min_face_px):
    return lambda t, px: (px, 0.5 * math.sin(2 * math.pi * t / TURN_PERIOD_S))


def _walk_up(min_face_px):
    start = 0.5 * min_face_px
    return lambda t, px: (start + (px - start) * min(t / WALK_S, 1.0), 0.3 * max(1.0 - t / 1.5, 0.0))


def _fidget(min_face_px):  # keeps trying: moving a little, glancing aside now and then
    return lambda t, px: (px * (1.0 + 0.1 * math.sin(2 * math.pi * t / 3.0)), 0.25 * math.sin(2 * math.pi * t / 2.5))


SCHEDULES = {"still": _still, "head_turns": _head_turns, "walk_up": _walk_up, "keeps_trying": _fidget}


def outcomes(walks: dict[str, list], labels: np.ndarray, *, rule: Rule, decision: DecisionConfig) -> dict:
    """Per scenario and true label: how many faces were granted first, denied first or still being
    checked when their time was up, and the seconds from entering the decision range to the first
    decision (median, 95th percentile; ``all``: every face that was decided). ``keeps_trying``:
    granted means let in at any time within the 10 s."""
    report: dict[str, dict] = {}
    for scenario, faces in walks.items():
        tally: dict[str, dict] = {}
        times: dict[str, list[float]] = {"all": []}
        for frames, label in zip(faces, labels):
            if frames is None:
                continue
            outcome, seconds = _first_decision(frames, rule, decision, until_granted=scenario == "keeps_trying")
            row = tally.setdefault(LABELS[label], {"faces": 0, "granted": 0, "denied": 0, "checking": 0})
            row["faces"] += 1
            row[outcome] += 1
            if seconds is not None:
                times.setdefault(LABELS[label], []).append(seconds)
                times["all"].append(seconds)
        tally["all"] = {"faces": sum(row["faces"] for row in tally.values())}
        for name, row in tally.items():
            row["median_seconds"], row["p95_seconds"] = _quantiles(times.get(name, []))
        report[scenario] = tally
    return report


def _quantiles(times: list[float]) -> tuple[float | None, float | None]:
    if not times:
        return None, None
    return round(float(np.median(times)), 2), round(float(np.percentile(times, 95)), 2)


def _first_decision(frames: list[FaceResult], rule: Rule, decision: DecisionConfig, *,
                    until_granted: bool) -> tuple[str, float | None]:
    """The first decision on one simulated person and how long after entering the decision range it
    came (``until_granted``: the first grant, or denied if refused at any time, else checking)."""
    decider, entered, denied = Decider(decision, rule=rule), None, None
    for k, face in enumerate(frames):
        now = k / FPS
        made = decider.update(FrameResult(FRAME_W, FRAME_H, (face,), 0.0, 0.0), now).outcome
        if entered is None and rule.counts(face):
            entered = now
        if made == "granted" or (made == "denied" and not until_granted):
            return made, now - entered
        if made == "denied" and denied is None:
            denied = now - entered
    return ("denied", denied) if denied is not None else ("checking", None)


def _variant(classify, crop: np.ndarray, points: np.ndarray | None, yaw: float, resolution: float, rng):
    """One camera-like copy of the photo at this head angle and fraction of its pixels, classified."""
    image, moved = jittered(crop, points, rng)
    if yaw:
        image, moved = turned(image, moved, yaw)
    if resolution < 1.0:  # farther away: fewer pixels on the face
        image = seen_at(image, resolution)
    (prediction,) = classify([image], None if moved is None else [moved])
    return prediction, moved


def _face(points: np.ndarray | None, height_px: float, yaw: float, rng, *, side: int, crop_margin: float) -> Face:
    """The detection of a face ``height_px`` tall in the middle of the frame, landmarks from the crop's."""
    scale = height_px * (1 + 2 * crop_margin) / side  # crop pixels → frame pixels
    cx, cy = FRAME_W / 2, FRAME_H / 2
    box = (cx - height_px / 2, cy - height_px / 2, cx + height_px / 2, cy + height_px / 2)
    landmarks = () if points is None else tuple((cx + (x - side / 2) * scale, cy + (y - side / 2) * scale)
                                                for x, y in points)
    score = float(np.clip(0.9 - 0.6 * abs(yaw) + rng.normal(0.0, 0.02), 0.5, 1.0))  # turned: detected less surely
    return Face(box, score, landmarks)


def jittered(crop_bgr: np.ndarray, keypoints: np.ndarray | None, rng) -> tuple[np.ndarray, np.ndarray | None]:
    """One more camera frame of the same face: the crop shifted ≤ 3 px, scaled ±5 %, rolled ±4°,
    light ±10 % and sensor noise; keypoints moved with it."""
    size = crop_bgr.shape[1]
    centre = (size / 2 + rng.uniform(-3, 3), size / 2 + rng.uniform(-3, 3))
    warp = cv2.getRotationMatrix2D(centre, rng.uniform(-4, 4), rng.uniform(0.95, 1.05))
    image = cv2.warpAffine(crop_bgr, warp, (size, size), borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    image = image * rng.uniform(0.9, 1.1) + rng.uniform(-8, 8) + rng.normal(0.0, 3.0, image.shape)
    moved = None if keypoints is None else (np.c_[keypoints, np.ones(len(keypoints))] @ warp.T).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), moved


def turned(crop_bgr: np.ndarray, keypoints: np.ndarray | None, yaw: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The face turned sideways by ``yaw`` (0.5 ≈ 45°): the far side of the crop recedes and the nose
    tip moves off the eyes' midpoint by ``yaw`` eye distances, as YuNet's landmarks do on a turned head."""
    size = float(crop_bgr.shape[1])
    far, shrink = 0.35 * abs(yaw) * size, 0.2 * abs(yaw) * size
    src = np.float32([(0, 0), (size, 0), (size, size), (0, size)])
    dst = np.float32([(0, 0), (size - far, shrink), (size - far, size - shrink), (0, size)] if yaw > 0 else
                     [(far, shrink), (size, 0), (size, size), (far, size - shrink)])
    warp = cv2.getPerspectiveTransform(src, dst)
    image = cv2.warpPerspective(crop_bgr, warp, crop_bgr.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    if keypoints is None:
        return image, None
    moved = cv2.perspectiveTransform(keypoints[None].astype(np.float32), warp)[0]
    moved[2, 0] += yaw * abs(moved[1, 0] - moved[0, 0])
    return image, moved


def seen_at(crop_bgr: np.ndarray, fraction: float) -> np.ndarray:
    """The crop as a camera would see the face with ``fraction`` of the pixels across (then scaled back up)."""
    size = crop_bgr.shape[1]
    small = max(8, round(size * fraction))
    return cv2.resize(cv2.resize(crop_bgr, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                      interpolation=cv2.INTER_LINEAR)


SETTINGS = ("frames_to_decide", "grant_margin", "deny_margin", "evidence_half_life_seconds")
CANDIDATES = ([{"grant_margin": g} for g in (0.0, 0.25, 0.5, 1.0)] + [{"frames_to_decide": f} for f in (2, 5)]
              + [{"evidence_half_life_seconds": h} for h in (0.75, 3.0)] + [{"deny_margin": 0.5}])


def measure(classify, crops_bgr: np.ndarray, keypoints: list[np.ndarray | None], face_px: np.ndarray,
            labels: np.ndarray, *, rule: Rule, decision: DecisionConfig, crop_margin: float) -> dict:
    """The report's door over time: the outcomes at ``decision`` and the sweep over ``CANDIDATES``."""
    walks = simulate(classify, crops_bgr, keypoints, face_px, labels != LABELS.index("with_mask"),
                     min_face_px=decision.min_face_px, crop_margin=crop_margin)
    return {"fps": FPS, "seconds": SECONDS, "min_face_px": decision.min_face_px,
            "decision": {k: getattr(decision, k) for k in SETTINGS}, "outcomes": outcomes(walks, labels, rule=rule, decision=decision),
            "sweep": sweep(walks, labels, rule=rule, decision=decision, candidates=CANDIDATES)}


def sweep(walks: dict[str, list], labels: np.ndarray, *, rule: Rule, decision: DecisionConfig,
          candidates: list[dict]) -> list[dict]:
    """The headline figures (``summary``) for each of ``candidates`` (changes to ``decision``)."""
    rows = []
    for change in candidates:
        changed = decision.model_copy(update=change)
        changed_rule = Rule.from_config(changed, threshold=rule.threshold, nose_threshold=rule.nose_threshold)
        rows.append({"decision": {k: getattr(changed, k) for k in SETTINGS},
                     **summary(outcomes(walks, labels, rule=changed_rule, decision=changed))})
    return rows


def summary(by_scenario: dict) -> dict:
    """What the targets are about: masked people granted first (per scenario), people without a correct
    mask let in while trying for 10 s, and the time to a decision standing still."""
    def share(scenario, label, outcome="granted"):
        row = by_scenario.get(scenario, {}).get(label)
        return row[outcome] / row["faces"] if row and row["faces"] else None

    return {"masked_granted_first": {s: share(s, "with_mask") for s in ("still", "head_turns", "walk_up")},
            "let_in_trying": {label: share("keeps_trying", label) for label in ("without_mask", "incorrect_mask")},
            "seconds": {s: [by_scenario[s]["all"]["median_seconds"], by_scenario[s]["all"]["p95_seconds"]]
                        for s in ("still", "head_turns", "walk_up") if s in by_scenario}}


def report_lines(over_time: dict) -> list[str]:
    """The report's section: the rule in plain words, the outcomes per scenario, the sweep."""
    d = over_time["decision"]
    lines = ["", "### The door over time", "",
             "Each face in view is followed from frame to frame as one person, and each person is judged on all "
             "of their frames so far: every frame adds how far p(with_mask) and p(nose covered) clear their "
             "thresholds (in log-odds), weighted by the face's size, the detector's confidence and how squarely "
             "it faces the camera; a frame whose mask is not clearly seen counts little. The door opens once "
             f"there is the evidence of {d['frames_to_decide']:g} clear frames and the weighted mean is at least "
             f"{d['grant_margin']:g}, and refuses when it is at most −{d['deny_margin']:g}; older frames fade "
             f"(half after {d['evidence_half_life_seconds']:g} s).", "",
             f"Simulated at {over_time['fps']:g} frames/s on the measure-only faces ≥ {over_time['min_face_px']:g} px: "
             "each frame a camera-like copy of the photo (≤ 3 px shift, ±5 % scale, ±4° roll, ±10 % light, sensor "
             "noise) through the int8 bundle and the device's own `Decider`. *still*: 3 s facing the camera; "
             "*head turns*: 3 s turning left and right up to about 45° (the face warped, the landmarks and the "
             "detector's confidence following); *walk-up*: 3 s from half of `min_face_px` to the photo's size, "
             "at an angle at first; *keeps trying*: 10 s (still, head turns, then fidgeting) for faces without a "
             "correct mask — *granted* there means let in at any time. Times: from entering the decision range "
             "to the first decision." + (f" {over_time['note']}" if over_time.get("note") else ""), "",
             "| scenario | true label | faces | granted first | denied first | still checking | "
             "time to decide, median / p95 |", "|---|---|---|---|---|---|---|"]
    for scenario, tally in over_time["outcomes"].items():
        for label, row in tally.items():
            if label == "all" or not row["faces"]:
                continue
            n = row["faces"]
            lines.append(f"| {scenario.replace('_', ' ')} | {label} | {n} | " + " | ".join(
                f"{100 * row[o] / n:.1f} %" for o in ("granted", "denied", "checking"))
                + f" | {_seconds(row)} |")
    lines += ["", "The same figures for other settings (the shipped ones are chosen from this table):", "",
              "| frames to decide | grant margin | deny margin | half-life | masked granted first: still / head "
              "turns / walk-up | let in while trying 10 s: bare / wrongly worn | time to decide standing still, "
              "median / p95 |", "|---|---|---|---|---|---|---|"]
    for row in over_time["sweep"]:
        s = row["decision"]
        masked = " / ".join(_pct(v) for v in row["masked_granted_first"].values())
        trying = " / ".join(_pct(v) for v in row["let_in_trying"].values())
        median, p95 = row["seconds"].get("still", [None, None])
        lines.append(f"| {s['frames_to_decide']:g} | {s['grant_margin']:g} | {s['deny_margin']:g} | "
                     f"{s['evidence_half_life_seconds']:g} s | {masked} | {trying} | {_secs(median)} / {_secs(p95)} |")
    return lines


def _seconds(row: dict) -> str:
    return f"{_secs(row['median_seconds'])} / {_secs(row['p95_seconds'])}"


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"
