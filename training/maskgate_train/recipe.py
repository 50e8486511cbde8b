"""The whole recipe as functions the CLI and tests call: prepare → train → evaluate → export."""

from __future__ import annotations

import datetime
import json
import platform
import time
from dataclasses import asdict, replace
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from maskgate.vision.classifier import LABELS, NOSE_LABELS, BundleMetadata, MaskClassifier, NoseCheck
from maskgate.vision.crop import nose_patch

from . import door
from . import evaluate as ev
from .dataset import Split, add_synthetic, landmarks_of, load_prepared, manifest_hash, nose_patches, subsample
from .errors import DataError
from .export import bundle_probs, to_int8_tflite, write_bundle, write_reference
from .prepare import prepare
from .records import (EvaluateSummary, ExportMetrics, ExportSummary, HoldoutSummary, NoseSummary, PrepareSummary,
                      Provenance, TrainedCrops, TrainSummary)
from .report import render_report
from .train import NORMALISATION, Hyperparameters, distillation_targets, to_rgb_float, train

MODEL_FILE = "model.keras"
NOSE_MODEL_FILE = "nose.keras"
NOSE_INPUT_SIZE = 96
NOSE_BACKBONE_UNTIL = "block_13_expand_relu"  # stride 16: 6×6 at 96 px; the bundle stays under 1 MB
NOSE_ALPHA = 0.35  # the nose check keeps the narrow backbone whatever the face model's
REPRESENTATIVE_CROPS = 300


def run_prepare(data_root: Path, work_dir: Path, *, sources: list[str], input_size: int, margin: float,
                heldout_sources: list[str] = ()) -> PrepareSummary:
    """Face crops, duplicates dropped, split by photo: ``crops.npz``, ``manifest.csv``, ``prepare.json``.
    ``heldout_sources`` (``research/<name>``, no licence) are cropped for measuring only."""
    start = time.perf_counter()
    crops = prepare(data_root, work_dir, sources=sources, input_size=input_size, margin=margin,
                    heldout_sources=list(heldout_sources))
    summary = PrepareSummary(**crops, seconds=round(time.perf_counter() - start, 1), input_size=input_size,
                             margin=margin, sources=sources, heldout_sources=list(heldout_sources))
    summary.save(work_dir / "prepare.json")
    return summary


def run_train(work_dir: Path, out_dir: Path, *, hp: Hyperparameters, weights: Path | None,
              templates: Path | None, exclude_sources: tuple[str, ...] = (), progress: bool = True) -> TrainSummary:
    """Float Keras model (``model.keras``) trained on the real and synthetic training crops."""
    start = time.perf_counter()
    model, history, crops = _fit(work_dir, load_prepared(work_dir, exclude_sources=exclude_sources), hp=hp,
                                 weights=weights, templates=templates, out_dir=out_dir, progress=progress)
    model.save(work_dir / MODEL_FILE)
    summary = TrainSummary(**asdict(crops), seconds=round(time.perf_counter() - start, 1),
                           epochs=len(history["loss"]), hyperparameters=hp, imagenet_weights=weights is not None,
                           excluded_sources=list(exclude_sources))
    summary.save(work_dir / "train.json")
    return summary


def run_train_nose(work_dir: Path, *, hp: Hyperparameters, weights: Path | None, templates: Path | None,
                   exclude_sources: tuple[str, ...] = (), progress: bool = True) -> NoseSummary:
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
    summary = NoseSummary(seconds=round(time.perf_counter() - start, 1), epochs=len(history["loss"]),
                          input_size=NOSE_INPUT_SIZE, excluded_sources=list(exclude_sources),
                          dataset_manifest_sha256=manifest_hash(work_dir), **counts)
    summary.save(work_dir / "nose.json")
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
    if NoseSummary.load(summary).dataset_manifest_sha256 != manifest_hash(work_dir):
        return None
    return keras.models.load_model(work_dir / NOSE_MODEL_FILE, compile=False)


def _predict(model, images: np.ndarray) -> np.ndarray:
    """A float Keras model's probabilities on BGR crops."""
    return model.predict(to_rgb_float(images), verbose=0)


def _predicted(model, nose_model, split: Split) -> ev.Predicted:
    """The float models' predictions on ``split``; no nose figures without a nose model or faces."""
    if not len(split.labels):
        return ev.Predicted(np.zeros((0, len(LABELS))), split.labels)
    nose = None if nose_model is None else nose_probs(partial(_predict, nose_model), split)
    return ev.Predicted(_predict(model, split.images), split.labels, nose)


def _fit(work_dir: Path, splits: dict[str, Split], *, hp: Hyperparameters, weights: Path | None,
         templates: Path | None, out_dir: Path, progress: bool):
    """Subsampled real training crops plus synthetic ones (training split only) → trained model. With
    ``hp.teachers``, that many teachers come first (the same recipe with seeds seed+1 …, each its own
    subsample and synthetic faces): the model learns its labels mixed with their mean prediction."""
    input_size = PrepareSummary.load(work_dir / "prepare.json").input_size

    def crops(seed: int) -> tuple[Split, Split, dict]:
        real = subsample(splits["train"], per_class=hp.max_real_per_class, seed=seed)
        return real, *add_synthetic(real, seed=seed, templates=templates)

    real, train_split, synthetic = crops(hp.seed)
    targets, teacher_seeds, teacher_probs = None, [], []
    for seed in range(hp.seed + 1, hp.seed + 1 + hp.teachers):
        teacher, _ = train(crops(seed)[1], splits["val"], input_size=input_size,
                           hp=replace(hp, seed=seed, teachers=0), weights=weights,
                           out_dir=work_dir / f"teacher-{seed}", progress=progress)
        teacher_probs.append(_predict(teacher, train_split.images))
        teacher_seeds.append(seed)
    if teacher_probs:
        targets = distillation_targets(train_split.labels, np.mean(teacher_probs, axis=0), weight=hp.distillation_weight)
    model, history = train(train_split, splits["val"], input_size=input_size, hp=hp,
                           weights=weights, out_dir=out_dir, progress=progress, targets=targets)
    return model, history, TrainedCrops(real_train_crops=int(len(real.labels)), train_crops=int(len(train_split.labels)),
                                        **synthetic, teacher_seeds=teacher_seeds)


def run_evaluate(work_dir: Path, out_dir: Path, *, exclude_sources: tuple[str, ...] = ()) -> EvaluateSummary:
    """Float-model figures on real photos, at the grant thresholds chosen on faces the models never saw
    (``evaluate.choose_thresholds``): the measure-only sources as predicted by this model (and its nose
    check, when trained); without those, each licensed source as predicted by the model trained
    without it (``holdout``); with none of those, the validation split."""
    import keras

    model = keras.models.load_model(_require(work_dir / MODEL_FILE), compile=False)
    splits = load_prepared(work_dir, exclude_sources=exclude_sources)
    held_out = {source: ev.Predicted(h["probs"], h["labels"]) for source, h in _holdout_probs(work_dir).items()}
    unseen = _predicted(model, _current_nose_model(work_dir), splits["heldout"])
    sources = np.array([r["source"] for r in splits["heldout"].rows])
    measure_only = {s: ev.Predicted(*(None if a is None else a[sources == s] for a in unseen))
                    for s in sorted(set(sources))}
    val = splits["val"]
    chosen = ev.choose_thresholds(measure_only, held_out, lambda: _predicted(model, None, val))

    test = splits["test"]
    test_probs = _predict(model, test.images)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = (_measure_only_figures(unseen, splits["heldout"], chosen, out_dir) if measure_only
               else _pooled_held_out_figures(held_out, chosen, out_dir) if held_out else {})
    summary = EvaluateSummary(
        float_test=ev.metrics(test_probs, test.labels, chosen.threshold),
        float_test_by_source=_by_source(test, test_probs, chosen.threshold),
        threshold=chosen.threshold, nose_threshold=chosen.nose_threshold,
        threshold_face_only=chosen.face_only, threshold_basis=chosen.basis,
        # licensed sources: the model trained without each, alone, at the face-only threshold
        held_out={s: ev.metrics(p.probs, p.labels, chosen.face_only) for s, p in held_out.items()}
        | figures.pop("held_out", {}),
        held_out_threshold_check=chosen.check, **figures)
    ev.save_confusion(summary.float_test["confusion"], out_dir / "confusion.png", "test split (float)")
    summary.save(work_dir / "evaluate.json")
    return summary


def _tradeoff_thresholds(chosen: float) -> list[float]:
    return sorted({0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, chosen})


def _measure_only_figures(unseen: ev.Predicted, split: Split, chosen: ev.Thresholds, out_dir: Path) -> dict:
    """The shipped rule on the measure-only sources: per source, pooled, pooled within the decision range;
    the face model alone; the trade-off; with the nose check, masked granted at matched false grants."""
    t, u = chosen.threshold, chosen.nose_threshold
    probs, labels = unseen.probs, unseen.labels
    nose = unseen.nose if u is not None else None

    def at(faces) -> dict:
        return ev.metrics(probs[faces], labels[faces], t, None if nose is None else nose[faces], u)

    sources = np.array([r["source"] for r in split.rows])
    near = np.array([float(r["face_px"]) for r in split.rows]) >= ev.DECISION.min_face_px
    figures = {"held_out": {s: at(sources == s) for s in sorted(set(sources))},
               "held_out_pooled": at(slice(None)),
               "held_out_pooled_decision_range": at(near),
               "held_out_pooled_face_only": ev.metrics(probs, labels, chosen.face_only),
               "tradeoff": ev.tradeoff(probs, labels, _tradeoff_thresholds(t), nose, u)}
    if nose is not None:
        figures["nose_check_matched"] = ev.matched(probs, labels, nose, u)
    ev.save_tradeoff(probs, labels, t, out_dir / "tradeoff.png", "measure-only sources (float)", nose, u)
    return figures


def _pooled_held_out_figures(held_out: dict[str, ev.Predicted], chosen: ev.Thresholds, out_dir: Path) -> dict:
    """The licensed sources, each predicted by the model trained without it, pooled."""
    probs, labels = (np.concatenate(column) for column in zip(*(p[:2] for p in held_out.values())))
    ev.save_tradeoff(probs, labels, chosen.threshold, out_dir / "tradeoff.png", "held-out sources, pooled (float)")
    return {"held_out_pooled": ev.metrics(probs, labels, chosen.threshold),
            "tradeoff": ev.tradeoff(probs, labels, _tradeoff_thresholds(chosen.threshold))}


def run_export(work_dir: Path, bundle_dir: Path, *, exclude_sources: tuple[str, ...] = ()) -> ExportSummary:
    """int8 TFLite + metadata.json, parity against float on the test split and the measure-only
    sources, report.md/json."""
    import keras

    start = time.perf_counter()
    prepared = PrepareSummary.load(work_dir / "prepare.json")
    trained = TrainSummary.load(work_dir / "train.json")
    evaluated = EvaluateSummary.load(work_dir / "evaluate.json")
    model = keras.models.load_model(work_dir / MODEL_FILE, compile=False)
    nose_model = None
    if evaluated.nose_threshold is not None:
        nose_model = _current_nose_model(work_dir)
        if nose_model is None:
            raise DataError(f"{work_dir / NOSE_MODEL_FILE}: missing or trained on another manifest "
                            "(run train-nose and evaluate again)")
    splits = load_prepared(work_dir, exclude_sources=exclude_sources)
    bundle, tflite, nose_tflite = _quantise(model, nose_model, splits["train"], prepared, evaluated)
    write_bundle(bundle_dir, tflite, bundle, nose_tflite)
    val_test = (splits["val"], splits["test"])  # the licensed sources' real photos, not a site's
    general = np.concatenate([[r["source"] != "site" for r in s.rows] for s in val_test]).astype(bool)
    write_reference(bundle_dir, np.concatenate([s.images for s in val_test])[general],
                    np.concatenate([s.labels for s in val_test])[general])

    metrics = _export_metrics(work_dir, bundle_dir, model, nose_model, splits, evaluated)
    provenance = _provenance(work_dir, prepared, trained, nose_model is not None, start)
    summary = ExportSummary(metrics, provenance)
    write_bundle(bundle_dir, tflite, BundleMetadata.model_validate(bundle.model_dump() | summary.to_json()), nose_tflite)
    (bundle_dir / "report.json").write_text(json.dumps(metrics.to_json(), indent=2) + "\n")
    (bundle_dir / "report.md").write_text(render_report(bundle, summary))
    return summary


def _quantise(model, nose_model, train_split: Split, prepared: PrepareSummary,
              evaluated: EvaluateSummary) -> tuple[BundleMetadata, bytes, bytes | None]:
    """The bundle's settings and its int8 models, calibrated on training crops."""
    rng = np.random.default_rng(0)
    images = train_split.images
    tflite = to_int8_tflite(model, images[rng.choice(len(images), min(REPRESENTATIVE_CROPS, len(images)), replace=False)])
    nose_tflite, nose_check = None, None
    if nose_model is not None:
        _, patches = nose_inputs(train_split, [int(i) for i in rng.permutation(len(images))])
        nose_tflite = to_int8_tflite(nose_model, patches[:REPRESENTATIVE_CROPS])
        nose_check = NoseCheck(input_size=NOSE_INPUT_SIZE, threshold=evaluated.nose_threshold, quantisation="int8")
    bundle = BundleMetadata(format="maskgate-classifier/1", labels=list(LABELS), input_size=prepared.input_size,
                            colour_order="RGB", normalisation=NORMALISATION, crop_margin=prepared.margin,
                            threshold=evaluated.threshold, quantisation="int8", nose_check=nose_check)
    return bundle, tflite, nose_tflite


def _export_metrics(work_dir: Path, bundle_dir: Path, model, nose_model, splits: dict[str, Split],
                    evaluated: EvaluateSummary) -> ExportMetrics:
    """The exported int8 bundle's figures beside the float model's: test split, parity, measure-only sources."""
    t, u = evaluated.threshold, evaluated.nose_threshold
    test = splits["test"]
    float_probs = _predict(model, test.images)
    int8_probs, int8_nose = bundle_probs(bundle_dir, test.images, _keypoints(test))
    int8_metrics = ev.metrics(int8_probs, test.labels, t, int8_nose, u)
    parity = {
        "label_agreement": float(np.mean(float_probs.argmax(1) == int8_probs.argmax(1))),
        "accuracy_drop_points": round(100 * (evaluated.float_test["accuracy"] - int8_metrics["accuracy"]), 3),
        "max_abs_prob_difference": float(np.abs(float_probs - int8_probs).max()),
    }
    heldout, int8_figures = splits["heldout"], {}
    if len(heldout.labels):
        probs, nose = bundle_probs(bundle_dir, heldout.images, _keypoints(heldout))
        unseen_int8 = ev.Predicted(probs, heldout.labels, nose)
        parity |= _held_out_parity(_predicted(model, nose_model, heldout), unseen_int8, ev.door_rule(t, u))
        int8_figures = _held_out_int8(heldout, unseen_int8, t, u, bundle_dir)
    ev.save_confusion(int8_metrics["confusion"], bundle_dir / "confusion.png", "test split (int8, shipped)")
    return ExportMetrics(
        test_int8=int8_metrics, test_int8_by_source=_by_source(test, int8_probs, t, int8_nose, u),
        test_float=evaluated.float_test, parity=parity, leave_one_source_out=_holdouts(work_dir),
        threshold_basis=evaluated.threshold_basis, threshold_face_only=evaluated.threshold_face_only,
        held_out=evaluated.held_out, held_out_pooled=evaluated.held_out_pooled,
        held_out_pooled_decision_range=evaluated.held_out_pooled_decision_range,
        held_out_pooled_face_only=evaluated.held_out_pooled_face_only,
        held_out_threshold_check=evaluated.held_out_threshold_check, tradeoff=evaluated.tradeoff,
        nose_check_matched=evaluated.nose_check_matched, **int8_figures)


def _held_out_parity(float_run: ev.Predicted, int8_run: ev.Predicted, rule) -> dict[str, float]:
    """int8 vs float on the measure-only sources: accuracy and masked granted, in points; the nose check."""
    labels = float_run.labels
    masked = labels == ev.WITH_MASK
    parity = {
        "held_out_accuracy_drop_points": round(100 * float(
            np.mean(float_run.probs.argmax(1) == labels) - np.mean(int8_run.probs.argmax(1) == labels)), 3),
        "held_out_masked_granted_drop_points": round(100 * float(
            np.mean(rule.grants(float_run.probs, float_run.nose)[masked])
            - np.mean(rule.grants(int8_run.probs, int8_run.nose)[masked])), 3)}
    if float_run.nose is not None:
        parity["nose_check_max_abs_difference"] = float(np.nanmax(np.abs(float_run.nose - int8_run.nose)))
    return parity


def _held_out_int8(split: Split, int8: ev.Predicted, threshold: float, nose_threshold: float | None,
                   bundle_dir: Path) -> dict:
    """The shipped int8 bundle on the measure-only sources: per source, pooled, per mask tag, at the door."""
    probs, nose = int8.probs, int8.nose
    return {"held_out_int8": _by_source(split, probs, threshold, nose, nose_threshold),
            "held_out_int8_pooled": ev.metrics(probs, split.labels, threshold, nose, nose_threshold),
            "held_out_int8_by_mask_tag": _by_mask_tag(split, probs, threshold, nose, nose_threshold),
            "held_out_int8_door_verdicts": _door_verdicts(split, probs, threshold, nose, nose_threshold),
            "held_out_int8_door_over_time": _door_over_time(split, bundle_dir)}


def _provenance(work_dir: Path, prepared: PrepareSummary, trained: TrainSummary, with_nose: bool,
                start: float) -> Provenance:
    return Provenance(
        date=datetime.date.today().isoformat(), sources=prepared.sources, measured_only=prepared.heldout_sources,
        synthetic_masks="MaskTheFace templates and textures (github.com/aqeelanwar/MaskTheFace, MIT)",
        crop_counts=prepared.counts, crop_methods=prepared.methods, duplicates_dropped=prepared.duplicates_dropped,
        dataset_manifest_sha256=manifest_hash(work_dir), prepare_seconds=prepared.seconds, training=trained,
        nose_check_training=NoseSummary.load(work_dir / "nose.json") if with_nose else None,
        versions={p: version(p) for p in ("tensorflow-cpu", "keras", "numpy", "maskgate")
                  if _installed(p)} | {"python": platform.python_version()},
        export_seconds=round(time.perf_counter() - start, 1))


def run_holdout(work_dir: Path, *, source: str, hp: Hyperparameters, weights: Path | None,
                templates: Path | None, progress: bool = True) -> HoldoutSummary:
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
    probs = _predict(model, images)
    threshold = ev.choose_threshold(_predict(model, splits["val"].images), splits["val"].labels)
    result = HoldoutSummary(**asdict(crops), source=source, epochs=len(history["loss"]), crops=int(len(labels)),
                            dataset_manifest_sha256=manifest_hash(work_dir),
                            seconds=round(time.perf_counter() - start, 1),
                            metrics=ev.metrics(probs, labels, threshold))
    np.savez(work_dir / f"holdout-{source}.npz", probs=probs, labels=labels)
    result.save(work_dir / f"holdout-{source}.json")
    return result


def _holdouts(work_dir: Path) -> dict[str, HoldoutSummary]:
    """Leave-one-source-out results made from the current manifest (stale ones are ignored)."""
    current = manifest_hash(work_dir)
    results = (HoldoutSummary.load(path) for path in sorted(work_dir.glob("holdout-*.json")))
    return {r.source: r for r in results if r.dataset_manifest_sha256 == current}


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
