"""Loads prepared crops and adds the documented synthetic training examples."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from maskgate.vision.classifier import LABELS, NOSE_LABELS

from .errors import DataError


@dataclass
class Split:
    images: np.ndarray  # N×S×S×3 uint8 BGR, exactly as maskgate.vision.crop.crop_face makes them
    labels: np.ndarray  # N int, index into LABELS
    rows: list[dict]


def load_prepared(prepared_dir: Path, *, exclude_sources: tuple[str, ...] = ()) -> dict[str, Split]:
    """The train/val/test splits written by ``prepare``, and ``heldout``: the measure-only sources."""
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
    for name in ("train", "val", "test", "heldout"):
        idx = [i for i, r in enumerate(rows) if r["split"] == name and r["source"] not in exclude_sources]
        splits[name] = Split(images[idx], np.array([LABELS.index(rows[i]["label"]) for i in idx], np.int64),
                             [rows[i] for i in idx])
    return splits


def manifest_hash(prepared_dir: Path) -> str:
    return hashlib.sha256((prepared_dir / "manifest.csv").read_bytes()).hexdigest()


def subsample(split: Split, *, per_class: int, seed: int) -> Split:
    """At most ``per_class`` crops of each label (a shorter run on 2 cores; the rare class keeps all)."""
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(split.labels == k))[:per_class] for k in range(len(LABELS))])
    keep.sort()
    return Split(split.images[keep], split.labels[keep], [split.rows[i] for i in keep])


def add_synthetic(train: Split, *, seed: int, templates: Path | None, incorrect_per_bare: float = 1.0,
                  correct_per_bare: float = 0.5, hands: int = 300) -> tuple[Split, dict]:
    """Synthetic examples, training split only (evaluation always uses real photos).

    Real ``without_mask`` faces with five landmarks wear a MaskTheFace template (``templates``, see
    ``synthetic.py``; None skips it): worn wrongly (below the nose, under the chin) → ``incorrect_mask``,
    the scarce class; worn correctly → ``with_mask``, adding mask types, colours and textures the real
    photos lack. A placement whose coverage record contradicts it is dropped. Plus a skin-coloured
    "hand" over the mouth → ``without_mask``: a hand is not a mask.
    """
    from .synthetic import MaskMaker

    rng = np.random.default_rng(seed)
    bare = [i for i, r in enumerate(train.rows) if r["label"] == "without_mask" and r.get("landmarks")]
    images, labels, rows = [], [], []
    if templates is not None and bare:
        maker = MaskMaker(templates)
        jobs = [(i, str(rng.choice(["below_nose", "chin"], p=[0.65, 0.35])))
                for i in rng.choice(bare, size=int(len(bare) * incorrect_per_bare), replace=incorrect_per_bare > 1)]
        jobs += [(i, "correct") for i in rng.choice(bare, size=int(len(bare) * correct_per_bare), replace=False)]
        for i, placement in jobs:
            masked = maker.put_on(train.images[i], landmarks_of(train.rows[i]), placement, rng)
            if masked.consistent:
                images.append(masked.image)
                labels.append(masked.label)
                rows.append({"source": "synthetic", "label": masked.label, "made_from": train.rows[i]["path"],
                             "placement": placement, "template": masked.template})
    for i in rng.choice(bare, size=min(hands, len(bare)), replace=False) if bare else []:
        mouth_y = float(landmarks_of(train.rows[i])[3:, 1].mean())
        images.append(_hand_over_mouth(train.images[i], mouth_y, rng))
        labels.append("without_mask")
        rows.append({"source": "synthetic", "label": "without_mask", "made_from": train.rows[i]["path"],
                     "placement": "hand"})
    counts = {"synthetic_incorrect_mask": labels.count("incorrect_mask"),
              "synthetic_with_mask": labels.count("with_mask"),
              "synthetic_hand_over_mouth": labels.count("without_mask")}
    if not images:
        return train, counts
    merged = Split(np.concatenate([train.images, np.stack(images)]),
                   np.concatenate([train.labels, [LABELS.index(label) for label in labels]]), train.rows + rows)
    return merged, counts


def nose_patches(split: Split, *, seed: int, templates: Path | None, size: int) -> tuple[Split, dict]:
    """What the nose check learns from: the nose patch (``maskgate.vision.crop.nose_patch``) of every crop
    with five landmarks, labelled by ``NOSE_LABELS`` (with_mask → nose covered; without_mask and
    incorrect_mask → nose out), plus, with ``templates``, every real bare face wearing a synthetic mask
    once correctly (covered) and once wrongly (under or below the nose, or under the chin: out)."""
    from maskgate.vision.crop import nose_patch

    from .synthetic import MaskMaker

    covered, out = NOSE_LABELS.index("nose_covered"), NOSE_LABELS.index("nose_out")
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for image, label, row in zip(split.images, split.labels, split.rows):
        if row.get("landmarks"):
            images.append(nose_patch(image, landmarks_of(row), size=size))
            labels.append(covered if LABELS[label] == "with_mask" else out)
    real = len(labels)
    if templates is not None:
        maker = MaskMaker(templates)
        for image, label, row in zip(split.images, split.labels, split.rows):
            if LABELS[label] != "without_mask" or not row.get("landmarks"):
                continue
            points = landmarks_of(row)
            wrong = str(rng.choice(["under_nose", "below_nose", "chin"], p=[0.35, 0.4, 0.25]))
            for placement in ("correct", wrong):
                masked = maker.put_on(image, points, placement, rng)
                if masked.consistent:
                    images.append(nose_patch(masked.image, points, size=size))
                    labels.append(covered if placement == "correct" else out)
    if not images:
        raise DataError("no crops with five landmarks for the nose check")
    counts = {"nose_real_patches": real, "nose_synthetic_patches": len(labels) - real}
    return Split(np.stack(images), np.array(labels, np.int64), [{} for _ in labels]), counts


def landmarks_of(row: dict) -> np.ndarray:
    """The manifest's five landmarks (right eye, left eye, nose, mouth right, mouth left) in crop pixels."""
    return np.array(row["landmarks"].split(), np.float32).reshape(5, 2)


def _hand_over_mouth(crop: np.ndarray, mouth_y: float, rng) -> np.ndarray:
    out = crop.copy()
    s = crop.shape[0]
    skin = tuple(int(c) for c in np.array([120, 150, 200]) * rng.uniform(0.5, 1.15))  # BGR skin tones
    centre = (int(s / 2 + rng.uniform(-0.05, 0.05) * s), int(mouth_y))
    axes = (int(s * rng.uniform(0.2, 0.3)), int(s * rng.uniform(0.1, 0.16)))
    cv2.ellipse(out, centre, axes, float(rng.uniform(-20, 20)), 0, 360, skin, -1, cv2.LINE_AA)
    return out
