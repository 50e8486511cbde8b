"""Step 3 — evaluate: per-class metrics on real test photos and the grant threshold from validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskgate.vision.classifier import LABELS

MAX_FALSE_GRANT_RATE = 0.005  # faces without a correct mask granted at most this often
WITH_MASK = LABELS.index("with_mask")


def choose_threshold(val_probs: np.ndarray, val_labels: np.ndarray, *, max_rate: float = MAX_FALSE_GRANT_RATE) -> float:
    """Lowest p(with_mask) threshold at which at most ``max_rate`` of validation faces without a
    correct mask would be granted (a face is granted when it is labelled with_mask and p ≥ threshold)."""
    negatives = np.sort(val_probs[val_labels != WITH_MASK, WITH_MASK])[::-1]
    if negatives.size == 0:
        return 0.5
    allowed = int(np.floor(max_rate * negatives.size))  # how many negatives may score above it
    threshold = float(negatives[allowed]) + 1e-4 if allowed < negatives.size else 0.5
    return float(min(max(threshold, 0.5), 0.999))


def granted(probs: np.ndarray, threshold: float) -> np.ndarray:
    return (probs.argmax(1) == WITH_MASK) & (probs[:, WITH_MASK] >= threshold)


def metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    predicted = probs.argmax(1)
    confusion = np.zeros((len(LABELS), len(LABELS)), int)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for i, label in enumerate(LABELS):
        tp = confusion[i, i]
        precision = tp / confusion[:, i].sum() if confusion[:, i].sum() else float("nan")
        recall = tp / confusion[i].sum() if confusion[i].sum() else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": int(confusion[i].sum())}
    recalls = [v["recall"] for v in per_class.values() if not np.isnan(v["recall"])]
    is_masked = labels == WITH_MASK
    said_masked = predicted == WITH_MASK
    is_bare = labels == LABELS.index("without_mask")
    grants = granted(probs, threshold)
    return {
        "accuracy": float(np.mean(predicted == labels)) if labels.size else float("nan"),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        # with_mask vs without_mask faces only: is a masked face told from a bare one?
        "with_vs_without_balanced_accuracy": _balanced(said_masked[is_masked], ~said_masked[is_bare]),
        # the door's question: correctly masked or not (incorrect_mask counts as not)
        "masked_vs_not_balanced_accuracy": _balanced(said_masked[is_masked], ~said_masked[~is_masked]),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "false_grant_rate": float(grants[~is_masked].mean()) if (~is_masked).any() else float("nan"),
        "false_grants": int(grants[~is_masked].sum()),
        "negatives": int((~is_masked).sum()),
        "masked_granted_rate": float(grants[is_masked].mean()) if is_masked.any() else float("nan"),
        "threshold": threshold,
    }


def _balanced(positives_right: np.ndarray, negatives_right: np.ndarray) -> float:
    recalls = [part.mean() for part in (positives_right, negatives_right) if part.size]
    return float(np.mean(recalls)) if recalls else float("nan")


def save_confusion(confusion: list[list[int]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(confusion)
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.imshow(matrix / np.maximum(matrix.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=20)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, str(n), ha="center", va="center", color="black")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
