"""Step 0 — port-imagenet: ImageNet MobileNetV2-1.0 weights for Keras, from an int8 TFLite file.

The only offline MobileNetV2-1.0 ImageNet weights are Google's int8 post-training-quantised TFLite
model (``tf2_mobilenet_v2_1.0_224_ptq.tflite``, Apache-2.0). Its convolutions carry batch norm folded
in (kernels scaled, the shift in the bias), so the port rebuilds ``keras.applications.MobileNetV2``,
gives every convolution its dequantised kernel and every BatchNormalization layer the identity plus
that bias. Proof: the same top-1 as the TFLite model on the check photos, and pooled features close
to its own (cosine ≥ ``MIN_FEATURE_COSINE``; the int8 model itself is the approximation).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import DataError

TFLITE_FILE = "tf2_mobilenet_v2_1.0_224_ptq.tflite"
PORTED_FILE = "mobilenet_v2_1.0_imagenet_from_tflite.weights.h5"
TFLITE_INPUT_SIZE = 224
MIN_FEATURE_COSINE = 0.99  # measured 0.997–0.998 on the three check photos


def _interpreter(tflite_path: Path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if not tflite_path.is_file():
        raise DataError(f"{tflite_path}: ImageNet TFLite model not found (--imagenet-tflite)")
    try:
        interpreter = Interpreter(model_path=str(tflite_path), experimental_preserve_all_tensors=True,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise DataError(f"{tflite_path}: not a valid TFLite model ({str(exc).strip().splitlines()[0]})") from None
    return interpreter


def _dequantised(interpreter, index: int) -> np.ndarray:
    """A constant tensor in floats: per-channel (or per-tensor) scale × (value − zero point)."""
    q = next(t for t in interpreter.get_tensor_details() if t["index"] == index)["quantization_parameters"]
    values = interpreter.get_tensor(index).astype(np.float32)
    if not len(q["scales"]):
        return values
    shape = [1] * values.ndim
    shape[q["quantized_dimension"]] = -1
    return (values - q["zero_points"].reshape(shape)) * q["scales"].reshape(shape)


def convolutions(interpreter) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(op name, kernel in Keras layout, bias) of every convolution, in graph order."""
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        _, kernel_index, bias_index = op["inputs"]
        kernel = _dequantised(interpreter, kernel_index)
        # CONV_2D (out, kh, kw, in) → (kh, kw, in, out); DEPTHWISE_CONV_2D (1, kh, kw, C) → (kh, kw, C, 1)
        kernel = kernel.transpose(1, 2, 3, 0)
        found.append((op["op_name"], kernel, _dequantised(interpreter, bias_index)))
    return found


def build_backbone(input_size: int = TFLITE_INPUT_SIZE):
    """Keras MobileNetV2-1.0 without its top, pooled features out (untrained)."""
    import keras

    return keras.applications.MobileNetV2(input_shape=(input_size, input_size, 3), alpha=1.0, include_top=False,
                                          pooling="avg", weights=None)


def load_tflite_weights(model, interpreter) -> None:
    """Each Conv2D/DepthwiseConv2D gets its dequantised kernel; the BatchNormalization after it becomes
    the identity plus the folded bias (gamma 1, beta bias, mean 0, variance 1 − epsilon)."""
    import keras

    convs = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    ported = convolutions(interpreter)
    if len(convs) != len(norms) or len(ported) < len(convs):
        raise DataError(f"the TFLite model has {len(ported)} convolutions, the Keras MobileNetV2 needs {len(convs)}")
    for conv, norm, (_, kernel, bias) in zip(convs, norms, ported):
        if tuple(conv.kernel.shape) != kernel.shape:
            raise DataError(f"{conv.name}: TFLite kernel {kernel.shape} does not fit {tuple(conv.kernel.shape)}")
        conv.set_weights([kernel])
        norm.set_weights([np.ones_like(bias), bias, np.zeros_like(bias), np.full_like(bias, 1 - norm.epsilon)])


def port(interpreter, out_path: Path):
    """Keras MobileNetV2-1.0 (no top) with the TFLite model's ImageNet weights, saved to ``out_path``."""
    model = build_backbone()
    load_tflite_weights(model, interpreter)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(out_path)
    return model


def check_photo(path: Path) -> np.ndarray:
    """A check photo as the TFLite model takes it: RGB uint8, 224 × 224."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: not a readable image")
    image = cv2.resize(image, (TFLITE_INPUT_SIZE, TFLITE_INPUT_SIZE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def tflite_features_and_class(interpreter, rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """The TFLite model's pooled features (its MEAN op, dequantised) and its top-1 ImageNet class."""
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], rgb[None])
    interpreter.invoke()
    mean = next(op for op in interpreter._get_ops_details() if op["op_name"] == "MEAN")
    features = _dequantised(interpreter, mean["outputs"][0]).reshape(-1)
    return features, int(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).argmax())


def parity(model, tflite_path: Path, photos: list[Path]) -> list[dict]:
    """Per photo: the TFLite model's top-1, the port's (the TFLite file's own 1001-way logits
    convolution on the port's pooled features), and the cosine between the two models' features."""
    interpreter = _interpreter(tflite_path)
    _, logits_kernel, logits_bias = convolutions(interpreter)[-1]  # (1, 1, 1280, 1001)
    rows = []
    for path in photos:
        rgb = check_photo(path)
        reference, reference_class = tflite_features_and_class(interpreter, rgb)
        features = model.predict((rgb[None].astype(np.float32) - 127.5) / 127.5, verbose=0)[0]
        keras_class = int((features @ logits_kernel[0, 0] + logits_bias).argmax())
        cosine = float(features @ reference / (np.linalg.norm(features) * np.linalg.norm(reference)))
        rows.append({"photo": path.name, "tflite_class": reference_class, "keras_class": keras_class,
                     "feature_cosine": round(cosine, 4)})
    return rows


def run_port(tflite_path: Path, out_path: Path, photos: list[Path]) -> dict:
    """Port once, prove it on the check photos; a port that disagrees with its source is not kept."""
    interpreter = _interpreter(tflite_path)
    if not photos:
        raise DataError("no check photos to prove the port on (--check-photos)")
    model = port(interpreter, out_path)
    checks = parity(model, tflite_path, photos)
    bad = [c for c in checks if c["tflite_class"] != c["keras_class"] or c["feature_cosine"] < MIN_FEATURE_COSINE]
    if bad:
        out_path.unlink()
        raise DataError(f"{tflite_path}: the Keras port disagrees with the TFLite model on {bad[0]['photo']} "
                        f"(classes {bad[0]['tflite_class']} / {bad[0]['keras_class']}, "
                        f"feature cosine {bad[0]['feature_cosine']})")
    return {"weights": str(out_path), "checks": checks}
