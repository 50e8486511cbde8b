"""The model bundle that ships in models/: loads, fits the Pi, and answers sensibly on real photos."""

from __future__ import annotations

import pytest

from maskgate.vision.classifier import NOSE_MODEL_FILE, MaskClassifier, default_bundle_dir, model_files
from maskgate.vision.core import InferenceCore
from maskgate.sources.scenes import door_scene
from maskgate.access.verdict import Rule
from maskgate.config import DecisionConfig

BUNDLE = default_bundle_dir()
pytestmark = pytest.mark.skipif(
    not (BUNDLE / "metadata.json").is_file(), reason=f"no shipped model bundle at {BUNDLE} yet"
)


@pytest.fixture(scope="module")
def core(detector):
    return InferenceCore(detector, MaskClassifier())


def door_rule(classifier: MaskClassifier) -> Rule:
    return Rule.from_config(DecisionConfig(), threshold=classifier.threshold, nose_threshold=classifier.nose_threshold)


def test_bundle_is_int8_and_small():
    classifier = MaskClassifier()
    assert classifier.metadata.quantisation == "int8"
    assert sum(path.stat().st_size for path in model_files(BUNDLE, classifier.metadata)) <= 1024 * 1024
    assert set(classifier.metadata.labels) == {"with_mask", "without_mask", "incorrect_mask"}


def test_metadata_matches_the_files():
    classifier = MaskClassifier()
    assert all(path.is_file() for path in model_files(BUNDLE, classifier.metadata))
    nose = classifier.metadata.nose_check
    assert (BUNDLE / NOSE_MODEL_FILE).is_file() == (nose is not None)
    if nose is not None:
        assert nose.quantisation == "int8" and 0 < nose.threshold < 1


def test_bare_face_is_denied(core, astronaut):
    result = core.process(astronaut)
    (face,) = result.faces
    assert face.prediction.label == "without_mask"
    if core.classifier.nose_threshold is not None:
        assert face.prediction.nose_covered < core.classifier.nose_threshold, "the nose check sees the nose"
    assert door_rule(core.classifier).judge(result.faces).reason in ("no_mask", "incorrect")


def test_bare_face_at_the_door_is_denied(core):
    result = core.process(door_scene(masked=False))
    assert door_rule(core.classifier).judge(result.faces).outcome == "denied"


def test_masked_face_at_the_door_is_seen_as_masked(core):
    result = core.process(door_scene(masked=True))
    (face,) = result.faces
    assert face.prediction.label == "with_mask"
    assert door_rule(core.classifier).judge(result.faces).outcome == "granted"


def test_readme_demo_denies_the_bare_face_and_opens_for_the_masked_one(capsys):
    from maskgate.cli import main

    assert main(["demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    states = [line.split()[1] for line in lines if " relay " in line and "faces:" in line]
    assert states.index("denied") < states.index("granted")
    assert any("granted   relay OPEN" in line for line in lines)
    assert lines[-1].startswith("door locked;")
