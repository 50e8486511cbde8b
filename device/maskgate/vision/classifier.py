"""Mask classifier: loads a model bundle (classifier.tflite + metadata.json) and scores face crops."""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .crop import Normalisation, normalise
from ..errors import ModelError
from .litert import load_interpreter

LABELS = ("with_mask", "without_mask", "incorrect_mask")
MODEL_FILE = "classifier.tflite"
METADATA_FILE = "metadata.json"
DEFAULT_BUNDLE = "mask_classifier"


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

    @model_validator(mode="after")
    def _with_mask_is_a_label(self) -> "BundleMetadata":
        if "with_mask" not in self.labels:
            raise ValueError("labels must include 'with_mask'")
        return self


@dataclass(frozen=True)
class Prediction:
    """Per-class probabilities for one face crop."""

    probs: dict[str, float]

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


class MaskClassifier:
    """Scores BGR face crops with the bundle's TFLite model."""

    def __init__(self, bundle_dir: str | Path | None = None, *, num_threads: int = 2):
        self.bundle_dir = Path(bundle_dir) if bundle_dir else default_bundle_dir()
        self.metadata = read_metadata(self.bundle_dir)
        model_path = self.bundle_dir / MODEL_FILE
        self._interpreter = load_interpreter(model_path, num_threads=num_threads)
        (inp,) = self._interpreter.get_input_details()
        (out,) = self._interpreter.get_output_details()
        size = self.metadata.input_size
        if tuple(inp["shape"][1:]) != (size, size, 3):
            raise ModelError(
                f"{model_path}: input shape {tuple(inp['shape'])} does not match "
                f"input_size {size} in {METADATA_FILE}"
            )
        if out["shape"][-1] != len(self.metadata.labels):
            raise ModelError(
                f"{model_path}: {out['shape'][-1]} outputs but {len(self.metadata.labels)} labels in {METADATA_FILE}"
            )
        self._input = inp
        self._output = out

    @property
    def input_size(self) -> int:
        return self.metadata.input_size

    @property
    def crop_margin(self) -> float:
        return self.metadata.crop_margin

    @property
    def threshold(self) -> float:
        return self.metadata.threshold

    def classify(self, crops_bgr: list[np.ndarray] | np.ndarray) -> list[Prediction]:
        """Probabilities for each input_size×input_size BGR uint8 crop."""
        if len(crops_bgr) == 0:
            return []
        batch = normalise(np.stack(crops_bgr), self.metadata.normalisation, rgb=self.metadata.colour_order == "RGB")
        quantised = _quantise(batch, self._input)
        results = []
        for tensor in quantised:
            self._interpreter.set_tensor(self._input["index"], tensor[None])
            self._interpreter.invoke()
            scores = _dequantise(self._interpreter.get_tensor(self._output["index"])[0], self._output)
            results.append(Prediction(dict(zip(self.metadata.labels, _as_probabilities(scores)))))
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
