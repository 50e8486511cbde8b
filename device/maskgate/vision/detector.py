"""YuNet face detector (OpenCV Zoo, MIT) run by OpenCV's ``cv2.FaceDetectorYN``; the model ships in the package."""

from __future__ import annotations

import importlib.resources
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ..config import FIRST_PASS_SIZE, INPUT_SIZE, MIN_SIDE
from ..errors import ModelError
from ..images import as_bgr

MODEL_FILE = "face_detection_yunet_2026may.onnx"
FULL_PASS_EVERY = 3  # in a stream, the INPUT_SIZE pass on every 3rd frame whatever the first pass finds
# (the daemon uses decision.frames_to_decide, default 3: every decision sees a full pass)
FIRST_PASS_MIN_PX = 80  # the first pass's answer stands only with a face this tall (the daemon: decision.min_face_px)
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")  # the subject's right/left


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
    """The YuNet model file shipped inside the package (with its LICENSE beside it)."""
    return Path(str(importlib.resources.files("maskgate.vision") / "models" / MODEL_FILE))


class FaceDetector:
    """Finds every face in a BGR frame with YuNet over the frame scaled so its longer side is ``input_size``.

    With ``centre_zoom`` (the default), a frame where that pass finds no face gets one more ``input_size`` pass
    over its centre (half its width and height, i.e. twice the zoom): the *full look*, which every still photo
    gets. Frames of a camera stream (``detect(frame, streaming=True)``) with ``first_pass_size`` set get a
    cheaper pass at that size first and the full look when it finds no face at least ``first_pass_min_px`` tall
    (the size the door decides on), and on every ``full_pass_every``-th frame whatever it finds: a face the
    cheaper pass misses beside one it finds is still seen within that many frames (see docs/detectors.md).

    Thread-safe: ``detect`` holds a lock, since each OpenCV detector keeps per-call input-size state.
    ``num_threads`` is applied with ``cv2.setNumThreads``, which is process-wide in OpenCV.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        num_threads: int = 2,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.3,
        input_size: int = INPUT_SIZE,
        first_pass_size: int | None = FIRST_PASS_SIZE,
        full_pass_every: int = FULL_PASS_EVERY,
        first_pass_min_px: float = FIRST_PASS_MIN_PX,
        top_k: int = 50,
        centre_zoom: bool = True,
    ):
        self.model_path = Path(model_path) if model_path else default_model_path()
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if input_size < MIN_SIDE:
            raise ValueError(f"input_size must be >= {MIN_SIDE}, got {input_size}")
        if first_pass_size is not None and not MIN_SIDE <= first_pass_size < input_size:
            raise ValueError(f"first_pass_size must be >= {MIN_SIDE} and < input_size ({input_size}), "
                             f"got {first_pass_size}")
        if full_pass_every < 1:
            raise ValueError(f"full_pass_every must be >= 1, got {full_pass_every}")
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: model file not found")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.input_size = input_size
        self.first_pass_size = first_pass_size
        self.full_pass_every = full_pass_every
        self.first_pass_min_px = first_pass_min_px
        self.centre_zoom = centre_zoom
        cv2.setNumThreads(num_threads)
        self._lock = threading.Lock()
        self._stream_frames = 0
        # One OpenCV detector per input size: a network fed a new input shape re-plans its layers.
        self._nets = {size: self._load(size, top_k) for size in {input_size, first_pass_size} - {None}}

    def _load(self, size: int, top_k: int) -> _Net:
        try:
            net = cv2.FaceDetectorYN.create(
                str(self.model_path), "", (size, size), self.score_threshold, self.nms_threshold, top_k
            )
            net.detect(np.zeros((size, size, 3), np.uint8))
        except cv2.error as exc:
            raise ModelError(f"{self.model_path}: not a YuNet face detector model ({_cv_message(exc)})") from None
        return _Net(net)

    def detect(self, frame: np.ndarray, *, streaming: bool = False) -> list[Face]:
        """Faces in ``frame`` (BGR, grayscale or BGRA uint8), highest score first; ``streaming``: the next frame
        of a camera stream, which may get the cheaper first pass."""
        image = as_bgr(frame)
        if streaming and self.first_pass_size and not self._full_pass_due():
            faces = self._detect(image, self.first_pass_size)
            if any(face.height >= self.first_pass_min_px for face in faces):
                return faces
        faces = self._detect(image, self.input_size)
        h, w = image.shape[:2]
        if faces or not self.centre_zoom or min(h, w) < 2:
            return faces
        x0, y0 = w // 4, h // 4
        centre = self._detect(image[y0 : y0 + h // 2, x0 : x0 + w // 2], self.input_size)
        return [_shifted(face, x0, y0) for face in centre]

    def _full_pass_due(self) -> bool:
        with self._lock:
            due = self._stream_frames % self.full_pass_every == 0
            self._stream_frames += 1
        return due

    def _detect(self, image: np.ndarray, size: int) -> list[Face]:
        """One pass over the whole of ``image`` (BGR) scaled so its longer side is ``size``."""
        h, w = image.shape[:2]
        scale = size / max(h, w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if min(new_w, new_h) < MIN_SIDE:  # pad right and bottom: coordinates stay as they are
            resized = cv2.copyMakeBorder(resized, 0, max(0, MIN_SIDE - new_h), 0, max(0, MIN_SIDE - new_w),
                                         cv2.BORDER_CONSTANT, value=0)
        with self._lock:
            rows = self._nets[size].detect(resized)
        if rows is None:
            return []
        sx, sy = w / new_w, h / new_h
        faces = [_face_from_row(row, sx, sy, w, h) for row in rows if np.isfinite(row).all()]
        return sorted((f for f in faces if f.width > 0 and f.height > 0), key=lambda f: -f.score)


class _Net:
    """An OpenCV YuNet detector that is told the input size only when it changes."""

    def __init__(self, net):
        self.net, self._size = net, None

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        size = (image.shape[1], image.shape[0])
        if size != self._size:
            self.net.setInputSize(size)
            self._size = size
        return self.net.detect(image)[1]


def _face_from_row(row: np.ndarray, sx: float, sy: float, width: int, height: int) -> Face:
    """One FaceDetectorYN row [x, y, w, h, 5 × (x, y), score] in resized pixels → a Face in the frame."""
    x, y, bw, bh = (float(v) for v in row[:4])
    box = (
        min(max(x * sx, 0.0), width),
        min(max(y * sy, 0.0), height),
        min(max((x + bw) * sx, 0.0), width),
        min(max((y + bh) * sy, 0.0), height),
    )
    keypoints = tuple((float(row[4 + 2 * k]) * sx, float(row[5 + 2 * k]) * sy) for k in range(5))
    return Face(box, float(row[14]), keypoints)


def _shifted(face: Face, dx: float, dy: float) -> Face:
    x1, y1, x2, y2 = face.box
    points = tuple((x + dx, y + dy) for x, y in face.keypoints)
    return replace(face, box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy), keypoints=points)


def _cv_message(exc: cv2.error) -> str:
    text = getattr(exc, "err", "") or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with many (x1, y1, x2, y2)."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)
