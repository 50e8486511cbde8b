"""The whole recipe as functions the CLI and tests call: prepare → train → evaluate → export."""

from __future__ import annotations

import datetime
import json
import platform
import time
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from maskgate.vision.classifier import LABELS, BundleMetadata

from . import evaluate as ev
from .dataset import add_synthetic, load_prepared, manifest_hash
from .errors import DataError
from .export import bundle_probs, to_int8_tflite, write_bundle
from .prepare import prepare
from .train import NORMALISATION, Hyperparameters, to_rgb_float, train

MODEL_FILE = "model.keras"
REPRESENTATIVE_CROPS = 300


def run_prepare(data_root: Path, work_dir: Path, *, sources: list[str], input_size: int, margin: float) -> dict:
    """Face crops, duplicates dropped, split by photo: ``crops.npz``, ``manifest.csv``, ``prepare.json``."""
    start = time.perf_counter()
    summary = prepare(data_root, work_dir, sources=sources, input_size=input_size, margin=margin)
    summary.update(seconds=round(time.perf_counter() - start, 1), input_size=input_size, margin=margin, sources=sources)
    (work_dir / "prepare.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_train(work_dir: Path, out_dir: Path, *, hp: Hyperparameters, weights: Path | None,
              exclude_sources: tuple[str, ...] = (), progress: bool = True) -> dict:
    """Float Keras model (``model.keras``) trained on the real and synthetic training crops."""
    start = time.perf_counter()
    prepared = json.loads(_require(work_dir / "prepare.json").read_text())
    splits = load_prepared(work_dir, exclude_sources=exclude_sources)
    train_split, synthetic = add_synthetic(splits["train"], seed=hp.seed)
    model, history = train(train_split, splits["val"], input_size=prepared["input_size"], hp=hp,
                           weights=weights, out_dir=out_dir, progress=progress)
    model.save(work_dir / MODEL_FILE)
    summary = {"seconds": round(time.perf_counter() - start, 1), "epochs": len(history["loss"]),
               "hyperparameters": asdict(hp), "imagenet_weights": weights is not None,
               "excluded_sources": list(exclude_sources), "train_crops": int(len(train_split.labels)), **synthetic}
    (work_dir / "train.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_evaluate(work_dir: Path, out_dir: Path, *, exclude_sources: tuple[str, ...] = ()) -> dict:
    """Float-model metrics on the real test split; threshold chosen on validation."""
    import keras

    model = keras.models.load_model(_require(work_dir / MODEL_FILE), compile=False)
    splits = load_prepared(work_dir, exclude_sources=exclude_sources)
    val_probs = model.predict(to_rgb_float(splits["val"].images), verbose=0)
    threshold = ev.choose_threshold(val_probs, splits["val"].labels)
    test_probs = model.predict(to_rgb_float(splits["test"].images), verbose=0)
    report = {"float_test": ev.metrics(test_probs, splits["test"].labels, threshold),
              "float_test_by_source": _by_source(splits["test"], test_probs, threshold),
              "threshold": threshold}
    out_dir.mkdir(parents=True, exist_ok=True)
    ev.save_confusion(report["float_test"]["confusion"], out_dir / "confusion.png", "test split (float)")
    (work_dir / "evaluate.json").write_text(json.dumps(report, indent=2))
    return report


def run_export(work_dir: Path, bundle_dir: Path, *, exclude_sources: tuple[str, ...] = ()) -> dict:
    """int8 TFLite + metadata.json, parity against float on the test split, report.md/json."""
    import keras

    start = time.perf_counter()
    prepared = json.loads(_require(work_dir / "prepare.json").read_text())
    trained = json.loads(_require(work_dir / "train.json").read_text())
    evaluated = json.loads(_require(work_dir / "evaluate.json").read_text())
    model = keras.models.load_model(work_dir / MODEL_FILE, compile=False)
    splits = load_prepared(work_dir, exclude_sources=exclude_sources)
    rng = np.random.default_rng(0)
    train_images = splits["train"].images
    representative = train_images[rng.choice(len(train_images), min(REPRESENTATIVE_CROPS, len(train_images)), replace=False)]
    tflite = to_int8_tflite(model, representative)

    threshold = evaluated["threshold"]
    bundle = BundleMetadata(format="maskgate-classifier/1", labels=list(LABELS), input_size=prepared["input_size"],
                            colour_order="RGB", normalisation=NORMALISATION, crop_margin=prepared["margin"],
                            threshold=threshold, quantisation="int8")
    write_bundle(bundle_dir, tflite, bundle)

    test = splits["test"]
    float_probs = model.predict(to_rgb_float(test.images), verbose=0)
    int8_probs = bundle_probs(bundle_dir, test.images)
    int8_metrics = ev.metrics(int8_probs, test.labels, threshold)
    parity = {
        "label_agreement": float(np.mean(float_probs.argmax(1) == int8_probs.argmax(1))),
        "accuracy_drop_points": round(100 * (evaluated["float_test"]["accuracy"] - int8_metrics["accuracy"]), 3),
        "max_abs_prob_difference": float(np.abs(float_probs - int8_probs).max()),
    }
    ev.save_confusion(int8_metrics["confusion"], bundle_dir / "confusion.png", "test split (int8, shipped)")
    metadata = bundle.model_dump()
    metadata.update(
        metrics={"test_int8": int8_metrics, "test_int8_by_source": _by_source(test, int8_probs, threshold),
                 "test_float": evaluated["float_test"], "parity": parity,
                 "leave_one_source_out": _holdouts(work_dir)},
        provenance={
            "date": datetime.date.today().isoformat(),
            "sources": prepared["sources"], "crop_counts": prepared["counts"], "crop_methods": prepared["methods"],
            "duplicates_dropped": prepared["duplicates_dropped"],
            "dataset_manifest_sha256": manifest_hash(work_dir), "prepare_seconds": prepared["seconds"],
            "training": trained,
            "versions": {p: version(p) for p in ("tensorflow-cpu", "keras", "numpy", "maskgate")
                         if _installed(p)} | {"python": platform.python_version()},
        },
    )
    metadata["provenance"]["export_seconds"] = round(time.perf_counter() - start, 1)
    write_bundle(bundle_dir, tflite, BundleMetadata.model_validate(metadata))
    (bundle_dir / "report.json").write_text(json.dumps(metadata["metrics"], indent=2) + "\n")
    (bundle_dir / "report.md").write_text(render_report(metadata))
    return metadata


def run_holdout(work_dir: Path, *, source: str, hp: Hyperparameters, weights: Path | None,
                progress: bool = True) -> dict:
    """Train without ``source`` at all, then test on every crop of it: how the recipe does on
    photos from a source it never saw (the figure a random split flatters). Float model."""
    start = time.perf_counter()
    splits = load_prepared(work_dir, exclude_sources=(source,))
    everything = load_prepared(work_dir)
    unseen_parts = [everything[s] for s in ("train", "val", "test")]
    images = np.concatenate([p.images[[r["source"] == source for r in p.rows]] for p in unseen_parts])
    labels = np.concatenate([p.labels[[r["source"] == source for r in p.rows]] for p in unseen_parts])
    if not len(labels):
        raise DataError(f"{work_dir / 'manifest.csv'}: no crops from source {source!r}")
    train_split, _ = add_synthetic(splits["train"], seed=hp.seed)
    prepared = json.loads(_require(work_dir / "prepare.json").read_text())
    model, history = train(train_split, splits["val"], input_size=prepared["input_size"], hp=hp, weights=weights,
                           out_dir=work_dir / f"holdout-{source}", progress=progress)
    threshold = ev.choose_threshold(model.predict(to_rgb_float(splits["val"].images), verbose=0), splits["val"].labels)
    result = {"source": source, "epochs": len(history["loss"]), "crops": int(len(labels)),
              "dataset_manifest_sha256": manifest_hash(work_dir), "seconds": round(time.perf_counter() - start, 1),
              "float": ev.metrics(model.predict(to_rgb_float(images), verbose=0), labels, threshold)}
    (work_dir / f"holdout-{source}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _holdouts(work_dir: Path) -> dict:
    """Leave-one-source-out results made from the current manifest (stale ones are ignored)."""
    current = manifest_hash(work_dir)
    results = (json.loads(path.read_text()) for path in sorted(work_dir.glob("holdout-*.json")))
    return {r["source"]: r for r in results if r.get("dataset_manifest_sha256") == current}


def _by_source(split, probs: np.ndarray, threshold: float) -> dict:
    sources = np.array([r["source"] for r in split.rows])
    return {s: ev.metrics(probs[sources == s], split.labels[sources == s], threshold) for s in sorted(set(sources))}


def _installed(name: str) -> bool:
    try:
        version(name)
        return True
    except PackageNotFoundError:
        return False


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: not found (run the earlier steps first)")
    return path


def render_report(metadata: dict) -> str:
    """report.md: the shipped model's figures, on real photos only."""
    m, f = metadata["metrics"]["test_int8"], metadata["metrics"]["test_float"]
    p, prov = metadata["metrics"]["parity"], metadata["provenance"]
    t = prov["training"]
    lines = [
        "# Mask classifier — evaluation report",
        "",
        f"Trained {prov['date']} on sources {', '.join(prov['sources'])}; input {metadata['input_size']} px, "
        f"crop margin {metadata['crop_margin']}, MobileNetV2 alpha {t['hyperparameters']['alpha']}, "
        f"{t['epochs']} epochs, int8. Dataset manifest sha256 `{prov['dataset_manifest_sha256'][:16]}…`.",
        "",
        "All figures are on the **test split of real photos** (no synthetic crops), with the shipped int8 model "
        "unless marked float.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| with_mask vs without_mask faces, balanced accuracy | {m['with_vs_without_balanced_accuracy']:.2%} |",
        f"| correctly masked vs not (incorrect counts as not), balanced accuracy | "
        f"{m['masked_vs_not_balanced_accuracy']:.2%} |",
        f"| 3-class balanced accuracy | {m['balanced_accuracy']:.2%} |",
        f"| incorrect_mask recall | {m['per_class']['incorrect_mask']['recall']:.2%} "
        f"(of {m['per_class']['incorrect_mask']['support']}) |",
        f"| accuracy (int8 / float) | {m['accuracy']:.2%} / {f['accuracy']:.2%} |",
        f"| int8 vs float: accuracy drop, label agreement | {p['accuracy_drop_points']:.2f} points, "
        f"{p['label_agreement']:.2%} |",
        f"| grant threshold on p(with_mask) (chosen on validation) | {metadata['threshold']:.4f} |",
        f"| faces without a correct mask granted | {m['false_grant_rate']:.2%} "
        f"({m['false_grants']} of {m['negatives']}) |",
        f"| masked faces granted | {m['masked_granted_rate']:.2%} |",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label, c in m["per_class"].items():
        lines.append(f"| {label} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    lines += ["", "Confusion matrix (rows true, columns predicted: " + ", ".join(metadata["labels"]) + "):", ""]
    lines += ["    " + " ".join(f"{n:6d}" for n in row) for row in m["confusion"]]
    lines += ["", "By source (int8):", "",
              "| source | with vs without, balanced | correctly masked vs not, balanced | false grants | n |",
              "|---|---|---|---|---|"]
    for source, s in metadata["metrics"]["test_int8_by_source"].items():
        n = sum(c["support"] for c in s["per_class"].values())
        lines.append(f"| {source} | {s['with_vs_without_balanced_accuracy']:.2%} | "
                     f"{s['masked_vs_not_balanced_accuracy']:.2%} | {s['false_grants']} of {s['negatives']} | {n} |")
    holdouts = metadata["metrics"]["leave_one_source_out"]
    if holdouts:
        lines += ["", "Leave one source out (float model trained without the source, tested on all of its faces; "
                  "threshold from the remaining validation split):", "",
                  "| unseen source | with vs without, balanced | correctly masked vs not, balanced | "
                  "incorrect_mask recall | false grants | faces |", "|---|---|---|---|---|---|"]
        for source, h in holdouts.items():
            r = h["float"]
            lines.append(f"| {source} | {r['with_vs_without_balanced_accuracy']:.2%} | "
                         f"{r['masked_vs_not_balanced_accuracy']:.2%} | "
                         f"{r['per_class']['incorrect_mask']['recall']:.2%} | "
                         f"{r['false_grants']} of {r['negatives']} | {h['crops']} |")
    lines += ["", f"Synthetic training crops (training split only): {t.get('synthetic_incorrect_mask', 0)} "
              f"incorrect_mask and {t.get('synthetic_with_mask', 0)} with_mask (one real mask cut from a with_mask "
              f"photo put on a without_mask face, below the nose and over it), "
              f"{t.get('synthetic_hand_over_mouth', 0)} without_mask (hand over mouth).",
              "", f"Wall time: prepare {prov['prepare_seconds']:.0f} s, train {t['seconds']:.0f} s, "
              f"export {prov['export_seconds']:.0f} s.",
              "", "![confusion](confusion.png) ![curves](curves.png)", ""]
    return "\n".join(lines)
