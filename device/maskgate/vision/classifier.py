"""Mask classifier: loads a model bundle (classifier.tflite + metadata.json, and nose.tflite when the
bundle has a nose check) and scores face crops."""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .crop import Normalisation, nose_patch, normalise
from ..errors import ModelError
from .litert import load_interpreter

LABELS = ("with_mask", "without_mask", "incorrect_mask")
MODEL_FILE = "classifier.tflite"
NOSE_MODEL_FILE = "nose.tflite"
NOSE_LABELS = ("nose_covered", "nose_out")
METADATA_FILE = "metadata.json"
HEAD_FILE = "head.npz"  # an adapted last layer (maskgate model adapt): weights (labels × embedding), bias
DEFAULT_BUNDLE = "mask_classifier"


class NoseCheck(BaseModel):
    """A second model that looks only at the nose and upper lip (``crop.nose_patch``): is the nose covered?"""

    model_config = ConfigDict(extra="forbid")

    input_size: int = Field(gt=0)
    threshold: float = Field(ge=0.0, lt=1.0, description="min p(nose_covered) to grant")
    quantisation: Literal["float32", "int8", "uint8"]


class BundleMetadata(BaseModel):
    """What the device must know to feed the model exactly as training did (metadata.json)."""

    model_config = ConfigDict(extra="allow")  # metrics, provenance, versions: free-form records

    format: Literal["maskgate-classifier/1"]
    labels: list[str] = Field(min_length=2)
    input_size: int = Field(gt=0)
    colour_order: Literal["RGB", "BGR"] = "RGB"
    normalisation: Normalisation
    crop_margin: float = Field(ge=0.0, le=1.0)
    threshold: float = Field(gt=0.0, lt=1.0, description="min p(with_mask) to grant")
    quantisation: Literal["float32", "int8", "uint8"]
    nose_check: NoseCheck | None = None  # needs the detector's keypoints; without it p(with_mask) decides alone
    adapted_head: bool = Field(False, description=f"{HEAD_FILE} replaces the model's last layer")

    @model_validator(mode="after")
    def _with_mask_is_a_label(self) -> "BundleMetadata":
        if "with_mask" not in self.labels:
            raise ValueError("labels must include 'with_mask'")
        return self


@dataclass(frozen=True)
class Prediction:
    """Per-class probabilities for one face crop, and p(nose covered) when the bundle has a nose check."""

    probs: dict[str, float]
    nose_covered: float | None = None

    @property
    def label(self) -> str:
        return max(self.probs, key=self.probs.__getitem__)

    @property
    def confidence(self) -> float:
        return self.probs[self.label]


def default_bundle_dir() -> Path:
    """The model bundle shipped with maskgate (models/mask_classifier in the source tree)."""
    return Path(str(importlib.resources.files("maskgate.models") / DEFAULT_BUNDLE))


def read_metadata(bundle_dir: str | Path) -> BundleMetadata:
    """Parse and validate ``metadata.json`` of a bundle, naming the file on any error."""
    path = Path(bundle_dir) / METADATA_FILE
    if not path.is_file():
        raise ModelError(f"{path}: model metadata not found (is {Path(bundle_dir)} a model bundle?)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return BundleMetadata.model_validate(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not readable JSON ({exc})") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        raise ModelError(f"{path}: {where}: {error['msg']}") from None


def model_files(bundle_dir: str | Path, metadata: BundleMetadata) -> list[Path]:
    """The model files ``metadata`` says the bundle holds."""
    names = [MODEL_FILE] + ([NOSE_MODEL_FILE] if metadata.nose_check else []) + ([HEAD_FILE] if metadata.adapted_head else [])
    return [Path(bundle_dir) / name for name in names]


class MaskClassifier:
    """Scores BGR face crops with the bundle's TFLite model."""

    def __init__(self, bundle_dir: str | Path | None = None, *, num_threads: int = 2):
        self.bundle_dir = Path(bundle_dir) if bundle_dir else default_bundle_dir()
        self.metadata = read_metadata(self.bundle_dir)
        model = _AdaptedModel if self.metadata.adapted_head else _Model
        self._model = model(self.bundle_dir / MODEL_FILE, self.metadata.input_size, len(self.metadata.labels),
                            num_threads=num_threads)
        nose = self.metadata.nose_check
        self._nose = (_Model(self.bundle_dir / NOSE_MODEL_FILE, nose.input_size, len(NOSE_LABELS),
                             num_threads=num_threads) if nose else None)

    @property
    def input_size(self) -> int:
        return self.metadata.input_size

    @property
    def crop_margin(self) -> float:
        return self.metadata.crop_margin

    @property
    def threshold(self) -> float:
        return self.metadata.threshold

    @property
    def nose_threshold(self) -> float | None:
        """min p(nose covered) to grant, or None when the bundle has no nose check."""
        return self.metadata.nose_check.threshold if self.metadata.nose_check else None

    def classify(self, crops_bgr: list[np.ndarray] | np.ndarray,
                 keypoints: list[np.ndarray] | None = None) -> list[Prediction]:
        """Probabilities for each input_size×input_size BGR uint8 crop; with ``keypoints`` (the
        detector's five per crop, in crop pixels) and a nose check in the bundle, p(nose covered) too."""
        if len(crops_bgr) == 0:
            return []
        probs = self._model.run(self._batch(np.stack(crops_bgr)))
        nose = [None] * len(probs)
        if self._nose is not None and keypoints is not None:
            size = self.metadata.nose_check.input_size
            patches = np.stack([nose_patch(c, k, size=size) for c, k in zip(crops_bgr, keypoints)])
            covered = NOSE_LABELS.index("nose_covered")
            nose = [float(p[covered]) for p in self._nose.run(self._batch(patches))]
        return [Prediction(dict(zip(self.metadata.labels, p)), n) for p, n in zip(probs, nose)]

    def _batch(self, images_bgr: np.ndarray) -> np.ndarray:
        return normalise(images_bgr, self.metadata.normalisation, rgb=self.metadata.colour_order == "RGB")


class _Model:
    """One TFLite model of the bundle, its input and output shapes checked against the metadata."""

    def __init__(self, path: Path, input_size: int, outputs: int, *, num_threads: int):
        self._interpreter = load_interpreter(path, num_threads=num_threads)
        (self._input,) = self._interpreter.get_input_details()
        (self._output,) = self._interpreter.get_output_details()
        if tuple(self._input["shape"][1:]) != (input_size, input_size, 3):
            raise ModelError(f"{path}: input shape {tuple(self._input['shape'])} does not match "
                             f"input_size {input_size} in {METADATA_FILE}")
        if self._output["shape"][-1] != outputs:
            raise ModelError(f"{path}: {self._output['shape'][-1]} outputs but {outputs} labels in {METADATA_FILE}")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        results = []
        for tensor in _quantise(batch, self._input):
            self._interpreter.set_tensor(self._input["index"], tensor[None])
            self._interpreter.invoke()
            scores = _dequantise(self._interpreter.get_tensor(self._output["index"])[0], self._output)
            results.append(_as_probabilities(scores))
        return results


class Embedder:
    """The classifier's embedding — what its last, fully connected layer reads — and that layer's weights.

    Read from the model's own tensors, so an int8 bundle needs nothing extra for ``maskgate model adapt``."""

    def __init__(self, path: Path, input_size: int, *, num_threads: int = 2):
        graph = load_interpreter(path, num_threads=1, delegate=False)  # the op graph, as the file has it
        tensors = {d["index"]: d for d in graph.get_tensor_details()}
        producers = {out: op for op in graph._get_ops_details() for out in op["outputs"]}
        op = producers.get(graph.get_output_details()[0]["index"])
        while op is not None and op["op_name"] in ("SOFTMAX", "QUANTIZE", "DEQUANTIZE"):
            op = producers.get(op["inputs"][0])
        if op is None or op["op_name"] != "FULLY_CONNECTED":
            raise ModelError(f"{path}: the model does not end in a fully connected layer: it has no embedding to adapt")
        embedding, weights, *bias = op["inputs"]
        self._embedding = tensors[embedding]
        self.weights = _dequantise_array(graph.get_tensor(weights), tensors[weights])
        self.bias = (_dequantise_array(graph.get_tensor(bias[0]), tensors[bias[0]]) if bias and bias[0] >= 0
                     else np.zeros(len(self.weights)))
        self._interpreter = load_interpreter(path, num_threads=num_threads, keep_tensors=True)
        (self._input,) = self._interpreter.get_input_details()
        if tuple(self._input["shape"][1:]) != (input_size, input_size, 3):
            raise ModelError(f"{path}: input shape {tuple(self._input['shape'])} does not match input_size {input_size}")

    @property
    def size(self) -> int:
        return self.weights.shape[1]

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """N×size embeddings of a normalised batch (``MaskClassifier._batch``)."""
        rows = []
        for tensor in _quantise(batch, self._input):
            self._interpreter.set_tensor(self._input["index"], tensor[None])
            self._interpreter.invoke()
            value = self._interpreter.get_tensor(self._embedding["index"])
            rows.append(_dequantise_array(value, self._embedding).reshape(-1))
        return np.stack(rows) if rows else np.zeros((0, self.size))


class _AdaptedModel:
    """The bundle's model up to its embedding, then the adapted last layer of ``head.npz`` in numpy."""

    def __init__(self, path: Path, input_size: int, outputs: int, *, num_threads: int):
        self._embedder = Embedder(path, input_size, num_threads=num_threads)
        head = path.parent / HEAD_FILE
        try:
            with np.load(head) as data:
                self.weights, self.bias = data["weights"].astype(np.float64), data["bias"].astype(np.float64)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{head}: not an adapted head ({exc})") from None
        if self.weights.shape != (outputs, self._embedder.size) or self.bias.shape != (outputs,):
            raise ModelError(f"{head}: weights {self.weights.shape} do not fit {outputs} labels and an embedding of "
                             f"{self._embedder.size}")

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return list(softmax(self._embedder.embed(batch) @ self.weights.T + self.bias))


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _dequantise_array(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A tensor's real values: per-tensor or per-channel (weights) quantisation undone."""
    if np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float64)
    params = detail.get("quantization_parameters") or {}
    scales, zeros = np.asarray(params.get("scales", [])), np.asarray(params.get("zero_points", []))
    if scales.size <= 1:
        scale, zero_point = (scales[0], zeros[0]) if scales.size else detail["quantization"]
        return (values.astype(np.float64) - zero_point) * scale
    shape = [1] * values.ndim
    shape[params.get("quantized_dimension", 0)] = -1
    return (values.astype(np.float64) - zeros.reshape(shape)) * scales.reshape(shape)


def _quantise(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantise(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values.astype(np.float64)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float64) - zero_point) * scale


def _as_probabilities(scores: np.ndarray) -> np.ndarray:
    """Models end in softmax; renormalise away quantisation error (or apply softmax to logits)."""
    if scores.min() >= 0.0 and 0.9 <= scores.sum() <= 1.1:
        return scores / scores.sum()
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()
