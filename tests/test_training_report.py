"""The training steps' typed records, the thresholds chosen apart from the measuring, and report.md's sections."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
from maskgate.vision.classifier import BundleMetadata
from maskgate_train import evaluate as ev
from maskgate_train.evaluate import Predicted, choose_thresholds, door_rule
from maskgate_train.records import (EvaluateSummary, ExportMetrics, ExportSummary, HoldoutSummary, NoseSummary,
                                    PrepareSummary, Provenance, TrainSummary)
from maskgate_train.report import render_report
from maskgate_train.train import Hyperparameters

MASKED, BARE, INCORRECT = 0, 1, 2


def faces(rng, *, n: int = 600, bare_high: float = 0.4, incorrect_high: float = 0.9) -> Predicted:
    """Masked faces score high; bare ones up to ``bare_high``; incorrect masks up to ``incorrect_high``."""
    labels = np.array([MASKED] * n + [BARE] * n + [INCORRECT] * (n // 3))
    top = np.select([labels == MASKED, labels == BARE], [1.0, bare_high], incorrect_high)
    low = np.where(labels == MASKED, 0.6, 0.0)
    p_with = rng.uniform(low, top)
    return Predicted(np.stack([p_with, (1 - p_with) * 0.7, (1 - p_with) * 0.3], axis=1), labels)


def never() -> Predicted:
    raise AssertionError("the validation split is not predicted when unseen sources exist")


def test_the_threshold_rises_until_bare_faces_from_an_unseen_source_are_refused():
    rng = np.random.default_rng(0)
    easy = choose_thresholds({"a": faces(rng, bare_high=0.4)}, {}, never)
    assert easy.threshold == 0.5 and easy.nose_threshold is None, "bare faces all score low: the floor"
    unseen = faces(rng, bare_high=0.95, incorrect_high=1.0)
    hard = choose_thresholds({"a": unseen}, {}, never)
    assert hard.threshold > 0.9 and hard.face_only == hard.threshold and hard.basis.endswith("measure-only sources: a")
    granted = door_rule(hard.threshold).grants(unseen.probs)
    assert granted[unseen.labels == BARE].mean() <= ev.MAX_BARE_GRANT_RATE < granted[unseen.labels == INCORRECT].mean(), \
        "bare faces are held to the limit, incorrect masks are not"


def test_held_out_licensed_sources_hold_incorrect_masks_too_and_validation_comes_last():
    rng = np.random.default_rng(1)
    held_out = {"a": faces(rng), "b": faces(rng)}
    chosen = choose_thresholds({}, held_out, never)
    pooled = [np.concatenate(c) for c in zip(*(p[:2] for p in held_out.values()))]
    assert door_rule(chosen.threshold).grants(pooled[0])[pooled[1] != MASKED].mean() <= ev.MAX_FALSE_GRANT_RATE
    assert chosen.threshold > 0.85, "incorrect masks score up to 0.9 and count as false grants here"
    assert set(chosen.check) == {"a", "b"} and chosen.basis == "pooled held-out sources: a, b"
    validation = faces(rng)
    assert choose_thresholds({}, {}, lambda: validation).basis == "validation split"


def test_a_nose_check_ships_only_when_it_lets_in_more_masked_faces():
    rng = np.random.default_rng(3)
    unseen = faces(rng, bare_high=0.9)
    sees = np.where(unseen.labels == MASKED, rng.uniform(0.7, 1.0, unseen.labels.size),
                    rng.uniform(0.0, 0.3, unseen.labels.size))
    with_nose = choose_thresholds({"a": Predicted(*unseen[:2], sees)}, {}, never)
    assert with_nose.nose_threshold is not None and with_nose.threshold < with_nose.face_only
    blind = choose_thresholds({"a": Predicted(*unseen[:2], np.full(unseen.labels.size, 0.5))}, {}, never)
    assert blind.nose_threshold is None and blind.threshold == blind.face_only


def test_step_records_round_trip_through_their_json_files(tmp_path):
    trained = TrainSummary(real_train_crops=10, train_crops=30, synthetic_incorrect_mask=12, teacher_seeds=[5, 6],
                           seconds=3.5, epochs=2, hyperparameters=Hyperparameters(teachers=2, alpha=1.0))
    trained.save(tmp_path / "train.json")
    assert TrainSummary.load(tmp_path / "train.json") == trained
    assert json.loads((tmp_path / "train.json").read_text())["hyperparameters"]["alpha"] == 1.0

    unseen = faces(np.random.default_rng(2), n=30)
    holdout = HoldoutSummary(source="scenes", crops=70, seconds=9.0, metrics=ev.metrics(*unseen[:2], 0.8))
    holdout.save(tmp_path / "holdout-scenes.json")
    written = json.loads((tmp_path / "holdout-scenes.json").read_text())
    assert "metrics" not in written and written["float"]["threshold"] == 0.8, "the file keeps its 'float' key"
    assert HoldoutSummary.load(tmp_path / "holdout-scenes.json").metrics["confusion"] == holdout.metrics["confusion"]

    evaluated = EvaluateSummary(float_test=ev.metrics(*unseen[:2], 0.8), float_test_by_source={}, threshold=0.8,
                                nose_threshold=None, threshold_face_only=0.8, threshold_basis="validation split",
                                held_out={}, held_out_threshold_check={})
    evaluated.save(tmp_path / "evaluate.json")
    again = EvaluateSummary.load(tmp_path / "evaluate.json")
    assert json.dumps(again.to_json()) == json.dumps(evaluated.to_json()) and again.held_out_pooled is None

    (tmp_path / "prepare.json").write_text(json.dumps({  # written before measure-only sources existed
        "crops": 9, "duplicates_dropped": 1, "counts": {}, "methods": {}, "seconds": 1.0, "input_size": 96,
        "margin": 0.2, "sources": ["tiny"]}))
    prepared = PrepareSummary.load(tmp_path / "prepare.json")
    assert prepared.heldout_sources == [] and prepared.site_data is None and prepared.input_size == 96


def summary_of(unseen: Predicted, test: Predicted, *, threshold: float, loso: dict) -> ExportSummary:
    pooled = ev.metrics(*unseen[:2], threshold)
    metrics = ExportMetrics(
        test_int8=ev.metrics(*test[:2], threshold), test_int8_by_source={}, test_float=ev.metrics(*test[:2], threshold),
        parity={"label_agreement": 0.99, "accuracy_drop_points": 0.25, "max_abs_prob_difference": 0.1},
        leave_one_source_out=loso, threshold_basis="the measure-only sources", threshold_face_only=threshold,
        held_out={"scenes": ev.metrics(*test[:2], threshold), "ilc": pooled}, held_out_pooled=pooled,
        held_out_pooled_face_only=pooled, held_out_threshold_check={"ilc": ev.metrics(*unseen[:2], 0.7)},
        tradeoff=ev.tradeoff(*unseen[:2], [0.5, threshold]))
    provenance = Provenance(
        date="2026-12-03", sources=["scenes"], measured_only=["ilc"], synthetic_masks="MaskTheFace", crop_counts={},
        crop_methods={}, duplicates_dropped=0, dataset_manifest_sha256="ab" * 32, prepare_seconds=12.0,
        training=TrainSummary(synthetic_with_mask=40, real_train_crops=300, seconds=60.0, epochs=9),
        nose_check_training=NoseSummary(seconds=30.0, epochs=4, input_size=96, excluded_sources=[],
                                        dataset_manifest_sha256="ab" * 32, nose_real_patches=200,
                                        nose_synthetic_patches=180),
        versions={}, export_seconds=20.0)
    return ExportSummary(metrics, provenance)


def test_the_report_shows_each_section_with_its_figures():
    rng = np.random.default_rng(4)
    unseen, test = faces(rng, bare_high=0.95), faces(rng, n=60)
    bundle = BundleMetadata(format="maskgate-classifier/1", labels=["with_mask", "without_mask", "incorrect_mask"],
                            input_size=96, normalisation="raw", crop_margin=0.2, threshold=0.9,
                            quantisation="int8")
    loso = {"scenes": HoldoutSummary(source="scenes", seconds=100.0)}
    report = render_report(bundle, summary_of(unseen, test, threshold=0.9, loso=loso))
    pooled = ev.metrics(*unseen[:2], 0.9)
    assert f"| scenes | trained without it | {test.labels.size} |" in report
    assert f"| ilc | shipped recipe | {unseen.labels.size} | {pooled['masked_granted_rate']:.1%} |" in report
    assert f"| masked faces granted | {pooled['masked_granted_rate']:.1%} | ≥ 95 % | **missed** |" in report
    bare_granted = f"{pooled['false_grant_rate']:.1%}"
    assert f"| faces without a correct mask granted | {bare_granted} | ≤ 0.5 % | **missed** |" in report
    assert "| 0.900 (shipped) |" in report and "| ilc | 0.700 |" in report
    assert "Chosen on the measure-only sources — " in report
    assert "### Nose check" not in report, "the bundle has no nose check"
    assert "Nose check: 200 real nose patches and 180 from synthetic masks" in report
    assert "Wall time: prepare 12 s, train 60 s, leave-one-source-out 100 s, export 20 s." in report
    assert "40 with_mask (nose bridge to chin)" in report and "Distilled" not in report

    no_bare = summary_of(unseen, test, threshold=0.9, loso=loso)  # metadata.json writes NaN as null
    no_bare = replace(no_bare, metrics=replace(no_bare.metrics, held_out_pooled=pooled | {"false_grant_rate": None}))
    assert "| faces without a correct mask granted | – | ≤ 0.5 % | **missed** |" in render_report(bundle, no_bare)

    checked = BundleMetadata.model_validate(bundle.model_dump() | {"nose_check": {"input_size": 96, "threshold": 0.6, "quantisation": "int8"}})
    nose = np.where(unseen.labels == 0, 0.9, 0.1)
    summary = summary_of(unseen, test, threshold=0.9, loso=loso)
    matched = ev.matched(*unseen[:2], nose, 0.6, rates=(0.01,))
    metrics = replace(summary.metrics, nose_check_matched=matched)
    report = render_report(checked, replace(summary, metrics=metrics))
    assert "### Nose check" in report and "with the nose check (p(with_mask) ≥ 0.900 and p(nose covered) ≥ 0.60)" in report
    assert f"| ≤ 1.0% | {matched[0]['face_only']:.1%} | {matched[0]['with_nose_check']:.1%} |" in report
