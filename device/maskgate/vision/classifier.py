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
    names = [MODEL_FILE] + ([NOSE_MODEL_FILE] if metadata.nose_check else [])
    return [Path(bundle_dir) / name for name in names]


class MaskClassifier:
    """Scores BGR face crops with the bundle's TFLite model."""

    def __init__(self, bundle_dir: str | Path | None = None, *, num_threads: int = 2):
        self.bundle_dir = Path(bundle_dir) if bundle_dir else default_bundle_dir()
        self.metadata = read_metadata(self.bundle_dir)
        self._model = _Model(self.bundle_dir / MODEL_FILE, self.metadata.input_size, len(self.metadata.labels),
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
