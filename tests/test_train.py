"""Training recipe end to end on a tiny data set the test makes from real photos, plus bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskgate.vision.classifier import LABELS, BundleMetadata, MaskClassifier
from maskgate.sources.scenes import door_scene
from maskgate_train.cli import main as train_cli
from maskgate_train.dataset import add_synthetic, load_prepared
from maskgate_train.errors import DataError
from maskgate.access.verdict import Rule
from maskgate.config import DecisionConfig
from maskgate.vision.classifier import Prediction
from maskgate_train import door
from maskgate_train.door import jittered
from maskgate_train.evaluate import (choose_threshold, choose_with_nose, door_rule, door_verdicts, held_out_threshold,
                                     tradeoff)
from maskgate_train.prepare import dhash, read_voc, split_of
from maskgate_train.report import render_report
from maskgate_train.records import EvaluateSummary, ExportSummary
from maskgate_train.recipe import run_evaluate, run_export, run_holdout, run_prepare, run_train, run_train_nose
from maskgate_train.train import Hyperparameters, distillation_targets, find_imagenet_weights, smoothed_one_hot, train

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEMPLATES = SHARED_DATA / "mask-templates"
needs_templates = pytest.mark.skipif(not (TEMPLATES / "masks" / "masks.cfg").is_file(),
                                     reason="../shared/data/mask-templates is not beside the repository")
MASKS = [(235, 215, 170), (250, 250, 250), (40, 40, 40), (200, 120, 60), (120, 200, 240)]


def variant(rng, *, masked: bool) -> np.ndarray:
    """A door-camera-like view of the astronaut: random size, angle, light, mask colour."""
    frame = door_scene(face_height_px=int(rng.integers(150, 230)), masked=masked,
                       mask_bgr=MASKS[rng.integers(len(MASKS))])
    angle = float(rng.uniform(-12, 12))
    matrix = cv2.getRotationMatrix2D((320 + rng.uniform(-40, 40), 240), angle, 1.0)
    frame = cv2.warpAffine(frame, matrix, (640, 480), borderMode=cv2.BORDER_REPLICATE)
    frame = cv2.convertScaleAbs(frame, alpha=float(rng.uniform(0.6, 1.3)), beta=float(rng.uniform(-30, 30)))
    return cv2.flip(frame, 1) if rng.random() < 0.5 else frame


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for label, masked in (("with_mask", True), ("without_mask", False)):
        folder = root / "faces" / "tiny" / label
        folder.mkdir(parents=True)
        for i in range(40):
            cv2.imwrite(str(folder / f"{i:03d}.jpg"), variant(rng, masked=masked))
    cv2.imwrite(str(root / "faces" / "tiny" / "with_mask" / "copy.jpg"),
                cv2.imread(str(root / "faces" / "tiny" / "with_mask" / "000.jpg")))  # an exact duplicate
    scenes = root / "scenes"
    (scenes / "images").mkdir(parents=True)
    (scenes / "annotations").mkdir()
    for i in range(12):
        masked = i % 2 == 0
        cv2.imwrite(str(scenes / "images" / f"s{i}.jpg"), variant(rng, masked=masked))
        name = "with_mask" if masked else "mask_weared_incorrect" if i % 4 == 1 else "without_mask"
        write_voc(scenes / "annotations" / f"s{i}.xml", f"s{i}.jpg", [(name, (215, 130, 425, 340))])
    research = root / "research" / "unlicensed" / "with_mask"
    research.mkdir(parents=True)
    for i in range(6):
        cv2.imwrite(str(research / f"r{i}.jpg"), variant(rng, masked=True))
    return root


def write_voc(path: Path, filename: str, objects) -> None:
    body = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects)
    path.write_text(f"<annotation><filename>{filename}</filename>{body}</annotation>")


@pytest.fixture(scope="module")
def prepared(tiny_data, tmp_path_factory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("work")
    return work, run_prepare(tiny_data, work, sources=["scenes", "tiny"], input_size=96, margin=0.2,
                             heldout_sources=["unlicensed"])


@pytest.mark.slow
@needs_templates
def test_prepare_train_evaluate_holdout_export_and_load_on_the_device(prepared, tmp_path):
    work, summary = prepared
    bundle = tmp_path / "bundle"
    assert summary.duplicates_dropped >= 1
    assert summary.methods["tiny/with_mask"].get("detector", 0) >= 30, "the device's detector made the crops"
    splits = load_prepared(work)
    assert all(len(splits[s].labels) for s in ("train", "val", "test"))
    assert splits["train"].images.shape[1:] == (96, 96, 3)
    groups = {s: {r["group"] for r in splits[s].rows} for s in splits}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])

    hp = Hyperparameters(head_epochs=1, fine_tune_epochs=1, batch_size=16, teachers=1)
    trained = run_train(work, bundle, hp=hp, weights=None, templates=TEMPLATES, progress=False)
    assert trained.synthetic_incorrect_mask > 0 and (bundle / "curves.png").is_file()
    assert trained.teacher_seeds == [hp.seed + 1] and (work / f"teacher-{hp.seed + 1}" / "curves.png").is_file()
    assert not list(bundle.glob("teacher*")), "teachers stay in the work dir, out of the bundle"
    nose = run_train_nose(work, hp=hp, weights=None, templates=TEMPLATES, progress=False)
    assert nose.nose_real_patches > 0 and nose.nose_synthetic_patches > 0
    unseen = run_holdout(work, source="scenes", hp=hp, weights=None, templates=TEMPLATES, progress=False)
    assert unseen.teacher_seeds == [], "leave-one-source-out runs train once per source"
    n_scenes = sum(r["source"] == "scenes" for s in ("train", "val", "test") for r in splits[s].rows)
    assert n_scenes >= 10, "12 scene faces, less any near duplicates"
    assert unseen.crops == n_scenes and sum(c["support"] for c in unseen.metrics["per_class"].values()) == n_scenes
    evaluated = run_evaluate(work, bundle)
    assert 0.5 <= evaluated.threshold < 1
    # The nose check ships only when it lets in more masked faces at the same false grants.
    ships_nose = evaluated.nose_threshold is not None
    assert ships_nose == (evaluated.held_out_pooled["masked_granted_rate"]
                          > evaluated.held_out_pooled_face_only["masked_granted_rate"])
    assert evaluated.threshold_basis == "bare faces granted ≤ 1% on the measure-only sources: unlicensed"
    assert set(evaluated.held_out) == {"scenes", "unlicensed"}
    assert (bundle / "tradeoff.png").is_file()
    exported = run_export(work, bundle)
    # One epoch from scratch is nearly uniform, so compare probabilities rather than argmax labels.
    assert exported.metrics.parity["max_abs_prob_difference"] < 0.05
    assert exported.metrics.leave_one_source_out["scenes"].crops == n_scenes
    for name in ("classifier.tflite", "metadata.json", "report.md", "report.json", "confusion.png", "reference.npz"):
        assert (bundle / name).is_file(), name
    report = (bundle / "report.md").read_text()
    written = json.loads((bundle / "metadata.json").read_text())
    assert render_report(BundleMetadata.model_validate(written), ExportSummary.from_json(written)) == report, \
        "metadata.json holds everything report.md says"
    assert EvaluateSummary.load(work / "evaluate.json").threshold == evaluated.threshold
    assert "| scenes | trained without it |" in report and "| unlicensed | shipped recipe |" in report
    assert f"mean prediction of 1 teacher (weight 0.5; the same recipe, seeds {hp.seed + 1};" in report
    verdicts = exported.metrics.held_out_int8_door_verdicts
    assert sum(sum(told.values()) for told in verdicts["all"].values()) == len(splits["heldout"].labels)
    assert "What the door tells each face" in report
    over_time = exported.metrics.held_out_int8_door_over_time
    near = sum(float(r["face_px"]) >= 80 for r in splits["heldout"].rows)
    assert near and over_time["outcomes"]["still"]["all"]["faces"] == near
    assert "### The door over time" in report and "| frames to decide | grant margin |" in report

    assert (bundle / "nose.tflite").is_file() == ships_nose

    classifier = MaskClassifier(bundle)
    assert classifier.metadata.quantisation == "int8" and classifier.input_size == 96
    assert classifier.threshold == evaluated.threshold
    assert classifier.nose_threshold == evaluated.nose_threshold
    (prediction,) = classifier.classify([splits["test"].images[0]])
    assert sum(prediction.probs.values()) == pytest.approx(1.0, abs=1e-6)

    stale = json.loads((work / "nose.json").read_text()) | {"dataset_manifest_sha256": "another manifest"}
    (work / "nose.json").write_text(json.dumps(stale))
    assert run_evaluate(work, tmp_path / "again").nose_threshold is None, "a stale nose check is not used"


def test_door_verdicts_are_what_the_device_rule_says_per_true_label():
    masked, bare, wrong = (LABELS.index(k) for k in ("with_mask", "without_mask", "incorrect_mask"))

    def probs(**p):
        row = np.zeros(len(LABELS))
        for label, value in p.items():
            row[LABELS.index(label)] = value
        return row

    faces = [  # (probabilities, true label, p(nose covered))
        (probs(with_mask=0.95, without_mask=0.05), masked, 0.9),
        (probs(with_mask=0.95, without_mask=0.05), wrong, 0.2),  # the nose check catches it
        (probs(with_mask=0.95, incorrect_mask=0.05), masked, np.nan),  # no landmarks: no nose check
        (probs(with_mask=0.2, incorrect_mask=0.7, without_mask=0.1), wrong, 0.9),
        (probs(without_mask=0.9, with_mask=0.1), bare, 0.1),
        (probs(with_mask=0.6, without_mask=0.3, incorrect_mask=0.1), masked, 0.9),  # below the threshold
    ]
    p, labels, nose = (np.array(column) for column in zip(*faces))
    told = door_verdicts(p, labels, door_rule(0.9, 0.75), nose)
    assert told["with_mask"] == {"granted": 2, "unsure": 1}
    assert told["incorrect_mask"] == {"incorrect": 2}
    assert told["without_mask"] == {"no_mask": 1}
    assert door_verdicts(p, labels, door_rule(0.9))["incorrect_mask"] == {
        "granted": 1, "incorrect": 1}, "without a nose check"


def test_a_jittered_frame_moves_the_keypoints_with_the_face():
    rng = np.random.default_rng(5)
    crop = np.zeros((128, 128, 3), np.uint8)
    cv2.circle(crop, (40, 50), 4, (255, 255, 255), -1)
    frames = [jittered(crop, np.array([[40.0, 50.0]]), rng) for _ in range(20)]
    assert all(image[int(round(p[0, 1])), int(round(p[0, 0]))].min() > 150 for image, p in frames)
    assert len({tuple(np.round(p[0], 2)) for _, p in frames}) == 20, "every frame moves the face"
    assert jittered(crop, None, rng)[1] is None


def brightness_classify(images, keypoints=None):
    """Bright crops are clearly masked, dark ones bare, grey ones unsure (with_mask, below 0.9)."""
    assert keypoints is not None and keypoints[0].shape == (5, 2)
    brightness = float(images[0].mean())
    if brightness > 180:
        return [Prediction({"with_mask": 0.97, "without_mask": 0.02, "incorrect_mask": 0.01}, 0.9)]
    if brightness < 70:
        return [Prediction({"with_mask": 0.03, "without_mask": 0.95, "incorrect_mask": 0.02}, 0.1)]
    return [Prediction({"with_mask": 0.6, "without_mask": 0.3, "incorrect_mask": 0.1}, 0.9)]


def test_people_at_the_door_are_simulated_through_the_device_decider():
    crops = np.stack([np.full((128, 128, 3), v, np.uint8) for v in (230, 20, 128)])
    points = [np.array([[40, 50], [88, 50], [64, 70], [50, 95], [78, 95]], np.float32)] * 3
    labels = np.array([LABELS.index(k) for k in ("with_mask", "without_mask", "incorrect_mask")])
    walks = door.simulate(brightness_classify, crops, points, np.array([120.0, 120.0, 120.0]), labels != 0,
                          min_face_px=80, crop_margin=0.2)
    assert [len(w) for w in walks["still"]] == [30] * 3 and walks["keeps_trying"][0] is None
    assert len(walks["keeps_trying"][1]) == 100
    heights = [fr.face.height for fr in walks["walk_up"][0]]
    assert heights[0] == 40 and heights[-1] == 120 and heights == sorted(heights), "walking up: the face grows"
    turns = [fr.face.keypoints[2][0] - (fr.face.keypoints[0][0] + fr.face.keypoints[1][0]) / 2
             for fr in walks["head_turns"][0]]
    assert max(turns) > 5 and min(turns) < -5, "the nose moves off the eyes' midpoint both ways"

    decision = DecisionConfig()
    rule = Rule.from_config(decision, threshold=0.9, nose_threshold=0.75)
    told = door.outcomes(walks, labels, rule=rule, decision=decision)
    for scenario in ("still", "head_turns", "walk_up"):
        assert [told[scenario][k][o] for k, o in (("with_mask", "granted"), ("without_mask", "denied"),
                                                  ("incorrect_mask", "checking"))] == [1, 1, 1], scenario
    assert told["still"]["all"]["median_seconds"] <= 0.5
    assert told["walk_up"]["with_mask"]["median_seconds"] < told["walk_up"]["all"]["p95_seconds"] + 1
    assert told["keeps_trying"]["incorrect_mask"]["granted"] == 0, "unsure for 10 s: never let in"
    rows = door.sweep(walks, labels, rule=rule, decision=decision, candidates=[{"frames_to_decide": 40}])
    assert rows[0]["masked_granted_first"]["still"] == 0.0, "30 frames are fewer than the 40 it needs"
    assert "| still | with_mask | 1 | 100.0 % |" in "\n".join(door.report_lines(
        {**door.measure(brightness_classify, crops, points, np.full(3, 120.0), labels, rule=rule, decision=decision,
                        crop_margin=0.2)}))


def test_a_turned_face_moves_its_nose_off_the_eyes_midpoint():
    crop = np.zeros((128, 128, 3), np.uint8)
    points = np.array([[40, 50], [88, 50], [64, 70], [50, 95], [78, 95]], np.float32)
    for yaw in (-0.5, 0.25, 0.5):
        image, moved = door.turned(crop, points, yaw)
        offset = (moved[2, 0] - (moved[0, 0] + moved[1, 0]) / 2) / abs(moved[1, 0] - moved[0, 0])
        assert image.shape == crop.shape and offset == pytest.approx(yaw, abs=0.1)


def test_distillation_targets_keep_the_label_largest_and_sum_to_one():
    labels = np.array([0, 1, 2, 2])
    teachers = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [1.0, 0.0, 0.0], [0.3, 0.3, 0.4]], np.float32)
    soft = distillation_targets(labels, teachers, weight=0.5)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(soft[0], [0.6, 0.35, 0.05], atol=1e-6)
    assert all(soft[i, label] >= soft[i].max() for i, label in enumerate(labels))
    np.testing.assert_allclose(distillation_targets(labels, teachers, weight=0.0), np.eye(3)[labels])
    with pytest.raises(ValueError, match="label keeps the larger share"):
        distillation_targets(labels, teachers, weight=0.6)


def test_soft_targets_that_contradict_the_labels_are_refused(prepared, tmp_path):
    splits = load_prepared(prepared[0])
    train_split = splits["train"]
    wrong = np.eye(3, dtype=np.float32)[(train_split.labels + 1) % 3]
    with pytest.raises(ValueError, match="largest on its label"):
        train(train_split, splits["val"], input_size=96, hp=Hyperparameters(), weights=None, out_dir=tmp_path,
              progress=False, targets=wrong)
    assert smoothed_one_hot(np.array([1]), 0.05, 3) == pytest.approx(np.array([[0.05 / 3, 0.95 + 0.05 / 3, 0.05 / 3]]))


def test_measure_only_sources_are_held_out_and_never_reach_training(prepared):
    splits = load_prepared(prepared[0])
    assert [r["source"] for r in splits["heldout"].rows] == ["unlicensed"] * len(splits["heldout"].labels)
    assert len(splits["heldout"].labels) >= 5
    assert all(r["source"] != "unlicensed" for s in ("train", "val", "test") for r in splits[s].rows)
    assert all(len(r["landmarks"].split()) == 10 for r in splits["train"].rows if r["method"] == "detector")


def test_holdout_of_an_unknown_source_is_named(prepared):
    with pytest.raises(DataError, match="no crops from source 'nowhere'"):
        run_holdout(prepared[0], source="nowhere", hp=Hyperparameters(), weights=None, templates=None)


@needs_templates
def test_template_masks_go_on_bare_training_faces_only_and_keep_their_placement(prepared):
    train = load_prepared(prepared[0])["train"]
    merged, counts = add_synthetic(train, seed=0, templates=TEMPLATES)
    n = len(train.labels)
    assert counts["synthetic_incorrect_mask"] > 0 and counts["synthetic_with_mask"] > 0
    bare = {r["path"] for r in train.rows if r["label"] == "without_mask"}
    made = merged.rows[n:]
    assert all(r["source"] == "synthetic" and r["made_from"] in bare for r in made)
    wrong = [LABELS[k] for k, r in zip(merged.labels[n:], made) if r["placement"] in ("below_nose", "chin")]
    assert wrong and set(wrong) == {"incorrect_mask"}
    assert {LABELS[k] for k, r in zip(merged.labels[n:], made) if r["placement"] == "correct"} == {"with_mask"}
    assert not any(r["template"].startswith("gas") for r in made if r["placement"] != "correct" and "template" in r)


def test_threshold_grants_at_most_half_a_percent_of_validation_faces_without_a_mask():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 500 + [1] * 400 + [2] * 100)
    p_with = np.where(labels == 0, rng.uniform(0.6, 1.0, labels.size), rng.uniform(0.0, 0.97, labels.size))
    probs = np.stack([p_with, (1 - p_with) * 0.7, (1 - p_with) * 0.3], axis=1)
    threshold = choose_threshold(probs, labels)
    assert door_rule(threshold).grants(probs[labels != 0]).mean() <= 0.005
    assert door_rule(threshold).grants(probs[labels == 0]).mean() > 0


def test_bare_only_threshold_holds_bare_faces_and_ignores_incorrect_masks():
    rng = np.random.default_rng(2)
    labels = np.array([0] * 500 + [1] * 400 + [2] * 100)
    # Incorrect masks score like masks; bare faces score low.
    p_with = np.select([labels == 1], [rng.uniform(0.0, 0.7, labels.size)], rng.uniform(0.6, 1.0, labels.size))
    probs = np.stack([p_with, (1 - p_with) * 0.7, (1 - p_with) * 0.3], axis=1)
    threshold = choose_threshold(probs, labels, max_rate=0.01, bare_only=True)
    assert door_rule(threshold).grants(probs[labels == 1]).mean() <= 0.01
    assert threshold < choose_threshold(probs, labels, max_rate=0.01), "incorrect masks do not push it up"
    assert door_rule(threshold).grants(probs[labels == 0]).mean() > 0.5


def nose_case(seed: int, *, nose_sees: bool):
    """Masked faces score high; incorrect masks score like masked ones half the time; the nose check
    (when it sees) tells incorrect masks by their uncovered nose."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 600 + [1] * 400 + [2] * 200)
    p_with = np.select([labels == 0, labels == 1], [rng.beta(6, 1, labels.size), rng.beta(3, 4, labels.size)],
                       rng.beta(3, 2, labels.size))
    probs = np.stack([p_with, (1 - p_with) * 0.6, (1 - p_with) * 0.4], axis=1)
    nose = (np.where(labels == 0, rng.beta(8, 1, labels.size), rng.beta(1, 6, labels.size)) if nose_sees
            else rng.uniform(0, 1, labels.size))
    return probs, labels, nose


def test_nose_threshold_lets_in_more_masked_faces_at_no_more_false_grants():
    probs, labels, nose = nose_case(3, nose_sees=True)
    t, u = choose_with_nose(probs, labels, nose, max_bare_rate=0.01)
    face_only = choose_threshold(probs, labels, max_rate=0.01, bare_only=True)
    with_nose, alone = door_rule(t, u).grants(probs, nose), door_rule(face_only).grants(probs)
    assert 0 < u < 1 and t < face_only
    assert with_nose[labels == 1].mean() <= 0.01
    assert with_nose[labels != 0].mean() <= alone[labels != 0].mean()
    assert with_nose[labels == 0].mean() > alone[labels == 0].mean() + 0.05


def test_a_nose_check_that_sees_nothing_is_not_used():
    probs, labels, nose = nose_case(4, nose_sees=False)
    t, u = choose_with_nose(probs, labels, nose, max_bare_rate=0.01)
    gained = door_rule(t, u).grants(probs, nose)[labels == 0].mean() - door_rule(
        choose_threshold(probs, labels, max_rate=0.01, bare_only=True)).grants(probs)[labels == 0].mean()
    assert u == 0.0 or gained < 0.02


def test_held_out_threshold_pools_sources_and_checks_each_on_a_threshold_chosen_without_it():
    rng = np.random.default_rng(1)

    def source(n_masked, n_bare, n_incorrect, incorrect_high):
        labels = np.array([0] * n_masked + [1] * n_bare + [2] * n_incorrect)
        p_with = np.select([labels == 0, labels == 1], [rng.beta(8, 1, labels.size), rng.beta(1, 8, labels.size)],
                           rng.beta(incorrect_high, 2, labels.size))
        rest = 1 - p_with
        share = np.where(labels == 2, 0.2, 0.8)
        return np.stack([p_with, rest * share, rest * (1 - share)], axis=1), labels

    held_out = {"a": source(400, 400, 50, 2), "b": source(300, 100, 150, 6), "c": source(500, 0, 0, 2)}
    threshold, nested = held_out_threshold(held_out)
    probs = np.concatenate([p for p, _ in held_out.values()])
    labels = np.concatenate([y for _, y in held_out.values()])
    assert door_rule(threshold).grants(probs[labels != 0]).mean() <= 0.005
    assert threshold > choose_threshold(*held_out["a"]), "source b's incorrect masks score high: the pool must see them"
    assert set(nested) == {"a", "b", "c"}
    without_b = [np.concatenate([held_out[s][i] for s in "ac"]) for i in (0, 1)]
    assert nested["b"]["threshold"] == pytest.approx(choose_threshold(*without_b))
    assert nested["b"]["false_grant_rate"] > 0.005, "a threshold chosen without b does not hold on b"
    curve = tradeoff(probs, labels, [0.5, threshold, 0.99])
    assert [r["masked_granted"] for r in curve] == sorted((r["masked_granted"] for r in curve), reverse=True)
    assert curve[1]["not_masked_granted"] <= 0.005 < curve[0]["not_masked_granted"]
    assert curve[0]["incorrect_granted"] > curve[0]["bare_granted"]


def test_dhash_sees_near_duplicates_but_not_different_photos():
    from skimage import data

    a = door_scene(masked=False)[100:400, 150:450]
    brighter = cv2.resize(cv2.convertScaleAbs(a, alpha=1.1, beta=5), (128, 128))
    other = cv2.resize(cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR), (300, 300))
    assert bin(dhash(a) ^ dhash(brighter)).count("1") <= 4
    assert bin(dhash(a) ^ dhash(other)).count("1") > 4


def test_near_duplicates_with_another_label_are_kept_in_the_same_group():
    from maskgate_train.prepare import CropRecord, _drop_duplicates

    bare = door_scene(masked=False)[100:400, 150:450]
    crops = [bare, bare.copy(), door_scene(masked=True)[100:400, 150:450]]
    records = [CropRecord("a", "1.jpg", "without_mask", "a/1", "detector", 300.0),
               CropRecord("b", "2.jpg", "without_mask", "b/2", "detector", 300.0),
               CropRecord("c", "3.jpg", "with_mask", "c/3", "detector", 300.0)]
    assert _drop_duplicates(crops, records) == [0, 2]
    assert records[2].group == "a/1"


def test_empty_class_folder_is_named(tmp_path):
    (tmp_path / "faces" / "x" / "with_mask").mkdir(parents=True)
    with pytest.raises(DataError, match="with_mask: class folder holds no images"):
        run_prepare(tmp_path, tmp_path / "w", sources=["x"], input_size=96, margin=0.2)


def test_unreadable_image_is_named(tmp_path):
    folder = tmp_path / "faces" / "x" / "without_mask"
    folder.mkdir(parents=True)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg: not a readable image"):
        run_prepare(tmp_path, tmp_path / "w", sources=["x"], input_size=96, margin=0.2)


def test_voc_with_unknown_class_is_named(tmp_path):
    write_voc(tmp_path / "a.xml", "a.jpg", [("helmet", (1, 2, 3, 4))])
    with pytest.raises(DataError, match="a.xml: unknown class 'helmet'"):
        read_voc(tmp_path / "a.xml", tmp_path)


def test_missing_imagenet_weights_are_named(tmp_path):
    with pytest.raises(DataError, match="0.35_224_no_top.h5: ImageNet weights not found"):
        find_imagenet_weights(tmp_path)


def test_cli_reports_bad_data_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "maskgate_train.cli", "prepare", "--data", str(tmp_path),
                           "--sources", "nope", "--work-dir", str(tmp_path / "w")], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("nope: source folder not found")


@pytest.mark.skipif(not (SHARED_DATA / "scenes" / "annotations").is_dir(), reason="../shared/data is not beside the repository")
def test_every_shared_voc_file_parses_with_known_classes():
    annotations = sorted((SHARED_DATA / "scenes" / "annotations").glob("*.xml"))
    faces = [read_voc(a, SHARED_DATA / "scenes" / "images")[1] for a in annotations]
    assert len(annotations) == 682 and sum(map(len, faces)) > 3000


def test_photos_with_an_incorrect_mask_get_a_larger_share_of_validation_and_test():
    groups = [f"scenes/img{i}" for i in range(2000)]
    held_out = lambda fractions: np.mean([split_of(g, fractions) != "train" for g in groups])
    assert held_out((0.8, 0.1)) == pytest.approx(0.2, abs=0.03)
    assert held_out((0.6, 0.2)) == pytest.approx(0.4, abs=0.03)
    assert [split_of(g) for g in groups[:50]] == [split_of(g) for g in groups[:50]]


def test_collect_saves_face_crops_from_the_device_frame_source_headless(tmp_path, capsys):
    assert train_cli(["collect", "scenes", "--out", str(tmp_path), "--label", "with_mask",
                      "--every", "4", "--count", "3", "--size", "96"]) == 0
    saved = sorted((tmp_path / "with_mask").glob("*.jpg"))
    assert len(saved) == 3 and capsys.readouterr().out.strip().endswith("saved 3 crops")
    assert cv2.imread(str(saved[0])).shape == (96, 96, 3)


def test_collect_names_a_missing_video_in_one_line(tmp_path, capsys):
    assert train_cli(["collect", str(tmp_path / "door.mp4"), "--out", str(tmp_path), "--label", "with_mask"]) == 2
    assert capsys.readouterr().err.strip() == f"maskgate-train: {tmp_path / 'door.mp4'}: replay source not found"
