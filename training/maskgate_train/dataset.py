"""Loads prepared crops and adds the documented synthetic training examples."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskgate.vision.classifier import LABELS

from .errors import DataError


@dataclass
class Split:
    images: np.ndarray  # N×S×S×3 uint8 BGR, exactly as maskgate.vision.crop.crop_face makes them
    labels: np.ndarray  # N int, index into LABELS
    rows: list[dict]


def load_prepared(prepared_dir: Path, *, exclude_sources: tuple[str, ...] = ()) -> dict[str, Split]:
    """The train/val/test splits written by ``prepare``."""
    npz, manifest = prepared_dir / "crops.npz", prepared_dir / "manifest.csv"
    for path in (npz, manifest):
        if not path.is_file():
            raise DataError(f"{path}: not found (run 'maskgate-train prepare' first)")
    images = np.load(npz)["images"]
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(images):
        raise DataError(f"{manifest}: {len(rows)} rows but {len(images)} crops in {npz.name}")
    splits = {}
    for name in ("train", "val", "test"):
        idx = [i for i, r in enumerate(rows) if r["split"] == name and r["source"] not in exclude_sources]
        splits[name] = Split(images[idx], np.array([LABELS.index(rows[i]["label"]) for i in idx], np.int64),
                             [rows[i] for i in idx])
    return splits


def manifest_hash(prepared_dir: Path) -> str:
    return hashlib.sha256((prepared_dir / "manifest.csv").read_bytes()).hexdigest()


def add_synthetic(train: Split, *, seed: int, masks_per_without: float = 0.35, hands: int = 300) -> tuple[Split, dict]:
    """Synthetic examples, training split only (evaluation always uses real photos).

    A real mask (the lower face of a real ``with_mask`` crop) is cut out and put on a real
    ``without_mask`` face twice, placed with the detector's nose and mouth keypoints:
    - pulled below the nose → ``incorrect_mask`` (real incorrect examples are few and small);
    - the same mask over the nose → ``with_mask``, so the pair differs only in where the mask sits
      and the model learns to look at the nose, not at pasting artefacts.
    Plus a skin-coloured "hand" over the mouth → ``without_mask``: a hand is not a mask.
    """
    rng = np.random.default_rng(seed)
    without, donors = _with_keypoints(train, "without_mask"), _with_keypoints(train, "with_mask")
    if not without or not donors:
        return train, {"synthetic_incorrect_mask": 0, "synthetic_with_mask": 0, "synthetic_hand_over_mouth": 0}
    incorrect, covered, made_from = [], [], []
    for i in rng.choice(without, size=max(1, int(len(without) * masks_per_without)), replace=False):
        donor = int(rng.choice(donors))
        texture = _mask_texture(train.images[donor], *_nose_mouth(train.rows[donor]))
        nose_y, mouth_y = _nose_mouth(train.rows[i])
        incorrect.append(_put_mask(train.images[i], texture, nose_y, mouth_y, below_nose=True, rng=rng))
        covered.append(_put_mask(train.images[i], texture, nose_y, mouth_y, below_nose=False, rng=rng))
        made_from.append(train.rows[i]["path"])
    hand_idx = rng.choice(without, size=min(hands, len(without)), replace=False)
    hand = [_hand_over_mouth(train.images[i], _nose_mouth(train.rows[i])[1], rng) for i in hand_idx]
    labels = ["incorrect_mask"] * len(incorrect) + ["with_mask"] * len(covered) + ["without_mask"] * len(hand)
    rows = [{"source": "synthetic", "label": label, "made_from": path}
            for label, path in zip(labels, made_from + made_from + [train.rows[i]["path"] for i in hand_idx])]
    merged = Split(np.concatenate([train.images, np.stack(incorrect + covered + hand)]),
                   np.concatenate([train.labels, [LABELS.index(label) for label in labels]]), train.rows + rows)
    return merged, {"synthetic_incorrect_mask": len(incorrect), "synthetic_with_mask": len(covered),
                    "synthetic_hand_over_mouth": len(hand)}


def _with_keypoints(split: Split, label: str) -> list[int]:
    return [i for i, r in enumerate(split.rows) if r["label"] == label and r["nose_y"] not in ("", "nan")]


def _nose_mouth(row: dict) -> tuple[float, float]:
    nose_y, mouth_y = float(row["nose_y"]), float(row["mouth_y"])
    return nose_y, max(mouth_y, nose_y + 1.0)


def _mask_texture(crop: np.ndarray, nose_y: float, mouth_y: float) -> np.ndarray:
    """The mask of a real with_mask crop: from the nose to below the mouth, across the cheeks."""
    s = crop.shape[0]
    top = int(np.clip(nose_y, 0, s - 2))
    bottom = int(np.clip(mouth_y + 1.2 * (mouth_y - nose_y), top + 2, s))
    return crop[top:bottom, int(s * 0.25):int(s * 0.75)]


def _put_mask(crop: np.ndarray, texture: np.ndarray, nose_y: float, mouth_y: float, *, below_nose: bool, rng) -> np.ndarray:
    """Paste ``texture`` in a mask outline whose top edge is above the nose or below it."""
    out = crop.copy()
    s = crop.shape[0]
    gap = mouth_y - nose_y
    height = gap * rng.uniform(2.8, 3.4)  # bridge of the nose to the chin
    top = nose_y + gap * (rng.uniform(0.3, 1.2) if below_nose else -rng.uniform(0.6, 1.0))
    bottom = min(s - 1.0, top + height)
    half_w = s * rng.uniform(0.22, 0.3)
    cx = s / 2 + rng.uniform(-0.03, 0.03) * s
    outline = np.array([(cx - half_w, top + 0.1 * height), (cx, top), (cx + half_w, top + 0.1 * height),
                        (cx + half_w * 0.9, bottom - 0.25 * height), (cx, bottom),
                        (cx - half_w * 0.9, bottom - 0.25 * height)], np.float32)
    x0, y0 = int(max(cx - half_w, 0)), int(max(top, 0))
    x1, y1 = int(min(cx + half_w, s - 1)) + 1, int(bottom) + 1
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    alpha = np.zeros((s, s), np.float32)
    cv2.fillPoly(alpha, [np.round(outline).astype(np.int32)], 1.0, lineType=cv2.LINE_AA)
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0)[y0:y1, x0:x1, None]
    patch = cv2.resize(texture, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.round(alpha * patch + (1 - alpha) * region).astype(np.uint8)
    return out


def _hand_over_mouth(crop: np.ndarray, mouth_y: float, rng) -> np.ndarray:
    out = crop.copy()
    s = crop.shape[0]
    skin = tuple(int(c) for c in np.array([120, 150, 200]) * rng.uniform(0.5, 1.15))  # BGR skin tones
    centre = (int(s / 2 + rng.uniform(-0.05, 0.05) * s), int(mouth_y))
    axes = (int(s * rng.uniform(0.2, 0.3)), int(s * rng.uniform(0.1, 0.16)))
    cv2.ellipse(out, centre, axes, float(rng.uniform(-20, 20)), 0, 360, skin, -1, cv2.LINE_AA)
    return out
