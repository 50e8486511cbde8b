"""Mask classifier bundles: every quantisation, and clear errors for broken bundles."""

from __future__ import annotations

import json
import shutil

import pytest
import numpy as np
from tiny_models import solid_crop

from maskgate.vision.classifier import MaskClassifier
from maskgate.errors import ModelError

BLUE, RED, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)  # BGR


@pytest.mark.parametrize("quantisation", ["float32", "int8", "uint8"])
def test_every_quantisation_gives_the_same_answers(tiny_bundles, quantisation):
    classifier = MaskClassifier(tiny_bundles[quantisation], num_threads=1)
    blue, red, green = classifier.classify([solid_crop(BLUE), solid_crop(RED), solid_crop(GREEN)])
    assert (blue.label, red.label, green.label) == ("with_mask", "without_mask", "incorrect_mask")
    for prediction in (blue, red, green):
        assert sum(prediction.probs.values()) == pytest.approx(1.0, abs=1e-6)
        assert prediction.confidence > 0.95


def test_quantised_probabilities_stay_close_to_float(tiny_bundles):
    crops = [solid_crop((b, g, r)) for b, g, r in [(200, 90, 40), (60, 120, 180), (90, 200, 90)]]
    reference = MaskClassifier(tiny_bundles["float32"]).classify(crops)
    for quantisation in ("int8", "uint8"):
        for ref, got in zip(reference, MaskClassifier(tiny_bundles[quantisation]).classify(crops)):
            for label, p in ref.probs.items():
                assert got.probs[label] == pytest.approx(p, abs=0.03)


def test_bundle_settings_come_from_metadata(tiny_bundles):
    classifier = MaskClassifier(tiny_bundles["int8"])
    assert (classifier.input_size, classifier.crop_margin, classifier.threshold) == (32, 0.2, 0.8)


def test_bgr_colour_order_feeds_channels_unswapped(tiny_bundles, tmp_path):
    bundle = shutil.copytree(tiny_bundles["float32"], tmp_path / "bgr")
    meta = json.loads((bundle / "metadata.json").read_text())
    (bundle / "metadata.json").write_text(json.dumps({**meta, "colour_order": "BGR"}))
    (prediction,) = MaskClassifier(bundle).classify([solid_crop(BLUE)])
    assert prediction.label == "without_mask"  # blue in channel 0 is what an RGB model calls red


# Five keypoints (right eye, left eye, nose tip, mouth right, mouth left) of a small face in the crop's centre.
KEYPOINTS = np.array([[13, 13], [19, 13], [16, 16], [14, 19], [18, 19]], np.float32)


def test_nose_check_looks_at_the_nose_patch_the_keypoints_locate(tiny_bundles):
    classifier = MaskClassifier(tiny_bundles["nose"])
    nose_out = solid_crop(BLUE)
    nose_out[12:22, 11:21] = RED  # the nose patch around KEYPOINTS; the crop stays mostly blue
    covered, out, elsewhere = classifier.classify([solid_crop(BLUE), nose_out, nose_out],
                                                  [KEYPOINTS, KEYPOINTS, KEYPOINTS - 10])
    (no_points,) = classifier.classify([nose_out])
    assert out.label == "with_mask" and out.probs["with_mask"] > classifier.threshold
    assert covered.nose_covered > 0.9 and out.nose_covered < 0.1
    assert elsewhere.nose_covered > 0.5, "the patch follows the keypoints"
    assert no_points.nose_covered is None and classifier.nose_threshold == 0.5


def test_a_bundle_without_a_nose_check_scores_no_nose(tiny_bundles):
    (prediction,) = MaskClassifier(tiny_bundles["int8"]).classify([solid_crop(BLUE)], [KEYPOINTS])
    assert prediction.nose_covered is None and MaskClassifier(tiny_bundles["int8"]).nose_threshold is None


def test_missing_nose_model_is_named(tiny_bundles, tmp_path):
    bundle = shutil.copytree(tiny_bundles["nose"], tmp_path / "bundle")
    (bundle / "nose.tflite").unlink()
    with pytest.raises(ModelError, match="nose.tflite: model file not found"):
        MaskClassifier(bundle)


def test_empty_batch(tiny_bundles):
    assert MaskClassifier(tiny_bundles["int8"]).classify([]) == []


@pytest.fixture
def broken_bundle(tiny_bundles, tmp_path):
    return shutil.copytree(tiny_bundles["int8"], tmp_path / "bundle")


def edit_metadata(bundle, **changes):
    meta = json.loads((bundle / "metadata.json").read_text())
    meta.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del meta[key]
    (bundle / "metadata.json").write_text(json.dumps(meta))


def test_missing_bundle_names_the_metadata_file(tmp_path):
    with pytest.raises(ModelError, match=r"nowhere/metadata.json: model metadata not found"):
        MaskClassifier(tmp_path / "nowhere")


def test_corrupt_metadata_names_the_file(broken_bundle):
    (broken_bundle / "metadata.json").write_text("{labels: oops")
    with pytest.raises(ModelError, match="metadata.json: not readable JSON"):
        MaskClassifier(broken_bundle)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"input_size": None}, "input_size: Field required"),
        ({"input_size": "big"}, "input_size: Input should be a valid integer"),
        ({"normalisation": "imagenet"}, "normalisation: Input should be"),
        ({"threshold": 1.5}, "threshold: Input should be less than 1"),
        ({"labels": ["cat", "dog", "bird"]}, "labels must include 'with_mask'"),
        ({"format": "other/2"}, "format: Input should be 'maskgate-classifier/1'"),
    ],
)
def test_invalid_metadata_names_the_key(broken_bundle, changes, message):
    edit_metadata(broken_bundle, **changes)
    with pytest.raises(ModelError, match=message):
        MaskClassifier(broken_bundle)


def test_missing_model_file_is_named(broken_bundle):
    (broken_bundle / "classifier.tflite").unlink()
    with pytest.raises(ModelError, match="classifier.tflite: model file not found"):
        MaskClassifier(broken_bundle)


def test_corrupt_model_file_is_named(broken_bundle):
    (broken_bundle / "classifier.tflite").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelError, match="classifier.tflite: not a valid TFLite model"):
        MaskClassifier(broken_bundle)


def test_input_size_mismatch_is_reported(broken_bundle):
    edit_metadata(broken_bundle, input_size=96)
    with pytest.raises(ModelError, match="does not match input_size 96"):
        MaskClassifier(broken_bundle)


def test_label_count_mismatch_is_reported(broken_bundle):
    edit_metadata(broken_bundle, labels=["with_mask", "without_mask"])
    with pytest.raises(ModelError, match="3 outputs but 2 labels"):
        MaskClassifier(broken_bundle)
