"""A site's own faces in training (``maskgate-train all --site-data site.tar``), and the guard on the result.

``maskgate collect export`` writes site.tar: ``crops/<id>.jpg`` (the exact crop the door's model saw),
``labels.csv`` and ``manifest.json``. ``add_site_data`` appends its faces to the prepared crops as the
source ``site``: a held-out part goes to the test split, so the report shows the site's figures beside
the general ones; the rest joins the training split with the stated ``weight`` (each crop that many
times: 2.5 → every crop twice, half of them a third time). ``check_site_bundle`` then refuses a bundle
whose false grants on the general measure-only sources rise above those of the shipped rule.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tarfile
from dataclasses import asdict, fields
from pathlib import Path

import cv2
import numpy as np

from maskgate.records.faces import EXPORT_FORMAT, LABELS as SITE_LABELS
from maskgate.vision.bundles import pack
from maskgate.vision.classifier import LABELS, read_metadata

from . import evaluate as ev
from .dataset import load_prepared
from .errors import DataError
from .export import bundle_probs
from .prepare import CropRecord

SOURCE = "site"
MAX_SITE_FACES = 100_000
MAX_MEMBER_BYTES = 5_000_000


def read_site_tar(path: Path) -> tuple[dict, list[tuple[np.ndarray, str, np.ndarray, str]]]:
    """The export's manifest and its faces: (BGR crop, class, keypoints in crop pixels, file)."""
    try:
        with tarfile.open(path, "r:") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile() and m.size <= MAX_MEMBER_BYTES}
            if len(members) > MAX_SITE_FACES + 2 or "manifest.json" not in members or "labels.csv" not in members:
                raise DataError(f"{path}: not a site export (maskgate collect export writes one)")
            manifest = json.loads(tar.extractfile(members["manifest.json"]).read())
            if manifest.get("format") != EXPORT_FORMAT:
                raise DataError(f"{path}: format {manifest.get('format')!r}, expected {EXPORT_FORMAT}")
            rows = list(csv.DictReader(io.TextIOWrapper(tar.extractfile(members["labels.csv"]), encoding="utf-8")))
            faces = []
            for row in rows:
                name, label = row.get("file", ""), row.get("label", "")
                if label not in SITE_LABELS or name not in members:
                    raise DataError(f"{path}: labels.csv: {name!r} {label!r}: unknown label or missing image")
                if SITE_LABELS[label] is None:
                    continue
                image = cv2.imdecode(np.frombuffer(tar.extractfile(members[name]).read(), np.uint8), cv2.IMREAD_COLOR)
                if image is None:
                    raise DataError(f"{path}: {name}: not a readable image")
                points = np.array(json.loads(row.get("keypoints") or "[]"), np.float32).reshape(-1, 2)
                faces.append((image, SITE_LABELS[label], points, name))
    except (tarfile.TarError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable site export ({exc})") from None
    if not faces:
        raise DataError(f"{path}: no labelled faces to train on")
    return manifest, faces


def add_site_data(work_dir: Path, site_tar: Path, *, weight: float, holdout: float = 0.3, seed: int = 0) -> dict:
    """Append the site's faces to ``crops.npz``/``manifest.csv`` (see the module doc); returns the counts."""
    if weight <= 0 or not 0 < holdout < 1:
        raise DataError("--site-weight must be > 0 and --site-holdout between 0 and 1")
    manifest, faces = read_site_tar(site_tar)
    prepared = json.loads((work_dir / "prepare.json").read_text())
    size = prepared["input_size"]
    images = list(np.load(work_dir / "crops.npz")["images"])
    with open(work_dir / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if any(r["source"] == SOURCE for r in rows):
        raise DataError(f"{work_dir}: site data already added (run prepare again first)")
    rng = np.random.default_rng(seed)
    held = set()
    for label in LABELS:  # a share of every class is held out
        of_class = [i for i, face in enumerate(faces) if face[1] == label]
        held |= set(rng.permutation(of_class)[: int(round(len(of_class) * holdout))].tolist())
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    for i, (image, label, points, name) in enumerate(faces):
        scale = size / image.shape[0]
        crop = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA) if image.shape[:2] != (size, size) else image
        landmarks = " ".join(f"{v:.2f}" for v in (points * scale).reshape(-1)) if len(points) == 5 else ""
        split = "test" if i in held else "train"
        copies = 1 if split == "test" else int(weight) + int(rng.random() < weight - int(weight))
        record = CropRecord(SOURCE, f"{SOURCE}/{name}", label, f"{SOURCE}/{name}", SOURCE, float(image.shape[0]),
                            split=split, landmarks=landmarks)
        for _ in range(copies):
            images.append(crop)
            rows.append({k: str(v) for k, v in asdict(record).items()})
        counts[split][label] = counts[split].get(label, 0) + 1
    np.savez(work_dir / "crops.npz", images=np.stack(images))
    with open(work_dir / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in fields(CropRecord)])
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in writer.fieldnames} for r in rows)
    summary = {"site": manifest.get("site"), "weight": weight, "holdout": holdout, "faces": counts,
               "first": manifest.get("first"), "last": manifest.get("last")}
    prepared["site_data"] = summary
    (work_dir / "prepare.json").write_text(json.dumps(prepared, indent=2))
    return summary


def door_figures(bundle_dir: Path, split) -> dict:
    """False grants (negatives let in) and masked granted, with the bundle's own rule and nose check."""
    if not len(split.labels):
        return {"false_grants": None, "masked_granted": None, "negatives": 0, "masked": 0}
    metadata = read_metadata(bundle_dir)
    probs, nose = bundle_probs(bundle_dir, split.images, [
        np.array(r["landmarks"].split(), np.float32).reshape(5, 2) if r.get("landmarks") else None for r in split.rows])
    nose_threshold = metadata.nose_check.threshold if metadata.nose_check else None
    probs = probs[:, [metadata.labels.index(label) for label in LABELS]]  # the columns Rule.grants expects
    grants = ev.door_rule(metadata.threshold, nose_threshold).grants(probs, nose)
    masked = split.labels == ev.WITH_MASK
    return {"false_grants": float(grants[~masked].mean()) if (~masked).any() else None,
            "masked_granted": float(grants[masked].mean()) if masked.any() else None,
            "negatives": int((~masked).sum()), "masked": int(masked.sum())}


def check_site_bundle(work_dir: Path, bundle_dir: Path, shipped_dir: Path) -> dict:
    """Site and general figures of the new bundle beside the shipped one; the new bundle is deleted and
    DataError raised when its false grants on the general measure-only sources are higher."""
    splits = load_prepared(work_dir)
    site_test = _only(splits["test"], lambda r: r["source"] == SOURCE)
    general = splits["heldout"]
    figures = {name: {"shipped": door_figures(shipped_dir, split), "new": door_figures(bundle_dir, split)}
               for name, split in (("general_measure", general), ("site_held_out", site_test))}
    shipped_fg, new_fg = figures["general_measure"]["shipped"]["false_grants"], figures["general_measure"]["new"]["false_grants"]
    if shipped_fg is None:
        raise DataError("no negatives among the general measure-only sources: the site bundle cannot be checked "
                        "(prepare with --heldout-sources)")
    if new_fg > shipped_fg:
        shutil.rmtree(bundle_dir)
        raise DataError(f"refused: false grants on the general measure-only sources rose from {shipped_fg:.1%} "
                        f"(shipped) to {new_fg:.1%}; no bundle written (try a lower --site-weight)")
    (bundle_dir / "site.json").write_text(json.dumps(figures, indent=2) + "\n")
    figures["sha256"] = pack(bundle_dir, bundle_dir.with_suffix(".tar"))
    return figures


def _only(split, keep):
    idx = [i for i, r in enumerate(split.rows) if keep(r)]
    return type(split)(split.images[idx], split.labels[idx], [split.rows[i] for i in idx])
