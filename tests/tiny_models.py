"""Small real TFLite classifier bundles for tests.

The model looks only at mean colour: blue crops → with_mask, red → without_mask,
green → incorrect_mask. That makes its answers predictable for every quantisation.
The bundles are committed under ``tests/fixtures/tiny_bundles/`` so the device tests need no
TensorFlow; rebuild them (with the ``train`` extra) by running ``python tests/tiny_models.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from maskgate.vision.classifier import LABELS, NOSE_LABELS, BundleMetadata, NoseCheck

FIXTURES = Path(__file__).parent / "fixtures" / "tiny_bundles"
QUANTISATIONS = ("float32", "int8", "uint8")
NOSE_INPUT_SIZE = 16


def copy_bundle(quantisation: str, out_dir: Path) -> Path:
    """A writable copy of the committed fixture bundle (tests may break their copy)."""
    shutil.copytree(FIXTURES / quantisation, out_dir)
    return out_dir


def build_bundle(out_dir: Path, *, input_size: int = 32, quantisation: str = "int8", nose_check: bool = False) -> Path:
    """Write classifier.tflite + metadata.json for a colour model into ``out_dir``; with ``nose_check``,
    nose.tflite too: the nose is covered when its patch is blue."""
    # logits = 60 * (channel - mean of the other two): RGB input, so index 2 is blue.
    kernel = np.array([[-30, 60, -30], [-30, -30, 60], [60, -30, -30]], np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "classifier.tflite").write_bytes(_colour_model(kernel, input_size, quantisation))
    nose = None
    if nose_check:
        nose_kernel = np.array([[-30, 30], [-30, 30], [60, -60]], np.float32)  # blue → nose_covered
        (out_dir / "nose.tflite").write_bytes(_colour_model(nose_kernel, NOSE_INPUT_SIZE, quantisation))
        nose = NoseCheck(input_size=NOSE_INPUT_SIZE, threshold=0.5, quantisation=quantisation)
    assert NOSE_LABELS == ("nose_covered", "nose_out")
    metadata = BundleMetadata(format="maskgate-classifier/1", labels=list(LABELS), input_size=input_size,
                              colour_order="RGB", normalisation="raw", crop_margin=0.2, threshold=0.8,
                              quantisation=quantisation, nose_check=nose)
    (out_dir / "metadata.json").write_text(metadata.model_dump_json(indent=2) + "\n")
    return out_dir


def _colour_model(kernel: np.ndarray, input_size: int, quantisation: str) -> bytes:
    """Mean colour → dense softmax, converted to TFLite."""
    import tensorflow as tf

    inputs = tf.keras.Input((input_size, input_size, 3))
    x = tf.keras.layers.Rescaling(1 / 255.0)(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    dense = tf.keras.layers.Dense(kernel.shape[1], activation="softmax")
    outputs = dense(x)
    model = tf.keras.Model(inputs, outputs)
    dense.set_weights([kernel, np.zeros(kernel.shape[1], np.float32)])

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantisation in ("int8", "uint8"):
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(64):  # solid colours, so calibration sees the full range of means
                colour = rng.integers(0, 256, 3).astype(np.float32)
                yield [np.broadcast_to(colour, (1, input_size, input_size, 3)).copy()]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = getattr(tf, quantisation)
        converter.inference_output_type = getattr(tf, quantisation)
    return converter.convert()


def solid_crop(bgr: tuple[int, int, int], size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), bgr, np.uint8)


if __name__ == "__main__":
    for q in QUANTISATIONS:
        shutil.rmtree(FIXTURES / q, ignore_errors=True)
        print(build_bundle(FIXTURES / q, quantisation=q))
    shutil.rmtree(FIXTURES / "nose", ignore_errors=True)
    print(build_bundle(FIXTURES / "nose", nose_check=True))
