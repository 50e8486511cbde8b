"""The MobileNetV2-1.0 ImageNet port: Keras float weights from the int8 TFLite file, checked against it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maskgate_train.cli import main as train_cli
from maskgate_train.imagenet import (PORTED_FILE, TFLITE_FILE, build_backbone, check_photo, convolutions, parity,
                                     _interpreter)
from maskgate_train.train import Hyperparameters, build_model

IMAGENET = Path(__file__).resolve().parents[2] / "shared" / "models" / "imagenet"
TFLITE = IMAGENET / TFLITE_FILE
PHOTOS = {"cat.bmp": "Egyptian cat", "grace_hopper.bmp": "military uniform", "parrot.jpg": "macaw"}
pytestmark = pytest.mark.skipif(not all((IMAGENET / "test" / p).is_file() for p in PHOTOS) or not TFLITE.is_file(),
                                reason="../shared/models/imagenet (TFLite model and check photos) is not beside "
                                       "the repository")


@pytest.fixture(scope="module")
def ported(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("work")
    assert train_cli(["port-imagenet", "--work-dir", str(work), "--imagenet-tflite", str(TFLITE)]) == 0
    return work / PORTED_FILE


def test_the_port_gives_the_tflite_models_class_and_features_on_the_check_photos(ported):
    model = build_backbone()
    model.load_weights(ported)
    labels = (IMAGENET / "test" / "imagenet_labels.txt").read_text().splitlines()
    checks = parity(model, TFLITE, [IMAGENET / "test" / p for p in PHOTOS])
    assert [labels[c["tflite_class"]] for c in checks] == list(PHOTOS.values())
    assert [labels[c["keras_class"]] for c in checks] == list(PHOTOS.values())
    # The float port of an int8 model is not exact; measured 0.997–0.999.
    assert all(c["feature_cosine"] >= 0.99 for c in checks), checks


def test_an_untrained_backbone_does_not_pass_for_the_port():
    checks = parity(build_backbone(), TFLITE, [IMAGENET / "test" / "parrot.jpg"])
    assert checks[0]["feature_cosine"] < 0.9


def test_the_recipe_builds_the_wide_backbone_at_its_own_input_size_from_the_port(ported):
    _, backbone = build_model(128, Hyperparameters(alpha=1.0), ported)
    ported_convs = convolutions(_interpreter(TFLITE))
    assert backbone.input_shape == (None, 128, 128, 3)
    np.testing.assert_allclose(backbone.get_layer("Conv1").get_weights()[0], ported_convs[0][1])
    beta = backbone.get_layer("Conv_1_bn").get_weights()[1]
    np.testing.assert_allclose(beta, ported_convs[51][2], rtol=1e-6)


def test_check_photos_are_what_the_tflite_model_takes():
    rgb = check_photo(IMAGENET / "test" / "parrot.jpg")
    assert rgb.shape == (224, 224, 3) and rgb.dtype == np.uint8


def test_a_tflite_file_that_is_not_mobilenet_v2_is_refused_in_one_line(tmp_path, capsys):
    bundle_model = Path(__file__).resolve().parents[1] / "models" / "mask_classifier" / "nose.tflite"
    assert train_cli(["port-imagenet", "--work-dir", str(tmp_path), "--imagenet-tflite", str(bundle_model),
                      "--check-photos", str(IMAGENET / "test")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maskgate-train: ") and "convolutions" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / PORTED_FILE).exists()


def test_a_missing_tflite_file_is_named(tmp_path, capsys):
    assert train_cli(["port-imagenet", "--work-dir", str(tmp_path), "--imagenet-tflite", str(tmp_path / "no.tflite")]) == 2
    assert "ImageNet TFLite model not found" in capsys.readouterr().err
