"""Loads prepared crops and adds the documented synthetic training examples."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskgate.classifier import LABELS

from .errors import DataError


@dataclass
class Split:
    images: np.ndarray  # N×S×S×3 uint8 BGR, exactly as maskgate.crop.crop_face makes them
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


def add_synthetic(train: Split, *, seed: int, incorrect_per_without: float = 0.35, hands: int = 300) -> tuple[Split, dict]:
    """Synthetic examples, training split only (evaluation always uses real photos):

    - ``incorrect_mask``: a mask drawn below the nose of a real ``without_mask`` face, placed with
      the detector's nose and mouth keypoints (real incorrect examples are few and small);
    - ``without_mask``: a skin-coloured "hand" over the mouth of real faces, so covering the mouth
      with a hand is not mistaken for a mask.
    """
    rng = np.random.default_rng(seed)
    without = [i for i, r in enumerate(train.rows) if r["label"] == "without_mask" and r["nose_y"] not in ("", "nan")]
    chosen = rng.choice(without, size=int(len(without) * incorrect_per_without), replace=False) if without else []
    incorrect = [_mask_below_nose(train.images[i], float(train.rows[i]["nose_y"]), float(train.rows[i]["mouth_y"]), rng)
                 for i in chosen]
    hand_idx = rng.choice(without, size=min(hands, len(without)), replace=False) if without else []
    hand = [_hand_over_mouth(train.images[i], float(train.rows[i]["mouth_y"]), rng) for i in hand_idx]
    extra = incorrect + hand
    if not extra:
        return train, {"synthetic_incorrect_mask": 0, "synthetic_hand_over_mouth": 0}
    labels = [LABELS.index("incorrect_mask")] * len(incorrect) + [LABELS.index("without_mask")] * len(hand)
    merged = Split(np.concatenate([train.images, np.stack(extra)]), np.concatenate([train.labels, labels]),
                   train.rows + [{"source": "synthetic"}] * len(extra))
    return merged, {"synthetic_incorrect_mask": len(incorrect), "synthetic_hand_over_mouth": len(hand)}


MASK_COLOURS = [(235, 215, 170), (245, 245, 245), (40, 40, 40), (200, 160, 230), (170, 200, 120)]  # BGR


def _mask_below_nose(crop: np.ndarray, nose_y: float, mouth_y: float, rng) -> np.ndarray:
    """A mask whose top edge sits between nose and mouth (nose uncovered), or under the mouth."""
    out = crop.copy()
    s = crop.shape[0]
    top = nose_y + (mouth_y - nose_y) * rng.uniform(0.3, 1.3)
    half_w = s * rng.uniform(0.22, 0.3)
    cx = s / 2 + rng.uniform(-0.03, 0.03) * s
    bottom = min(s - 1.0, top + s * rng.uniform(0.25, 0.35))
    pts = np.array([(cx - half_w, top), (cx + half_w, top), (cx + half_w * 0.9, bottom - s * 0.08),
                    (cx, bottom), (cx - half_w * 0.9, bottom - s * 0.08)], np.float32)
    colour = MASK_COLOURS[rng.integers(len(MASK_COLOURS))]
    cv2.fillPoly(out, [np.round(pts).astype(np.int32)], colour, lineType=cv2.LINE_AA)
    return out


def _hand_over_mouth(crop: np.ndarray, mouth_y: float, rng) -> np.ndarray:
    out = crop.copy()
    s = crop.shape[0]
    skin = tuple(int(c) for c in np.array([120, 150, 200]) * rng.uniform(0.5, 1.15))  # BGR skin tones
    centre = (int(s / 2 + rng.uniform(-0.05, 0.05) * s), int(mouth_y))
    axes = (int(s * rng.uniform(0.2, 0.3)), int(s * rng.uniform(0.1, 0.16)))
    cv2.ellipse(out, centre, axes, float(rng.uniform(-20, 20)), 0, 360, skin, -1, cv2.LINE_AA)
    return out
