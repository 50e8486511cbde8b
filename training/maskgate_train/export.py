"""Step 4 — export: full-integer int8 TFLite and the bundle the device loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskgate.vision.classifier import METADATA_FILE, MODEL_FILE, BundleMetadata, MaskClassifier

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


def write_bundle(bundle_dir: Path, tflite: bytes, metadata: BundleMetadata) -> None:
    """classifier.tflite + metadata.json, written through the schema the device reads."""
    bundle_dir.mkdir(parents=True, exist_ok=True)
    (bundle_dir / MODEL_FILE).write_bytes(tflite)
    (bundle_dir / METADATA_FILE).write_text(metadata.model_dump_json(indent=2) + "\n")


def bundle_probs(bundle_dir: Path, images_bgr: np.ndarray) -> np.ndarray:
    """Probabilities from the exported bundle through the device's own classifier."""
    classifier = MaskClassifier(bundle_dir, num_threads=2)
    labels = classifier.metadata.labels
    return np.array([[p.probs[label] for label in labels] for p in classifier.classify(list(images_bgr))])
