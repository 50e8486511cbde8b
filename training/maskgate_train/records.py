"""What each training step records, typed: the JSON files in the work dir (``prepare.json``, ``train.json``,
``nose.json``, ``holdout-<source>.json``, ``evaluate.json``) and the figures in ``metadata.json``.

Figures from :func:`maskgate_train.evaluate.metrics` stay plain dicts (``Metrics``): they are the rows of
the report's tables. A field missing from a file an older recipe wrote takes its default."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import DataError
from .train import Hyperparameters

Metrics = dict[str, Any]  # evaluate.metrics(): rates, per-class figures, confusion matrix


class Record:
    """A frozen dataclass saved as JSON."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict):
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path):
        if not path.is_file():
            raise DataError(f"{path}: not found (run the earlier steps first)")
        return cls.from_json(json.loads(path.read_text()))


@dataclass(frozen=True)
class PrepareSummary(Record):
    """``prepare``: face crops per source, label and split."""

    crops: int
    duplicates_dropped: int
    counts: dict  # source → label → split → crops
    methods: dict  # source/label → how the crops were found → crops
    seconds: float
    input_size: int
    margin: float
    sources: list[str]
    heldout_sources: list[str] = field(default_factory=list)
    site_data: dict | None = None  # added by --site-data


@dataclass(frozen=True)
class TrainedCrops:
    """The crops a face model was trained on."""

    real_train_crops: int = 0
    train_crops: int = 0
    synthetic_incorrect_mask: int = 0
    synthetic_with_mask: int = 0
    synthetic_hand_over_mouth: int = 0
    teacher_seeds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TrainSummary(TrainedCrops, Record):
    """``train``: the face model."""

    seconds: float = 0.0
    epochs: int = 0
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    imagenet_weights: bool = False
    excluded_sources: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict) -> TrainSummary:
        return super().from_json(data | {"hyperparameters": Hyperparameters(**data.get("hyperparameters", {}))})


@dataclass(frozen=True)
class NoseSummary(Record):
    """``train-nose``: the nose check, and the manifest it was trained on."""

    seconds: float
    epochs: int
    input_size: int
    excluded_sources: list[str]
    dataset_manifest_sha256: str
    nose_real_patches: int
    nose_synthetic_patches: int


@dataclass(frozen=True)
class HoldoutSummary(TrainedCrops, Record):
    """``holdout``: a face model trained without ``source``, on every crop of it (``float`` in the JSON)."""

    source: str = ""
    epochs: int = 0
    crops: int = 0
    dataset_manifest_sha256: str = ""
    seconds: float = 0.0
    metrics: Metrics = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        return data | {"float": data.pop("metrics")}

    @classmethod
    def from_json(cls, data: dict) -> HoldoutSummary:
        return super().from_json(data | {"metrics": data.get("float", {})})


@dataclass(frozen=True)
class EvaluateSummary(Record):
    """``evaluate``: the chosen thresholds and the float model's figures. The held-out figures exist
    when there are held-out sources; ``held_out_pooled`` and after only then."""

    float_test: Metrics
    float_test_by_source: dict[str, Metrics]
    threshold: float
    nose_threshold: float | None
    threshold_face_only: float
    threshold_basis: str
    held_out: dict[str, Metrics]  # per unseen source, its model and threshold
    held_out_threshold_check: dict[str, Metrics]  # per source, at a threshold chosen without it
    held_out_pooled: Metrics | None = None
    held_out_pooled_decision_range: Metrics | None = None
    held_out_pooled_face_only: Metrics | None = None
    tradeoff: list[dict] | None = None  # rows of evaluate.tradeoff()
    nose_check_matched: list[dict] | None = None  # rows of evaluate.matched()


@dataclass(frozen=True)
class ExportMetrics(Record):
    """The figures in ``metadata.json`` and ``report.json``: the int8 model's, the float model's from
    ``evaluate``, and the leave-one-source-out runs."""

    test_int8: Metrics
    test_int8_by_source: dict[str, Metrics]
    test_float: Metrics
    parity: dict[str, float]  # int8 vs float
    leave_one_source_out: dict[str, HoldoutSummary]
    threshold_basis: str = ""
    threshold_face_only: float | None = None
    held_out: dict[str, Metrics] = field(default_factory=dict)
    held_out_pooled: Metrics | None = None
    held_out_pooled_decision_range: Metrics | None = None
    held_out_pooled_face_only: Metrics | None = None
    held_out_threshold_check: dict[str, Metrics] = field(default_factory=dict)
    tradeoff: list[dict] | None = None
    nose_check_matched: list[dict] | None = None
    held_out_int8: dict[str, Metrics] | None = None  # the int8 model on the measure-only sources
    held_out_int8_pooled: Metrics | None = None
    held_out_int8_by_mask_tag: dict[str, dict] | None = None
    held_out_int8_door_verdicts: dict | None = None  # {"all", "decision_range"} → true label → reason code → faces
    held_out_int8_door_over_time: dict | None = None  # door.measure()

    def to_json(self) -> dict:
        return asdict(self) | {"leave_one_source_out": {s: h.to_json() for s, h in self.leave_one_source_out.items()}}

    @classmethod
    def from_json(cls, data: dict) -> ExportMetrics:
        holdouts = {s: HoldoutSummary.from_json(h) for s, h in data["leave_one_source_out"].items()}
        return super().from_json(data | {"leave_one_source_out": holdouts})


@dataclass(frozen=True)
class Provenance(Record):
    """Where the shipped model came from."""

    date: str
    sources: list[str]
    measured_only: list[str]
    synthetic_masks: str
    crop_counts: dict
    crop_methods: dict
    duplicates_dropped: int
    dataset_manifest_sha256: str
    prepare_seconds: float
    training: TrainSummary
    nose_check_training: NoseSummary | None
    versions: dict[str, str]
    export_seconds: float

    @classmethod
    def from_json(cls, data: dict) -> Provenance:
        nose = data.get("nose_check_training")
        return super().from_json(data | {"training": TrainSummary.from_json(data["training"]),
                                         "nose_check_training": nose and NoseSummary.from_json(nose)})


@dataclass(frozen=True)
class ExportSummary(Record):
    """``export``: what ``metadata.json`` holds beside the bundle's own settings."""

    metrics: ExportMetrics
    provenance: Provenance

    def to_json(self) -> dict:
        return {"metrics": self.metrics.to_json(), "provenance": self.provenance.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> ExportSummary:
        return cls(ExportMetrics.from_json(data["metrics"]), Provenance.from_json(data["provenance"]))
