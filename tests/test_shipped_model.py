"""The model bundle that ships in models/: loads, fits the Pi, and answers sensibly on real photos."""

from __future__ import annotations

import pytest

from maskgate.vision.classifier import MaskClassifier, default_bundle_dir
from maskgate.vision.core import InferenceCore
from maskgate.sources.scenes import door_scene
from maskgate.access.verdict import judge_frame

BUNDLE = default_bundle_dir()
pytestmark = pytest.mark.skipif(
    not (BUNDLE / "metadata.json").is_file(), reason=f"no shipped model bundle at {BUNDLE} yet"
)


@pytest.fixture(scope="module")
def core(detector):
    return InferenceCore(detector, MaskClassifier())


def test_bundle_is_int8_and_small():
    classifier = MaskClassifier()
    assert classifier.metadata.quantisation == "int8"
    assert (BUNDLE / "classifier.tflite").stat().st_size <= 1024 * 1024
    assert set(classifier.metadata.labels) == {"with_mask", "without_mask", "incorrect_mask"}


def test_bare_face_is_denied(core, astronaut):
    result = core.process(astronaut)
    (face,) = result.faces
    assert face.prediction.label == "without_mask"
    assert judge_frame(result.faces, threshold=core.classifier.threshold).outcome == "denied"


def test_bare_face_at_the_door_is_denied(core):
    result = core.process(door_scene(masked=False))
    assert judge_frame(result.faces, threshold=core.classifier.threshold).outcome == "denied"


def test_masked_face_at_the_door_is_seen_as_masked(core):
    result = core.process(door_scene(masked=True))
    (face,) = result.faces
    assert face.prediction.label == "with_mask"


def test_readme_demo_denies_the_bare_face_and_opens_for_the_masked_one(capsys):
    from maskgate.cli import main

    assert main(["demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    states = [line.split()[1] for line in lines if line.strip().endswith(("%", "-")) and "relay" in line]
    assert states.index("denied") < states.index("granted")
    assert any("granted   relay OPEN" in line for line in lines)
    assert lines[-1].startswith("door locked;")
