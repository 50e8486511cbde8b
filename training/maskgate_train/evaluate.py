"""Step 3 — evaluate: the grant thresholds chosen on unseen faces, and the figures measured at them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from maskgate.access.reasons import Reason
from maskgate.access.verdict import Rule
from maskgate.config import DecisionConfig
from maskgate.vision.classifier import LABELS, Prediction
from maskgate.vision.core import FaceResult
from maskgate.vision.detector import Face

MAX_FALSE_GRANT_RATE = 0.005  # faces without a correct mask granted at most this often
MAX_BARE_GRANT_RATE = 0.01  # the shipped rule: bare faces from sources never trained on granted at most this often
DECISION = DecisionConfig()  # the device's default decision settings
WITH_MASK = LABELS.index("with_mask")
WITHOUT_MASK = LABELS.index("without_mask")


def choose_threshold(val_probs: np.ndarray, val_labels: np.ndarray, *, max_rate: float = MAX_FALSE_GRANT_RATE,
                     bare_only: bool = False) -> float:
    """Lowest p(with_mask) threshold at which at most ``max_rate`` of the faces without a correct mask
    (``bare_only``: of the bare faces) would be granted (granted: labelled with_mask and p ≥ threshold)."""
    negative = val_labels == WITHOUT_MASK if bare_only else val_labels != WITH_MASK
    negatives = np.sort(val_probs[negative, WITH_MASK])[::-1]
    if negatives.size == 0:
        return 0.5
    allowed = int(np.floor(max_rate * negatives.size))  # how many negatives may score above it
    threshold = float(negatives[allowed]) + 1e-4 if allowed < negatives.size else 0.5
    return float(min(max(threshold, 0.5), 0.999))


def held_out_threshold(held_out: dict[str, tuple[np.ndarray, np.ndarray]], *,
                       max_rate: float = MAX_FALSE_GRANT_RATE, bare_only: bool = False) -> tuple[float, dict]:
    """The grant threshold from pooled held-out-source predictions (``source → (probs, labels)``, each
    from a model that never saw that source), and a check that it holds on a source it was not chosen
    on: per source, the threshold chosen on all other sources, applied to that one."""
    def pooled(sources):
        return (np.concatenate([held_out[s][0] for s in sources]), np.concatenate([held_out[s][1] for s in sources]))

    threshold = choose_threshold(*pooled(held_out), max_rate=max_rate, bare_only=bare_only)
    nested = {}
    for source in held_out:
        others = [s for s in held_out if s != source]
        if others:
            t = choose_threshold(*pooled(others), max_rate=max_rate, bare_only=bare_only)
            nested[source] = metrics(*held_out[source][:2], t)
    return threshold, nested


class Predicted(NamedTuple):
    """A model's probabilities on some faces, their true labels, and p(nose covered) (NaN: no landmarks)."""

    probs: np.ndarray
    labels: np.ndarray
    nose: np.ndarray | None = None


@dataclass(frozen=True)
class Thresholds:
    """The shipped rule's thresholds, the face model's own, what they were chosen on, and per source
    how the face model alone does at a threshold chosen without that source."""

    threshold: float
    nose_threshold: float | None
    face_only: float
    basis: str
    check: dict[str, dict]


def choose_thresholds(measure_only: dict[str, Predicted], held_out: dict[str, Predicted],
                      validation: Callable[[], Predicted]) -> Thresholds:
    """The grant thresholds from predictions on faces the models never saw. ``measure_only``: the
    measure-only sources as predicted by the shipped recipe (with the nose check, when trained): bare
    faces granted ≤ ``MAX_BARE_GRANT_RATE``. Without those, ``held_out``: each licensed source as
    predicted by the model trained without it, pooled. With neither, the ``validation`` split."""
    if measure_only:
        # Incorrectly worn masks cannot be held that low without refusing most masked people (report.md).
        face_only, _ = held_out_threshold(measure_only, max_rate=MAX_BARE_GRANT_RATE, bare_only=True)
        threshold, nose_threshold = face_only, None
        if all(p.nose is not None for p in measure_only.values()):
            pooled = (np.concatenate(column) for column in zip(*measure_only.values()))
            threshold, nose_threshold = choose_with_nose(*pooled)
        _, check = held_out_threshold(held_out | measure_only, max_rate=MAX_BARE_GRANT_RATE, bare_only=True)
        basis = f"bare faces granted ≤ {MAX_BARE_GRANT_RATE:.0%} on the measure-only sources: " + ", ".join(measure_only)
        # nose threshold 0: the check did not pay on these sources, the bundle ships without it
        return Thresholds(threshold, nose_threshold or None, face_only, basis, check)
    if held_out:
        threshold, check = held_out_threshold(held_out)
        return Thresholds(threshold, None, threshold, "pooled held-out sources: " + ", ".join(held_out), check)
    threshold = choose_threshold(*validation()[:2])
    return Thresholds(threshold, None, threshold, "validation split", {})


def door_rule(threshold: float, nose_threshold: float | None = None) -> Rule:
    """The device's rule at these thresholds, with the device's default decision settings."""
    return Rule.from_config(DECISION, threshold=threshold, nose_threshold=nose_threshold)


def tradeoff(probs: np.ndarray, labels: np.ndarray, thresholds, nose: np.ndarray | None = None,
             nose_threshold: float | None = None) -> list[dict]:
    """Faces without a correct mask granted (bare and incorrect apart) vs masked faces granted, per threshold."""
    rows = []
    for t in thresholds:
        g = door_rule(float(t), nose_threshold).grants(probs, nose)
        rows.append({"threshold": float(t), "masked_granted": _rate(g, labels == WITH_MASK),
                     "not_masked_granted": _rate(g, labels != WITH_MASK),
                     "bare_granted": _rate(g, labels == LABELS.index("without_mask")),
                     "incorrect_granted": _rate(g, labels == LABELS.index("incorrect_mask"))})
    return rows


def save_tradeoff(probs: np.ndarray, labels: np.ndarray, chosen: float, path: Path, title: str,
                  nose: np.ndarray | None = None, nose_threshold: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = tradeoff(probs, labels, np.unique(np.concatenate([np.linspace(0.3, 0.999, 300), [chosen]])),
                     nose, nose_threshold)
    fig, ax = plt.subplots(figsize=(6, 4.4))
    for key, name in (("not_masked_granted", "bare or incorrect"), ("incorrect_granted", "incorrect only"),
                      ("bare_granted", "bare only")):
        ax.plot([100 * r[key] for r in curve], [100 * r["masked_granted"] for r in curve], label=name)
    at = tradeoff(probs, labels, [chosen], nose, nose_threshold)[0]
    ax.plot(100 * at["not_masked_granted"], 100 * at["masked_granted"], "ko", label=f"chosen threshold {chosen:.3f}")
    ax.axvline(100 * MAX_FALSE_GRANT_RATE, color="grey", linestyle=":")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("faces without a correct mask granted (%)")
    ax.set_ylabel("masked faces granted (%)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _rate(grants: np.ndarray, which: np.ndarray) -> float:
    return float(grants[which].mean()) if which.any() else float("nan")


def door_verdicts(probs: np.ndarray, labels: np.ndarray, rule: Rule,
                  nose: np.ndarray | None = None) -> dict[str, dict[str, int]]:
    """What the door tells each face, per true label, as reason codes: the device's own ``Rule`` on
    each face alone (NaN nose: no landmarks, no check)."""
    face = Face((0.0, 0.0, 1.0, 1.0), 1.0, ())
    told: dict[str, dict[str, int]] = {label: {} for label in LABELS}
    for i, (row, label) in enumerate(zip(probs, labels)):
        covered = None if nose is None or np.isnan(nose[i]) else float(nose[i])
        prediction = Prediction(dict(zip(LABELS, map(float, row))), covered)
        reason = (rule.refusal(FaceResult(face, prediction)) or Reason.GRANTED).value
        told[LABELS[label]][reason] = told[LABELS[label]].get(reason, 0) + 1
    return told


def choose_with_nose(probs: np.ndarray, labels: np.ndarray, nose: np.ndarray, *,
                     max_bare_rate: float = MAX_BARE_GRANT_RATE) -> tuple[float, float]:
    """(threshold, nose_threshold) letting in the most masked faces while bare faces stay ≤
    ``max_bare_rate`` granted and faces without a correct mask (bare or incorrect) are granted no more
    often than by the face model alone at its own threshold. (t, 0.0) when the check does not help."""
    masked, bare, negative = labels == WITH_MASK, labels == WITHOUT_MASK, labels != WITH_MASK
    face_only = choose_threshold(probs, labels, max_rate=max_bare_rate, bare_only=True)
    cap = _rate(door_rule(face_only).grants(probs), negative)
    best = (_rate(door_rule(face_only).grants(probs), masked), face_only, 0.0)
    for u in np.arange(0.05, 1.0, 0.05):
        for t in np.linspace(0.5, 0.999, 500):
            grants = door_rule(float(t), float(u)).grants(probs, nose)
            if (_rate(grants, bare) <= max_bare_rate and _rate(grants, negative) <= cap
                    and _rate(grants, masked) > best[0]):
                best = (_rate(grants, masked), float(t), round(float(u), 2))
    return best[1], best[2]


def matched(probs: np.ndarray, labels: np.ndarray, nose: np.ndarray, nose_threshold: float,
            rates=(0.005, 0.01, 0.02, 0.03, 0.05)) -> list[dict]:
    """Masked faces granted at matched rates of faces without a correct mask granted: face model
    alone vs with the nose check (its threshold fixed, p(with_mask) threshold swept)."""
    thresholds = np.linspace(0.5, 0.999, 500)
    masked, negative = labels == WITH_MASK, labels != WITH_MASK
    rows = []
    for rate in rates:
        best = {}
        for name, u in (("face_only", None), ("with_nose_check", nose_threshold)):
            found = [_rate(g, masked) for g in (door_rule(float(t), u).grants(probs, nose) for t in thresholds)
                     if _rate(g, negative) <= rate]
            best[name] = max(found, default=0.0)
        rows.append({"not_masked_granted": rate, **best})
    return rows


def metrics(probs: np.ndarray, labels: np.ndarray, threshold: float, nose: np.ndarray | None = None,
            nose_threshold: float | None = None) -> dict:
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
    grants = door_rule(threshold, nose_threshold).grants(probs, nose)
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
        "bare_granted_rate": _rate(grants, is_bare),
        "incorrect_granted_rate": _rate(grants, labels == LABELS.index("incorrect_mask")),
        "threshold": threshold,
        "nose_threshold": nose_threshold if nose is not None else None,
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
