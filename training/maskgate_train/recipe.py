"""The whole recipe as functions the CLI and tests call: prepare → train → evaluate → export."""

from __future__ import annotations

import datetime
import json
import platform
import time
from dataclasses import asdict, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from maskgate.access.reasons import Reason
from maskgate.vision.classifier import LABELS, NOSE_LABELS, BundleMetadata, MaskClassifier, NoseCheck
from maskgate.vision.crop import nose_patch

from . import door
from . import evaluate as ev
from .dataset import Split, add_synthetic, landmarks_of, load_prepared, manifest_hash, nose_patches, subsample
from .errors import DataError
from .export import bundle_probs, to_int8_tflite, write_bundle, write_reference
from .prepare import prepare
from .train import NORMALISATION, Hyperparameters, distillation_targets, to_rgb_float, train

MODEL_FILE = "model.keras"
NOSE_MODEL_FILE = "nose.keras"
NOSE_INPUT_SIZE = 96
NOSE_BACKBONE_UNTIL = "block_13_expand_relu"  # stride 16: 6×6 at 96 px; the bundle stays under 1 MB
NOSE_ALPHA = 0.35  # the nose check keeps the narrow backbone whatever the face model's
REPRESENTATIVE_CROPS = 300


def run_prepare(data_root: Path, work_dir: Path, *, sources: list[str], input_size: int, margin: float,
                heldout_sources: list[str] = ()) -> dict:
    """Face crops, duplicates dropped, split by photo: ``crops.npz``, ``manifest.csv``, ``prepare.json``.
    ``heldout_sources`` (``research/<name>``, no licence) are cropped for measuring only."""
    start = time.perf_counter()
    summary = prepare(data_root, work_dir, sources=sources, input_size=input_size, margin=margin,
                      heldout_sources=list(heldout_sources))
    summary.update(seconds=round(time.perf_counter() - start, 1), input_size=input_size, margin=margin, sources=sources,
                   heldout_sources=list(heldout_sources))
    (work_dir / "prepare.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_train(work_dir: Path, out_dir: Path, *, hp: Hyperparameters, weights: Path | None,
              templates: Path | None, exclude_sources: tuple[str, ...] = (), progress: bool = True) -> dict:
    """Float Keras model (``model.keras``) trained on the real and synthetic training crops."""
    start = time.perf_counter()
    model, history, crops = _fit(work_dir, load_prepared(work_dir, exclude_sources=exclude_sources), hp=hp,
                                 weights=weights, templates=templates, out_dir=out_dir, progress=progress)
    model.save(work_dir / MODEL_FILE)
    summary = {"seconds": round(time.perf_counter() - start, 1), "epochs": len(history["loss"]),
               "hyperparameters": asdict(hp), "imagenet_weights": weights is not None,
               "excluded_sources": list(exclude_sources), **crops}
    (work_dir / "train.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_train_nose(work_dir: Path, *, hp: Hyperparameters, weights: Path | None, templates: Path | None,
                   exclude_sources: tuple[str, ...] = (), progress: bool = True) -> dict:
    """The nose check (``nose.keras``): is the nose covered? Trained on the nose patches of the same
    real training crops, plus synthetic masks worn correctly and wrongly on the real bare faces.
    Always MobileNetV2 0.35 (``weights``: its ImageNet file), cut at ``NOSE_BACKBONE_UNTIL``."""
    start = time.perf_counter()
    splits = load_prepared(work_dir, exclude_sources=exclude_sources)
    real = subsample(splits["train"], per_class=hp.max_real_per_class, seed=hp.seed)
    train_split, counts = nose_patches(real, seed=hp.seed, templates=templates, size=NOSE_INPUT_SIZE)
    val_split, _ = nose_patches(splits["val"], seed=hp.seed, templates=None, size=NOSE_INPUT_SIZE)
    nose_hp = replace(hp, alpha=NOSE_ALPHA, backbone_until=NOSE_BACKBONE_UNTIL,
                      fine_tune_from=Hyperparameters.fine_tune_from)
    model, history = train(train_split, val_split, input_size=NOSE_INPUT_SIZE, hp=nose_hp, weights=weights,
                           out_dir=work_dir / "nose", progress=progress, classes=len(NOSE_LABELS))
    model.save(work_dir / NOSE_MODEL_FILE)
    summary = {"seconds": round(time.perf_counter() - start, 1), "epochs": len(history["loss"]),
               "input_size": NOSE_INPUT_SIZE, "excluded_sources": list(exclude_sources),
               "dataset_manifest_sha256": manifest_hash(work_dir), **counts}
    (work_dir / "nose.json").write_text(json.dumps(summary, indent=2))
    return summary


def nose_inputs(split: Split, rows: list[int] | None = None) -> tuple[list[int], np.ndarray]:
    """The nose patches of the crops (of ``rows``, default all) that have landmarks, and which those are."""
    have = [i for i in (range(len(split.rows)) if rows is None else rows) if split.rows[i].get("landmarks")]
    patches = [nose_patch(split.images[i], landmarks_of(split.rows[i]), size=NOSE_INPUT_SIZE) for i in have]
    return have, np.stack(patches) if patches else np.zeros((0, NOSE_INPUT_SIZE, NOSE_INPUT_SIZE, 3), np.uint8)


def nose_probs(predict, split: Split) -> np.ndarray:
    """p(nose covered) per crop from ``predict`` (BGR patches → probabilities); NaN without landmarks."""
    out = np.full(len(split.labels), np.nan)
    have, patches = nose_inputs(split)
    if have:
        out[have] = predict(patches)[:, NOSE_LABELS.index("nose_covered")]
    return out


def _current_nose_model(work_dir: Path):
    """``nose.keras`` if it was trained on the current manifest, else None."""
    import keras

    summary = work_dir / "nose.json"
    if not (work_dir / NOSE_MODEL_FILE).is_file() or not summary.is_file():
        return None
    if json.loads(summary.read_text()).get("dataset_manifest_sha256") != manifest_hash(work_dir):
        return None
    return keras.models.load_model(work_dir / NOSE_MODEL_FILE, compile=False)


def _fit(work_dir: Path, splits: dict[str, Split], *, hp: Hyperparameters, weights: Path | None,
         templates: Path | None, out_dir: Path, progress: bool):
    """Subsampled real training crops plus synthetic ones (training split only) → trained model. With
    ``hp.teachers``, that many teachers come first (the same recipe with seeds seed+1 …, each its own
    subsample and synthetic faces): the model learns its labels mixed with their mean prediction."""
    prepared = json.loads(_require(work_dir / "prepare.json").read_text())

    def crops(seed: int) -> tuple[Split, Split, dict]:
        real = subsample(splits["train"], per_class=hp.max_real_per_class, seed=seed)
        return real, *add_synthetic(real, seed=seed, templates=templates)

    real, train_split, synthetic = crops(hp.seed)
    targets, teacher_seeds, teacher_probs = None, [], []
    for seed in range(hp.seed + 1, hp.seed + 1 + hp.teachers):
        teacher, _ = train(crops(seed)[1], splits["val"], input_size=prepared["input_size"],
                           hp=replace(hp, seed=seed, teachers=0), weights=weights,
                           out_dir=work_dir / f"teacher-{seed}", progress=progress)
        teacher_probs.append(teacher.predict(to_rgb_float(train_split.images), verbose=0))
        teacher_seeds.append(seed)
    if teacher_probs:
        targets = distillation_targets(train_split.labels, np.mean(teacher_probs, axis=0), weight=hp.distillation_weight)
    model, history = train(train_split, splits["val"], input_size=prepared["input_size"], hp=hp,
                           weights=weights, out_dir=out_dir, progress=progress, targets=targets)
    return model, history, {"real_train_crops": int(len(real.labels)), "train_crops": int(len(train_split.labels)),
                            **synthetic, "teacher_seeds": teacher_seeds}


def run_evaluate(work_dir: Path, out_dir: Path, *, exclude_sources: tuple[str, ...] = ()) -> dict:
    """Float-model metrics on real photos. The grant threshold comes from held-out sources: the
    measure-only sources as predicted by this model (and its nose check, when trained), which never saw
    them; without those, each licensed source as predicted by the model trained without it
    (``holdout``), pooled; with none of those, from the validation split."""
    import keras

    model = keras.models.load_model(_require(work_dir / MODEL_FILE), compile=False)
    nose_model = _current_nose_model(work_dir)
    splits = load_prepared(work_dir, exclude_sources=exclude_sources)
    held_out = {source: (h["probs"], h["labels"]) for source, h in _holdout_probs(work_dir).items()}
    heldout = splits["heldout"]
    heldout_probs = model.predict(to_rgb_float(heldout.images), verbose=0) if len(heldout.labels) else np.zeros((0, 3))
    heldout_nose = (nose_probs(lambda x: nose_model.predict(to_rgb_float(x), verbose=0), heldout)
                    if nose_model is not None and len(heldout.labels) else None)
    sources = np.array([r["source"] for r in heldout.rows])
    measured = {s: (heldout_probs[sources == s], heldout.labels[sources == s]) for s in sorted(set(sources))}
    nose_threshold = None
    if measured:
        # The model that ships, on sources it never saw: bare faces must be refused (≤ 1 % granted).
        # Incorrectly worn masks cannot be held that low without refusing most masked people (report.md).
        face_only, _ = ev.held_out_threshold(measured, max_rate=ev.MAX_BARE_GRANT_RATE, bare_only=True)
        threshold = face_only
        if heldout_nose is not None:
            threshold, nose_threshold = ev.choose_with_nose(heldout_probs, heldout.labels, heldout_nose)
        _, nested = ev.held_out_threshold(held_out | measured, max_rate=ev.MAX_BARE_GRANT_RATE, bare_only=True)
        basis = f"bare faces granted ≤ {ev.MAX_BARE_GRANT_RATE:.0%} on the measure-only sources: " + ", ".join(measured)
    elif held_out:
        threshold, nested = ev.held_out_threshold(held_out)
        face_only, basis = threshold, "pooled held-out sources: " + ", ".join(held_out)
    else:
        val_probs = model.predict(to_rgb_float(splits["val"].images), verbose=0)
        threshold, nested, basis = ev.choose_threshold(val_probs, splits["val"].labels), {}, "validation split"
        face_only = threshold
    if nose_threshold == 0.0:
        nose_threshold = None  # the check did not pay on these sources: the bundle ships without it
    test_probs = model.predict(to_rgb_float(splits["test"].images), verbose=0)
    report = {"float_test": ev.metrics(test_probs, splits["test"].labels, threshold),
              "float_test_by_source": _by_source(splits["test"], test_probs, threshold),
              "threshold": threshold, "nose_threshold": nose_threshold, "threshold_face_only": face_only,
              "threshold_basis": basis,
              # licensed sources: the model trained without each, alone, at the face-only threshold
              "held_out": {s: ev.metrics(p, y, face_only) for s, (p, y) in held_out.items()},
              "held_out_threshold_check": nested}
    out_dir.mkdir(parents=True, exist_ok=True)
    if measured:
        nose = heldout_nose if nose_threshold is not None else None
        faces = np.array([float(r["face_px"]) for r in heldout.rows])
        for s in measured:
            part = sources == s
            report["held_out"][s] = ev.metrics(heldout_probs[part], heldout.labels[part], threshold,
                                               None if nose is None else nose[part], nose_threshold)
        report["held_out_pooled"] = ev.metrics(heldout_probs, heldout.labels, threshold, nose, nose_threshold)
        near = faces >= ev.DECISION.min_face_px
        report["held_out_pooled_decision_range"] = ev.metrics(
            heldout_probs[near], heldout.labels[near], threshold, None if nose is None else nose[near], nose_threshold)
        report["held_out_pooled_face_only"] = ev.metrics(heldout_probs, heldout.labels, face_only)
        report["tradeoff"] = ev.tradeoff(heldout_probs, heldout.labels,
                                         sorted({0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, threshold}),
                                         nose, nose_threshold)
        if nose is not None:
            report["nose_check_matched"] = ev.matched(heldout_probs, heldout.labels, nose, nose_threshold)
        ev.save_tradeoff(heldout_probs, heldout.labels, threshold, out_dir / "tradeoff.png",
                         "measure-only sources (float)", nose, nose_threshold)
    elif held_out:
        pooled = (np.concatenate([p for p, _ in held_out.values()]), np.concatenate([y for _, y in held_out.values()]))
        report["held_out_pooled"] = ev.metrics(*pooled, threshold)
        report["tradeoff"] = ev.tradeoff(*pooled, sorted({0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, threshold}))
        ev.save_tradeoff(*pooled, threshold, out_dir / "tradeoff.png", "held-out sources, pooled (float)")
    ev.save_confusion(report["float_test"]["confusion"], out_dir / "confusion.png", "test split (float)")
    (work_dir / "evaluate.json").write_text(json.dumps(report, indent=2))
    return report


def run_export(work_dir: Path, bundle_dir: Path, *, exclude_sources: tuple[str, ...] = ()) -> dict:
    """int8 TFLite + metadata.json, parity against float on the test split and the measure-only
    sources, report.md/json."""
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

    threshold, nose_threshold = evaluated["threshold"], evaluated.get("nose_threshold")
    nose_tflite, nose_model, nose_check = None, None, None
    if nose_threshold is not None:
        nose_model = _current_nose_model(work_dir)
        if nose_model is None:
            raise DataError(f"{work_dir / NOSE_MODEL_FILE}: missing or trained on another manifest "
                            "(run train-nose and evaluate again)")
        picked = rng.permutation(len(train_images))
        _, patches = nose_inputs(splits["train"], [int(i) for i in picked])
        nose_tflite = to_int8_tflite(nose_model, patches[:REPRESENTATIVE_CROPS])
        nose_check = NoseCheck(input_size=NOSE_INPUT_SIZE, threshold=nose_threshold, quantisation="int8")
    bundle = BundleMetadata(format="maskgate-classifier/1", labels=list(LABELS), input_size=prepared["input_size"],
                            colour_order="RGB", normalisation=NORMALISATION, crop_margin=prepared["margin"],
                            threshold=threshold, quantisation="int8", nose_check=nose_check)
    write_bundle(bundle_dir, tflite, bundle, nose_tflite)
    val_test = (splits["val"], splits["test"])  # the licensed sources' real photos, not a site's
    general = np.concatenate([[r["source"] != "site" for r in s.rows] for s in val_test]).astype(bool)
    write_reference(bundle_dir, np.concatenate([s.images for s in val_test])[general],
                    np.concatenate([s.labels for s in val_test])[general])

    test = splits["test"]
    float_probs = model.predict(to_rgb_float(test.images), verbose=0)
    int8_probs, int8_nose = bundle_probs(bundle_dir, test.images, _keypoints(test))
    int8_metrics = ev.metrics(int8_probs, test.labels, threshold, int8_nose, nose_threshold)
    parity = {
        "label_agreement": float(np.mean(float_probs.argmax(1) == int8_probs.argmax(1))),
        "accuracy_drop_points": round(100 * (evaluated["float_test"]["accuracy"] - int8_metrics["accuracy"]), 3),
        "max_abs_prob_difference": float(np.abs(float_probs - int8_probs).max()),
    }
    heldout = splits["heldout"]
    if len(heldout.labels):
        heldout_float = model.predict(to_rgb_float(heldout.images), verbose=0)
        heldout_int8, heldout_int8_nose = bundle_probs(bundle_dir, heldout.images, _keypoints(heldout))
        heldout_float_nose = (nose_probs(lambda x: nose_model.predict(to_rgb_float(x), verbose=0), heldout)
                              if nose_model is not None else None)
        parity["held_out_accuracy_drop_points"] = round(100 * float(
            np.mean(heldout_float.argmax(1) == heldout.labels) - np.mean(heldout_int8.argmax(1) == heldout.labels)), 3)
        rule, masked = ev.door_rule(threshold, nose_threshold), heldout.labels == ev.WITH_MASK
        parity["held_out_masked_granted_drop_points"] = round(100 * float(
            np.mean(rule.grants(heldout_float, heldout_float_nose)[masked])
            - np.mean(rule.grants(heldout_int8, heldout_int8_nose)[masked])), 3)
        if nose_model is not None:
            parity["nose_check_max_abs_difference"] = float(np.nanmax(np.abs(heldout_float_nose - heldout_int8_nose)))
    ev.save_confusion(int8_metrics["confusion"], bundle_dir / "confusion.png", "test split (int8, shipped)")
    metadata = bundle.model_dump()
    held_out_keys = ("threshold_basis", "threshold_face_only", "held_out", "held_out_pooled",
                     "held_out_pooled_decision_range", "held_out_pooled_face_only", "held_out_threshold_check",
                     "tradeoff", "nose_check_matched")
    metadata.update(
        metrics={"test_int8": int8_metrics,
                 "test_int8_by_source": _by_source(test, int8_probs, threshold, int8_nose, nose_threshold),
                 "test_float": evaluated["float_test"], "parity": parity,
                 "leave_one_source_out": _holdouts(work_dir),
                 **{k: evaluated[k] for k in held_out_keys if k in evaluated},
                 **({"held_out_int8": _by_source(heldout, heldout_int8, threshold, heldout_int8_nose, nose_threshold),
                     "held_out_int8_pooled": ev.metrics(heldout_int8, heldout.labels, threshold, heldout_int8_nose,
                                                        nose_threshold),
                     "held_out_int8_by_mask_tag": _by_mask_tag(heldout, heldout_int8, threshold, heldout_int8_nose,
                                                               nose_threshold),
                     "held_out_int8_door_verdicts": _door_verdicts(heldout, heldout_int8, threshold, heldout_int8_nose,
                                                                   nose_threshold),
                     "held_out_int8_door_over_time": _door_over_time(heldout, bundle_dir)}
                    if len(heldout.labels) else {})},
        provenance={
            "date": datetime.date.today().isoformat(),
            "sources": prepared["sources"], "measured_only": prepared.get("heldout_sources", []),
            "synthetic_masks": "MaskTheFace templates and textures (github.com/aqeelanwar/MaskTheFace, MIT)",
            "crop_counts": prepared["counts"], "crop_methods": prepared["methods"],
            "duplicates_dropped": prepared["duplicates_dropped"],
            "dataset_manifest_sha256": manifest_hash(work_dir), "prepare_seconds": prepared["seconds"],
            "training": trained,
            "nose_check_training": (json.loads(_require(work_dir / "nose.json").read_text())
                                    if nose_check is not None else None),
            "versions": {p: version(p) for p in ("tensorflow-cpu", "keras", "numpy", "maskgate")
                         if _installed(p)} | {"python": platform.python_version()},
        },
    )
    metadata["provenance"]["export_seconds"] = round(time.perf_counter() - start, 1)
    write_bundle(bundle_dir, tflite, BundleMetadata.model_validate(metadata), nose_tflite)
    (bundle_dir / "report.json").write_text(json.dumps(metadata["metrics"], indent=2) + "\n")
    (bundle_dir / "report.md").write_text(render_report(metadata))
    return metadata


def run_holdout(work_dir: Path, *, source: str, hp: Hyperparameters, weights: Path | None,
                templates: Path | None, progress: bool = True) -> dict:
    """Train without ``source`` at all, then predict every crop of it: how the recipe does on photos
    from a source it never saw (the figure a random split flatters). Float model; the probabilities
    are kept (``holdout-<source>.npz``) for choosing the threshold. Without teachers: one training per
    source keeps ``all`` within its time budget."""
    start = time.perf_counter()
    everything = load_prepared(work_dir)
    unseen_parts = [everything[s] for s in ("train", "val", "test")]
    images = np.concatenate([p.images[[r["source"] == source for r in p.rows]] for p in unseen_parts])
    labels = np.concatenate([p.labels[[r["source"] == source for r in p.rows]] for p in unseen_parts])
    if not len(labels):
        raise DataError(f"{work_dir / 'manifest.csv'}: no crops from source {source!r}")
    splits = load_prepared(work_dir, exclude_sources=(source,))
    model, history, crops = _fit(work_dir, splits, hp=replace(hp, teachers=0), weights=weights, templates=templates,
                                 out_dir=work_dir / f"holdout-{source}", progress=progress)
    probs = model.predict(to_rgb_float(images), verbose=0)
    threshold = ev.choose_threshold(model.predict(to_rgb_float(splits["val"].images), verbose=0), splits["val"].labels)
    result = {"source": source, "epochs": len(history["loss"]), "crops": int(len(labels)),
              "dataset_manifest_sha256": manifest_hash(work_dir), "seconds": round(time.perf_counter() - start, 1),
              **crops, "float": ev.metrics(probs, labels, threshold)}
    np.savez(work_dir / f"holdout-{source}.npz", probs=probs, labels=labels)
    (work_dir / f"holdout-{source}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _holdouts(work_dir: Path) -> dict:
    """Leave-one-source-out results made from the current manifest (stale ones are ignored)."""
    current = manifest_hash(work_dir)
    results = (json.loads(path.read_text()) for path in sorted(work_dir.glob("holdout-*.json")))
    return {r["source"]: r for r in results if r.get("dataset_manifest_sha256") == current}


def _holdout_probs(work_dir: Path) -> dict:
    """Each current holdout's predictions on its unseen source: {source: {probs, labels}}."""
    return {source: dict(np.load(work_dir / f"holdout-{source}.npz")) for source in _holdouts(work_dir)
            if (work_dir / f"holdout-{source}.npz").is_file()}


def _keypoints(split: Split) -> list[np.ndarray | None]:
    return [landmarks_of(r) if r.get("landmarks") else None for r in split.rows]


def _by_source(split, probs: np.ndarray, threshold: float, nose=None, nose_threshold=None) -> dict:
    sources = np.array([r["source"] for r in split.rows])
    return {s: ev.metrics(probs[sources == s], split.labels[sources == s], threshold,
                          None if nose is None else nose[sources == s], nose_threshold) for s in sorted(set(sources))}


def _door_verdicts(split, probs: np.ndarray, threshold: float, nose=None, nose_threshold=None) -> dict:
    """What the door tells each measure-only face, all of them and those within the decision range."""
    near = np.array([float(r["face_px"]) >= ev.DECISION.min_face_px for r in split.rows])
    rule = ev.door_rule(threshold, nose_threshold)
    return {"all": ev.door_verdicts(probs, split.labels, rule, nose),
            "decision_range": ev.door_verdicts(probs[near], split.labels[near], rule,
                                               None if nose is None else nose[near])}


def _door_over_time(split, bundle_dir: Path) -> dict:
    """People simulated at the door (``door``) on each measure-only face in the decision range, through
    the exported bundle and the device's default decision settings."""
    near = [i for i, r in enumerate(split.rows) if float(r["face_px"]) >= ev.DECISION.min_face_px]
    classifier = MaskClassifier(bundle_dir, num_threads=2)
    keypoints = _keypoints(split)
    return door.measure(classifier.classify, split.images[near], [keypoints[i] for i in near],
                        np.array([float(split.rows[i]["face_px"]) for i in near]), split.labels[near],
                        rule=ev.door_rule(classifier.threshold, classifier.nose_threshold), decision=ev.DECISION,
                        crop_margin=classifier.crop_margin)


def _by_mask_tag(split, probs: np.ndarray, threshold: float, nose=None, nose_threshold=None) -> dict:
    """Masked faces granted per mask tag, where a source's file names carry one (dsmasters: *_OK_*, *_NG_*)."""
    tags = np.array([Path(r["path"]).stem.rsplit("_", 1)[0] if r["source"] == "dsmasters" else "" for r in split.rows])
    grants = ev.door_rule(threshold, nose_threshold).grants(probs, nose)
    return {f"dsmasters/{t}": {"masked_granted_rate": float(grants[tags == t].mean()), "n": int((tags == t).sum())}
            for t in sorted(set(tags) - {""})}


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
    metrics, prov = metadata["metrics"], metadata["provenance"]
    m, f, p, t = metrics["test_int8"], metrics["test_float"], metrics["parity"], prov["training"]
    pct = lambda v: "–" if v is None or v != v else f"{v:.1%}"  # noqa: E731 (nan → –)
    lines = [
        "# Mask classifier — evaluation report",
        "",
        f"Trained {prov['date']} on sources {', '.join(prov['sources'])} (real photos, training split, at most "
        f"{t['hyperparameters']['max_real_per_class']} per class) plus synthetic masks; input "
        f"{metadata['input_size']} px, crop margin {metadata['crop_margin']}, MobileNetV2 alpha "
        f"{t['hyperparameters']['alpha']}, {t['epochs']} epochs, int8. Dataset manifest sha256 "
        f"`{prov['dataset_manifest_sha256'][:16]}…`. Measured only, never trained on: "
        f"{', '.join(prov.get('measured_only', [])) or 'none'}.",
        "",
        "All figures are on **real photos** (synthetic crops are used for training only).",
        "",
        "Crops come from the device's own face detector (YuNet). How often each detector finds masked, bare and incorrectly masked faces, "
        "by face size, with its time per frame: `docs/detectors.md` (`maskgate-train detectors`).",
    ]
    held = metrics.get("held_out", {})
    if held:
        pooled = metrics["held_out_pooled"]
        loso = metrics["leave_one_source_out"]
        nose = metadata.get("nose_check")
        rule = (f"p(with_mask) ≥ {metadata['threshold']:.3f} and p(nose covered) ≥ {nose['threshold']:.2f}"
                if nose else f"p(with_mask) ≥ {metadata['threshold']:.3f}")
        lines += ["", "## Held-out sources (the figures that matter)", "",
                  "Each licensed source is predicted by a model trained without it (leave one source out; face "
                  f"model alone, at its threshold {metrics['threshold_face_only']:.3f}); each measure-only source "
                  f"by the shipped recipe's models, which never saw it, with the shipped rule: {rule}. Float models. "
                  "*pooled*: the measure-only sources.", "",
                  "| unseen source | model | faces | masked granted | bare granted | incorrect granted | "
                  "incorrect_mask recall | with vs without, balanced | correctly masked vs not, balanced |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for source, r in list(held.items()) + [("**pooled**", pooled)]:
            n = sum(c["support"] for c in r["per_class"].values())
            model = "trained without it" if source in loso else "" if source == "**pooled**" else "shipped recipe"
            lines.append(f"| {source} | {model} | {n} | {pct(r['masked_granted_rate'])} | "
                         f"{pct(r['bare_granted_rate'])} | {pct(r['incorrect_granted_rate'])} | "
                         f"{pct(r['per_class']['incorrect_mask']['recall'])} | "
                         f"{pct(r['with_vs_without_balanced_accuracy'])} | {pct(r['masked_vs_not_balanced_accuracy'])} |")
        near = metrics.get("held_out_pooled_decision_range")
        if near:
            n = sum(c["support"] for c in near["per_class"].values())
            lines += ["", f"The same, faces ≥ {ev.DECISION.min_face_px:g} px only (the device's default "
                      "`decision.min_face_px`: "
                      f"smaller faces are never granted): {n} faces, masked granted {pct(near['masked_granted_rate'])}, "
                      f"bare {pct(near['bare_granted_rate'])}, incorrect {pct(near['incorrect_granted_rate'])}."]
        if nose:
            face = metrics["held_out_pooled_face_only"]
            lines += ["", "### Nose check", "",
                      "A second int8 MobileNetV2 (α 0.35, 96 px) looks only at the nose and upper lip, cut from the face "
                      "crop around the detector's nose and mouth keypoints (`maskgate.vision.crop.nose_patch`), and "
                      "answers *is the nose covered?* A face is granted only when both models agree. Both thresholds "
                      "come from the measure-only sources: the most masked faces let in while bare faces stay ≤ 1 % "
                      "granted and faces without a correct mask (bare or incorrect) are granted no more often than "
                      "by the face model alone at its own threshold.", "",
                      f"Face model alone at {metrics['threshold_face_only']:.3f}: masked granted "
                      f"{pct(face['masked_granted_rate'])}, bare {pct(face['bare_granted_rate'])}, incorrect "
                      f"{pct(face['incorrect_granted_rate'])}; with the nose check ({rule}): "
                      f"{pct(pooled['masked_granted_rate'])}, {pct(pooled['bare_granted_rate'])}, "
                      f"{pct(pooled['incorrect_granted_rate'])}.", "",
                      "Masked faces granted at matched rates of faces without a correct mask granted (measure-only "
                      "sources, float):", "", "| bare or incorrect granted | face model alone | with the nose check |",
                      "|---|---|---|"]
            lines += [f"| ≤ {r['not_masked_granted']:.1%} | {pct(r['face_only'])} | {pct(r['with_nose_check'])} |"
                      for r in metrics["nose_check_matched"]]
        targets = [("masked faces granted", pooled["masked_granted_rate"], "≥ 95 %", pooled["masked_granted_rate"] >= 0.95),
                   ("faces without a correct mask granted", pooled["false_grant_rate"], "≤ 0.5 %",
                    pooled["false_grant_rate"] <= 0.005),
                   ("incorrect_mask recall", pooled["per_class"]["incorrect_mask"]["recall"], "≥ 85 %",
                    pooled["per_class"]["incorrect_mask"]["recall"] >= 0.85),
                   ("correctly masked vs not, balanced", pooled["masked_vs_not_balanced_accuracy"], "≥ 98 %",
                    pooled["masked_vs_not_balanced_accuracy"] >= 0.98)]
        lines += ["", "Targets on the pooled held-out sources:", "", "| figure | measured | target | |", "|---|---|---|---|"]
        lines += [f"| {name} | {pct(v)} | {goal} | {'met' if ok else '**missed**'} |" for name, v, goal, ok in targets]
        lines += ["", "### Threshold", "",
                  f"Chosen on {metrics['threshold_basis']} — the lowest p(with_mask) under that limit, so the most "
                  "masked faces get in while bare faces are refused. Incorrectly worn masks are not held to it: on "
                  "these sources no threshold keeps them under 1 % without refusing most masked people (the "
                  "trade-off below), so they are the model's known gap. A random split of the training "
                  "sources would flatter the threshold; these sources were never trained on. Whether it holds on a source it was not chosen on (face model alone, threshold from "
                  "the other held-out sources only):", "",
                  "| source | threshold chosen without it | masked granted | without a correct mask granted |",
                  "|---|---|---|---|"]
        for source, r in metrics["held_out_threshold_check"].items():
            lines.append(f"| {source} | {r['threshold']:.3f} | {pct(r['masked_granted_rate'])} | "
                         f"{pct(r['false_grant_rate'])} ({r['false_grants']} of {r['negatives']}) |")
        lines += ["", f"Trade-off on the pooled held-out sources ({rule.split(' and ')[1] + ' fixed, ' if nose else ''}"
                  "float; the curve in `tradeoff.png`):", "",
                  "| threshold | masked granted | bare or incorrect granted | bare granted | incorrect granted |",
                  "|---|---|---|---|---|"]
        for r in metrics["tradeoff"]:
            mark = " (shipped)" if r["threshold"] == metadata["threshold"] else ""
            lines.append(f"| {r['threshold']:.3f}{mark} | {pct(r['masked_granted'])} | "
                         f"{pct(r['not_masked_granted'])} | {pct(r['bare_granted'])} | {pct(r['incorrect_granted'])} |")
    if metrics.get("held_out_int8"):
        lines += ["", "Shipped int8 model on the measure-only sources:", "",
                  "| source | masked granted | bare granted | incorrect granted | incorrect_mask recall | faces |",
                  "|---|---|---|---|---|---|"]
        pooled_int8 = {"**pooled**": metrics["held_out_int8_pooled"]} if "held_out_int8_pooled" in metrics else {}
        for source, r in (metrics["held_out_int8"] | pooled_int8).items():
            n = sum(c["support"] for c in r["per_class"].values())
            lines.append(f"| {source} | {pct(r['masked_granted_rate'])} | {pct(r['bare_granted_rate'])} | "
                         f"{pct(r['incorrect_granted_rate'])} | {pct(r['per_class']['incorrect_mask']['recall'])} | {n} |")
        lines += ["", "By mask tag (dsmasters file names: `OK`/`NG` is the set's own mask-type tag), int8:", "",
                  "| tag | masked granted | faces |", "|---|---|---|"]
        lines += [f"| {tag} | {pct(r['masked_granted_rate'])} | {r['n']} |"
                  for tag, r in metrics["held_out_int8_by_mask_tag"].items()]
    if metrics.get("held_out_int8_door_verdicts"):
        lines += ["", "What the door tells each face (int8, one face per frame, the device's own `Rule`; "
                  f"% of each true label; in brackets: faces ≥ {ev.DECISION.min_face_px:g} px, the decision range):", ""]
        lines += _verdict_table(metrics["held_out_int8_door_verdicts"])
    if metrics.get("held_out_int8_door_over_time"):
        lines += door.report_lines(metrics["held_out_int8_door_over_time"])
    lines += ["", "## Test split (same sources as training — flattering)", "",
              "| figure | value |", "|---|---|",
              f"| with_mask vs without_mask faces, balanced accuracy | {pct(m['with_vs_without_balanced_accuracy'])} |",
              f"| correctly masked vs not, balanced accuracy | {pct(m['masked_vs_not_balanced_accuracy'])} |",
              f"| incorrect_mask recall | {pct(m['per_class']['incorrect_mask']['recall'])} "
              f"(of {m['per_class']['incorrect_mask']['support']}) |",
              f"| accuracy (int8 / float) | {pct(m['accuracy'])} / {pct(f['accuracy'])} |",
              f"| int8 vs float: accuracy drop, label agreement | {p['accuracy_drop_points']:.2f} points, "
              f"{pct(p['label_agreement'])} |",
              f"| int8 vs float on the measure-only sources: accuracy drop, masked-granted drop | "
              f"{p.get('held_out_accuracy_drop_points', float('nan')):.2f} / "
              f"{p.get('held_out_masked_granted_drop_points', float('nan')):.2f} points |",
              f"| faces without a correct mask granted | {pct(m['false_grant_rate'])} "
              f"({m['false_grants']} of {m['negatives']}) |",
              f"| masked faces granted | {pct(m['masked_granted_rate'])} |",
              "", "Confusion matrix (rows true, columns predicted: " + ", ".join(metadata["labels"]) + "):", ""]
    lines += ["    " + " ".join(f"{n:6d}" for n in row) for row in m["confusion"]]
    lines += ["", f"Synthetic training crops (training split only; MaskTheFace templates and textures, MIT, warped "
              f"onto real bare faces from the detector's five landmarks): {t.get('synthetic_incorrect_mask', 0)} "
              f"incorrect_mask (below the nose or under the chin), {t.get('synthetic_with_mask', 0)} with_mask "
              f"(nose bridge to chin), {t.get('synthetic_hand_over_mouth', 0)} without_mask (hand over mouth); "
              f"{t.get('real_train_crops', 0)} real training crops."
              + _distillation_note(t)
              + (f" Nose check: {prov['nose_check_training']['nose_real_patches']} real nose patches and "
                 f"{prov['nose_check_training']['nose_synthetic_patches']} from synthetic masks (each bare training "
                 "face once worn correctly, once under or below the nose or under the chin), trained "
                 f"{prov['nose_check_training']['seconds']:.0f} s." if prov.get("nose_check_training") else ""),
              "", f"Wall time: prepare {prov['prepare_seconds']:.0f} s, train {t['seconds']:.0f} s, leave-one-source-out "
              f"{sum(h['seconds'] for h in metrics['leave_one_source_out'].values()):.0f} s, "
              f"export {prov['export_seconds']:.0f} s.",
              "", "![trade-off](tradeoff.png) ![confusion](confusion.png) ![curves](curves.png)", ""]
    return "\n".join(lines)


def _distillation_note(trained: dict) -> str:
    seeds = trained.get("teacher_seeds")
    if not seeds:
        return ""
    return (f" Distilled: the face model's targets are its labels mixed with the mean prediction of {len(seeds)} "
            f"teacher{'s' * (len(seeds) > 1)} (weight {trained['hyperparameters']['distillation_weight']:g}; the "
            f"same recipe, seeds {', '.join(map(str, seeds))}; the leave-one-source-out models are trained "
            "without teachers).")


def _verdict_table(verdicts: dict) -> list[str]:
    every, near = verdicts["all"], verdicts["decision_range"]
    reasons = [r for r in Reason if any(r.value in told for told in every.values())]
    lines = ["| true label | faces | " + " | ".join(f"`{r.value}`: \"{r.text}\"" for r in reasons) + " |",
             "|---|---|" + "---|" * len(reasons)]
    for label, told in every.items():
        n, n_near = sum(told.values()), sum(near[label].values())
        if n:
            lines.append(f"| {label} | {n} ({n_near}) | " + " | ".join(
                f"{100 * told.get(r, 0) / n:.1f} % ({100 * near[label].get(r, 0) / max(n_near, 1):.1f} %)"
                for r in reasons) + " |")
    return lines
