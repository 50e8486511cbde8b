"""On-device adaptation (``maskgate model adapt``): refit the classifier's last layer on this site's faces.

numpy only, in seconds. The bundle's own model gives each face its embedding (``Embedder``). A softmax
layer, started from the bundle's and held near it, is fitted on the site's labelled faces together
with the reference the bundle ships (``reference.npz``: embeddings — not photos — of faces from the
general training sources' validation and test splits). A third of the site's faces and half of the
reference are held out. The grant threshold is then chosen again on the held-out negatives: the
lowest that keeps false grants at or below the bundle's own rate on the same faces (or a stated
target). Adaptation refuses when no threshold holds that target, or when the new layer would not let
in more of the held-out masked site faces than the bundle does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .classifier import HEAD_FILE, METADATA_FILE, MODEL_FILE, Embedder, read_metadata, softmax

# embeddings (N × size, float16), labels (N, index into the bundle's labels), model_sha256 (of classifier.tflite)
REFERENCE_FILE = "reference.npz"
THRESHOLDS = np.round(np.arange(0.5, 0.9951, 0.005), 3)
MIN_SITE_FACES = 10


class AdaptRefused(ModelError):
    """The adapted layer would not be safe (or would not help): nothing is written."""


@dataclass
class Adaptation:
    weights: np.ndarray
    bias: np.ndarray
    threshold: float
    figures: dict = field(default_factory=dict)


def read_reference(bundle_dir: Path, labels: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    path = Path(bundle_dir) / REFERENCE_FILE
    if not path.is_file():
        raise ModelError(f"{path}: this bundle ships no reference embeddings, so its false grants cannot be "
                         "checked on the device: retrain instead (maskgate-train all --site-data)")
    try:
        with np.load(path) as data:
            embeddings, classes = data["embeddings"].astype(np.float64), data["labels"].astype(np.int64)
            made_for = str(data["model_sha256"])
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"{path}: not readable reference embeddings ({exc})") from None
    if made_for != model_sha256(bundle_dir):
        raise ModelError(f"{path}: made for another {MODEL_FILE} (re-export the bundle)")
    if embeddings.ndim != 2 or embeddings.shape[1] != size or len(classes) != len(embeddings) or \
            not ((classes >= 0) & (classes < len(labels))).all():
        raise ModelError(f"{path}: embeddings {embeddings.shape} do not fit this model (size {size})")
    return embeddings, classes


def fit_head(embeddings: np.ndarray, classes: np.ndarray, sample_weights: np.ndarray, *, weights: np.ndarray,
             bias: np.ndarray, l2: float = 1e-3, steps: int = 400, rate: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A softmax layer fitted by Adam on weighted cross-entropy, pulled towards (``weights``, ``bias``);
    each step moves a weight by about ``rate`` times the spread of the starting weights."""
    w, b = weights.copy(), bias.copy()
    step_size = rate * float(weights.std() or 1.0)
    onehot = np.eye(len(b))[classes]
    sample_weights = sample_weights / sample_weights.sum()
    moments = [np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)]
    for step in range(1, steps + 1):
        error = (softmax(embeddings @ w.T + b) - onehot) * sample_weights[:, None]
        grads = (error.T @ embeddings + l2 * (w - weights), error.sum(axis=0))
        for i, (param, grad) in enumerate(zip((w, b), grads)):
            m, v = moments[2 * i], moments[2 * i + 1]
            m[:] = 0.9 * m + 0.1 * grad
            v[:] = 0.999 * v + 0.001 * grad ** 2
            param -= step_size * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    return w, b


def adapt(head: tuple[np.ndarray, np.ndarray], labels: list[str], threshold: float,
          reference: tuple[np.ndarray, np.ndarray], site: tuple[np.ndarray, np.ndarray], *, site_weight: float = 1.0,
          max_false_grants: float | None = None, seed: int = 0) -> Adaptation:
    """Refit the last layer ``head`` (weights, bias) on ``site`` (embeddings, class indices) beside
    ``reference``; see the module doc."""
    old_w, old_b = head
    site_x, site_y = site
    if len(site_y) < MIN_SITE_FACES:
        raise AdaptRefused(f"only {len(site_y)} labelled faces: label at least {MIN_SITE_FACES} first")
    masked = labels.index("with_mask")
    if not (site_y == masked).any():
        raise AdaptRefused("no face labelled masked: adaptation learns what this site's masks look like")
    rng = np.random.default_rng(seed)
    ref_x, ref_y = reference
    ref_fit, ref_check = _split(ref_y, 0.5, rng)
    site_fit, site_check = _split(site_y, 1 / 3, rng)
    x = np.concatenate([ref_x[ref_fit], site_x[site_fit]])
    y = np.concatenate([ref_y[ref_fit], site_y[site_fit]])
    per_class = np.bincount(ref_y[ref_fit], minlength=len(labels)).astype(float)
    w_ref = 1.0 / np.maximum(per_class[ref_y[ref_fit]], 1)  # each class of the reference weighs the same
    w_site = np.full(len(site_fit), site_weight * w_ref.sum() / max(len(site_fit), 1))
    new_w, new_b = fit_head(x, y, np.concatenate([w_ref, w_site]), weights=old_w, bias=old_b)

    def p_mask(w, b, xs):
        return softmax(xs @ w.T + b)[:, masked] if len(xs) else np.zeros(0)

    negatives = np.concatenate([ref_x[ref_check][ref_y[ref_check] != masked],
                                site_x[site_check][site_y[site_check] != masked]])
    site_masked = site_x[site_check][site_y[site_check] == masked]
    ref_masked = ref_x[ref_check][ref_y[ref_check] == masked]
    before = {"negatives": p_mask(old_w, old_b, negatives), "site_masked": p_mask(old_w, old_b, site_masked),
              "reference_masked": p_mask(old_w, old_b, ref_masked)}
    after = {"negatives": p_mask(new_w, new_b, negatives), "site_masked": p_mask(new_w, new_b, site_masked),
             "reference_masked": p_mask(new_w, new_b, ref_masked)}
    target = _rate(before["negatives"], threshold) if max_false_grants is None else max_false_grants
    safe = [t for t in THRESHOLDS if _rate(after["negatives"], t) <= target]
    figures = {"target_false_grants": target, "held_out": {"negatives": len(negatives), "site_masked": len(site_masked),
                                                           "reference_masked": len(ref_masked)},
               "fitted": {"reference": len(ref_fit), "site": len(site_fit)},
               "before": {"threshold": threshold, **{k: _rate(v, threshold) for k, v in before.items()}}}
    if not safe:
        raise AdaptRefused(f"no threshold up to {THRESHOLDS[-1]} keeps false grants at or below {target:.1%} on the "
                           f"held-out negatives (the adapted layer lets in {_rate(after['negatives'], THRESHOLDS[-1]):.1%}"
                           " even there): not installed")
    chosen = float(safe[0])
    figures["after"] = {"threshold": chosen, **{k: _rate(v, chosen) for k, v in after.items()}}
    gained = figures["after"]["site_masked"] - figures["before"]["site_masked"]
    if len(site_masked) and (gained < 0 or (gained == 0 and figures["before"]["site_masked"] < 1.0)):
        raise AdaptRefused(f"the adapted layer lets in no more of the held-out masked site faces "
                           f"({figures['after']['site_masked']:.0%} vs {figures['before']['site_masked']:.0%}): "
                           "not installed")
    return Adaptation(new_w, new_b, chosen, figures)


def write_bundle(base: Path, out: Path, adaptation: Adaptation, *, site: str) -> Path:
    """``base``'s files with the adapted layer (``head.npz``) and threshold, into the new directory ``out``."""
    metadata = read_metadata(base)
    out.mkdir(parents=True)
    for path in Path(base).iterdir():
        if path.is_file() and path.name not in (METADATA_FILE, HEAD_FILE, "SHA256SUMS") and path.suffix in (
                ".tflite", ".npz"):
            shutil.copy2(path, out / path.name)
    np.savez(out / HEAD_FILE, weights=adaptation.weights.astype(np.float32), bias=adaptation.bias.astype(np.float32))
    raw = json.loads(metadata.model_dump_json())
    raw.update(threshold=adaptation.threshold, adapted_head=True,
               adapted={"site": site, "date": time.strftime("%Y-%m-%d"), "from_threshold": metadata.threshold,
                        **adaptation.figures})
    (out / METADATA_FILE).write_text(json.dumps(raw, indent=2) + "\n")
    return out


def model_sha256(bundle_dir: Path) -> str:
    return hashlib.sha256((Path(bundle_dir) / MODEL_FILE).read_bytes()).hexdigest()


def _split(classes: np.ndarray, held_out: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices to fit on and to hold out, ``held_out`` of each class (at least one where a class has two)."""
    fit, check = [], []
    for k in np.unique(classes):
        idx = rng.permutation(np.flatnonzero(classes == k))
        n = int(round(len(idx) * held_out)) if len(idx) > 1 else 0
        n = max(n, 1) if len(idx) > 1 else 0
        check += list(idx[:n])
        fit += list(idx[n:])
    return np.array(sorted(fit), np.int64), np.array(sorted(check), np.int64)


def _rate(p: np.ndarray, threshold: float) -> float:
    return float((p >= threshold).mean()) if len(p) else 0.0


def current_head(bundle_dir: Path) -> tuple[Embedder, tuple[np.ndarray, np.ndarray]]:
    """The bundle's embedder and the last layer it uses now (its adapted one, if it has one)."""
    metadata = read_metadata(bundle_dir)
    embedder = Embedder(Path(bundle_dir) / MODEL_FILE, metadata.input_size, num_threads=2)
    if not metadata.adapted_head:
        return embedder, (embedder.weights, embedder.bias)
    with np.load(Path(bundle_dir) / HEAD_FILE) as data:
        return embedder, (data["weights"].astype(np.float64), data["bias"].astype(np.float64))
