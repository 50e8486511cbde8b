"""Training recipe end to end on a tiny data set the test makes from real photos, plus bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskgate.classifier import MaskClassifier
from maskgate.scenes import door_scene
from maskgate_train.dataset import load_prepared
from maskgate_train.errors import DataError
from maskgate_train.prepare import dhash, read_voc
from maskgate_train.recipe import run_evaluate, run_export, run_prepare, run_train
from maskgate_train.train import Hyperparameters, find_imagenet_weights

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
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
    return root


def write_voc(path: Path, filename: str, objects) -> None:
    body = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for name, b in objects)
    path.write_text(f"<annotation><filename>{filename}</filename>{body}</annotation>")


@pytest.mark.slow
def test_prepare_train_evaluate_export_and_load_on_the_device(tiny_data, tmp_path):
    work, bundle = tmp_path / "work", tmp_path / "bundle"
    prepared = run_prepare(tiny_data, work, sources=["scenes", "tiny"], input_size=96, margin=0.2)
    assert prepared["duplicates_dropped"] >= 1
    assert prepared["methods"]["tiny/with_mask"].get("detector", 0) >= 30, "the device's detector made the crops"
    splits = load_prepared(work)
    assert all(len(splits[s].labels) for s in ("train", "val", "test"))
    assert splits["train"].images.shape[1:] == (96, 96, 3)
    groups = {s: {r["group"] for r in splits[s].rows} for s in splits}
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["val"])

    hp = Hyperparameters(head_epochs=1, fine_tune_epochs=1, batch_size=16)
    trained = run_train(work, bundle, hp=hp, weights=None, progress=False)
    assert trained["synthetic_incorrect_mask"] > 0 and (bundle / "curves.png").is_file()
    evaluated = run_evaluate(work, bundle)
    assert 0.5 <= evaluated["threshold"] < 1
    metadata = run_export(work, bundle)
    # One epoch from scratch is nearly uniform, so compare probabilities rather than argmax labels.
    assert metadata["metrics"]["parity"]["max_abs_prob_difference"] < 0.05
    for name in ("classifier.tflite", "metadata.json", "report.md", "report.json", "confusion.png"):
        assert (bundle / name).is_file(), name

    classifier = MaskClassifier(bundle)
    assert classifier.metadata.quantisation == "int8" and classifier.input_size == 96
    (prediction,) = classifier.classify([splits["test"].images[0]])
    assert sum(prediction.probs.values()) == pytest.approx(1.0, abs=1e-6)


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
    records = [CropRecord("a", "1.jpg", "without_mask", "a/1", "detector", 200.0),
               CropRecord("b", "2.jpg", "without_mask", "b/2", "detector", 200.0),
               CropRecord("c", "3.jpg", "with_mask", "c/3", "detector", 200.0)]
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


@pytest.mark.slow
def test_holdout_trains_without_a_source_and_tests_on_all_of_it(tiny_data, tmp_path):
    from maskgate_train.recipe import run_holdout

    work = tmp_path / "work"
    run_prepare(tiny_data, work, sources=["scenes", "tiny"], input_size=96, margin=0.2)
    result = run_holdout(work, tmp_path / "out", source="scenes",
                         hp=Hyperparameters(head_epochs=1, fine_tune_epochs=1, batch_size=16), weights=None)
    assert result["crops"] == 12 and result["source"] == "scenes"
    assert sum(c["support"] for c in result["float"]["per_class"].values()) == 12
    assert (tmp_path / "out" / "holdout-scenes.json").is_file()
    with pytest.raises(DataError, match="no crops from source 'nowhere'"):
        run_holdout(work, tmp_path / "out", source="nowhere", hp=Hyperparameters(), weights=None)
