"""Step 4 — export: full-integer int8 TFLite and the bundle the device loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskgate.vision.adapt import REFERENCE_FILE, model_sha256
from maskgate.vision.classifier import METADATA_FILE, MODEL_FILE, NOSE_MODEL_FILE, BundleMetadata, Embedder, MaskClassifier

from .train import to_rgb_float


def to_int8_tflite(model, representative_bgr: np.ndarray) -> bytes:
    """Full-integer quantisation, int8 in and out, calibrated on real training crops."""
    import tensorflow as tf

    samples = to_rgb_float(representative_bgr)

    def representative():
        for image in samples:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def write_bundle(bundle_dir: Path, tflite: bytes, metadata: BundleMetadata, nose_tflite: bytes | None = None) -> None:
    """classifier.tflite (+ nose.tflite) + metadata.json, written through the schema the device reads."""
    if (nose_tflite is None) != (metadata.nose_check is None):
        raise ValueError("a nose check needs both its model and its metadata")
    bundle_dir.mkdir(parents=True, exist_ok=True)
    (bundle_dir / MODEL_FILE).write_bytes(tflite)
    if nose_tflite is not None:
        (bundle_dir / NOSE_MODEL_FILE).write_bytes(nose_tflite)
    else:
        (bundle_dir / NOSE_MODEL_FILE).unlink(missing_ok=True)
    (bundle_dir / METADATA_FILE).write_text(metadata.model_dump_json(indent=2) + "\n")


def bundle_probs(bundle_dir: Path, images_bgr: np.ndarray, keypoints: list[np.ndarray | None] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and p(nose covered) (NaN: no nose check, or no keypoints for that crop) from the
    exported bundle, through the device's own classifier."""
    classifier = MaskClassifier(bundle_dir, num_threads=2)
    labels = classifier.metadata.labels
    keypoints = keypoints if keypoints is not None else [None] * len(images_bgr)
    probs, nose = [], []
    for image, points in zip(images_bgr, keypoints):
        (p,) = classifier.classify([image], None if points is None else [points])
        probs.append([p.probs[label] for label in labels])
        nose.append(np.nan if p.nose_covered is None else p.nose_covered)
    return np.array(probs), np.array(nose)


def write_reference(bundle_dir: Path, images_bgr: np.ndarray, labels: np.ndarray, *, per_class: int = 200,
                    seed: int = 0) -> int:
    """``reference.npz``: the exported model's embeddings of up to ``per_class`` real faces of each class
    (validation and test photos of the licensed sources), which ``maskgate model adapt`` fits beside a
    site's faces and checks false grants on. Embeddings only, no photos; returns how many."""
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:per_class]
                                   for k in np.unique(labels)]))
    classifier = MaskClassifier(bundle_dir, num_threads=2)
    embedder = Embedder(bundle_dir / MODEL_FILE, classifier.input_size)
    embeddings = embedder.embed(classifier._batch(images_bgr[keep]))
    np.savez_compressed(bundle_dir / REFERENCE_FILE, embeddings=embeddings.astype(np.float16),
                        labels=labels[keep].astype(np.int8), model_sha256=model_sha256(bundle_dir))
    return len(keep)
