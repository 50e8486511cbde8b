"""On-device adaptation: embeddings from the bundle's own model, a refitted last layer, and its guard."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from maskgate.cli import main
from maskgate.records.faces import FaceStore
from maskgate.vision.adapt import REFERENCE_FILE, AdaptRefused, adapt, current_head, model_sha256
from maskgate.vision.bundles import Models
from maskgate.vision.classifier import HEAD_FILE, Embedder, MaskClassifier, default_bundle_dir, softmax

MASKED, BARE, WRONG = 0, 1, 2
TEAL = (128, 126, 100)  # BGR: a mask colour the tiny model is unsure of (p(with_mask) ≈ 0.7, below 0.8)


def colour_crops(bgr, n, rng, size=32, spread=12):
    """Plain crops of one colour with some noise: the tiny model sees only their mean colour."""
    base = np.array(bgr, np.float64) + rng.normal(0, spread, (n, 1, 1, 3))
    return np.clip(base + rng.normal(0, 4, (n, size, size, 3)), 0, 255).astype(np.uint8)


def embed(bundle, crops):
    classifier = MaskClassifier(bundle)
    return Embedder(bundle / "classifier.tflite", classifier.input_size).embed(classifier._batch(crops))


@pytest.fixture
def bundle(tiny_bundles, tmp_path):
    """The tiny int8 bundle with reference embeddings: blue masks, red bare faces, green wrongly worn."""
    rng = np.random.default_rng(1)
    out = tmp_path / "bundle"
    out.mkdir()
    for name in ("classifier.tflite", "metadata.json"):
        (out / name).write_bytes((tiny_bundles["int8"] / name).read_bytes())
    crops = np.concatenate([colour_crops(c, 60, rng) for c in ((230, 60, 40), (40, 60, 230), (40, 230, 60))])
    np.savez(out / REFERENCE_FILE, embeddings=embed(out, crops).astype(np.float16),
             labels=np.repeat([MASKED, BARE, WRONG], 60).astype(np.int8), model_sha256=model_sha256(out))
    return out


@pytest.mark.parametrize("quantisation", ["int8", "uint8", "float32"])
def test_the_embedding_and_last_layer_reproduce_the_models_answers(tiny_bundles, quantisation):
    bundle = tiny_bundles[quantisation]
    crops = colour_crops((120, 90, 150), 12, np.random.default_rng(2), spread=60)
    classifier = MaskClassifier(bundle)
    expected = np.array([[p.probs[k] for k in classifier.metadata.labels] for p in classifier.classify(list(crops))])
    embedder = Embedder(bundle / "classifier.tflite", classifier.input_size)
    assert embedder.size == 3, "the tiny model's embedding: its mean colour"
    got = softmax(embedder.embed(classifier._batch(crops)) @ embedder.weights.T + embedder.bias)
    assert np.abs(got - expected).max() < 0.1  # int8 rounding of logits and output


def test_the_shipped_int8_classifier_exposes_its_embedding():
    classifier = MaskClassifier()
    crops = colour_crops((120, 110, 140), 4, np.random.default_rng(3), size=classifier.input_size, spread=40)
    embedder = Embedder(default_bundle_dir() / "classifier.tflite", classifier.input_size)
    assert embedder.weights.shape == (3, embedder.size) and embedder.size >= 64
    expected = np.array([[p.probs[k] for k in classifier.metadata.labels] for p in classifier.classify(list(crops))])
    got = softmax(embedder.embed(classifier._batch(crops)) @ embedder.weights.T + embedder.bias)
    assert np.abs(got - expected).max() < 0.02  # the output's own int8 rounding


def site(bundle, rng, n=30, masked_colour=TEAL):
    crops = colour_crops(masked_colour, n, rng, spread=2)
    return embed(bundle, crops), np.full(n, MASKED)


def test_adaptation_lets_in_the_sites_masks_and_holds_the_false_grant_target(bundle):
    embedder, head = current_head(bundle)
    reference = (np.load(bundle / REFERENCE_FILE)["embeddings"].astype(float), np.load(bundle / REFERENCE_FILE)["labels"])
    result = adapt(head, ["with_mask", "without_mask", "incorrect_mask"], 0.8, reference,
                   site(bundle, np.random.default_rng(4)))
    before, after = result.figures["before"], result.figures["after"]
    assert before["site_masked"] < 0.5 and after["site_masked"] == 1.0, "the teal masks are let in after"
    assert after["negatives"] <= result.figures["target_false_grants"]
    assert 0.5 <= result.threshold < 1.0


def test_adaptation_refuses_a_layer_that_would_let_bare_faces_in(bundle):
    # the operator labelled red (bare) faces as masked: the refitted layer would grant bare faces
    embedder, head = current_head(bundle)
    data = np.load(bundle / REFERENCE_FILE)
    reference = (data["embeddings"].astype(float), data["labels"])
    wrong = site(bundle, np.random.default_rng(5), n=60, masked_colour=(40, 60, 230))
    with pytest.raises(AdaptRefused, match="keeps false grants at or below"):
        adapt(head, ["with_mask", "without_mask", "incorrect_mask"], 0.8, reference, wrong, site_weight=5.0)


def test_adaptation_that_lets_in_no_more_of_the_sites_masks_is_refused(bundle):
    # faces labelled masked that look bare, weighed next to nothing: the layer cannot learn them
    embedder, head = current_head(bundle)
    data = np.load(bundle / REFERENCE_FILE)
    hopeless = site(bundle, np.random.default_rng(13), masked_colour=(40, 60, 230))
    with pytest.raises(AdaptRefused, match="lets in no more of the held-out masked site faces"):
        adapt(head, ["with_mask", "without_mask", "incorrect_mask"], 0.8,
              (data["embeddings"].astype(float), data["labels"]), hopeless, site_weight=1e-6)


def test_too_few_faces_or_no_reference_is_refused(bundle, tiny_bundles, tmp_path):
    embedder, head = current_head(bundle)
    data = np.load(bundle / REFERENCE_FILE)
    few = site(bundle, np.random.default_rng(6), n=5)
    with pytest.raises(AdaptRefused, match="label at least 10"):
        adapt(head, ["with_mask", "without_mask", "incorrect_mask"], 0.8, (data["embeddings"], data["labels"]), few)


def collect_crops(state, crops, label):
    store = FaceStore(state)
    for crop in crops:
        face = store.add(crop, when=time.time(), outcome="denied", reason="unsure",
                         probs={"with_mask": 0.4, "without_mask": 0.3, "incorrect_mask": 0.3}, nose_covered=None,
                         keypoints=np.zeros((5, 2)), model="test")
        store.label(face.id, label, by="operator:test")
    store.close()


def config_for(tmp_path, bundle):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"events": {"state_dir": str(tmp_path / "state")},
                                "classifier": {"model_dir": str(bundle)}}))
    return ["--config", str(path)]


def test_model_adapt_stages_a_bundle_whose_classifier_lets_the_sites_masks_in(bundle, tmp_path, capsys):
    rng = np.random.default_rng(7)
    collect_crops(tmp_path / "state", colour_crops(TEAL, 30, rng, spread=2), "masked")
    collect_crops(tmp_path / "state", colour_crops((60, 60, 200), 6, rng), "skip")
    assert main(["model", "adapt", *config_for(tmp_path, bundle)]) == 0
    out = capsys.readouterr().out
    assert "adapted in" in out and "staged bundle" in out
    staged = Models(tmp_path / "state").path("staged")
    assert (staged / HEAD_FILE).is_file() and (staged / REFERENCE_FILE).is_file()
    metadata = json.loads((staged / "metadata.json").read_text())
    assert metadata["adapted_head"] is True and metadata["adapted"]["fitted"]["site"] == 20
    teal = colour_crops(TEAL, 10, np.random.default_rng(8), spread=2)
    old, new = MaskClassifier(bundle), MaskClassifier(staged)
    assert sum(p.probs["with_mask"] >= old.threshold for p in old.classify(list(teal))) < 5
    assert all(p.probs["with_mask"] >= new.threshold for p in new.classify(list(teal)))
    red = colour_crops((40, 60, 230), 5, np.random.default_rng(9))
    assert all(p.label == "without_mask" for p in new.classify(list(red))), "bare faces still refused"


def test_model_adapt_refusal_stages_nothing(bundle, tmp_path, capsys):
    collect_crops(tmp_path / "state", colour_crops((40, 60, 230), 60, np.random.default_rng(10)), "masked")
    assert main(["model", "adapt", "--site-weight", "5", *config_for(tmp_path, bundle)]) == 2
    assert "not installed" in capsys.readouterr().err
    assert Models(tmp_path / "state").status()["staged"] is None


def test_reference_embeddings_of_another_model_are_refused(bundle, tiny_bundles, tmp_path, capsys):
    (bundle / "classifier.tflite").write_bytes((tiny_bundles["uint8"] / "classifier.tflite").read_bytes())
    collect_crops(tmp_path / "state", colour_crops(TEAL, 12, np.random.default_rng(12)), "masked")
    assert main(["model", "adapt", *config_for(tmp_path, bundle)]) == 2
    assert "made for another classifier.tflite" in capsys.readouterr().err


def test_a_bundle_without_reference_embeddings_cannot_be_adapted(tiny_bundles, tmp_path, capsys):
    collect_crops(tmp_path / "state", colour_crops(TEAL, 12, np.random.default_rng(11)), "masked")
    assert main(["model", "adapt", *config_for(tmp_path, tiny_bundles["int8"])]) == 2
    assert "ships no reference embeddings" in capsys.readouterr().err
